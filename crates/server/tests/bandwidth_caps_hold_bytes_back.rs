//! Bandwidth caps through real sockets: a capped client receiving a busy stream gets about its
//! cap in bytes a second and accounts for every seq (snapshots, gaps, conflated quotes) against
//! an uncapped client, which is unaffected; a token's claim sets the cap for its user; bad caps
//! in a token or the configuration are refused, clearly, and counted.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tickgate_server::Config;
use tickgate_server::config::ApiKey;
use tickgate_testkit::{TestClient, eventually, http_request, metric, start_gateway};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

fn token(claims: Value) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    let mut claims = claims;
    claims["exp"] = json!(exp);
    claims["symbols"] = json!(["*"]);
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn with_jwt(c: &mut Config) {
    c.auth.enabled = true;
    c.auth.jwt_algorithm = "HS256".into();
    c.auth.jwt_secret = SECRET.into();
}

fn connect_with(addr: std::net::SocketAddr, bearer: &str) -> TestClient {
    TestClient::try_connect_with(addr, "/ws", &[("Authorization", &format!("Bearer {bearer}"))]).unwrap()
}

/// What a client read: every message with the bytes of its text, and when reading began.
struct Reading {
    messages: Vec<Value>,
    text_bytes: usize,
    took: Duration,
}

/// Reads for `secs` seconds.
fn read_for(mut client: TestClient, secs: u64) -> Reading {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let (mut messages, mut text_bytes) = (Vec::new(), 0);
    while Instant::now() < deadline {
        let text = client.recv_raw();
        text_bytes += text.len();
        messages.push(serde_json::from_str(&text).unwrap());
    }
    Reading { messages, text_bytes, took: started.elapsed() }
}

/// Checks the sequence contract for each symbol of `got` against the reference's every event:
/// each event rises from where the last one (or the snapshot) left off, its skipped seqs being
/// quotes as many as its `conflated` says, or a gap announced them first. Returns (events,
/// conflated quotes, gaps) seen.
fn account(got: &[Value], reference: &BTreeMap<(String, u64), String>) -> (usize, u64, usize) {
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    let (mut events, mut conflated, mut gaps) = (0, 0, 0);
    for msg in got {
        let Some(symbol) = msg["symbol"].as_str() else { continue };
        match msg["type"].as_str().unwrap() {
            "snapshot" => {
                next.insert(symbol.into(), msg["seq"].as_u64().unwrap() + 1);
            }
            "gap" => {
                let expect = next[symbol];
                assert_eq!(msg["from_seq"].as_u64().unwrap(), expect, "a gap starts where the stream stopped: {msg}");
                next.insert(symbol.into(), msg["to_seq"].as_u64().unwrap() + 1);
                gaps += 1;
            }
            kind @ ("trade" | "quote") => {
                let (seq, expect) = (msg["seq"].as_u64().unwrap(), next[symbol]);
                assert!(seq >= expect, "seq never goes back: {msg} after {expect}");
                let n = msg["conflated"].as_u64().unwrap_or(0);
                assert_eq!(seq - expect, n, "every skipped seq is a conflated quote: {msg}");
                for s in expect..seq {
                    assert_eq!(reference[&(symbol.to_string(), s)], "quote", "{symbol} {s} skipped: not a quote");
                }
                assert_eq!(reference[&(symbol.to_string(), seq)], kind);
                next.insert(symbol.into(), seq + 1);
                events += 1;
                conflated += n;
            }
            other => panic!("unexpected {other}: {msg}"),
        }
    }
    (events, conflated, gaps)
}

