//! One client connection as its reactor holds it.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use tickgate_core::{Frame, Outbox, Policy, SymbolSet, TokenBucket};
use tickgate_protocol::inbound::Utf8Watch;
use tungstenite::WebSocket;

use crate::auth::Principal;
use crate::deflate::Inflating;
use crate::tls::{TlsFailure, TlsLayer, classify_first_byte};
use tickgate_protocol::deflate::InflateError;

/// Most bytes read from one connection per reactor turn; past it the connection waits for the
/// next turn (the reactor reads it again, see `Reactor::read_again`).
pub const READ_BYTES_PER_TURN: u32 = 16 * 1024;
/// Most frames read from one connection per reactor turn (checked between reads, so one read
/// may overshoot it by what fits in the read buffer).
pub const READ_FRAMES_PER_TURN: u16 = 32;

/// Most `read_tls` calls (each at most one socket read) per [`ConnIo::read_plain`] call: a
/// client sending records without plaintext cannot hold the reactor.
pub const TLS_READS_PER_CALL: u32 = 16;

/// Most slices handed to one `writev`: about 10 KB of ticks, where one call costs about the same
/// as a call with one frame.
pub const MAX_IOV: usize = 64;

/// The socket and the outbox: the stream tungstenite runs on.
///
/// `Read` reads the socket within the turn's allowance ([`ConnIo::grant_turn`]): once it is
/// spent, or once the text is known to be invalid, it answers `WouldBlock` without a system
/// call, which tungstenite treats like an empty socket (its partial frame is kept). `Write`
/// appends to the outbox as a control frame that no policy drops (tungstenite only ever writes
/// whole control frames, pongs and closes, so they queue between whole tick frames), and
/// `flush` does nothing: the reactor writes the queue out with [`ConnIo::write_out`].
#[derive(Debug)]
pub struct ConnIo {
    pub sock: TcpStream,
    pub out: Outbox,
    /// Checks text messages' UTF-8 as their bytes arrive (fail fast, RFC 6455 §8.1).
    pub utf8: Utf8Watch,
    /// Set when `utf8` saw invalid text: the reactor closes with 1007.
    pub invalid_utf8: bool,
    /// Bytes this connection may still read this turn.
    read_left: u32,
    /// `utf8.frames()` when the frames read were last taken ([`ConnIo::take_frames`]).
    frames_taken: u16,
    /// On a TLS listener: the session between the socket and the WebSocket bytes. Boxed: a
    /// rustls session is about 1 KB, and plain connections do not pay for it.
    pub tls: Option<Box<TlsLayer>>,
    /// With permessage-deflate: the stage that inflates compressed client messages before the
    /// frame parser and `utf8` see them. Boxed: other connections pay one pointer.
    pub inflate: Option<Box<Inflating>>,
}

/// What [`ConnIo::write_out`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriteCounts {
    /// `writev` calls that wrote something.
    pub calls: u64,
    pub bytes: u64,
    /// Whole frames completed.
    pub frames: u64,
}

/// Where [`ConnIo::write_out`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Everything queued is written.
    Drained,
    /// The kernel buffer is full; resume on writable readiness.
    Blocked,
    /// The connection's bandwidth cap holds the rest back; resume when it is due (see
    /// [`tickgate_core::BandwidthCap::due`]).
    Capped,
}

impl ConnIo {
    pub fn new(sock: TcpStream, out: Outbox) -> Self {
        Self {
            sock,
            out,
            utf8: Utf8Watch::new(),
            invalid_utf8: false,
            read_left: 0,
            frames_taken: 0,
            tls: None,
            inflate: None,
        }
    }

    /// Why this connection's TLS failed, if it did.
    pub fn tls_failure(&self) -> Option<TlsFailure> {
        self.tls.as_ref().and_then(|t| t.failure)
    }

