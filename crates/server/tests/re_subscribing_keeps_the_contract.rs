//! Through real sockets: a client behind its soft limit that re-subscribes the symbols it holds
//! still gets the snapshot and stream contract; a client that floods large commands without
//! reading stays within its hard limit and is closed as a slow consumer.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tickgate_server::Gateway;
use tickgate_testkit::{TestClient, eventually, start_gateway};
use tungstenite::Message;

fn names(gateway: &Gateway, n: usize) -> Vec<String> {
    gateway.symbols().iter().take(n).map(|(_, s)| s.name.to_string()).collect()
}

/// What the client holds of one symbol.
#[derive(Debug, Default)]
struct Held {
    seq: u64,
    /// A gap was read; the next message about the symbol must be a snapshot at or past this.
    gap_to: Option<u64>,
}

/// Checks one message against the contract; returns the id it answers, if any.
fn check(held: &mut BTreeMap<String, Held>, m: &Value) -> Option<u64> {
    let symbol = m["symbol"].as_str().unwrap_or_default();
    match m["type"].as_str().unwrap() {
        "trade" | "quote" => {
            let h = held.get_mut(symbol).expect("events only of subscribed symbols");
            assert_eq!(h.gap_to, None, "a snapshot follows a gap before any event: {m}");
            let seq = m["seq"].as_u64().unwrap();
            let conflated = m["conflated"].as_u64().unwrap_or(0);
            assert_eq!(seq, h.seq + 1 + conflated, "every missing seq is accounted for (held {}): {m}", h.seq);
            h.seq = seq;
        }
        "gap" => {
            let h = held.get_mut(symbol).unwrap();
            assert_eq!(m["from_seq"].as_u64(), Some(h.seq + 1), "a gap starts after what is held: {m}");
            h.gap_to = m["to_seq"].as_u64();
        }
        "snapshot" => {
            let h = held.get_mut(symbol).unwrap();
            let to = h.gap_to.take().expect("re-subscribing a held symbol sends no snapshot; only a gap does");
            let seq = m["seq"].as_u64().unwrap();
            assert!(seq >= to && seq >= h.seq, "snapshot {seq} older than its gap's end {to} or held {}", h.seq);
            h.seq = seq;
        }
        "upstream_gap" => {
            let h = &held[symbol];
            assert!(m["after_seq"].as_u64().unwrap() >= h.seq, "notice overtaken: {m} after holding {}", h.seq);
        }
        "subscribed" => return m["id"].as_u64(),
        "error" => {
            assert_eq!(m["code"], "backlogged", "{m}");
            return m["id"].as_u64();
        }
        other => panic!("unexpected {other}: {m}"),
    }
    None
}

#[test]
fn a_client_behind_that_re_subscribes_held_symbols_keeps_the_contract() {
    let gateway = start_gateway(|c| {
        c.server.reactors = 1;
        c.server.socket_send_buffer = 4096;
        c.limits.outbound_soft_limit = 8 * 1024;
        c.limits.outbound_hard_limit = 4 << 20;
        c.sim.symbols = 20;
        c.sim.rate = 20_000.0;
    });
    let symbols = names(&gateway, 10);
    let wanted: Vec<&str> = symbols.iter().map(String::as_str).collect();
    let mut client = TestClient::connect_with_receive_buffer(gateway.local_addr(), 4096);
    let (_, snapshots) = client.subscribe(&wanted);
    let mut held: BTreeMap<String, Held> = snapshots
        .iter()
        .map(|s| (s["symbol"].as_str().unwrap().to_string(), Held { seq: s["seq"].as_u64().unwrap(), gap_to: None }))
        .collect();
    // Stop reading; the queue fills past the soft limit and quotes are conflated.
    std::thread::sleep(Duration::from_millis(400));
    for id in 100..105 {
        client.send_json(json!({"op": "subscribe", "id": id, "symbols": wanted}));
        std::thread::sleep(Duration::from_millis(150));
    }
    // Read everything, checking each message, until every re-subscribe is answered and the
    // stream has run a while after.
    let mut answered = Vec::new();
    let (mut events, mut gaps) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline || answered.len() < 5 {
        let m = client.recv();
        events += u64::from(matches!(m["type"].as_str(), Some("trade" | "quote")));
        gaps += u64::from(m["type"] == "gap");
        if let Some(id) = check(&mut held, &m) {
            answered.push(id);
        }
    }
    assert_eq!(answered, (100..105).collect::<Vec<_>>(), "every re-subscribe answered, in order");
    assert!(events > 100, "the stream went on ({events} events, {gaps} gaps)");
    // Caught up, a re-subscribe is executed: `subscribed`, no snapshot, the stream goes on.
    // (Retried: on a busy machine the client may still be behind, and get `backlogged`.)
    let mut executed = false;
    for id in 200..220 {
        client.send_json(json!({"op": "subscribe", "id": id, "symbols": wanted}));
        let mut after = 0;
        while after < 200 {
            let m = client.recv();
            after += u32::from(matches!(m["type"].as_str(), Some("trade" | "quote")));
            if check(&mut held, &m) == Some(id) && m["type"] == "subscribed" {
                executed = true;
            }
        }
        if executed {
            break;
        }
    }
    assert!(executed, "a re-subscribe of a client that keeps up is executed");
}

