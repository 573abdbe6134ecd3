//! On a cluster's edge, a resume older than the edge's resume history is served from the stream
//! (a real `nats-server -js`): `resumed`, then every event after the client's seq, with the
//! bytes every edge sends live; a gap `history` and a snapshot only once the stream no longer
//! holds them, or the bus is down.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tickgate_bus::BusRole;
use tickgate_server::Config;
use tickgate_testkit::nats::NatsServer;
use tickgate_testkit::{TestClient, eventually, metric, start_gateway};

const SYMBOL: &str = "AAPL";

/// A gateway on the bus; an edge holds 8 events of each symbol and reads no past at start.
fn on_bus(nats: &NatsServer, role: BusRole) -> impl FnOnce(&mut Config) {
    let url = nats.url();
    move |c| {
        c.server.reactors = 1;
        c.sim.symbols = 5;
        c.sim.rate = 2_000.0;
        c.bus.role = role;
        c.bus.url = url;
        c.bus.max_bytes = 64 << 20;
        c.bus.replay_s = 0;
        c.history.max_events_per_symbol = 8;
    }
}

fn is_event(msg: &Value) -> bool {
    msg["type"] == "trade" || msg["type"] == "quote"
}

/// Subscribes `client` to [`SYMBOL`] and reads `count` of its events: the last seq read.
fn seen(client: &mut TestClient, count: usize) -> u64 {
    let (_, snaps) = client.subscribe(&[SYMBOL]);
    let mut last = snaps[0]["seq"].as_u64().unwrap();
    let mut n = 0;
    while n < count {
        let msg = client.recv();
        if msg["symbol"] == SYMBOL && is_event(&msg) {
            last = msg["seq"].as_u64().unwrap();
            n += 1;
        }
    }
    last
}

/// Events of [`SYMBOL`] by seq, raw, until `until` is read.
fn raw_events_until(client: &mut TestClient, until: u64) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    loop {
        let raw = client.recv_raw();
        let msg: Value = serde_json::from_str(&raw).unwrap();
        if msg["symbol"] == SYMBOL && is_event(&msg) {
            let seq = msg["seq"].as_u64().unwrap();
            out.insert(seq, raw);
            if seq >= until {
                return out;
            }
        }
    }
}

fn resume(client: &mut TestClient, seq: u64, channels: Option<&[&str]>) -> Value {
    let mut command = serde_json::json!({"op": "subscribe", "resume": [{"symbol": SYMBOL, "seq": seq}], "id": 1});
    if let Some(channels) = channels {
        command["channels"] = serde_json::json!(channels);
    }
    client.send_json(command);
    let reply = client.recv();
    assert_eq!(reply["type"], "subscribed", "{reply}");
    client.recv()
}

#[test]
fn a_resume_past_an_edges_history_gets_every_event_from_the_stream_with_the_live_bytes() {
    let nats = NatsServer::start();
    let _publisher = start_gateway(on_bus(&nats, BusRole::Publisher));
    let edge_a = start_gateway(on_bus(&nats, BusRole::Edge));
    let edge_b = start_gateway(on_bus(&nats, BusRole::Edge));
    // Reads every event live on edge A, for the bytes.
    let mut watcher = TestClient::connect(edge_a.local_addr());
    watcher.subscribe(&[SYMBOL]);
    for (edge, other) in [(&edge_a, &edge_a), (&edge_a, &edge_b)] {
        let mut client = TestClient::connect(edge.local_addr());
        let last = seen(&mut client, 20);
        drop(client);
        // Away for far more than the 8 events each edge holds.
        std::thread::sleep(Duration::from_millis(400));
        let mut client = TestClient::connect(other.local_addr());
        let resumed = resume(&mut client, last, None);
        assert_eq!(resumed["type"], "resumed", "no gap, no snapshot: {resumed}");
        assert_eq!(resumed["after_seq"].as_u64(), Some(last), "{resumed}");
        let to_seq = resumed["to_seq"].as_u64().unwrap();
        assert!(to_seq > last + 40, "far more missed than the history holds: {resumed}");
        let got = raw_events_until(&mut client, to_seq + 50);
        let seqs: Vec<u64> = got.keys().copied().collect();
        assert_eq!(seqs.first(), Some(&(last + 1)), "from the first event missed");
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "contiguous, no repeat: {seqs:?}");
        let live = raw_events_until(&mut watcher, to_seq + 50);
        let mut compared = 0;
        for (seq, raw) in &got {
            if let Some(live) = live.get(seq) {
                assert_eq!(raw, live, "a replayed event is the bytes sent live");
                compared += 1;
            }
        }
        assert!(compared >= got.len() / 2, "{compared} of {} compared", got.len());
    }
    let stream = r#"tickgate_resumes_total{outcome="stream"}"#;
    eventually("edge A counts the resume", || metric(edge_a.local_addr(), stream) >= Some(1.0));
    eventually("edge B counts the resume", || metric(edge_b.local_addr(), stream) >= Some(1.0));
    let fetched = r#"tickgate_bus_resume_fetches_total{outcome="events"}"#;
    assert!(metric(edge_b.local_addr(), fetched) >= Some(1.0));
}

