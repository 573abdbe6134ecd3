//! A cluster on a real NATS JetStream (`nats-server -js`, started per test): a publisher and
//! edges, the sequence contract on the edges' clients.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;

use serde_json::Value;
use tickgate_bus::BusRole;
use tickgate_server::{Config, Gateway};
use tickgate_testkit::nats::NatsServer;
use tickgate_testkit::{TestClient, eventually, metric, start_gateway};

const SYMBOL: &str = "AAPL";

fn on_bus(nats: &NatsServer, role: BusRole) -> impl FnOnce(&mut Config) {
    let url = nats.url();
    move |c| {
        c.server.reactors = 1;
        c.sim.symbols = 5;
        c.sim.rate = 2_000.0;
        c.bus.role = role;
        c.bus.url = url;
        c.bus.max_bytes = 64 << 20;
    }
}

/// A publisher, an edge, and a client of the edge subscribed to [`SYMBOL`].
fn publisher_edge_client(nats: &NatsServer) -> (Gateway, Gateway, TestClient) {
    let publisher = start_gateway(on_bus(nats, BusRole::Publisher));
    let edge = start_gateway(on_bus(nats, BusRole::Edge));
    let mut client = TestClient::connect(edge.local_addr());
    client.subscribe(&[SYMBOL]);
    (publisher, edge, client)
}

fn is_event(msg: &Value) -> bool {
    msg["type"] == "trade" || msg["type"] == "quote"
}

/// The next `count` events of `symbol` at or after `from_seq`, by seq, as sent.
fn collect(client: &mut TestClient, from_seq: u64, count: usize) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    while out.len() < count {
        let raw = client.recv_raw();
        let msg: Value = serde_json::from_str(&raw).unwrap();
        if msg["symbol"] == SYMBOL && is_event(&msg) && msg["seq"].as_u64().unwrap() >= from_seq {
            out.insert(msg["seq"].as_u64().unwrap(), raw);
        }
    }
    out
}

#[test]
fn every_edge_sends_the_publishers_events_with_the_same_seq_and_bytes() {
    let nats = NatsServer::start();
    let publisher = start_gateway(on_bus(&nats, BusRole::Publisher));
    let edges: Vec<Gateway> = (0..2).map(|_| start_gateway(on_bus(&nats, BusRole::Edge))).collect();
    let mut clients: Vec<TestClient> = edges.iter().map(|e| TestClient::connect(e.local_addr())).collect();
    let mut start = 0;
    for client in &mut clients {
        let (_, snaps) = client.subscribe(&[SYMBOL]);
        start = start.max(snaps[0]["seq"].as_u64().unwrap() + 1);
    }
    // An edge that had read nothing of the symbol yet gives an empty snapshot (seq 0), then a
    // gap and a snapshot as of the first tick it reads: the two streams may start apart, so
    // they are compared where both have the seq.
    let streams: Vec<_> = clients.iter_mut().map(|c| collect(c, start, 150)).collect();
    let common: Vec<u64> = streams[0].keys().filter(|seq| streams[1].contains_key(seq)).copied().collect();
    assert!(common.len() >= 100, "{} seqs in common", common.len());
    for seq in &common {
        assert_eq!(streams[0][seq], streams[1][seq], "identical bytes for identical seq on both edges");
    }
    for stream in &streams {
        let seqs: Vec<u64> = stream.keys().copied().collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "contiguous: {seqs:?}");
    }
    assert!(metric(edges[0].local_addr(), "tickgate_bus_received_total").unwrap() >= 100.0);
    assert!(metric(publisher.local_addr(), "tickgate_bus_published_total").unwrap() >= 100.0);
}

#[test]
fn a_restarted_publisher_goes_on_upward_and_edges_say_it_restarted() {
    let nats = NatsServer::start();
    let publisher = start_gateway(on_bus(&nats, BusRole::Publisher));
    let edge = start_gateway(on_bus(&nats, BusRole::Edge));
    let mut client = TestClient::connect(edge.local_addr());
    let (_, snaps) = client.subscribe(&[SYMBOL]);
    let first = collect(&mut client, snaps[0]["seq"].as_u64().unwrap() + 1, 50);
    drop(publisher);
    let publisher = start_gateway(on_bus(&nats, BusRole::Publisher));
    let mut last = *first.keys().last().unwrap();
    let (mut reset, mut after) = (false, 0);
    while after < 50 {
        let msg = client.recv();
        if msg["symbol"] != SYMBOL {
            continue;
        }
        if msg["type"] == "upstream_reset" {
            assert_eq!(msg["reason"], "publisher_restart", "{msg}");
            assert_eq!(msg["source"], "bus");
            assert!(!reset, "one reset for one restart");
            reset = true;
        } else if is_event(&msg) {
            let seq = msg["seq"].as_u64().unwrap();
            assert_eq!(seq, last + 1, "seq goes on upward, never repeated: {msg}");
            last = seq;
            after += usize::from(reset);
        } else {
            assert_ne!(msg["type"], "gap", "nothing published was lost: {msg}");
        }
    }
    assert!(reset, "the restart was announced");
    drop(publisher);
}

