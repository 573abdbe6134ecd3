//! One reactor: a pinned thread with its own `mio::Poll`, its listener, its connections.
//!
//! The loop, once per turn:
//! 1. `poll` (sleeping only when the ingest channel is empty, see [`ReactorInbox::park`]);
//! 2. accept until `WouldBlock`; read every readable connection, and those the last turn left
//!    with more to read, each within a per-turn allowance (bytes, frames, messages), answering commands as
//!    they come. mio is edge-triggered, so a connection that spends its allowance before
//!    `WouldBlock` is read again next turn: one client cannot hold the reactor;
//! 3. drain a batch of ticks from the ingest channel and queue each tick's shared frame on its
//!    subscribers' queues;
//! 4. write every connection that got something, many frames per `writev`, fanning out the ticks
//!    that reach the channel meanwhile every [`FLUSH_SLICE`] connections;
//! 5. housekeeping: publish counters, drop connections whose close took too long, shutdown.
//!
//! Steps 3 and 4 wait while the reactor holds its writes back after a long pass
//! (`server.write_hold_max_us`, see [`crate::hold`]).
//!
//! Nothing here is shared with another thread except the channel and the counters.

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tickgate_core::subscription::ConnKey;
use tickgate_core::{Budget, Frame, LastValueCache, Outbox, Policy, SubscriptionIndex, SymbolId, SymbolTable, Verdict};
use tickgate_feed::fanout::{FanoutMsg, ReactorInbox};
use tickgate_feed::ingest::wall_clock_ns;
use tickgate_protocol::{
    CloseCode, Command, ErrorCode, FrameBuilder, RequestId, close_frame, data_frame, message, parse_command, ping_frame,
};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::admission::{Admission, Refusal};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::connection::{
    AuthState, CloseReason, Closing, Connection, Millis, Phase, READ_BYTES_PER_TURN, WriteCounts, WriteOutcome,
};
use crate::hold::{HoldTimer, Pass, WriteHold};
use crate::http::{self, Parsed, Route, Surface};
use crate::liveness::{Fault, Part};
use crate::metrics::Telemetry;
use crate::session::{self, CommandLimits, Desk, Outcome, Session};
use crate::stats::{COMMAND_OPS, HTTP_STATUSES, ReactorStats, TurnCounters, latency_histogram};

pub const LISTENER: Token = Token(usize::MAX - 1);
pub const WAKER: Token = Token(usize::MAX - 2);
pub const ADMIN_LISTENER: Token = Token(usize::MAX - 3);
pub const HOLD_TIMER: Token = Token(usize::MAX - 4);

/// The reactor-wide part of a [`Session`] call. A macro, not a method: it borrows the fields
/// it needs, so a connection can be borrowed beside it.
macro_rules! desk {
    ($reactor:expr) => {
        Desk {
            symbols: &$reactor.symbols,
            lvc: &$reactor.lvc,
            builder: &mut $reactor.builder,
            budget: $reactor.budget,
            counters: &mut $reactor.turn,
            now: $reactor.now,
        }
    };
}

/// How often a reactor passes over every connection's timers.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// What a sweep found a connection needs.
#[derive(Debug, Clone, Copy)]
enum Sweep {
    SlowConsumer,
    HandshakeTimeout,
    AuthTimeout,
    TokenExpired,
    IdleTimeout,
    Pinged,
}

/// How often a reactor publishes its latency histograms.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Most ingest messages taken per turn, so sockets are served between large bursts.
const MAX_FANOUT_PER_TURN: usize = 16 * 1024;
/// Most deliveries offered per turn (checked between ticks), for the same reason: a turn with
/// popular symbols ends after this many offers, and the rest of the channel waits one turn.
const MAX_OFFERS_PER_TURN: usize = 64 * 1024;
/// While writing, the reactor looks at its channel again after every this many connections, and
/// fans out what arrived meanwhile: the connections not yet written this pass take the new ticks
/// in the same `writev`, so a tick waits for its subscriber's next write, not for the next turn.
const FLUSH_SLICE: usize = 32;
/// How long `poll` sleeps when nothing happens: the housekeeping period.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Bytes read from a socket per `read` while in the HTTP phase or draining.
const READ_CHUNK: usize = 2048;
/// Most connections accepted from one listener per turn, so a connect storm does not starve
/// the rest of the loop; the rest are accepted next turn.
const MAX_ACCEPTS_PER_TURN: usize = 256;

/// What a listener's last accept left in its backlog, which no readiness event will announce
/// again (mio is edge-triggered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backlog {
    /// Accepted until `WouldBlock`.
    Drained,
    /// Stopped at [`MAX_ACCEPTS_PER_TURN`]: accept again next turn.
    Capped,
    /// `accept` failed (out of file descriptors, most often): accept again at housekeeping,
    /// about every 50 ms, so waiting connections are served once descriptors free up.
    Failed,
}

/// Most messages (of every kind) taken from one connection per turn. With the read allowance of
/// [`crate::connection::ConnIo::grant_turn`], it keeps one busy client from holding the reactor:
/// a connection that reaches either is read again next turn.
const MESSAGES_PER_TURN: usize = 16;

/// What a reactor needs from the gateway.
#[derive(Debug)]
pub struct ReactorSetup {
    pub id: usize,
    pub poll: Poll,
    pub listener: TcpListener,
    pub inbox: ReactorInbox,
    pub symbols: Arc<SymbolTable>,
    pub config: Arc<Config>,
    pub stats: Arc<ReactorStats>,
    pub shutdown: Arc<AtomicBool>,
    /// Pin to this core, if any.
    pub core: Option<core_affinity::CoreId>,
    /// The admin port's listener (reactor 0 only, when configured).
    pub admin_listener: Option<TcpListener>,
    pub telemetry: Arc<Telemetry>,
    pub admission: Arc<Admission>,
    pub authenticator: Option<Arc<Authenticator>>,
}

