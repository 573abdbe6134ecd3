//! Exchange market-data messages mapped to ticks, sans IO: Binance spot (trade and bookTicker
//! streams, with or without the combined-stream wrapper) and Coinbase Exchange (ticker and
//! matches channels).
//!
//! Coinbase numbers every message of a product (`sequence`) across all of its channels, so on
//! the ticker and matches channels alone consecutive messages skip numbers as a matter of
//! course: `sequence` only orders them (one going back is rejected). Trades are numbered per
//! product without holes (`trade_id`), so a jump in `trade_id` is what reveals trades the
//! upstream did not deliver: it is reported as an upstream gap. Both follow the lifecycle of
//! [`crate::upstream_seq`] (a reconnect is a new session; an implausible jump is a reset).
//!
//! [`ExchangeSource`] ([`crate::exchange_feed`]) is the network side: a WebSocket client that
//! subscribes, keeps the connection alive and reconnects with backoff, feeding each message to an
//! [`ExchangeMapper`]. Upstream names map to
//! the universe through an alias table (e.g. `BTCUSDT` -> `BTC-USD`); prices and sizes must be
//! exact at the symbol's scale, as for every source.

use std::collections::HashMap;
use std::sync::Arc;

use tickgate_core::{SymbolTable, Tick, TickKind, parse_fixed};

pub use crate::exchange_feed::{ConnectError, ExchangeSource, MAX_MESSAGE};
use crate::json::{Field, Members, Nested, Parser, json_object, set};
use crate::normalize::{Normalized, Reject, remember_name};
use crate::resolve::{SymbolResolver, UnknownSymbols};
use crate::upstream_seq::{Continuity, DEFAULT_MAX_SEQ_JUMP, Numbering, ResetReason, UpstreamSeqs};

/// Which exchange's messages these are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    Binance,
    Coinbase,
}

/// Maps one exchange's messages to ticks.
pub struct ExchangeMapper {
    exchange: Exchange,
    resolver: SymbolResolver,
    /// Each symbol's last `sequence` of a ticker (Coinbase).
    ticker_seqs: UpstreamSeqs,
    /// Each symbol's last `trade_id` of a match (Coinbase).
    trade_ids: UpstreamSeqs,
    /// simd-json's buffers and tape, reused so a message costs no allocation.
    parser: Parser,
    /// The symbol name of the last message, for the log line of a reject.
    last_symbol: String,
}

impl std::fmt::Debug for ExchangeMapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeMapper").field("exchange", &self.exchange).field("resolver", &self.resolver).finish()
    }
}

impl ExchangeMapper {
    /// `aliases` maps the exchange's names to the universe's; names already in the universe
    /// map to themselves.
    pub fn new(exchange: Exchange, symbols: Arc<SymbolTable>, aliases: &HashMap<String, String>) -> Self {
        Self::with_resolver(exchange, SymbolResolver::new(symbols, aliases, UnknownSymbols::Reject))
    }

    pub fn with_resolver(exchange: Exchange, resolver: SymbolResolver) -> Self {
        let seqs = UpstreamSeqs::new(resolver.capacity(), DEFAULT_MAX_SEQ_JUMP);
        let last_symbol = String::with_capacity(crate::normalize::MAX_LOGGED_NAME);
        Self { exchange, resolver, ticker_seqs: seqs.clone(), trade_ids: seqs, parser: Parser::new(), last_symbol }
    }

    /// The largest forward jump of a `trade_id` taken as an upstream gap (`feed.max_seq_jump`).
    pub fn with_max_seq_jump(mut self, max_seq_jump: u64) -> Self {
        self.ticker_seqs.set_max_jump(max_seq_jump);
        self.trade_ids.set_max_jump(max_seq_jump);
        self
    }

    /// A new connection to the exchange starts: its numbering may start afresh.
    pub fn new_session(&mut self) {
        self.ticker_seqs.new_session(ResetReason::UpstreamRestart);
        self.trade_ids.new_session(ResetReason::UpstreamRestart);
    }

    /// The symbol name the last message carried ("" if none): what a reject's log names.
    pub fn last_symbol(&self) -> &str {
        &self.last_symbol
    }

