//! Channels through real sockets: a client subscribed to one channel of a symbol gets only
//! that channel's events, and every seq it skips is an event of the other channel (checked
//! against a client on both channels of the same gateway); adding a channel sends a snapshot,
//! dropping one keeps the other; a malformed `channels` gets a clear error and a counted metric.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tickgate_testkit::{TestClient, metric, start_gateway};

/// Reads events of `symbol` for `secs` seconds (at least `min` events), returning seq -> type.
/// Checks that seq rises and nothing but events arrives.
fn events_for(client: &mut TestClient, symbol: &str, secs: u64, min: usize) -> BTreeMap<u64, String> {
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = 0;
    while Instant::now() < deadline || seen.len() < min {
        let msg = client.recv();
        let kind = msg["type"].as_str().unwrap().to_string();
        assert!(kind == "trade" || kind == "quote", "only events: {msg}");
        assert_eq!(msg["symbol"], symbol);
        let seq = msg["seq"].as_u64().unwrap();
        assert!(seq > last, "seq rises: {msg} after {last}");
        last = seq;
        seen.insert(seq, kind);
        assert!(seen.len() < 1_000_000);
    }
    seen
}

#[test]
fn a_one_channel_client_skips_exactly_the_other_channel() {
    let gateway = start_gateway(|c| {
        c.sim.symbols = 2;
        c.sim.rate = 300.0;
    });
    let symbol = gateway.symbols().iter().next().unwrap().1.name.to_string();
    let addr = gateway.local_addr();
    let mut both = TestClient::connect(addr);
    let mut trades = TestClient::connect(addr);
    let mut quotes = TestClient::connect(addr);

    let (reply, both_from) = both.subscribe_one(json!({"op":"subscribe","symbols":[symbol],"id":1}));
    assert_eq!(reply, json!({"type":"subscribed","id":1,"symbols":[symbol],"policy":"conflate"}));
    let (reply, trades_from) =
        trades.subscribe_one(json!({"op":"subscribe","symbols":[symbol],"channels":["trades"],"id":2}));
    assert_eq!(reply, json!({"type":"subscribed","id":2,"symbols":[symbol],"policy":"conflate","channels":["trades"]}));
    let (_, quotes_from) =
        quotes.subscribe_one(json!({"op":"subscribe","symbols":[symbol],"channels":["quotes"],"id":3}));

    let all = events_for(&mut both, &symbol, 3, 200);
    let only_trades = events_for(&mut trades, &symbol, 0, 20);
    let only_quotes = events_for(&mut quotes, &symbol, 0, 50);
    // The reference client saw every seq from its snapshot on.
    let (&first, &last) = (all.keys().next().unwrap(), all.keys().last().unwrap());
    assert_eq!(first, both_from + 1);
    assert_eq!(all.len() as u64, last - first + 1, "the client on both channels skips nothing");
    for (client, seen, from, kind) in
        [("trades", &only_trades, trades_from, "trade"), ("quotes", &only_quotes, quotes_from, "quote")]
    {
        assert!(seen.values().all(|k| k == kind), "the {client} client got only {kind}s");
        // Over the span both clients covered, the one-channel client got exactly the reference's
        // events of its kind: every seq it skipped is of the other channel.
        let lo = first.max(from + 1);
        let hi = last.min(*seen.keys().last().unwrap());
        assert!(hi > lo + 10, "the clients overlap");
        let expected: Vec<u64> = all.range(lo..=hi).filter(|(_, k)| *k == kind).map(|(&s, _)| s).collect();
        let got: Vec<u64> = seen.range(lo..=hi).map(|(&s, _)| s).collect();
        assert_eq!(got, expected, "the {client} client skips exactly the other channel");
    }
}

