//! The ingest thread: source -> sequence -> last values -> one frame -> every reactor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tickgate_core::{Frame, LastValueCache, LastValues, Sequencer, SymbolId, SymbolInfo, SymbolTable, Tick};
use tickgate_protocol::{FrameBuilder, message};

use crate::fanout::ReactorLink;
use crate::replay::Recorder;
use crate::source::{Batch, Discontinuity, IngestWaker, Source, SourceStats, UpstreamGap};

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
    /// Ticks that arrived already sequenced with a `seq` not above their symbol's last
    /// ([`Sequencing::Keep`]): dropped, never delivered twice.
    pub duplicates_dropped: AtomicU64,
    /// Set while the source is paused by an operator ([`FeedControl`]).
    pub paused: AtomicBool,
    /// Every configured source, in configuration order.
    pub sources: Vec<Arc<SourceStats>>,
    /// permessage-deflate of the tick frames.
    pub deflate: SharedDeflateStats,
}

/// The tick frames compressed once each for every connection that agreed to permessage-deflate.
#[derive(Debug, Default)]
pub struct SharedDeflateStats {
    /// Connections with permessage-deflate (gauge, kept by the reactors): while it is 0, no tick
    /// is compressed.
    pub connections: AtomicU64,
    /// Tick frames compressed (one per tick at most, whatever the number of connections).
    pub frames: AtomicU64,
    /// Their payload bytes before and after compression.
    pub raw_bytes: AtomicU64,
    pub compressed_bytes: AtomicU64,
}

impl IngestStats {
    pub fn new(sources: Vec<Arc<SourceStats>>) -> Self {
        Self { sources, ..Self::default() }
    }

    /// Whether some required source says its upstream is down: the feed is then down for a
    /// client that connects (its welcome says so). An optional source's outage is told in its own
    /// `status` messages only.
    pub fn any_source_down(&self) -> bool {
        self.sources.iter().any(|s| s.required && s.down.load(Ordering::Relaxed))
    }
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

/// Where the ticks the ingest thread sequenced go besides the reactors: the bus of a cluster's
/// publisher. Called on the ingest thread; must not block.
pub trait SequencedSink: Send + std::fmt::Debug {
    /// One tick, stamped with its `seq` and `gw_ts`, and its symbol's last values with it.
    fn sequenced(&mut self, tick: &Tick, last: &LastValues);
}

/// Who numbers the ticks that reach [`Ingest::publish_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequencing {
    /// The ingest thread stamps each tick (a standalone gateway, a cluster's publisher).
    Stamp,
    /// Ticks arrive numbered and stamped (a cluster's edge, fed by the bus): they keep their
    /// `seq` and `gw_ts`; a tick whose `seq` is not above the symbol's last is dropped.
    Keep,
}

/// The live frame of one event: what every subscriber is sent for it, on every gateway that
/// encodes it (an edge's fetches from the stream build their frames here too, so a replayed
/// event is the same bytes as the live one).
pub fn event_frame(builder: &mut FrameBuilder, info: &SymbolInfo, tick: &Tick) -> Frame {
    builder.text(|out| message::event(out, info, tick, 0))
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
    sequencing: Sequencing,
    sink: Option<Box<dyn SequencedSink>>,
}

impl Ingest {
    pub fn new(symbols: Arc<SymbolTable>, links: Vec<ReactorLink>, stats: Arc<IngestStats>) -> Self {
        let n = symbols.capacity();
        Self {
            symbols,
            sequencer: Sequencer::new(n),
            lvc: LastValueCache::new(n),
            builder: FrameBuilder::new(),
            links,
            stats,
            sequencing: Sequencing::Stamp,
            sink: None,
        }
    }

    /// Ticks arrive already sequenced ([`Sequencing::Keep`]).
    pub fn keeping_seq(mut self) -> Self {
        self.sequencing = Sequencing::Keep;
        self
    }