/// This process's resident memory, in bytes (the gateway runs in it).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_client_flooding_large_commands_without_reading_stays_bounded_and_is_closed_as_slow() {
    let hard = 64 * 1024;
    let gateway = start_gateway(|c| {
        c.server.reactors = 1;
        c.server.socket_send_buffer = 4096;
        c.limits.outbound_soft_limit = 16 * 1024;
        c.limits.outbound_hard_limit = hard;
        c.limits.messages_per_second = 1e6;
        c.limits.message_burst = 1_000_000;
        c.limits.max_frames_per_second = 1_000_000;
        c.sim.symbols = 100;
        c.sim.rate = 1_000.0;
    });
    // 100 snapshots fit in the hard limit; every later subscribe re-subscribes held symbols.
    let symbols = names(&gateway, 100);
    let command = json!({"op": "subscribe", "symbols": symbols}).to_string();
    let mut client = TestClient::connect_with_receive_buffer(gateway.local_addr(), 4096);
    client.ws.get_ref().set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let before = resident_bytes();
    let mut peak = before;
    let mut sent = 0;
    for _ in 0..5_000 {
        if client.ws.send(Message::text(command.clone())).is_err() {
            break;
        }
        sent += 1;
        if sent % 100 == 0 {
            peak = peak.max(resident_bytes());
        }
    }
    // Past the soft limit its commands are refused (`backlogged`, one short error while behind),
    // so they cannot drive the queue past the hard limit; a client the ticks drive past it is
    // closed as a slow consumer. Either way, it is told.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut backlogged, mut close) = (false, None);
    while Instant::now() < deadline {
        match client.ws.read() {
            Ok(Message::Close(frame)) => {
                close = Some(frame.expect("a close frame with a code"));
                break;
            }
            Ok(Message::Text(text)) => backlogged |= text.contains("\"code\":\"backlogged\""),
            Ok(_) => {}
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
    peak = peak.max(resident_bytes());
    match close {
        Some(close) => {
            assert_eq!(u16::from(close.code), 1008);
            assert_eq!(close.reason.as_str(), "slow consumer");
            let closes = || -> u64 {
                gateway.stats().reactors.iter().map(|r| r.counters.slow_consumer_closes.load(Ordering::Relaxed)).sum()
            };
            eventually("the close is counted as a slow consumer's", || closes() == 1);
        }
        None => assert!(backlogged, "a client kept open past its soft limit was told its commands were refused"),
    }
    // Unbounded, the re-subscribes would queue 100 snapshots (about 30 KB) each.
    let grown = peak.saturating_sub(before);
    assert!(grown < 32 << 20, "resident memory grew by {grown} bytes over {sent} commands");
}

#[test]
fn unsubscribe_then_subscribe_gives_a_fresh_snapshot_the_stream_continues_from() {
    let gateway = start_gateway(|_| {});
    let mut client = TestClient::connect(gateway.local_addr());
    let (_, snapshots) = client.subscribe(&["AAPL"]);
    let first = snapshots[0]["seq"].as_u64().unwrap();
    client.send_json(json!({"op": "unsubscribe", "id": 1, "symbols": ["AAPL"]}));
    client.send_json(json!({"op": "subscribe", "id": 2, "symbols": ["AAPL"]}));
    // Events queued before the unsubscribe may come first; nothing of AAPL between the two
    // answers; then the snapshot, and the stream from right after it.
    while client.recv()["type"] != "unsubscribed" {}
    assert_eq!(client.recv()["type"], "subscribed", "nothing between the two answers");
    let snapshot = client.recv();
    assert_eq!(snapshot["type"], "snapshot");
    let held = snapshot["seq"].as_u64().unwrap();
    assert!(held >= first);
    for seq in held + 1..held + 21 {
        let event = client.recv();
        assert_eq!(event["seq"].as_u64(), Some(seq), "{event}");
    }
}