    /// Maps one message. `Ok(None)` is a message that carries no tick (a subscription ack, a
    /// heartbeat); `now_ns` stamps messages without an exchange time (Binance's bookTicker).
    pub fn map(&mut self, message: &mut [u8], now_ns: u64) -> Result<Option<Normalized>, Reject> {
        let resolver = &mut self.resolver;
        let last = &mut self.last_symbol;
        last.clear();
        let (name, found, kind, ts, seq) = match self.exchange {
            Exchange::Binance => {
                let message: BinanceMessage<'_> = self.parser.parse(message)?;
                // Binance's combined stream wraps each event: {"stream":..,"data":{..}}.
                let event = match message.data {
                    Nested::Object(data) => data,
                    Nested::Missing | Nested::Other => message.event,
                };
                if event.e.is_present() {
                    if event.e.text("e")? != "trade" {
                        return Ok(None);
                    }
                    let name = event.s.text("s")?;
                    remember_name(last, name);
                    let info = resolver.find(name)?;
                    let price = fixed(event.p.text("p")?, info.price_scale, "p")?;
                    let size = fixed(event.q.text("q")?, info.size_scale, "q")?;
                    // Milliseconds; nanoseconds past 2554 do not fit in a u64.
                    let ts = event.trade_time.uint("T")?.checked_mul(1_000_000).ok_or(Reject::TimestampSkew)?;
                    (name, info, TickKind::Trade { price, size }, ts, None)
                } else if event.u.is_present() && event.b.is_present() {
                    let name = event.s.text("s")?;
                    remember_name(last, name);
                    let info = resolver.find(name)?;
                    let kind = TickKind::Quote {
                        bid: fixed(event.b.text("b")?, info.price_scale, "b")?,
                        bid_size: fixed(event.bid_size.text("B")?, info.size_scale, "B")?,
                        ask: fixed(event.a.text("a")?, info.price_scale, "a")?,
                        ask_size: fixed(event.ask_size.text("A")?, info.size_scale, "A")?,
                    };
                    (name, info, kind, now_ns, None)
                } else {
                    // {"result":null,"id":1} and other replies.
                    return Ok(None);
                }
            }
            Exchange::Coinbase => {
                let m: CoinbaseMessage<'_> = self.parser.parse(message)?;
                match m.kind.text("type")? {
                    "match" | "last_match" => {
                        let name = m.product_id.text("product_id")?;
                        remember_name(last, name);
                        let info = resolver.find(name)?;
                        let kind = TickKind::Trade {
                            price: fixed(m.price.text("price")?, info.price_scale, "price")?,
                            size: fixed(m.size.text("size")?, info.size_scale, "size")?,
                        };
                        let ts = rfc3339_ns(m.time.text("time")?).ok_or(Reject::WrongType("time"))?;
                        (name, info, kind, ts, Some(Numbered::Trade(m.trade_id.uint("trade_id")?)))
                    }
                    "ticker" => {
                        let name = m.product_id.text("product_id")?;
                        remember_name(last, name);
                        let info = resolver.find(name)?;
                        let kind = TickKind::Quote {
                            bid: fixed(m.best_bid.text("best_bid")?, info.price_scale, "best_bid")?,
                            bid_size: fixed(m.best_bid_size.text("best_bid_size")?, info.size_scale, "best_bid_size")?,
                            ask: fixed(m.best_ask.text("best_ask")?, info.price_scale, "best_ask")?,
                            ask_size: fixed(m.best_ask_size.text("best_ask_size")?, info.size_scale, "best_ask_size")?,
                        };
                        let ts = rfc3339_ns(m.time.text("time")?).ok_or(Reject::WrongType("time"))?;
                        (name, info, kind, ts, Some(Numbered::Ticker(m.sequence.uint("sequence")?)))
                    }
                    "subscriptions" | "heartbeat" => return Ok(None),
                    _ => return Err(Reject::UnknownType),
                }
            }
        };
        match kind {
            TickKind::Trade { price, size } if price <= 0 || size < 0 => {
                return Err(if price <= 0 { Reject::NonPositivePrice } else { Reject::NegativeSize });
            }
            TickKind::Quote { bid, bid_size, ask, ask_size }
                if bid <= 0 || ask <= 0 || bid_size < 0 || ask_size < 0 =>
            {
                return Err(if bid <= 0 || ask <= 0 { Reject::NonPositivePrice } else { Reject::NegativeSize });
            }
            _ => {}
        }
        // The message is good: a new symbol joins the universe only now.
        let symbol = resolver.admit(name, found)?;
        let (upstream_seq, continuity) = match seq {
            None => (None, Continuity::InOrder),
            Some(Numbered::Trade(id)) => {
                (Some(id), self.trade_ids.check(symbol.index(), Some(id), Numbering::Contiguous, None)?)
            }
            // Jumps are normal here (see the module docs): only the order is checked.
            Some(Numbered::Ticker(seq)) => {
                (None, self.ticker_seqs.check(symbol.index(), Some(seq), Numbering::Increasing, None)?)
            }
        };
        let tick = Tick { symbol, seq: 0, ts, gw_ts: 0, kind };
        Ok(Some(Normalized::new(tick, upstream_seq, continuity)))
    }
}