#[test]
fn adding_a_channel_sends_a_snapshot_and_dropping_one_keeps_the_other() {
    let gateway = start_gateway(|c| {
        c.sim.symbols = 2;
        c.sim.rate = 300.0;
    });
    let symbol = gateway.symbols().iter().next().unwrap().1.name.to_string();
    let mut client = TestClient::connect(gateway.local_addr());
    client.subscribe_one(json!({"op":"subscribe","symbols":[symbol],"channels":["trades"]}));
    events_for(&mut client, &symbol, 1, 5);

    // Adding quotes: the reply, then a snapshot, then both channels from there on.
    client.send_json(json!({"op":"subscribe","symbols":[symbol],"channels":["quotes"],"id":"q"}));
    let reply = loop {
        let msg = client.recv();
        if msg["type"] == "subscribed" {
            break msg;
        }
        assert_eq!(msg["type"], "trade", "only trades before the reply: {msg}");
    };
    assert_eq!(reply["channels"], json!(["quotes"]));
    let snapshot = client.recv();
    assert_eq!(snapshot["type"], "snapshot", "a channel added is a fresh snapshot: {snapshot}");
    let seen = events_for(&mut client, &symbol, 2, 100);
    let (&first, &last) = (seen.keys().next().unwrap(), seen.keys().last().unwrap());
    assert_eq!(first, snapshot["seq"].as_u64().unwrap() + 1, "the stream goes on from the snapshot");
    assert_eq!(seen.len() as u64, last - first + 1, "both channels: every seq");
    assert!(seen.values().any(|k| k == "quote") && seen.values().any(|k| k == "trade"));

    // Dropping trades keeps quotes, without a snapshot: the symbol is still held.
    client.send_json(json!({"op":"unsubscribe","symbols":[symbol],"channels":["trades"],"id":"t"}));
    let reply = client.recv_type("unsubscribed");
    assert_eq!(reply, json!({"type":"unsubscribed","id":"t","symbols":[symbol],"channels":["trades"]}));
    let after = events_for(&mut client, &symbol, 1, 20);
    assert!(after.values().all(|k| k == "quote"), "only quotes after dropping trades");
    client.send_json(json!({"op":"list_subscriptions","id":"l"}));
    assert_eq!(client.recv_type("subscriptions")["symbols"], json!([symbol]));

    // Dropping the last channel drops the symbol.
    client.send_json(json!({"op":"unsubscribe","symbols":[symbol],"channels":["quotes"],"id":"u"}));
    client.recv_type("unsubscribed");
    client.send_json(json!({"op":"list_subscriptions","id":"l2"}));
    assert_eq!(client.recv_type("subscriptions")["symbols"], json!([]));
}

#[test]
fn malformed_channels_get_a_clear_error_and_leave_the_connection_alone() {
    let gateway = start_gateway(|c| c.sim.symbols = 2);
    let symbol = gateway.symbols().iter().next().unwrap().1.name.to_string();
    let addr = gateway.local_addr();
    let mut client = TestClient::connect(addr);
    client.subscribe_one(json!({"op":"subscribe","symbols":[symbol],"channels":["trades"]}));
    let invalid = r#"tickgate_commands_total{op="invalid",result="error"}"#;
    let before = metric(addr, invalid).unwrap_or(0.0);
    for (i, channels) in [json!(["bids"]), json!([]), json!("trades"), json!([7])].into_iter().enumerate() {
        client.send_json(json!({"op":"subscribe","symbols":[symbol],"channels":channels,"id":i}));
        let error = client.recv_type("error");
        assert_eq!((error["id"].as_u64(), error["code"].as_str()), (Some(i as u64), Some("bad_request")), "{error}");
        assert!(error["message"].as_str().unwrap().contains("channel"), "{error}");
    }
    tickgate_testkit::eventually("the bad commands are counted", || {
        metric(addr, invalid).unwrap_or(0.0) >= before + 4.0
    });
    // Still subscribed on trades, and nothing else changed.
    let seen = events_for(&mut client, &symbol, 0, 3);
    assert!(seen.values().all(|k| k == "trade"));
}