    /// Whether TLS is still handshaking (nothing can be answered in HTTP yet).
    pub fn tls_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.session.is_handshaking())
    }

    /// Whether TLS has records to send (a handshake message, an alert) that no queued frame
    /// will push out.
    pub fn tls_wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.session.wants_write())
    }

    /// Reads plaintext: straight from the socket, or through TLS (reading records until one
    /// yields plaintext or the socket is empty). `Ok(0)` is the end of the stream. A TLS failure
    /// is an `InvalidData` error, its kind kept in [`ConnIo::tls_failure`], and the alert rustls
    /// made is written once, best effort.
    pub fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else { return self.sock.read(buf) };
        tls.capped = false;
        let mut records = 0;
        loop {
            match tls.session.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Records that yield no plaintext (handshake, alerts, key updates, empty records)
            // are read within a cap too; past it the reactor reads again next turn.
            if records == TLS_READS_PER_CALL {
                tls.capped = true;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            records += 1;
            if !tls.first_byte_seen {
                let mut first = [0u8; 1];
                if self.sock.peek(&mut first)? == 0 {
                    return Ok(0);
                }
                tls.first_byte_seen = true;
                if let Some(failure) = classify_first_byte(first[0]) {
                    tls.failure = Some(failure);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "not a TLS handshake"));
                }
            }
            if tls.session.read_tls(&mut self.sock)? == 0 {
                if tls.session.is_handshaking() {
                    // A handshake begun (a first byte came) and cut short by the client's FIN.
                    tls.failure = Some(TlsFailure::Truncated);
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "TLS handshake cut short"));
                }
                return Ok(0);
            }
            if let Err(e) = tls.session.process_new_packets() {
                tls.failure = Some(TlsFailure::Protocol);
                let _ = tls.session.write_tls(&mut self.sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// Ends the write side once everything queued is out: TLS's close_notify first (best
    /// effort: a few bytes into an emptied socket buffer), then FIN.
    pub fn shutdown_write(&mut self) {
        if let Some(tls) = &mut self.tls {
            if !tls.session.is_handshaking() {
                tls.session.send_close_notify();
                let _ = tls.session.write_tls(&mut self.sock);
            }
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
    }

    /// Opens this turn's read allowance: [`READ_BYTES_PER_TURN`] bytes, and frames up to
    /// [`READ_FRAMES_PER_TURN`] since they were last taken.
    pub fn grant_turn(&mut self) {
        self.read_left = READ_BYTES_PER_TURN;
    }

    /// Frames (of every kind) read since they were last taken.
    pub fn frames_untaken(&self) -> u16 {
        self.frames_seen().wrapping_sub(self.frames_taken)
    }

    /// Frames received, wrapping: those the parser saw, and those the inflating stage folded
    /// into them.
    fn frames_seen(&self) -> u16 {
        self.utf8.frames().wrapping_add(self.inflate.as_ref().map_or(0, |i| i.merged()))
    }

    /// Takes the frames read since the last call, to charge them to the client's frame rate.
    pub fn take_frames(&mut self) -> u16 {
        let frames = self.frames_untaken();
        self.frames_taken = self.frames_seen();
        frames
    }

    /// Whether this turn's allowance is spent (the socket may still hold more).
    pub fn turn_spent(&self) -> bool {
        self.read_left == 0 || self.frames_untaken() >= READ_FRAMES_PER_TURN
    }

    /// Bytes the kernel still holds for the client: not yet sent, or sent and not yet
    /// acknowledged (`SIOCOUTQ`). One system call: only for a connection whose writes have
    /// waited (see [`Outbox::wants_kernel_look`]), never per frame. `None` where the kernel
    /// cannot tell.
    pub fn kernel_queued(&self) -> Option<usize> {
        kernel_queued(&self.sock)
    }

    /// Writes the queue with as many frames per `writev` as fit (and its bandwidth cap allows);
    /// returns where it stopped and counts calls and bytes.
    pub fn write_out(&mut self, now: Instant, counts: &mut WriteCounts) -> io::Result<WriteOutcome> {
        if self.tls.is_some() {
            return self.write_out_tls(now, counts);
        }
        loop {
            if self.out.queue.is_empty() {
                return Ok(WriteOutcome::Drained);
            }
            let allowed = self.out.write_allowance(now);
            if allowed == 0 {
                return Ok(WriteOutcome::Capped);
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = self.out.queue.io_slices_within(&mut slices, allowed);
            match self.sock.write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    counts.frames += self.out.wrote(written, now) as u64;
                    counts.calls += 1;
                    counts.bytes += written as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(WriteOutcome::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl ConnIo {
    /// [`ConnIo::write_out`] through TLS: the records rustls holds go first (`writev` of up to
    /// 64 of them), then as many queued frames as its buffer takes are encrypted together (many
    /// frames per record, up to 16 KB each), and again until the queue or the socket stops it.
    /// While the handshake runs, queued frames wait (`Blocked`): reading moves it on.
    fn write_out_tls(&mut self, now: Instant, counts: &mut WriteCounts) -> io::Result<WriteOutcome> {
        let Some(tls) = &mut self.tls else { return Ok(WriteOutcome::Drained) };
        loop {
            while tls.session.wants_write() {
                match tls.session.write_tls(&mut self.sock) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(written) => {
                        counts.calls += 1;
                        counts.bytes += written as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(WriteOutcome::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.out.queue.is_empty() {
                return Ok(WriteOutcome::Drained);
            }
            if tls.session.is_handshaking() {
                return Ok(WriteOutcome::Blocked);
            }
            let allowed = self.out.write_allowance(now);
            if allowed == 0 {
                return Ok(WriteOutcome::Capped);
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = self.out.queue.io_slices_within(&mut slices, allowed);
            let taken = tls.session.writer().write_vectored(&slices[..n])?;
            if taken == 0 {
                // rustls's buffer is full although it was just written out: nothing to do
                // but wait for the socket.
                return Ok(WriteOutcome::Blocked);
            }
            counts.frames += self.out.wrote(taken, now) as u64;
        }
    }
}

impl ConnIo {
    /// [`Read::read`] through the inflating stage: raw bytes are read within the turn's
    /// allowance until the stage has something for the parser.
    fn read_inflating(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(inflating) = self.inflate.as_deref_mut() else { return Ok(0) };
            if self.invalid_utf8 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if inflating.has_pending() {
                let n = inflating.take_into(buf);
                if self.utf8.feed(&buf[..n]).is_err() {
                    self.invalid_utf8 = true;
                }
                return Ok(n);
            }
            if inflating.error.is_some() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "permessage-deflate"));
            }
            if self.turn_spent() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut chunk = [0u8; 4096];
            let room = chunk.len().min(self.read_left as usize);
            let n = self.read_plain(&mut chunk[..room])?;
            if n == 0 {
                return Ok(0);
            }
            self.read_left = self.read_left.saturating_sub(n as u32);
            if let Some(inflating) = self.inflate.as_deref_mut() {
                inflating.feed(&chunk[..n]);
            }
        }
    }

    /// Why the inflating stage stopped the stream, if it did.
    pub fn inflate_error(&self) -> Option<InflateError> {
        self.inflate.as_ref().and_then(|i| i.error)
    }
}

impl Read for ConnIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inflate.is_some() {
            return self.read_inflating(buf);
        }
        if self.invalid_utf8 || self.turn_spent() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let room = buf.len().min(self.read_left as usize);
        let n = self.read_plain(&mut buf[..room])?;
        self.read_left = self.read_left.saturating_sub(n as u32);
        if !self.invalid_utf8 && self.utf8.feed(&buf[..n]).is_err() {
            self.invalid_utf8 = true;
        }
        Ok(n)
    }
}

impl Write for ConnIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.push_control(Frame::from_bytes(buf), Instant::now());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a connection ended, for counters and the close log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close frame.
    ClientClose,
    /// The client went away without a close frame (EOF, reset).
    ClientVanished,
    /// Broke RFC 6455 (1002).
    ProtocolError,
    /// Text that is not UTF-8 (1007).
    InvalidUtf8,
    /// A message over the size limit (1009).
    MessageTooBig,
    /// Fell more than the outbound hard limit behind (1008).
    SlowConsumer,
    /// A plain HTTP request, answered.
    HttpAnswered,
    /// The gateway is shutting down (1001).
    Shutdown,
    /// A socket error.
    IoError,
    /// Kept sending past its message allowance (1008).
    RateLimit,
    /// Silent past the idle timeout, pings unanswered (1008).
    IdleTimeout,
    /// Did not complete the HTTP upgrade in time (408).
    HandshakeTimeout,
    /// Refused by a connection limit (503 or 429).
    Refused,
    /// No valid token within the deadline, or a refused one (1008).
    AuthFailed,
    /// Its token expired (1008).
    TokenExpired,
    /// Sent more frames within a second than `limits.max_frames_per_second` (1008).
    TooManyFrames,
    /// Not TLS on a TLS port, a refused TLS handshake or record, or TLS on a plain port.
    TlsFailed,
    /// No PROXY protocol header, or a malformed one, where `server.proxy_protocol` wants one.
    ProxyHeaderRefused,
}

/// How far the admission limits count a connection in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Not at all: refused, or on the admin port.
    No,
    /// In the gateway's total (`limits.max_connections`) only: its client address is not known
    /// yet (a PROXY header or a trusted proxy's forwarding headers will say it).
    InTotal,
    /// In the total and under its client address (`limits.max_connections_per_ip`).
    UnderAddress,
}

/// Where a connection stands with authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthState {
    /// Authentication is off.
    Open,
    /// Authentication is on and no token came with the handshake: only `auth` is accepted
    /// until the deadline.
    Pending { deadline: Instant },
    /// Boxed: most deployments run without authentication, and every connection pays for the
    /// inline size of this enum.
    Authenticated(Box<Principal>),
}

impl CloseReason {
    /// Every reason, in the order of [`CloseReason::index`].
    pub const ALL: [CloseReason; 18] = [
        CloseReason::ClientClose,
        CloseReason::ClientVanished,
        CloseReason::ProtocolError,
        CloseReason::InvalidUtf8,
        CloseReason::MessageTooBig,
        CloseReason::SlowConsumer,
        CloseReason::HttpAnswered,
        CloseReason::Shutdown,
        CloseReason::IoError,
        CloseReason::RateLimit,
        CloseReason::IdleTimeout,
        CloseReason::HandshakeTimeout,
        CloseReason::Refused,
        CloseReason::AuthFailed,
        CloseReason::TokenExpired,
        CloseReason::TooManyFrames,
        CloseReason::TlsFailed,
        CloseReason::ProxyHeaderRefused,
    ];

    pub fn index(self) -> usize {
        Self::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClose => "client_close",
            CloseReason::ClientVanished => "client_vanished",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::HttpAnswered => "http_answered",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IoError => "io_error",
            CloseReason::RateLimit => "rate_limit",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::Refused => "refused",
            CloseReason::AuthFailed => "auth_failed",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::TooManyFrames => "too_many_frames",
            CloseReason::TlsFailed => "tls_failed",
            CloseReason::ProxyHeaderRefused => "proxy_header_refused",
        }
    }
}

/// A connection on its way out: no more data frames, only what is queued and the close.
#[derive(Debug)]
pub struct Closing {
    pub reason: CloseReason,
    /// Past this the socket is dropped whatever its state.
    pub deadline: Instant,
    /// The write side is shut down (everything queued, the close frame included, is out).
    pub fin_sent: bool,
}

/// Where the connection is in its life.
///
/// Nearly every connection lives in `Ws`, so it is kept inline: boxing it would save nothing
/// and add a pointer chase to every delivery.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Phase {
    /// Reading the HTTP request head.
    Http { io: ConnIo, head: Vec<u8> },
    /// Upgraded.
    Ws(WebSocket<ConnIo>),
    /// Transient, while moving from one phase to the next.
    Moving,
}

