//! `promtool check metrics` accepts a live /metrics: the text format, the histograms, names and
//! help texts as Prometheus' own linter wants them. promtool comes with Debian's `prometheus`
//! package (scripts/test.sh installs it where missing); without it this test fails and says so.

use std::io::Write;
use std::process::{Command, Stdio};

use tickgate_testkit::{TestClient, eventually, http_request, metric, start_gateway};

#[test]
fn promtool_accepts_a_live_scrape() {
    let gateway = start_gateway(|_| {});
    let addr = gateway.local_addr();
    // Traffic, so the histograms and the counters by label have values.
    let mut client = TestClient::connect(addr);
    let names: Vec<String> = gateway.symbols().iter().take(3).map(|(_, s)| s.name.to_string()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    client.subscribe(&names);
    for _ in 0..50 {
        client.recv();
    }
    client.send_text("nonsense");
    eventually("deliveries timed", || metric(addr, "tickgate_delivery_latency_seconds_count") > Some(0.0));

    let response = http_request(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let body = &response[response.find("\r\n\r\n").expect("head ends") + 4..];
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => panic!(
            "cannot run promtool ({e}): install it (Debian: apt-get install prometheus; scripts/test.sh does) \
             — this test does not skip"
        ),
    };
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");
}
