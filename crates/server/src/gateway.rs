//! Wiring: the symbol universe, the listeners, the reactors and the ingest thread.

use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use tickgate_core::SymbolTable;
use tickgate_feed::exchange::{Exchange, ExchangeMapper, ExchangeSource};
use tickgate_feed::fanout::{LinkStats, reactor_channel};
use tickgate_feed::ingest::{FeedControl, Ingest, IngestStats, spawn_ingest, wall_clock_ns};
use tickgate_feed::normalize::Normalizer;
use tickgate_feed::replay::{Recorder, Replay};
use tickgate_feed::resolve::SymbolResolver;
use tickgate_feed::sim::SimMarket;
use tickgate_feed::source::{Batch, Source, SourceStats};
use tickgate_feed::tcp::{Mode as TcpMode, TcpSource};

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, SOURCE_KINDS, SourceConfig};
use crate::liveness::{Fault, Liveness, Part, panic_message};
use crate::metrics::Telemetry;
use crate::reactor::{FetchLink, Reactor, ReactorSetup, WAKER};
use crate::stats::ReactorStats;
use crate::tls::Tls;
use tickgate_bus::{BusRole, BusStats};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::CertError),
    #[error("cannot start {what}: {source}")]
    Thread { what: &'static str, source: std::io::Error },
    #[error("feed file {path}: {source}")]
    Feed { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot start reactor {id}: {source}")]
    Reactor { id: usize, source: std::io::Error },
    #[error("cannot start source {name:?}: {source}")]
    Source { name: String, source: std::io::Error },
    #[error("bus: {0}")]
    Bus(#[from] tickgate_bus::BusError),
}

/// Everything the gateway counts, shared read-only with metrics and tests.
#[derive(Debug, Clone)]
pub struct GatewayStats {
    pub ingest: Arc<IngestStats>,
    pub reactors: Vec<Arc<ReactorStats>>,
    /// One per reactor: the ingest side of its channel.
    pub links: Vec<Arc<LinkStats>>,
    /// The bus of a cluster's publisher or edge.
    pub bus: Option<Arc<BusStats>>,
}

/// A running gateway. Dropping it shuts it down.
#[derive(Debug)]
pub struct Gateway {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    symbols: Arc<SymbolTable>,
    stats: GatewayStats,
    telemetry: Arc<Telemetry>,
    liveness: Arc<Liveness>,
    threads: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Validates `config`, binds the listeners and starts every thread. A reactor that cannot
    /// start fails the start.
    pub fn start(config: Config) -> Result<Self, StartError> {
        Self::launch(config, false)
    }

    /// [`Gateway::start`], with a hook through which [`Gateway::inject_fault`] can make a thread
    /// fail (the ingest thread's first source is wrapped to panic on demand). For tests of what
    /// a failure does to the process.
    #[doc(hidden)]
    pub fn start_with_fault_hook(config: Config) -> Result<Self, StartError> {
        Self::launch(config, true)
    }

    fn launch(config: Config, fault_hook: bool) -> Result<Self, StartError> {
        config.validate()?;
        let config = Arc::new(config);
        let symbols = Arc::new(config.symbol_table()?);
        let edge = config.bus.role == BusRole::Edge;
        // An edge's one source is the stream.
        let source_configs = if edge { Vec::new() } else { config.feed.sources() };
        let reactors = config.reactor_count();
        let listeners = bind_listeners(config.server.listen, reactors, config.server.share_port)?;
        let local_addr =
            listeners[0].local_addr().map_err(|source| StartError::Listen { addr: config.server.listen, source })?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let thread_err = |what| move |source| StartError::Thread { what, source };

        let admin_listener = match config.server.admin_listen {
            Some(addr) => Some(bind_listeners(addr, 1, false)?.remove(0)),
            None => None,
        };
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

        let tls = match config.tls.paths() {
            Some(paths) => Some(Arc::new(Tls::new(paths, config.tls.admin, crate::tls::now_secs())?)),
            None => None,
        };
        // Every reactor's poll, waker, channel and counters first, so the telemetry that every
        // reactor serves can see all of them.
        let mut polls = Vec::with_capacity(reactors);
        let mut links = Vec::with_capacity(reactors);
        let mut inboxes = Vec::with_capacity(reactors);
        let mut wakers = Vec::with_capacity(reactors);
        let mut source_stats: Vec<Arc<SourceStats>> = source_configs
            .iter()
            .map(|c| {
                let kind = SOURCE_KINDS.iter().copied().find(|k| *k == c.source).unwrap_or("sim");
                let expected_rate = if kind == "sim" { config.sim.rate } else { 1.0 };
                Arc::new(SourceStats::new(&c.name, kind, expected_rate).with_required(c.is_required()))
            })
            .collect();
        if edge {
            source_stats.push(Arc::new(SourceStats::new("bus", "bus", 1.0)));
        }
        let bus_stats = config.bus.enabled().then(|| Arc::new(BusStats::default()));
        let mut stats = GatewayStats {
            ingest: Arc::new(IngestStats::new(source_stats)),
            reactors: Vec::new(),
            links: Vec::new(),
            bus: bus_stats.clone(),
        };
        for _ in 0..reactors {
            let poll = Poll::new().map_err(thread_err("a reactor's poll"))?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(thread_err("a reactor's waker"))?);
            let (link, inbox, link_stats) = reactor_channel(config.server.channel_capacity, waker.clone());
            polls.push(poll);
            links.push(link);
            inboxes.push(inbox);
            wakers.push(waker);
            stats.reactors.push(Arc::new(ReactorStats::default()));
            stats.links.push(link_stats);
        }
        let liveness = Arc::new(Liveness::new(shutdown.clone(), wakers.clone()));
        let telemetry = Arc::new(Telemetry {
            stats: stats.clone(),
            symbols: symbols.clone(),
            started_ns: wall_clock_ns(),
            liveness: liveness.clone(),
            tls: tls.clone(),
            connz: Default::default(),
        });
        let mut gateway = Gateway {
            local_addr,
            admin_addr,
            symbols: symbols.clone(),
            stats,
            telemetry: telemetry.clone(),
            liveness: liveness.clone(),
            threads: Vec::new(),
        };
        let mut admin_listener = admin_listener;
        let authenticator = Authenticator::from_config(&config.auth)?.map(Arc::new);
        let admission = Arc::new(Admission::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
            config.address_groups(),
        ));
        // An edge reads resumes older than its history from the stream (crate::resume_fetch).
        let mut fetch_links: Vec<Option<(FetchLink, usize)>> = (0..reactors).map(|_| None).collect();
        let in_flight = config.bus.resume_fetches_per_reactor;
        if let (true, Some(bus)) = (edge && config.bus.resume_fetch_max_events > 0 && in_flight > 0, &bus_stats) {
            let mut answers = Vec::with_capacity(reactors);
            let mut receivers = Vec::with_capacity(reactors);
            for waker in &wakers {
                // A reactor has at most `in_flight` fetches out (and some stale answers): an
                // answer that finds it full is lost, and its deadline answers the resume.
                let (tx, rx) = std::sync::mpsc::sync_channel(in_flight.saturating_mul(4));
                let waker = waker.clone();
                answers.push(tickgate_bus::fetch::AnswerTo {
                    tx,
                    wake: Box::new(move || {
                        let _ = waker.wake();
                    }),
                });
                receivers.push(rx);
            }
            let queue = reactors.saturating_mul(in_flight);
            // The thread ends once every reactor has dropped its sender.
            let (requests, _thread) =
                tickgate_bus::fetch::start(&config.bus, symbols.clone(), bus.clone(), answers, queue)?;
            for (link, answers) in fetch_links.iter_mut().zip(receivers) {
                *link = Some((FetchLink { requests: requests.clone(), answers }, in_flight));
            }
        }
        for (id, ((listener, poll), inbox)) in listeners.into_iter().zip(polls).zip(inboxes).enumerate() {
            let setup = ReactorSetup {
                id,
                poll,
                listener,
                inbox,
                symbols: symbols.clone(),
                config: config.clone(),
                stats: gateway.stats.reactors[id].clone(),
                shutdown: shutdown.clone(),
                core: if config.server.pin_cores && !cores.is_empty() { Some(cores[id % cores.len()]) } else { None },
                admin_listener: if id == 0 { admin_listener.take() } else { None },
                telemetry: telemetry.clone(),
                admission: admission.clone(),
                authenticator: authenticator.clone(),
                tls: tls.clone(),
                fetch: fetch_links[id].take(),
            };
            let (started_tx, started) = std::sync::mpsc::sync_channel(1);
            let liveness = liveness.clone();
            let handle = std::thread::Builder::new()
                .name(format!("tickgate-reactor-{id}"))
                .spawn(move || run_reactor(setup, &started_tx, &liveness))
                .map_err(thread_err("a reactor thread"))?;
            gateway.threads.push(handle);
            // Dropping `gateway` on an error stops the reactors already running.
            match started.recv() {
                Ok(Ok(())) => {}
                Ok(Err(source)) => return Err(StartError::Reactor { id, source }),
                Err(_) => return Err(StartError::Reactor { id, source: std::io::Error::other("its thread ended") }),
            }
        }
        let mut sources = Vec::with_capacity(source_configs.len());
        for (source, stats) in source_configs.iter().zip(&gateway.stats.ingest.sources) {
            sources.push(start_source(&config, source, &symbols, stats.clone())?);
        }
        if let (true, Some(bus)) = (edge, &bus_stats) {
            sources.push(Box::new(tickgate_bus::edge::start(&config.bus, symbols.clone(), bus.clone())?));
        }
        if fault_hook && !sources.is_empty() {
            let first = sources.remove(0);
            sources.insert(0, Box::new(FaultHook { inner: first, liveness: liveness.clone() }));
        }
        let recorder = match &config.feed.record_path {
            Some(path) => {
                Some(Recorder::create(path).map_err(|source| StartError::Feed { path: path.clone(), source })?)
            }
            None => None,
        };
        let mut ingest = Ingest::new(symbols.clone(), links, gateway.stats.ingest.clone());
        match (config.bus.role, &bus_stats) {
            (BusRole::Edge, _) => ingest = ingest.keeping_seq(),
            (BusRole::Publisher, Some(bus)) => {
                let started =
                    tickgate_bus::publisher::start(&config.bus, symbols.clone(), bus.clone(), wall_clock_ns())?;
                // A publisher replays nothing: it is where the stream comes from.
                bus.caught_up.store(true, std::sync::atomic::Ordering::Relaxed);
                ingest.continue_after(started.last_seqs);
                ingest = ingest.with_sink(Box::new(started.sink));
                gateway.threads.push(watch_publisher(started.thread, liveness.clone())?);
            }
            _ => {}
        }
        let batch_interval = std::time::Duration::from_micros(config.sim.batch_interval_us);
        let ingest = spawn_ingest(sources, ingest, batch_interval, recorder, shutdown)
            .map_err(thread_err("the ingest thread"))?;
        // The ingest thread is watched from outside: the thread that joins it reports its end
        // as a failure unless a stop was asked for first.
        let watch = std::thread::Builder::new()
            .name("tickgate-ingest-watch".into())
            .spawn(move || {
                let ended = ingest.join();
                if !liveness.stopping() {
                    let reason = match ended {
                        Ok(()) => "it returned".to_string(),
                        Err(payload) => panic_message(&*payload),
                    };
                    liveness.fail(Part::Ingest, reason);
                }
            })
            .map_err(thread_err("the ingest watch"))?;
        gateway.threads.push(watch);
        Ok(gateway)
    }

    /// The address the gateway listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin port's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Reads the TLS certificate and key again (SIGHUP): new handshakes present the new pair,
    /// open connections keep theirs; a pair that fails to load or check keeps the old one.
    /// `None` when TLS is off.
    pub fn reload_tls(&self) -> Option<Result<(), crate::tls::CertError>> {
        self.telemetry.tls.as_ref().map(|tls| tls.reload(crate::tls::now_secs()))
    }

    /// What /metrics and /readyz report.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Whether the gateway has failed, and why; [`Liveness::wait_for_failure`] waits for it.
    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    /// Arms a fault (only with [`Gateway::start_with_fault_hook`] for the ingest thread).
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: Fault) {
        self.liveness.inject(fault);
    }

    /// Pauses and resumes the simulated market.
    pub fn feed_control(&self) -> FeedControl {
        FeedControl::new(self.stats.ingest.clone())
    }

    pub fn symbols(&self) -> &Arc<SymbolTable> {
        &self.symbols
    }

    pub fn stats(&self) -> &GatewayStats {
        &self.stats
    }

    /// Stops accepting, sends every client close 1001 "going away", waits for the clients to
    /// take it (up to `server.shutdown_grace_ms`), and joins every thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.liveness.request_stop();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts one configured source (a network source's thread starts here).
