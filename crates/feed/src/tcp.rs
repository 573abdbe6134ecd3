//! Newline-delimited JSON ticks over TCP, in tickgate's upstream schema ([`crate::normalize`]):
//! the simplest integration for in-house systems. tickgate either connects to the upstream
//! (reconnecting with backoff and jitter when it goes away) or listens for it.
//!
//! A reader thread owns the socket: it reads lines (at most [`MAX_LINE`] bytes), normalizes them,
//! counts and skips the bad ones, and hands good ticks to the ingest thread over a bounded
//! channel. A full channel blocks the reader, which is backpressure on the upstream connection,
//! never on the reactors.

use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::ingest::wall_clock_ns;
use crate::normalize::{Normalized, Normalizer, Reject};
use crate::replay::RejectCounts;
use crate::source::{Batch, Source, SourceStats};
use crossbeam_channel::{Receiver, Sender, TryRecvError};

/// Longest accepted line; longer ones are skipped whole and counted as malformed.
pub const MAX_LINE: usize = 64 * 1024;

/// Whether tickgate connects to the upstream or waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Connect(SocketAddr),
    Listen(SocketAddr),
}

/// What /readyz and /metrics say about the upstream.
#[derive(Debug, Default)]
pub struct SourceHealth {
    pub connected: AtomicBool,
    /// Connections (re)established after the first.
    pub reconnects: AtomicU64,
    /// Attempts to connect that failed (unreachable, refused, a TLS or WebSocket handshake that
    /// failed), each followed by a retry after the backoff.
    pub connect_failures: AtomicU64,
    /// Events the upstream's own sequence numbers say were skipped.
    pub upstream_gaps: AtomicU64,
    /// Wall-clock ns of the last good message.
    pub last_message_ns: AtomicU64,
}

/// The ingest side of a TCP source.
#[derive(Debug)]
pub struct TcpSource {
    ticks: Receiver<Normalized>,
    stop: Arc<AtomicBool>,
    stats: Arc<SourceStats>,
}

impl TcpSource {
    /// Starts the reader thread, normalizing with `normalizer` and counting into `stats`. In
    /// listen mode the listener is bound here, so a bad address fails the start.
    pub fn start(mode: Mode, normalizer: Normalizer, stats: Arc<SourceStats>) -> io::Result<Self> {
        let (tx, ticks) = crossbeam_channel::bounded(64 * 1024);
        let stop = Arc::new(AtomicBool::new(false));
        let listener = match mode {
            Mode::Listen(addr) => {
                let listener = TcpListener::bind(addr)?;
                // Non-blocking, so the reader notices shutdown while no upstream is connected.
                listener.set_nonblocking(true)?;
                Some(listener)
            }
            Mode::Connect(_) => None,
        };
        let reader = Reader {
            log: crate::normalize::RejectLog::new(&stats.name),
            normalizer,
            rejects: stats.rejected.clone(),
            health: stats.health.clone(),
            tx,
            stop: stop.clone(),
        };
        thread::Builder::new()
            .name(format!("tickgate-src-{}", stats.name))
            .spawn(move || reader.run(mode, listener))?;
        Ok(Self { ticks, stop, stats })
    }
}

impl Drop for TcpSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Source for TcpSource {
    fn poll(&mut self, _elapsed: Duration, _now_ns: u64, max_batch: usize, out: &mut Batch) -> usize {
        let mut n = 0;
        while n < max_batch {
            match self.ticks.try_recv() {
                Ok(normalized) => {
                    out.push(normalized);
                    n += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        n
    }

    fn next_due(&self) -> Option<Duration> {
        // Ticks arrive when they arrive: look again after the batch interval.
        Some(Duration::ZERO)
    }

    fn is_up(&self) -> bool {
        self.stats.health.connected.load(Ordering::Relaxed)
    }
}

struct Reader {
    log: crate::normalize::RejectLog,
    normalizer: Normalizer,
    rejects: Arc<RejectCounts>,
    health: Arc<SourceHealth>,
    tx: Sender<Normalized>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    fn run(mut self, mode: Mode, listener: Option<TcpListener>) {
        let mut backoff = Duration::from_millis(100);
        let mut connections = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let stream = match (mode, &listener) {
                (Mode::Listen(_), Some(listener)) => match listener.accept() {
                    Ok((s, _)) => s.set_nonblocking(false).map(|()| s),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    Err(e) => Err(e),
                },
                (Mode::Connect(addr), _) => TcpStream::connect_timeout(&addr, Duration::from_secs(5)),
                (Mode::Listen(_), None) => return,
            };
            let stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    self.health.connect_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "upstream unreachable");
                    thread::sleep(jitter(backoff));
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if connections > 0 {
                self.health.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            connections += 1;
            backoff = Duration::from_millis(100);
            self.normalizer.new_session();
            self.health.connected.store(true, Ordering::Relaxed);
            tracing::info!(peer = ?stream.peer_addr().ok(), "upstream connected");
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let ended = self.read(stream);
            self.health.connected.store(false, Ordering::Relaxed);
            tracing::warn!(reason = %ended, "upstream connection ended");
            if matches!(mode, Mode::Connect(_)) && !self.stop.load(Ordering::Relaxed) {
                thread::sleep(jitter(backoff));
            }
        }
    }

    /// Reads lines until the connection ends; returns why it ended.
    fn read(&mut self, stream: TcpStream) -> String {
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut line = Vec::with_capacity(1024);
        let mut skipping = false;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return "shutting down".into();
            }
            let buf = match reader.fill_buf() {
                Ok([]) => return "end of stream".into(),
                Ok(buf) => buf,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return e.to_string(),
            };
            let (chunk, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(end) => (&buf[..end], true),
                None => (buf, false),
            };
            if !skipping {
                if line.len() + chunk.len() > MAX_LINE {
                    skipping = true;
                    line.clear();
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            let used = chunk.len() + usize::from(complete);
            reader.consume(used);
            if !complete {
                continue;
            }
            if std::mem::take(&mut skipping) {
                self.rejects[Reject::Malformed.index()].fetch_add(1, Ordering::Relaxed);
                self.log.note(Reject::Malformed);
                continue;
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.is_empty() {
                self.handle(&mut line);
            }
            line.clear();
        }
    }

    fn handle(&mut self, line: &mut [u8]) {
        let now = wall_clock_ns();
        match self.normalizer.normalize(line, now) {
            Ok(normalized) => {
                if let Some((from, to)) = normalized.upstream_gap {
                    self.health.upstream_gaps.fetch_add(to - from + 1, Ordering::Relaxed);
                }
                self.health.last_message_ns.store(now, Ordering::Relaxed);
                // Blocks while the ingest thread is behind: backpressure on the upstream.
                let _ = self.tx.send(normalized);
            }
            Err(reject) => {
                self.rejects[reject.index()].fetch_add(1, Ordering::Relaxed);
                self.log.note(reject);
            }
        }
    }
}

/// `base` plus up to 50% more, so reconnecting gateways do not move in step.
fn jitter(base: Duration) -> Duration {
    let noise = wall_clock_ns() % 1_000;
    base + base.mul_f64(noise as f64 / 2_000.0)
}
