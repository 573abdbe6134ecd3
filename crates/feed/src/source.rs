//! What the ingest thread takes ticks from.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tickgate_core::{SymbolId, Tick};

use crate::normalize::Normalized;
use crate::replay::RejectCounts;
use crate::upstream::SourceHealth;

/// A source of ticks, polled by the ingest thread: everything due by `elapsed` since the source
/// started comes out, at most `max_batch` at a time. Sources pace themselves; the ingest thread
/// only asks.
pub trait Source: Send {
    /// Appends the ticks due by `elapsed` (`seq` is the ingest thread's to stamp, and so is
    /// `gw_ts` if left 0; a source that knows a tick was due to enter earlier than `now_ns` may
    /// set that time instead), and the upstream gaps found among them; returns how many ticks.
    fn poll(&mut self, elapsed: Duration, now_ns: u64, max_batch: usize, out: &mut Batch) -> usize;

    /// When the next tick is due, or None once the source has nothing more to give.
    fn next_due(&self) -> Option<Duration>;

    /// Whether the upstream is delivering (a network source's session). Clients are told when
    /// this changes, and the ingest thread polls the source again only once they were: a source
    /// stops its poll at a change, so ticks before it go out before the announcement and ticks
    /// after it, after.
    fn is_up(&self) -> bool {
        true
    }
}

/// What the sources hand the ingest thread in one turn.
#[derive(Debug, Default)]
pub struct Batch {
    pub ticks: Vec<Tick>,
    /// Upstream gaps, in order; each goes out just before `ticks[before]`.
    pub upstream_gaps: Vec<UpstreamGap>,
}

/// Events of `symbol` the upstream's own sequence numbers say it skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamGap {
    /// Index of the first tick after the gap in [`Batch::ticks`].
    pub before: usize,
    pub symbol: SymbolId,
    /// How many upstream events are missing.
    pub missed: u64,
    /// Index of the source in [`crate::ingest::IngestStats::sources`] (set by the ingest thread).
    pub source: usize,
}

impl Batch {
    pub fn with_capacity(ticks: usize) -> Self {
        Self { ticks: Vec::with_capacity(ticks), upstream_gaps: Vec::new() }
    }

    /// Appends a normalized tick, and the upstream gap it revealed if any.
    pub fn push(&mut self, normalized: Normalized) {
        if let Some((from, to)) = normalized.upstream_gap {
            let gap = UpstreamGap {
                before: self.ticks.len(),
                symbol: normalized.tick.symbol,
                missed: to - from + 1,
                source: 0,
            };
            self.upstream_gaps.push(gap);
        }
        self.ticks.push(normalized.tick);
    }

    pub fn len(&self) -> usize {
        self.ticks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ticks.is_empty()
    }

    pub fn clear(&mut self) {
        self.ticks.clear();
        self.upstream_gaps.clear();
    }
}

/// One configured source's name and counters, read by /readyz and /metrics.
#[derive(Debug)]
pub struct SourceStats {
    /// The configured name (`feed.sources[].name`, or the kind for a single source).
    pub name: Box<str>,
    /// "sim", "replay", "tcp", "binance" or "coinbase".
    pub kind: &'static str,
    /// Ticks per second the source is expected to average: twenty expected intervals (at least
    /// five seconds) without one mean it is not delivering.
    pub expected_rate: f64,
    /// Ticks taken from the source.
    pub ticks: AtomicU64,
    /// Wall-clock ns of the last tick taken (0 before any).
    pub last_tick_ns: AtomicU64,
    /// Set while the source says its upstream is down (clients were told).
    pub down: AtomicBool,
    /// Upstream messages rejected, by [`crate::normalize::Reject::index`].
    pub rejected: Arc<RejectCounts>,
    /// The upstream connection of a network source.
    pub health: Arc<SourceHealth>,
}

impl SourceStats {
    pub fn new(name: &str, kind: &'static str, expected_rate: f64) -> Self {
        Self {
            name: name.into(),
            kind,
            expected_rate,
            ticks: AtomicU64::new(0),
            last_tick_ns: AtomicU64::new(0),
            down: AtomicBool::new(false),
            rejected: Arc::default(),
            health: Arc::default(),
        }
    }

    /// Whether the source has an upstream connection to lose.
    pub fn is_networked(&self) -> bool {
        matches!(self.kind, "tcp" | "binance" | "coinbase")
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl Source for crate::sim::SimMarket {
    fn poll(&mut self, elapsed: Duration, now_ns: u64, max_batch: usize, out: &mut Batch) -> usize {
        crate::sim::SimMarket::poll(self, elapsed, now_ns, max_batch, &mut out.ticks)
    }

    fn next_due(&self) -> Option<Duration> {
        Some(crate::sim::SimMarket::next_due(self))
    }
}