/// How a Coinbase message is numbered.
#[derive(Debug, Clone, Copy)]
enum Numbered {
    /// A ticker's `sequence`: increasing, with holes.
    Ticker(u64),
    /// A match's `trade_id`: increasing without holes.
    Trade(u64),
}

json_object! {
    /// The members of a Binance trade or bookTicker event that the mapper reads.
    struct BinanceEvent<'a> {
        e: Field<'a> = "e",
        s: Field<'a> = "s",
        p: Field<'a> = "p",
        q: Field<'a> = "q",
        trade_time: Field<'a> = "T",
        u: Field<'a> = "u",
        b: Field<'a> = "b",
        bid_size: Field<'a> = "B",
        a: Field<'a> = "a",
        ask_size: Field<'a> = "A",
    }
}

/// A Binance message: an event, or the combined stream's envelope around one.
#[derive(Debug, Clone, Copy, Default)]
struct BinanceMessage<'a> {
    event: BinanceEvent<'a>,
    data: Nested<BinanceEvent<'a>>,
}

impl<'a> Members<'a> for BinanceMessage<'a> {
    fn read<A: serde::de::MapAccess<'a>>(&mut self, key: &str, map: &mut A, last_wins: bool) -> Result<bool, A::Error> {
        match key {
            "data" => set(&mut self.data, map, last_wins).map(|()| true),
            _ => self.event.read(key, map, last_wins),
        }
    }
}

json_object! {
    /// The members of a Coinbase Exchange message that the mapper reads.
    struct CoinbaseMessage<'a> {
        kind: Field<'a> = "type",
        product_id: Field<'a> = "product_id",
        price: Field<'a> = "price",
        size: Field<'a> = "size",
        best_bid: Field<'a> = "best_bid",
        best_bid_size: Field<'a> = "best_bid_size",
        best_ask: Field<'a> = "best_ask",
        best_ask_size: Field<'a> = "best_ask_size",
        time: Field<'a> = "time",
        sequence: Field<'a> = "sequence",
        trade_id: Field<'a> = "trade_id",
    }
}

fn fixed(text: &str, scale: u8, field: &'static str) -> Result<i64, Reject> {
    parse_fixed(text, scale).map_err(|_| Reject::BadDecimal(field))
}

/// The subscribe message for Binance's combined stream: trade and bookTicker per symbol.
pub fn binance_subscribe(upstream_symbols: &[&str], id: u64) -> String {
    let params: Vec<String> = upstream_symbols
        .iter()
        .flat_map(|s| {
            let s = s.to_ascii_lowercase();
            [format!("\"{s}@trade\""), format!("\"{s}@bookTicker\"")]
        })
        .collect();
    format!("{{\"method\":\"SUBSCRIBE\",\"params\":[{}],\"id\":{id}}}", params.join(","))
}

/// The subscribe message for Coinbase Exchange: ticker and matches per product, and the heartbeat
/// channel (a message a second per product), so that a quiet product still shows the feed alive.
pub fn coinbase_subscribe(products: &[&str]) -> String {
    let ids: Vec<String> = products.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "{{\"type\":\"subscribe\",\"product_ids\":[{}],\"channels\":[\"ticker\",\"matches\",\"heartbeat\"]}}",
        ids.join(",")
    )
}

