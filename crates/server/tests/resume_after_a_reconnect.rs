//! Through real sockets: a client that disconnects, misses events and resumes after the last seq
//! it holds gets every event it missed and then the live stream, with no snapshot and no gap; a
//! client whose seq the history no longer reaches gets a gap "history" and a snapshot; a seq past
//! the gateway's gets a gap "ahead" and a snapshot; bad resumes get a clear error.

use serde_json::{Value, json};
use tickgate_server::Gateway;
use tickgate_testkit::{TestClient, eventually, metric, start_gateway};

fn first_symbol(gateway: &Gateway) -> String {
    gateway.symbols().iter().next().map(|(_, s)| s.name.to_string()).unwrap()
}

/// Subscribes `symbol` and reads its events until it holds at least `seq`; returns what it holds.
fn hold_until(client: &mut TestClient, symbol: &str, seq: u64) -> u64 {
    let (_, snapshots) = client.subscribe(&[symbol]);
    let mut held = snapshots[0]["seq"].as_u64().unwrap();
    while held < seq {
        let m = client.recv();
        if m["symbol"] == symbol && (m["type"] == "trade" || m["type"] == "quote") {
            held = m["seq"].as_u64().unwrap();
        }
    }
    held
}

/// The next event of `symbol` seen by `observer`, skipping what is not about it.
fn next_event(observer: &mut TestClient, symbol: &str) -> Value {
    loop {
        let m = observer.recv();
        if m["symbol"] == symbol {
            return m;
        }
    }
}

/// Reads `client`'s messages about `symbol` from `held` on, until it holds `until`, checking that
/// every seq it does not get is a superseded quote (`conflated`): no gap, no snapshot.
fn read_contiguous(client: &mut TestClient, symbol: &str, mut held: u64, until: u64) -> u64 {
    while held < until {
        let m = client.recv();
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

/// A client holds `symbol`, disconnects, and misses 40 events or more (an observer sees them);
/// a new connection then resumes after what it held. Returns what it held, the newest seq the
/// observer saw, and the new connection.
fn away_then_resume(gateway: &Gateway, symbol: &str) -> (u64, u64, TestClient) {
    let mut observer = TestClient::connect(gateway.local_addr());
    observer.subscribe(&[symbol]);
    let mut first = TestClient::connect(gateway.local_addr());
    let held = hold_until(&mut first, symbol, 1);
    drop(first);
    let mut newest = held;
    while newest < held + 40 {
        newest = next_event(&mut observer, symbol)["seq"].as_u64().unwrap_or(newest);
    }
    let mut again = TestClient::connect(gateway.local_addr());
    again.send_json(json!({"op": "subscribe", "resume": [{"symbol": symbol, "seq": held}], "id": 1}));
    (held, newest, again)
}

#[test]
fn a_client_that_reconnects_resumes_with_nothing_missed() {
    let gateway = start_gateway(|_| {});
    let symbol = first_symbol(&gateway);
    let (held, newest, mut again) = away_then_resume(&gateway, &symbol);
    let subscribed = again.recv();
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["symbols"], json!([symbol]));
    let resumed = again.recv();
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["after_seq"].as_u64(), Some(held));
    let to_seq = resumed["to_seq"].as_u64().unwrap();
    assert!(to_seq >= newest, "the replay reaches what the gateway sent meanwhile ({to_seq} < {newest})");
    // The replay, then the live stream, without a hole.
    read_contiguous(&mut again, &symbol, held, to_seq + 40);
    eventually("counted", || metric(gateway.local_addr(), "tickgate_resumes_total{outcome=\"whole\"}") == Some(1.0));
    assert!(metric(gateway.local_addr(), "tickgate_resume_replayed_events_total").unwrap() >= 1.0);
    assert!(metric(gateway.local_addr(), "tickgate_history_bytes{reactor=\"0\"}").unwrap() > 0.0);
}

#[test]
fn a_seq_the_history_no_longer_reaches_gets_a_gap_and_a_snapshot() {
    let gateway = start_gateway(|c| c.history.max_events_per_symbol = 8);
    let symbol = first_symbol(&gateway);
    let (held, _newest, mut again) = away_then_resume(&gateway, &symbol);
    assert_eq!(again.recv()["type"], "subscribed");
    let gap = again.recv();
    assert_eq!((gap["type"].as_str(), gap["reason"].as_str()), (Some("gap"), Some("history")), "{gap}");
    assert_eq!(gap["from_seq"].as_u64(), Some(held + 1));
    let snapshot = again.recv();
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    let at = snapshot["seq"].as_u64().unwrap();
    assert_eq!(gap["to_seq"].as_u64(), Some(at), "the gap ends where the snapshot stands");
    read_contiguous(&mut again, &symbol, at, at + 20);
    eventually("counted", || metric(gateway.local_addr(), "tickgate_resumes_total{outcome=\"history\"}") == Some(1.0));
    eventually("counted", || metric(gateway.local_addr(), "tickgate_gaps_sent_total{reason=\"history\"}") == Some(1.0));
}

