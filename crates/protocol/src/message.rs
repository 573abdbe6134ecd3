//! Server messages, encoded straight into a byte buffer.
//!
//! Every function appends one JSON object to `out`. Symbol names come from the symbol table,
//! whose names never need escaping; anything that came from a client is escaped.

use tickgate_core::decimal::format_fixed;
use tickgate_core::{LastValues, SymbolInfo, Tick, TickKind};

use crate::command::RequestId;
use crate::json::{write_str, write_u64};

/// Machine-readable error codes of `{"type":"error"}` replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The command could not be understood.
    BadRequest,
    /// Some symbols of a subscribe or unsubscribe are not in the universe.
    UnknownSymbol,
    /// The client sent a binary frame; the protocol is JSON text.
    UnsupportedFrame,
    /// The client sends commands faster than its allowance; this one was not executed.
    RateLimited,
    /// A subscribe would exceed the connection's maximum of subscriptions.
    TooManySubscriptions,
    /// The gateway requires authentication first.
    Unauthenticated,
    /// The token was refused.
    AuthFailed,
    /// The user is not entitled to some of the symbols.
    NotEntitled,
    /// The client's queue is past its soft limit: the command was not executed (read first).
    Backlogged,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownSymbol => "unknown_symbol",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::NotEntitled => "not_entitled",
            ErrorCode::Backlogged => "backlogged",
        }
    }
}

fn open(out: &mut Vec<u8>, kind: &str) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.push(b'"');
}

fn write_id(out: &mut Vec<u8>, id: Option<&RequestId>) {
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id.as_json().as_bytes());
    }
}

/// `{"type":"welcome","server":"tickgate","version":..,"session":..,"time":..}`, with
/// `"auth":"required"` when the client must authenticate before anything else, and
/// `"feed":"down"` when the upstream feed is down as the client connects.
pub fn welcome(out: &mut Vec<u8>, version: &str, session: &str, time_ns: u64, auth_required: bool, feed_down: bool) {
    open(out, "welcome");
    out.extend_from_slice(b",\"server\":\"tickgate\",\"version\":");
    write_str(out, version);
    out.extend_from_slice(b",\"session\":");
    write_str(out, session);
    out.extend_from_slice(b",\"time\":");
    write_u64(out, time_ns);
    if auth_required {
        out.extend_from_slice(b",\"auth\":\"required\"");
    }
    if feed_down {
        out.extend_from_slice(b",\"feed\":\"down\"");
    }
    out.push(b'}');
}

/// `{"type":"status","feed":"up"|"down","source":..}`: the upstream feed went down (events
/// stop; nothing is lost from tickgate's sequence) or came back.
pub fn status(out: &mut Vec<u8>, feed_up: bool, source: &str) {
    open(out, "status");
    out.extend_from_slice(if feed_up { b",\"feed\":\"up\"" } else { b",\"feed\":\"down\"" });
    out.extend_from_slice(b",\"source\":");
    write_str(out, source);
    out.push(b'}');
}

/// `{"type":"authenticated","id":..,"user":..,"expires":<unix seconds>|null}`
pub fn authenticated(out: &mut Vec<u8>, id: Option<&RequestId>, user: &str, expires: Option<u64>) {
    open(out, "authenticated");
    write_id(out, id);
    out.extend_from_slice(b",\"user\":");
    write_str(out, user);
    out.extend_from_slice(b",\"expires\":");
    match expires {
        Some(t) => write_u64(out, t),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// A reply listing symbols: `subscribed`, `unsubscribed`, `symbols` or `subscriptions`.
pub fn symbol_list<'s>(
    out: &mut Vec<u8>,
    kind: &str,
    id: Option<&RequestId>,
    symbols: impl IntoIterator<Item = &'s str>,
) {
    open(out, kind);
    write_id(out, id);
    out.extend_from_slice(b",\"symbols\":");
    write_str_array(out, symbols);
    out.push(b'}');
}

/// `["a","b"]`.
fn write_str_array<'s>(out: &mut Vec<u8>, items: impl IntoIterator<Item = &'s str>) {
    out.push(b'[');
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, s);
    }
    out.push(b']');
}

