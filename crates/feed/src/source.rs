//! What the ingest thread takes ticks from.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tickgate_core::{SymbolId, Tick};

use crate::normalize::Normalized;
use crate::replay::RejectCounts;
use crate::upstream::SourceHealth;
use crate::upstream_seq::ResetReason;

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

    /// Given once, before the first poll. A source whose ticks arrive from a thread of its own
    /// keeps it and calls [`IngestWaker::wake`] after queueing one, and answers `next_due` with
    /// [`Duration::MAX`] while it has none queued: the ingest thread, idle, then takes a tick as
    /// it arrives instead of at its next look one batch interval later.
    fn set_waker(&mut self, _waker: IngestWaker) {}
}

/// Wakes the ingest thread, if it is idle, when a source fed from another thread has a tick.
/// While the ingest thread is busy (or within a batch interval of its last poll, when ticks
/// wait to leave together) a wake is one atomic swap and nothing else.
#[derive(Debug, Clone)]
pub struct IngestWaker(Arc<WakerState>);

#[derive(Debug)]
struct WakerState {
    thread: std::thread::Thread,
    /// The ingest thread is parked, or about to, waiting for ticks.
    armed: AtomicBool,
}

impl IngestWaker {
    /// A waker of the calling thread.
    pub fn for_current_thread() -> IngestWaker {
        IngestWaker(Arc::new(WakerState { thread: std::thread::current(), armed: AtomicBool::new(false) }))
    }

    /// A tick was queued: unparks the ingest thread if it waits for one.
    pub fn wake(&self) {
        if self.0.armed.swap(false, Ordering::AcqRel) {
            self.0.thread.unpark();
        }
    }

    /// The ingest thread is about to park: the next [`wake`](Self::wake) unparks it. Look at
    /// the sources once more after this and before parking, or a tick queued just before it
    /// waits for the park's timeout.
    pub fn arm(&self) {
        // A read-modify-write, as `wake`'s is: if a wake found the waker unarmed, this reads
        // its write and so sees the tick queued before it (the look after arming finds it).
        self.0.armed.swap(true, Ordering::AcqRel);
    }

    pub fn disarm(&self) {
        self.0.armed.store(false, Ordering::Relaxed);
    }
}

/// What the sources hand the ingest thread in one turn.
#[derive(Debug, Default)]
pub struct Batch {
    pub ticks: Vec<Tick>,
    /// Upstream gaps and resets, in order; each goes out just before `ticks[before]`.
    pub upstream_gaps: Vec<UpstreamGap>,
    /// The upstream's own sequence numbers of the ticks that have one, as (index in `ticks`,
    /// number), in order: recordings keep them.
    pub upstream_seqs: Vec<(usize, u64)>,
    /// For ticks numbered elsewhere (a cluster's bus): the symbol's latest event of the other
    /// kind as of `ticks[index]`, as (index, event), in order. With it the gateway holds the
    /// symbol's whole state after any one tick.
    pub carried: Vec<(usize, Tick)>,
}

/// A break in the upstream's numbering of `symbol`, revealed by `ticks[before]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamGap {
    /// Index of the first tick after the gap in [`Batch::ticks`].
    pub before: usize,
    pub symbol: SymbolId,
    pub kind: Discontinuity,
    /// Index of the source in [`crate::ingest::IngestStats::sources`] (set by the ingest thread).
    pub source: usize,
}

/// What the upstream's numbering says happened before a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discontinuity {
    /// This many upstream events are missing (`upstream_gap`).
    Missed(u64),
    /// The numbering started again; how many events are missing is unknown (`upstream_reset`).
    Reset(ResetReason),
    /// Ticks numbered elsewhere (a cluster's bus) skip tickgate's own numbers `from_seq` to the
    /// revealing tick's `seq` less one: they were sequenced but never reached this gateway. The
    /// span is announced as a `gap` with `reason` ending with the revealing tick itself, which
    /// reaches clients inside the `snapshot` that follows (built from it and the other kind's
    /// latest event it carries, [`Batch::carried`]) rather than as an event.
    Skipped { from_seq: u64, reason: &'static str },
}

impl Batch {
    pub fn with_capacity(ticks: usize) -> Self {
        Self {
            ticks: Vec::with_capacity(ticks),
            upstream_gaps: Vec::new(),
            upstream_seqs: Vec::new(),
            carried: Vec::new(),
        }
    }

    /// Appends a normalized tick, the upstream gap or reset it revealed if any, and its
    /// upstream sequence number.
    pub fn push(&mut self, normalized: Normalized) {
        let before = self.ticks.len();
        let kind = match (normalized.upstream_gap, normalized.upstream_reset) {
            (_, Some(reason)) => Some(Discontinuity::Reset(reason)),
            (Some((from, to)), None) => Some(Discontinuity::Missed(to.saturating_sub(from).saturating_add(1))),
            (None, None) => None,
        };
        if let Some(kind) = kind {
            self.upstream_gaps.push(UpstreamGap { before, symbol: normalized.tick.symbol, kind, source: 0 });
        }
        if let Some(seq) = normalized.upstream_seq {
            self.upstream_seqs.push((before, seq));
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
        self.upstream_seqs.clear();
        self.carried.clear();
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
    /// Whether the feed is ready (and up for clients that connect) only while this source is:
    /// an optional source that is down is reported, and leaves the feed up.
    pub required: bool,
    /// Upstream messages rejected, by [`crate::normalize::Reject::index`].
    pub rejected: Arc<RejectCounts>,
    /// The upstream connection of a network source.
    pub health: Arc<SourceHealth>,
    /// `upstream_reset`s announced, by [`ResetReason::index`] (counted by the ingest thread).
    pub upstream_resets: [AtomicU64; ResetReason::REASONS.len()],
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
            required: true,
            rejected: Arc::default(),
            health: Arc::default(),
            upstream_resets: Default::default(),
        }
    }

    /// The same source, required or optional (see [`Self::required`]).
    pub fn with_required(self, required: bool) -> Self {
        Self { required, ..self }
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

#[cfg(test)]
mod tests {
    use super::IngestWaker;
    use std::time::{Duration, Instant};

    #[test]
    fn a_wake_unparks_an_armed_ingest_thread_once_and_an_unarmed_one_not_at_all() {
        let waker = IngestWaker::for_current_thread();
        // Unarmed: a wake does nothing (no unpark token is left for a later park).
        waker.wake();
        assert!(!waker.0.armed.load(std::sync::atomic::Ordering::Relaxed));
        waker.arm();
        let from_elsewhere = waker.clone();
        let ringer = std::thread::spawn(move || from_elsewhere.wake());
        let parked = Instant::now();
        // Woken by the other thread, long before the timeout (a park may also end spuriously).
        while waker.0.armed.load(std::sync::atomic::Ordering::Acquire) && parked.elapsed() < Duration::from_secs(30) {
            std::thread::park_timeout(Duration::from_secs(30));
        }
        ringer.join().unwrap();
        assert!(parked.elapsed() < Duration::from_secs(30), "woken, not timed out");
        // A wake disarms: the next one is a no-op until the ingest thread arms again.
        assert!(!waker.0.armed.load(std::sync::atomic::Ordering::Relaxed));
    }
}
