//! `max_rate` through real sockets: a throttled client gets at most its rate of quotes per
//! second per symbol (the newest at each slot, saying how many it superseded), every trade, and
//! accounts for every seq against a client without a cap; the gateway's cap applies to
//! everyone; bad rates get a clear error and a counted metric.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tickgate_testkit::{TestClient, eventually, metric, start_gateway};

/// Events of `symbol` read for `secs` seconds: seq -> (type, conflated, when it arrived).
fn read_events(client: &mut TestClient, symbol: &str, secs: u64) -> BTreeMap<u64, (String, u64, Instant)> {
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let msg = client.recv();
        let kind = msg["type"].as_str().unwrap().to_string();
        assert!(kind == "trade" || kind == "quote", "only events: {msg}");
        assert_eq!(msg["symbol"], symbol);
        let conflated = msg["conflated"].as_u64().unwrap_or(0);
        seen.insert(msg["seq"].as_u64().unwrap(), (kind, conflated, Instant::now()));
    }
    seen
}

#[test]
fn a_throttled_client_gets_at_most_its_rate_of_quotes_and_accounts_for_every_seq() {
    let gateway = start_gateway(|c| {
        c.sim.symbols = 2;
        c.sim.rate = 400.0;
    });
    let symbol = gateway.symbols().iter().next().unwrap().1.name.to_string();
    let addr = gateway.local_addr();
    let mut reference = TestClient::connect(addr);
    let mut throttled = TestClient::connect(addr);
    let (_, reference_from) = reference.subscribe_one(json!({"op":"subscribe","symbols":[symbol]}));
    let (reply, throttled_from) =
        throttled.subscribe_one(json!({"op":"subscribe","symbols":[symbol],"max_rate":4,"id":1}));
    assert_eq!(reply, json!({"type":"subscribed","id":1,"symbols":[symbol],"policy":"conflate","max_rate":4}));

    let secs = 4;
    let started = Instant::now();
    let got = read_events(&mut throttled, &symbol, secs);
    let elapsed = started.elapsed().as_secs_f64();
    let all = read_events(&mut reference, &symbol, 0);
    // The reference holds what was queued for it meanwhile; it reads on until it has passed the
    // throttled client's last seq.
    let mut all = all;
    let last = *got.keys().last().expect("the throttled client got events");
    while all.keys().last().is_none_or(|&s| s < last) {
        all.extend(read_events(&mut reference, &symbol, 1));
    }
    assert!(reference_from <= throttled_from);

    // At most the rate: 4 quotes a second, plus one a trade may take early, plus one slot of slack.
    let quotes = got.values().filter(|(k, ..)| k == "quote").count() as f64;
    let trades = got.values().filter(|(k, ..)| k == "trade").count() as f64;
    assert!(quotes <= 4.0 * (elapsed + 1.0) + trades, "{quotes} quotes in {elapsed:.1} s at max_rate 4");
    let reference_quotes = all.range(throttled_from + 1..=last).filter(|(_, (k, ..))| k == "quote").count();
    assert!(reference_quotes as f64 > 2.0 * quotes, "the symbol is busier than the cap ({reference_quotes} quotes)");

    // Every seq accounted for: each trade arrives; between two events, the seqs skipped are
    // quotes, as many as the next quote's `conflated` says.
    let mut prev = throttled_from;
    for (&seq, (kind, conflated, _)) in &got {
        let skipped: Vec<u64> = (prev + 1..seq).collect();
        for s in &skipped {
            assert_eq!(all[s].0, "quote", "seq {s} skipped but not a quote");
        }
        assert_eq!(skipped.len() as u64, *conflated, "{kind} {seq} after {prev}: conflated says {conflated}");
        assert_eq!(all[&seq].0, *kind);
        prev = seq;
    }
    eventually("held-back quotes are counted", || {
        (0..2).filter_map(|r| metric(addr, &format!("tickgate_throttled_quotes_total{{reactor=\"{r}\"}}"))).sum::<f64>()
            > 0.0
    });
}

#[test]
fn the_gateway_cap_applies_to_everyone_and_bad_rates_get_a_clear_error() {
    let gateway = start_gateway(|c| {
        c.sim.symbols = 2;
        c.sim.rate = 400.0;
        c.limits.max_update_rate = 2;
    });
    let symbol = gateway.symbols().iter().next().unwrap().1.name.to_string();
    let addr = gateway.local_addr();
    let mut client = TestClient::connect(addr);
    // Asking for more than the cap gets the cap; asking nothing gets it too.
    let (reply, _) = client.subscribe_one(json!({"op":"subscribe","symbols":[symbol],"max_rate":50,"id":1}));
    assert_eq!(reply["max_rate"], 2, "{reply}");
    let started = Instant::now();
    let got = read_events(&mut client, &symbol, 3);
    let elapsed = started.elapsed().as_secs_f64();
    let quotes = got.values().filter(|(k, ..)| k == "quote").count() as f64;
    let trades = got.values().filter(|(k, ..)| k == "trade").count() as f64;
    assert!(quotes <= 2.0 * (elapsed + 1.0) + trades, "{quotes} quotes in {elapsed:.1} s under a cap of 2");
    assert!(quotes >= 2.0, "the newest quote still comes at each slot ({quotes})");

    let invalid = r#"tickgate_commands_total{op="invalid",result="error"}"#;
    let before = metric(addr, invalid).unwrap_or(0.0);
    let bad = [json!(0), json!(-1), json!(2.5), json!(4.0), json!(100_000), json!("4")];
    for (i, rate) in bad.iter().enumerate() {
        client.send_json(json!({"op":"subscribe","symbols":[symbol],"max_rate":rate,"id":100 + i}));
        let error = client.recv_type("error");
        assert_eq!(error["id"], 100 + i, "{error}");
        assert_eq!(error["code"], "bad_request");
        assert!(error["message"].as_str().unwrap().contains("max_rate"), "{error}");
    }
    eventually("the bad rates are counted", || metric(addr, invalid).unwrap_or(0.0) >= before + bad.len() as f64);
    // The connection is untouched: still subscribed, still capped.
    let got = read_events(&mut client, &symbol, 1);
    assert!(!got.is_empty());
}
