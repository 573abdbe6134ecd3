//! Replaying a recording, and making one.
//!
//! A recording is JSON lines in tickgate's upstream schema ([`crate::normalize`]), optionally
//! gzip-compressed (a path ending in `.gz`): what `[feed] record_path` writes from any source.
//! A replay plays it at its recorded pace, N times faster, or as fast as the ingest thread takes
//! it (`speed = 0`), optionally looping. Lines are normalized like any upstream's: bad ones are
//! counted by reason and skipped, and the upstream's `seq` (which recordings keep) reveals the
//! same upstream gaps and resets as in the live run. The same file always gives the same ticks,
//! so the same sequence numbers and the same frames (but for `gw_ts`, the ingest time of this
//! run). Time that goes back in a recording never makes a burst: see [`Pace`].

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use tickgate_core::decimal::format_fixed;
use tickgate_core::{SymbolTable, Tick, TickKind};

use crate::normalize::{Normalized, Normalizer, Reject};
use crate::resolve::{SymbolResolver, UnknownSymbols};
use crate::source::{Batch, Discontinuity, Source, SourceStats};
use crate::upstream_seq::{DEFAULT_MAX_SEQ_JUMP, ResetReason};

/// Counts of rejected lines, by [`Reject::index`].
pub type RejectCounts = [AtomicU64; Reject::REASONS.len()];

/// Opens a recording for reading: gzip when its name ends in `.gz`.
pub fn open(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    let file = File::open(path)?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// A recording played back as a [`Source`].
pub struct Replay {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    normalizer: Normalizer,
    /// Recorded nanoseconds per real nanosecond; 0 = as fast as possible.
    speed: f64,
    looping: bool,
    pace: Pace,
    /// The next tick, read but not yet due, and when it is due (recorded ns since the start).
    pending: Option<(Normalized, u64)>,
    /// Whether this lap gave a tick: a lap that gives none (the file emptied meanwhile) ends
    /// the replay rather than looping forever.
    lap_gave_a_tick: bool,
    line: Vec<u8>,
    finished: bool,
    stats: Arc<SourceStats>,
    log: crate::normalize::RejectLog,
}

/// The recording's clock: how far into it each tick is, and the offset that keeps exchange time
/// rising from lap to lap. Time that goes back (within a lap, or from the end of a lap to the
/// start of the next) adds nothing: such a tick is due with the one before it. No arithmetic
/// here can wrap.
#[derive(Debug, Default)]
struct Pace {
    /// Recorded ns since the start of the replay: the sum of the forward steps of `ts`, plus
    /// [`LAP_PAUSE_NS`] per lap.
    played_ns: u64,
    /// The previous tick's recorded `ts` in this lap.
    previous_ts: Option<u64>,
    /// The recording's first recorded `ts`.
    first_ts: Option<u64>,
    /// Added to every recorded `ts` of this lap.
    lap_offset: u64,
    /// The latest `ts` handed out.
    latest_ts: u64,
}

/// Recorded time between the end of a lap and the start of the next.
const LAP_PAUSE_NS: u64 = 1_000_000;

impl Pace {
    /// Moves the clock to a tick recorded at `ts`; returns when it is due (recorded ns since the
    /// start) and the `ts` it goes out with.
    fn step(&mut self, ts: u64) -> (u64, u64) {
        let forward = self.previous_ts.map_or(0, |previous| ts.saturating_sub(previous));
        self.played_ns = self.played_ns.saturating_add(forward);
        self.previous_ts = Some(ts);
        self.first_ts.get_or_insert(ts);
        let shifted = ts.saturating_add(self.lap_offset);
        self.latest_ts = self.latest_ts.max(shifted);
        (self.played_ns, shifted)
    }

    /// The next lap starts a moment after the latest `ts` handed out.
    fn new_lap(&mut self) {
        let first = self.first_ts.unwrap_or(0);
        // latest_ts >= first: the first tick went out at first + an offset.
        self.lap_offset = self.latest_ts.saturating_add(LAP_PAUSE_NS).saturating_sub(first);
        self.played_ns = self.played_ns.saturating_add(LAP_PAUSE_NS);
        self.previous_ts = None;
    }
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay").field("path", &self.path).field("speed", &self.speed).finish()
    }
}