/// `{"type":"subscribed","id":..,"symbols":[..],"policy":..}`: the symbols now subscribed and
/// the connection's slow-consumer policy.
pub fn subscribed<'s>(
    out: &mut Vec<u8>,
    id: Option<&RequestId>,
    symbols: impl IntoIterator<Item = &'s str>,
    policy: tickgate_core::Policy,
) {
    symbol_list(out, "subscribed", id, symbols);
    out.pop();
    out.extend_from_slice(b",\"policy\":\"");
    out.extend_from_slice(policy.as_str().as_bytes());
    out.extend_from_slice(b"\"}");
}

/// Adds `"max_rate":n` to the `subscribed` just written into `out`: the rate now in force for
/// its symbols.
pub fn with_max_rate(out: &mut Vec<u8>, rate: u16) {
    debug_assert_eq!(out.last(), Some(&b'}'));
    out.pop();
    out.extend_from_slice(b",\"max_rate\":");
    write_u64(out, u64::from(rate));
    out.push(b'}');
}

/// One subscription as `list_subscriptions` shows it: the symbol, its channels, its rate cap
/// (`0`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held<'s> {
    pub symbol: &'s str,
    pub channels: tickgate_core::Channels,
    pub max_rate: u16,
}

/// `{"type":"subscriptions","id":..,"symbols":[..],"subscriptions":[{"symbol":..,"channels":[..],
/// "max_rate":n},..],"policy":..,"max_bytes_per_second":n}`: the connection's subscriptions
/// (`max_rate` only when capped), its slow-client policy and its bandwidth cap (only when capped).
pub fn subscriptions(
    out: &mut Vec<u8>,
    id: Option<&RequestId>,
    held: &[Held<'_>],
    policy: tickgate_core::Policy,
    max_bytes_per_second: Option<u32>,
) {
    symbol_list(out, "subscriptions", id, held.iter().map(|h| h.symbol));
    out.pop();
    out.extend_from_slice(b",\"subscriptions\":[");
    for (i, h) in held.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"symbol\":");
        write_str(out, h.symbol);
        out.extend_from_slice(b",\"channels\":");
        write_str_array(out, h.channels.names());
        if h.max_rate > 0 {
            out.extend_from_slice(b",\"max_rate\":");
            write_u64(out, u64::from(h.max_rate));
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"policy\":\"");
    out.extend_from_slice(policy.as_str().as_bytes());
    out.push(b'"');
    if let Some(bytes) = max_bytes_per_second {
        out.extend_from_slice(b",\"max_bytes_per_second\":");
        write_u64(out, u64::from(bytes));
    }
    out.push(b'}');
}

/// Adds `"channels":[..]` to the reply just written into `out` (a `subscribed` or
/// `unsubscribed`): the channels its command named.
pub fn with_channels(out: &mut Vec<u8>, channels: tickgate_core::Channels) {
    debug_assert_eq!(out.last(), Some(&b'}'));
    out.pop();
    out.extend_from_slice(b",\"channels\":");
    write_str_array(out, channels.names());
    out.push(b'}');
}

/// `{"type":"error","id":..,"code":..,"message":..}` with optional `symbols`.
pub fn error<'s>(
    out: &mut Vec<u8>,
    id: Option<&RequestId>,
    code: ErrorCode,
    message: &str,
    symbols: impl IntoIterator<Item = &'s str>,
) {
    open(out, "error");
    write_id(out, id);
    out.extend_from_slice(b",\"code\":\"");
    out.extend_from_slice(code.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    write_str(out, message);
    let mut symbols = symbols.into_iter().peekable();
    if symbols.peek().is_some() {
        out.extend_from_slice(b",\"symbols\":[");
        for (i, s) in symbols.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, s);
        }
        out.push(b']');
    }
    out.push(b'}');
}