/// Nanoseconds since the Unix epoch of an RFC 3339 UTC time such as
/// `2014-11-07T08:19:27.028459Z` (the form Coinbase sends).
pub fn rfc3339_ns(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let s = b.get(r)?;
        s.iter().all(u8::is_ascii_digit).then(|| s.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = (i - start).min(9);
        if digits == 0 {
            return None;
        }
        nanos *= 10u64.pow(9 - digits as u32);
    }
    if b.get(i..) != Some(b"Z") {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 { (year as i64 - 1, month + 9) } else { (year as i64, month - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m as i64 + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days).ok()? * 86_400 + hour * 3_600 + minute * 60 + second;
    // None past 2554-07-21T23:34:33.709551615Z, the last nanosecond a u64 holds.
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickgate_core::{AssetClass, SymbolInfo};

    fn mapper(exchange: Exchange) -> ExchangeMapper {
        let mut table = SymbolTable::new();
        for (name, ps, ss) in [("BTC-USD", 2, 8), ("ETH-USD", 2, 8), ("BNB-BTC", 6, 2)] {
            table
                .insert(SymbolInfo { name: name.into(), class: AssetClass::Crypto, price_scale: ps, size_scale: ss })
                .unwrap();
        }
        let aliases = HashMap::from([
            ("BTCUSDT".to_string(), "BTC-USD".to_string()),
            ("BNBBTC".to_string(), "BNB-BTC".to_string()),
        ]);
        ExchangeMapper::new(exchange, Arc::new(table), &aliases)
    }

    fn map(m: &mut ExchangeMapper, text: &str) -> Result<Option<Normalized>, Reject> {
        m.map(&mut text.as_bytes().to_vec(), 42)
    }

    #[test]
    fn binance_trade_and_book_ticker_from_the_api_documentation() {
        let mut m = mapper(Exchange::Binance);
        // Binance spot "Trade Streams" example (with the combined-stream wrapper).
        let trade = r#"{"stream":"bnbbtc@trade","data":{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}}"#;
        let t = map(&mut m, trade).unwrap().unwrap().tick;
        assert_eq!(t.kind, TickKind::Trade { price: 1_000, size: 10_000 });
        assert_eq!(t.ts, 1_672_515_782_136_000_000);
        // "Individual Symbol Book Ticker Streams" example, unwrapped.
        let book =
            r#"{"u":400900217,"s":"BNBBTC","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#;
        let q = map(&mut m, book).unwrap().unwrap().tick;
        assert_eq!(q.kind, TickKind::Quote { bid: 25_351_900, bid_size: 3_121, ask: 25_365_200, ask_size: 4_066 });
        assert_eq!(q.ts, 42, "no exchange time: stamped on receipt");
        assert_eq!(map(&mut m, r#"{"result":null,"id":1}"#), Ok(None), "the subscribe ack");
    }

    #[test]
    fn coinbase_ticker_and_match_with_trade_id_gaps() {
        let mut m = mapper(Exchange::Coinbase);
        let ticker = r#"{"type":"ticker","sequence":37475248783,"product_id":"ETH-USD","price":"1285.22","open_24h":"1310.79","volume_24h":"245532.79269678","low_24h":"1280.52","high_24h":"1313.8","volume_30d":"9788783.60117027","best_bid":"1285.04","best_bid_size":"0.46688654","best_ask":"1285.27","best_ask_size":"1.56637040","side":"buy","time":"2022-10-19T23:28:22.061769Z","trade_id":370843401,"last_size":"11.4396987"}"#;
        let q = map(&mut m, ticker).unwrap().unwrap();
        assert_eq!(
            q.tick.kind,
            TickKind::Quote { bid: 128_504, bid_size: 46_688_654, ask: 128_527, ask_size: 156_637_040 }
        );
        assert_eq!(q.tick.ts, 1_666_222_102_061_769_000);
        let matched = r#"{"type":"match","trade_id":10,"sequence":37475248790,"maker_order_id":"ac928c66-ca53-498f-9c13-a110027a60e8","taker_order_id":"132fb6ae-456b-4654-b4e0-d681ac05cea1","time":"2022-10-19T23:28:22.5Z","product_id":"ETH-USD","size":"5.23512","price":"1285.23","side":"sell"}"#;
        let t = map(&mut m, matched).unwrap().unwrap();
        assert_eq!(t.tick.kind, TickKind::Trade { price: 128_523, size: 523_512_000 });
        assert_eq!(t.upstream_gap, None, "the first trade of the product");
        assert_eq!(map(&mut m, matched), Err(Reject::SeqBackwards), "the same trade_id again");
        // The next trade skips sequence numbers (other channels' messages): no gap. The one
        // after skips trade ids 12 and 13: a gap of two trades.
        let next =
            matched.replace(r#""trade_id":10,"sequence":37475248790"#, r#""trade_id":11,"sequence":37475248801"#);
        assert_eq!(map(&mut m, &next).unwrap().unwrap().upstream_gap, None);
        let skip =
            matched.replace(r#""trade_id":10,"sequence":37475248790"#, r#""trade_id":14,"sequence":37475248900"#);
        assert_eq!(map(&mut m, &skip).unwrap().unwrap().upstream_gap, Some((12, 13)));
        assert_eq!(map(&mut m, ticker), Err(Reject::SeqBackwards), "a ticker older than the last one");
        assert_eq!(
            map(
                &mut m,
                r#"{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD","time":"2014-11-07T08:19:28.464459Z"}"#
            ),
            Ok(None)
        );
    }

    #[test]
    fn malformed_truncated_and_hostile_messages_are_rejected() {
        let mut b = mapper(Exchange::Binance);
        let mut c = mapper(Exchange::Coinbase);
        assert_eq!(
            map(&mut b, r#"{"e":"trade","s":"BNBBTC","p":"0.0000001","q":"1","T":1}"#),
            Err(Reject::BadDecimal("p"))
        );
        assert_eq!(map(&mut b, r#"{"e":"trade","s":"DOGEUSDT","p":"1","q":"1","T":1}"#), Err(Reject::UnknownSymbol));
        assert_eq!(b.last_symbol(), "DOGEUSDT", "what the reject's log line names");
        assert_eq!(map(&mut b, r#"{"e":"trade","s":"BNBBTC","p":"1""#), Err(Reject::Malformed));
        assert_eq!(b.last_symbol(), "", "a message that could not be read names no symbol");
        assert_eq!(map(&mut b, r#"{"e":"trade","s":"BNBBTC","p":"-1","q":"1","T":1}"#), Err(Reject::NonPositivePrice));
        assert_eq!(
            map(
                &mut c,
                r#"{"type":"match","product_id":"BTC-USD","price":"1","size":"1","time":"yesterday","sequence":1}"#
            ),
            Err(Reject::WrongType("time"))
        );
        assert_eq!(map(&mut c, r#"{"type":"error","message":"Failed to subscribe"}"#), Err(Reject::UnknownType));
        // Exchange times past what a u64 of nanoseconds holds (the year 2554).
        let trade_at = |t: u64| format!(r#"{{"e":"trade","s":"BNBBTC","p":"1","q":"1","T":{t}}}"#);
        assert_eq!(map(&mut b, &trade_at(18_446_744_073_709)).unwrap().unwrap().tick.ts, 18_446_744_073_709_000_000);
        assert_eq!(map(&mut b, &trade_at(18_446_744_073_710)), Err(Reject::TimestampSkew));
        assert_eq!(map(&mut b, &trade_at(u64::MAX)), Err(Reject::TimestampSkew));
        assert_eq!(
            map(
                &mut c,
                r#"{"type":"match","product_id":"BTC-USD","price":"1","size":"1","time":"9999-12-31T23:59:59Z","sequence":1}"#
            ),
            Err(Reject::WrongType("time"))
        );
        proptest::proptest!(|(bytes in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..300))| {
            let _ = mapper(Exchange::Binance).map(&mut bytes.clone(), 0);
            let _ = mapper(Exchange::Coinbase).map(&mut bytes.clone(), 0);
        });
    }

    #[test]
    fn subscribe_messages_and_times() {
        assert_eq!(
            binance_subscribe(&["BTCUSDT"], 1),
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker"],"id":1}"#
        );
        assert_eq!(
            coinbase_subscribe(&["BTC-USD"]),
            r#"{"type":"subscribe","product_ids":["BTC-USD"],"channels":["ticker","matches","heartbeat"]}"#
        );
        assert_eq!(rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ns("2014-11-07T08:19:27.028459Z"), Some(1_415_348_367_028_459_000));
        assert_eq!(rfc3339_ns("2024-02-29T12:00:00.123456789123Z"), Some(1_709_208_000_123_456_789));
        assert_eq!(rfc3339_ns("2554-07-21T23:34:33.709551615Z"), Some(u64::MAX));
        for bad in [
            "",
            "2014-11-07",
            "2014-13-07T08:19:27Z",
            "2014-11-07T08:19:27.Z",
            "2014-11-07T08:19:27+01:00",
            "2554-07-21T23:34:33.709551616Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert_eq!(rfc3339_ns(bad), None, "{bad}");
        }
    }
}