#[test]
fn a_capped_client_gets_about_its_cap_and_accounts_for_every_seq() {
    const CAP: u64 = 16 * 1024;
    let gateway = start_gateway(|c| {
        c.sim.symbols = 4;
        c.sim.rate = 2_000.0;
        c.auth.enabled = true;
        c.auth.api_keys = vec![
            ApiKey {
                key: "capped-key-0123456789".into(),
                user: "phone".into(),
                symbols: vec!["*".into()],
                max_connections: None,
                max_bytes_per_second: Some(CAP),
            },
            ApiKey {
                key: "free-key-0123456789".into(),
                user: "desk".into(),
                symbols: vec!["*".into()],
                max_connections: None,
                max_bytes_per_second: None,
            },
        ];
    });
    let addr = gateway.local_addr();
    let symbols: Vec<String> = gateway.symbols().iter().map(|(_, s)| s.name.to_string()).collect();
    let mut reference = connect_with(addr, "free-key-0123456789");
    reference.send_json(json!({"op":"subscribe","symbols":symbols}));
    reference.recv_type("subscribed");
    // It reads on well past the capped clients, so it holds every seq they could have seen.
    let reference = thread::spawn(move || read_for(reference, 8));
    // Let the reference's stream start before the capped clients' snapshots.
    thread::sleep(Duration::from_millis(300));

    let mut capped = Vec::new();
    for policy in ["conflate", "drop"] {
        let mut client = connect_with(addr, "capped-key-0123456789");
        client.send_json(json!({"op":"list_subscriptions"}));
        assert_eq!(client.recv_type("subscriptions")["max_bytes_per_second"], CAP, "the key's cap");
        client.send_json(json!({"op":"subscribe","symbols":symbols,"policy":policy}));
        capped.push(thread::spawn(move || read_for(client, 5)));
    }
    let summed = |name: &str| (0..2).filter_map(|r| metric(addr, &format!("{name}{{reactor=\"{r}\"}}"))).sum::<f64>();
    eventually("connections held back by their caps are shown", || {
        summed("tickgate_bandwidth_held_connections") >= 1.0 && summed("tickgate_bandwidth_held_bytes") > 0.0
    });
    let capped: Vec<Reading> = capped.into_iter().map(|t| t.join().unwrap()).collect();
    let reference = reference.join().unwrap();

    // The reference saw every event from its snapshots on, nothing conflated, no gap.
    let mut all = BTreeMap::new();
    for msg in &reference.messages {
        if let (Some(s), Some(kind @ ("trade" | "quote"))) = (msg["symbol"].as_str(), msg["type"].as_str()) {
            all.insert((s.to_string(), msg["seq"].as_u64().unwrap()), kind.to_string());
        }
    }
    let (events, conflated, gaps) = account(&reference.messages, &all);
    assert_eq!((conflated, gaps), (0, 0), "the uncapped client is unaffected");
    let reference_rate = reference.text_bytes as f64 / reference.took.as_secs_f64();
    assert!(reference_rate > 8.0 * CAP as f64, "the stream is far busier than the cap: {reference_rate:.0} B/s");

    for (reading, policy) in capped.iter().zip(["conflate", "drop"]) {
        let secs = reading.took.as_secs_f64();
        let rate = reading.text_bytes as f64 / secs;
        // Its own bytes, WebSocket headers included, are capped: its text alone is less. A
        // quarter of a second of burst, and slack for the clock.
        assert!(
            (reading.text_bytes as f64) < CAP as f64 * (secs + 0.5),
            "{policy}: {} bytes in {secs:.1} s at a cap of {CAP} B/s",
            reading.text_bytes
        );
        assert!(rate > CAP as f64 * 0.5, "{policy}: the cap is used, {rate:.0} B/s");
        let (got, conflated, gaps) = account(&reading.messages, &all);
        assert!(got > 0, "{policy}: events arrived");
        match policy {
            "conflate" => assert!(conflated > 0, "quotes past the cap are conflated"),
            _ => assert!(gaps > 0, "events dropped past the cap are announced"),
        }
    }
    assert!(events > 0);
    eventually("the waits are counted", || summed("tickgate_bandwidth_waits_total") > 0.0);
}