fn start_source(
    config: &Config,
    source: &SourceConfig,
    symbols: &Arc<SymbolTable>,
    stats: Arc<SourceStats>,
) -> Result<Box<dyn Source>, StartError> {
    let resolver = || SymbolResolver::new(symbols.clone(), &source.aliases, config.universe.unknown());
    // Validated: at most MAX_SKEW_MS, so the product fits.
    let max_skew_ns = config.feed.max_skew_ms.saturating_mul(1_000_000);
    let max_seq_jump = config.feed.max_seq_jump;
    Ok(match source.source.as_str() {
        "replay" => {
            let path = source.replay_path.clone().unwrap_or_default();
            let replay =
                Replay::open_with(&path, resolver(), source.replay_speed, source.replay_loop, max_seq_jump, stats)
                    .map_err(|e| StartError::Feed { path, source: e })?;
            Box::new(replay)
        }
        "tcp" => {
            let mode = match (source.tcp_connect, source.tcp_listen) {
                (Some(addr), _) => TcpMode::Connect(addr),
                (None, Some(addr)) => TcpMode::Listen(addr),
                (None, None) => unreachable!("validated: one of them is set"),
            };
            let normalizer = Normalizer::with_resolver(resolver(), max_skew_ns).with_max_seq_jump(max_seq_jump);
            let tcp = TcpSource::start(mode, normalizer, stats, config.feed.liveness())
                .map_err(|e| StartError::Source { name: source.name.clone(), source: e })?;
            Box::new(tcp)
        }
        name @ ("binance" | "coinbase") => {
            let exchange = if name == "binance" { Exchange::Binance } else { Exchange::Coinbase };
            let mapper = ExchangeMapper::with_resolver(exchange, resolver()).with_max_seq_jump(max_seq_jump);
            let feed = ExchangeSource::start(
                exchange,
                source.exchange_url.clone().unwrap_or_default(),
                source.exchange_symbols.clone(),
                mapper,
                config.exchange_tls()?,
                stats,
                config.feed.liveness(),
            )
            .map_err(|e| StartError::Source { name: source.name.clone(), source: e })?;
            Box::new(feed)
        }
        _ => Box::new(SimMarket::new(&config.sim, symbols)),
    })
}

