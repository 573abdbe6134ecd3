//! Client commands: one JSON object per text frame.
//!
//! ```json
//! {"op":"subscribe","symbols":["AAPL","MSFT"],"id":1}
//! {"op":"subscribe","symbols":["MSFT"],"channels":["trades"],"id":5}
//! {"op":"subscribe","resume":[{"symbol":"AAPL","seq":812}],"id":5}
//! {"op":"unsubscribe","symbols":["AAPL"],"id":2}
//! {"op":"unsubscribe","symbols":["AAPL"],"channels":["quotes"],"id":6}
//! {"op":"list_symbols","id":3}
//! {"op":"list_subscriptions","id":4}
//! ```
//!
//! Parsing is in place with simd-json, so the buffer must be mutable. Anything malformed is a
//! [`CommandError`] whose message says, for a person, what was wrong; it keeps the request id
//! whenever one could be read, so the client can match the error to its request.

use std::borrow::Cow;

use simd_json::{BorrowedValue, StaticNode};
use tickgate_core::{Channels, Policy};

/// Longest string id accepted, in characters.
pub const MAX_ID_CHARS: usize = 64;

/// A request id, kept as the JSON text to echo back verbatim (`42`, `"abc"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The id as JSON, ready to be written into a reply.
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

/// One parsed client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Subscribe; `policy` chooses this connection's slow-consumer policy; `channels` (none:
    /// both) the events wanted of every symbol of the command. The symbols of `resume` are
    /// subscribed too, each resuming after the last `seq` the client holds.
    Subscribe {
        symbols: Vec<Cow<'a, str>>,
        policy: Option<Policy>,
        channels: Option<Channels>,
        /// Most updates per second per symbol (quotes above it are conflated).
        max_rate: Option<u16>,
        resume: Vec<Resume<'a>>,
    },
    /// Unsubscribe from `channels` of the symbols (none: from the symbols altogether).
    Unsubscribe {
        symbols: Vec<Cow<'a, str>>,
        channels: Option<Channels>,
    },
    ListSymbols,
    ListSubscriptions,
    /// Authenticate with a token (when the gateway requires it and none came at the handshake).
    Auth {
        token: Cow<'a, str>,
    },
}

impl Command<'_> {
    /// The op name, as on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
            Command::ListSymbols => "list_symbols",
            Command::ListSubscriptions => "list_subscriptions",
            Command::Auth { .. } => "auth",
        }
    }
}

/// One symbol of a resuming `subscribe`: the last `seq` of it the client holds (at least 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume<'a> {
    pub symbol: Cow<'a, str>,
    pub seq: u64,
}

/// A command with the id to echo in its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub id: Option<RequestId>,
    pub command: Command<'a>,
}

/// A command that could not be understood: answered with error code `bad_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub id: Option<RequestId>,
    pub message: String,
}

impl CommandError {
    fn new(id: Option<RequestId>, message: impl Into<String>) -> Self {
        Self { id, message: message.into() }
    }
}

