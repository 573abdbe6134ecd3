//! `command_parser`: arbitrary bytes into `tickgate_protocol::parse_command`.
//!
//! Contract: never panics; an error always says something (its message, and so its Display,
//! is non-empty); a request id that was read is echoed verbatim into replies, so it must be
//! one JSON number or string.

use tickgate_protocol::{RequestId, parse_command};

pub fn check(data: &[u8]) {
    let mut buf = data.to_vec();
    match parse_command(&mut buf) {
        Ok(request) => {
            if let Some(id) = &request.id {
                check_id(id);
            }
            assert!(!request.command.op().is_empty());
        }
        Err(err) => {
            assert!(!err.message.is_empty(), "an error with an empty message for {data:?}");
            assert!(!err.to_string().is_empty(), "an error that displays as nothing for {data:?}");
            if let Some(id) = &err.id {
                check_id(id);
            }
        }
    }
}

fn check_id(id: &RequestId) {
    let json = id.as_json();
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Number(_) | serde_json::Value::String(_)) => {}
        other => panic!("request id {json:?} is not one JSON number or string: {other:?}"),
    }
}
