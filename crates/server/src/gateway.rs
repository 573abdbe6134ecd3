//! Wiring: the symbol universe, the listeners, the reactors and the ingest thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
use tickgate_feed::source::{Source, SourceStats};
use tickgate_feed::tcp::{Mode as TcpMode, TcpSource};

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, SOURCE_KINDS, SourceConfig};
use crate::metrics::Telemetry;
use crate::reactor::{Reactor, ReactorSetup, WAKER};
use crate::stats::ReactorStats;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start {what}: {source}")]
    Thread { what: &'static str, source: std::io::Error },
    #[error("feed file {path}: {source}")]
    Feed { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot start source {name:?}: {source}")]
    Source { name: String, source: std::io::Error },
}

/// Everything the gateway counts, shared read-only with metrics and tests.
#[derive(Debug, Clone)]
pub struct GatewayStats {
    pub ingest: Arc<IngestStats>,
    pub reactors: Vec<Arc<ReactorStats>>,
    /// One per reactor: the ingest side of its channel.
    pub links: Vec<Arc<LinkStats>>,
}

/// A running gateway. Dropping it shuts it down.
#[derive(Debug)]
pub struct Gateway {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    symbols: Arc<SymbolTable>,
    stats: GatewayStats,
    telemetry: Arc<Telemetry>,
    shutdown: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Validates `config`, binds the listeners and starts every thread.
    pub fn start(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        let config = Arc::new(config);
        let symbols = Arc::new(config.universe.build(&config.sim)?);
        let source_configs = config.feed.sources();
        let reactors = config.reactor_count();
        let listeners = bind_reuseport(config.server.listen, reactors)?;
        let local_addr =
            listeners[0].local_addr().map_err(|source| StartError::Listen { addr: config.server.listen, source })?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let thread_err = |what| move |source| StartError::Thread { what, source };

        let admin_listener = match config.server.admin_listen {
            Some(addr) => Some(bind_reuseport(addr, 1)?.remove(0)),
            None => None,
        };
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

        // Every reactor's poll, waker, channel and counters first, so the telemetry that every
        // reactor serves can see all of them.
        let mut polls = Vec::with_capacity(reactors);
        let mut links = Vec::with_capacity(reactors);
        let mut inboxes = Vec::with_capacity(reactors);
        let mut wakers = Vec::with_capacity(reactors);
        let source_stats = source_configs
            .iter()
            .map(|c| {
                let kind = SOURCE_KINDS.iter().copied().find(|k| *k == c.source).unwrap_or("sim");
                let expected_rate = if kind == "sim" { config.sim.rate } else { 1.0 };
                Arc::new(SourceStats::new(&c.name, kind, expected_rate))
            })
            .collect();
        let mut stats =
            GatewayStats { ingest: Arc::new(IngestStats::new(source_stats)), reactors: Vec::new(), links: Vec::new() };
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
        let telemetry =
            Arc::new(Telemetry { stats: stats.clone(), symbols: symbols.clone(), started_ns: wall_clock_ns() });
        let mut gateway = Gateway {
            local_addr,
            admin_addr,
            symbols: symbols.clone(),
            stats,
            telemetry: telemetry.clone(),
            shutdown: shutdown.clone(),
            wakers,
            threads: Vec::new(),
        };
        let mut admin_listener = admin_listener;
        let authenticator = Authenticator::from_config(&config.auth)?.map(Arc::new);
        let admission = Arc::new(Admission::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
            config.address_groups(),
        ));
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
            };
            let handle = std::thread::Builder::new()
                .name(format!("tickgate-reactor-{id}"))
                .spawn(move || match Reactor::new(setup) {
                    Ok(reactor) => reactor.run(),
                    Err(e) => tracing::error!(reactor = id, error = %e, "reactor failed to start"),
                })
                .map_err(thread_err("a reactor thread"))?;
            gateway.threads.push(handle);
        }
        let mut sources = Vec::with_capacity(source_configs.len());
        for (source, stats) in source_configs.iter().zip(&gateway.stats.ingest.sources) {
            sources.push(start_source(&config, source, &symbols, stats.clone())?);
        }
        let recorder = match &config.feed.record_path {
            Some(path) => {
                Some(Recorder::create(path).map_err(|source| StartError::Feed { path: path.clone(), source })?)
            }
            None => None,
        };
        let ingest = Ingest::new(symbols.clone(), links, gateway.stats.ingest.clone());
        let batch_interval = std::time::Duration::from_micros(config.sim.batch_interval_us);
        gateway.threads.push(
            spawn_ingest(sources, ingest, batch_interval, recorder, shutdown)
                .map_err(thread_err("the ingest thread"))?,
        );
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

    /// What /metrics and /readyz report.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
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
        self.shutdown.store(true, Ordering::Relaxed);
        for waker in &self.wakers {
            let _ = waker.wake();
        }
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
    let max_skew_ns = config.feed.max_skew_ms * 1_000_000;
    Ok(match source.source.as_str() {
        "replay" => {
            let path = source.replay_path.clone().unwrap_or_default();
            let rejected = stats.rejected.clone();
            let replay =
                Replay::open_with(&path, resolver(), source.replay_speed, source.replay_loop, rejected, &source.name)
                    .map_err(|e| StartError::Feed { path, source: e })?;
            Box::new(replay)
        }
        "tcp" => {
            let mode = match (source.tcp_connect, source.tcp_listen) {
                (Some(addr), _) => TcpMode::Connect(addr),
                (None, Some(addr)) => TcpMode::Listen(addr),
                (None, None) => unreachable!("validated: one of them is set"),
            };
            let normalizer = Normalizer::with_resolver(resolver(), max_skew_ns);
            let tcp = TcpSource::start(mode, normalizer, stats)
                .map_err(|e| StartError::Source { name: source.name.clone(), source: e })?;
            Box::new(tcp)
        }
        name @ ("binance" | "coinbase") => {
            let exchange = if name == "binance" { Exchange::Binance } else { Exchange::Coinbase };
            let mapper = ExchangeMapper::with_resolver(exchange, resolver());
            let feed = ExchangeSource::start(
                exchange,
                source.exchange_url.clone().unwrap_or_default(),
                source.exchange_symbols.clone(),
                mapper,
                config.exchange_tls()?,
                stats,
            )
            .map_err(|e| StartError::Source { name: source.name.clone(), source: e })?;
            Box::new(feed)
        }
        _ => Box::new(SimMarket::new(&config.sim, symbols)),
    })
}

