//! One load-generating client connection and the reading of what the server sends it: the
//! upgrade, whole frames, and each message handed to the client's sequence tracker and to the
//! run's counters.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::deflate::{Inflater, WireFigures};
use crate::scan::{agrees_with_full_parse, scan};
use crate::silence::Silence;
use crate::superseded::Superseded;
use crate::tracker::SeqTracker;
use crate::wsframe::{expected_accept, is_readable, parse_frame, upgrade_accepted, write_client_frame};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connecting,
    Upgrading,
    Open,
    Done,
}

#[derive(Debug)]
pub struct Client {
    pub sock: TcpStream,
    /// The TLS session over `sock`, for `wss://`.
    tls: Option<Box<rustls::ClientConnection>>,
    pub state: State,
    started: Instant,
    /// Bytes of an incomplete frame from the last read.
    carry: Vec<u8>,
    /// Bytes waiting to be written (handshake, subscribe, pongs).
    pub out: Vec<u8>,
    /// The subscribe frame, sent once the upgrade is accepted (a client must not send frames
    /// before the 101, RFC 6455 §4.1).
    subscribe: Vec<u8>,
    pub tracker: SeqTracker,
    /// Stops reading for the window.
    pub slow: bool,
    /// Events received in the window.
    pub delivered: u64,
    /// Of those, the ones checked by the tracker.
    pub tracked: u64,
    /// The close code the server sent, if it closed the connection.
    pub close_code: Option<u16>,
    /// The connection ended, after the upgrade, without a close frame.
    pub dropped: bool,
    /// This connection replaces one the run dropped: it resumes (see [`crate::resume`]).
    pub reconnecting: bool,
    /// A xorshift state picking, at random, the events also fully parsed (a fixed period
    /// could fall on the same symbol every time).
    sample_state: u32,
}

impl Client {
    pub fn new(
        sock: TcpStream,
        tls: Option<Box<rustls::ClientConnection>>,
        now: Instant,
        handshake: Vec<u8>,
        subscribe: Vec<u8>,
        tracker: SeqTracker,
    ) -> Self {
        Self {
            sock,
            tls,
            state: State::Connecting,
            started: now,
            carry: Vec::new(),
            out: handshake,
            subscribe,
            tracker,
            slow: false,
            delivered: 0,
            tracked: 0,
            close_code: None,
            dropped: false,
            reconnecting: false,
            sample_state: next_sample_seed(),
        }
    }

    /// Takes a new connection in place of the one the run just dropped: it upgrades with
    /// `handshake`, then sends `subscribe` (the resume). What was read before stays counted.
    pub fn reconnect(
        &mut self,
        sock: TcpStream,
        tls: Option<Box<rustls::ClientConnection>>,
        now: Instant,
        handshake: Vec<u8>,
        subscribe: Vec<u8>,
    ) {
        self.sock = sock;
        self.tls = tls;
        self.state = State::Connecting;
        self.started = now;
        self.carry.clear();
        self.out = handshake;
        self.subscribe = subscribe;
        self.reconnecting = true;
    }

    /// Reads what the server sent (decrypted, over TLS, through `scratch`) into `buf`.
    fn read_plain(&mut self, scratch: &mut [u8], buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.sock.read(buf),
            Some(tls) => crate::tls::read(tls, &mut self.sock, scratch, buf),
        }
    }

    /// Writes what waits in `out` (through TLS when on) as far as the socket takes it; over TLS,
    /// also what rustls still holds (the handshake's flights included).
    pub fn flush_out(&mut self) -> io::Result<()> {
        match &mut self.tls {
            None if self.out.is_empty() => Ok(()),
            None => match self.sock.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(e),
            },
            Some(tls) => {
                let written = crate::tls::write(tls, &mut self.sock, &self.out);
                self.out.clear();
                written
            }
        }
    }
}

/// Starts a non-blocking connect to `addr`, from `source` if given.
pub fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        defer_port_choice_to_connect(&socket);
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Lets the kernel pick the source port at `connect` (IP_BIND_ADDRESS_NO_PORT), unique per
/// (source, destination) rather than per source address. Without it `bind(ip, 0)` hands out the
/// odd half of the ephemeral range first and then slows to a few hundred binds a second: past
/// ~14,000 clients from one source address the connects crawl. Best effort: where the option is
/// unknown the bind still works, with that limit.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn defer_port_choice_to_connect(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value of the size passed.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_port_choice_to_connect(_socket: &Socket) {}

fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

const READ_BUF: usize = 256 * 1024;
/// Ciphertext read from a TLS socket per system call, at most.
const TLS_READ: usize = 64 * 1024;

/// One event in this many per client, at random, is also fully parsed as JSON (every other
/// message is). A power of two.
pub const FULL_PARSE_EVERY: u32 = 64;

/// A distinct non-zero xorshift seed for each client, so that clients sample different events.
fn next_sample_seed() -> u32 {
    static CLIENTS: AtomicU32 = AtomicU32::new(1);
    CLIENTS.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9) | 1
}

/// The message types a server may send that need no accounting.
const BENIGN: [&[u8]; 7] =
    [b"welcome", b"symbols", b"subscriptions", b"authenticated", b"status", b"upstream_gap", b"subscribed"];

/// Reads clients, and keeps what is counted over all of them.
#[derive(Debug)]
pub struct Reader<'u> {
    index: &'u HashMap<&'u [u8], u32>,
    buf: Vec<u8>,
    /// Ciphertext read from a TLS socket, before rustls decrypts it into `buf`.
    tls_scratch: Vec<u8>,
    pub latency: Histogram<u64>,
    pub connect_hist: Histogram<u64>,
    /// From a drop to the new connection's upgrade, for the connections the run dropped.
    pub reconnect_hist: Histogram<u64>,
    pub open: usize,
    pub in_flight: usize,
    pub failed_connects: usize,
    pub unreadable: u64,
    /// Events of the window stamped with a `gw_ts` later than their receipt: not timed.
    pub stamped_ahead: u64,
    pub errors: BTreeMap<String, u64>,
    pub policy: Option<String>,
    /// Messages fully parsed (see [`FULL_PARSE_EVERY`]) that are not valid JSON or do not say
    /// what the scanner read.
    pub json_mismatches: u64,
    /// Trades received and quotes said superseded, to find trades hidden as conflated quotes.
    pub superseded: Superseded,
    /// When the readers last received each symbol.
    pub silence: Silence,
    /// The window has started: what is read from now on is judged.
    pub judging: bool,
    /// The `Sec-WebSocket-Accept` the upgrade must carry.
    accept: String,
    /// With `--deflate`: inflates what arrives compressed.
    pub inflater: Option<Inflater>,
    /// Event frames of the window as they came on the wire.
    pub wire: WireFigures,
}

/// Where a text message's payload is: in the read buffer, or inflated.
#[derive(Debug, Clone, Copy)]
enum Payload {
    Read(usize, usize),
    Inflated,
}

impl<'u> Reader<'u> {
    pub fn new(index: &'u HashMap<&'u [u8], u32>) -> Self {
        Self {
            index,
            buf: vec![0u8; READ_BUF],
            tls_scratch: vec![0u8; TLS_READ],
            latency: Histogram::new_with_bounds(1_000, 600_000_000_000, 3).expect("bounds"),
            connect_hist: Histogram::new_with_bounds(1_000, 120_000_000_000, 3).expect("bounds"),
            reconnect_hist: Histogram::new_with_bounds(1_000, 120_000_000_000, 3).expect("bounds"),
            open: 0,
            in_flight: 0,
            failed_connects: 0,
            unreadable: 0,
            stamped_ahead: 0,
            errors: BTreeMap::new(),
            policy: None,
            json_mismatches: 0,
            superseded: Superseded::new(index.len()),
            silence: Silence::new(index.len()),
            judging: false,
            accept: expected_accept(),
            inflater: None,
            wire: WireFigures::default(),
        }
    }

    fn end(&mut self, c: &mut Client) {
        match c.state {
            State::Connecting | State::Upgrading if c.reconnecting => {
                self.in_flight -= 1;
                c.tracker.resumes.reconnect_failed += 1;
                c.dropped = true;
            }
            State::Connecting | State::Upgrading => {
                self.in_flight -= 1;
                self.failed_connects += 1;
            }
            State::Open => {
                self.open -= 1;
                if c.close_code.is_none() {
                    c.dropped = true;
                }
            }
            State::Done => {}
        }
        c.state = State::Done;
    }

    /// The run drops `c` on purpose (to resume it): it no longer counts as open.
    pub fn dropping(&mut self, c: &mut Client) {
        match c.state {
            State::Open => self.open -= 1,
            State::Connecting | State::Upgrading => self.in_flight -= 1,
            State::Done => {}
        }
        c.state = State::Done;
    }