/// The reactor's state. Connections live in a slab whose keys are their mio tokens.
#[derive(Debug)]
pub struct Reactor {
    id: usize,
    poll: Poll,
    listener: TcpListener,
    inbox: ReactorInbox,
    symbols: Arc<SymbolTable>,
    config: Arc<Config>,
    stats: Arc<ReactorStats>,
    shutdown: Arc<AtomicBool>,
    ws_config: WebSocketConfig,
    budget: Budget,
    default_policy: Policy,
    conns: Slab<Connection>,
    index: SubscriptionIndex,
    /// Last values as of the last tick this reactor fanned out: snapshots come from here, so
    /// they line up exactly with the stream that follows them.
    lvc: LastValueCache,
    /// Connections with something queued this turn.
    dirty: Vec<ConnKey>,
    /// Connections whose read allowance ran out with more to read, by key and session (a key
    /// may be reused meanwhile): read again next turn (edge-triggered readiness will not say so
    /// again).
    to_read_again: Vec<(ConnKey, u64)>,
    /// Last turn's `to_read_again`, read this turn by [`Reactor::read_again`].
    revisiting: Vec<(ConnKey, u64)>,
    /// The list being written by [`Reactor::flush_dirty`] (kept to reuse its capacity).
    flushing: Vec<ConnKey>,
    /// Connections on their way out, checked against their deadline.
    closing: Vec<ConnKey>,
    /// Connections over the outbound hard limit, found during fan-out.
    over_limit: Vec<ConnKey>,
    builder: FrameBuilder,
    command_buf: Vec<u8>,
    next_session: u64,
    turn: TurnCounters,
    now: Instant,
    /// `now` on the reactor's clock (milliseconds since `epoch`), for the connection timers.
    now_ms: Millis,
    epoch: Instant,
    /// Set once shutdown has begun: (deadline).
    draining_until: Option<Instant>,
    admin_listener: Option<TcpListener>,
    telemetry: Arc<Telemetry>,
    admission: Arc<Admission>,
    authenticator: Option<Arc<Authenticator>>,
    /// Last pass over every connection's timers (handshake, keepalive, write deadline).
    last_sweep: Instant,
    /// This turn's writes.
    writes: WriteCounts,
    /// What is left of this turn's fan-out allowance: messages, offers.
    fanout_left: (usize, usize),
    /// (gw_ts, deliveries) of the ticks fanned out this turn, timed once they are written.
    fanned_out: Vec<(u64, u64)>,
    /// The same for deliveries that go out in the next pass: ticks fanned out during a write pass
    /// to connections already written in it.
    carried: Vec<(u64, u64)>,
    /// A write pass that fans out what arrives is under way (see [`Reactor::flush_dirty`]).
    passing: bool,
    /// How long a busy reactor waits between write passes, and the timer that ends the wait;
    /// only when the hold is on (`server.write_hold_max_us` > 0).
    write_hold: Option<(WriteHold, HoldTimer)>,
    /// No fan-out or write pass before this (see [`crate::hold`]).
    hold_until: Option<Instant>,
    /// This second's ingest-to-kernel latencies (ns) and fan-out batch times.
    latency: hdrhistogram::Histogram<u64>,
    fanout_time: hdrhistogram::Histogram<u64>,
    last_publish: Instant,
    /// Rate limit of repeated warnings: when the last was logged, and how many were held back.
    warned_at: Option<Instant>,
    warnings_held: u64,
    /// What each listener's last accept left behind: the public one, then the admin one.
    backlog: [Backlog; 2],
    /// The gateway failed: this reactor is closing its clients with 1011, and meanwhile answers
    /// health checks (503) and refuses upgrades.
    failed: bool,
}

impl Reactor {
    pub fn new(setup: ReactorSetup) -> io::Result<Self> {
        let ReactorSetup {
            id,
            poll,
            mut listener,
            inbox,
            symbols,
            config,
            stats,
            shutdown,
            core,
            mut admin_listener,
            telemetry,
            admission,
            authenticator,
        } = setup;
        if let Some(core) = core {
            if !core_affinity::set_for_current(core) {
                tracing::warn!(reactor = id, core = core.id, "could not pin reactor to its core");
            }
        }
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        if let Some(admin) = &mut admin_listener {
            poll.registry().register(admin, ADMIN_LISTENER, Interest::READABLE)?;
        }
        let limits = &config.limits;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(limits.read_buffer_size)
            .write_buffer_size(0)
            .max_message_size(Some(limits.max_message_size))
            .max_frame_size(Some(limits.max_message_size));
        let write_hold = match config.server.write_hold_max_us {
            0 => None,
            us => Some((WriteHold { max: Duration::from_micros(us) }, HoldTimer::new(poll.registry(), HOLD_TIMER)?)),
        };
        let n = symbols.capacity();
        let (budget, default_policy) = (config.budget(), config.default_policy());
        let slab_capacity = config.limits.max_connections / config.reactor_count() + 16;
        Ok(Self {
            id,
            poll,
            listener,
            inbox,
            symbols,
            config,
            stats,
            shutdown,
            ws_config,
            budget,
            default_policy,
            // Sized for this reactor's share of the connection limit up front: the memory is only
            // touched as connections arrive, and the slab never moves its 568-byte entries around.
            conns: Slab::with_capacity(slab_capacity),
            index: SubscriptionIndex::new(n),
            lvc: LastValueCache::new(n),
            dirty: Vec::with_capacity(1024),
            to_read_again: Vec::new(),
            revisiting: Vec::new(),
            flushing: Vec::with_capacity(1024),
            closing: Vec::new(),
            over_limit: Vec::new(),
            builder: FrameBuilder::new(),
            command_buf: Vec::with_capacity(1024),
            next_session: 0,
            turn: TurnCounters::default(),
            now: Instant::now(),
            now_ms: Millis(0),
            epoch: Instant::now(),
            draining_until: None,
            admin_listener,
            telemetry,
            admission,
            authenticator,
            last_sweep: Instant::now(),
            writes: WriteCounts::default(),
            fanout_left: (MAX_FANOUT_PER_TURN, MAX_OFFERS_PER_TURN),
            fanned_out: Vec::with_capacity(MAX_FANOUT_PER_TURN),
            carried: Vec::with_capacity(MAX_FANOUT_PER_TURN),
            passing: false,
            write_hold,
            hold_until: None,
            latency: latency_histogram(),
            fanout_time: latency_histogram(),
            last_publish: Instant::now(),
            warned_at: None,
            warnings_held: 0,
            backlog: [Backlog::Drained; 2],
            failed: false,
        })
    }