/// One listening socket per reactor on the same address, with SO_REUSEPORT: the kernel spreads
/// new connections over them, and no accepted socket ever crosses threads.
///
/// SO_REUSEPORT would also let a second gateway join a port that one already serves, silently
/// splitting its clients: a plain bind first makes sure nobody listens there.
fn bind_reuseport(addr: SocketAddr, count: usize) -> Result<Vec<TcpListener>, StartError> {
    if addr.port() != 0 {
        let listen_err = |source| StartError::Listen { addr, source };
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(listen_err)?;
        probe.set_reuse_address(true).map_err(listen_err)?;
        probe.bind(&addr.into()).map_err(listen_err)?;
    }
    let mut bound = addr;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let listen_err = |source| StartError::Listen { addr, source };
        let socket = Socket::new(Domain::for_address(bound), Type::STREAM, Some(Protocol::TCP)).map_err(listen_err)?;
        socket.set_reuse_address(true).map_err(listen_err)?;
        socket.set_reuse_port(true).map_err(listen_err)?;
        socket.set_nonblocking(true).map_err(listen_err)?;
        socket.bind(&bound.into()).map_err(listen_err)?;
        socket.listen(4096).map_err(listen_err)?;
        let std_listener: std::net::TcpListener = socket.into();
        // With port 0, the first bind picks the port and the others join it.
        bound = std_listener.local_addr().map_err(listen_err)?;
        listeners.push(TcpListener::from_std(std_listener));
    }
    Ok(listeners)
}
