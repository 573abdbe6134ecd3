//! With authentication on, a client proves who it is with a token (header, URL or first
//! message), receives only the symbols it is entitled to, and is closed when its token expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use tickgate_server::config::ApiKey;
use tickgate_testkit::{TestClient, eventually, http_request, metric, start_gateway};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn hs256(sub: &str, exp: u64, symbols: &[&str]) -> String {
    let claims = json!({"sub": sub, "exp": exp, "symbols": symbols});
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn with_auth(c: &mut tickgate_server::Config) {
    c.server.reactors = 1;
    c.auth.enabled = true;
    c.auth.jwt_algorithm = "HS256".into();
    c.auth.jwt_secret = SECRET.into();
    c.auth.auth_timeout_ms = 1_000;
}

#[test]
fn a_bearer_token_grants_its_entitlements_only() {
    let gateway = start_gateway(with_auth);
    let token = hs256("alice", now() + 600, &["AAPL", "BTC-*"]);
    let mut client =
        TestClient::try_connect_with(gateway.local_addr(), "/ws", &[("Authorization", &format!("Bearer {token}"))])
            .unwrap();
    assert_eq!(client.welcome.get("auth"), None, "already authenticated");
    client.send_json(json!({"op":"subscribe","symbols":["AAPL","MSFT","BTC-USD"],"id":1}));
    assert_eq!(client.recv_type("subscribed")["symbols"], json!(["AAPL", "BTC-USD"]));
    let err = client.recv_type("error");
    assert_eq!(err["code"], "not_entitled");
    assert_eq!(err["symbols"], json!(["MSFT"]));
    assert_eq!(err["id"], 1);
}

#[test]
fn a_resume_of_a_symbol_outside_the_entitlements_is_refused_and_counted() {
    let gateway = start_gateway(with_auth);
    let token = hs256("alice", now() + 600, &["AAPL"]);
    let mut client =
        TestClient::try_connect_with(gateway.local_addr(), "/ws", &[("Authorization", &format!("Bearer {token}"))])
            .unwrap();
    // Nothing of it is entitled: no `subscribed`, only the error.
    client.send_json(json!({"op":"subscribe","resume":[{"symbol":"MSFT","seq":3}],"id":1}));
    let err = client.recv();
    assert_eq!((err["type"].as_str(), err["code"].as_str()), (Some("error"), Some("not_entitled")), "{err}");
    assert_eq!((err["symbols"].clone(), err["id"].clone()), (json!(["MSFT"]), json!(1)));
    // With an entitled one: that one is resumed (or told the gap), the other refused.
    client.send_json(json!({"op":"subscribe","resume":[{"symbol":"AAPL","seq":1},{"symbol":"MSFT","seq":3}],"id":2}));
    assert_eq!(client.recv_type("subscribed")["symbols"], json!(["AAPL"]));
    let err = client.recv_type("error");
    assert_eq!((err["code"].as_str(), err["symbols"].clone()), (Some("not_entitled"), json!(["MSFT"])));
    let addr = gateway.local_addr();
    eventually("counted", || metric(addr, "tickgate_not_entitled_total{reactor=\"0\"}") == Some(2.0));
    let failed = "tickgate_commands_total{op=\"subscribe\",result=\"error\"}";
    eventually("counted as failed subscribes", || metric(addr, failed) == Some(2.0));
}

#[test]
fn a_token_in_the_url_works_for_browsers() {
    let gateway = start_gateway(with_auth);
    let token = hs256("bob", now() + 600, &["*"]);
    let mut client = TestClient::try_connect_with(gateway.local_addr(), &format!("/ws?token={token}"), &[]).unwrap();
    let (reply, _) = client.subscribe(&["MSFT"]);
    assert_eq!(reply["symbols"], json!(["MSFT"]));
}

#[test]
fn a_bad_token_at_the_handshake_gets_401() {
    let gateway = start_gateway(with_auth);
    let forged = hs256("mallory", now() + 600, &["*"]) + "x";
    let response = http_request(
        gateway.local_addr(),
        &format!(
            "GET /ws?token={forged} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    );
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert!(response.contains("invalid token"), "{response}");
}

#[test]
fn the_auth_message_authenticates_and_nothing_else_works_before_it() {
    let gateway = start_gateway(with_auth);
    let mut client = TestClient::connect(gateway.local_addr());
    assert_eq!(client.welcome["auth"], "required");
    client.send_json(json!({"op":"subscribe","symbols":["AAPL"],"id":1}));
    assert_eq!(client.recv_type("error")["code"], "unauthenticated");
    client.send_json(json!({"op":"auth","token":hs256("carol", now() + 600, &["AAPL"]),"id":2}));
    let ok = client.recv_type("authenticated");
    assert_eq!((ok["user"].as_str(), ok["id"].as_i64()), (Some("carol"), Some(2)));
    let (reply, _) = client.subscribe(&["AAPL"]);
    assert_eq!(reply["symbols"], json!(["AAPL"]));
}

#[test]
fn no_token_within_the_deadline_closes_with_1008() {
    let gateway = start_gateway(with_auth);
    let mut client = TestClient::connect(gateway.local_addr());
    let close = client.recv_close().expect("closed");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason, "authentication required");
}

#[test]
fn a_token_expiring_mid_session_closes_at_expiry() {
    let gateway = start_gateway(with_auth);
    let expires = now() + 2;
    let token = hs256("dave", expires, &["*"]);
    let mut client =
        TestClient::try_connect_with(gateway.local_addr(), "/ws", &[("Authorization", &format!("Bearer {token}"))])
            .unwrap();
    client.subscribe(&["AAPL"]);
    let close = client.recv_close().expect("closed");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason, "token expired");
    let at = now();
    assert!(at >= expires && at <= expires + 2, "closed at expiry: {at} vs {expires}");
}

#[test]
fn api_keys_and_per_user_connection_limits() {
    let gateway = start_gateway(|c| {
        with_auth(c);
        c.auth.api_keys = vec![ApiKey {
            key: "desk-key-0123456789".into(),
            user: "desk".into(),
            symbols: vec!["*".into()],
            max_connections: Some(1),
        }];
    });
    let auth = [("Authorization", "Bearer desk-key-0123456789")];
    let mut first = TestClient::try_connect_with(gateway.local_addr(), "/ws", &auth).unwrap();
    first.subscribe(&["NVDA"]);
    let second = TestClient::try_connect_with(gateway.local_addr(), "/ws", &auth);
    match second {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    assert!(TestClient::try_connect_with(gateway.local_addr(), "/ws", &auth).is_ok(), "the slot is free again");
}

#[test]
fn es256_tokens_verify_with_the_public_key() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    let gateway = start_gateway(|c| {
        with_auth(c);
        c.auth.jwt_algorithm = "ES256".into();
        c.auth.jwt_public_key_file = Some(format!("{keys}/es256-public.pem").into());
    });
    let private = std::fs::read(format!("{keys}/es256-private.pem")).unwrap();
    let claims = json!({"sub": "erin", "exp": now() + 600, "symbols": ["ETH-*"]});
    let token = encode(&Header::new(Algorithm::ES256), &claims, &EncodingKey::from_ec_pem(&private).unwrap()).unwrap();
    let mut client = TestClient::try_connect_with(gateway.local_addr(), &format!("/ws?token={token}"), &[]).unwrap();
    let (reply, _) = client.subscribe(&["ETH-USD"]);
    assert_eq!(reply["symbols"], json!(["ETH-USD"]));
}

/// A client that keeps sending commands and pongs (within the rate and frame limits, with room
/// for a reactor that reads a few seconds' worth at once) instead of authenticating gets every
/// command refused, and is still closed at the authentication deadline while it sends.
#[test]
fn sending_without_authenticating_is_closed_at_the_deadline() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tickgate_testkit::{RawClient, client_frame};

    let gateway = start_gateway(with_auth);
    let mut raw = RawClient::connect(gateway.local_addr());
    let mut writer = raw.stream.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = stop.clone();
    let flooder = std::thread::spawn(move || {
        let subscribe = client_frame(0x81, br#"{"op":"subscribe","symbols":["AAPL"],"id":1}"#, true);
        let pongs: Vec<u8> = (0..3).flat_map(|_| client_frame(0x8a, b"", true)).collect();
        // About 30 pongs and 10 commands a second: under limits.max_frames_per_second (200) and
        // limits.messages_per_second (20).
        while !flooding.load(Ordering::Relaxed) {
            if writer.write_all(&pongs).and_then(|()| writer.write_all(&subscribe)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut refused = 0;
    let close = loop {
        match raw.read_frame().expect("a frame before the end") {
            (0x1, payload) => {
                let message: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                assert_eq!(message["type"], "error", "nothing is executed before auth: {message}");
                refused += usize::from(message["code"] == "unauthenticated");
            }
            (0x8, payload) => break payload,
            (opcode, _) => panic!("unexpected frame {opcode:#x}"),
        }
    };
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    assert!(refused > 0, "the commands were answered");
    assert_eq!(close[..2], 1008u16.to_be_bytes());
    assert_eq!(&close[2..], b"authentication required");
}