/// Joins the publisher's bus thread; its end with an error (fenced by another publisher, the
/// stream unreadable) fails the gateway.
fn watch_publisher(
    thread: JoinHandle<Result<(), tickgate_bus::publisher::PublishFailure>>,
    liveness: Arc<Liveness>,
) -> Result<JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name("tickgate-bus-watch".into())
        .spawn(move || {
            let reason = match thread.join() {
                Ok(Ok(())) => return,
                Ok(Err(failure)) => failure.to_string(),
                Err(payload) => panic_message(&*payload),
            };
            tracing::error!(%reason, "the bus publisher stopped");
            liveness.fail(Part::Bus, reason);
        })
        .map_err(|source| StartError::Thread { what: "the bus watch", source })
}

/// Runs one reactor thread: reports whether it started, and turns its unexpected end (a panic,
/// a failed `poll`) into the gateway's failure, then closes what it can of its own connections
/// (1011, admission slots given back).
fn run_reactor(setup: ReactorSetup, started: &std::sync::mpsc::SyncSender<std::io::Result<()>>, liveness: &Liveness) {
    let id = setup.id;
    let mut reactor = match Reactor::new(setup) {
        Ok(reactor) => reactor,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let _ = started.send(Ok(()));
    let reason = match panic::catch_unwind(AssertUnwindSafe(|| reactor.run())) {
        // Only a stop ends the loop without an error.
        Ok(Ok(())) => return,
        Ok(Err(e)) => format!("poll failed: {e}"),
        Err(payload) => panic_message(&*payload),
    };
    liveness.fail(Part::Reactor(id), reason);
    if panic::catch_unwind(AssertUnwindSafe(|| reactor.abandon())).is_err() {
        tracing::error!(reactor = id, "closing its connections failed too; they are dropped");
    }
}

/// The first source of a gateway started with the fault hook: it panics, on the ingest thread,
/// once [`Fault::IngestPanic`] is armed.
struct FaultHook {
    inner: Box<dyn Source>,
    liveness: Arc<Liveness>,
}

impl Source for FaultHook {
    fn poll(&mut self, now: std::time::Duration, now_ns: u64, max: usize, out: &mut Batch) -> usize {
        if self.liveness.take_ingest_fault() {
            panic!("injected fault");
        }
        self.inner.poll(now, now_ns, max, out)
    }

    fn next_due(&self) -> Option<std::time::Duration> {
        self.inner.next_due()
    }

    fn is_up(&self) -> bool {
        self.inner.is_up()
    }

    fn set_waker(&mut self, waker: tickgate_feed::source::IngestWaker) {
        self.inner.set_waker(waker);
    }
}

/// The listening sockets of `addr`, one per reactor (see ARCHITECTURE.md, "One listener per
/// reactor").
///
/// By default there is one socket, bound without `SO_REUSEPORT`, so the kernel itself refuses
/// the address to anyone else, atomically (two processes that both bind with `SO_REUSEADDR`
/// race at `listen`, and only one wins); each reactor gets a duplicate of its descriptor to
/// register in its own poll and accept from. With `share_port` (`server.share_port`), each
/// reactor gets a socket of its own with `SO_REUSEPORT`, and other processes of the same user
/// may join the port on purpose: the kernel spreads new connections over all of them.
fn bind_listeners(addr: SocketAddr, count: usize, share_port: bool) -> Result<Vec<TcpListener>, StartError> {
    let listen_err = |source| StartError::Listen { addr, source };
    let bind = |at: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(share_port)?;
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        socket.listen(4096)?;
        Ok(socket.into())
    };
    let first = bind(addr).map_err(listen_err)?;
    // With port 0, the first bind picks the port and the others join it.
    let bound = first.local_addr().map_err(listen_err)?;
    let others = (1..count)
        .map(|_| if share_port { bind(bound) } else { first.try_clone() })
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(listen_err)?;
    Ok(std::iter::once(first).chain(others).map(TcpListener::from_std).collect())
}
