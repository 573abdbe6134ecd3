//! The ingest thread: source -> sequence -> last values -> one frame -> every reactor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tickgate_core::{LastValueCache, Sequencer, SymbolTable, Tick};
use tickgate_protocol::{FrameBuilder, message};

use crate::fanout::ReactorLink;
use crate::replay::{Recorder, RejectCounts};
use crate::source::Source;

/// Most events taken from the source in one batch.
pub const MAX_BATCH: usize = 4096;

/// Longest sleep between two looks at the shutdown flag.
const MAX_SLEEP: Duration = Duration::from_millis(20);

/// Counters of the ingest thread (single writer; read by metrics and tests).
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Ticks sequenced and published.
    pub ticks: AtomicU64,
    /// Frames encoded: exactly one per tick, whatever the number of subscribers.
    pub frames_built: AtomicU64,
    /// Batches published.
    pub batches: AtomicU64,
    /// Wall-clock ns of the last published batch (0 before any).
    pub last_batch_ns: AtomicU64,
    /// Wall-clock ns of the ingest loop's last turn: an old heartbeat means the thread is stuck.
    pub heartbeat_ns: AtomicU64,
    /// Set while the source is paused by an operator ([`FeedControl`]).
    pub paused: AtomicBool,
    /// Upstream messages the source rejected, by [`crate::normalize::Reject::index`].
    pub rejected: Arc<RejectCounts>,
    /// The upstream connection of a network source.
    pub source_health: Arc<crate::tcp::SourceHealth>,
    /// Set while the source says its upstream is down (clients were told).
    pub feed_down: AtomicBool,
}

/// Operator control of the built-in simulated market: pausing it stops the ticks (the gateway
/// then reports the feed as not delivering on /readyz), resuming carries on from where it was.
#[derive(Debug, Clone)]
pub struct FeedControl {
    stats: Arc<IngestStats>,
}

impl FeedControl {
    pub fn new(stats: Arc<IngestStats>) -> Self {
        Self { stats }
    }

    pub fn pause(&self) {
        self.stats.paused.store(true, Ordering::Relaxed);
    }

    pub fn resume(&self) {
        self.stats.paused.store(false, Ordering::Relaxed);
    }
}

/// Nanoseconds since the Unix epoch, from the wall clock.
pub fn wall_clock_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Sequences ticks, keeps the last values, builds each frame once and publishes it.
///
/// Sans-IO apart from the reactor links: [`Ingest::publish_batch`] is what the thread loop
/// calls, and what tests call directly.
#[derive(Debug)]
pub struct Ingest {
    symbols: Arc<SymbolTable>,
    sequencer: Sequencer,
    lvc: LastValueCache,
    builder: FrameBuilder,
    links: Vec<ReactorLink>,
    stats: Arc<IngestStats>,
}

impl Ingest {
    pub fn new(symbols: Arc<SymbolTable>, links: Vec<ReactorLink>, stats: Arc<IngestStats>) -> Self {
        let n = symbols.len();
        Self {
            symbols,
            sequencer: Sequencer::new(n),
            lvc: LastValueCache::new(n),
            builder: FrameBuilder::new(),
            links,
            stats,
        }
    }

    /// Stamps, records and publishes `batch` (whose `seq` and `gw_ts` are overwritten), then
    /// wakes the reactors that were sent anything.
    pub fn publish_batch(&mut self, batch: &mut [Tick], gw_ts: u64) {
        for tick in batch.iter_mut() {
            tick.gw_ts = gw_ts;
            self.sequencer.stamp(tick);
            self.lvc.record(tick);
            let info = self.symbols.get(tick.symbol);
            let frame = self.builder.text(|out| message::event(out, info, tick, 0));
            for link in &mut self.links {
                link.publish(tick, &frame);
            }
        }
        for link in &mut self.links {
            link.flush(&self.lvc);
        }
        let n = batch.len() as u64;
        self.stats.ticks.fetch_add(n, Ordering::Relaxed);
        self.stats.frames_built.store(self.builder.frames_built(), Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.last_batch_ns.store(gw_ts, Ordering::Relaxed);
    }

    /// Retries pending resyncs without new ticks (a quiet feed must still catch reactors up).
    pub fn flush(&mut self) {
        for link in &mut self.links {
            link.flush(&self.lvc);
        }
    }

    pub fn last_values(&self) -> &LastValueCache {
        &self.lvc
    }

    /// Tells every client that the feed went down or came back.
    pub fn announce_feed(&mut self, up: bool, source: &str) {
        let frame = self.builder.text(|out| message::status(out, up, source));
        for link in &mut self.links {
            link.broadcast(frame.clone());
        }
        self.flush();
    }

    /// Wakes every reactor (used at shutdown).
    pub fn wake_all(&self) {
        for link in &self.links {
            link.wake();
        }
    }
}

/// Runs `source` into `ingest` on a new thread until `shutdown` is set, writing every published
/// tick to `recorder` if there is one.
pub fn spawn_source(
    mut market: Box<dyn Source>,
    mut ingest: Ingest,
    batch_interval: Duration,
    mut recorder: Option<Recorder>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<thread::JoinHandle<()>> {
    let stats = ingest.stats.clone();
    thread::Builder::new().name("tickgate-ingest".into()).spawn(move || {
        // The market's clock: time since start, less the time spent paused.
        let mut start = Instant::now();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut feed_up = true;
        while !shutdown.load(Ordering::Relaxed) {
            if market.is_up() != feed_up {
                feed_up = !feed_up;
                tracing::warn!(source = market.name(), up = feed_up, "feed status changed");
                stats.feed_down.store(!feed_up, Ordering::Relaxed);
                ingest.announce_feed(feed_up, market.name());
            }
            let now_ns = wall_clock_ns();
            stats.heartbeat_ns.store(now_ns, Ordering::Relaxed);
            if stats.paused.load(Ordering::Relaxed) {
                thread::sleep(MAX_SLEEP);
                start += MAX_SLEEP;
                ingest.flush();
                continue;
            }
            batch.clear();
            let polled_at = start.elapsed();
            market.poll(polled_at, now_ns, MAX_BATCH, &mut batch);
            if batch.is_empty() {
                ingest.flush();
            } else {
                ingest.publish_batch(&mut batch, now_ns);
                if let Some(rec) = &mut recorder {
                    let symbols = &ingest.symbols;
                    if let Err(e) = batch.iter().try_for_each(|t| rec.record(symbols, t)) {
                        tracing::error!(error = %e, "recording failed; recording stops");
                        recorder = None;
                    }
                }
            }
            // Next release: when the next event is due, but not sooner than one batch interval
            // after this one, so events due in between leave together.
            // A finished source (the end of a recording) leaves the loop idling: the feed is then
            // reported as not delivering.
            let next_release = market.next_due().unwrap_or(polled_at + MAX_SLEEP).max(polled_at + batch_interval);
            let wait = next_release.saturating_sub(start.elapsed()).min(MAX_SLEEP);
            if !wait.is_zero() {
                thread::sleep(wait);
            }
        }
        if let Some(rec) = &mut recorder {
            let _ = rec.flush();
        }
        ingest.wake_all();
    })
}
