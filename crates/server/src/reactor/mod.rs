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
//!
//! | module | job |
//! |---|---|
//! | `accept` | accepting from the listeners, refusing what a limit turns away |
//! | `proxied` | the PROXY protocol header a balancer sends first: the client's address, then admission |
//! | `tls_edge` | a connection's TLS failing or on the wrong port: the answer and the count |
//! | `upgrade` | the HTTP phase: plain routes, authentication, the WebSocket upgrade |
//! | `read` | readiness, the per-turn read allowance, WebSocket messages, protocol errors |
//! | `command` | commands, through the connection's sans-IO [`Session`] |
//! | `fanout` | ingest messages onto subscribers' outboxes, delivery latency |
//! | `write` | write passes, the write hold |
//! | `close` | the close handshake, slow consumers, removing a connection |
//! | `stream_fetch` | an edge's resumes read from the stream: requests out, answers in |
//! | `sweep` | housekeeping: timers, shutdown, counters |

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tickgate_core::subscription::ConnKey;
use tickgate_core::{Budget, History, LastValueCache, Policy, SlotWheel, SubscriptionIndex, SymbolId, SymbolTable};
use tickgate_feed::fanout::ReactorInbox;
use tickgate_protocol::FrameBuilder;
use tungstenite::protocol::WebSocketConfig;

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::connection::{Connection, Millis, WriteCounts};
use crate::hold::{HoldTimer, WriteHold};
use crate::metrics::Telemetry;
use crate::replay::Replays;
use crate::resume_fetch::StreamFetches;
use crate::stats::{ReactorStats, TurnCounters, latency_histogram};
pub use stream_fetch::FetchLink;

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
            history: &$reactor.history,
            replays: &mut $reactor.replays,
            builder: &mut $reactor.builder,
            budget: $reactor.budget,
            counters: &mut $reactor.turn,
            now: $reactor.now,
        }
    };
}