    /// A readiness event: finishes a connect, writes what is waiting.
    pub fn on_ready(&mut self, c: &mut Client, writable: bool, error: bool) {
        if c.state == State::Connecting && (writable || error) {
            match c.sock.peer_addr() {
                Ok(_) => c.state = State::Upgrading,
                Err(e) if e.kind() == io::ErrorKind::NotConnected && !error => return,
                Err(_) => return self.end(c),
            }
        }
        if matches!(c.state, State::Upgrading | State::Open) && c.flush_out().is_err() {
            self.end(c);
        }
    }

    /// Reads until WouldBlock (edge-triggered), handling whole frames in place.
    pub fn read(&mut self, c: &mut Client, now: Instant, in_window: bool) {
        while matches!(c.state, State::Upgrading | State::Open) {
            let carried = c.carry.len();
            self.buf[..carried].copy_from_slice(&c.carry);
            let n = match c.read_plain(&mut self.tls_scratch, &mut self.buf[carried..]) {
                Ok(0) => return self.end(c),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.end(c),
            };
            let received_ns = wall_ns();
            let end = carried + n;
            let mut at = 0;
            if c.state == State::Upgrading {
                match self.buf[..end].windows(4).position(|w| w == b"\r\n\r\n") {
                    None => {
                        c.carry.clear();
                        c.carry.extend_from_slice(&self.buf[..end]);
                        continue;
                    }
                    Some(pos) => {
                        if !upgrade_accepted(&self.buf[..pos], &self.accept) {
                            return self.end(c);
                        }
                        self.in_flight -= 1;
                        let since = now.duration_since(c.started).as_nanos() as u64;
                        let _ = if c.reconnecting { &mut self.reconnect_hist } else { &mut self.connect_hist }
                            .record(since);
                        c.state = State::Open;
                        self.open += 1;
                        at = pos + 4;
                        // Now the subscribe may go; write it at once (edge-triggered: no
                        // further writable event would come for an idle socket).
                        c.out.append(&mut c.subscribe);
                        let _ = c.flush_out();
                    }
                }
            }
            while c.state == State::Open {
                let frame_start = at;
                let frame = match parse_frame(&self.buf[..end], at) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(_) => {
                        self.unreadable += 1;
                        self.end(c);
                        break;
                    }
                };
                at = frame.next;
                let (from, to) = frame.payload;
                if !is_readable(&frame, self.inflater.is_some()) {
                    self.unreadable += 1;
                    continue;
                }
                let wire_bytes = (frame.next - frame_start) as u64;
                match frame.opcode {
                    1 => {
                        let compressed = frame.rsv & 0x40 != 0;
                        let payload = if !compressed {
                            Payload::Read(from, to)
                        } else if self.inflater.as_mut().is_some_and(|i| i.inflate(&self.buf[from..to])) {
                            Payload::Inflated
                        } else {
                            // Compressed without --deflate, or not valid deflate.
                            self.unreadable += 1;
                            continue;
                        };
                        let wire = (wire_bytes, compressed);
                        let timed = self.on_text(c, payload, wire, now, received_ns, in_window);
                        if let Some(latency_ns) = timed {
                            let _ = self.latency.record(latency_ns.max(1_000));
                        }
                    }
                    8 => {
                        let payload = &self.buf[from..to];
                        let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                        c.close_code = Some(code);
                        self.end(c);
                    }
                    9 => {
                        let mut pong = Vec::new();
                        write_client_frame(&mut pong, 0xA, &self.buf[from..to], [7, 7, 7, 7]);
                        c.out.extend_from_slice(&pong);
                        // Edge-triggered: no writable event may come to send it later.
                        if c.flush_out().is_err() {
                            self.end(c);
                        }
                    }
                    _ => {}
                }
            }
            c.carry.clear();
            if c.state == State::Done {
                return;
            }
            c.carry.extend_from_slice(&self.buf[at..end]);
        }
    }

    /// One text message; returns its latency when it is an event timed in the window.
    fn on_text(
        &mut self,
        c: &mut Client,
        payload: Payload,
        (wire_bytes, compressed): (u64, bool),
        now: Instant,
        received_ns: u64,
        in_window: bool,
    ) -> Option<u64> {
        let bytes: &[u8] = match (payload, &self.inflater) {
            (Payload::Read(from, to), _) => &self.buf[from..to],
            (Payload::Inflated, Some(inflater)) => &inflater.out,
            (Payload::Inflated, None) => &[],
        };
        // A text message is UTF-8 (RFC 6455 §5.6), compressed ones once inflated.
        if std::str::from_utf8(bytes).is_err() {
            self.unreadable += 1;
            return None;
        }
        let f = scan(bytes);
        if f.malformed {
            self.unreadable += 1;
            return None;
        }
        let is_event = matches!(f.kind, b"trade" | b"quote");
        let sampled = !is_event || {
            let mut x = c.sample_state;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            c.sample_state = x;
            x & (FULL_PARSE_EVERY - 1) == 0
        };
        if sampled && !agrees_with_full_parse(bytes, &f) {
            self.json_mismatches += 1;
        }
        let symbol = self.index.get(f.symbol).copied();
        let counted = in_window && !c.slow;
        match f.kind {
            b"trade" | b"quote" => {
                let (tracked, replayed) = match (symbol, f.seq) {
                    (Some(s), Some(seq)) => {
                        let known = c.tracker.knows(s);
                        let is_trade = f.kind == b"trade";
                        let outcome = c.tracker.on_event(s, seq, f.conflated.unwrap_or(0), is_trade);
                        self.superseded.event(s, seq, is_trade);
                        if let (Some((first, last)), true) = (outcome.superseded, self.judging) {
                            self.superseded.span(s, first, last);
                        }
                        if known && !c.slow {
                            self.silence.event(s, seq, now);
                        }
                        (known, outcome.replayed)
                    }
                    (None, _) => {
                        c.tracker.counts.unexpected += 1;
                        (false, false)
                    }
                    (Some(_), None) => (false, false),
                };
                // A replayed event was missed while away: neither a live delivery nor timed.
                let counted = counted && !replayed;
                // Outside what is timed and counted (warm-up, drain, stalled clients), an event
                // without a readable seq or stamp is still a broken message.
                if !counted && (f.seq.is_none() || f.gw_ts.is_none()) {
                    self.unreadable += 1;
                }
                if counted {
                    c.delivered += 1;
                    c.tracked += u64::from(tracked);
                    self.wire.event_frames += 1;
                    self.wire.event_wire_bytes += wire_bytes;
                    self.wire.compressed_events += u64::from(compressed);
                }
                if counted {
                    // Stamped and received on one clock: a stamp after the receipt is not a
                    // latency of zero but a stamp (or a clock) that cannot be trusted.
                    return match f.gw_ts {
                        Some(gw) if gw > received_ns => {
                            self.stamped_ahead += 1;
                            None
                        }
                        gw_ts => gw_ts.map(|gw| received_ns - gw),
                    };
                }
            }
            b"snapshot" => match (symbol, f.seq) {
                (Some(s), Some(seq)) => c.tracker.on_snapshot(s, seq),
                (None, _) => c.tracker.counts.unexpected += 1,
                (Some(_), None) => self.unreadable += 1,
            },
            b"gap" => match (symbol, f.from_seq, f.to_seq) {
                (Some(s), Some(from), Some(to)) if from <= to => match f.reason {
                    b"history" | b"ahead" => c.tracker.on_resume_gap(s, from, to, f.reason == b"ahead"),
                    _ => c.tracker.on_gap(s, from, to),
                },
                (None, ..) => c.tracker.counts.unexpected += 1,
                _ => self.unreadable += 1,
            },
            b"resumed" => match (symbol, f.after_seq, f.to_seq) {
                (Some(s), Some(after), Some(to)) => c.tracker.on_resumed(s, after, to),
                (None, ..) => c.tracker.counts.unexpected += 1,
                _ => self.unreadable += 1,
            },
            b"unsubscribed" => c.tracker.left(),
            b"error" => {
                let code = String::from_utf8_lossy(if f.code.is_empty() { b"(no code)" } else { f.code });
                *self.errors.entry(code.into_owned()).or_default() += 1;
            }
            kind if BENIGN.contains(&kind) => {
                if kind == b"subscribed" && !f.policy.is_empty() {
                    let policy = String::from_utf8_lossy(f.policy);
                    match &self.policy {
                        None => self.policy = Some(policy.into_owned()),
                        Some(p) if *p != policy => self.policy = Some("mixed".into()),
                        Some(_) => {}
                    }
                }
            }
            _ => self.unreadable += 1,
        }
        None
    }
}
