//! Replaying a recording, and making one.
//!
//! A recording is JSON lines in tickgate's upstream schema ([`crate::normalize`]), optionally
//! gzip-compressed (a path ending in `.gz`): what `[feed] record_path` writes from any source.
//! A replay plays it at its recorded pace, N times faster, or as fast as the ingest thread takes
//! it (`speed = 0`), optionally looping. Lines are normalized like any upstream's: bad ones are
//! counted by reason and skipped. The same file always gives the same ticks, so the same
//! sequence numbers and the same frames (but for `gw_ts`, the ingest time of this run).

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

use crate::normalize::{Normalizer, Reject};
use crate::resolve::{SymbolResolver, UnknownSymbols};
use crate::source::{Batch, Source};

/// Counts of rejected lines, by [`Reject::index`].
pub type RejectCounts = [AtomicU64; Reject::REASONS.len()];

fn open(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
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
    /// Names symbols; a new lap starts a new normalizer with it (upstream seqs start over).
    resolver: SymbolResolver,
    /// Recorded nanoseconds per real nanosecond; 0 = as fast as possible.
    speed: f64,
    looping: bool,
    /// Exchange time of the recording's first tick, and the offset added per loop.
    first_ts: Option<u64>,
    loop_offset: u64,
    last_ts: u64,
    /// The next tick, read but not yet due.
    pending: Option<Tick>,
    line: Vec<u8>,
    finished: bool,
    rejects: Arc<RejectCounts>,
    log: crate::normalize::RejectLog,
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
        rejects: Arc<RejectCounts>,
    ) -> io::Result<Self> {
        let resolver = SymbolResolver::new(symbols, &Default::default(), UnknownSymbols::Reject);
        Self::open_with(path, resolver, speed, looping, rejects, "replay")
    }

    /// Opens `path`, naming symbols with `resolver` (aliases, unknown symbols added or not), and
    /// logging rejects as source `name`.
    pub fn open_with(
        path: &Path,
        resolver: SymbolResolver,
        speed: f64,
        looping: bool,
        rejects: Arc<RejectCounts>,
        name: &str,
    ) -> io::Result<Self> {
        let reader = open(path)?;
        // Recorded timestamps are old by design: no skew limit.
        let normalizer = Normalizer::with_resolver(resolver.clone(), u64::MAX);
        let mut replay = Self {
            path: path.to_path_buf(),
            reader,
            normalizer,
            resolver,
            speed,
            looping,
            first_ts: None,
            loop_offset: 0,
            last_ts: 0,
            pending: None,
            line: Vec::with_capacity(256),
            finished: false,
            rejects,
            log: crate::normalize::RejectLog::new(name),
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
                    if !self.looping || self.first_ts.is_none() {
                        self.finished = true;
                        return;
                    }
                    match open(&self.path) {
                        Ok(reader) => {
                            self.reader = reader;
                            // The next lap starts 1 ms after this one ended; upstream sequence
                            // numbers start over, so the normalizer does too.
                            self.loop_offset = self.last_ts + 1_000_000 - self.first_ts.unwrap_or(0);
                            self.normalizer = Normalizer::with_resolver(self.resolver.clone(), u64::MAX);
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
                        Ok(normalized) => {
                            let mut tick = normalized.tick;
                            tick.ts += self.loop_offset;
                            self.first_ts.get_or_insert(tick.ts);
                            self.last_ts = tick.ts;
                            self.pending = Some(tick);
                            return;
                        }
                        Err(reject) => {
                            self.rejects[reject.index()].fetch_add(1, Ordering::Relaxed);
                            self.log.note(reject);
                        }
                    }
                }
            }
        }
    }

    fn due_at(&self, tick: &Tick) -> Duration {
        if self.speed <= 0.0 {
            return Duration::ZERO;
        }
        let recorded = tick.ts.saturating_sub(self.first_ts.unwrap_or(tick.ts));
        Duration::from_nanos((recorded as f64 / self.speed) as u64)
    }
}