#[test]
fn a_bad_bus_message_is_rejected_and_counted_and_a_stray_writer_stops_the_publisher_loudly() {
    let nats = NatsServer::start();
    let (publisher, edge, mut client) = publisher_edge_client(&nats);
    let before = collect(&mut client, 0, 10);
    // Core NATS publishes on the stream's subjects, as a stray client would: a truncated
    // message, an unknown version, a symbol this universe does not have.
    let mut raw = TcpStream::connect(nats.addr()).unwrap();
    let mut unknown_symbol = vec![tickgate_bus::payload::VERSION, 0];
    unknown_symbol.extend_from_slice(&[1; 48]);
    unknown_symbol.extend_from_slice(&[0, 4]);
    unknown_symbol.extend_from_slice(b"ZZZZ");
    for payload in [&[tickgate_bus::payload::VERSION, 0, 1][..], &[9u8; 60][..], &unknown_symbol[..]] {
        let mut command = format!("PUB tickgate.ticks.ZZZZ {}\r\n", payload.len()).into_bytes();
        command.extend_from_slice(payload);
        command.extend_from_slice(b"\r\n");
        raw.write_all(&command).unwrap();
    }
    raw.write_all(b"PING\r\n").unwrap();
    for reason in ["truncated", "unknown_version", "unknown_symbol"] {
        let series = format!("tickgate_bus_rejected_total{{reason=\"{reason}\"}}");
        eventually(&series, || metric(edge.local_addr(), &series) == Some(1.0));
    }
    // The stray writer moved the stream on behind the publisher's back: it must stop, loudly,
    // rather than interleave its numbering with someone else's.
    eventually("the publisher stops", || publisher.liveness().failure().is_some());
    let failure = publisher.liveness().failure().unwrap().to_string();
    assert!(failure.contains("another publisher"), "{failure}");
    // Whatever reached the edge's client is well-formed and in order.
    let mut last = *before.keys().last().unwrap();
    while let Ok(msg) = client.try_recv_for(std::time::Duration::from_millis(500)) {
        assert_ne!(msg["symbol"], "ZZZZ");
        if msg["symbol"] == SYMBOL && is_event(&msg) {
            assert_eq!(msg["seq"].as_u64().unwrap(), last + 1, "{msg}");
            last += 1;
        }
    }
}

#[test]
fn of_two_publishers_on_one_stream_one_stops_loudly_and_seqs_never_repeat() {
    let nats = NatsServer::start();
    let first = start_gateway(on_bus(&nats, BusRole::Publisher));
    let edge = start_gateway(on_bus(&nats, BusRole::Edge));
    let mut client = TestClient::connect(edge.local_addr());
    client.subscribe(&[SYMBOL]);
    collect(&mut client, 0, 10);
    let second = start_gateway(on_bus(&nats, BusRole::Publisher));
    eventually("a publisher stops", || first.liveness().failure().is_some() || second.liveness().failure().is_some());
    let mut last = 0;
    let mut events = 0;
    while let Ok(msg) = client.try_recv_for(std::time::Duration::from_millis(1000)) {
        if msg["symbol"] == SYMBOL && is_event(&msg) {
            let seq = msg["seq"].as_u64().unwrap();
            assert!(seq > last, "never a repeated or lower seq: {seq} after {last}");
            last = seq;
            events += 1;
            if events > 200 {
                break;
            }
        }
    }
    assert_eq!(
        metric(edge.local_addr(), "tickgate_bus_repeats_total"),
        Some(0.0),
        "the stream never holds a symbol's seq twice"
    );
}