impl Replay {
    /// Opens `path`; `speed` 1.0 is the recorded pace, 0 as fast as possible. Symbols the
    /// universe does not have are rejected.
    pub fn open(
        path: &Path,
        symbols: Arc<SymbolTable>,
        speed: f64,
        looping: bool,
        stats: Arc<SourceStats>,
    ) -> io::Result<Self> {
        let resolver = SymbolResolver::new(symbols, &Default::default(), UnknownSymbols::Reject);
        Self::open_with(path, resolver, speed, looping, DEFAULT_MAX_SEQ_JUMP, stats)
    }

    /// Opens `path`, naming symbols with `resolver` (aliases, unknown symbols added or not),
    /// taking `seq` jumps up to `max_seq_jump` as gaps, and counting into `stats` (rejected
    /// lines, upstream gaps; its name is the source's in logs).
    pub fn open_with(
        path: &Path,
        resolver: SymbolResolver,
        speed: f64,
        looping: bool,
        max_seq_jump: u64,
        stats: Arc<SourceStats>,
    ) -> io::Result<Self> {
        let reader = open(path)?;
        // Recorded timestamps are old by design: no skew limit.
        let normalizer = Normalizer::with_resolver(resolver, u64::MAX).with_max_seq_jump(max_seq_jump);
        let mut replay = Self {
            path: path.to_path_buf(),
            reader,
            normalizer,
            speed,
            looping,
            pace: Pace::default(),
            pending: None,
            lap_gave_a_tick: false,
            line: Vec::with_capacity(256),
            finished: false,
            log: crate::normalize::RejectLog::new(&stats.name),
            stats,
        };
        replay.advance();
        Ok(replay)
    }

    /// Reads lines until the next good tick (counting the bad ones), looping if asked.
    fn advance(&mut self) {
        self.pending = None;
        while !self.finished {
            self.line.clear();
            match self.reader.read_until(b'\n', &mut self.line) {
                Ok(0) | Err(_) => {
                    if !self.looping || !std::mem::take(&mut self.lap_gave_a_tick) {
                        self.finished = true;
                        return;
                    }
                    match open(&self.path) {
                        Ok(reader) => {
                            self.reader = reader;
                            // The next lap starts 1 ms after the latest tick; the upstream's
                            // numbering starts over, and clients are told so.
                            self.pace.new_lap();
                            self.normalizer.restart_numbering(ResetReason::ReplayLoop);
                        }
                        Err(_) => self.finished = true,
                    }
                }
                Ok(_) => {
                    while self.line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        self.line.pop();
                    }
                    if self.line.is_empty() {
                        continue;
                    }
                    match self.normalizer.normalize(&mut self.line, 0) {
                        Ok(mut normalized) => {
                            self.lap_gave_a_tick = true;
                            let (due, ts) = self.pace.step(normalized.tick.ts);
                            normalized.tick.ts = ts;
                            self.pending = Some((normalized, due));
                            return;
                        }
                        Err(reject) => {
                            self.stats.rejected[reject.index()].fetch_add(1, Ordering::Relaxed);
                            self.log.note(reject, self.normalizer.last_symbol());
                        }
                    }
                }
            }
        }
    }

    /// When a tick `played_ns` into the recording is due, in real time since the start.
    fn due_at(&self, played_ns: u64) -> Duration {
        if self.speed <= 0.0 {
            return Duration::ZERO;
        }
        // A float to integer cast saturates: no wrap, whatever the speed.
        Duration::from_nanos((played_ns as f64 / self.speed) as u64)
    }
}

impl Source for Replay {
    fn poll(&mut self, elapsed: Duration, _now_ns: u64, max_batch: usize, out: &mut Batch) -> usize {
        let mut n = 0;
        while n < max_batch {
            let Some((normalized, played_ns)) = self.pending else { break };
            if self.due_at(played_ns) > elapsed {
                break;
            }
            if let Some((from, to)) = normalized.upstream_gap {
                self.stats.health.count_gap(from, to);
            }
            out.push(normalized);
            n += 1;
            self.advance();
        }
        n
    }

    fn next_due(&self) -> Option<Duration> {
        self.pending.as_ref().map(|(_, played_ns)| self.due_at(*played_ns))
    }
}

