//! The gateway replays a recording (the tape shipped in config/tapes) instead of the simulated
//! market, and says so in /metrics and /readyz.

use std::path::PathBuf;

use tickgate_testkit::{TestClient, eventually, http_request, start_gateway};

fn tape() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/tapes/sim-3s.jsonl.gz"))
}

#[test]
fn the_shipped_tape_replays_to_subscribers() {
    let gateway = start_gateway(|c| {
        c.sim.symbols = 500;
        c.feed.source = "replay".into();
        c.feed.replay_path = Some(tape());
        c.feed.replay_speed = 1.0;
        c.feed.replay_loop = true;
    });
    // The tape's busiest names are the sim universe's first ones.
    let mut client = TestClient::connect(gateway.local_addr());
    let (_, snaps) = client.subscribe(&["AAPL", "MSFT", "NVDA", "BTC-USD"]);
    let mut next: std::collections::HashMap<String, u64> =
        snaps.iter().map(|s| (s["symbol"].as_str().unwrap().to_string(), s["seq"].as_u64().unwrap() + 1)).collect();
    for _ in 0..20 {
        let event = client.recv();
        let symbol = event["symbol"].as_str().unwrap().to_string();
        assert!(event["type"] == "trade" || event["type"] == "quote", "{event}");
        assert_eq!(event["seq"].as_u64(), next.get(&symbol).copied(), "contiguous: {event}");
        *next.get_mut(&symbol).unwrap() += 1;
        let ts = event["ts"].as_u64().unwrap();
        assert!(ts < event["gw_ts"].as_u64().unwrap(), "the recorded exchange time is in the past");
    }
    let metrics = http_request(gateway.local_addr(), "GET /metrics HTTP/1.1\r\n\r\n");
    assert!(metrics.contains("tickgate_ticks_ingested_total{source=\"replay\"}"), "{metrics}");
    assert!(metrics.contains("tickgate_ticks_rejected_total{reason=\"malformed\",source=\"replay\"} 0"));
    eventually("ready on the replay", || {
        http_request(gateway.local_addr(), "GET /readyz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200")
    });
}

#[test]
fn a_missing_recording_stops_the_start_with_the_key() {
    let mut config = tickgate_testkit::test_config();
    config.feed.source = "replay".into();
    config.feed.replay_path = Some("/nonexistent/tape.jsonl".into());
    let err = tickgate_server::Gateway::start(config).unwrap_err().to_string();
    assert!(err.contains("feed.replay_path"), "{err}");
}