#[test]
fn an_unreachable_nats_at_start_is_one_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = tickgate_testkit::test_config();
    config.bus.role = BusRole::Edge;
    config.bus.url = format!("nats://127.0.0.1:{port}");
    config.bus.connect_timeout_ms = 500;
    let error = Gateway::start(config).expect_err("no NATS there").to_string();
    assert!(error.contains("cannot reach NATS at nats://127.0.0.1:"), "{error}");
}

/// Reads until `count` events of [`SYMBOL`] came after the first `status` "up", checking the
/// contract from `last`: each event is `last + 1`, or comes right after a `gap` (reason `bus`)
/// naming exactly the numbers it skips. Returns the events that skipped nothing.
fn events_after_recovery(client: &mut TestClient, mut last: u64, count: usize) -> usize {
    let (mut back, mut events, mut contiguous, mut gap_to) = (false, 0, 0, None);
    while events < count {
        let msg = client.recv();
        match msg["type"].as_str() {
            Some("status") => back |= msg["feed"] == "up",
            Some("gap") if msg["symbol"] == SYMBOL => {
                assert_eq!(msg["reason"], "bus", "{msg}");
                assert_eq!(msg["from_seq"].as_u64().unwrap(), last + 1, "{msg}");
                gap_to = msg["to_seq"].as_u64();
            }
            Some("trade" | "quote") if msg["symbol"] == SYMBOL => {
                let seq = msg["seq"].as_u64().unwrap();
                match gap_to.take() {
                    Some(to) => assert_eq!(seq, to + 1, "the event right after a gap: {msg}"),
                    None => {
                        assert_eq!(seq, last + 1, "no silent hole, no repeat: {msg}");
                        contiguous += 1;
                    }
                }
                last = seq;
                events += usize::from(back);
            }
            _ => {}
        }
    }
    contiguous
}