#[test]
fn a_resume_on_one_channel_gets_only_that_channels_events_from_the_stream() {
    let nats = NatsServer::start();
    let _publisher = start_gateway(on_bus(&nats, BusRole::Publisher));
    let edge = start_gateway(on_bus(&nats, BusRole::Edge));
    let mut client = TestClient::connect(edge.local_addr());
    let last = seen(&mut client, 20);
    drop(client);
    std::thread::sleep(Duration::from_millis(400));
    let mut client = TestClient::connect(edge.local_addr());
    let resumed = resume(&mut client, last, Some(&["trades"]));
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    let to_seq = resumed["to_seq"].as_u64().unwrap();
    let mut previous = last;
    while previous < to_seq + 20 {
        let msg = client.recv();
        if msg["symbol"] != SYMBOL {
            continue;
        }
        assert_eq!(msg["type"], "trade", "trades only, no gap, no snapshot: {msg}");
        let seq = msg["seq"].as_u64().unwrap();
        assert!(seq > previous, "rising: {msg}");
        previous = seq;
    }
}

#[test]
fn a_resume_the_stream_no_longer_holds_is_a_gap_and_a_snapshot() {
    let nats = NatsServer::start();
    let short = |c: &mut Config| c.bus.max_age_s = 1;
    let _publisher = start_gateway(|c| {
        on_bus(&nats, BusRole::Publisher)(c);
        short(c);
    });
    let edge = start_gateway(|c| {
        on_bus(&nats, BusRole::Edge)(c);
        short(c);
    });
    let mut client = TestClient::connect(edge.local_addr());
    let last = seen(&mut client, 20);
    drop(client);
    // Past the stream's retention (a second).
    std::thread::sleep(Duration::from_millis(2_500));
    let mut client = TestClient::connect(edge.local_addr());
    let gap = resume(&mut client, last, None);
    assert_eq!(gap["type"], "gap", "{gap}");
    assert_eq!(gap["reason"], "history", "{gap}");
    assert_eq!(gap["from_seq"].as_u64(), Some(last + 1), "{gap}");
    assert_eq!(client.recv()["type"], "snapshot");
    let aged = r#"tickgate_bus_resume_fetches_total{outcome="not_retained"}"#;
    eventually("the edge counts what the stream no longer held", || metric(edge.local_addr(), aged) >= Some(1.0));
}

#[test]
fn with_the_bus_down_a_resume_past_the_history_gets_its_gap_at_once() {
    let mut nats = NatsServer::start();
    let _publisher = start_gateway(on_bus(&nats, BusRole::Publisher));
    let edge = start_gateway(on_bus(&nats, BusRole::Edge));
    let mut client = TestClient::connect(edge.local_addr());
    let last = seen(&mut client, 20);
    drop(client);
    std::thread::sleep(Duration::from_millis(400));
    nats.kill();
    eventually("the edge sees the bus down", || metric(edge.local_addr(), "tickgate_bus_connected") == Some(0.0));
    let mut client = TestClient::connect(edge.local_addr());
    let asked = Instant::now();
    let gap = resume(&mut client, last, None);
    let took = asked.elapsed();
    let snapshot = client.recv();
    let failed = "tickgate_bus_resume_fetches_total{outcome=\"unavailable\"}";
    let counted = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        metric(edge.local_addr(), failed) >= Some(1.0)
    });
    // NATS back before any assertion: the gateways stop cleanly only with it.
    nats.restart();
    assert!(took < Duration::from_secs(2), "answered at once: {took:?}");
    assert_eq!((gap["type"].as_str(), gap["reason"].as_str()), (Some("gap"), Some("history")), "{gap}");
    assert_eq!(snapshot["type"], "snapshot");
    assert!(counted, "the edge counts the fetch it could not make");
}