mod accept;
mod close;
mod command;
mod connz;
mod fanout;
mod proxied;
mod read;
mod stream_fetch;
mod sweep;
mod tls_edge;
mod upgrade;
mod write;

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
/// How long `poll` sleeps when nothing happens but replays wait for their clients to read.
const REPLAY_POLL: Duration = Duration::from_millis(5);
/// Bytes read from a socket per `read` while in the HTTP phase or draining.
const READ_CHUNK: usize = 2048;
/// Refused connections a reactor holds open at once while their 503/429 goes out (within
/// `limits.close_linger_ms`, after a TLS handshake on a TLS port); past this, a refused
/// connection is reset at once, unanswered, so a flood of connections cannot hold more
/// sockets than `limits.max_connections` plus this.
const REFUSED_ANSWERING_MAX: usize = 64;
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
    /// Serve TLS (on the public listener, and on the admin one if it says so).
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// An edge's way to read resumes from the stream, and how many at once.
    pub fetch: Option<(FetchLink, usize)>,
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
    /// The recent events of every symbol, as of the same tick as `lvc`: what a resume replays.
    history: History,
    /// The resumes being replayed, advanced every turn (see [`crate::replay`]).
    replays: Replays,
    /// An edge's way to the fetch thread (see [`crate::resume_fetch`]).
    fetch: Option<FetchLink>,
    /// Answers being acted on (kept for its capacity).
    fetch_answers: Vec<tickgate_bus::fetch::FetchAnswer>,
    /// The cursors this turn advances (kept for its capacity).
    replay_due: Vec<(ConnKey, SymbolId)>,
    /// Last turn's replays moved on: turn again at once.
    replay_moved: bool,
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
    /// When connections with quotes held back by rate caps are due (see tickgate_core::throttle).
    wheel: SlotWheel,
    /// The connections the wheel found due this turn (kept for its capacity).
    due: Vec<ConnKey>,
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
    tls: Option<Arc<crate::tls::Tls>>,
    /// Proxies whose forwarding headers are believed (`server.trusted_proxies`).
    trusted_proxies: crate::forwarded::TrustedProxies,
    /// Balancers allowed to send a PROXY header (`server.proxy_protocol_peers`).
    proxy_peers: crate::forwarded::TrustedProxies,
    /// The header those proxies maintain (`server.forwarded_header`).
    forwarded_header: crate::forwarded::ForwardingHeader,
    /// Refused connections held open while their answer goes out (at most
    /// [`REFUSED_ANSWERING_MAX`]).
    refused_answering: usize,
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
    /// The last `/connz` generation this reactor posted its part of.
    connz_answered: u64,
    /// A `/connz` request this reactor got and is gathering (see [`crate::connz`]).
    connz_waiting: Option<connz::Waiting>,
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
            tls,
            fetch,
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
        let history = History::new(n, config.history.limits());
        let replays = match &fetch {
            Some((_, in_flight)) => {
                Replays::with_stream(StreamFetches::new(id, *in_flight, config.bus.resume_fetch_max_events))
            }
            None => Replays::default(),
        };
        let (budget, default_policy) = (config.budget(), config.default_policy());
        let slab_capacity = config.limits.max_connections / config.reactor_count() + 16;
        // Validated with the configuration.
        let trusted_proxies =
            crate::forwarded::TrustedProxies::parse(&config.server.trusted_proxies).unwrap_or_default();
        let forwarded_header = config.server.forwarded_header;
        let proxy_peers =
            crate::forwarded::TrustedProxies::parse(&config.server.proxy_protocol_peers).unwrap_or_default();
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
            // touched as connections arrive, and the slab never moves its 576-byte entries around.
            conns: Slab::with_capacity(slab_capacity),
            index: SubscriptionIndex::new(n),
            lvc: LastValueCache::new(n),
            history,
            replays,
            fetch: fetch.map(|(link, _)| link),
            fetch_answers: Vec::new(),
            replay_due: Vec::new(),
            replay_moved: false,
            dirty: Vec::with_capacity(1024),
            to_read_again: Vec::new(),
            revisiting: Vec::new(),
            flushing: Vec::with_capacity(1024),
            closing: Vec::new(),
            over_limit: Vec::new(),
            wheel: SlotWheel::new(),
            due: Vec::new(),
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
            tls,
            trusted_proxies,
            forwarded_header,
            refused_answering: 0,
            proxy_peers,
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
            connz_answered: 0,
            connz_waiting: None,
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
                // Replays moved last turn: move them on at once.
                None if self.backlog.contains(&Backlog::Capped) || self.replay_moved => Duration::ZERO,
                None if self.inbox.park() => {
                    // Replays waiting for their clients to read are looked at again soon.
                    let idle = if self.replays.is_empty() { IDLE_POLL } else { REPLAY_POLL };
                    match self.wheel.next_due_in(Millis::since(self.epoch, Instant::now()).0) {
                        Some(ms) => idle.min(Duration::from_millis(ms)),
                        None => idle,
                    }
                }
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
            self.exchange_fetches();
            // Holding (see crate::hold): ticks wait in the channel and replies in their queues
            // until the hold timer, unless shutdown has begun.
            let holding = self.hold_until.is_some_and(|until| until > self.now) && self.draining_until.is_none();
            if !holding {
                self.hold_until = None;
                let fanout_started = self.now;
                let pass_started = self.write_hold.as_ref().map(|_| Instant::now());
                self.fanout_left = (MAX_FANOUT_PER_TURN, MAX_OFFERS_PER_TURN);
                self.fan_out();
                self.release_throttled();
                let written = self.flush_dirty(true);
                self.time_deliveries(fanout_started);
                self.turn.turns += 1;
                if let Some(pass_started) = pass_started {
                    self.hold_after(pass_started.elapsed(), written);
                }
                // Replays come after the live events are written, in a bounded slice of the
                // turn, and what they queued is written at once (see crate::replay).
                let replaying = !self.replays.is_empty();
                self.advance_replays();
                if replaying && !self.dirty.is_empty() {
                    self.flush_dirty(false);
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
}
