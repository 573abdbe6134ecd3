//! Through real sockets: a resume thousands of events back is replayed over many reactor turns,
//! through the client's queue and slow-consumer policy. A client reading slowly gets every
//! event, then the live stream, with no hole; a healthy client on the same reactor sees no gap
//! and the reactor keeps answering meanwhile; a client that resumes and does not read gets its
//! policy's answer, never an unbounded queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tickgate_server::{Config, Gateway};
use tickgate_testkit::{TestClient, eventually, metric, start_gateway};

/// The outbound soft limit of these tests: a replay of thousands of events is many times it.
const SOFT: usize = 64 * 1024;

/// One reactor, two symbols at about 5,000 events a second each, a history long enough for
/// tens of seconds of them, and a small outbound budget.
fn long_history(c: &mut Config) {
    c.server.reactors = 1;
    c.server.socket_send_buffer = 16 * 1024;
    c.limits.outbound_soft_limit = SOFT;
    c.limits.outbound_hard_limit = 8 * SOFT;
    c.sim.symbols = 2;
    c.sim.rate = 10_000.0;
    c.history.max_events_per_symbol = 1 << 20;
    c.history.max_bytes_per_symbol = 512 << 20;
    c.history.max_events = 1 << 21;
    c.history.max_bytes = 1 << 30;
}

fn symbols(gateway: &Gateway) -> Vec<String> {
    gateway.symbols().iter().map(|(_, s)| s.name.to_string()).collect()
}

/// The seq of an event of `symbol` now, and a second later the seq it reached.
fn a_second_of_history(gateway: &Gateway, symbol: &str) -> (u64, u64) {
    let mut observer = TestClient::connect(gateway.local_addr());
    observer.subscribe(&[symbol]);
    let held = loop {
        let m = observer.recv();
        if m["symbol"] == symbol && (m["type"] == "trade" || m["type"] == "quote") {
            break m["seq"].as_u64().unwrap();
        }
    };
    thread::sleep(Duration::from_millis(1_200));
    let (_, snapshots) = TestClient::connect(gateway.local_addr()).subscribe(&[symbol]);
    (held, snapshots[0]["seq"].as_u64().unwrap())
}