/// Writes every published tick as a line of the upstream schema, replayable later.
pub struct Recorder {
    writer: Box<dyn Write + Send>,
    line: Vec<u8>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// Creates (or truncates) `path`, gzip-compressed if it ends in `.gz`.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = BufWriter::new(File::create(path)?);
        let writer: Box<dyn Write + Send> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(GzEncoder::new(file, Compression::default()))
        } else {
            Box::new(file)
        };
        Ok(Self { writer, line: Vec::with_capacity(256) })
    }

    /// Appends every tick of a published (sequenced) batch, each with the upstream's own
    /// sequence number (`seq`, if it has one), tickgate's (`gw_seq`), and the upstream reset
    /// announced before it (`reset`), so a replay announces what the live run did.
    pub fn record_batch(&mut self, symbols: &SymbolTable, batch: &Batch) -> io::Result<()> {
        let mut seqs = batch.upstream_seqs.iter().peekable();
        let mut breaks = batch.upstream_gaps.iter().peekable();
        for (i, tick) in batch.ticks.iter().enumerate() {
            let seq = seqs.next_if(|(at, _)| *at == i).map(|(_, seq)| *seq);
            let mut reset = None;
            while let Some(gap) = breaks.next_if(|g| g.before == i) {
                if let Discontinuity::Reset(reason) = gap.kind {
                    reset = Some(reason);
                }
            }
            self.record(symbols, tick, seq, reset)?;
        }
        Ok(())
    }

    /// Appends one sequenced tick.
    pub fn record(
        &mut self,
        symbols: &SymbolTable,
        tick: &Tick,
        upstream_seq: Option<u64>,
        reset: Option<ResetReason>,
    ) -> io::Result<()> {
        let info = symbols.get(tick.symbol);
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(if tick.kind.is_trade() { b"trade" } else { b"quote" });
        line.extend_from_slice(b"\",\"symbol\":\"");
        line.extend_from_slice(info.name.as_bytes());
        line.push(b'"');
        let mut field = |name: &str, mantissa: i64, scale: u8| {
            line.extend_from_slice(b",\"");
            line.extend_from_slice(name.as_bytes());
            line.extend_from_slice(b"\":\"");
            format_fixed(line, mantissa, scale);
            line.push(b'"');
        };
        match tick.kind {
            TickKind::Trade { price, size } => {
                field("price", price, info.price_scale);
                field("size", size, info.size_scale);
            }
            TickKind::Quote { bid, bid_size, ask, ask_size } => {
                field("bid", bid, info.price_scale);
                field("bid_size", bid_size, info.size_scale);
                field("ask", ask, info.price_scale);
                field("ask_size", ask_size, info.size_scale);
            }
        }
        let mut digits = itoa::Buffer::new();
        line.extend_from_slice(b",\"ts\":");
        line.extend_from_slice(digits.format(tick.ts).as_bytes());
        if let Some(seq) = upstream_seq {
            line.extend_from_slice(b",\"seq\":");
            line.extend_from_slice(digits.format(seq).as_bytes());
        }
        line.extend_from_slice(b",\"gw_seq\":");
        line.extend_from_slice(digits.format(tick.seq).as_bytes());
        if let Some(reason) = reset {
            line.extend_from_slice(b",\"reset\":\"");
            line.extend_from_slice(reason.reason().as_bytes());
            line.push(b'"');
        }
        line.extend_from_slice(b"}\n");
        self.writer.write_all(line)
    }

    /// Flushes what is buffered (and, for gzip, finishes the stream when dropped).
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimConfig, SimMarket, universe};
    use tickgate_core::Sequencer;
    use tickgate_protocol::{FrameBuilder, message};

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tickgate-replay-{}-{name}", std::process::id()))
    }

    /// Sequenced ticks of the simulated market, as the ingest thread would publish them.
    fn sim_ticks(n: usize) -> (Arc<SymbolTable>, Vec<Tick>) {
        let config = SimConfig { symbols: 30, rate: 10_000.0, ..SimConfig::default() };
        let symbols = Arc::new(universe(&config));
        let mut market = SimMarket::new(&config, &symbols);
        let mut ticks = Vec::new();
        market.poll(Duration::from_secs(60), 1_700_000_000_000_000_000, n, &mut ticks);
        // Spread exchange times 100 µs apart, as a recording would have them.
        let mut seq = Sequencer::new(symbols.len());
        for (i, t) in ticks.iter_mut().enumerate() {
            t.ts = 1_700_000_000_000_000_000 + i as u64 * 100_000;
            seq.stamp(t);
        }
        (symbols, ticks)
    }

    fn stats() -> Arc<SourceStats> {
        Arc::new(SourceStats::new("replay", "replay", 0.0))
    }

    fn replay_batch(path: &Path, symbols: &Arc<SymbolTable>, stats: &Arc<SourceStats>) -> Batch {
        let mut replay = Replay::open(path, symbols.clone(), 0.0, false, stats.clone()).unwrap();
        let mut out = Batch::default();
        while replay.next_due().is_some() {
            replay.poll(Duration::ZERO, 0, 100, &mut out);
        }
        out
    }

    fn replay_all(path: &Path, symbols: &Arc<SymbolTable>, stats: &Arc<SourceStats>) -> Vec<Tick> {
        replay_batch(path, symbols, stats).ticks
    }

    fn frames(symbols: &SymbolTable, ticks: &[Tick]) -> Vec<Vec<u8>> {
        let mut builder = FrameBuilder::new();
        let mut seq = Sequencer::new(symbols.len());
        ticks
            .iter()
            .map(|t| {
                let mut t = *t;
                seq.stamp(&mut t);
                builder.text(|o| message::event(o, symbols.get(t.symbol), &t, 0)).to_vec()
            })
            .collect()
    }

    #[test]
    fn a_recording_replays_to_the_same_ticks_sequence_numbers_and_bytes() {
        let (symbols, ticks) = sim_ticks(2_000);
        for name in ["tape.jsonl", "tape.jsonl.gz"] {
            let path = temp(name);
            let mut recorder = Recorder::create(&path).unwrap();
            for t in &ticks {
                recorder.record(&symbols, t, None, None).unwrap();
            }
            drop(recorder);
            let stats = stats();
            let first = replay_all(&path, &symbols, &stats);
            let second = replay_all(&path, &symbols, &stats);
            std::fs::remove_file(&path).unwrap();
            assert_eq!(first.len(), ticks.len(), "{name}");
            for (a, b) in first.iter().zip(&ticks) {
                assert_eq!((a.symbol, a.ts, a.kind), (b.symbol, b.ts, b.kind), "{name}: exact values");
            }
            assert_eq!(frames(&symbols, &first), frames(&symbols, &second), "{name}: same bytes out");
            assert_eq!(stats.rejected_total(), 0);
        }
    }

    #[test]
    fn bad_lines_are_counted_and_skipped() {
        let (symbols, ticks) = sim_ticks(3);
        let path = temp("bad.jsonl");
        let mut recorder = Recorder::create(&path).unwrap();
        recorder.record(&symbols, &ticks[0], None, None).unwrap();
        recorder.flush().unwrap();
        drop(recorder);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("not json\n{\"type\":\"trade\",\"symbol\":\"NOPE\",\"price\":\"1\",\"size\":\"1\",\"ts\":1}\n\n");
        text.push_str("{\"type\":\"trade\",\"symbol\":\"AAPL\",\"price\":\"1.0001\",\"size\":\"1\",\"ts\":1}\n");
        std::fs::write(&path, text).unwrap();
        let stats = stats();
        let out = replay_all(&path, &symbols, &stats);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(out.len(), 1);
        let count = |r: Reject| stats.rejected[r.index()].load(Ordering::Relaxed);
        assert_eq!(count(Reject::Malformed), 1);
        assert_eq!(count(Reject::UnknownSymbol), 1);
        assert_eq!(count(Reject::BadDecimal("price")), 1);
    }

    #[test]
    fn paced_replay_releases_ticks_at_their_recorded_offsets_and_loops() {
        let (symbols, ticks) = sim_ticks(10);
        let path = temp("paced.jsonl");
        let mut recorder = Recorder::create(&path).unwrap();
        for t in &ticks {
            recorder.record(&symbols, t, None, None).unwrap();
        }
        drop(recorder);
        // Twice the recorded pace: ticks 100 µs apart come 50 µs apart.
        let mut replay = Replay::open(&path, symbols.clone(), 2.0, true, stats()).unwrap();
        let mut batch = Batch::default();
        assert_eq!(replay.poll(Duration::from_micros(120), 0, 100, &mut batch), 3, "ticks at 0, 50 and 100 µs");
        assert_eq!(replay.next_due(), Some(Duration::from_micros(150)));
        replay.poll(Duration::from_secs(1), 0, 25, &mut batch);
        let out = batch.ticks;
        std::fs::remove_file(&path).ok();
        assert_eq!(out.len(), 28, "looping goes on past the end of the recording");
        assert!(out.windows(2).all(|w| w[1].ts > w[0].ts), "exchange time keeps rising across laps");
    }

    fn trade_line(symbol: &str, ts: u64, seq: Option<u64>) -> String {
        let seq = seq.map_or(String::new(), |s| format!(",\"seq\":{s}"));
        format!("{{\"type\":\"trade\",\"symbol\":\"{symbol}\",\"price\":\"1\",\"size\":\"1\",\"ts\":{ts}{seq}}}\n")
    }

    fn symbols() -> Arc<SymbolTable> {
        let (symbols, _) = sim_ticks(1);
        symbols
    }

    #[test]
    fn replay_announces_the_upstream_gaps_and_resets_of_the_recording() {
        let symbols = symbols();
        let name = &*symbols.get(tickgate_core::SymbolId(0)).name;
        let path = temp("gaps.jsonl");
        let t = 1_700_000_000_000_000_000;
        let mut text: String = [1, 2, 5, 6].into_iter().map(|s| trade_line(name, t + s, Some(s))).collect();
        text.push_str(&trade_line(name, t + 7, Some(1)).replace('}', ",\"reset\":\"upstream_restart\"}"));
        std::fs::write(&path, text).unwrap();
        let stats = stats();
        let batch = replay_batch(&path, &symbols, &stats);
        std::fs::remove_file(&path).ok();
        assert_eq!(batch.len(), 5);
        let kinds: Vec<(usize, Discontinuity)> = batch.upstream_gaps.iter().map(|g| (g.before, g.kind)).collect();
        assert_eq!(
            kinds,
            [(2, Discontinuity::Missed(2)), (4, Discontinuity::Reset(ResetReason::UpstreamRestart))],
            "seq 3 and 4 are missing; the recording says the numbering restarted at the last line"
        );
        assert_eq!(stats.health.upstream_gaps.load(Ordering::Relaxed), 2);
        let seqs: Vec<u64> = batch.upstream_seqs.iter().map(|(_, s)| *s).collect();
        assert_eq!(seqs, [1, 2, 5, 6, 1]);
    }

    #[test]
    fn a_recording_whose_time_goes_back_plays_at_its_pace_and_loops_without_a_burst() {
        let symbols = symbols();
        let name = &*symbols.get(tickgate_core::SymbolId(0)).name;
        let path = temp("backwards.jsonl");
        let t = 1_700_000_000_000_000_000u64;
        let second = 1_000_000_000;
        // The last line is 2 s before the first: each lap still lasts about 1 s.
        let text: String = [t, t + second, t - 2 * second].into_iter().map(|ts| trade_line(name, ts, None)).collect();
        std::fs::write(&path, text).unwrap();
        let mut replay = Replay::open(&path, symbols.clone(), 1.0, true, stats()).unwrap();
        let mut batch = Batch::default();
        replay.poll(Duration::from_secs(10), 0, 1_000, &mut batch);
        std::fs::remove_file(&path).ok();
        // About 1 s and 1 ms per lap of three ticks: 3 per second, 30 in ten seconds.
        assert!((25..=33).contains(&batch.len()), "{} ticks in 10 s", batch.len());
        let laps = batch.upstream_gaps.iter().filter(|g| g.kind == Discontinuity::Reset(ResetReason::ReplayLoop));
        assert_eq!(laps.count(), 0, "unsequenced ticks: no numbering to restart");
        let lap_starts: Vec<u64> = batch.ticks.iter().step_by(3).map(|t| t.ts).collect();
        assert!(lap_starts.windows(2).all(|w| w[1] > w[0]), "each lap's exchange time is after the last's");
    }

    #[test]
    fn pace_never_wraps() {
        let mut pace = Pace::default();
        for ts in [u64::MAX, 0, u64::MAX, 1] {
            pace.step(ts);
        }
        pace.new_lap();
        let (due, ts) = pace.step(u64::MAX);
        assert_eq!((due, ts), (u64::MAX, u64::MAX), "saturates");
    }
}