fn field_fixed(out: &mut Vec<u8>, name: &str, mantissa: i64, scale: u8) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":\"");
    format_fixed(out, mantissa, scale);
    out.push(b'"');
}

fn field_u64(out: &mut Vec<u8>, name: &str, v: u64) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    write_u64(out, v);
}

fn tick_values(out: &mut Vec<u8>, info: &SymbolInfo, kind: &TickKind) {
    match *kind {
        TickKind::Trade { price, size } => {
            field_fixed(out, "price", price, info.price_scale);
            field_fixed(out, "size", size, info.size_scale);
        }
        TickKind::Quote { bid, bid_size, ask, ask_size } => {
            field_fixed(out, "bid", bid, info.price_scale);
            field_fixed(out, "bid_size", bid_size, info.size_scale);
            field_fixed(out, "ask", ask, info.price_scale);
            field_fixed(out, "ask_size", ask_size, info.size_scale);
        }
    }
}

/// A live event: `{"type":"trade",...}` or `{"type":"quote",...}`. A quote sent to a slow
/// client in place of `conflated` earlier quotes it superseded says so (`"conflated":n`).
pub fn event(out: &mut Vec<u8>, info: &SymbolInfo, tick: &Tick, conflated: u32) {
    open(out, if tick.kind.is_trade() { "trade" } else { "quote" });
    out.extend_from_slice(b",\"symbol\":\"");
    out.extend_from_slice(info.name.as_bytes());
    out.push(b'"');
    field_u64(out, "seq", tick.seq);
    tick_values(out, info, &tick.kind);
    if conflated > 0 {
        field_u64(out, "conflated", u64::from(conflated));
    }
    field_u64(out, "ts", tick.ts);
    field_u64(out, "gw_ts", tick.gw_ts);
    out.push(b'}');
}

/// `{"type":"snapshot","symbol":..,"seq":..,"trade":{..}|null,"quote":{..}|null}`: the state
/// of a symbol as of `seq`; live events continue from `seq + 1`.
pub fn snapshot(out: &mut Vec<u8>, info: &SymbolInfo, values: &LastValues) {
    open(out, "snapshot");
    out.extend_from_slice(b",\"symbol\":\"");
    out.extend_from_slice(info.name.as_bytes());
    out.push(b'"');
    field_u64(out, "seq", values.seq);
    for (name, tick) in [("trade", &values.trade), ("quote", &values.quote)] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        match tick {
            None => out.extend_from_slice(b"null"),
            Some(tick) => {
                out.push(b'{');
                write_key_u64(out, "seq", tick.seq);
                tick_values(out, info, &tick.kind);
                field_u64(out, "ts", tick.ts);
                field_u64(out, "gw_ts", tick.gw_ts);
                out.push(b'}');
            }
        }
    }
    out.push(b'}');
}

fn write_key_u64(out: &mut Vec<u8>, name: &str, v: u64) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    write_u64(out, v);
}

/// `{"type":"gap","symbol":..,"from_seq":..,"to_seq":..,"reason":..}`: the client will not
/// receive events `from_seq..=to_seq` of the symbol; a snapshot follows.
pub fn gap(out: &mut Vec<u8>, info: &SymbolInfo, from_seq: u64, to_seq: u64, reason: &str) {
    open(out, "gap");
    out.extend_from_slice(b",\"symbol\":\"");
    out.extend_from_slice(info.name.as_bytes());
    out.push(b'"');
    field_u64(out, "from_seq", from_seq);
    field_u64(out, "to_seq", to_seq);
    out.extend_from_slice(b",\"reason\":");
    write_str(out, reason);
    out.push(b'}');
}

/// `{"type":"resumed","symbol":..,"after_seq":..,"to_seq":..}`: a resume found every event of the
/// symbol after `after_seq`; those up to `to_seq` follow (none when the two are equal), then the
/// live stream, with no snapshot.
pub fn resumed(out: &mut Vec<u8>, info: &SymbolInfo, after_seq: u64, to_seq: u64) {
    open(out, "resumed");
    out.extend_from_slice(b",\"symbol\":\"");
    out.extend_from_slice(info.name.as_bytes());
    out.push(b'"');
    field_u64(out, "after_seq", after_seq);
    field_u64(out, "to_seq", to_seq);
    out.push(b'}');
}

