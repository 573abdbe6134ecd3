//! The `tickgate` binary: command line, configuration, logging, signals. It only wires; the
//! gateway itself is tickgate-server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use std::io::{IsTerminal, Write};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tickgate_server::{Activity, Config, Gateway};

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
    /// Validate FILE, print the effective configuration, and exit.
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
        let mut shown = config.clone();
        if !shown.auth.jwt_secret.is_empty() {
            shown.auth.jwt_secret = "<redacted>".into();
        }
        for key in &mut shown.auth.api_keys {
            key.key = "<redacted>".into();
        }
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = writeln!(std::io::stdout(), "{shown:#?}");
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log.level);
    let gateway = match Gateway::start(config) {
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
    println!("tickgate listening: WebSocket ws://{addr}/ws");
    println!("open http://{addr}");

    // SIGHUP (a closed terminal, or an operator) shuts down gracefully too.
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("tickgate: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signal = signals.forever().next();
    tracing::info!(?signal, "shutting down: closing every client with 1001");
    // A second signal exits at once.
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            std::process::exit(130);
        }
    });
    gateway.shutdown();
    tracing::info!("stopped");
    ExitCode::SUCCESS
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