/// A point on a reactor's clock: milliseconds since the reactor started. The connection timers
/// (handshake, keepalive, idle) are set in milliseconds and checked by a sweep every 250 ms, so
/// this is all the precision they use, in 8 bytes where an `Instant` takes 16; every connection
/// holds three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// The reactor-clock time of `now`, given the reactor's start.
    pub fn since(epoch: Instant, now: Instant) -> Self {
        Millis(now.saturating_duration_since(epoch).as_millis() as u64)
    }

    /// Milliseconds from `self` to `later` (0 if `later` is not later).
    pub fn until(self, later: Millis) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

/// Frames a client sent within the current second of the reactor's clock, against
/// `limits.max_frames_per_second`.
///
/// The second is kept modulo 2^16 to keep every connection 8 bytes smaller: a client whose
/// next frame comes exactly a multiple of 65,536 s (18 h) later finds its old count, which at
/// worst closes a client that was already near the limit then and is again now. Packed to 6
/// bytes (2-aligned), so it fits beside the connection's flags.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, packed(2))]
pub struct FrameWindow {
    second: u16,
    frames: u32,
}

impl FrameWindow {
    /// Counts `frames` more at `now`; false once the second's total is over `max`.
    pub fn charge(&mut self, now: Millis, frames: u32, max: u32) -> bool {
        let second = (now.0 / 1000) as u16;
        if second != self.second {
            self.second = second;
            self.frames = 0;
        }
        self.frames = self.frames.saturating_add(frames);
        self.frames <= max
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Connection {
    pub phase: Phase,
    /// Source of truth for this connection's subscriptions (mirrored in the reactor's index).
    pub subs: SymbolSet,
    /// Queued in the reactor's list of connections to flush this turn.
    pub dirty: bool,
    /// Queued in the reactor's list of connections to read again next turn (its read allowance
    /// ran out with more to read).
    pub read_again: bool,
    /// Boxed: only connections on their way out have one.
    pub closing: Option<Box<Closing>>,
    pub peer: SocketAddr,
    pub session: u64,
    pub opened: Millis,
    /// Accepted on the admin listener: only the operational routes are served.
    pub admin: bool,
    /// Frames written to this client, for the close log line.
    pub frames_sent: u64,
    /// Upgraded on the echo route: messages are echoed, not parsed as commands.
    pub echo: bool,
    /// How far the admission limits count it in.
    pub admitted: Admitted,
    /// On a `server.proxy_protocol` listener, before its PROXY header: the peer is still the
    /// balancer, and the connection is not yet admitted.
    pub proxy_pending: bool,
    /// The client's message allowance.
    pub bucket: TokenBucket,
    /// Messages refused in a row for the rate limit.
    pub strikes: u32,
    /// Frames this second, against `limits.max_frames_per_second`.
    pub frame_window: FrameWindow,
    /// Last time anything came from the client (a message, a pong).
    pub last_inbound: Millis,
    /// Last time we pinged it.
    pub last_ping: Millis,
    pub auth: AuthState,
}

impl Connection {
    /// A connection accepted at `now`, which is `now_ms` on the reactor's clock.
    pub fn new(
        sock: TcpStream,
        peer: SocketAddr,
        session: u64,
        policy: Policy,
        burst: u32,
        now: Instant,
        now_ms: Millis,
    ) -> Self {
        Self {
            phase: Phase::Http { io: ConnIo::new(sock, Outbox::new(policy, now)), head: Vec::new() },
            subs: SymbolSet::new(),
            dirty: false,
            read_again: false,
            closing: None,
            peer,
            session,
            opened: now_ms,
            admin: false,
            frames_sent: 0,
            echo: false,
            admitted: Admitted::No,
            proxy_pending: false,
            bucket: TokenBucket::new(burst, now_ms.0),
            strikes: 0,
            frame_window: FrameWindow::default(),
            last_inbound: now_ms,
            last_ping: now_ms,
            auth: AuthState::Open,
        }
    }

    /// The socket and queue, whatever the phase.
    pub fn io(&mut self) -> Option<&mut ConnIo> {
        match &mut self.phase {
            Phase::Http { io, .. } => Some(io),
            Phase::Ws(ws) => Some(ws.get_mut()),
            Phase::Moving => None,
        }
    }
}

/// The one `unsafe` of the server: no safe wrapper (std, socket2, rustix) asks the kernel for a
/// socket's send queue, and `TCP_INFO` would need one as well.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn kernel_queued(sock: &TcpStream) -> Option<usize> {
    /// `SIOCOUTQ` (the same number as `TIOCOUTQ`): a TCP socket's bytes not yet acknowledged.
    const SIOCOUTQ: rustix::ioctl::Opcode = 0x5411;
    // SAFETY: SIOCOUTQ on a socket writes one C int, which is what the getter hands the kernel.
    let getter = unsafe { rustix::ioctl::Getter::<SIOCOUTQ, std::ffi::c_int>::new() };
    // SAFETY: the opcode and its operand agree (above); the call has no other effect.
    let queued = unsafe { rustix::ioctl::ioctl(sock, getter) }.ok()?;
    usize::try_from(queued).ok()
}

#[cfg(not(target_os = "linux"))]
fn kernel_queued(_sock: &TcpStream) -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_window_counts_per_second() {
        let mut w = FrameWindow::default();
        assert!(w.charge(Millis(10), 150, 200));
        assert!(w.charge(Millis(999), 50, 200), "200 within the second is allowed");
        assert!(!w.charge(Millis(999), 1, 200), "201 is not");
        assert!(w.charge(Millis(1_000), 200, 200), "a new second starts from zero");
        assert!(!w.charge(Millis(1_500), u32::MAX, 200), "no wrap on a huge count");
        assert!(!w.charge(Millis(1_600), u32::MAX, u32::MAX - 1));
        assert!(w.charge(Millis(2_000), 1, 1), "the window moved on");
    }

    #[test]
    fn a_connection_stays_small() {
        // Every idle connection costs its slab entry (docs/BENCHMARKS.md: at most 1 KiB in all);
        // 32 of these bytes are four pointers: the TLS session's, the rate caps', the bandwidth
        // cap's and the permessage-deflate inflating stage's (all boxed, present only when used).
        assert!(std::mem::size_of::<Connection>() <= 592, "{}", std::mem::size_of::<Connection>());
    }
}
