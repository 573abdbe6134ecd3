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

#[test]
fn a_recording_names_symbols_like_any_source_aliases_and_added_symbols() {
    let path = std::env::temp_dir().join(format!("tickgate-replay-names-{}.jsonl", std::process::id()));
    let line = |symbol: &str, price: &str| {
        format!(
            "{{\"type\":\"trade\",\"symbol\":\"{symbol}\",\"price\":\"{price}\",\"size\":\"1\",\"ts\":1700000000000000000}}\n"
        )
    };
    std::fs::write(&path, line("XBTUSD", "64000.5") + &line("NEW-COIN", "0.125")).unwrap();
    let gateway = start_gateway(|c| {
        c.sim.symbols = 10;
        c.universe.unknown_symbols = "add".into();
        c.universe.max_added_symbols = 4;
        c.feed.source = "replay".into();
        c.feed.replay_path = Some(path.clone());
        c.feed.replay_speed = 0.0;
        c.feed.aliases = [("XBTUSD".to_string(), "BTC-USD".to_string())].into();
    });
    eventually("both lines played", || {
        let metrics = http_request(gateway.local_addr(), "GET /metrics HTTP/1.1\r\n\r\n");
        metrics.contains("tickgate_ticks_ingested_total{source=\"replay\"} 2")
    });
    let mut client = TestClient::connect(gateway.local_addr());
    let (_, snaps) = client.subscribe(&["BTC-USD", "NEW-COIN"]);
    let prices: Vec<&str> = snaps.iter().map(|s| s["trade"]["price"].as_str().unwrap_or("none")).collect();
    assert_eq!(prices, ["64000.50", "0.12500000"], "the alias and the added symbol, exact");
    std::fs::remove_file(&path).ok();
}
