//! tickgate-loadtest: drives a WebSocket market-data server (tickgate or a peer) with many
//! subscribing clients and measures deliveries, latency, loss, CPU and memory.
//!
//! `run` measures one server that is already running, or that it starts with `--server-cmd`;
//! `sweep` raises the server's tick rate step by step; `compare` turns sweeps into the report
//! table and plot; `symbols` prints the simulated universe for peers to use.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use tickgate_feed::sim::{SimConfig, universe};

use tickgate_loadtest::report::{self, Step, Sweep};
use tickgate_loadtest::run::{self, Pick, RunParams};
use tickgate_loadtest::verdict::{self, Criteria};

#[derive(Debug, Parser)]
#[command(version, about = "Load generator and benchmark reporter for tickgate")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print the first N symbols of the simulated universe, one per line.
    Symbols {
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// One measured run.
    Run {
        #[command(flatten)]
        load: LoadArgs,
        /// Tick rate to start the server with (with --server-cmd).
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
    },
    /// Runs at each rate in turn, restarting the server each time.
    Sweep {
        #[command(flatten)]
        load: LoadArgs,
        /// Tick rates, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        rates: Vec<f64>,
        /// Stop after the first step that fails.
        #[arg(long)]
        stop_on_fail: bool,
    },
    /// Compare sweeps: a Markdown table (ratios against the first) and an SVG plot.
    Compare {
        /// Sweep JSON files; the first is the baseline.
        files: Vec<PathBuf>,
        #[arg(long)]
        svg: Option<PathBuf>,
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Server address (the WebSocket endpoint is /ws).
    #[arg(long, default_value = "127.0.0.1:9100")]
    addr: SocketAddr,
    /// Name of the server in reports.
    #[arg(long, default_value = "tickgate")]
    name: String,
    /// Command that starts the server; {port}, {rate}, {symbols} and {symbols_file} are filled in.
    /// Without it, the server at --addr must already be running.
    #[arg(long)]
    server_cmd: Option<String>,
    /// PID of an already running server to measure (with --server-cmd, the started one is used).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connections.
    #[arg(long, short = 'n', default_value_t = 1000)]
    connections: usize,
    /// Symbols each client subscribes to.
    #[arg(long, short = 'k', default_value_t = 10)]
    per_client: usize,
    /// Universe size S: clients pick from the first S symbols of the simulated universe.
    #[arg(long, short = 's', default_value_t = 100)]
    symbols: usize,
    /// Pick symbols Zipf-distributed with this exponent instead of uniformly.
    #[arg(long)]
    zipf: Option<f64>,
    /// Seconds to wait after every client is subscribed.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Share of clients that stop reading when the window starts.
    #[arg(long, default_value_t = 0.0)]
    slow_share: f64,
    /// Subscription changes per second during the window (unsubscribe one symbol, subscribe
    /// another, on a random client).
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Connections opened per second (0 = as fast as possible: a connect storm).
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// Source addresses to spread connections over, e.g. 127.0.0.1,127.0.0.2.
    #[arg(long, value_delimiter = ',')]
    source_addrs: Vec<IpAddr>,
    /// Pin the load generator to this core.
    #[arg(long)]
    pin_core: Option<usize>,
    /// Slow-client policy to ask for in every subscribe (conflate, drop, disconnect); without
    /// it, the server's default. Conflated quotes pass only where the server says "conflate".
    #[arg(long)]
    policy: Option<String>,
    /// Seconds after the window for every subscription to catch up with the last seq published
    /// in it, and for the stalled clients to be read.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// p99 latency bound for a step to pass, in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    p99_bound_ms: f64,
    /// Directory for the JSON results (created if missing).
    #[arg(long, default_value = "loadtest/results")]
    out: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Symbols { count } => {
            for name in symbol_names(count) {
                println!("{name}");
            }
            Ok(Outcome::Done)
        }
        Cmd::Run { load, rate } => sweep(&load, &[rate], false),
        Cmd::Sweep { load, rates, stop_on_fail } => sweep(&load, &rates, stop_on_fail),
        Cmd::Compare { files, svg, markdown } => {
            compare(&files, svg.as_deref(), markdown.as_deref()).map(|()| Outcome::Done)
        }
    };
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::NothingPassed) => ExitCode::from(2),
        Err(e) => {
            eprintln!("tickgate-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How a command ended, when it did not fail outright.
enum Outcome {
    Done,
    /// A run or sweep in which no step passed (exit status 2).
    NothingPassed,
}

fn symbol_names(count: usize) -> Vec<String> {
    let config = SimConfig { symbols: count.max(1), ..SimConfig::default() };
    universe(&config).iter().map(|(_, s)| s.name.to_string()).collect()
}

/// A server started for one step, stopped when dropped.
struct Server(Child);

impl Server {
    fn start(cmd: &str, addr: SocketAddr) -> Result<Self, String> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {cmd}"))
            .spawn()
            .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
        let server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(addr).is_ok() {
                std::thread::sleep(Duration::from_millis(300));
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("server {cmd:?} did not listen on {addr} within 20 s"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sweep(load: &LoadArgs, rates: &[f64], stop_on_fail: bool) -> Result<Outcome, String> {
    if let Some(core) = load.pin_core {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        match cores.iter().find(|c| c.id == core) {
            Some(&id) if core_affinity::set_for_current(id) => {}
            _ => eprintln!("warning: could not pin the load generator to core {core}"),
        }
    }
    let universe = symbol_names(load.symbols);
    std::fs::create_dir_all(&load.out).map_err(|e| format!("cannot create {}: {e}", load.out.display()))?;
    let symbols_file = load.out.join(format!("symbols-{}.txt", load.symbols));
    std::fs::write(&symbols_file, universe.join("\n") + "\n").map_err(|e| e.to_string())?;
    let mut result = Sweep {
        server: load.name.clone(),
        connections: load.connections,
        symbols_per_client: load.per_client,
        universe: load.symbols,
        p99_bound_us: load.p99_bound_ms * 1000.0,
        steps: Vec::new(),
    };
    for &rate in rates {
        let expected = rate * load.connections as f64 * (load.per_client.min(load.symbols) as f64)
            / load.symbols as f64
            * (1.0 - load.slow_share);
        let server = match &load.server_cmd {
            Some(cmd) => {
                let cmd = cmd
                    .replace("{port}", &load.addr.port().to_string())
                    .replace("{rate}", &format!("{rate}"))
                    .replace("{symbols}", &load.symbols.to_string())
                    .replace("{symbols_file}", &symbols_file.display().to_string());
                Server::start(&cmd, load.addr).map(Some)
            }
            None => Ok(None),
        };
        let params = RunParams {
            addr: load.addr,
            connections: load.connections,
            symbols_per_client: load.per_client,
            universe: universe.clone(),
            pick: load.zipf.map_or(Pick::Uniform, Pick::Zipf),
            source_addrs: load.source_addrs.clone(),
            connect_rate: load.connect_rate,
            warmup: Duration::from_secs_f64(load.warmup),
            duration: Duration::from_secs_f64(load.duration),
            slow_share: load.slow_share,
            churn_per_s: load.churn,
            seed: load.seed,
            server_pid: server.as_ref().ok().and_then(|s| s.as_ref()).map(|s| s.0.id()).or(load.server_pid),
            progress: !load.quiet,
            policy: load.policy.clone(),
            drain: Duration::from_secs_f64(load.drain),
        };
        eprintln!(
            "{}: rate {rate}/s, {} connections x {} of {} symbols",
            load.name, load.connections, load.per_client, load.symbols
        );
        let measured = server.and_then(|server| {
            let measured = run::run(&params).map_err(|e| e.to_string());
            drop(server);
            measured
        });
        let step = match measured {
            Ok(measured) => {
                let verdict = verdict::judge(&measured, &Criteria::new(expected, result.p99_bound_us));
                Step::measured(rate, expected, &measured, verdict)
            }
            Err(e) => {
                eprintln!("{}: run at rate {rate} failed: {e}", load.name);
                Step::errored(rate, expected, e)
            }
        };
        let passed = step.ok;
        result.steps.push(step);
        print!(
            "{}",
            report::step_table(&Sweep { steps: vec![result.steps.last().cloned().expect("pushed")], ..result.clone() })
        );
        for reason in &result.steps.last().expect("pushed").verdict.reasons {
            println!("  - {reason}");
        }
        if !passed && stop_on_fail {
            break;
        }
    }
    let path = load.out.join(format!("{}.json", load.name));
    std::fs::write(&path, serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if result.steps.len() > 1 {
        println!("\n{}", report::step_table(&result));
    }
    println!("results: {}", path.display());
    match result.best() {
        Some(best) => {
            println!(
                "{}: highest passing rate with p99 < {} ms: {:.0} deliveries/s (tick rate {})",
                load.name,
                load.p99_bound_ms,
                best.result["delivered_per_s"].as_f64().unwrap_or(0.0),
                best.rate
            );
            Ok(Outcome::Done)
        }
        None => {
            println!("{}: no step passed", load.name);
            Ok(Outcome::NothingPassed)
        }
    }
}

fn compare(files: &[PathBuf], svg: Option<&Path>, markdown: Option<&Path>) -> Result<(), String> {
    let sweeps: Vec<Sweep> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))
        })
        .collect::<Result<_, String>>()?;
    let table = report::compare_table(&sweeps);
    print!("{table}");
    if let Some(path) = markdown {
        std::fs::write(path, &table).map_err(|e| e.to_string())?;
    }
    if let Some(path) = svg {
        std::fs::write(path, report::latency_svg(&sweeps)).map_err(|e| e.to_string())?;
    }
    Ok(())
}