/// `{"type":"upstream_gap","symbol":..,"source":..,"after_seq":..,"missed":..}`: the upstream's
/// own sequence numbers say it skipped `missed` events of the symbol after the event `after_seq`
/// (tickgate's numbering has no hole: nothing was lost between the gateway and the client).
pub fn upstream_gap(out: &mut Vec<u8>, info: &SymbolInfo, source: &str, after_seq: u64, missed: u64) {
    upstream_notice(out, "upstream_gap", info, source, after_seq);
    field_u64(out, "missed", missed);
    out.push(b'}');
}

/// The members `upstream_gap` and `upstream_reset` share, up to `after_seq`.
fn upstream_notice(out: &mut Vec<u8>, kind: &str, info: &SymbolInfo, source: &str, after_seq: u64) {
    open(out, kind);
    out.extend_from_slice(b",\"symbol\":\"");
    out.extend_from_slice(info.name.as_bytes());
    out.extend_from_slice(b"\",\"source\":");
    write_str(out, source);
    field_u64(out, "after_seq", after_seq);
}

/// `{"type":"upstream_reset","symbol":..,"source":..,"after_seq":..,"reason":..}`: the
/// upstream's numbering of the symbol started again after the event `after_seq` (a reconnect, an
/// implausible jump, a replay's new lap): an unknown number of its events may be missing there.
pub fn upstream_reset(out: &mut Vec<u8>, info: &SymbolInfo, source: &str, after_seq: u64, reason: &str) {
    upstream_notice(out, "upstream_reset", info, source, after_seq);
    out.extend_from_slice(b",\"reason\":");
    write_str(out, reason);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use tickgate_core::{AssetClass, SymbolId};

    fn aapl() -> SymbolInfo {
        SymbolInfo { name: "AAPL".into(), class: AssetClass::Equity, price_scale: 2, size_scale: 0 }
    }

    fn encode(f: impl FnOnce(&mut Vec<u8>)) -> Value {
        let mut out = Vec::new();
        f(&mut out);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    fn trade() -> Tick {
        Tick {
            symbol: SymbolId(0),
            seq: 42,
            ts: 1_700_000_000_000_000_000,
            gw_ts: 1_700_000_000_000_100_000,
            kind: TickKind::Trade { price: 18712, size: 100 },
        }
    }

    #[test]
    fn events_carry_exact_decimal_strings() {
        assert_eq!(
            encode(|o| event(o, &aapl(), &trade(), 0)),
            json!({"type":"trade","symbol":"AAPL","seq":42,"price":"187.12","size":"100","ts":1_700_000_000_000_000_000u64,"gw_ts":1_700_000_000_000_100_000u64})
        );
        let quote =
            Tick { seq: 43, kind: TickKind::Quote { bid: 18711, bid_size: 3, ask: 18713, ask_size: 5 }, ..trade() };
        let v = encode(|o| event(o, &aapl(), &quote, 0));
        assert_eq!(v["type"], "quote");
        assert_eq!(v.get("conflated"), None);
        assert_eq!(encode(|o| event(o, &aapl(), &quote, 3))["conflated"], 3);
        assert_eq!(
            (v["bid"].as_str(), v["ask"].as_str(), v["ask_size"].as_str()),
            (Some("187.11"), Some("187.13"), Some("5"))
        );
    }

    #[test]
    fn replies_can_state_their_channels() {
        let v = encode(|o| {
            subscribed(o, None, ["AAPL"], tickgate_core::Policy::Drop);
            with_channels(o, tickgate_core::Channels::TRADES);
        });
        assert_eq!(v, json!({"type":"subscribed","symbols":["AAPL"],"policy":"drop","channels":["trades"]}));
        let v = encode(|o| {
            symbol_list(o, "unsubscribed", None, ["AAPL"]);
            with_channels(o, tickgate_core::Channels::ALL);
        });
        assert_eq!(v, json!({"type":"unsubscribed","symbols":["AAPL"],"channels":["trades","quotes"]}));
    }

    #[test]
    fn subscriptions_show_each_symbols_channels_and_rate() {
        use tickgate_core::{Channels, Policy};
        let held = [
            Held { symbol: "AAPL", channels: Channels::ALL, max_rate: 0 },
            Held { symbol: "MSFT", channels: Channels::QUOTES, max_rate: 4 },
        ];
        let id = crate::parse_command(&mut br#"{"op":"list_subscriptions","id":7}"#.to_vec()).unwrap().id;
        assert_eq!(
            encode(|o| subscriptions(o, id.as_ref(), &held, Policy::Conflate, None)),
            json!({"type":"subscriptions","id":7,"symbols":["AAPL","MSFT"],"subscriptions":[
                {"symbol":"AAPL","channels":["trades","quotes"]},
                {"symbol":"MSFT","channels":["quotes"],"max_rate":4}],"policy":"conflate"})
        );
        assert_eq!(
            encode(|o| subscriptions(o, None, &[], Policy::Drop, Some(65_536))),
            json!({"type":"subscriptions","symbols":[],"subscriptions":[],"policy":"drop","max_bytes_per_second":65_536})
        );
    }

    #[test]
    fn snapshot_holds_last_trade_and_quote() {
        let values = LastValues { seq: 42, trade: Some(trade()), quote: None };
        let v = encode(|o| snapshot(o, &aapl(), &values));
        assert_eq!(v["type"], "snapshot");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["trade"]["price"], "187.12");
        assert_eq!(v["trade"]["seq"], 42);
        assert_eq!(v["quote"], Value::Null);
    }

    #[test]
    fn replies_echo_the_id_verbatim() {
        let id = crate::parse_command(&mut br#"{"op":"list_symbols","id":"a\"b"}"#.to_vec()).unwrap().id;
        let v = encode(|o| symbol_list(o, "subscribed", id.as_ref(), ["AAPL", "MSFT"]));
        assert_eq!(v, json!({"type":"subscribed","id":"a\"b","symbols":["AAPL","MSFT"]}));
        let v = encode(|o| subscribed(o, None, ["AAPL"], tickgate_core::Policy::Drop));
        assert_eq!(v, json!({"type":"subscribed","symbols":["AAPL"],"policy":"drop"}));
        let v = encode(|o| error(o, None, ErrorCode::UnknownSymbol, "unknown \"ZZZ\"", ["ZZZ\n"]));
        assert_eq!(v, json!({"type":"error","code":"unknown_symbol","message":"unknown \"ZZZ\"","symbols":["ZZZ\n"]}));
        let v = encode(|o| welcome(o, "0.1.0", "r0-1", 5, false, false));
        assert_eq!(v, json!({"type":"welcome","server":"tickgate","version":"0.1.0","session":"r0-1","time":5}));
        assert_eq!(encode(|o| status(o, false, "tcp")), json!({"type":"status","feed":"down","source":"tcp"}));
        let v = encode(|o| gap(o, &aapl(), 3, 9, "gateway_overload"));
        assert_eq!(v, json!({"type":"gap","symbol":"AAPL","from_seq":3,"to_seq":9,"reason":"gateway_overload"}));
        let v = encode(|o| upstream_gap(o, &aapl(), "nasdaq-1", 41, 3));
        assert_eq!(v, json!({"type":"upstream_gap","symbol":"AAPL","source":"nasdaq-1","after_seq":41,"missed":3}));
        let v = encode(|o| upstream_reset(o, &aapl(), "nasdaq-1", 41, "upstream_restart"));
        assert_eq!(
            v,
            json!({"type":"upstream_reset","symbol":"AAPL","source":"nasdaq-1","after_seq":41,"reason":"upstream_restart"})
        );
    }
}