    /// Every sequenced tick also goes to `sink`.
    pub fn with_sink(mut self, sink: Box<dyn SequencedSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Numbers each symbol's next tick after the given last published seq (a restarted
    /// publisher goes on from the stream's last numbers).
    pub fn continue_after(&mut self, last_seqs: impl IntoIterator<Item = (SymbolId, u64)>) {
        for (symbol, seq) in last_seqs {
            if symbol.index() < self.symbols.capacity() {
                self.sequencer.continue_after(symbol, seq);
            }
        }
    }

    /// Stamps, records and publishes `batch`, each upstream gap announced to the symbol's
    /// subscribers just before the tick that revealed it; then wakes the reactors that were sent
    /// anything. Every tick's `seq` is overwritten, and its `gw_ts` becomes `gw_ts` (the release
    /// time) unless the source set an earlier one: the simulated market stamps an event it
    /// released late with when it was due to leave (see [`crate::sim::SimMarket::poll`]).
    pub fn publish_batch(&mut self, batch: &mut Batch, gw_ts: u64) {
        let deflate = self.stats.deflate.connections.load(Ordering::Relaxed) > 0;
        let mut gaps = batch.upstream_gaps.iter().peekable();
        let mut carried = batch.carried.iter().peekable();
        for (i, tick) in batch.ticks.iter_mut().enumerate() {
            // A span skipped in a numbering made elsewhere ends with this tick: it reaches
            // clients inside the snapshot after the gap, not as an event.
            let mut skipped_from = None;
            while let Some(gap) = gaps.next_if(|g| g.before == i) {
                match gap.kind {
                    Discontinuity::Skipped { from_seq, reason } => skipped_from = Some((from_seq, reason)),
                    _ => self.announce_upstream_gap(gap),
                }
            }
            let other = carried.next_if(|c| c.0 == i).map(|c| c.1);
            match self.sequencing {
                Sequencing::Stamp => {
                    tick.gw_ts = if tick.gw_ts == 0 { gw_ts } else { tick.gw_ts.min(gw_ts) };
                    self.sequencer.stamp(tick);
                }
                Sequencing::Keep => {
                    if !self.sequencer.observe(tick) {
                        self.stats.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            if let Some(other) = other.filter(|o| o.symbol == tick.symbol && o.seq < tick.seq) {
                self.lvc.record(&other);
            }
            self.lvc.record(tick);
            if let Some(sink) = &mut self.sink {
                sink.sequenced(tick, self.lvc.get(tick.symbol));
            }
            if let Some((from_seq, reason)) = skipped_from {
                let values = self.lvc.get(tick.symbol);
                for link in &mut self.links {
                    link.resync(tick.symbol, from_seq.min(tick.seq), tick.seq, reason, values);
                }
                continue;
            }
            let info = self.symbols.get(tick.symbol);
            let frame = event_frame(&mut self.builder, info, tick);
            let deflated = if deflate { self.builder.deflate_last() } else { None };
            for link in &mut self.links {
                link.publish_deflated(tick, &frame, deflated.as_ref());
            }
        }
        debug_assert!(gaps.next().is_none(), "every upstream gap comes before the tick that revealed it");
        for link in &mut self.links {
            link.flush(&self.lvc);
        }
        let n = batch.len() as u64;
        self.stats.ticks.fetch_add(n, Ordering::Relaxed);
        self.stats.frames_built.store(self.builder.frames_built(), Ordering::Relaxed);
        if deflate {
            let counts = self.builder.deflate_counts();
            self.stats.deflate.frames.store(counts.messages, Ordering::Relaxed);
            self.stats.deflate.raw_bytes.store(counts.raw_bytes, Ordering::Relaxed);
            self.stats.deflate.compressed_bytes.store(counts.compressed_bytes, Ordering::Relaxed);
        }
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

    /// Tells the subscribers of the gap's symbol that the upstream skipped events after the
    /// last one they were sent (`upstream_gap`), or that its numbering started again there
    /// (`upstream_reset`, counted by reason).
    fn announce_upstream_gap(&mut self, gap: &UpstreamGap) {
        let info = self.symbols.get(gap.symbol);
        let source = self.stats.sources.get(gap.source);
        let name = source.map_or("", |s| &*s.name);
        let after_seq = self.sequencer.last_seq(gap.symbol);
        let frame = match gap.kind {
            Discontinuity::Missed(missed) => {
                self.builder.text(|out| message::upstream_gap(out, info, name, after_seq, missed))
            }
            // Announced with the tick that ends it (see `publish_batch`).
            Discontinuity::Skipped { .. } => return,
            Discontinuity::Reset(reason) => {
                if let Some(source) = source {
                    source.upstream_resets[reason.index()].fetch_add(1, Ordering::Relaxed);
                }
                self.builder.text(|out| message::upstream_reset(out, info, name, after_seq, reason.reason()))
            }
        };
        for link in &mut self.links {
            link.notify(gap.symbol, frame.clone());
        }
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

/// Runs `sources` into `ingest` on a new thread until `shutdown` is set, writing every published
/// tick to `recorder` if there is one. Each source comes with its entry of
/// [`IngestStats::sources`] (same order).
pub fn spawn_ingest(
    mut sources: Vec<Box<dyn Source>>,
    mut ingest: Ingest,
    batch_interval: Duration,
    mut recorder: Option<Recorder>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<thread::JoinHandle<()>> {
    let stats = ingest.stats.clone();
    assert_eq!(sources.len(), stats.sources.len(), "one SourceStats per source");
    thread::Builder::new().name("tickgate-ingest".into()).spawn(move || {
        // The sources' clock: time since start, less the time spent paused.
        let mut start = Instant::now();
        let mut batch = Batch::with_capacity(MAX_BATCH);
        // The first source polled this turn, and each source's share of a batch.
        let mut first = 0;
        let share = if sources.len() > 1 { MAX_BATCH / sources.len() } else { MAX_BATCH };
        let waker = IngestWaker::for_current_thread();
        for source in &mut sources {
            source.set_waker(waker.clone());
        }
        while !shutdown.load(Ordering::Relaxed) {
            for (source, source_stats) in sources.iter().zip(&stats.sources) {
                let up = source.is_up();
                if source_stats.down.load(Ordering::Relaxed) == up {
                    tracing::warn!(source = &*source_stats.name, up, "feed status changed");
                    source_stats.down.store(!up, Ordering::Relaxed);
                    ingest.announce_feed(up, &source_stats.name);
                }
            }
            // Read together: the sim stamps a late event `now_ns` less its lateness at `polled_at`.
            let (now_ns, polled_at) = (wall_clock_ns(), start.elapsed());
            stats.heartbeat_ns.store(now_ns, Ordering::Relaxed);
            if stats.paused.load(Ordering::Relaxed) {
                // The pause, as long as it really lasted, is taken off the sources' clock.
                let pause_started = Instant::now();
                thread::sleep(MAX_SLEEP);
                start += pause_started.elapsed();
                ingest.flush();
                continue;
            }
            batch.clear();
            let mut next_due: Option<Duration> = None;
            // Each source first gets its share of the batch, then the room left goes round
            // again; the source that starts turns round too. A busy source cannot starve another
            // (whose reader would then stop answering its exchange's pings).
            first = (first + 1) % sources.len().max(1);
            for pass in [share, MAX_BATCH] {
                for offset in 0..sources.len() {
                    let index = (first + offset) % sources.len();
                    let (source, source_stats) = (&mut sources[index], &stats.sources[index]);
                    if source.is_up() == source_stats.down.load(Ordering::Relaxed) {
                        // A change of status not yet announced: it goes out first, next turn.
                        continue;
                    }
                    let (ticks_before, gaps_before) = (batch.ticks.len(), batch.upstream_gaps.len());
                    let room = MAX_BATCH.saturating_sub(ticks_before).min(pass);
                    let n = if room > 0 { source.poll(polled_at, now_ns, room, &mut batch) } else { 0 };
                    for gap in &mut batch.upstream_gaps[gaps_before..] {
                        gap.source = index;
                    }
                    if n > 0 {
                        source_stats.ticks.fetch_add(n as u64, Ordering::Relaxed);
                        source_stats.last_tick_ns.store(now_ns, Ordering::Relaxed);
                    }
                    if pass == share
                        && let Some(due) = source.next_due()
                    {
                        next_due = Some(next_due.map_or(due, |d| d.min(due)));
                    }
                }
                if sources.len() <= 1 {
                    break;
                }
            }
            if batch.is_empty() {
                ingest.flush();
            } else {
                ingest.publish_batch(&mut batch, now_ns);
                if let Some(rec) = &mut recorder {
                    if let Err(e) = rec.record_batch(&ingest.symbols, &batch) {
                        tracing::error!(error = %e, "recording failed; recording stops");
                        recorder = None;
                    }
                }
            }
            // Next release: when the next event of any source is due, but not sooner than one
            // batch interval after this one, so events due in between leave together.
            // Finished sources (the end of a recording) leave the loop idling: the feed is then
            // reported as not delivering.
            let floor = polled_at + batch_interval;
            let next_release = next_due.unwrap_or(polled_at + MAX_SLEEP).max(floor);
            let until_floor = floor.saturating_sub(start.elapsed()).min(MAX_SLEEP);
            if !until_floor.is_zero() {
                thread::sleep(until_floor);
            }
            // Past the floor, a source fed from a thread of its own wakes this one when a tick
            // arrives (see `Source::set_waker`).
            if next_release.saturating_sub(start.elapsed()) > Duration::ZERO {
                waker.arm();
                let due = sources.iter().filter_map(|s| s.next_due()).min().unwrap_or(polled_at + MAX_SLEEP);
                let wait = due.max(floor).saturating_sub(start.elapsed()).min(MAX_SLEEP);
                if !wait.is_zero() {
                    thread::park_timeout(wait);
                }
                waker.disarm();
            }
        }
        if let Some(rec) = &mut recorder {
            let _ = rec.flush();
        }
        ingest.wake_all();
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickgate_core::{SymbolId, Tick, TickKind};

    #[test]
    fn a_tick_keeps_an_earlier_gw_ts_its_source_set_and_gets_the_release_time_otherwise() {
        let symbols = Arc::new(crate::sim::universe(&crate::sim::SimConfig { symbols: 1, ..Default::default() }));
        let mut ingest = Ingest::new(symbols, Vec::new(), Arc::new(IngestStats::default()));
        let tick =
            |gw_ts| Tick { symbol: SymbolId(0), seq: 0, ts: 1, gw_ts, kind: TickKind::Trade { price: 1, size: 1 } };
        let mut batch = Batch::with_capacity(3);
        batch.ticks.extend([tick(0), tick(900), tick(2000)]);
        ingest.publish_batch(&mut batch, 1000);
        let stamped: Vec<(u64, u64)> = batch.ticks.iter().map(|t| (t.seq, t.gw_ts)).collect();
        assert_eq!(stamped, [(1, 1000), (2, 900), (3, 1000)], "a gw_ts after the release is not kept");
    }

    #[test]
    fn a_span_numbered_elsewhere_and_skipped_ends_with_its_tick_in_a_resync_of_the_whole_state() {
        use crate::fanout::{FanoutMsg, reactor_channel};
        let symbols = Arc::new(crate::sim::universe(&crate::sim::SimConfig { symbols: 1, ..Default::default() }));
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (link, inbox, _) = reactor_channel(16, waker);
        let mut ingest = Ingest::new(symbols, vec![link], Arc::new(IngestStats::default())).keeping_seq();
        let trade = TickKind::Trade { price: 1, size: 1 };
        let quote = TickKind::Quote { bid: 1, bid_size: 2, ask: 3, ask_size: 4 };
        let tick = |seq, kind| Tick { symbol: SymbolId(0), seq, ts: 1, gw_ts: 2, kind };
        let mut batch = Batch::with_capacity(3);
        batch.ticks.extend([tick(1, trade), tick(7, trade), tick(8, quote)]);
        // Seqs 2 to 6 were never read; seq 7 carries the latest quote (seq 6) with it.
        batch.upstream_gaps.push(UpstreamGap {
            before: 1,
            symbol: SymbolId(0),
            kind: Discontinuity::Skipped { from_seq: 2, reason: "bus" },
            source: 0,
        });
        batch.carried.push((1, tick(6, quote)));
        ingest.publish_batch(&mut batch, 2);
        let got: Vec<String> = std::iter::from_fn(|| inbox.try_recv())
            .map(|msg| match msg {
                FanoutMsg::Tick { tick, .. } => format!("tick {}", tick.seq),
                FanoutMsg::Resync { from_seq, to_seq, reason, values, .. } => format!(
                    "{reason} {from_seq}..={to_seq}, trade {:?} quote {:?}",
                    values.trade.map(|t| t.seq),
                    values.quote.map(|t| t.seq)
                ),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["tick 1", "bus 2..=7, trade Some(7) quote Some(6)", "tick 8"]);
    }

    /// A source with `left` ticks to give (endless if None), that records the room it is offered.
    struct Counted {
        left: Option<usize>,
        offered: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl Source for Counted {
        fn poll(&mut self, _: Duration, _: u64, max_batch: usize, out: &mut Batch) -> usize {
            self.offered.lock().unwrap().push(max_batch);
            let n = self.left.map_or(max_batch, |left| left.min(max_batch));
            if let Some(left) = &mut self.left {
                *left -= n;
            }
            let tick =
                Tick { symbol: SymbolId(0), seq: 0, ts: 1, gw_ts: 0, kind: TickKind::Trade { price: 1, size: 1 } };
            out.ticks.extend(std::iter::repeat_n(tick, n));
            n
        }

        fn next_due(&self) -> Option<Duration> {
            Some(Duration::ZERO)
        }
    }

    #[test]
    fn a_busy_source_leaves_every_other_source_its_share_of_each_batch() {
        let symbols = Arc::new(crate::sim::universe(&crate::sim::SimConfig { symbols: 1, ..Default::default() }));
        let sources: Vec<Arc<SourceStats>> =
            ["busy", "quiet"].iter().map(|name| Arc::new(SourceStats::new(name, "sim", 1.0))).collect();
        let stats = Arc::new(IngestStats::new(sources));
        let (busy, quiet) = (Arc::default(), Arc::default());
        let boxed: Vec<Box<dyn Source>> = vec![
            Box::new(Counted { left: None, offered: Arc::clone(&busy) }),
            Box::new(Counted { left: Some(10_000), offered: Arc::clone(&quiet) }),
        ];
        let shutdown = Arc::new(AtomicBool::new(false));
        let ingest = Ingest::new(symbols, Vec::new(), stats.clone());
        let thread = spawn_ingest(boxed, ingest, Duration::ZERO, None, shutdown.clone()).unwrap();
        let start = Instant::now();
        while stats.sources[1].ticks.load(Ordering::Relaxed) < 10_000 && start.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(5));
        }
        shutdown.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        assert_eq!(stats.sources[1].ticks.load(Ordering::Relaxed), 10_000, "the quiet source is drained");
        // Its half of a batch while it had that much to give (a turn's second pass offers less).
        let quiet = quiet.lock().unwrap();
        let halves = quiet.iter().filter(|&&room| room == MAX_BATCH / 2).count();
        assert!(halves >= 10_000 / (MAX_BATCH / 2), "{quiet:?}");
        assert!(busy.lock().unwrap().iter().all(|&room| room <= MAX_BATCH));
    }
}
