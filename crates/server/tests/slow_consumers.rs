//! Slow consumers cost only their own budget: a stalled client is cut off with 1008 while the
//! healthy ones see no gap; a slow reader under `conflate` or `drop` gets every event, a
//! superseded quote, or an announced gap, and seq never goes back.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tickgate_server::{Config, Gateway};
use tickgate_testkit::{TestClient, eventually, now_ns, start_gateway};
use tungstenite::Message;

fn tight_budget(c: &mut Config) {
    c.server.reactors = 1;
    c.server.socket_send_buffer = 16 * 1024;
    c.limits.outbound_soft_limit = 16 * 1024;
    c.limits.outbound_hard_limit = 64 * 1024;
    c.sim.symbols = 20;
    c.sim.rate = 20_000.0;
}

fn names(gateway: &Gateway, n: usize) -> Vec<String> {
    gateway.symbols().iter().take(n).map(|(_, s)| s.name.to_string()).collect()
}

fn counter(gateway: &Gateway, f: impl Fn(&tickgate_server::stats::ReactorCounters) -> &AtomicU64) -> u64 {
    gateway.stats().reactors.iter().map(|r| f(&r.counters).load(Ordering::Relaxed)).sum()
}

/// A healthy client reading on its own thread: checks seq contiguity and records latency.
struct Healthy {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, u64, Vec<u64>)>,
}

