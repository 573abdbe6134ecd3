//! The `tickgate` binary: command line, configuration, logging, signals. It only wires; the
//! gateway itself is tickgate-server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use std::io::{IsTerminal, Write};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook::iterator::Signals;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tickgate_server::{Activity, Config, Failure, Fault, Gateway, Liveness};

/// Exit status after a thread of the gateway failed (sysexits' EX_SOFTWARE).
const FAILED: u8 = 70;

/// How much longer than `server.shutdown_grace_ms` the shutdown after a failure may take
/// before the process exits anyway.
const FAILURE_EXIT_MARGIN: Duration = Duration::from_secs(5);

/// For tests of what a failure does: names a fault (`reactor-panic:N`, `reactor-poll:N`,
/// `ingest-panic`) that SIGUSR2 then injects. Unset, SIGUSR2 keeps its default action.
const FAULT_VARIABLE: &str = "TICKGATE_TEST_FAULT";

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Market-data fan-out gateway: ticks from upstream feeds to WebSocket subscribers.
///
/// With no arguments it runs on the built-in simulated market at 127.0.0.1:8080.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML); see config/default.toml for every setting.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate FILE, print the effective configuration as TOML (secrets redacted; relative
    /// paths made relative to the working folder) and exit; warnings go to standard error.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Listen address (overrides server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Reactor threads, 0 = one per core (overrides server.reactors).
    #[arg(long, value_name = "N")]
    reactors: Option<usize>,
    /// Simulated events per second (overrides sim.rate).
    #[arg(long, value_name = "RATE")]
    sim_rate: Option<f64>,
    /// Simulated universe size (overrides sim.symbols).
    #[arg(long, value_name = "N")]
    sim_symbols: Option<usize>,
    /// How simulated events spread over symbols: zipf or uniform (overrides sim.activity).
    #[arg(long, value_name = "ACTIVITY", value_parser = parse_activity)]
    sim_activity: Option<Activity>,
    /// Seed of the simulated market (overrides sim.seed).
    #[arg(long, value_name = "SEED")]
    sim_seed: Option<u64>,
    /// Log level or filter (overrides log.level; RUST_LOG overrides both).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Role in a cluster on NATS JetStream: off, publisher or edge (overrides bus.role).
    #[arg(long, value_name = "ROLE", value_parser = parse_bus_role)]
    bus_role: Option<tickgate_bus::BusRole>,
    /// NATS server URL, e.g. nats://127.0.0.1:4222 (overrides bus.url).
    #[arg(long, value_name = "URL")]
    bus_url: Option<String>,
    /// JetStream stream of the cluster (overrides bus.stream).
    #[arg(long, value_name = "NAME")]
    bus_stream: Option<String>,
}

fn parse_bus_role(text: &str) -> Result<tickgate_bus::BusRole, String> {
    use tickgate_bus::BusRole;
    match text {
        "off" => Ok(BusRole::Off),
        "publisher" => Ok(BusRole::Publisher),
        "edge" => Ok(BusRole::Edge),
        other => Err(format!("{other:?} is not a role: off, publisher or edge")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load(&args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("tickgate: {message}");
            return ExitCode::from(2);
        }
    };
    if args.check_config.is_some() {
        for warning in config.warnings() {
            eprintln!("tickgate: warning: {warning}");
        }
        let shown = match config.to_redacted_toml() {
            Ok(shown) => shown,
            Err(e) => {
                eprintln!("tickgate: {e}");
                return ExitCode::from(2);
            }
        };
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = write!(std::io::stdout(), "{shown}");
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log.level);
    for warning in config.warnings() {
        tracing::warn!(%warning, "configuration warning");
    }
    let fault = match fault_from_env() {
        Ok(fault) => fault,
        Err(message) => {
            eprintln!("tickgate: {message}");
            return ExitCode::from(2);
        }
    };
    // Before the gateway accepts anyone: a SIGTERM at any moment after the start gives every
    // client its 1001 (the signal waits in the iterator until `wait_for_stop` reads it).
    let mut watched = vec![SIGINT, SIGTERM, SIGHUP];
    watched.extend(fault.map(|_| SIGUSR2));
    let signals = match Signals::new(&watched) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("tickgate: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let started = match fault {
        Some(_) => Gateway::start_with_fault_hook(config),
        None => Gateway::start(config),
    };
    let gateway = match started {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("tickgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = gateway.local_addr();
    let sources: Vec<String> =
        gateway.stats().ingest.sources.iter().map(|s| format!("{} ({})", s.name, s.kind)).collect();
    tracing::info!(%addr, symbols = gateway.symbols().len(), sources = %sources.join(", "), "tickgate is running");
    let (ws, web) = if gateway.telemetry().tls.is_some() { ("wss", "https") } else { ("ws", "http") };
    println!("tickgate listening: WebSocket {ws}://{addr}/ws");
    println!("open {web}://{addr}");

    let events = watch(signals, gateway.liveness().clone());
    let failure = wait_for_stop(&events, &gateway, fault);
    let failed = failure.clone().map(|failure| (failure, grace + FAILURE_EXIT_MARGIN));
    std::thread::spawn(move || exit_early(&events, failed));
    let liveness = gateway.liveness().clone();
    gateway.shutdown();
    // A thread that failed during a graceful shutdown fails the exit too.
    match failure.or_else(|| liveness.failure()) {
        None => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Some(failure) => {
            tracing::error!(%failure, "stopped after a failure");
            eprintln!("tickgate: {failure}");
            ExitCode::from(FAILED)
        }
    }
}

/// The fault `TICKGATE_TEST_FAULT` names, if it is set.
fn fault_from_env() -> Result<Option<Fault>, String> {
    match std::env::var(FAULT_VARIABLE) {
        Ok(text) => text.parse().map(Some).map_err(|message| format!("{FAULT_VARIABLE}: {message}")),
        Err(_) => Ok(None),
    }
}

/// Serves until SIGTERM or SIGINT (None) or the gateway's failure; SIGHUP reloads the TLS
/// certificate (when TLS is on), SIGUSR2 injects `fault` when there is one.
fn wait_for_stop(events: &Receiver<Event>, gateway: &Gateway, fault: Option<Fault>) -> Option<Failure> {
    loop {
        match events.recv() {
            Ok(Event::Signal(SIGHUP)) => match gateway.reload_tls() {
                None => tracing::warn!(
                    "SIGHUP ignored: TLS is off, and nothing else is reloaded; restart to apply a new configuration"
                ),
                Some(Ok(())) => tracing::info!("SIGHUP: TLS certificate reloaded; new handshakes present it"),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "SIGHUP: TLS certificate NOT reloaded; the old one is still served")
                }
            },
            Ok(Event::Signal(SIGUSR2)) => {
                if let Some(fault) = fault {
                    tracing::warn!(?fault, "injecting a fault ({FAULT_VARIABLE})");
                    gateway.inject_fault(fault);
                }
            }
            Ok(Event::Signal(signal)) => {
                tracing::info!(signal, "shutting down: closing every client with 1001");
                return None;
            }
            Ok(Event::Failed(failure)) => return Some(failure),
            Err(_) => return None,
        }
    }
}

/// What the main thread waits for.
enum Event {
    Signal(i32),
    Failed(Failure),
}

/// Signals and the gateway's failure, as one stream of events.
fn watch(mut signals: Signals, liveness: Arc<Liveness>) -> Receiver<Event> {
    let (events, received) = mpsc::channel();
    let signalled = events.clone();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signalled.send(Event::Signal(signal)).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        let _ = events.send(Event::Failed(liveness.wait_for_failure()));
    });
    received
}

