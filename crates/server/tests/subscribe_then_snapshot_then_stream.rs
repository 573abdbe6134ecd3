//! A subscriber gets its reply, one snapshot per symbol, then every later event of exactly
//! those symbols with seq rising by one; unsubscribing stops them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tickgate_testkit::{TestClient, start_gateway};

#[test]
fn snapshot_then_contiguous_stream_of_only_subscribed_symbols() {
    let gateway = start_gateway(|c| c.sim.symbols = 20);
    let names: Vec<String> = gateway.symbols().iter().take(3).map(|(_, s)| s.name.to_string()).collect();
    let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut client = TestClient::connect(gateway.local_addr());
    client.send_json(json!({"op":"subscribe","symbols":wanted,"id":7}));
    let reply = client.recv();
    assert_eq!(reply, json!({"type":"subscribed","id":7,"symbols":wanted,"policy":"conflate"}));

    let mut next_seq: HashMap<String, u64> = HashMap::new();
    for name in &wanted {
        let snap = client.recv();
        assert_eq!(snap["type"], "snapshot", "{snap}");
        assert_eq!(snap["symbol"], *name, "snapshots come in request order");
        next_seq.insert(name.to_string(), snap["seq"].as_u64().unwrap() + 1);
    }

    let mut events = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline || events < 50 {
        let msg = client.recv();
        let kind = msg["type"].as_str().unwrap();
        assert!(kind == "trade" || kind == "quote", "only events after the snapshots: {msg}");
        let symbol = msg["symbol"].as_str().unwrap();
        let expected = next_seq.get_mut(symbol).unwrap_or_else(|| panic!("event for unsubscribed {symbol}"));
        assert_eq!(
            msg["seq"].as_u64().unwrap(),
            *expected,
            "{symbol}: no gap, no duplicate between snapshot and stream"
        );
        *expected += 1;
        assert!(msg["gw_ts"].as_u64().unwrap() > 1_600_000_000_000_000_000, "gw_ts is wall-clock ns");
        if kind == "trade" {
            assert!(msg["price"].as_str().unwrap().contains('.'), "prices are decimal strings: {msg}");
        } else {
            let bid: f64 = msg["bid"].as_str().unwrap().parse().unwrap();
            let ask: f64 = msg["ask"].as_str().unwrap().parse().unwrap();
            assert!(bid < ask, "{msg}");
        }
        events += 1;
        assert!(events < 1_000_000);
    }

    // Unsubscribe from all but the first: after the reply, only the first symbol's events.
    let dropped: Vec<&str> = wanted[1..].to_vec();
    client.send_json(json!({"op":"unsubscribe","symbols":dropped,"id":"u"}));
    loop {
        let msg = client.recv();
        if msg["type"] == "unsubscribed" {
            assert_eq!(msg, json!({"type":"unsubscribed","id":"u","symbols":dropped}));
            break;
        }
    }
    client.send_json(json!({"op":"list_subscriptions","id":9}));
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut listed = false;
    while Instant::now() < deadline || !listed {
        let msg = client.recv();
        match msg["type"].as_str().unwrap() {
            "subscriptions" => {
                assert_eq!(
                    msg,
                    json!({"type":"subscriptions","id":9,"symbols":[wanted[0]],"policy":"conflate",
                        "subscriptions":[{"symbol":wanted[0],"channels":["trades","quotes"]}]})
                );
                listed = true;
            }
            _ => assert_eq!(msg["symbol"], wanted[0], "no events of unsubscribed symbols: {msg}"),
        }
    }
}

#[test]
fn list_symbols_gives_the_whole_universe() {
    let gateway = start_gateway(|c| c.sim.symbols = 600);
    let mut client = TestClient::connect(gateway.local_addr());
    client.send_json(json!({"op":"list_symbols","id":1}));
    let msg = client.recv_type("symbols");
    let symbols = msg["symbols"].as_array().unwrap();
    assert_eq!(symbols.len(), 600);
    assert_eq!(msg["id"], 1);
    assert!(symbols.iter().any(|s| s == "AAPL"));
    assert!(symbols.iter().any(|s| s.as_str().unwrap().starts_with("BTC-")));
}

#[test]
fn resubscribing_a_held_symbol_is_acknowledged_without_a_snapshot() {
    let gateway = start_gateway(|_| {});
    let mut client = TestClient::connect(gateway.local_addr());
    let (reply, snaps) = client.subscribe(&["AAPL", "AAPL"]);
    assert_eq!(reply["symbols"], json!(["AAPL"]), "duplicates are folded");
    assert_eq!(snaps.len(), 1);
    let mut held = snaps[0]["seq"].as_u64().unwrap();
    client.send_json(json!({"op": "subscribe", "id": 9, "symbols": ["AAPL"]}));
    // The stream goes on where it was, one seq at a time, with no second snapshot.
    let (mut acknowledged, mut events_after) = (false, 0);
    while events_after < 20 {
        let msg = client.recv();
        match msg["type"].as_str().unwrap() {
            "subscribed" => {
                assert_eq!((&msg["id"], &msg["symbols"]), (&json!(9), &json!(["AAPL"])));
                acknowledged = true;
            }
            "trade" | "quote" => {
                assert_eq!(msg["seq"].as_u64().unwrap(), held + 1, "{msg}");
                held += 1;
                events_after += u32::from(acknowledged);
            }
            other => panic!("unexpected {other}: {msg}"),
        }
    }
}

/// A command that arrives one byte at a time — a fragmented text message cut inside a UTF-8
/// character at its fragment boundary, a ping between the fragments — is read whole: every
/// frame boundary and every byte inside a header falls between two reads.
#[test]
fn a_command_sent_one_byte_at_a_time_is_answered_whole() {
    use std::io::Write;
    use tickgate_testkit::{RawClient, client_frame};

    let gateway = start_gateway(|c| c.sim.symbols = 20);
    let name = gateway.symbols().iter().next().map(|(_, s)| s.name.to_string()).unwrap();
    let text = format!("{{\"op\":\"subscribe\",\"symbols\":[\"{name}\",\"X€\"],\"id\":3}}");
    let cut = text.find('€').unwrap() + 1;
    let mut stream = client_frame(0x01, &text.as_bytes()[..cut], true);
    stream.extend(client_frame(0x89, b"p", true));
    stream.extend(client_frame(0x80, &text.as_bytes()[cut..], true));
    let mut raw = RawClient::connect(gateway.local_addr());
    raw.stream.set_nodelay(true).unwrap();
    for byte in &stream {
        raw.stream.write_all(std::slice::from_ref(byte)).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let (opcode, payload) = raw.read_frame().expect("the answers");
        let message: serde_json::Value = match opcode {
            0xA => json!({"type":"pong","payload":String::from_utf8_lossy(&payload)}),
            1 => serde_json::from_slice(&payload).unwrap(),
            other => panic!("unexpected frame {other:#x}"),
        };
        if message["type"] != "trade" && message["type"] != "quote" {
            seen.push(message);
        }
    }
    assert_eq!(seen[0], json!({"type":"pong","payload":"p"}), "the ping is answered between the fragments");
    assert_eq!(seen[1], json!({"type":"subscribed","id":3,"symbols":[name],"policy":"conflate"}));
    assert_eq!((&seen[2]["type"], &seen[2]["symbol"]), (&json!("snapshot"), &json!(name)));
    assert_eq!((&seen[3]["code"], &seen[3]["symbols"]), (&json!("unknown_symbol"), &json!(["X€"])), "{}", seen[3]);
}