/// Parses one command from the bytes of a text frame (modified in place).
pub fn parse_command(buf: &mut [u8]) -> Result<Request<'_>, CommandError> {
    let value =
        simd_json::to_borrowed_value(buf).map_err(|e| CommandError::new(None, format!("not valid JSON: {e}")))?;
    let BorrowedValue::Object(object) = value else {
        return Err(CommandError::new(
            None,
            "a command is a JSON object, e.g. {\"op\":\"subscribe\",\"symbols\":[\"AAPL\"]}",
        ));
    };
    let mut object = *object;
    let id = match object.remove("id") {
        None | Some(BorrowedValue::Static(StaticNode::Null)) => None,
        Some(value) => Some(parse_id(&value)?),
    };
    let op = match object.remove("op") {
        Some(BorrowedValue::String(op)) => op,
        Some(_) => return Err(CommandError::new(id, "field \"op\" must be a string")),
        None => return Err(CommandError::new(id, "missing field \"op\"")),
    };
    let command = match op.as_ref() {
        "subscribe" => {
            let policy = match object.remove("policy") {
                None | Some(BorrowedValue::Static(StaticNode::Null)) => None,
                Some(BorrowedValue::String(name)) => match Policy::parse(&name) {
                    Some(policy) => Some(policy),
                    None => {
                        return Err(CommandError::new(
                            id,
                            "field \"policy\" must be \"conflate\", \"drop\" or \"disconnect\"",
                        ));
                    }
                },
                Some(_) => return Err(CommandError::new(id, "field \"policy\" must be a string")),
            };
            let channels = take_channels(&mut object, &id)?;
            let max_rate = take_max_rate(&mut object, &id)?;
            let resume = take_resume(&mut object, &id)?;
            let symbols = match object.get("symbols") {
                None if !resume.is_empty() => Vec::new(),
                _ => take_symbols(&mut object, &id)?,
            };
            Command::Subscribe { symbols, policy, channels, max_rate, resume }
        }
        "unsubscribe" => {
            let channels = take_channels(&mut object, &id)?;
            Command::Unsubscribe { symbols: take_symbols(&mut object, &id)?, channels }
        }
        "list_symbols" => Command::ListSymbols,
        "list_subscriptions" => Command::ListSubscriptions,
        "auth" => match object.remove("token") {
            Some(BorrowedValue::String(token)) => Command::Auth { token },
            _ => return Err(CommandError::new(id, "field \"token\" must be a string")),
        },
        other => {
            let shown = shorten(other);
            return Err(CommandError::new(
                id,
                format!(
                    "unknown op {shown:?}; expected subscribe, unsubscribe, list_symbols, list_subscriptions or auth"
                ),
            ));
        }
    };
    Ok(Request { id, command })
}

fn parse_id(value: &BorrowedValue<'_>) -> Result<RequestId, CommandError> {
    let mut json = Vec::with_capacity(16);
    match value {
        BorrowedValue::Static(StaticNode::I64(n)) => crate::json::write_i64(&mut json, *n),
        BorrowedValue::Static(StaticNode::U64(n)) => crate::json::write_u64(&mut json, *n),
        BorrowedValue::Static(StaticNode::F64(n)) if n.is_finite() => json.extend_from_slice(n.to_string().as_bytes()),
        BorrowedValue::String(s) if s.chars().count() <= MAX_ID_CHARS => crate::json::write_str(&mut json, s),
        BorrowedValue::String(_) => {
            return Err(CommandError::new(None, format!("field \"id\" is longer than {MAX_ID_CHARS} characters")));
        }
        _ => return Err(CommandError::new(None, "field \"id\" must be a number or a string")),
    }
    // Only ASCII digits, signs, '.', 'e' and escaped UTF-8 text were written.
    Ok(RequestId(String::from_utf8(json).unwrap_or_default()))
}

fn take_symbols<'a>(
    object: &mut simd_json::value::borrowed::Object<'a>,
    id: &Option<RequestId>,
) -> Result<Vec<Cow<'a, str>>, CommandError> {
    let not_list = || CommandError::new(id.clone(), "field \"symbols\" must be an array of strings, e.g. [\"AAPL\"]");
    match object.remove("symbols") {
        Some(BorrowedValue::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                BorrowedValue::String(s) => Ok(s),
                _ => Err(not_list()),
            })
            .collect(),
        Some(_) => Err(not_list()),
        None => Err(CommandError::new(id.clone(), "missing field \"symbols\"")),
    }
}

/// The optional `max_rate` field: a whole number of updates per second, 1 to
/// [`tickgate_core::throttle::MAX_RATE`].
fn take_max_rate(
    object: &mut simd_json::value::borrowed::Object<'_>,
    id: &Option<RequestId>,
) -> Result<Option<u16>, CommandError> {
    let max = tickgate_core::throttle::MAX_RATE;
    let rate = match object.remove("max_rate") {
        None | Some(BorrowedValue::Static(StaticNode::Null)) => return Ok(None),
        Some(BorrowedValue::Static(StaticNode::U64(n))) => Some(n),
        Some(BorrowedValue::Static(StaticNode::I64(n))) => u64::try_from(n).ok(),
        Some(_) => None,
    };
    match rate.and_then(|n| u16::try_from(n).ok()) {
        Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(CommandError::new(
            id.clone(),
            format!("field \"max_rate\" must be a whole number of updates per second from 1 to {max}"),
        )),
    }
}