fn healthy(gateway: &Gateway, symbols: &[String]) -> Healthy {
    let mut client = TestClient::connect(gateway.local_addr());
    let wanted: Vec<&str> = symbols.iter().map(String::as_str).collect();
    let (_, snaps) = client.subscribe(&wanted);
    let mut next: HashMap<String, u64> =
        snaps.iter().map(|s| (s["symbol"].as_str().unwrap().to_string(), s["seq"].as_u64().unwrap() + 1)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let handle = std::thread::spawn(move || {
        let (mut events, mut gaps, mut latencies) = (0u64, 0u64, Vec::new());
        while !stopping.load(Ordering::Relaxed) {
            let msg = client.recv();
            match msg["type"].as_str().unwrap() {
                "trade" | "quote" => {
                    let symbol = msg["symbol"].as_str().unwrap();
                    let seq = msg["seq"].as_u64().unwrap();
                    let expected = next.get_mut(symbol).unwrap();
                    // A healthy reader on a loaded machine may fall past the soft limit itself:
                    // quotes it skips are then accounted for by `conflated`, which is the
                    // contract. Anything else is a gap.
                    let conflated = msg["conflated"].as_u64().unwrap_or(0);
                    if seq != *expected + conflated {
                        gaps += 1;
                    }
                    *expected = seq + 1;
                    events += 1;
                    latencies.push(now_ns().saturating_sub(msg["gw_ts"].as_u64().unwrap()));
                }
                "gap" => gaps += 1,
                _ => {}
            }
        }
        (events, gaps, latencies)
    });
    Healthy { stop, handle }
}

#[test]
fn a_stalled_client_is_cut_off_and_the_healthy_ones_see_no_gap() {
    let gateway = start_gateway(|c| {
        tight_budget(c);
        // Room for healthy readers on a busy machine; the stalled one is cut by the deadline.
        c.limits.outbound_soft_limit = 256 * 1024;
        c.limits.outbound_hard_limit = 1024 * 1024;
        c.limits.write_deadline_ms = 1_000;
    });
    let symbols = names(&gateway, 20);
    // Healthy clients watch a quarter of the market each; the stalled one watches all of it.
    let readers: Vec<Healthy> = (0..4).map(|i| healthy(&gateway, &symbols[i * 5..i * 5 + 5])).collect();

    let mut stalled = TestClient::connect_with_receive_buffer(gateway.local_addr(), 4096);
    let wanted: Vec<&str> = symbols.iter().map(String::as_str).collect();
    stalled.subscribe(&wanted);
    // From here on the stalled client reads nothing.
    let started = Instant::now();
    let mut max_queued = 0;
    eventually("the stalled client is closed as a slow consumer", || {
        max_queued = max_queued.max(gateway.stats().reactors[0].queued_bytes.load(Ordering::Relaxed));
        counter(&gateway, |c| &c.slow_consumer_closes) == 1
    });
    let cut_after = started.elapsed();
    assert!(cut_after < Duration::from_secs(8), "cut off by the deadline, not later: {cut_after:?}");
    // 5 connections' budgets at most (the gauge is sampled, so this is what it saw).
    assert!(max_queued <= 5 * 1024 * 1024, "queued bytes bounded by the budgets: {max_queued}");
    eventually("its connection and subscriptions are freed", || {
        let r = &gateway.stats().reactors[0];
        r.connections.load(Ordering::Relaxed) == 4 && r.subscriptions.load(Ordering::Relaxed) == 4 * 5
    });

    // What the stalled client finds when it finally reads: old ticks, then 1008 (or, if not even
    // the close frame fitted, the end of the connection).
    let close = loop {
        match stalled.ws.read() {
            Ok(Message::Close(frame)) => break frame,
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    if let Some(frame) = close {
        assert_eq!(u16::from(frame.code), 1008);
        assert_eq!(frame.reason, "slow consumer");
    }

    // Let the healthy clients run on a little, then check them.
    std::thread::sleep(Duration::from_millis(500));
    for r in readers {
        r.stop.store(true, Ordering::Relaxed);
        let (events, gaps, mut latencies) = r.handle.join().unwrap();
        assert!(events > 500, "healthy clients kept receiving: {events}");
        assert_eq!(gaps, 0, "healthy clients see no gap");
        latencies.sort_unstable();
        let p99 = latencies[latencies.len() * 99 / 100];
        assert!(p99 < 500_000_000, "healthy p99 {p99} ns within a generous bound");
    }
}

#[test]
fn a_client_reading_slowly_but_steadily_behind_a_full_kernel_buffer_is_kept() {
    let gateway = start_gateway(|c| {
        c.server.reactors = 1;
        // A kernel buffer that takes this client seconds to drain: Linux reports the socket
        // writable again only once a third of it drained, so no write goes through for far
        // longer than the write deadline while the client reads all along.
        c.server.socket_send_buffer = 256 * 1024;
        c.limits.outbound_soft_limit = 64 * 1024;
        c.limits.outbound_hard_limit = 512 * 1024;
        c.limits.write_deadline_ms = 1_000;
        c.sim.symbols = 2;
        c.sim.rate = 20_000.0;
        c.history.max_events_per_symbol = 1 << 20;
        c.history.max_bytes_per_symbol = 512 << 20;
        c.history.max_events = 1 << 21;
        c.history.max_bytes = 1 << 30;
    });
    let symbol = names(&gateway, 1).remove(0);
    // A resume far back: a replay, which only the client's reading moves (no live event of the
    // symbol is offered meanwhile, so nothing else makes the gateway try to write).
    std::thread::sleep(Duration::from_millis(200));
    let (_, snapshots) = TestClient::connect(gateway.local_addr()).subscribe(&[&symbol]);
    let held = snapshots[0]["seq"].as_u64().unwrap().max(1);
    std::thread::sleep(Duration::from_millis(1_500));
    let mut client = TestClient::connect_with_receive_buffer(gateway.local_addr(), 4096);
    client.send_json(json!({"op": "subscribe", "resume": [{"symbol": symbol, "seq": held}], "id": 1}));
    // About 200 messages a second, never pausing: tens of KB/s against a buffer of 512 KiB.
    let started = Instant::now();
    let mut received = 0u64;
    let mut last_seq = held;
    while started.elapsed() < Duration::from_secs(8) {
        let Ok(m) = client.try_recv_for(Duration::from_secs(2)) else {
            panic!(
                "the steady reader was cut off after {:?}, {received} messages, at seq {last_seq}; slow consumers closed: {}",
                started.elapsed(),
                counter(&gateway, |c| &c.slow_consumer_closes)
            )
        };
        if let Some(seq) = m["seq"].as_u64().filter(|_| m["type"] == "trade" || m["type"] == "quote") {
            last_seq = seq;
        }
        received += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(counter(&gateway, |c| &c.slow_consumer_closes), 0, "kept; it read {received} messages");
    assert!(received > 500, "it read all along: {received}");
    // Still replaying at the end: the replay was behind the full kernel buffer all along.
    let (_, now) = TestClient::connect(gateway.local_addr()).subscribe(&[&symbol]);
    assert!(now[0]["seq"].as_u64().unwrap() > last_seq + 5_000, "still replaying, at {last_seq}");
}

/// Reads everything a client receives for a while, slowly, then fast until it has caught up.
fn read_slowly(client: &mut TestClient, slow_for: Duration) -> Vec<Value> {
    let mut messages = Vec::new();
    let start = Instant::now();
    while start.elapsed() < slow_for {
        messages.push(client.recv());
        std::thread::sleep(Duration::from_micros(1500));
    }
    // Catch up: read until events are fresh for a while.
    let mut fresh_since: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let msg = client.recv();
        let fresh = msg["gw_ts"].as_u64().is_some_and(|gw| now_ns().saturating_sub(gw) < 100_000_000);
        messages.push(msg);
        match (fresh, fresh_since) {
            (true, None) => fresh_since = Some(Instant::now()),
            (true, Some(t)) if t.elapsed() > Duration::from_millis(500) => return messages,
            (false, _) => fresh_since = None,
            _ => {}
        }
    }
    panic!("the slow client never caught up");
}

/// Symbol -> seq -> whether that event was a trade.
type Kinds = BTreeMap<String, BTreeMap<u64, bool>>;

/// Records every event of a reference client.
fn reference(gateway: &Gateway, symbols: &[String]) -> (Arc<AtomicBool>, Arc<Mutex<Kinds>>) {
    let mut client = TestClient::connect(gateway.local_addr());
    let wanted: Vec<&str> = symbols.iter().map(String::as_str).collect();
    client.subscribe(&wanted);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Kinds::new()));
    let (stopping, record) = (stop.clone(), seen.clone());
    std::thread::spawn(move || {
        while !stopping.load(Ordering::Relaxed) {
            let msg = client.recv();
            if let ("trade" | "quote", Some(symbol), Some(seq)) =
                (msg["type"].as_str().unwrap(), msg["symbol"].as_str(), msg["seq"].as_u64())
            {
                record.lock().unwrap().entry(symbol.to_string()).or_default().insert(seq, msg["type"] == "trade");
            }
        }
    });
    (stop, seen)
}

/// Checks a slow client's stream against the contract; returns (conflated quotes, gaps).
fn check_contract(messages: &[Value], kinds: &Kinds) -> (u64, u64) {
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut after_gap: HashMap<String, u64> = HashMap::new();
    let (mut conflated_total, mut gaps) = (0, 0);
    for msg in messages {
        let symbol = msg["symbol"].as_str().unwrap_or_default().to_string();
        match msg["type"].as_str().unwrap() {
            "snapshot" => {
                let seq = msg["seq"].as_u64().unwrap();
                if let Some(to) = after_gap.remove(&symbol) {
                    assert_eq!(seq, to, "{symbol}: the snapshot after a gap is as of the gap's end");
                }
                next.insert(symbol, seq + 1);
            }
            "gap" => {
                let (from, to) = (msg["from_seq"].as_u64().unwrap(), msg["to_seq"].as_u64().unwrap());
                assert_eq!(msg["reason"], "slow_consumer");
                assert_eq!(Some(&from), next.get(&symbol), "{symbol}: the gap starts where the stream stopped");
                assert!(to >= from);
                next.insert(symbol.clone(), to + 1);
                after_gap.insert(symbol, to);
                gaps += 1;
            }
            "trade" | "quote" => {
                let seq = msg["seq"].as_u64().unwrap();
                let expected = *next.get(&symbol).expect("events only after the snapshot");
                assert!(seq >= expected, "{symbol}: seq went back from {expected} to {seq}");
                let conflated = msg["conflated"].as_u64().unwrap_or(0);
                assert_eq!(seq - expected, conflated, "{symbol}: every skipped seq is a superseded quote");
                if conflated > 0 {
                    assert_eq!(msg["type"], "quote", "only quotes conflate");
                    let known = &kinds[&symbol];
                    for s in expected..seq {
                        if let Some(&is_trade) = known.get(&s) {
                            assert!(!is_trade, "{symbol}: trade {s} was merged away");
                        }
                    }
                }
                conflated_total += conflated;
                next.insert(symbol, seq + 1);
            }
            _ => {}
        }
    }
    (conflated_total, gaps)
}

/// A gateway with a tight budget, a reference client recording every event of 8 symbols, and a
/// client with `policy` that reads those symbols slowly and then catches up; returns what the
/// slow client received checked against the contract: (conflated quotes, gaps).
fn slow_client_under(policy: &str) -> (Gateway, u64, u64) {
    let gateway = start_gateway(|c| {
        tight_budget(c);
        c.limits.write_deadline_ms = 60_000;
    });
    let symbols = names(&gateway, 8);
    let (stop, kinds) = reference(&gateway, &symbols);
    let mut slow = TestClient::connect_with_receive_buffer(gateway.local_addr(), 4096);
    slow.send_json(json!({"op":"subscribe","symbols":symbols,"policy":policy}));
    assert_eq!(slow.recv_type("subscribed")["policy"], policy);
    let messages = read_slowly(&mut slow, Duration::from_secs(3));
    // Let the reference client see the events the slow one ended on.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (conflated, gaps) = check_contract(&messages, &kinds.lock().unwrap());
    (gateway, conflated, gaps)
}

#[test]
fn conflate_replaces_superseded_quotes_and_announces_dropped_trades() {
    let (gateway, conflated, _gaps) = slow_client_under("conflate");
    assert!(conflated > 0, "the slow client was far enough behind to conflate");
    assert!(counter(&gateway, |c| &c.conflated) > 0);
    assert_eq!(counter(&gateway, |c| &c.slow_consumer_closes), 0, "conflation kept it connected");
}

#[test]
fn drop_announces_every_missing_seq_then_a_snapshot() {
    let (gateway, conflated, gaps) = slow_client_under("drop");
    assert_eq!(conflated, 0, "drop never conflates");
    assert!(gaps > 0, "the slow client was far enough behind to drop");
    assert!(counter(&gateway, |c| &c.dropped) > 0);
    assert!(counter(&gateway, |c| &c.slow_gaps_sent) > 0);
}

#[test]
fn disconnect_policy_closes_with_1008_past_the_soft_limit() {
    let gateway = start_gateway(|c| {
        tight_budget(c);
        c.limits.write_deadline_ms = 60_000;
    });
    let symbols = names(&gateway, 20);
    let mut slow = TestClient::connect_with_receive_buffer(gateway.local_addr(), 4096);
    slow.send_json(json!({"op":"subscribe","symbols":symbols,"policy":"disconnect"}));
    assert_eq!(slow.recv_type("subscribed")["policy"], "disconnect");
    eventually("closed as a slow consumer", || counter(&gateway, |c| &c.slow_consumer_closes) == 1);
}