#[test]
fn an_edge_that_loses_nats_says_so_and_carries_on_with_the_contract_when_it_returns() {
    let mut nats = NatsServer::start();
    let (publisher, edge, mut client) = publisher_edge_client(&nats);
    let seen = collect(&mut client, 0, 20);
    let readyz = |addr| tickgate_testkit::http_request(addr, "GET /readyz HTTP/1.1\r\n\r\n");
    eventually("the edge is ready", || readyz(edge.local_addr()).starts_with("HTTP/1.1 200"));
    nats.kill();
    let mut last = *seen.keys().last().unwrap();
    let status = loop {
        let msg = client.recv();
        if msg["symbol"] == SYMBOL && is_event(&msg) {
            last = msg["seq"].as_u64().unwrap();
        } else if msg["type"] == "status" {
            break msg;
        }
    };
    assert_eq!(status["feed"], "down", "{status}");
    assert_eq!(status["source"], "bus");
    eventually("the edge is not ready without its bus", || readyz(edge.local_addr()).starts_with("HTTP/1.1 503"));
    let ready = readyz(edge.local_addr());
    assert!(ready.contains(r#""bus":{"caught_up":true,"connected":false"#), "{ready}");
    let ready = readyz(publisher.local_addr());
    assert!(ready.starts_with("HTTP/1.1 200") && ready.contains(r#""connected":false"#), "{ready}");
    let last = client_last_seq(&mut client, last);
    nats.restart();
    events_after_recovery(&mut client, last, 100);
    eventually("the edge is ready again", || readyz(edge.local_addr()).starts_with("HTTP/1.1 200"));
    assert!(metric(edge.local_addr(), "tickgate_bus_reconnects_total").unwrap() >= 1.0);
    assert!(publisher.liveness().failure().is_none(), "a publisher that lost NATS carries on");
}

#[test]
fn nats_back_without_its_store_gets_a_new_stream_and_clients_a_gap_never_silence() {
    let mut nats = NatsServer::start();
    let (_publisher, _edge, mut client) = publisher_edge_client(&nats);
    let seen = collect(&mut client, 0, 20);
    let mut last = *seen.keys().last().unwrap();
    nats.kill();
    loop {
        let msg = client.recv();
        if msg["symbol"] == SYMBOL && is_event(&msg) {
            last = msg["seq"].as_u64().unwrap();
        } else if msg["type"] == "status" {
            assert_eq!(msg["feed"], "down", "{msg}");
            break;
        }
    }
    let last = client_last_seq(&mut client, last);
    nats.restart_empty();
    // The publisher makes the stream again and numbers on; the edge reads the new stream from
    // its start: seqs go on upward, what was lost is a gap `bus`.
    events_after_recovery(&mut client, last, 50);
}

/// The last event of [`SYMBOL`] the client holds once the feed is down (none come then).
fn client_last_seq(client: &mut TestClient, mut last: u64) -> u64 {
    while let Ok(msg) = client.try_recv_for(std::time::Duration::from_millis(300)) {
        if msg["symbol"] == SYMBOL && is_event(&msg) {
            last = msg["seq"].as_u64().unwrap();
        }
    }
    last
}

/// Reads `events` events of [`SYMBOL`] on `client`, checking the contract from `last`: each event
/// is `last + 1`, or comes after a `gap` (reason `bus`) starting right after `last` and the
/// `snapshot` as of the gap's end, which are kept in `gaps`.
fn follow(client: &mut TestClient, last: &mut u64, events: usize, gaps: &mut Vec<(Value, Value)>) {
    let mut seen = 0;
    while seen < events {
        let msg = client.recv();
        if msg["symbol"] != SYMBOL {
            continue;
        }
        match msg["type"].as_str() {
            Some("trade" | "quote") => {
                assert_eq!(msg["seq"].as_u64().unwrap(), *last + 1, "no silent hole: {msg}");
                *last += 1;
                seen += 1;
            }
            Some("gap") => {
                assert_eq!(msg["reason"], "bus", "{msg}");
                assert_eq!(msg["from_seq"].as_u64().unwrap(), *last + 1, "{msg}");
                let snapshot = client.recv();
                assert_eq!(snapshot["type"], "snapshot", "a snapshot follows the gap: {snapshot}");
                *last = msg["to_seq"].as_u64().unwrap();
                assert_eq!(snapshot["seq"].as_u64(), Some(*last), "{snapshot}");
                gaps.push((msg, snapshot));
            }
            _ => panic!("unexpected {msg}"),
        }
    }
}

/// The trade or quote of a snapshot, as an event message of `symbol` of that kind would say it.
fn as_event(symbol: &str, kind: &str, state: &Value) -> Value {
    let mut event = serde_json::json!({"type": kind, "symbol": symbol});
    for (key, value) in state.as_object().expect("a trade or quote object") {
        event[key] = value.clone();
    }
    event
}

#[test]
fn ticks_an_edge_never_read_are_a_bus_gap_then_a_snapshot_as_of_its_end() {
    let mut nats = NatsServer::start();
    let slow = |c: &mut Config| c.sim.rate = 500.0;
    // A publisher that can hold few ticks while NATS is away: the rest are never published.
    let publisher = start_gateway(|c| {
        on_bus(&nats, BusRole::Publisher)(c);
        slow(c);
        c.bus.publish_queue = 16;
    });
    let edge = start_gateway(|c| {
        on_bus(&nats, BusRole::Edge)(c);
        slow(c);
    });
    // The truth: the publisher's own client gets every event it sequenced.
    let mut truth = TestClient::connect(publisher.local_addr());
    let (_, truth_snaps) = truth.subscribe(&[SYMBOL]);
    let mut client = TestClient::connect(edge.local_addr());
    let (_, snaps) = client.subscribe(&[SYMBOL]);
    let mut last = snaps[0]["seq"].as_u64().unwrap();
    follow(&mut client, &mut last, 10, &mut Vec::new());
    nats.kill();
    std::thread::sleep(std::time::Duration::from_secs(2));
    nats.restart();
    let mut gaps = Vec::new();
    while gaps.is_empty() {
        follow(&mut client, &mut last, 1, &mut gaps);
    }
    follow(&mut client, &mut last, 20, &mut gaps);
    // Each snapshot is the symbol's true state as of its gap's end: its latest trade and latest
    // quote as the publisher's own client got them.
    let end = gaps.iter().map(|(gap, _)| gap["to_seq"].as_u64().unwrap()).max().unwrap();
    let mut truth_events = BTreeMap::new();
    while truth_events.last_key_value().is_none_or(|(&seq, _)| seq <= end) {
        let msg = truth.recv();
        if msg["symbol"] == SYMBOL && is_event(&msg) {
            truth_events.insert(msg["seq"].as_u64().unwrap(), msg);
        }
    }
    for (gap, snapshot) in &gaps {
        let to_seq = gap["to_seq"].as_u64().unwrap();
        for kind in ["trade", "quote"] {
            let from_truth =
                truth_events.range(..=to_seq).rev().find(|(_, msg)| msg["type"] == kind).map(|(_, m)| m.clone());
            let from_truth = from_truth.or_else(|| {
                let state = &truth_snaps[0][kind];
                (!state.is_null()).then(|| as_event(SYMBOL, kind, state))
            });
            assert_eq!(Some(as_event(SYMBOL, kind, &snapshot[kind])), from_truth, "{gap} {snapshot}");
        }
    }
    assert!(metric(edge.local_addr(), "tickgate_bus_gaps_total").unwrap() >= 1.0);
    assert!(metric(publisher.local_addr(), "tickgate_bus_publish_dropped_total").unwrap() >= 1.0);
    let sent = r#"tickgate_gaps_sent_total{reason="bus"}"#;
    eventually("the bus gap is counted", || metric(edge.local_addr(), sent) >= Some(1.0));
}

/// Resumes [`SYMBOL`] after `seq` on `client`: the reply, then `resumed` (nothing missing),
/// then events from `seq + 1` on, contiguous; returns how many events were replayed.
fn resume_contiguous(client: &mut TestClient, seq: u64, events: usize) -> u64 {
    client.send_json(serde_json::json!({"op": "subscribe", "resume": [{"symbol": SYMBOL, "seq": seq}], "id": 1}));
    let reply = client.recv();
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let resumed = client.recv();
    assert_eq!(resumed["type"], "resumed", "the events after its seq, no snapshot, no gap: {resumed}");
    assert_eq!(resumed["after_seq"].as_u64(), Some(seq), "{resumed}");
    let replayed = resumed["to_seq"].as_u64().unwrap() - seq;
    let mut last = seq;
    let mut seen = 0;
    while seen < events {
        let msg = client.recv();
        assert_ne!(msg["type"], "gap", "{msg}");
        assert_ne!(msg["type"], "snapshot", "{msg}");
        if msg["symbol"] == SYMBOL && is_event(&msg) {
            assert_eq!(msg["seq"].as_u64().unwrap(), last + 1, "contiguous across edges: {msg}");
            last += 1;
            seen += 1;
        }
    }
    replayed
}

#[test]
fn a_client_resumes_on_another_edge_with_nothing_missing() {
    let nats = NatsServer::start();
    let _publisher = start_gateway(on_bus(&nats, BusRole::Publisher));
    let edge_a = start_gateway(on_bus(&nats, BusRole::Edge));
    let edge_b = start_gateway(on_bus(&nats, BusRole::Edge));
    let mut client = TestClient::connect(edge_a.local_addr());
    let (_, snaps) = client.subscribe(&[SYMBOL]);
    let seen = collect(&mut client, snaps[0]["seq"].as_u64().unwrap() + 1, 30);
    let last = *seen.keys().last().unwrap();
    drop(client);
    // Away for a while: edge B sent on what the client missed.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut client = TestClient::connect(edge_b.local_addr());
    let replayed = resume_contiguous(&mut client, last, 100);
    assert!(replayed > 0, "events were missed meanwhile, and replayed by the other edge");
    let whole = r#"tickgate_resumes_total{outcome="whole"}"#;
    eventually("edge B counts the resume", || metric(edge_b.local_addr(), whole) >= Some(1.0));
}

#[test]
fn an_edge_started_after_the_client_left_resumes_it_from_the_stream() {
    let nats = NatsServer::start();
    let _publisher = start_gateway(on_bus(&nats, BusRole::Publisher));
    let edge_a = start_gateway(on_bus(&nats, BusRole::Edge));
    let mut client = TestClient::connect(edge_a.local_addr());
    let (_, snaps) = client.subscribe(&[SYMBOL]);
    let seen = collect(&mut client, snaps[0]["seq"].as_u64().unwrap() + 1, 30);
    let last = *seen.keys().last().unwrap();
    drop(client);
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Edge B starts now: what the client saw on A, and what came since, is only in the stream.
    let edge_b = start_gateway(on_bus(&nats, BusRole::Edge));
    let readyz = |addr| tickgate_testkit::http_request(addr, "GET /readyz HTTP/1.1\r\n\r\n");
    eventually("edge B read the stream's past", || readyz(edge_b.local_addr()).starts_with("HTTP/1.1 200"));
    let mut client = TestClient::connect(edge_b.local_addr());
    let replayed = resume_contiguous(&mut client, last, 100);
    assert!(replayed > 0, "events from before edge B started were replayed");
}