    /// Runs until shutdown has closed every connection or its grace period is over; returns an
    /// error if `poll` fails (the caller fails the gateway, then calls [`Reactor::abandon`]).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_housekeeping = Instant::now();
        loop {
            // While holding, the hold timer wakes the reactor (the ingest thread need not);
            // the poll's own timeout, in whole milliseconds, is only a backstop.
            // Connections with more to read: look at the sockets and go on at once.
            let timeout = match self.hold_until {
                _ if !self.to_read_again.is_empty() => Duration::ZERO,
                Some(until) => until.saturating_duration_since(Instant::now()),
                None if self.backlog.contains(&Backlog::Capped) => Duration::ZERO,
                None if self.inbox.park() => IDLE_POLL,
                None => Duration::ZERO,
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.inbox.unpark();
            // Last turn's connections with more to read are read after this turn's events; what runs out of allowance
            // from here on waits for the next turn.
            std::mem::swap(&mut self.revisiting, &mut self.to_read_again);
            self.now = Instant::now();
            self.now_ms = Millis::since(self.epoch, self.now);
            // Each listener is accepted from once a turn: if an event announced new connections,
            // or if the last turn left some behind at the cap.
            let mut to_accept = self.backlog.map(|left| left == Backlog::Capped);
            for event in events.iter() {
                match event.token() {
                    LISTENER => to_accept[0] = true,
                    ADMIN_LISTENER => to_accept[1] = true,
                    WAKER | HOLD_TIMER => {}
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(key);
                        }
                        if event.is_writable() {
                            self.mark_dirty(key);
                        }
                    }
                }
            }
            self.accept_from(to_accept);
            self.read_again();
            // Holding (see crate::hold): ticks wait in the channel and replies in their queues
            // until the hold timer, unless shutdown has begun.
            let holding = self.hold_until.is_some_and(|until| until > self.now) && self.draining_until.is_none();
            if !holding {
                self.hold_until = None;
                let fanout_started = self.now;
                let pass_started = self.write_hold.as_ref().map(|_| Instant::now());
                self.fanout_left = (MAX_FANOUT_PER_TURN, MAX_OFFERS_PER_TURN);
                self.fan_out();
                let written = self.flush_dirty(true);
                self.time_deliveries(fanout_started);
                self.turn.turns += 1;
                if let Some(pass_started) = pass_started {
                    self.hold_after(pass_started.elapsed(), written);
                }
            }
            if self.now.duration_since(last_housekeeping) >= IDLE_POLL / 2 || self.draining_until.is_some() {
                last_housekeeping = self.now;
                self.suffer_injected_fault()?;
                // A failed accept (out of descriptors) is retried here: no event will announce
                // the connections waiting in the backlog.
                self.accept_from(self.backlog.map(|left| left == Backlog::Failed));
                if self.housekeeping() {
                    break;
                }
            }
        }
        self.publish_stats();
        Ok(())
    }

    /// A fault a test armed (see `Gateway::start_with_fault_hook`), suffered as the real one.
    fn suffer_injected_fault(&self) -> io::Result<()> {
        match self.telemetry.liveness.take_fault(self.id) {
            Some(Fault::ReactorPanic(_)) => panic!("injected fault"),
            Some(Fault::ReactorPollFails(_)) => Err(io::Error::other("injected fault")),
            _ => Ok(()),
        }
    }

    /// After this reactor failed (a panic, a failed `poll`): closes every connection it still
    /// holds, with 1011 for WebSocket clients (one write attempt each), and gives back their
    /// admission slots.
    pub fn abandon(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for &key in &keys {
            if matches!(self.conns.get(key), Some(Connection { phase: Phase::Ws(_), closing: None, .. })) {
                self.begin_close(key, Some((CloseCode::InternalError, "gateway failure")), CloseReason::Shutdown);
            }
        }
        self.flush_dirty(false);
        for key in keys {
            self.remove(key, CloseReason::Shutdown);
        }
        self.publish_stats();
    }

    /// Arms the hold after a pass (fan-out and writes) that took `took` and wrote to `written`
    /// connections, if [`WriteHold::after_pass`] says so (never while shutting down).
    fn hold_after(&mut self, took: Duration, written: usize) {
        let Some((write_hold, timer)) = &self.write_hold else { return };
        if self.draining_until.is_some() {
            return;
        }
        let behind = self.fanout_left.0 == 0
            || self.fanout_left.1 == 0
            || self.inbox.len() * 2 > self.config.server.channel_capacity;
        let pass = Pass { took, written, open: self.conns.len(), behind };
        let Some(hold) = write_hold.after_pass(pass) else { return };
        // Taken before arming, so the timer never fires before the hold is over.
        let until = Instant::now() + hold;
        match timer.arm(hold) {
            Ok(()) => {
                self.hold_until = Some(until);
                self.turn.write_holds += 1;
            }
            Err(e) => tracing::debug!(reactor = self.id, error = %e, "hold timer failed; not holding"),
        }
    }

    // ---- accept and read ----

    /// Accepts from the listeners marked in `which`: the public one, then the admin one.
    fn accept_from(&mut self, which: [bool; 2]) {
        for (admin, accept) in [false, true].into_iter().zip(which) {
            if accept {
                self.accept(admin);
            }
        }
    }

    /// Accepts from a listener until `WouldBlock`, at most [`MAX_ACCEPTS_PER_TURN`]; records
    /// what is left in [`Reactor::backlog`].
    fn accept(&mut self, admin: bool) {
        let backlog = usize::from(admin);
        self.backlog[backlog] = Backlog::Drained;
        // While stopping, nothing is accepted, except health checks after a failure.
        if self.draining_until.is_some() && !self.failed {
            return;
        }
        for accepted_so_far in 0.. {
            if accepted_so_far == MAX_ACCEPTS_PER_TURN {
                self.backlog[backlog] = Backlog::Capped;
                return;
            }
            let accepted = match (&self.admin_listener, admin) {
                (Some(listener), true) => listener.accept(),
                _ => self.listener.accept(),
            };
            match accepted {
                Ok((mut sock, peer)) => {
                    if let Err(e) = sock.set_nodelay(self.config.server.tcp_nodelay) {
                        tracing::debug!(%peer, error = %e, "set_nodelay failed");
                    }
                    let send_buffer = self.config.server.socket_send_buffer;
                    if send_buffer > 0 {
                        if let Err(e) = socket2::SockRef::from(&sock).set_send_buffer_size(send_buffer) {
                            tracing::debug!(%peer, error = %e, "setting SO_SNDBUF failed");
                        }
                    }
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if let Err(e) =
                        self.poll.registry().register(&mut sock, Token(key), Interest::READABLE | Interest::WRITABLE)
                    {
                        tracing::warn!(%peer, error = %e, "cannot register connection");
                        continue;
                    }
                    self.next_session += 1;
                    let burst = self.config.limits.message_burst;
                    let mut conn = Connection::new(
                        sock,
                        peer,
                        self.next_session,
                        self.default_policy,
                        burst,
                        self.now,
                        self.now_ms,
                    );
                    conn.admin = admin;
                    // The admin port is for operators and is not counted against clients' limits.
                    let refusal = if admin { None } else { self.admission.admit(peer.ip()).err() };
                    conn.admitted = !admin && refusal.is_none();
                    entry.insert(conn);
                    self.turn.accepted += 1;
                    if let Some(refusal) = refusal {
                        self.refuse(key, refusal);
                        continue;
                    }
                    // The request may already be there; with edge triggers, read it now.
                    self.on_readable(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    // Out of file descriptors or similar: the rest waits in the backlog, and is
                    // tried again at housekeeping.
                    self.backlog[backlog] = Backlog::Failed;
                    if let Some(held) = self.may_warn() {
                        tracing::warn!(reactor = self.id, error = %e, held_back = held, "accept failed");
                    }
                    return;
                }
            }
        }
    }

    /// Answers a connection a limit refused, and closes it.
    fn refuse(&mut self, key: usize, refusal: Refusal) {
        let response = match refusal {
            Refusal::Full => http::response(
                503,
                "Service Unavailable",
                "the gateway is at its connection limit (limits.max_connections); retry later\n",
            ),
            Refusal::PerAddress => http::response(
                429,
                "Too Many Requests",
                "too many connections from your address (limits.max_connections_per_ip)\n",
            ),
        };
        self.turn.connections_refused += 1;
        if let Some(i) = HTTP_STATUSES.iter().position(|&s| s == http::status_of(&response)) {
            self.stats.http_by_status[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(io) = self.conns.get_mut(key).and_then(|c| c.io()) {
            io.out.push_control(Frame::from_bytes(&response), self.now);
        }
        self.begin_close(key, None, CloseReason::Refused);
    }

    /// A readiness event: reads the connection, unless it is to be read again anyway (then it is
    /// read once this turn, by [`Reactor::read_again`]).
    fn on_readable(&mut self, key: usize) {
        if self.conns.get(key).is_some_and(|c| !c.read_again) {
            self.read(key);
        }
    }

    /// Reads every connection the previous turn left with more to read, each within a new
    /// allowance.
    fn read_again(&mut self) {
        let mut revisiting = std::mem::take(&mut self.revisiting);
        for &(key, session) in &revisiting {
            let key = key as usize;
            match self.conns.get_mut(key) {
                Some(conn) if conn.session == session && conn.read_again => {
                    conn.read_again = false;
                    self.read(key);
                }
                // Closed since, and its key perhaps reused.
                _ => {}
            }
        }
        revisiting.clear();
        self.revisiting = revisiting;
    }

    /// Lists a connection whose allowance ran out, to be read again next turn.
    fn read_later(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.read_again {
                conn.read_again = true;
                self.to_read_again.push((key as ConnKey, conn.session));
            }
        }
    }

    fn read(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.closing.is_some() {
            self.read_discarding(key);
            return;
        }
        if matches!(conn.phase, Phase::Http { .. }) {
            self.read_http(key);
        }
        if matches!(self.conns.get(key), Some(Connection { phase: Phase::Ws(_), closing: None, .. })) {
            self.read_ws(key);
        }
    }

    /// Reads the request head and answers it or upgrades.
    fn read_http(&mut self, key: usize) {
        let max_head = self.config.limits.max_request_head;
        let has_admin = self.config.server.admin_listen.is_some();
        let Some(conn) = self.conns.get_mut(key) else { return };
        let surface = if conn.admin {
            Surface::Admin
        } else {
            Surface::Public { operational: !has_admin, echo: self.config.server.echo_route }
        };
        let Phase::Http { io, head } = &mut conn.phase else { return };
        let mut chunk = [0u8; READ_CHUNK];
        let parsed = loop {
            let room = (max_head - head.len().min(max_head)).min(READ_CHUNK);
            if room == 0 {
                break http::parse_and_route(head, max_head, surface, &self.config.limits.allowed_origins);
            }
            match io.sock.read(&mut chunk[..room]) {
                Ok(0) => {
                    self.remove(key, CloseReason::ClientVanished);
                    return;
                }
                Ok(n) => {
                    head.extend_from_slice(&chunk[..n]);
                    if let Parsed::Complete(route) =
                        http::parse_and_route(head, max_head, surface, &self.config.limits.allowed_origins)
                    {
                        break Parsed::Complete(route);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.remove(key, CloseReason::ClientVanished);
                    return;
                }
            }
        };
        let response = match parsed {
            Parsed::Partial => return,
            Parsed::Complete(Route::Upgrade { .. }) if self.telemetry.liveness.has_failed() => http::response(
                503,
                "Service Unavailable",
                "the gateway failed and is stopping; connect again once it has restarted\n",
            ),
            Parsed::Complete(Route::Upgrade { response, head_len, echo, token }) => {
                match self.authorize(token.as_deref()) {
                    // The echo route has no commands, so no `auth` message: a token must come
                    // with the upgrade request.
                    Ok(AuthState::Pending { .. }) if echo => http::response(
                        401,
                        "Unauthorized",
                        "authentication is on: the echo route needs a token with the upgrade request\n",
                    ),
                    Ok(auth) => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.auth = auth;
                        }
                        return self.upgrade(key, &response, head_len, echo);
                    }
                    Err(refusal) => refusal,
                }
            }
            Parsed::Complete(Route::Respond(response)) => response,
            Parsed::Complete(Route::Health { head }) => {
                let full = match self.telemetry.liveness.failure() {
                    None => http::response(200, "OK", "ok\n"),
                    Some(failure) => http::response(503, "Service Unavailable", &format!("failed: {failure}\n")),
                };
                if head { http::without_body(full) } else { full }
            }
            Parsed::Complete(Route::Metrics { head }) => {
                let full = match crate::metrics::render(&self.telemetry, wall_clock_ns()) {
                    Ok(text) => http::response_typed(200, "OK", "text/plain; version=0.0.4; charset=utf-8", &text),
                    Err(e) => http::response(500, "Internal Server Error", &format!("cannot render metrics: {e}\n")),
                };
                if head { http::without_body(full) } else { full }
            }
            Parsed::Complete(Route::Ready { head }) => {
                let readiness = crate::metrics::readiness(&self.telemetry, wall_clock_ns());
                let (status, reason) = if readiness.ready() { (200, "OK") } else { (503, "Service Unavailable") };
                let full = http::response_typed(status, reason, "application/json", &readiness.body);
                if head { http::without_body(full) } else { full }
            }
        };
        let status = http::status_of(&response);
        if let Some(i) = HTTP_STATUSES.iter().position(|&s| s == status) {
            self.stats.http_by_status[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(io) = self.conns.get_mut(key).and_then(|c| c.io()) {
            io.out.push_control(Frame::from_bytes(&response), self.now);
        }
        self.turn.http_responses += 1;
        self.begin_close(key, None, CloseReason::HttpAnswered);
    }

    fn upgrade(&mut self, key: usize, response: &[u8], head_len: usize, echo: bool) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Phase::Http { mut io, head } = std::mem::replace(&mut conn.phase, Phase::Moving) else { return };
        io.out.push_control(Frame::from_bytes(response), self.now);
        let early = head[head_len..].to_vec();
        // Bytes that came with the request head are WebSocket frames already (fewer than
        // READ_CHUNK bytes: the head is read in chunks until it is complete); their frames are
        // charged with the first read.
        if io.utf8.feed(&early).is_err() {
            io.invalid_utf8 = true;
        }
        // The echo route has the same limits as /ws (the conformance script raises them).
        let ws = WebSocket::from_partially_read(io, early, Role::Server, Some(self.ws_config));
        conn.phase = Phase::Ws(ws);
        conn.echo = echo;
        self.turn.upgraded += 1;
        if echo {
            return;
        }
        let session = format!("r{}-{}", self.id, conn.session);
        let auth_required = matches!(conn.auth, AuthState::Pending { .. });
        let feed_down = self.telemetry.stats.ingest.any_source_down();
        let welcome = self.builder.text(|out| {
            message::welcome(out, env!("CARGO_PKG_VERSION"), &session, wall_clock_ns(), auth_required, feed_down)
        });
        self.reply(key, welcome);
    }

    /// Decides a new WebSocket's authentication from the token it brought (if any): the state
    /// to start in, or the HTTP response that refuses it (401 for a bad token, 429 past the
    /// user's connection limit).
    fn authorize(&mut self, token: Option<&str>) -> Result<AuthState, Vec<u8>> {
        let Some(authenticator) = &self.authenticator else { return Ok(AuthState::Open) };
        let Some(token) = token else {
            let wait = Duration::from_millis(self.config.auth.auth_timeout_ms);
            return Ok(AuthState::Pending { deadline: self.now + wait });
        };
        match authenticator.verify(token) {
            Ok(principal) => {
                if !self.admission.admit_user(&principal.user, principal.max_connections) {
                    self.turn.connections_refused += 1;
                    return Err(http::response(429, "Too Many Requests", "too many connections for this user\n"));
                }
                Ok(AuthState::Authenticated(Box::new(principal)))
            }
            Err(e) => {
                self.turn.auth_failures += 1;
                Err(http::response(401, "Unauthorized", &format!("{e}\n")))
            }
        }
    }

    /// Reads WebSocket messages within the turn's allowance: [`MESSAGES_PER_TURN`] messages, and
    /// the bytes and frames of [`crate::connection::ConnIo::grant_turn`]. A connection that used
    /// it up with more to read is read again next turn; the frames read (every kind) are charged to
    /// its frame rate.
    fn read_ws(&mut self, key: usize) {
        let Some(io) = self.conns.get_mut(key).and_then(|c| c.io()) else { return };
        io.grant_turn();
        let mut messages = 0;
        let more = loop {
            let Some(conn) = self.conns.get_mut(key) else { return };
            if conn.closing.is_some() {
                return;
            }
            if messages == MESSAGES_PER_TURN {
                break true;
            }
            let echo = conn.echo;
            let Phase::Ws(ws) = &mut conn.phase else { return };
            let result = ws.read();
            if result.is_ok() {
                conn.last_inbound = self.now_ms;
                messages += 1;
            }
            // Every client message spends a token.
            if let Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_)) = &result {
                let limits = &self.config.limits;
                if conn.bucket.allow(self.now, limits.messages_per_second, limits.message_burst) {
                    conn.strikes = 0;
                } else {
                    conn.strikes += 1;
                    self.turn.rate_limited += 1;
                    if conn.strikes > limits.message_burst {
                        self.begin_close(
                            key,
                            Some((CloseCode::PolicyViolation, "rate limit exceeded")),
                            CloseReason::RateLimit,
                        );
                        return;
                    }
                    let frame = self.builder.text(|out| {
                        message::error(
                            out,
                            None,
                            ErrorCode::RateLimited,
                            "too many messages: this one was not executed (limits.messages_per_second)",
                            [],
                        )
                    });
                    self.reply(key, frame);
                    continue;
                }
            }
            if !ws.get_ref().out.queue.is_empty() {
                // tungstenite queued a pong or a close reply.
                self.mark_dirty(key);
            }
            match result {
                Ok(Message::Text(text)) if echo => {
                    let frame = data_frame(true, text.as_bytes());
                    self.reply(key, frame);
                }
                Ok(Message::Binary(data)) if echo => {
                    let frame = data_frame(false, &data);
                    self.reply(key, frame);
                }
                Ok(Message::Text(text)) => {
                    self.command_buf.clear();
                    self.command_buf.extend_from_slice(text.as_bytes());
                    self.on_command(key);
                }
                Ok(Message::Binary(_)) => {
                    self.turn.command_errors += 1;
                    let frame = self.builder.text(|out| {
                        message::error(
                            out,
                            None,
                            ErrorCode::UnsupportedFrame,
                            "binary frames are not supported: send JSON commands in text frames",
                            [],
                        )
                    });
                    self.reply(key, frame);
                }
                Ok(Message::Close(_)) => {
                    // tungstenite holds its close reply until the next write: flushing moves it
                    // into the outbox (its error only says the connection is now closing).
                    if let Some(Connection { phase: Phase::Ws(ws), .. }) = self.conns.get_mut(key) {
                        let _ = ws.flush();
                    }
                    self.begin_close(key, None, CloseReason::ClientClose);
                    return;
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Everything valid has been handled; invalid text seen in a frame not yet
                    // complete fails the connection now rather than once it is all in.
                    let Some(Connection { phase: Phase::Ws(ws), .. }) = self.conns.get(key) else { return };
                    if ws.get_ref().invalid_utf8 {
                        self.on_ws_error(key, tungstenite::Error::Utf8(String::from("invalid UTF-8")));
                        return;
                    }
                    // Either the socket is empty, or the allowance is spent and it may not be.
                    break ws.get_ref().turn_spent();
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.on_ws_error(key, e);
                    return;
                }
            }
        };
        if self.charge_frames(key) && more {
            self.read_later(key);
        }
    }

    /// Charges the frames read since the last charge to the connection's frame rate; past
    /// `limits.max_frames_per_second`, closes it with 1008. Returns whether it is still open.
    fn charge_frames(&mut self, key: usize) -> bool {
        let max = self.config.limits.max_frames_per_second;
        let now_ms = self.now_ms;
        let Some(conn) = self.conns.get_mut(key) else { return false };
        let Some(io) = conn.io() else { return false };
        let frames = io.take_frames();
        if conn.frame_window.charge(now_ms, u32::from(frames), max) {
            return true;
        }
        self.begin_close(key, Some((CloseCode::PolicyViolation, "too many frames")), CloseReason::TooManyFrames);
        false
    }

    fn on_ws_error(&mut self, key: usize, error: tungstenite::Error) {
        use tungstenite::error::{CapacityError, ProtocolError};
        let (code, reason, text) = match &error {
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            | tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed => {
                self.remove(key, CloseReason::ClientVanished);
                return;
            }
            tungstenite::Error::Io(e) => {
                let reason = match e.kind() {
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
                        CloseReason::ClientVanished
                    }
                    _ => CloseReason::IoError,
                };
                self.remove(key, reason);
                return;
            }
            tungstenite::Error::Protocol(e) => (CloseCode::ProtocolError, CloseReason::ProtocolError, e.to_string()),
            tungstenite::Error::Utf8(_) => {
                (CloseCode::InvalidPayload, CloseReason::InvalidUtf8, "invalid UTF-8 in text message".to_string())
            }
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => (
                CloseCode::MessageTooBig,
                CloseReason::MessageTooBig,
                format!("message of {size} bytes is over the limit of {max_size}"),
            ),
            tungstenite::Error::Capacity(e) => (CloseCode::MessageTooBig, CloseReason::MessageTooBig, e.to_string()),
            other => (CloseCode::ProtocolError, CloseReason::ProtocolError, other.to_string()),
        };
        self.turn.protocol_closes += 1;
        tracing::debug!(reactor = self.id, error = %error, "closing connection for a protocol error");
        self.begin_close(key, Some((code, &text)), reason);
    }

    // ---- commands ----

    fn on_command(&mut self, key: usize) {
        self.turn.commands += 1;
        let errors_before = self.turn.command_errors;
        let mut buf = std::mem::take(&mut self.command_buf);
        let op = match parse_command(&mut buf) {
            Err(err) => {
                self.turn.command_errors += 1;
                let frame = self
                    .builder
                    .text(|out| message::error(out, err.id.as_ref(), ErrorCode::BadRequest, &err.message, []));
                self.reply(key, frame);
                "invalid"
            }
            Ok(request) if self.needs_auth(key, &request.command) => {
                self.turn.command_errors += 1;
                let frame = self.builder.text(|out| {
                    message::error(
                        out,
                        request.id.as_ref(),
                        ErrorCode::Unauthenticated,
                        "authenticate first: {\"op\":\"auth\",\"token\":\"...\"}",
                        [],
                    )
                });
                self.reply(key, frame);
                request.command.op()
            }
            Ok(request) => {
                let id = request.id.as_ref();
                let op = request.command.op();
                match &request.command {
                    Command::Auth { token } if self.authenticator.is_some() => self.on_auth(key, id, token),
                    command => {
                        let outcome = self.on_session_command(key, id, command);
                        self.after_session(key, outcome);
                    }
                }
                op
            }
        };
        self.command_buf = buf;
        let op_index = COMMAND_OPS.iter().position(|&o| o == op).unwrap_or(COMMAND_OPS.len() - 1);
        let result = usize::from(self.turn.command_errors > errors_before);
        self.stats.commands[op_index][result].fetch_add(1, Ordering::Relaxed);
    }

    /// Runs a command through the connection's [`Session`].
    fn on_session_command(&mut self, key: usize, id: Option<&RequestId>, command: &Command<'_>) -> Outcome {
        let Some(conn) = self.conns.get_mut(key) else { return Outcome::Open };
        if conn.closing.is_some() {
            return Outcome::Open;
        }
        let principal = match &conn.auth {
            AuthState::Authenticated(principal) => Some(&**principal),
            _ => None,
        };
        let Phase::Ws(ws) = &mut conn.phase else { return Outcome::Open };
        let mut session = Session { key: key as ConnKey, subs: &mut conn.subs, out: &mut ws.get_mut().out, principal };
        let mut desk = desk!(self);
        let limits = CommandLimits { max_subscriptions: self.config.limits.max_subscriptions };
        session.handle(&mut desk, &mut self.index, limits, id, command)
    }

    /// Acts on what a session call asks: write what it queued, or close a slow consumer.
    fn after_session(&mut self, key: usize, outcome: Outcome) {
        match outcome {
            Outcome::Open => self.mark_dirty(key),
            Outcome::SlowConsumer => self.close_slow_consumer(key),
        }
    }

    /// Whether the connection must authenticate before `command`.
    fn needs_auth(&self, key: usize, command: &Command<'_>) -> bool {
        matches!(self.conns.get(key).map(|c| &c.auth), Some(AuthState::Pending { .. }))
            && !matches!(command, Command::Auth { .. })
    }

    /// `{"op":"auth"}`: authenticates a connection that brought no token at the handshake.
    fn on_auth(&mut self, key: usize, id: Option<&tickgate_protocol::RequestId>, token: &str) {
        // Without an authenticator `auth` is the session's (answered as not enabled).
        let Some(authenticator) = &self.authenticator else { return };
        let refusal = match self.conns.get(key).map(|c| &c.auth) {
            Some(AuthState::Authenticated(_)) => Some("already authenticated".to_string()),
            _ => match authenticator.verify(token) {
                Ok(principal) if self.admission.admit_user(&principal.user, principal.max_connections) => {
                    let frame =
                        self.builder.text(|out| message::authenticated(out, id, &principal.user, principal.expires_at));
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.auth = AuthState::Authenticated(Box::new(principal));
                    }
                    self.reply(key, frame);
                    None
                }
                Ok(_) => Some("too many connections for this user".to_string()),
                Err(e) => Some(e.to_string()),
            },
        };
        let Some(reason) = refusal else { return };
        self.turn.command_errors += 1;
        let closing = matches!(self.conns.get(key).map(|c| &c.auth), Some(AuthState::Pending { .. }));
        let code = if closing { ErrorCode::AuthFailed } else { ErrorCode::BadRequest };
        let frame = self.builder.text(|out| message::error(out, id, code, &reason, []));
        self.reply(key, frame);
        if closing {
            self.turn.auth_failures += 1;
            self.begin_close(key, Some((CloseCode::PolicyViolation, "authentication failed")), CloseReason::AuthFailed);
        }
    }

    /// Queues a frame for one connection, within its budget: a frame that would take the queue
    /// past the hard limit closes the connection as a slow consumer instead. (Echo connections
    /// carry conformance messages larger than the budget: only the write deadline applies.)
    fn reply(&mut self, key: usize, frame: Frame) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.closing.is_some() {
            return;
        }
        let echo = conn.echo;
        let Some(io) = conn.io() else { return };
        if echo {
            io.out.push_control(frame, self.now);
        } else if io.out.push_within(frame, &self.budget, self.now).is_err() {
            self.close_slow_consumer(key);
            return;
        }
        self.turn.replies += 1;
        self.mark_dirty(key);
    }

    // ---- fan-out and write ----

    /// Takes ticks from the ingest channel, within what is left of the turn's allowance
    /// ([`MAX_FANOUT_PER_TURN`] messages, [`MAX_OFFERS_PER_TURN`] offers, checked between
    /// messages), and offers each to its subscribers' outboxes.
    fn fan_out(&mut self) {
        let budget = self.budget;
        let now = self.now;
        let mut offers = 0;
        while self.fanout_left.0 > 0 && offers < self.fanout_left.1 {
            let Some(msg) = self.inbox.try_recv() else { break };
            self.fanout_left.0 -= 1;
            match msg {
                FanoutMsg::Tick { tick, frame } => {
                    self.lvc.record(&tick);
                    let subscribers = self.index.subscribers(tick.symbol);
                    let info = self.symbols.get(tick.symbol);
                    offers += subscribers.len();
                    // Subscribers marked dirty during a write pass are written in the next one.
                    let mut next_pass = 0;
                    for &key in subscribers {
                        let conn = &mut self.conns[key as usize];
                        let Phase::Ws(ws) = &mut conn.phase else { continue };
                        let out = &mut ws.get_mut().out;
                        let verdict = session::deliver_tick(out, &tick, &frame, info, &mut self.builder, &budget, now);
                        match verdict {
                            Verdict::Queued => self.turn.deliveries += 1,
                            Verdict::Conflated => self.turn.conflated += 1,
                            Verdict::Dropped => self.turn.dropped += 1,
                            Verdict::Disconnect => self.over_limit.push(key),
                        }
                        if !conn.dirty {
                            conn.dirty = true;
                            self.dirty.push(key);
                            next_pass += u64::from(self.passing);
                        }
                    }
                    self.fanned_out.push((tick.gw_ts, subscribers.len() as u64 - next_pass));
                    if next_pass > 0 {
                        self.carried.push((tick.gw_ts, next_pass));
                    }
                }
                FanoutMsg::Notice { symbol, frame } => {
                    self.control_to_subscribers(symbol, |desk, out| desk.deliver_notice(out, symbol, frame.clone()));
                }
                FanoutMsg::Broadcast { frame } => self.broadcast(&frame),
                FanoutMsg::Resync { symbol, from_seq, to_seq, values } => {
                    self.lvc.replace(symbol, values);
                    let mut skipped = None;
                    self.control_to_subscribers(symbol, |desk, out| {
                        let skipped = skipped.get_or_insert_with(|| desk.resync(symbol, from_seq, to_seq));
                        desk.deliver_resync(out, symbol, skipped)
                    });
                }
            }
        }
        self.fanout_left.1 = self.fanout_left.1.saturating_sub(offers);
        while let Some(key) = self.over_limit.pop() {
            self.close_slow_consumer(key as usize);
        }
    }

    /// Queues a control frame about `symbol` for each of its subscribers, through their
    /// sessions; the ones it takes past their hard limit are closed at the end of the fan-out.
    fn control_to_subscribers(
        &mut self,
        symbol: SymbolId,
        mut deliver: impl FnMut(&mut Desk<'_>, &mut Outbox) -> Outcome,
    ) {
        let mut desk = desk!(self);
        for &key in self.index.subscribers(symbol) {
            let conn = &mut self.conns[key as usize];
            let Phase::Ws(ws) = &mut conn.phase else { continue };
            if deliver(&mut desk, &mut ws.get_mut().out) == Outcome::SlowConsumer {
                self.over_limit.push(key);
            }
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    fn close_slow_consumer(&mut self, key: usize) {
        if self.conns.get(key).is_some_and(|c| c.closing.is_none()) {
            self.turn.slow_consumer_closes += 1;
            self.begin_close(key, Some((CloseCode::PolicyViolation, "slow consumer")), CloseReason::SlowConsumer);
        }
    }

    /// Times this turn's ticks from their ingest to the end of the write pass that handed them
    /// to the kernel: one histogram entry per tick, weighted by its deliveries.
    fn time_deliveries(&mut self, fanout_started: Instant) {
        if self.fanned_out.is_empty() {
            return;
        }
        let written_ns = wall_clock_ns();
        for &(gw_ts, deliveries) in &self.fanned_out {
            if deliveries > 0 {
                let _ = self.latency.record_n(written_ns.saturating_sub(gw_ts).max(1_000), deliveries);
            }
        }
        self.fanned_out.clear();
        // What this pass fanned out to connections it had already written is timed after the next.
        std::mem::swap(&mut self.fanned_out, &mut self.carried);
        let _ = self.fanout_time.record((fanout_started.elapsed().as_nanos() as u64).max(1_000));
    }

    /// Whether a repeated warning may be logged now (at most one a second); returns how many
    /// were held back since the last one.
    fn may_warn(&mut self) -> Option<u64> {
        match self.warned_at {
            Some(at) if self.now.duration_since(at) < Duration::from_secs(1) => {
                self.warnings_held += 1;
                None
            }
            _ => {
                self.warned_at = Some(self.now);
                Some(std::mem::take(&mut self.warnings_held))
            }
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key as ConnKey);
            }
        }
    }

    /// Writes every connection that has something queued. With `fan_out`, ticks that arrive
    /// meanwhile are fanned out every [`FLUSH_SLICE`] connections: the connections still to be
    /// written this pass send them with what they already had (no extra `writev`), the others
    /// are marked dirty again and send them next turn.
    /// Returns how many connections it wrote.
    fn flush_dirty(&mut self, fan_out: bool) -> usize {
        // Connections queued to while this pass runs go on `self.dirty` for the next one.
        let mut dirty = std::mem::take(&mut self.flushing);
        std::mem::swap(&mut dirty, &mut self.dirty);
        let written = dirty.len();
        self.passing = fan_out;
        for (i, &key) in dirty.iter().enumerate() {
            if fan_out && i % FLUSH_SLICE == FLUSH_SLICE - 1 && !self.inbox.is_empty() {
                self.fan_out();
            }
            self.flush(key as usize);
        }
        self.passing = false;
        dirty.clear();
        self.flushing = dirty;
        written
    }

    fn flush(&mut self, key: usize) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.dirty = false;
        let Some(io) = conn.io() else { return };
        let frames_before = self.writes.frames;
        let mut outcome = io.write_out(now, &mut self.writes);
        // Below the soft watermark: announce what the policy dropped, write, and again while
        // spans are owed and the socket takes more.
        let mut slow = false;
        while conn.closing.is_none() && outcome.is_ok() {
            let Some(io) = conn.io() else { break };
            let before = io.out.queue.queued_bytes();
            let mut desk = desk!(self);
            if desk.announce_gaps(&mut io.out) == Outcome::SlowConsumer {
                slow = true;
                break;
            }
            if io.out.queue.queued_bytes() == before {
                break;
            }
            outcome = io.write_out(now, &mut self.writes);
            if !matches!(outcome, Ok(WriteOutcome::Drained)) {
                break;
            }
        }
        conn.frames_sent += self.writes.frames - frames_before;
        match outcome {
            Ok(WriteOutcome::Blocked) => {}
            Ok(WriteOutcome::Drained) => {
                if let Some(closing) = &mut conn.closing {
                    if !closing.fin_sent {
                        closing.fin_sent = true;
                        // Everything, the close frame included, is out: send FIN, then wait for
                        // the client to hang up so our close is not lost to a reset.
                        if let Some(io) = conn.io() {
                            let _ = io.sock.shutdown(Shutdown::Write);
                        }
                    }
                }
            }
            Err(_) => return self.remove(key, CloseReason::IoError),
        }
        if slow {
            self.close_slow_consumer(key);
        }
    }

    // ---- closing ----

    /// Starts closing: unsubscribes, queues the close frame (if any), and lets the queue drain
    /// within the linger deadline.
    fn begin_close(&mut self, key: usize, close: Option<(CloseCode, &str)>, reason: CloseReason) {
        let linger = Duration::from_millis(self.config.limits.close_linger_ms);
        let deadline = self.now + linger;
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.closing.is_some() {
            return;
        }
        for symbol in conn.subs.take().iter() {
            self.index.remove(symbol, key as ConnKey);
        }
        let now = self.now;
        if let Some(io) = conn.io() {
            if reason == CloseReason::SlowConsumer {
                io.out.queue.discard_unstarted();
            }
            if let Some((code, text)) = close {
                io.out.push_control(close_frame(code, text), now);
            }
        }
        conn.closing = Some(Box::new(Closing { reason, deadline, fin_sent: false }));
        self.closing.push(key as ConnKey);
        self.mark_dirty(key);
    }

    /// Reads and discards what a closing client still sends, until it hangs up, at most
    /// [`READ_BYTES_PER_TURN`] a turn (the rest is read again next turn).
    fn read_discarding(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Some(io) = conn.io() else { return };
        let mut chunk = [0u8; READ_CHUNK];
        let mut left = READ_BYTES_PER_TURN as usize;
        loop {
            if left == 0 {
                self.read_later(key);
                return;
            }
            match io.sock.read(&mut chunk[..left.min(READ_CHUNK)]) {
                Ok(0) => break,
                Ok(n) => left = left.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let reason = conn.closing.as_ref().map_or(CloseReason::ClientVanished, |c| c.reason);
        self.remove(key, reason);
    }

    /// Drops a connection and everything it held.
    fn remove(&mut self, key: usize, reason: CloseReason) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        for symbol in conn.subs.take().iter() {
            self.index.remove(symbol, key as ConnKey);
        }
        let reason = conn.closing.as_ref().map_or(reason, |c| c.reason);
        if let Some(io) = conn.io() {
            let _ = self.poll.registry().deregister(&mut io.sock);
        }
        self.turn.closed += 1;
        self.stats.closed_by_reason[reason.index()].fetch_add(1, Ordering::Relaxed);
        if conn.admitted {
            self.admission.release(conn.peer.ip());
        }
        if let AuthState::Authenticated(principal) = &conn.auth {
            self.admission.release_user(&principal.user);
        }
        if matches!(conn.phase, Phase::Ws(_)) {
            tracing::info!(
                reactor = self.id,
                peer = %conn.peer,
                session = conn.session,
                duration_ms = conn.opened.until(self.now_ms),
                frames_sent = conn.frames_sent,
                reason = reason.as_str(),
                "connection closed"
            );
        }
    }

    // ---- housekeeping ----

    /// Publishes counters, enforces close deadlines, runs shutdown. Returns true when the reactor
    /// should stop.
    fn housekeeping(&mut self) -> bool {
        let now = self.now;
        let mut i = 0;
        while i < self.closing.len() {
            let key = self.closing[i] as usize;
            match self.conns.get(key).and_then(|c| c.closing.as_ref()) {
                Some(closing) if closing.deadline <= now => {
                    self.closing.swap_remove(i);
                    self.remove(key, CloseReason::IoError);
                }
                Some(_) => i += 1,
                None => {
                    self.closing.swap_remove(i);
                }
            }
        }
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            self.sweep(now);
        }
        if self.shutdown.load(Ordering::Relaxed) && self.draining_until.is_none() {
            let grace = Duration::from_millis(self.config.server.shutdown_grace_ms);
            self.draining_until = Some(now + grace);
            let failure = self.telemetry.liveness.failure();
            self.failed = failure.is_some();
            // After a failure the listener stays: health checks get their 503 until the exit.
            if !self.failed {
                let _ = self.poll.registry().deregister(&mut self.listener);
            }
            if failure.is_some_and(|f| f.part == Part::Ingest) {
                self.announce_feed_lost();
            }
            let close = match self.failed {
                true => (CloseCode::InternalError, "gateway failure"),
                false => (CloseCode::GoingAway, "going away"),
            };
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                match self.conns[key].phase {
                    Phase::Ws(_) => self.begin_close(key, Some(close), CloseReason::Shutdown),
                    _ => self.remove(key, CloseReason::Shutdown),
                }
            }
            self.flush_dirty(false);
        }
        self.publish_stats();
        match self.draining_until {
            Some(deadline) => self.conns.is_empty() || now >= deadline,
            None => false,
        }
    }

    /// Tells every client that no source delivers any more (the ingest thread is gone): one
    /// `status` "down" per source, before the close.
    fn announce_feed_lost(&mut self) {
        let sources = self.telemetry.stats.ingest.sources.clone();
        for source in &sources {
            let frame = self.builder.text(|out| message::status(out, false, &source.name));
            self.broadcast(&frame);
        }
    }

    /// Queues `frame` for every WebSocket client (not closing, not on the echo route).
    fn broadcast(&mut self, frame: &Frame) {
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Ws(_)) && c.closing.is_none() && !c.echo)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.reply(key, frame.clone());
        }
    }

    /// One pass over every connection's timers and budgets: slow consumers (no write progress
    /// within the deadline, or past the hard watermark), handshakes that take too long, and
    /// keepalive (ping the silent, close the unresponsive).
    fn sweep(&mut self, now: Instant) {
        let budget = self.budget;
        let limits = &self.config.limits;
        let (handshake_timeout, ping_interval, idle_timeout) =
            (limits.handshake_timeout_ms, limits.ping_interval_ms, limits.idle_timeout_ms);
        let now_ms = self.now_ms;
        let mut queued_bytes = 0;
        let mut actions = Vec::new();
        let now_secs = wall_clock_ns() / 1_000_000_000;
        for (key, c) in self.conns.iter_mut() {
            let closing = c.closing.is_some();
            let (opened, last_inbound, last_ping) = (c.opened, c.last_inbound, c.last_ping);
            let upgraded = matches!(c.phase, Phase::Ws(_));
            let auth_timeout = matches!(c.auth, AuthState::Pending { deadline } if deadline <= now);
            let token_expired =
                matches!(&c.auth, AuthState::Authenticated(p) if p.expires_at.is_some_and(|t| t <= now_secs));
            let Some(io) = c.io() else { continue };
            queued_bytes += io.out.queue.queued_bytes() as u64;
            io.out.trim(&budget);
            if closing {
                continue;
            }
            let over = io.out.is_over(&budget);
            if io.out.is_stalled(&budget, now) || over {
                actions.push((key, Sweep::SlowConsumer));
            } else if !upgraded && opened.until(now_ms) >= handshake_timeout {
                actions.push((key, Sweep::HandshakeTimeout));
            } else if auth_timeout {
                actions.push((key, Sweep::AuthTimeout));
            } else if token_expired {
                actions.push((key, Sweep::TokenExpired));
            } else if upgraded && last_inbound.until(now_ms) >= idle_timeout {
                actions.push((key, Sweep::IdleTimeout));
            } else if upgraded
                && last_inbound.until(now_ms) >= ping_interval
                && last_ping.until(now_ms) >= ping_interval
            {
                io.out.push_control(ping_frame(), now);
                c.last_ping = now_ms;
                actions.push((key, Sweep::Pinged));
            }
        }
        self.stats.queued_bytes.store(queued_bytes, Ordering::Relaxed);
        for (key, action) in actions {
            match action {
                Sweep::SlowConsumer => self.close_slow_consumer(key),
                Sweep::HandshakeTimeout => {
                    let response = http::response(408, "Request Timeout", "the upgrade took too long\n");
                    if let Some(i) = HTTP_STATUSES.iter().position(|&s| s == 408) {
                        self.stats.http_by_status[i].fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(io) = self.conns.get_mut(key).and_then(|c| c.io()) {
                        io.out.push_control(Frame::from_bytes(&response), now);
                    }
                    self.begin_close(key, None, CloseReason::HandshakeTimeout);
                }
                Sweep::AuthTimeout => {
                    self.turn.auth_failures += 1;
                    self.begin_close(
                        key,
                        Some((CloseCode::PolicyViolation, "authentication required")),
                        CloseReason::AuthFailed,
                    )
                }
                Sweep::TokenExpired => self.begin_close(
                    key,
                    Some((CloseCode::PolicyViolation, "token expired")),
                    CloseReason::TokenExpired,
                ),
                Sweep::IdleTimeout => {
                    self.begin_close(key, Some((CloseCode::PolicyViolation, "idle timeout")), CloseReason::IdleTimeout)
                }
                Sweep::Pinged => {
                    self.turn.pings_sent += 1;
                    self.mark_dirty(key);
                }
            }
        }
        self.flush_dirty(false);
    }

    fn publish_stats(&mut self) {
        self.turn.write_calls += self.writes.calls;
        self.turn.bytes_written += self.writes.bytes;
        self.turn.frames_written += self.writes.frames;
        self.writes = WriteCounts::default();
        self.stats.counters.add(&self.turn);
        self.turn = TurnCounters::default();
        self.stats.heartbeat_ns.store(wall_clock_ns(), Ordering::Relaxed);
        self.stats.channel_depth.store(self.inbox.len() as u64, Ordering::Relaxed);
        if self.now.duration_since(self.last_publish) >= PUBLISH_EVERY {
            self.last_publish = self.now;
            self.stats.delivery_latency.publish(&self.latency);
            self.stats.fanout_time.publish(&self.fanout_time);
            self.latency.reset();
            self.fanout_time.reset();
        }
        self.stats.connections.store(self.conns.len() as u64, Ordering::Relaxed);
        self.stats.subscriptions.store(self.index.total() as u64, Ordering::Relaxed);
    }
}
