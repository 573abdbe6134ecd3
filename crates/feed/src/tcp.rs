//! Newline-delimited JSON ticks over TCP, in tickgate's upstream schema ([`crate::normalize`]):
//! the simplest integration for in-house systems. tickgate either connects to the upstream
//! (reconnecting with backoff and jitter when it goes away) or listens for it.
//!
//! A reader thread owns the connection: it reads lines (at most [`MAX_LINE`] bytes), normalizes
//! them, counts and skips the bad ones, and hands good ticks to the ingest thread over a bounded
//! channel ([`crate::upstream`]). A full channel blocks the reader, which is backpressure on the
//! upstream connection, never on the reactors. A last line without its newline, when the
//! upstream closes, is taken like any other.
//!
//! Liveness: TCP keepalive, and a silence bound ([`Liveness::silence`]): an upstream that sends
//! no line for that long (an empty line counts, and is otherwise skipped) is dropped, the source
//! is down, and the reader reconnects (connect mode) or waits for the next connection (listen
//! mode).
//!
//! Listen mode: an accepting thread holds each new connection until it sends its first byte.
//! One that closes or stays silent for the silence bound first (a health probe, a port scanner)
//! is counted as a probe, logged at most once a second, and changes nothing for clients. One that
//! sends data replaces the current connection, if any (which is closed): a restarted upstream
//! always gets in, even past a half-open predecessor. At most [`MAX_WAITING`] connections wait;
//! a newer one closes the one that waited longest (counted as a probe, with a log line), so
//! connections held open without a byte cannot lock a restarted upstream out.

use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::ingest::wall_clock_ns;
use crate::normalize::{Normalizer, Reject, RejectLog};
use crate::replay::RejectCounts;
use crate::source::SourceStats;
pub use crate::upstream::SourceHealth;
use crate::upstream::{Backoff, Liveness, LogLimit, Session, UpstreamFeed, UpstreamSource, sleep_unless_stopped};

/// Longest accepted line; longer ones are skipped whole and counted as malformed.
pub const MAX_LINE: usize = 64 * 1024;

/// Ticks buffered between the reader and the ingest thread.
const CHANNEL: usize = 64 * 1024;

/// Listen mode: most connections waiting to send their first byte.
pub const MAX_WAITING: usize = 16;

/// Listen mode: most connections accepted per turn of the accepting thread (every 10 ms).
const MAX_ACCEPTS_PER_TURN: usize = 64;

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether tickgate connects to the upstream or waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Connect(SocketAddr),
    Listen(SocketAddr),
}

/// A TCP source: [`TcpSource::start`] gives the ingest side.
#[derive(Debug)]
pub struct TcpSource;

impl TcpSource {
    /// Starts the reader thread (and in listen mode the accepting thread), normalizing with
    /// `normalizer` and counting into `stats`. In listen mode the listener is bound here, so a
    /// bad address fails the start.
    pub fn start(
        mode: Mode,
        normalizer: Normalizer,
        stats: Arc<SourceStats>,
        liveness: Liveness,
    ) -> io::Result<UpstreamSource> {
        let (tx, feed) = UpstreamFeed::channel(CHANNEL, &liveness);
        let stop = Arc::new(AtomicBool::new(false));
        let handoff = match mode {
            Mode::Listen(addr) => {
                let listener = TcpListener::bind(addr)?;
                // Non-blocking: the accepting thread also watches the waiting connections.
                listener.set_nonblocking(true)?;
                let (handoff_tx, handoff) = crossbeam_channel::bounded(1);
                let acceptor = Acceptor {
                    listener,
                    handoff: handoff_tx,
                    stop: stop.clone(),
                    health: stats.health.clone(),
                    silence: liveness.silence,
                    name: stats.name.clone(),
                    probe_log: LogLimit::default(),
                    refused_log: LogLimit::default(),
                };
                thread::Builder::new().name(format!("tickgate-acc-{}", stats.name)).spawn(move || acceptor.run())?;
                Some(handoff)
            }
            Mode::Connect(_) => None,
        };
        let reader = Reader {
            name: stats.name.clone(),
            log: RejectLog::new(&stats.name),
            connected_log: LogLimit::default(),
            ended_log: LogLimit::default(),
            normalizer,
            rejects: stats.rejected.clone(),
            health: stats.health.clone(),
            stop: stop.clone(),
            liveness,
        };
        thread::Builder::new()
            .name(format!("tickgate-src-{}", stats.name))
            .spawn(move || reader.run(mode, handoff, tx))?;
        Ok(UpstreamSource::new(feed, stop))
    }
}

/// Sets a connection up for reading: blocking, with the read timeout and TCP keepalive.
fn configure(stream: &TcpStream, liveness: &Liveness) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(liveness.read_timeout()))?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(liveness.silence.max(Duration::from_secs(1)))
        .with_interval((liveness.silence / 4).max(Duration::from_secs(1)))
        .with_retries(4);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// Listen mode: accepts connections and hands over those that send data.