/// Once the shutdown has begun: a second SIGTERM or SIGINT exits at once (130). After a
/// failure the stop is already under way: the first such signal is only logged, a second one
/// exits at once, and so does a stop still running after `overrun` (a thread that is stuck);
/// both with the failure's status and line, which a supervisor must see.
fn exit_early(events: &Receiver<Event>, failed: Option<(Failure, Duration)>) {
    let deadline = failed.as_ref().map(|(_, overrun)| Instant::now() + *overrun);
    let mut signalled = false;
    loop {
        let event = match deadline {
            Some(deadline) => events.recv_timeout(deadline.saturating_duration_since(Instant::now())),
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match (event, &failed) {
            (Ok(Event::Signal(SIGINT | SIGTERM)), None) => std::process::exit(130),
            (Ok(Event::Signal(SIGINT | SIGTERM)), Some((failure, _))) if signalled => exit_failed(failure),
            (Ok(Event::Signal(signal @ (SIGINT | SIGTERM))), Some(_)) => {
                signalled = true;
                tracing::warn!(signal, "already stopping after a failure; a second signal exits at once");
            }
            (Ok(_), _) => {}
            (Err(RecvTimeoutError::Timeout), Some((failure, _))) => {
                eprintln!("tickgate: the shutdown after a failure did not finish in time; exiting");
                exit_failed(failure);
            }
            (Err(_), _) => return,
        }
    }
}

/// Exits at once with the status of a failure, saying which.
fn exit_failed(failure: &Failure) -> ! {
    eprintln!("tickgate: {failure}");
    std::process::exit(i32::from(FAILED))
}

fn load(args: &Args) -> Result<Config, String> {
    let path = args.check_config.as_ref().or(args.config.as_ref());
    let mut config = match path {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(n) = args.reactors {
        config.server.reactors = n;
    }
    if let Some(rate) = args.sim_rate {
        config.sim.rate = rate;
    }
    if let Some(n) = args.sim_symbols {
        config.sim.symbols = n;
    }
    if let Some(activity) = args.sim_activity {
        config.sim.activity = activity;
    }
    if let Some(seed) = args.sim_seed {
        config.sim.seed = seed;
    }
    if let Some(role) = args.bus_role {
        config.bus.role = role;
    }
    if let Some(url) = &args.bus_url {
        config.bus.url = url.clone();
    }
    if let Some(stream) = &args.bus_stream {
        config.bus.stream = stream.clone();
    }
    if let Some(level) = &args.log_level {
        config.log.level = level.clone();
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn parse_activity(text: &str) -> Result<Activity, String> {
    match text {
        "zipf" => Ok(Activity::Zipf),
        "uniform" => Ok(Activity::Uniform),
        other => Err(format!("{other:?} is not an activity: use zipf or uniform")),
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
}
