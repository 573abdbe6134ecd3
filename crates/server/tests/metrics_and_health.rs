//! /metrics reports what the gateway does, /readyz follows the feed, the admin port keeps them
//! private, and scrapes stay quick while the reactors are busy.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tickgate_server::{Fault, Gateway};
use tickgate_testkit::{TestClient, eventually, http_request, one_client_per_reactor, start_gateway, test_config};

/// Parses the Prometheus text format into "name{labels}" -> value.
fn scrape(addr: std::net::SocketAddr) -> HashMap<String, f64> {
    let response = http_request(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = &response[response.find("\r\n\r\n").expect("head ends") + 4..];
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("name value");
            (name.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("number in {l:?}")))
        })
        .collect()
}

fn sum(metrics: &HashMap<String, f64>, family: &str) -> f64 {
    metrics.iter().filter(|(k, _)| k.split('{').next() == Some(family)).map(|(_, v)| v).sum()
}

#[test]
fn metrics_exist_and_move_with_traffic() {
    let gateway = start_gateway(|_| {});
    let addr = gateway.local_addr();
    let before = scrape(addr);
    for family in [
        "tickgate_build_info",
        "tickgate_connections",
        "tickgate_connections_accepted_total",
        "tickgate_connections_closed_total",
        "tickgate_messages_sent_total",
        "tickgate_bytes_sent_total",
        "tickgate_commands_total",
        "tickgate_ticks_ingested_total",
        "tickgate_frames_built_total",
        "tickgate_conflated_total",
        "tickgate_throttled_quotes_total",
        "tickgate_dropped_total",
        "tickgate_gaps_sent_total",
        "tickgate_slow_consumer_disconnects_total",
        "tickgate_outbound_queued_bytes",
        "tickgate_channel_depth",
        "tickgate_subscriptions",
        "tickgate_symbols",
        "tickgate_feed_up",
        "tickgate_delivery_latency_seconds_bucket",
        "tickgate_fanout_batch_seconds_bucket",
        "tickgate_write_calls_total",
        "tickgate_frames_written_total",
        "tickgate_http_responses_total",
    ] {
        assert!(before.keys().any(|k| k.split('{').next() == Some(family)), "family {family} is exported");
    }
    let mut clients: Vec<TestClient> = (0..3).map(|_| TestClient::connect(addr)).collect();
    for c in &mut clients {
        c.subscribe(&["AAPL", "MSFT", "NVDA"]);
        c.send_text("nonsense");
    }
    for c in &mut clients {
        c.recv_type("error");
        for _ in 0..50 {
            c.recv();
        }
    }
    let mut after = HashMap::new();
    eventually("counters published and the latency window filled", || {
        after = scrape(addr);
        sum(&after, "tickgate_delivery_latency_seconds_count") > 0.0
    });
    // The scraping connection itself may be counted too, depending on when the gauge was taken.
    let open = sum(&after, "tickgate_connections");
    assert!((3.0..=4.0).contains(&open), "{open}");
    assert_eq!(sum(&after, "tickgate_subscriptions"), 9.0);
    assert!(sum(&after, "tickgate_messages_sent_total") >= 150.0);
    assert!(sum(&after, "tickgate_ticks_ingested_total") > sum(&before, "tickgate_ticks_ingested_total"));
    assert_eq!(after["tickgate_commands_total{op=\"subscribe\",result=\"ok\"}"], 3.0);
    assert_eq!(after["tickgate_commands_total{op=\"invalid\",result=\"error\"}"], 3.0);
    assert!(after["tickgate_http_responses_total{status=\"200\"}"] >= 1.0, "the earlier scrape was counted");
    assert_eq!(sum(&after, "tickgate_feed_up"), 1.0);
    // The p99 from the histogram's buckets: the first bound that holds 99% of the deliveries.
    let count = after["tickgate_delivery_latency_seconds_count"];
    let mut buckets: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(k, &v)| {
            let le = k.strip_prefix("tickgate_delivery_latency_seconds_bucket{le=\"")?.strip_suffix("\"}")?;
            Some((le.parse::<f64>().ok()?, v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative buckets: {buckets:?}");
    assert_eq!(buckets.last().map(|b| b.1), Some(count), "+Inf holds every delivery");
    let p99 = buckets.iter().find(|b| b.1 >= 0.99 * count).map(|b| b.0).unwrap();
    assert!(p99 > 0.0 && p99 <= 5.0, "a real latency: {p99}");
    drop(clients);
    eventually("closes counted by reason", || {
        let m = scrape(addr);
        sum(&m, "tickgate_connections_closed_total") - m["tickgate_connections_closed_total{reason=\"http_answered\"}"]
            >= 3.0
    });
}

#[test]
fn readyz_follows_the_feed() {
    let gateway = start_gateway(|_| {});
    let addr = gateway.local_addr();
    let ready = || http_request(addr, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    eventually("ready once the feed delivers", || ready().starts_with("HTTP/1.1 200"));
    gateway.feed_control().pause();
    // The threshold is five seconds without a tick (for the test market's rate).
    let mut answer = String::new();
    eventually("not ready while the feed is paused", || {
        answer = ready();
        answer.starts_with("HTTP/1.1 503")
    });
    assert!(answer.contains("\"feed\":{") && answer.contains("\"ok\":false"), "{answer}");
    assert!(answer.contains("\"paused\":true"), "{answer}");
    gateway.feed_control().resume();
    eventually("ready again when the feed comes back", || ready().starts_with("HTTP/1.1 200"));
}

#[test]
fn an_admin_port_keeps_metrics_private() {
    let gateway = start_gateway(|c| c.server.admin_listen = Some("127.0.0.1:0".parse().unwrap()));
    let admin = gateway.admin_addr().expect("admin port bound");
    assert!(sum(&scrape(admin), "tickgate_symbols") > 0.0);
    let public = http_request(gateway.local_addr(), "GET /metrics HTTP/1.1\r\n\r\n");
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
    let ws_on_admin = http_request(admin, "GET /ws HTTP/1.1\r\n\r\n");
    assert!(ws_on_admin.starts_with("HTTP/1.1 404"), "{ws_on_admin}");
    assert!(http_request(gateway.local_addr(), "GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
}

#[test]
fn with_an_admin_port_a_failure_is_explained_there_and_not_on_the_public_port() {
    let mut config = test_config();
    config.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    // Clients that never read their close hold the stop open while the routes are asked (one on
    // each reactor: a reactor with no client left stops at once, and the admin port is
    // reactor 0's).
    config.server.shutdown_grace_ms = 8_000;
    config.limits.close_linger_ms = 6_000;
    let gateway = Gateway::start_with_fault_hook(config).expect("gateway starts");
    let (public, admin) = (gateway.local_addr(), gateway.admin_addr().expect("admin port bound"));
    let holders = one_client_per_reactor(public, 2);
    gateway.inject_fault(Fault::IngestPanic);
    let mut answer = String::new();
    eventually("the public /healthz answers 503", || {
        answer = http_request(public, "GET /healthz HTTP/1.1\r\n\r\n");
        answer.starts_with("HTTP/1.1 503")
    });
    assert!(answer.ends_with("\r\n\r\nfailed\n"), "only that it failed: {answer}");
    let operators = http_request(admin, "GET /healthz HTTP/1.1\r\n\r\n");
    assert!(
        operators.starts_with("HTTP/1.1 503")
            && operators.contains("failed: the ingest thread stopped: panicked: injected fault"),
        "{operators}"
    );
    drop(holders);
    gateway.shutdown();
}

#[test]
fn metrics_stay_responsive_under_heavy_fan_out() {
    let gateway = start_gateway(|c| {
        c.sim.symbols = 20;
        c.sim.rate = 50_000.0;
    });
    let addr = gateway.local_addr();
    let names: Vec<String> = gateway.symbols().iter().map(|(_, s)| s.name.to_string()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // Clients that subscribe to everything and read nothing more: the reactors stay busy
    // writing, conflating and closing them.
    let mut busy = Vec::new();
    for _ in 0..50 {
        let mut c = TestClient::connect(addr);
        c.subscribe(&names);
        busy.push(c);
    }
    for _ in 0..10 {
        let started = Instant::now();
        let m = scrape(addr);
        assert!(started.elapsed() < Duration::from_secs(1), "scrape took {:?}", started.elapsed());
        assert!(sum(&m, "tickgate_symbols") == 20.0);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn head_requests_get_the_headers_without_the_body() {
    let gateway = start_gateway(|_| {});
    let addr = gateway.local_addr();
    for path in ["/metrics", "/readyz", "/healthz"] {
        let get = http_request(addr, &format!("GET {path} HTTP/1.1\r\n\r\n"));
        let head = http_request(addr, &format!("HEAD {path} HTTP/1.1\r\n\r\n"));
        let (get_head, body) = get.split_once("\r\n\r\n").unwrap();
        assert!(!body.is_empty(), "GET {path} has a body");
        assert!(head.ends_with("\r\n\r\n"), "HEAD {path}: nothing after the headers: {head:?}");
        assert_eq!(get_head.lines().next(), head.lines().next(), "HEAD {path}: the status of GET");
        assert!(head.to_ascii_lowercase().contains("content-length: "), "HEAD {path} says how long GET's body is");
    }
}