impl Source for Replay {
    fn poll(&mut self, elapsed: Duration, _now_ns: u64, max_batch: usize, out: &mut Batch) -> usize {
        let mut n = 0;
        while n < max_batch {
            let Some(tick) = self.pending else { break };
            if self.due_at(&tick) > elapsed {
                break;
            }
            out.ticks.push(tick);
            n += 1;
            self.advance();
        }
        n
    }

    fn next_due(&self) -> Option<Duration> {
        self.pending.as_ref().map(|t| self.due_at(t))
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

    /// Appends one sequenced tick.
    pub fn record(&mut self, symbols: &SymbolTable, tick: &Tick) -> io::Result<()> {
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
        line.extend_from_slice(b",\"seq\":");
        line.extend_from_slice(digits.format(tick.seq).as_bytes());
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

    fn replay_all(path: &Path, symbols: &Arc<SymbolTable>, rejects: &Arc<RejectCounts>) -> Vec<Tick> {
        let mut replay = Replay::open(path, symbols.clone(), 0.0, false, rejects.clone()).unwrap();
        let mut out = Batch::default();
        while replay.next_due().is_some() {
            replay.poll(Duration::ZERO, 0, 100, &mut out);
        }
        out.ticks
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
                recorder.record(&symbols, t).unwrap();
            }
            drop(recorder);
            let rejects = Arc::new(RejectCounts::default());
            let first = replay_all(&path, &symbols, &rejects);
            let second = replay_all(&path, &symbols, &rejects);
            std::fs::remove_file(&path).unwrap();
            assert_eq!(first.len(), ticks.len(), "{name}");
            for (a, b) in first.iter().zip(&ticks) {
                assert_eq!((a.symbol, a.ts, a.kind), (b.symbol, b.ts, b.kind), "{name}: exact values");
            }
            assert_eq!(frames(&symbols, &first), frames(&symbols, &second), "{name}: same bytes out");
            assert!(rejects.iter().all(|r| r.load(Ordering::Relaxed) == 0));
        }
    }

    #[test]
    fn bad_lines_are_counted_and_skipped() {
        let (symbols, ticks) = sim_ticks(3);
        let path = temp("bad.jsonl");
        let mut recorder = Recorder::create(&path).unwrap();
        recorder.record(&symbols, &ticks[0]).unwrap();
        recorder.flush().unwrap();
        drop(recorder);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("not json\n{\"type\":\"trade\",\"symbol\":\"NOPE\",\"price\":\"1\",\"size\":\"1\",\"ts\":1}\n\n");
        text.push_str("{\"type\":\"trade\",\"symbol\":\"AAPL\",\"price\":\"1.0001\",\"size\":\"1\",\"ts\":1}\n");
        std::fs::write(&path, text).unwrap();
        let rejects = Arc::new(RejectCounts::default());
        let out = replay_all(&path, &symbols, &rejects);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(out.len(), 1);
        let count = |r: Reject| rejects[r.index()].load(Ordering::Relaxed);
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
            recorder.record(&symbols, t).unwrap();
        }
        drop(recorder);
        let rejects = Arc::new(RejectCounts::default());
        // Twice the recorded pace: ticks 100 µs apart come 50 µs apart.
        let mut replay = Replay::open(&path, symbols.clone(), 2.0, true, rejects).unwrap();
        let mut batch = Batch::default();
        assert_eq!(replay.poll(Duration::from_micros(120), 0, 100, &mut batch), 3, "ticks at 0, 50 and 100 µs");
        assert_eq!(replay.next_due(), Some(Duration::from_micros(150)));
        replay.poll(Duration::from_secs(1), 0, 25, &mut batch);
        let out = batch.ticks;
        std::fs::remove_file(&path).ok();
        assert_eq!(out.len(), 28, "looping goes on past the end of the recording");
        assert!(out.windows(2).all(|w| w[1].ts > w[0].ts), "exchange time keeps rising across laps");
    }
}