/// A client subscribed to `symbol`, reading on its own thread: counts the events it gets and
/// the seqs it misses (a superseded quote, counted in `conflated`, is not a miss).
fn healthy(gateway: &Gateway, symbol: &str) -> (Arc<AtomicBool>, thread::JoinHandle<(u64, u64)>) {
    let mut client = TestClient::connect(gateway.local_addr());
    let (_, snapshots) = client.subscribe(&[symbol]);
    let mut next: Vec<(String, u64)> =
        snapshots.iter().map(|s| (s["symbol"].as_str().unwrap().to_string(), s["seq"].as_u64().unwrap() + 1)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let handle = thread::spawn(move || {
        let (mut events, mut missed) = (0, 0);
        while !stopping.load(Ordering::Relaxed) {
            let m = client.recv();
            match m["type"].as_str().unwrap() {
                "trade" | "quote" => {
                    let expected = next.iter_mut().find(|(s, _)| m["symbol"] == **s).map(|(_, n)| n).unwrap();
                    let seq = m["seq"].as_u64().unwrap();
                    if seq != *expected + m["conflated"].as_u64().unwrap_or(0) {
                        missed += 1;
                    }
                    *expected = seq + 1;
                    events += 1;
                }
                "gap" => missed += 1,
                _ => {}
            }
        }
        (events, missed)
    });
    (stop, handle)
}

/// Another client asking the reactor something over and over: the slowest answer.
fn prober(gateway: &Gateway) -> (Arc<AtomicBool>, thread::JoinHandle<Duration>) {
    let mut client = TestClient::connect(gateway.local_addr());
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let handle = thread::spawn(move || {
        let mut slowest = Duration::ZERO;
        while !stopping.load(Ordering::Relaxed) {
            let asked = Instant::now();
            client.send_json(json!({"op": "list_subscriptions"}));
            assert_eq!(client.recv()["type"], "subscriptions");
            slowest = slowest.max(asked.elapsed());
            thread::sleep(Duration::from_millis(20));
        }
        slowest
    });
    (stop, handle)
}

/// Reads `symbol`'s events from `held` on until `until`, slowly (a pause every few messages)
/// or not, checking that every seq not received is a superseded quote: no gap, no snapshot.
fn read_contiguously(client: &mut TestClient, symbol: &str, mut held: u64, until: u64, slowly: bool) -> u64 {
    let mut read = 0u64;
    while held < until {
        let m = client.recv();
        read += 1;
        if slowly && read % 16 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        if m["symbol"] != symbol {
            continue;
        }
        let kind = m["type"].as_str().unwrap();
        assert!(kind == "trade" || kind == "quote", "only events after a whole resume: {m}");
        let seq = m["seq"].as_u64().unwrap();
        let conflated = m["conflated"].as_u64().unwrap_or(0);
        assert_eq!(seq, held + 1 + conflated, "contiguous after {held}: {m}");
        held = seq;
    }
    held
}

fn expect(client: &mut TestClient, kind: &str) -> Value {
    let m = client.recv();
    assert_eq!(m["type"], kind, "{m}");
    m
}

#[test]
fn a_slow_reader_resuming_far_back_gets_everything_and_nobody_else_waits() {
    let gateway = start_gateway(long_history);
    let (symbol, other) = (symbols(&gateway)[0].clone(), symbols(&gateway)[1].clone());
    let (held, newest) = a_second_of_history(&gateway, &symbol);
    assert!(newest - held > 2_000, "thousands of events to replay: {held}..{newest}");
    let (healthy_stop, healthy) = healthy(&gateway, &other);
    let (prober_stop, prober) = prober(&gateway);

    let mut slow = TestClient::connect_with_receive_buffer(gateway.local_addr(), 4096);
    slow.send_json(json!({"op": "subscribe", "resume": [{"symbol": symbol, "seq": held}], "id": 1}));
    expect(&mut slow, "subscribed");
    let resumed = expect(&mut slow, "resumed");
    assert_eq!(resumed["after_seq"].as_u64(), Some(held));
    let to_seq = resumed["to_seq"].as_u64().unwrap();
    assert!(to_seq >= newest, "{resumed}");
    // The whole replay, then a thousand live events, without a hole.
    let mut reached = read_contiguously(&mut slow, &symbol, held, to_seq + 1_000, true);
    // Reading at full speed, it catches up with the live stream: the replay is over.
    let addr = gateway.local_addr();
    let replaying = || metric(addr, "tickgate_resume_replays{reactor=\"0\"}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while replaying() != Some(0.0) {
        assert!(Instant::now() < deadline, "the replay never caught up");
        reached = read_contiguously(&mut slow, &symbol, reached, reached + 500, false);
    }
    reached = read_contiguously(&mut slow, &symbol, reached, reached + 500, false);

    healthy_stop.store(true, Ordering::Relaxed);
    prober_stop.store(true, Ordering::Relaxed);
    let (events, missed) = healthy.join().unwrap();
    let slowest = prober.join().unwrap();
    assert!(events > 1_000, "the healthy client was served: {events} events");
    assert_eq!(missed, 0, "the healthy client missed nothing");
    assert!(slowest < Duration::from_secs(2), "the reactor kept answering: slowest {slowest:?}");
    let replayed = metric(addr, "tickgate_resume_replayed_events_total").unwrap();
    assert!(replayed >= (to_seq - held) as f64 * 0.5, "{replayed} replayed of {}", to_seq - held);
    assert_eq!(metric(addr, "tickgate_resume_replays_cut_total"), Some(0.0));
    assert!(reached > to_seq);
    let slow_closes = gateway.stats().reactors[0].counters.slow_consumer_closes.load(Ordering::Relaxed);
    assert_eq!(slow_closes, 0);
}

#[test]
fn a_client_that_resumes_and_does_not_read_gets_its_policy() {
    let gateway = start_gateway(|c| {
        long_history(c);
        c.limits.write_deadline_ms = 2_000;
    });
    let addr = gateway.local_addr();
    let symbol = symbols(&gateway)[0].clone();
    let (held, _) = a_second_of_history(&gateway, &symbol);
    let resume =
        |policy: &str| json!({"op": "subscribe", "policy": policy, "resume": [{"symbol": symbol, "seq": held}]});
    let closes = || gateway.stats().reactors[0].counters.slow_consumer_closes.load(Ordering::Relaxed);

    // `disconnect`: closed with 1008 as soon as the replay takes its queue past the soft limit.
    let mut stalled = TestClient::connect_with_receive_buffer(addr, 4096);
    stalled.send_json(resume("disconnect"));
    eventually("closed as a slow consumer", || closes() == 1);
    let close = stalled.recv_close().expect("a close frame");
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert_eq!(close.reason, "slow consumer");
    let replaying = || metric(addr, "tickgate_resume_replays{reactor=\"0\"}");
    eventually("a closed connection's replay is forgotten", || replaying() == Some(0.0));

    // `drop`: the replay waits at the soft limit while the client does not read (its queue stays
    // there), and goes on when it reads: every event, then live.
    let mut paused = TestClient::connect_with_receive_buffer(addr, 4096);
    paused.send_json(resume("drop"));
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(50));
        let queued = metric(addr, "tickgate_outbound_queued_bytes{reactor=\"0\"}").unwrap();
        assert!(queued <= (SOFT + 2048) as f64, "{queued} bytes queued");
    }
    assert!(replaying().unwrap() >= 1.0, "still replaying");
    expect(&mut paused, "subscribed");
    let to_seq = expect(&mut paused, "resumed")["to_seq"].as_u64().unwrap();
    read_contiguously(&mut paused, &symbol, held, to_seq + 500, true);
    drop(paused);

    // `conflate`, never reading: closed at the write deadline, as with live events.
    let mut stalled = TestClient::connect_with_receive_buffer(addr, 4096);
    stalled.send_json(resume("conflate"));
    eventually("closed at the write deadline", || closes() == 2);
    assert_eq!(u16::from(stalled.recv_close().expect("a close frame").code), 1008);
}