#[test]
fn the_gateway_cap_applies_and_a_token_claim_lowers_it_for_its_user() {
    let gateway = start_gateway(|c| {
        c.sim.symbols = 4;
        c.sim.rate = 2_000.0;
        c.limits.max_bytes_per_second = 64 * 1024;
        with_jwt(c);
    });
    let addr = gateway.local_addr();
    let symbols: Vec<String> = gateway.symbols().iter().map(|(_, s)| s.name.to_string()).collect();
    let mut plain = connect_with(addr, &token(json!({"sub":"desk"})));
    let mut low = connect_with(addr, &token(json!({"sub":"phone","max_bytes_per_second":4096})));
    for (client, cap) in [(&mut plain, 65_536), (&mut low, 4_096)] {
        client.send_json(json!({"op":"list_subscriptions"}));
        assert_eq!(client.recv_type("subscriptions")["max_bytes_per_second"], cap);
        client.send_json(json!({"op":"subscribe","symbols":symbols}));
    }
    // Bytes flow from here on, into the sockets' buffers while the checks below run: the bound
    // is over the whole time since, not only the reading.
    let since = Instant::now();
    eventually("capped connections are counted", || {
        (0..2)
            .filter_map(|r| metric(addr, &format!("tickgate_bandwidth_capped_connections{{reactor=\"{r}\"}}")))
            .sum::<f64>()
            == 2.0
    });
    // /connz shows each connection's cap.
    let response = http_request(addr, "GET /connz HTTP/1.1\r\nHost: x\r\n\r\n");
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let mut caps: Vec<u64> =
        body["connections"].as_array().unwrap().iter().map(|c| c["max_bytes_per_second"].as_u64().unwrap()).collect();
    caps.sort();
    assert_eq!(caps, [4_096, 65_536], "{body}");
    let low = thread::spawn(move || read_for(low, 4));
    let plain = thread::spawn(move || read_for(plain, 4));
    let (low, plain) = (low.join().unwrap(), plain.join().unwrap());
    let secs = since.elapsed().as_secs_f64();
    assert!((low.text_bytes as f64) < 4_096.0 * (secs + 0.5), "{} bytes in {secs:.1} s at 4096 B/s", low.text_bytes);
    assert!((plain.text_bytes as f64) < 65_536.0 * (secs + 0.5), "{} bytes in {secs:.1} s", plain.text_bytes);
    // And the cap is what limits them: each read about its cap over its own reading.
    assert!(plain.text_bytes as f64 > 65_536.0 * 0.5 * plain.took.as_secs_f64(), "{} bytes", plain.text_bytes);
    assert!(plain.text_bytes > 4 * low.text_bytes, "the claim lowered one user's cap only");
}

#[test]
fn bad_caps_in_a_token_are_refused_and_counted() {
    let gateway = start_gateway(with_jwt);
    let addr = gateway.local_addr();
    let failures = |addr| {
        (0..2).filter_map(|r| metric(addr, &format!("tickgate_auth_failures_total{{reactor=\"{r}\"}}"))).sum::<f64>()
    };
    let before = failures(addr);
    let bad = [json!(-1), json!(0), json!(2048.5), json!("4096"), json!(1023), json!(1u64 << 40), json!([4096])];
    for cap in &bad {
        let bearer = token(json!({"sub":"mallory","max_bytes_per_second":cap}));
        let response = http_request(
            addr,
            &format!(
                "GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
        );
        assert!(response.starts_with("HTTP/1.1 401"), "{cap}: {response}");
        assert!(response.contains("invalid token: max_bytes_per_second must be a whole number"), "{cap}: {response}");
    }
    // The same through the auth command: refused, the connection closed.
    let mut client = TestClient::connect(addr);
    client.send_json(json!({"op":"auth","token":token(json!({"sub":"m","max_bytes_per_second":0})),"id":1}));
    let error = client.recv_type("error");
    assert_eq!(error["code"], "auth_failed");
    assert!(error["message"].as_str().unwrap().contains("max_bytes_per_second"), "{error}");
    eventually("each refusal is counted", || failures(addr) >= before + bad.len() as f64 + 1.0);
    // A good claim still works beside them.
    let mut fine = connect_with(addr, &token(json!({"sub":"ok","max_bytes_per_second":1024})));
    fine.send_json(json!({"op":"list_subscriptions"}));
    assert_eq!(fine.recv_type("subscriptions")["max_bytes_per_second"], 1024);
}

#[test]
fn bad_caps_in_the_configuration_are_refused_naming_the_key() {
    let refused = |text: &str| Config::from_toml(text, "test.toml").unwrap_err().to_string();
    for (text, needle) in [
        ("[limits]\nmax_bytes_per_second = 5\n", "limits.max_bytes_per_second must be a whole number"),
        ("[limits]\nmax_bytes_per_second = 2000000000000\n", "got 2000000000000 (0 for no cap)"),
        ("[limits]\nmax_bytes_per_second = -1\n", "max_bytes_per_second"),
        ("[limits]\nmax_bytes_per_second = 4096.5\n", "max_bytes_per_second"),
        ("[limits]\nmax_bytes_per_second = \"4096\"\n", "max_bytes_per_second"),
        (
            "[auth]\nenabled = true\napi_keys = [{ key = \"0123456789abcdef\", user = \"a\", symbols = [], max_bytes_per_second = 0 }]\n",
            "auth.api_keys[0].max_bytes_per_second must be a whole number",
        ),
    ] {
        let err = refused(text);
        assert!(err.contains(needle), "{text:?}: {err}");
    }
    let ok = Config::from_toml("[limits]\nmax_bytes_per_second = 1024\n", "test.toml").unwrap();
    assert_eq!(ok.limits.max_bytes_per_second, 1024);
}
