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

use tickgate_loadtest::metrics;
use tickgate_loadtest::report::{self, Step, Sweep};
use tickgate_loadtest::run::{self, Pick, RunParams};
use tickgate_loadtest::tls::TlsClient;
use tickgate_loadtest::verdict::{self, Criteria};

/// The columns of the table `run` and `sweep` print, for `--help`.
const COLUMNS: &str = "\
Output: one table line per step (docs/LOADTEST.md explains each figure):
  rate/s       the server's tick rate: --rate/--rates, or read from its /metrics
  expected/s   deliveries/s to the reading clients if nothing were lost:
               rate x N x k / S x (1 - slow share)
  delivered/s  trades and quotes the reading clients received per second
  p50..max us  latency from the server's gw_ts to receipt, in microseconds
  lost         events skipped with no gap or conflation to account for them
  cpu ns/d     the server's CPU time per delivered event, in ns
               (needs --server-cmd or --server-pid)
  gen          the load generator's own CPU, as a share of one core
               (90% or more: the step is gen-bound, its figures are the generator's)
  verdict      passed, failed, gen-bound or errored; the reasons follow the line
Then a verdict in words, and the JSON file's path.
Exit status: 0 a step passed, 2 none did (the run failed its criteria), 1 an error.";

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load generator and benchmark reporter for tickgate",
    long_about = "Load generator and benchmark reporter for tickgate: opens many WebSocket clients \
                  that subscribe to a market-data server (tickgate, or a peer speaking its messages), \
                  measures deliveries, latency, loss, CPU and memory, and judges the run. \
                  See docs/LOADTEST.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print the first N symbols of the simulated universe, one per line (what -s picks from;
    /// give them to a peer server as its universe).
    Symbols {
        /// How many symbols.
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// One measured run against a running server (or one --server-cmd starts), judged.
    #[command(after_help = COLUMNS)]
    Run {
        #[command(flatten)]
        load: LoadArgs,
        /// The server's tick rate, for expected/s (and {rate} of --server-cmd). Unset: read from
        /// the gateway's /metrics (tickgate_ticks_ingested_total over the run) at
        /// --metrics-addr; with --server-cmd, 10000.
        #[arg(long)]
        rate: Option<f64>,
        /// Where the gateway serves /metrics, to read its tick rate when --rate is not given
        /// (its server.admin_listen, if it has one). Default: --addr.
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<SocketAddr>,
    },
    /// Runs at each rate in turn, restarting the server each time.
    #[command(after_help = COLUMNS)]
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
    /// Combine the results of several loadtest processes run at the same time (one process
    /// holds at most ~19,900 sockets) into one: counts summed, latency from the merged
    /// histograms, the verdict judged again on the whole.
    #[command(after_help = COLUMNS)]
    Combine {
        /// The processes' JSON files (`--out` of each run).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Name of the combined result.
        #[arg(long, default_value = "combined")]
        name: String,
        /// Where to write the combined JSON.
        #[arg(long, default_value = "loadtest/results/combined.json")]
        out: PathBuf,
    },
    /// Compare sweeps: a Markdown table (ratios against the first) and an SVG plot.
    Compare {
        /// Sweep JSON files; the first is the baseline.
        files: Vec<PathBuf>,
        /// Write a plot of p99 latency against delivered events per second here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Write the Markdown table here too (it is always printed).
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Server address (the WebSocket endpoint is /ws). Give it several times (or comma-separated)
    /// to spread the connections over several gateways, round-robin.
    #[arg(long, default_value = "127.0.0.1:9100", value_delimiter = ',', action = clap::ArgAction::Append)]
    addr: Vec<SocketAddr>,
    /// Speak wss:// (TLS) instead of ws://.
    #[arg(long)]
    tls: bool,
    /// With --tls: a PEM file of CA certificates to trust besides the usual roots (e.g. the test
    /// CA of scripts/make-test-cert.sh). Implies --tls.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// With --tls: the name the server's certificate must carry. Default: the IP address of the
    /// first --addr.
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
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
    /// Share of the reading clients dropped (a reset, no close) and reconnected with a resume
    /// in each round of the window: the last seq held of each symbol. Each resumed stream must
    /// go on with no seq missing or repeated, or say what it will not get (a gap `history` or
    /// `ahead` and a snapshot).
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    resume_share: f64,
    /// Seconds between two rounds of drops, from the start of the window.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    resume_every: f64,
    /// Connections opened per second (0 = as fast as possible: a connect storm).
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// Local source addresses to spread the connections over (for each --addr in turn), e.g.
    /// 127.0.0.2,127.0.0.3: each pair of source and server address takes ~28,000 connections.
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
    /// Seed of the clients' symbol picks and churn: the same seed gives the same subscriptions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress display (a live bar on a terminal, a line a second otherwise).
    #[arg(long)]
    quiet: bool,
    /// Offer permessage-deflate (as a browser does) and inflate what comes compressed; the
    /// results' `wire` says what a tick, a snapshot and a symbol list cost on the wire, and what
    /// inflating cost the load generator.
    #[arg(long)]
    deflate: bool,
    /// After each window, measure the wire size of a snapshot and of a list_symbols reply with
    /// one more connection (with --deflate, compressed).
    #[arg(long)]
    wire_probe: bool,
}

impl LoadArgs {
    /// The first server address (where --server-cmd listens, and /metrics is read by default).
    fn first_addr(&self) -> SocketAddr {
        self.addr.first().copied().unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9100)))
    }

    /// The TLS client, when the run speaks wss://.
    fn tls_client(&self) -> Result<Option<TlsClient>, String> {
        if !self.tls && self.ca.is_none() {
            return Ok(None);
        }
        let name = self.server_name.clone().unwrap_or_else(|| self.first_addr().ip().to_string());
        TlsClient::new(self.ca.as_deref(), &name).map(Some)
    }
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
        Cmd::Run { load, rate, metrics_addr } => match (rate, &load.server_cmd) {
            (Some(rate), _) => sweep(&load, &[rate], false, None),
            (None, Some(_)) => sweep(&load, &[DEFAULT_RATE], false, None),
            (None, None) => sweep(&load, &[f64::NAN], false, Some(metrics_addr.unwrap_or(load.first_addr()))),
        },
        Cmd::Sweep { load, rates, stop_on_fail } => sweep(&load, &rates, stop_on_fail, None),
        Cmd::Combine { files, name, out } => combine(&files, &name, &out),
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