struct Acceptor {
    listener: TcpListener,
    handoff: Sender<(TcpStream, SocketAddr)>,
    stop: Arc<AtomicBool>,
    health: Arc<SourceHealth>,
    silence: Duration,
    name: Box<str>,
    probe_log: LogLimit,
    refused_log: LogLimit,
}

impl Acceptor {
    fn run(mut self) {
        let mut waiting: Vec<(TcpStream, SocketAddr, Instant)> = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            self.accept_all(&mut waiting);
            self.sweep(&mut waiting);
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Hands over the waiting connections that sent data, and drops those that closed or stayed
    /// silent.
    fn sweep(&mut self, waiting: &mut Vec<(TcpStream, SocketAddr, Instant)>) {
        let mut i = 0;
        while i < waiting.len() {
            let (stream, _, since) = &waiting[i];
            match stream.peek(&mut [0u8; 1]) {
                Ok(0) => self.probe(waiting.swap_remove(i).1, "closed without sending anything"),
                Ok(_) => {
                    let (stream, peer, _) = waiting.swap_remove(i);
                    self.hand_over(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && since.elapsed() < self.silence => i += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.probe(waiting.swap_remove(i).1, "sent nothing within the silence bound");
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => i += 1,
                Err(_) => self.probe(waiting.swap_remove(i).1, "failed before sending anything"),
            }
        }
    }

    /// Accepts what is waiting in the backlog, at most [`MAX_ACCEPTS_PER_TURN`] (a connect storm
    /// does not keep the waiting connections from being looked at).
    fn accept_all(&mut self, waiting: &mut Vec<(TcpStream, SocketAddr, Instant)>) {
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if waiting.len() >= MAX_WAITING {
                        self.sweep(waiting);
                    }
                    if stream.set_nonblocking(true).is_err() {
                        self.probe(peer, "failed before sending anything");
                        continue;
                    }
                    // Full: the connection that waited longest makes room. Connections held open
                    // without a byte then only push each other out; a restarted upstream, which
                    // sends at once, is handed over at the next sweep.
                    if waiting.len() >= MAX_WAITING
                        && let Some(oldest) = waiting.iter().enumerate().min_by_key(|(_, w)| w.2).map(|(i, _)| i)
                    {
                        let (_, dropped, _) = waiting.swap_remove(oldest);
                        self.health.probes.fetch_add(1, Ordering::Relaxed);
                        if let Some(held_back) = self.refused_log.allow() {
                            tracing::warn!(
                                source = &*self.name,
                                peer = %dropped,
                                held_back,
                                "upstream connection closed unread: {MAX_WAITING} connections wait for their first byte, a newer one came"
                            );
                        }
                    }
                    waiting.push((stream, peer, Instant::now()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, typically: the next turn tries again.
                    if let Some(held_back) = self.refused_log.allow() {
                        tracing::warn!(source = &*self.name, error = %e, held_back, "cannot accept upstream connections");
                    }
                    return;
                }
            }
        }
    }

    fn probe(&mut self, peer: SocketAddr, what: &str) {
        self.health.probes.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.probe_log.allow() {
            tracing::info!(source = &*self.name, %peer, held_back, "upstream connection {what} (a health probe?)");
        }
    }

    fn hand_over(&mut self, stream: TcpStream, peer: SocketAddr) {
        let mut item = (stream, peer);
        while !self.stop.load(Ordering::Relaxed) {
            match self.handoff.try_send(item) {
                Ok(()) => return,
                Err(TrySendError::Full(back)) => {
                    item = back;
                    thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Ended {
    EndOfStream,
    Silent(Duration),
    Failed(io::Error),
    ShuttingDown,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EndOfStream => f.write_str("end of stream"),
            Self::Silent(d) => write!(f, "nothing received for {} ms", d.as_millis()),
            Self::Failed(e) => write!(f, "{e}"),
            Self::ShuttingDown => f.write_str("shutting down"),
        }
    }
}

struct Reader {
    name: Box<str>,
    log: RejectLog,
    /// "connected" and "ended" lines: at most one of each a second (a listen-mode peer may
    /// connect, send a byte and close in a loop).
    connected_log: LogLimit,
    ended_log: LogLimit,
    normalizer: Normalizer,
    rejects: Arc<RejectCounts>,
    health: Arc<SourceHealth>,
    stop: Arc<AtomicBool>,
    liveness: Liveness,
}

impl Reader {
    fn run(
        mut self,
        mode: Mode,
        handoff: Option<Receiver<(TcpStream, SocketAddr)>>,
        tx: Sender<crate::upstream::Upstream>,
    ) {
        let mut backoff = Backoff::new(&self.liveness);
        let mut connections = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let (stream, peer) = match (mode, &handoff) {
                (Mode::Listen(_), Some(handoff)) => match handoff.recv_timeout(Duration::from_millis(100)) {
                    Ok(connection) => connection,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                (Mode::Listen(_), None) => return,
                (Mode::Connect(addr), _) => match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                    Ok(stream) => (stream, addr),
                    Err(e) => {
                        self.health.connect_failures.fetch_add(1, Ordering::Relaxed);
                        let wait = backoff.next(&self.health);
                        let retry_in_ms = wait.as_millis() as u64;
                        tracing::warn!(source = &*self.name, error = %e, retry_in_ms, "upstream unreachable");
                        sleep_unless_stopped(wait, &self.stop);
                        continue;
                    }
                },
            };
            if connections > 0 {
                self.health.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            connections += 1;
            if let Some(held_back) = self.connected_log.allow() {
                tracing::info!(source = &*self.name, %peer, held_back, "upstream connected");
            }
            self.normalizer.new_session();
            let mut session = Session::start(&tx, &self.health);
            let ended = self.read(stream, &mut session, handoff.as_ref());
            session.end(&self.liveness, &self.health, &mut backoff);
            if let Mode::Connect(_) = mode {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                let wait = backoff.next(&self.health);
                let retry_in_ms = wait.as_millis() as u64;
                if let Some(held_back) = self.ended_log.allow() {
                    tracing::warn!(source = &*self.name, reason = %ended, retry_in_ms, held_back, "upstream connection ended");
                }
                sleep_unless_stopped(wait, &self.stop);
            } else {
                if let Some(held_back) = self.ended_log.allow() {
                    tracing::warn!(source = &*self.name, reason = %ended, held_back, "upstream connection ended");
                }
                sleep_unless_stopped(backoff.take_floor(), &self.stop);
            }
        }
    }

    /// Reads lines until the connection ends (or, in listen mode, a newer one replaces it).
    fn read(
        &mut self,
        stream: TcpStream,
        session: &mut Session<'_>,
        handoff: Option<&Receiver<(TcpStream, SocketAddr)>>,
    ) -> Ended {
        if let Err(e) = configure(&stream, &self.liveness) {
            return Ended::Failed(e);
        }
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut line = Vec::with_capacity(1024);
        let mut skipping = false;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ended::ShuttingDown;
            }
            // A newer connection takes over once the lines already read from this one are taken.
            let between_reads = reader.buffer().is_empty();
            if let Some((newer, peer)) = handoff.filter(|_| between_reads).and_then(|h| h.try_recv().ok()) {
                self.finish_line(&mut line, &mut skipping, session);
                if let Err(e) = configure(&newer, &self.liveness) {
                    tracing::warn!(source = &*self.name, %peer, error = %e, "newer upstream connection unusable");
                    continue;
                }
                self.health.replaced.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(source = &*self.name, %peer, "a newer upstream connection replaces the current one");
                reader = BufReader::with_capacity(64 * 1024, newer);
                // A new connection is a new upstream session: its numbering may start afresh.
                self.normalizer.new_session();
                session.heard();
                continue;
            }
            let buf = match reader.fill_buf() {
                Ok([]) => {
                    self.finish_line(&mut line, &mut skipping, session);
                    return Ended::EndOfStream;
                }
                Ok(buf) => buf,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    let silent = session.silent_for();
                    if silent >= self.liveness.silence {
                        self.health.silences.fetch_add(1, Ordering::Relaxed);
                        return Ended::Silent(silent);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.finish_line(&mut line, &mut skipping, session);
                    return Ended::Failed(e);
                }
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
            if complete {
                // A line, even empty or bad, is life; bytes that never make a line are not.
                session.heard();
                self.finish_line(&mut line, &mut skipping, session);
            }
        }
    }

    /// Takes the line read so far: a tick, a reject (an overlong line), or nothing (empty).
    fn finish_line(&mut self, line: &mut Vec<u8>, skipping: &mut bool, session: &mut Session<'_>) {
        if std::mem::take(skipping) {
            self.rejects[Reject::Malformed.index()].fetch_add(1, Ordering::Relaxed);
            self.log.note(Reject::Malformed, "");
        } else {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.is_empty() {
                self.handle(line, session);
            }
        }
        line.clear();
    }

    fn handle(&mut self, line: &mut [u8], session: &mut Session<'_>) {
        let now = wall_clock_ns();
        match self.normalizer.normalize(line, now) {
            Ok(normalized) => {
                if let Some((from, to)) = normalized.upstream_gap {
                    self.health.count_gap(from, to);
                }
                self.health.last_message_ns.store(now, Ordering::Relaxed);
                session.deliver(normalized);
            }
            Err(reject) => {
                self.rejects[reject.index()].fetch_add(1, Ordering::Relaxed);
                self.log.note(reject, self.normalizer.last_symbol());
            }
        }
    }
}
