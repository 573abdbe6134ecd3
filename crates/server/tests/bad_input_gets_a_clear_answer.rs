//! Bad input from a client gets a clear answer; the connection keeps its subscriptions where
//! the protocol allows, and the right close code where it does not. Nobody else is disturbed.

use serde_json::json;
use tickgate_testkit::{RawClient, TestClient, http_request, start_gateway};

#[test]
fn malformed_commands_get_bad_request_and_the_connection_stays() {
    let gateway = start_gateway(|_| {});
    let mut client = TestClient::connect(gateway.local_addr());
    client.subscribe(&["AAPL"]);
    let cases = [
        ("not json at all", None),
        (r#"{"op":"fly","id":1}"#, Some(json!(1))),
        (r#"{"op":"subscribe","symbols":"AAPL","id":"two"}"#, Some(json!("two"))),
        (r#"{"op":"subscribe","id":3}"#, Some(json!(3))),
        (r#"{"symbols":["AAPL"],"id":4}"#, Some(json!(4))),
        ("[]", None),
    ];
    for (text, id) in cases {
        client.send_text(text);
        let err = client.recv_type("error");
        assert_eq!(err["code"], "bad_request", "{text}: {err}");
        assert!(err["message"].as_str().unwrap().len() > 10, "a message for a person: {err}");
        match id {
            Some(id) => assert_eq!(err["id"], id, "{text}"),
            None => assert!(err.get("id").is_none(), "{text}"),
        }
    }
    // Still subscribed: AAPL events keep coming.
    let event = client.recv_type("quote");
    assert_eq!(event["symbol"], "AAPL");
}

#[test]
fn unknown_symbols_are_named_and_the_known_ones_still_subscribe() {
    let gateway = start_gateway(|_| {});
    let mut client = TestClient::connect(gateway.local_addr());
    client.send_json(json!({"op":"subscribe","symbols":["NOPE","AAPL","ZZZZ9"],"id":5}));
    assert_eq!(client.recv(), json!({"type":"subscribed","id":5,"symbols":["AAPL"],"policy":"conflate"}));
    assert_eq!(client.recv()["type"], "snapshot");
    let err = client.recv_type("error");
    assert_eq!(err["code"], "unknown_symbol");
    assert_eq!(err["id"], 5);
    assert_eq!(err["symbols"], json!(["NOPE", "ZZZZ9"]));
    assert!(err["message"].as_str().unwrap().contains("NOPE"));
}

#[test]
fn binary_frames_get_an_error_reply() {
    let gateway = start_gateway(|_| {});
    let mut client = TestClient::connect(gateway.local_addr());
    client.ws.send(tungstenite::Message::binary(vec![1u8, 2, 3])).unwrap();
    let err = client.recv_type("error");
    assert_eq!(err["code"], "unsupported_frame");
    client.send_json(json!({"op":"list_subscriptions"}));
    assert_eq!(client.recv_type("subscriptions")["symbols"], json!([]));
}

/// Sends a frame that breaks the protocol and checks the close code the server sends first.
fn assert_closed_with(frame: (u8, &[u8], bool), code: u16) {
    let gateway = start_gateway(|c| c.limits.max_message_size = 1024);
    let mut healthy = TestClient::connect(gateway.local_addr());
    healthy.subscribe(&["AAPL"]);
    let mut raw = RawClient::connect(gateway.local_addr());
    raw.send_frame(frame.0, frame.1, frame.2);
    let (got, reason) = raw.read_close().expect("a close frame before the connection ends");
    assert_eq!(got, code, "close reason: {reason}");
    // The healthy client on the same gateway keeps receiving.
    assert_eq!(healthy.recv_type("quote")["symbol"], "AAPL");
}

#[test]
fn an_unmasked_frame_is_closed_with_1002() {
    assert_closed_with((0x81, br#"{"op":"list_symbols"}"#, false), 1002);
}

#[test]
fn a_reserved_opcode_is_closed_with_1002() {
    assert_closed_with((0x83, b"x", true), 1002);
}

#[test]
fn a_continuation_without_a_start_is_closed_with_1002() {
    assert_closed_with((0x80, b"x", true), 1002);
}

#[test]
fn invalid_utf8_is_closed_with_1007() {
    assert_closed_with((0x81, &[0x7b, 0xff, 0xfe, 0x7d], true), 1007);
}

#[test]
fn a_message_over_the_limit_is_closed_with_1009() {
    let big = vec![b' '; 4096];
    assert_closed_with((0x81, &big, true), 1009);
}

#[test]
fn plain_http_gets_400_on_the_endpoint_and_404_elsewhere() {
    let gateway = start_gateway(|_| {});
    let addr = gateway.local_addr();
    let r = http_request(addr, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("WebSocket endpoint"), "{r}");
    let r = http_request(addr, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let r = http_request(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = http_request(addr, &format!("GET /ws HTTP/1.1\r\nX-Junk: {}\r\n\r\n", "a".repeat(10_000)));
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
}

#[test]
fn invalid_utf8_fails_fast_before_the_frame_is_complete() {
    let gateway = start_gateway(|_| {});
    let mut raw = RawClient::connect(gateway.local_addr());
    // A masked text frame announcing 1,000 bytes, of which only the first 12 are sent, the
    // eleventh of them invalid UTF-8.
    let mask = [1u8, 2, 3, 4];
    let mut start = vec![0x81, 0x80 | 126, 0x03, 0xe8];
    start.extend_from_slice(&mask);
    let payload = b"0123456789\xc0x";
    start.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    std::io::Write::write_all(&mut raw.stream, &start).unwrap();
    let (code, _) = raw.read_close().expect("closed without waiting for the rest of the frame");
    assert_eq!(code, 1007);
}