/// A client's word, cut to 32 characters to be quoted in an error.
fn shorten(text: &str) -> String {
    let mut shown: String = text.chars().take(32).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

/// The optional `channels` field: a non-empty array of `"trades"` and `"quotes"`.
fn take_channels(
    object: &mut simd_json::value::borrowed::Object<'_>,
    id: &Option<RequestId>,
) -> Result<Option<Channels>, CommandError> {
    let not_list = || {
        CommandError::new(
            id.clone(),
            "field \"channels\" must be a non-empty array of \"trades\" and \"quotes\", e.g. [\"trades\"]",
        )
    };
    let items = match object.remove("channels") {
        None | Some(BorrowedValue::Static(StaticNode::Null)) => return Ok(None),
        Some(BorrowedValue::Array(items)) if !items.is_empty() => items,
        Some(_) => return Err(not_list()),
    };
    let mut channels = Channels::NONE;
    for item in items.iter() {
        let BorrowedValue::String(name) = item else { return Err(not_list()) };
        match Channels::parse(name) {
            Some(channel) => channels = channels.union(channel),
            None => {
                let shown = shorten(name);
                return Err(CommandError::new(
                    id.clone(),
                    format!("unknown channel {shown:?}; the channels are \"trades\" and \"quotes\""),
                ));
            }
        }
    }
    Ok(Some(channels))
}

/// `"resume":[{"symbol":"AAPL","seq":812},..]`: each symbol once, each `seq` an integer of at
/// least 1.
fn take_resume<'a>(
    object: &mut simd_json::value::borrowed::Object<'a>,
    id: &Option<RequestId>,
) -> Result<Vec<Resume<'a>>, CommandError> {
    let bad = |text: String| CommandError::new(id.clone(), text);
    let shape = "field \"resume\" must be an array of {\"symbol\":\"AAPL\",\"seq\":812} (the last seq you hold)";
    let items = match object.remove("resume") {
        None | Some(BorrowedValue::Static(StaticNode::Null)) => return Ok(Vec::new()),
        Some(BorrowedValue::Array(items)) => items,
        Some(_) => return Err(bad(shape.to_string())),
    };
    let mut resume = Vec::with_capacity(items.len());
    for item in *items {
        let BorrowedValue::Object(mut entry) = item else { return Err(bad(shape.to_string())) };
        let Some(BorrowedValue::String(symbol)) = entry.remove("symbol") else { return Err(bad(shape.to_string())) };
        let shown: String = symbol.chars().take(32).collect();
        let seq = match entry.remove("seq") {
            Some(BorrowedValue::Static(StaticNode::U64(n))) if n >= 1 => n,
            Some(BorrowedValue::Static(StaticNode::I64(n))) if n >= 1 => n as u64,
            Some(BorrowedValue::Static(StaticNode::U64(_) | StaticNode::I64(_))) => {
                return Err(bad(format!(
                    "resume seq of {shown:?} must be at least 1 (the last seq you hold); \
                     subscribe without resume for a snapshot"
                )));
            }
            // An integer past u64 arrives as a float (the parser's `big-int-as-float`).
            Some(BorrowedValue::Static(StaticNode::F64(n))) if n.is_finite() && n.fract() == 0.0 && n >= 1.0 => {
                return Err(bad(format!(
                    "resume seq of {shown:?} is out of range: it must be an integer between 1 and \
                     18446744073709551615"
                )));
            }
            Some(_) => {
                return Err(bad(format!(
                    "resume seq of {shown:?} must be an integer between 1 and 18446744073709551615"
                )));
            }
            None => return Err(bad(format!("resume entry of {shown:?} has no \"seq\""))),
        };
        resume.push(Resume { symbol, seq });
    }
    let mut names: Vec<&str> = resume.iter().map(|r| r.symbol.as_ref()).collect();
    names.sort_unstable();
    if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
        let shown: String = twice[0].chars().take(32).collect();
        return Err(bad(format!("symbol {shown:?} appears more than once in \"resume\"")));
    }
    Ok(resume)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request<'static>, CommandError> {
        let buf: &'static mut [u8] = Box::leak(text.as_bytes().to_vec().into_boxed_slice());
        parse_command(buf)
    }

    fn id(json: &str) -> Option<RequestId> {
        Some(RequestId(json.to_string()))
    }

    #[test]
    fn parses_every_op() {
        let r = parse(r#"{"op":"subscribe","symbols":["AAPL","MSFT"],"id":1}"#).unwrap();
        assert_eq!(r.id, id("1"));
        assert_eq!(
            r.command,
            Command::Subscribe {
                symbols: vec!["AAPL".into(), "MSFT".into()],
                policy: None,
                channels: None,
                max_rate: None,
                resume: vec![]
            }
        );
        let r = parse(r#"{"op":"subscribe","symbols":["AAPL"],"policy":"drop"}"#).unwrap();
        assert_eq!(
            r.command,
            Command::Subscribe {
                symbols: vec!["AAPL".into()],
                policy: Some(Policy::Drop),
                channels: None,
                max_rate: None,
                resume: vec![]
            }
        );
        let r = parse(
            r#"{"op":"subscribe","resume":[{"symbol":"AAPL","seq":812},{"symbol":"MSFT","seq":18446744073709551615}]}"#,
        )
        .unwrap();
        let resume = vec![Resume { symbol: "AAPL".into(), seq: 812 }, Resume { symbol: "MSFT".into(), seq: u64::MAX }];
        assert_eq!(
            r.command,
            Command::Subscribe { symbols: vec![], policy: None, channels: None, max_rate: None, resume }
        );
        let r = parse(r#"{"id":"req-\"7\"","op":"unsubscribe","symbols":[]}"#).unwrap();
        assert_eq!(r.id, id(r#""req-\"7\"""#));
        assert_eq!(r.command, Command::Unsubscribe { symbols: vec![], channels: None });
        let r = parse(r#"{"op":"subscribe","symbols":["AAPL"],"channels":["quotes","trades","quotes"]}"#).unwrap();
        assert_eq!(
            r.command,
            Command::Subscribe {
                symbols: vec!["AAPL".into()],
                policy: None,
                channels: Some(Channels::ALL),
                max_rate: None,
                resume: vec![]
            }
        );
        let r = parse(r#"{"op":"unsubscribe","symbols":["AAPL"],"channels":["trades"]}"#).unwrap();
        assert_eq!(r.command, Command::Unsubscribe { symbols: vec!["AAPL".into()], channels: Some(Channels::TRADES) });
        let r = parse(r#"{"op":"subscribe","symbols":["AAPL"],"max_rate":4}"#).unwrap();
        assert!(matches!(r.command, Command::Subscribe { max_rate: Some(4), .. }));
        let r = parse(r#"{"op":"subscribe","symbols":["AAPL"],"max_rate":null}"#).unwrap();
        assert!(matches!(r.command, Command::Subscribe { max_rate: None, .. }));
        let r = parse(r#"{"op":"subscribe","symbols":["AAPL"],"channels":null}"#).unwrap();
        assert!(matches!(r.command, Command::Subscribe { channels: None, .. }));
        assert_eq!(parse(r#"{"op":"list_symbols"}"#).unwrap().command, Command::ListSymbols);
        let r = parse(r#"{"op":"list_subscriptions","id":-2.5,"extra":true}"#).unwrap();
        assert_eq!((r.id, r.command), (id("-2.5"), Command::ListSubscriptions));
        let r = parse(r#"{"op":"auth","token":"abc.def"}"#).unwrap();
        assert_eq!(r.command, Command::Auth { token: "abc.def".into() });
        assert!(parse(r#"{"op":"auth"}"#).unwrap_err().message.contains("token"));
    }

    #[test]
    fn explains_what_is_wrong_and_keeps_the_id() {
        let cases = [
            ("not json", None, "not valid JSON"),
            ("[1,2]", None, "a command is a JSON object"),
            (r#"{"id":1}"#, id("1"), "missing field \"op\""),
            (r#"{"op":7,"id":2}"#, id("2"), "field \"op\" must be a string"),
            (r#"{"op":"buy","id":3}"#, id("3"), "unknown op \"buy\""),
            (r#"{"op":"subscribe","id":4}"#, id("4"), "missing field \"symbols\""),
            (r#"{"op":"subscribe","symbols":"AAPL","id":5}"#, id("5"), "must be an array of strings"),
            (r#"{"op":"subscribe","symbols":[1],"id":6}"#, id("6"), "must be an array of strings"),
            (r#"{"op":"subscribe","symbols":[],"id":{}}"#, None, "must be a number or a string"),
            (
                r#"{"op":"subscribe","symbols":[],"policy":"never","id":7}"#,
                id("7"),
                "\"conflate\", \"drop\" or \"disconnect\"",
            ),
            (r#"{"op":"subscribe","symbols":[],"channels":["bids"],"id":8}"#, id("8"), "unknown channel \"bids\""),
            (r#"{"op":"subscribe","symbols":[],"channels":[],"id":9}"#, id("9"), "non-empty array"),
            (r#"{"op":"unsubscribe","symbols":[],"channels":"trades","id":10}"#, id("10"), "non-empty array"),
            (r#"{"op":"subscribe","symbols":[],"channels":[1],"id":11}"#, id("11"), "non-empty array"),
            (r#"{"op":"subscribe","symbols":[],"max_rate":0,"id":12}"#, id("12"), "from 1 to 1000"),
            (r#"{"op":"subscribe","symbols":[],"max_rate":-4,"id":13}"#, id("13"), "\"max_rate\" must be a whole"),
            (r#"{"op":"subscribe","symbols":[],"max_rate":2.5,"id":14}"#, id("14"), "\"max_rate\" must be a whole"),
            (r#"{"op":"subscribe","symbols":[],"max_rate":4.0,"id":15}"#, id("15"), "\"max_rate\" must be a whole"),
            (r#"{"op":"subscribe","symbols":[],"max_rate":1001,"id":16}"#, id("16"), "from 1 to 1000"),
            (r#"{"op":"subscribe","symbols":[],"max_rate":1e30,"id":17}"#, id("17"), "from 1 to 1000"),
            (r#"{"op":"subscribe","symbols":[],"max_rate":"4","id":18}"#, id("18"), "from 1 to 1000"),
            (r#"{"op":"subscribe","resume":{"AAPL":1},"id":28}"#, id("28"), "must be an array of {"),
            (r#"{"op":"subscribe","resume":[{"symbol":"AAPL","seq":0}]}"#, None, "must be at least 1"),
            (r#"{"op":"subscribe","resume":[{"symbol":"AAPL","seq":-3}]}"#, None, "must be at least 1"),
            (r#"{"op":"subscribe","resume":[{"symbol":"AAPL","seq":1.5}]}"#, None, "must be an integer"),
            (r#"{"op":"subscribe","resume":[{"symbol":"AAPL","seq":"7"}]}"#, None, "must be an integer"),
            (r#"{"op":"subscribe","resume":[{"symbol":"AAPL","seq":1e30}]}"#, None, "must be an integer"),
            (r#"{"op":"subscribe","resume":[{"symbol":"AAPL","seq":2.5e30}]}"#, None, "out of range"),
            (
                r#"{"op":"subscribe","resume":[{"symbol":"AAPL","seq":99999999999999999999999}],"id":30}"#,
                id("30"),
                "resume seq of \"AAPL\" is out of range",
            ),
            (
                r#"{"op":"subscribe","resume":[{"symbol":"AAPL","seq":18446744073709551616}],"id":31}"#,
                id("31"),
                "is out of range: it must be an integer between 1 and 18446744073709551615",
            ),
            (r#"{"op":"subscribe","resume":[{"symbol":"AAPL"}]}"#, None, "has no \"seq\""),
            (r#"{"op":"subscribe","resume":[{"seq":4}]}"#, None, "must be an array of {"),
            (
                r#"{"op":"subscribe","resume":[{"symbol":"AAPL","seq":4},{"symbol":"AAPL","seq":5}]}"#,
                None,
                "\"AAPL\" appears more than once",
            ),
            (r#"{"op":"subscribe","resume":[],"id":29}"#, id("29"), "missing field \"symbols\""),
        ];
        for (text, want_id, want_message) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.id, want_id, "{text}");
            assert!(err.message.contains(want_message), "{text}: {}", err.message);
        }
        let long_id = format!(r#"{{"op":"list_symbols","id":"{}"}}"#, "x".repeat(65));
        assert!(parse(&long_id).unwrap_err().message.contains("longer than 64"));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        proptest::proptest!(|(bytes in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..256))| {
            let mut buf = bytes;
            let _ = parse_command(&mut buf);
        });
    }
}
