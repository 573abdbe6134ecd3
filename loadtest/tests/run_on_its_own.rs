//! `tickgate-loadtest run` against a gateway it did not start, as a user runs it: no `--rate`
//! (the tick rate is read from the gateway's /metrics), a verdict in words, and an exit status a
//! CI job can use.

use std::process::Command;

use tickgate_testkit::start_gateway;

const BIN: &str = env!("CARGO_BIN_EXE_tickgate-loadtest");

/// Runs `tickgate-loadtest run` with `extra` against `addr`: exit code and standard output.
fn run(addr: std::net::SocketAddr, extra: &[&str]) -> (Option<i32>, String) {
    let out = std::env::temp_dir().join(format!("tickgate-loadtest-own-{}", std::process::id()));
    let output = Command::new(BIN)
        .args(["run", "--addr", &addr.to_string(), "-n", "10", "-k", "5", "-s", "50"])
        .args(["--warmup", "1", "--duration", "3", "--drain", "3", "--out"])
        .arg(&out)
        .args(extra)
        .output()
        .expect("tickgate-loadtest runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code(), stdout + &String::from_utf8_lossy(&output.stderr))
}

/// The tick rate the verdict names.
fn rate_in(text: &str) -> f64 {
    let after = text.split("at a tick rate of ").nth(1).unwrap_or_else(|| panic!("a rate: {text}"));
    after.split('/').next().unwrap().parse().unwrap()
}

#[test]
fn the_rate_comes_from_the_gateway_and_the_exit_status_says_whether_the_run_passed() {
    let gateway = start_gateway(|c| {
        c.sim.rate = 400.0;
        c.sim.activity = tickgate_feed::sim::Activity::Uniform;
        c.server.reactors = 1;
    });
    let addr = gateway.local_addr();

    // A bound no machine can fail (a loaded one, a debug build): the run passes.
    let (code, text) = run(addr, &["--p99-bound-ms", "5000"]);
    assert_eq!(code, Some(0), "{text}");
    // Not a terminal: progress as plain lines, one a second, no carriage return.
    assert!(text.lines().any(|l| l.starts_with("measuring ") && l.contains("msgs/s=")), "{text}");
    assert!(!text.contains('\r'), "{text:?}");
    assert!(text.contains("verdict: PASSED."), "{text}");
    assert!(text.contains("tickgate: rate read from /metrics"), "{text}");
    let rate = rate_in(&text);
    assert!((300.0..=500.0).contains(&rate), "the gateway's 400/s, measured: {rate} in {text}");
    assert_eq!(text.matches("expected/s").count(), 1, "the table once: {text}");

    // A bound no server meets: the run fails its criteria, says why, and exits 2.
    let (code, text) = run(addr, &["--p99-bound-ms", "0.000001", "--quiet"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("verdict: FAILED. ") && text.contains("Why: p99 "), "{text}");

    // Given, the rate is taken as given.
    let (_, text) = run(addr, &["--p99-bound-ms", "5000", "--rate", "800", "--quiet"]);
    assert!(!text.contains("msgs/s="), "--quiet shows no progress: {text}");
    assert_eq!(rate_in(&text), 800.0, "{text}");
    gateway.shutdown();
}

#[test]
fn without_a_rate_a_server_that_has_no_metrics_is_an_error_that_says_to_give_one() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    drop(silent);
    let (code, text) = run(addr, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("/metrics") && text.contains("give the tick rate with --rate"), "{text}");
}