/// The tick rate a server started by `run --server-cmd` is given when --rate is not.
const DEFAULT_RATE: f64 = 10_000.0;

/// Runs each rate in turn. With `rate_from`, the single rate is read from the gateway's
/// /metrics at that address over the run instead.
fn sweep(load: &LoadArgs, rates: &[f64], stop_on_fail: bool, rate_from: Option<SocketAddr>) -> Result<Outcome, String> {
    if !(0.0..=1.0).contains(&load.resume_share) {
        return Err(format!("--resume-share must be between 0 and 1, got {}", load.resume_share));
    }
    if !(load.resume_every.is_finite() && load.resume_every > 0.0) {
        return Err(format!("--resume-every must be a positive number of seconds, got {}", load.resume_every));
    }
    if let Some(core) = load.pin_core {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        match cores.iter().find(|c| c.id == core) {
            Some(&id) if core_affinity::set_for_current(id) => {}
            _ => eprintln!("warning: could not pin the load generator to core {core}"),
        }
    }
    let tls = load.tls_client()?;
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
    let expected_at = |rate: f64| {
        rate * load.connections as f64 * (load.per_client.min(load.symbols) as f64) / load.symbols as f64
            * (1.0 - load.slow_share)
    };
    for &rate in rates {
        let before = match rate_from {
            Some(at) => Some((
                metrics::ticks_ingested(at).map_err(|e| format!("{e}; give the tick rate with --rate"))?,
                Instant::now(),
            )),
            None => None,
        };
        let server = match &load.server_cmd {
            Some(cmd) => {
                let cmd = cmd
                    .replace("{port}", &load.first_addr().port().to_string())
                    .replace("{rate}", &format!("{rate}"))
                    .replace("{symbols}", &load.symbols.to_string())
                    .replace("{symbols_file}", &symbols_file.display().to_string());
                Server::start(&cmd, load.first_addr()).map(Some)
            }
            None => Ok(None),
        };
        let params = RunParams {
            addrs: load.addr.clone(),
            tls: tls.clone(),
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
            deflate: load.deflate,
            wire_probe: load.wire_probe,
            resume_share: load.resume_share,
            resume_every: Duration::from_secs_f64(load.resume_every),
        };
        let shown_rate = if rate_from.is_some() { "read from /metrics".to_string() } else { format!("{rate}/s") };
        eprintln!(
            "{}: rate {shown_rate}, {} connections x {} of {} symbols",
            load.name, load.connections, load.per_client, load.symbols
        );
        let measured = server.and_then(|server| {
            let measured = run::run(&params).map_err(|e| e.to_string());
            drop(server);
            measured
        });
        let rate = match (rate_from, before) {
            (Some(at), Some((count, since))) => {
                let after = metrics::ticks_ingested(at).map_err(|e| format!("{e}; give the tick rate with --rate"))?;
                after.saturating_sub(count) as f64 / since.elapsed().as_secs_f64()
            }
            _ => rate,
        };
        let expected = expected_at(rate);
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
    } else if let Some(step) = result.steps.first() {
        println!("{}", verdict_in_words(step, load.p99_bound_ms));
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
            if result.steps.len() > 1 {
                println!("{}: no step passed", load.name);
            }
            Ok(Outcome::NothingPassed)
        }
    }
}

