//! Connections spread over several gateways (`--addr` twice) and several local source addresses
//! (`--source-addrs`), and the results of two load-generator processes combined into one
//! report (`combine`), as a cluster run past one process's sockets needs.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tickgate_server::Gateway;
use tickgate_testkit::{http_request, start_gateway};

const BIN: &str = env!("CARGO_BIN_EXE_tickgate-loadtest");

fn gateway() -> Gateway {
    start_gateway(|c| {
        c.sim.rate = 400.0;
        c.sim.activity = tickgate_feed::sim::Activity::Uniform;
    })
}

fn loadtest(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(["run", "-k", "5", "-s", "50", "--rate", "400", "--quiet", "--warmup", "1", "--duration", "2"]);
    command.args(["--drain", "3", "--p99-bound-ms", "5000"]).args(args);
    command
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The client addresses /connz lists on `gateway`.
fn clients_of(gateway: SocketAddr) -> Vec<String> {
    let response = http_request(gateway, "GET /connz?limit=1000 HTTP/1.1\r\nConnection: close\r\n\r\n");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let connz: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let rows = connz["connections"].as_array().cloned().unwrap_or_default();
    rows.iter().filter_map(|c| c["client"].as_str().map(|a| a.rsplit_once(':').unwrap().0.to_string())).collect()
}

#[test]
fn connections_spread_over_gateways_and_source_addresses() {
    let (a, b) = (gateway(), gateway());
    let (addr_a, addr_b) = (a.local_addr().to_string(), b.local_addr().to_string());
    let out = std::env::temp_dir().join(format!("tickgate-loadtest-many-{}", std::process::id()));
    let child = loadtest(&["-n", "8", "--addr", &addr_a, "--addr", &addr_b, "--source-addrs", "127.0.0.2,127.0.0.3"])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While it runs: four clients on each gateway, two from each source address.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = (Vec::new(), Vec::new());
    while Instant::now() < deadline && (seen.0.len() < 4 || seen.1.len() < 4) {
        std::thread::sleep(Duration::from_millis(100));
        seen = (clients_of(a.local_addr()), clients_of(b.local_addr()));
    }
    for clients in [&mut seen.0, &mut seen.1] {
        clients.sort();
        assert_eq!(*clients, ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"]);
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let _ = std::fs::remove_dir_all(&out);
    a.shutdown();
    b.shutdown();
}

#[test]
fn two_processes_combine_into_one_report() {
    let (a, b) = (gateway(), gateway());
    let out = std::env::temp_dir().join(format!("tickgate-loadtest-combine-{}", std::process::id()));
    let spawn = |gateway: &Gateway, name: &str| {
        loadtest(&["-n", "6", "--addr", &gateway.local_addr().to_string(), "--name", name])
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(&a, "first"), spawn(&b, "second"));
    for child in [first, second] {
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    }
    let combined = out.join("all.json");
    let output = Command::new(BIN)
        .arg("combine")
        .args([out.join("first.json"), out.join("second.json")])
        .args(["--name", "all", "--out"])
        .arg(&combined)
        .output()
        .unwrap();
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert!(shown.contains("verdict: PASSED.") && shown.contains("2 processes, 12 connections"), "{shown}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&combined).unwrap()).unwrap();
    let result = &json["steps"][0]["result"];
    assert_eq!((json["connections"].as_u64(), result["connected"].as_u64()), (Some(12), Some(12)));
    assert_eq!(result["latency_us"]["count"], result["delivered"]);
    assert_eq!(json["steps"][0]["expected_per_s"].as_f64(), Some(2.0 * 400.0 * 6.0 * 5.0 / 50.0));

    // A file that is not a result: one clear line, exit 1.
    std::fs::write(out.join("junk.json"), "{}").unwrap();
    let output =
        Command::new(BIN).arg("combine").args([out.join("first.json"), out.join("junk.json")]).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("junk.json"), "{}", text(&output));
    let _ = std::fs::remove_dir_all(&out);
    a.shutdown();
    b.shutdown();
}
