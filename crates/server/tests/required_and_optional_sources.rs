//! Readiness follows the sources that matter: an optional source that is down is reported
//! (/readyz `not_delivering`, `tickgate_feed_up` 0) but leaves the gateway ready and the feed up
//! in a new client's welcome; the same source required makes the gateway not ready and the
//! welcome say the feed is down.

use std::net::TcpListener;

use serde_json::Value;
use tickgate_server::config::SourceConfig;
use tickgate_testkit::{TestClient, eventually, http_request, metric, start_gateway};

/// A gateway on the simulated market and a TCP source whose upstream is never there.
fn gateway_with_a_dead_source(required: Option<bool>) -> tickgate_server::Gateway {
    let nobody = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    start_gateway(|c| {
        c.feed.reconnect_min_ms = 50;
        c.feed.reconnect_max_ms = 200;
        let desk = SourceConfig { tcp_connect: Some(nobody), required, ..SourceConfig::new("desk", "tcp") };
        c.feed.sources = vec![SourceConfig::new("sim", "sim"), desk];
    })
}

fn readyz(addr: std::net::SocketAddr) -> (bool, Value) {
    let response = http_request(addr, "GET /readyz HTTP/1.1\r\n\r\n");
    let body = response.split("\r\n\r\n").nth(1).expect("a body");
    (response.starts_with("HTTP/1.1 200"), serde_json::from_str(body).expect("JSON"))
}

#[test]
fn an_optional_source_down_is_reported_and_the_gateway_stays_ready() {
    let gateway = gateway_with_a_dead_source(Some(false));
    let addr = gateway.local_addr();
    eventually("ready on the simulated market alone", || readyz(addr).0);
    let (_, body) = readyz(addr);
    assert_eq!(body["feed"]["not_delivering"], serde_json::json!(["desk"]), "{body}");
    assert_eq!(body["feed"]["sources"][1]["required"], false, "{body}");
    assert_eq!(metric(addr, "tickgate_feed_up{source=\"desk\"}"), Some(0.0));
    assert_eq!(metric(addr, "tickgate_source_required{source=\"desk\"}"), Some(0.0));
    assert_eq!(metric(addr, "tickgate_source_required{source=\"sim\"}"), Some(1.0));
    eventually("the outage is known", || {
        gateway.stats().ingest.sources[1].down.load(std::sync::atomic::Ordering::Relaxed)
    });
    let client = TestClient::connect(addr);
    assert!(client.welcome.get("feed").is_none(), "the feed is up: {}", client.welcome);
    gateway.shutdown();
}

#[test]
fn a_required_source_down_makes_the_gateway_not_ready_and_the_feed_down() {
    let gateway = gateway_with_a_dead_source(None);
    let addr = gateway.local_addr();
    eventually("the outage is known", || {
        gateway.stats().ingest.sources[1].down.load(std::sync::atomic::Ordering::Relaxed)
    });
    eventually("the simulated market delivers", || metric(addr, "tickgate_feed_up{source=\"sim\"}") == Some(1.0));
    let (ready, body) = readyz(addr);
    assert!(!ready, "{body}");
    assert_eq!(body["feed"]["not_delivering"], serde_json::json!(["desk"]), "{body}");
    assert_eq!(metric(addr, "tickgate_source_required{source=\"desk\"}"), Some(1.0));
    let client = TestClient::connect(addr);
    assert_eq!(client.welcome["feed"], "down", "{}", client.welcome);
    gateway.shutdown();
}