/// One run's verdict as a sentence.
fn verdict_in_words(step: &Step, p99_bound_ms: f64) -> String {
    let r = &step.result;
    let figure =
        |path: &[&str]| path.iter().try_fold(r, |v, key| v.get(key)).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    let delivered = figure(&["delivered_per_s"]);
    let share = if step.expected_per_s > 0.0 { 100.0 * delivered / step.expected_per_s } else { 0.0 };
    let measured = format!(
        "{delivered:.0} deliveries/s, {share:.0}% of the {:.0}/s expected at a tick rate of {:.0}/s; p99 {:.2} ms \
         (bound {p99_bound_ms} ms)",
        step.expected_per_s,
        step.rate,
        figure(&["latency_us", "p99"]) / 1000.0,
    );
    let why = step.verdict.reasons.join("; ");
    match step.verdict.status {
        _ if step.ok => format!("verdict: PASSED. {measured}; nothing lost{}.", resumed_in_words(r)),
        verdict::Status::GeneratorBound => format!(
            "verdict: FAILED (gen-bound): every check passed, but the load generator was saturated, so the \
             figures are its own. {measured}. {why}."
        ),
        _ => format!("verdict: FAILED. {measured}. Why: {why}."),
    }
}

/// How the resumes went, for the verdict's sentence; empty for a run that resumed nothing.
fn resumed_in_words(r: &serde_json::Value) -> String {
    let resume = &r["resume"];
    if !resume.is_object() {
        return String::new();
    }
    let n = |key: &str| resume[key].as_u64().unwrap_or(0);
    format!(
        "; {} reconnects resumed {} subscriptions: {} whole, {} with an announced gap",
        n("reconnects"),
        n("asked"),
        n("whole"),
        n("with_gap")
    )
}

/// Reads sweep JSON files.
fn read_sweeps(files: &[PathBuf]) -> Result<Vec<Sweep>, String> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))
        })
        .collect()
}

fn combine(files: &[PathBuf], name: &str, out: &Path) -> Result<Outcome, String> {
    let sweeps = read_sweeps(files)?;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let combined = tickgate_loadtest::combine::combine(&sweeps, &names, name).map_err(|e| e.to_string())?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&combined).map_err(|e| e.to_string())?)
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    print!("{}", report::step_table(&combined));
    for step in &combined.steps {
        for reason in &step.verdict.reasons {
            println!("  - {reason}");
        }
    }
    if let [step] = combined.steps.as_slice() {
        println!("{}", verdict_in_words(step, combined.p99_bound_us / 1000.0));
    }
    println!("{} processes, {} connections: {}", files.len(), combined.connections, out.display());
    Ok(if combined.best().is_some() { Outcome::Done } else { Outcome::NothingPassed })
}

fn compare(files: &[PathBuf], svg: Option<&Path>, markdown: Option<&Path>) -> Result<(), String> {
    let sweeps = read_sweeps(files)?;
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
