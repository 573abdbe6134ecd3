//! `server.write_hold_max_us`: a busy reactor waits before its next write pass, so frames go out
//! in fewer writes; nothing is lost or reordered by the wait, replies still come, and with the
//! default (0) it never waits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tickgate_testkit::{TestClient, eventually, metric, start_gateway};

const HOLDS: &str = "tickgate_reactor_write_holds_total{reactor=\"0\"}";

/// A gateway with one reactor, kept busy: every client takes every symbol.
fn busy_gateway(write_hold_max_us: u64) -> (tickgate_server::Gateway, Vec<String>) {
    let gateway = start_gateway(|c| {
        c.server.reactors = 1;
        c.server.write_hold_max_us = write_hold_max_us;
        c.sim.symbols = 20;
        c.sim.rate = 5_000.0;
    });
    let names = gateway.symbols().iter().map(|(_, s)| s.name.to_string()).collect();
    (gateway, names)
}

/// Subscribes to `names` and reads for `window`, checking the stream's contract as it goes
/// (each symbol starts with its snapshot; every seq after it arrives once, in order, or is
/// accounted for by a gap or a conflated quote). Returns how many events arrived.
fn read_checked(addr: SocketAddr, names: &[String], window: Duration) -> u64 {
    let mut client = TestClient::connect(addr);
    client.send_json(json!({"op": "subscribe", "symbols": names, "id": 1}));
    let mut next: HashMap<String, u64> = HashMap::new();
    let (mut events, mut replied) = (0, false);
    let end = Instant::now() + window;
    while Instant::now() < end {
        let msg: Value = client.recv();
        let symbol = msg["symbol"].as_str().unwrap_or_default().to_string();
        match msg["type"].as_str().unwrap() {
            "subscribed" => replied = true,
            "snapshot" => {
                next.insert(symbol, msg["seq"].as_u64().unwrap() + 1);
            }
            "gap" => {
                let (from, to) = (msg["from_seq"].as_u64().unwrap(), msg["to_seq"].as_u64().unwrap());
                assert_eq!(Some(&from), next.get(&symbol), "{symbol}: the gap starts where the stream stopped");
                next.insert(symbol, to + 1);
            }
            "trade" | "quote" => {
                let seq = msg["seq"].as_u64().unwrap();
                let expected = *next.get(&symbol).unwrap_or_else(|| panic!("{symbol}: event before its snapshot"));
                let conflated = msg["conflated"].as_u64().unwrap_or(0);
                assert_eq!(seq, expected + conflated, "{symbol}: every seq arrives, in order");
                next.insert(symbol, seq + 1);
                events += 1;
            }
            _ => {}
        }
    }
    assert!(replied, "the subscribe was answered");
    assert_eq!(next.len(), names.len(), "a snapshot of every symbol");
    events
}

fn spawn_clients(addr: SocketAddr, names: &[String], clients: usize, window: Duration) -> Vec<JoinHandle<u64>> {
    (0..clients)
        .map(|_| {
            let names = names.to_vec();
            std::thread::spawn(move || read_checked(addr, &names, window))
        })
        .collect()
}

fn join(clients: Vec<JoinHandle<u64>>) -> Vec<u64> {
    clients.into_iter().map(|t| t.join().expect("the client's stream kept its contract")).collect()
}

#[test]
fn a_busy_reactor_holds_its_writes_back_and_loses_nothing() {
    let (gateway, names) = busy_gateway(5_000);
    let addr = gateway.local_addr();
    let busy = spawn_clients(addr, &names, 16, Duration::from_secs(2));
    eventually("the reactor holds", || metric(addr, HOLDS) > Some(0.0));
    // A client that arrives while the reactor holds is answered and streamed to all the same.
    let late = join(spawn_clients(addr, &names, 1, Duration::from_millis(500)));
    assert!(late[0] > 0, "the late client was streamed to");
    let events = join(busy);
    assert!(events.iter().all(|&n| n > 1_000), "every client was streamed to: {events:?}");
}

#[test]
fn with_the_default_a_reactor_never_holds() {
    let (gateway, names) = busy_gateway(tickgate_server::Config::default().server.write_hold_max_us);
    let addr = gateway.local_addr();
    let events = join(spawn_clients(addr, &names, 16, Duration::from_secs(1)));
    assert!(events.iter().all(|&n| n > 500), "every client was streamed to: {events:?}");
    eventually("the counters are published", || {
        metric(addr, "tickgate_reactor_turns_total{reactor=\"0\"}") > Some(0.0)
    });
    assert_eq!(metric(addr, HOLDS), Some(0.0));
}