#[test]
fn a_seq_ahead_of_the_gateway_gets_a_gap_ahead_and_a_snapshot() {
    let gateway = start_gateway(|_| {});
    let symbol = first_symbol(&gateway);
    let ahead = 1_000_000_000_000u64;
    let mut client = TestClient::connect(gateway.local_addr());
    client.send_json(json!({"op": "subscribe", "resume": [{"symbol": symbol, "seq": ahead}], "id": 1}));
    assert_eq!(client.recv()["type"], "subscribed");
    let gap = client.recv();
    assert_eq!((gap["type"].as_str(), gap["reason"].as_str()), (Some("gap"), Some("ahead")), "{gap}");
    assert_eq!(gap["to_seq"].as_u64(), Some(ahead));
    let snapshot = client.recv();
    assert_eq!(snapshot["type"], "snapshot");
    let at = snapshot["seq"].as_u64().unwrap();
    assert_eq!(gap["from_seq"].as_u64(), Some(at + 1), "the gap starts after the gateway's newest event");
    read_contiguous(&mut client, &symbol, at, at + 10);
    eventually("counted", || metric(gateway.local_addr(), "tickgate_resumes_total{outcome=\"ahead\"}") == Some(1.0));
}

/// The largest seq there is: a defined answer (the gateway is behind it), nothing overflows.
#[test]
fn the_largest_seq_is_ahead_and_a_symbol_named_twice_resumes_once() {
    let gateway = start_gateway(|_| {});
    let symbol = first_symbol(&gateway);
    let mut client = TestClient::connect(gateway.local_addr());
    client.send_json(json!({"op": "subscribe", "resume": [{"symbol": symbol, "seq": u64::MAX}], "id": 1}));
    assert_eq!(client.recv()["type"], "subscribed");
    let gap = client.recv();
    assert_eq!((gap["reason"].as_str(), gap["to_seq"].as_u64()), (Some("ahead"), Some(u64::MAX)), "{gap}");
    assert_eq!(client.recv()["type"], "snapshot");
    // A symbol both in `symbols` and in `resume`: subscribed once, and resumed (once the
    // gateway has its event 1: before, seq 1 is ahead of it).
    eventually("the symbol has an event", || {
        let (_, snapshots) = TestClient::connect(gateway.local_addr()).subscribe(&[&symbol]);
        snapshots[0]["seq"].as_u64().is_some_and(|seq| seq >= 1)
    });
    let mut client = TestClient::connect(gateway.local_addr());
    client
        .send_json(json!({"op": "subscribe", "symbols": [symbol], "resume": [{"symbol": symbol, "seq": 1}], "id": 2}));
    let subscribed = client.recv();
    assert_eq!(subscribed["symbols"], json!([symbol]), "{subscribed}");
    let answer = client.recv();
    assert!(answer["type"] == "resumed" || answer["reason"] == "history", "{answer}");
    let resumes =
        |outcome: &str| metric(gateway.local_addr(), &format!("tickgate_resumes_total{{outcome=\"{outcome}\"}}"));
    eventually("counted", || {
        resumes("ahead") == Some(1.0) && resumes("whole").unwrap_or(0.0) + resumes("history").unwrap_or(0.0) == 1.0
    });
}

#[test]
fn bad_resumes_get_a_clear_error_and_the_connection_goes_on() {
    let gateway = start_gateway(|_| {});
    let symbol = first_symbol(&gateway);
    let mut client = TestClient::connect(gateway.local_addr());
    let cases = [
        (json!([{"symbol": symbol, "seq": 0}]), "bad_request", "at least 1"),
        (json!([{"symbol": symbol, "seq": -4}]), "bad_request", "at least 1"),
        (json!([{"symbol": symbol, "seq": 2.5}]), "bad_request", "must be an integer"),
        (json!([{"symbol": symbol, "seq": "12"}]), "bad_request", "must be an integer"),
        (json!([{"symbol": symbol, "seq": 1e30}]), "bad_request", "must be an integer"),
        (json!([{"symbol": symbol, "seq": 3}, {"symbol": symbol, "seq": 4}]), "bad_request", "more than once"),
        (json!({"AAPL": 3}), "bad_request", "must be an array"),
        (json!([{"symbol": "NOPE", "seq": 3}]), "unknown_symbol", "NOPE"),
    ];
    for (i, (resume, code, text)) in cases.into_iter().enumerate() {
        client.send_json(json!({"op": "subscribe", "resume": resume, "id": i}));
        let m = client.recv();
        assert_eq!(
            (m["type"].as_str(), m["code"].as_str(), m["id"].as_u64()),
            (Some("error"), Some(code), Some(i as u64)),
            "{m}"
        );
        assert!(m["message"].as_str().unwrap().contains(text), "{m}");
    }
    // Past what a u64 holds (2^64 here): out of range, answered with the id.
    client.send_text(&format!(
        r#"{{"op":"subscribe","resume":[{{"symbol":"{symbol}","seq":18446744073709551616}}],"id":99}}"#
    ));
    let m = client.recv();
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str(), m["id"].as_u64()),
        (Some("error"), Some("bad_request"), Some(99)),
        "{m}"
    );
    assert!(m["message"].as_str().unwrap().contains("is out of range"), "{m}");
    // The connection is unharmed: a plain subscribe works.
    let (reply, snapshots) = client.subscribe(&[&symbol]);
    assert_eq!(reply["symbols"], json!([symbol]));
    assert_eq!(snapshots.len(), 1);
    // What cannot be parsed is counted as an invalid command; the unknown symbol as a failed subscribe.
    let invalid = "tickgate_commands_total{op=\"invalid\",result=\"error\"}";
    eventually("each malformed resume counted", || metric(gateway.local_addr(), invalid) == Some(8.0));
    let failed = "tickgate_commands_total{op=\"subscribe\",result=\"error\"}";
    eventually("the unknown symbol counted", || metric(gateway.local_addr(), failed) == Some(1.0));
}
