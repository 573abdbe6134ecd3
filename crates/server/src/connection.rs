//! One client connection as its reactor holds it.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use tickgate_core::{Frame, Outbox, Policy, SymbolSet, TokenBucket};
use tickgate_protocol::inbound::Utf8Watch;
use tungstenite::WebSocket;

use crate::auth::Principal;

/// Most slices handed to one `writev`: about 10 KB of ticks, where one call costs about the same
/// as a call with one frame.
pub const MAX_IOV: usize = 64;

/// The socket and the outbox: the stream tungstenite runs on.
///
/// `Read` reads the socket. `Write` appends to the outbox as a control frame that no policy
/// drops (tungstenite only ever writes whole control frames, pongs and closes, so they queue
/// between whole tick frames), and `flush` does nothing: the reactor writes the queue out with
/// [`ConnIo::write_out`].
#[derive(Debug)]
pub struct ConnIo {
    pub sock: TcpStream,
    pub out: Outbox,
    /// Checks text messages' UTF-8 as their bytes arrive (fail fast, RFC 6455 §8.1).
    pub utf8: Utf8Watch,
    /// Set when `utf8` saw invalid text: the reactor closes with 1007.
    pub invalid_utf8: bool,
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
}

impl ConnIo {
    /// Writes the queue with as many frames per `writev` as fit; returns where it stopped and
    /// counts calls and bytes.
    pub fn write_out(&mut self, now: Instant, counts: &mut WriteCounts) -> io::Result<WriteOutcome> {
        loop {
            if self.out.queue.is_empty() {
                return Ok(WriteOutcome::Drained);
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = self.out.queue.io_slices(&mut slices);
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

impl Read for ConnIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
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
    pub const ALL: [CloseReason; 15] = [
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

/// One client connection.
#[derive(Debug)]
pub struct Connection {
    pub phase: Phase,
    /// Source of truth for this connection's subscriptions (mirrored in the reactor's index).
    pub subs: SymbolSet,
    /// Queued in the reactor's list of connections to flush this turn.
    pub dirty: bool,
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
    /// Counted in by the admission limits (refused connections are not).
    pub admitted: bool,
    /// The client's message allowance.
    pub bucket: TokenBucket,
    /// Messages refused in a row for the rate limit.
    pub strikes: u32,
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
            phase: Phase::Http {
                io: ConnIo { sock, out: Outbox::new(policy, now), utf8: Utf8Watch::new(), invalid_utf8: false },
                head: Vec::new(),
            },
            subs: SymbolSet::new(),
            dirty: false,
            closing: None,
            peer,
            session,
            opened: now_ms,
            admin: false,
            frames_sent: 0,
            echo: false,
            admitted: false,
            bucket: TokenBucket::new(burst, now),
            strikes: 0,
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
