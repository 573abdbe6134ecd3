//! Upstream ticks in tickgate's own input schema, parsed with simd-json and normalized into
//! [`Tick`]s, or rejected with a counted reason. Sans IO: bytes and the time come in. The
//! message is parsed into a typed struct borrowing from it (see [`crate::json`]): a good message
//! costs no allocation.
//!
//! One JSON object per message (a line on TCP or in a recording):
//!
//! ```json
//! {"type":"trade","symbol":"AAPL","price":"187.12","size":"100","ts":1700000000000000000,"seq":42}
//! {"type":"quote","symbol":"AAPL","bid":"187.11","bid_size":"300","ask":"187.13","ask_size":"200","ts":1700000000000000000}
//! ```
//!
//! Prices and sizes are decimal strings (or integers), exact at the symbol's scale: a value
//! with more digits than the scale allows is rejected, never rounded. `ts` is the exchange time
//! in ns since the Unix epoch. `seq`, when present, is the upstream's own sequence number per
//! symbol, checked as [`crate::upstream_seq`] describes (a repeat is rejected, a hole is an
//! upstream gap, a reconnect or an implausible jump an upstream reset). `reset`, when present,
//! says the upstream's numbering of the symbol starts again with this message: one of
//! [`ResetReason::REASONS`], what recordings write where the live run announced a reset.

use std::collections::HashMap;

use tickgate_core::{SymbolTable, Tick, TickKind, parse_fixed};

use crate::json::{Field, Parser, json_object};
use crate::resolve::{SymbolResolver, UnknownSymbols};
use crate::upstream_seq::{Continuity, DEFAULT_MAX_SEQ_JUMP, Numbering, ResetReason, UpstreamSeqs};

/// Why an upstream message was not turned into a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Not JSON, or not an object.
    Malformed,
    /// A required field is missing.
    MissingField(&'static str),
    /// A field has the wrong type.
    WrongType(&'static str),
    /// `type` is neither trade nor quote.
    UnknownType,
    /// The symbol is not in the universe (or the mapping table).
    UnknownSymbol,
    /// A price or size is not an exact decimal at the symbol's scale.
    BadDecimal(&'static str),
    /// A price is zero or negative.
    NonPositivePrice,
    /// A size is negative.
    NegativeSize,
    /// The exchange timestamp is too far from now.
    TimestampSkew,
    /// The upstream sequence number went back.
    SeqBackwards,
    /// The symbol is new and would be added, but the universe has no room left.
    UniverseFull,
}

impl Reject {
    /// Every reason, for metrics.
    pub const REASONS: [&'static str; 11] = [
        "malformed",
        "missing_field",
        "wrong_type",
        "unknown_type",
        "unknown_symbol",
        "bad_decimal",
        "non_positive_price",
        "negative_size",
        "timestamp_skew",
        "seq_backwards",
        "universe_full",
    ];

    /// The metric label of this reason (an entry of [`Reject::REASONS`]).
    pub fn reason(self) -> &'static str {
        Self::REASONS[self.index()]
    }

    pub fn index(self) -> usize {
        match self {
            Reject::Malformed => 0,
            Reject::MissingField(_) => 1,
            Reject::WrongType(_) => 2,
            Reject::UnknownType => 3,
            Reject::UnknownSymbol => 4,
            Reject::BadDecimal(_) => 5,
            Reject::NonPositivePrice => 6,
            Reject::NegativeSize => 7,
            Reject::TimestampSkew => 8,
            Reject::SeqBackwards => 9,
            Reject::UniverseFull => 10,
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::MissingField(field) => write!(f, "missing field {field:?}"),
            Reject::WrongType(field) => write!(f, "field {field:?} has the wrong type"),
            Reject::BadDecimal(field) => write!(f, "field {field:?} is not an exact decimal at the symbol's scale"),
            other => f.write_str(other.reason()),
        }
    }
}

/// Logs rejected upstream messages at most once a second per source, with how many were held
/// back, so a broken upstream cannot flood the log (every one is counted in metrics anyway).
#[derive(Debug)]
pub struct RejectLog {
    source: Box<str>,
    last: Option<std::time::Instant>,
    held: u64,
}

impl RejectLog {
    pub fn new(source: &str) -> Self {
        Self { source: source.into(), last: None, held: 0 }
    }

    /// Notes a rejected message; `symbol` is the name it carried ("" when it had none).
    pub fn note(&mut self, reject: Reject, symbol: &str) {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1)) {
            self.held += 1;
            return;
        }
        self.last = Some(now);
        let held_back = std::mem::take(&mut self.held);
        tracing::warn!(source = &*self.source, symbol, %reject, held_back, "upstream message rejected");
    }
}

/// A normalized tick, and the discontinuity of the upstream's numbering it revealed, if any
/// (at most one of `upstream_gap` and `upstream_reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalized {
    pub tick: Tick,
    /// Upstream sequence numbers skipped before this one (`from..=to`), if any.
    pub upstream_gap: Option<(u64, u64)>,
    /// The upstream's numbering of the symbol started again with this tick.
    pub upstream_reset: Option<ResetReason>,
    /// The upstream's own sequence number of the tick, if it has one (recordings keep it).
    pub upstream_seq: Option<u64>,
}

impl Normalized {
    /// A tick with what its upstream sequence number said about the events before it.
    pub fn new(tick: Tick, upstream_seq: Option<u64>, continuity: Continuity) -> Self {
        let (upstream_gap, upstream_reset) = match continuity {
            Continuity::InOrder => (None, None),
            Continuity::Gap { from, to } => (Some((from, to)), None),
            Continuity::Reset(reason) => (None, Some(reason)),
        };
        Self { tick, upstream_gap, upstream_reset, upstream_seq }
    }
}

/// Turns upstream messages into ticks for one source.
pub struct Normalizer {
    /// simd-json's buffers and tape, reused so a message costs no allocation.
    parser: Parser,
    /// Upstream name -> symbol.
    resolver: SymbolResolver,
    /// Largest accepted distance between `ts` and now, in ns.
    max_skew_ns: u64,
    /// The upstream's sequence numbers per symbol.
    seqs: UpstreamSeqs,
    /// The symbol name of the last message (its first [`MAX_LOGGED_NAME`] bytes), for the log
    /// line of a reject; its room is allocated once.
    last_symbol: String,
}

/// Longest symbol name a reject's log line quotes.
pub(crate) const MAX_LOGGED_NAME: usize = 64;

/// Keeps the first [`MAX_LOGGED_NAME`] bytes of `name` in `out` (cleared by the caller), for the
/// log line of a reject: no allocation once `out` has that room.
pub(crate) fn remember_name(out: &mut String, name: &str) {
    let mut cut = name.len().min(MAX_LOGGED_NAME);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    out.push_str(&name[..cut]);
}

impl Normalizer {
    /// `aliases` maps upstream names to the universe's (e.g. "BTCUSDT" -> "BTC-USD"); unknown
    /// names are rejected.
    pub fn new(symbols: std::sync::Arc<SymbolTable>, aliases: &HashMap<String, String>, max_skew_ns: u64) -> Self {
        Self::with_resolver(SymbolResolver::new(symbols, aliases, UnknownSymbols::Reject), max_skew_ns)
    }

    pub fn with_resolver(resolver: SymbolResolver, max_skew_ns: u64) -> Self {
        let seqs = UpstreamSeqs::new(resolver.capacity(), DEFAULT_MAX_SEQ_JUMP);
        Self { parser: Parser::new(), resolver, max_skew_ns, seqs, last_symbol: String::with_capacity(MAX_LOGGED_NAME) }
    }

    /// The largest forward jump of `seq` taken as an upstream gap (`feed.max_seq_jump`).
    pub fn with_max_seq_jump(mut self, max_seq_jump: u64) -> Self {
        self.seqs.set_max_jump(max_seq_jump);
        self
    }

    /// A new upstream session (a connection) starts: its numbering may start afresh.
    pub fn new_session(&mut self) {
        self.seqs.new_session(ResetReason::UpstreamRestart);
    }

    /// The numbering starts again for `reason` (a replay's new lap).
    pub fn restart_numbering(&mut self, reason: ResetReason) {
        self.seqs.new_session(reason);
    }

    /// The symbol name the last message carried ("" if it had none): what a reject's log names.
    pub fn last_symbol(&self) -> &str {
        &self.last_symbol
    }

    /// Normalizes one message (modified in place by the parser). `now_ns` is the wall clock.
    pub fn normalize(&mut self, message: &mut [u8], now_ns: u64) -> Result<Normalized, Reject> {
        self.last_symbol.clear();
        let m: Message<'_> = self.parser.parse(message)?;
        let symbol_name = m.symbol.text("symbol")?;
        remember_name(&mut self.last_symbol, symbol_name);
        let info = self.resolver.find(symbol_name)?;
        let kind = match m.kind.text("type")? {
            "trade" => {
                let price = decimal(m.price, "price", info.price_scale)?;
                let size = decimal(m.size, "size", info.size_scale)?;
                if price <= 0 {
                    return Err(Reject::NonPositivePrice);
                }
                if size < 0 {
                    return Err(Reject::NegativeSize);
                }
                TickKind::Trade { price, size }
            }
            "quote" => {
                let bid = decimal(m.bid, "bid", info.price_scale)?;
                let bid_size = decimal(m.bid_size, "bid_size", info.size_scale)?;
                let ask = decimal(m.ask, "ask", info.price_scale)?;
                let ask_size = decimal(m.ask_size, "ask_size", info.size_scale)?;
                if bid <= 0 || ask <= 0 {
                    return Err(Reject::NonPositivePrice);
                }
                if bid_size < 0 || ask_size < 0 {
                    return Err(Reject::NegativeSize);
                }
                TickKind::Quote { bid, bid_size, ask, ask_size }
            }
            _ => return Err(Reject::UnknownType),
        };
        let ts = m.ts.optional_uint("ts")?.ok_or(Reject::MissingField("ts"))?;
        if ts.abs_diff(now_ns) > self.max_skew_ns {
            return Err(Reject::TimestampSkew);
        }
        let seq = m.seq.optional_uint("seq")?;
        let reset = match m.reset {
            Field::Missing => None,
            Field::Str(text) => Some(ResetReason::parse(text).ok_or(Reject::WrongType("reset"))?),
            _ => return Err(Reject::WrongType("reset")),
        };
        // The message is good: a new symbol joins the universe only now.
        let symbol = self.resolver.admit(symbol_name, info)?;
        let continuity = self.seqs.check(symbol.index(), seq, Numbering::Contiguous, reset)?;
        Ok(Normalized::new(Tick { symbol, seq: 0, ts, gw_ts: 0, kind }, seq, continuity))
    }
}

json_object! {
    /// The members of a message in tickgate's input schema that the normalizer reads.
    struct Message<'a> {
        kind: Field<'a> = "type",
        symbol: Field<'a> = "symbol",
        price: Field<'a> = "price",
        size: Field<'a> = "size",
        bid: Field<'a> = "bid",
        bid_size: Field<'a> = "bid_size",
        ask: Field<'a> = "ask",
        ask_size: Field<'a> = "ask_size",
        ts: Field<'a> = "ts",
        seq: Field<'a> = "seq",
        reset: Field<'a> = "reset",
    }
}

/// A price or size exact at `scale`: a decimal string or an integer. Floats are the wrong type:
/// they cannot say exactly which decimal they mean.
fn decimal(field: Field<'_>, name: &'static str, scale: u8) -> Result<i64, Reject> {
    match field {
        Field::Str(s) => parse_fixed(s, scale).map_err(|_| Reject::BadDecimal(name)),
        Field::Int(n) => scaled(n, scale).ok_or(Reject::BadDecimal(name)),
        Field::UInt(n) => i64::try_from(n).ok().and_then(|n| scaled(n, scale)).ok_or(Reject::BadDecimal(name)),
        Field::Missing => Err(Reject::MissingField(name)),
        Field::Null | Field::Other => Err(Reject::WrongType(name)),
    }
}

impl std::fmt::Debug for Normalizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Normalizer").field("resolver", &self.resolver).field("max_skew_ns", &self.max_skew_ns).finish()
    }
}

fn scaled(n: i64, scale: u8) -> Option<i64> {
    10i64.checked_pow(u32::from(scale)).and_then(|f| n.checked_mul(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tickgate_core::{AssetClass, SymbolId, SymbolInfo};

    const NOW: u64 = 1_700_000_000_000_000_000;

    fn normalizer() -> Normalizer {
        let mut table = SymbolTable::new();
        for (name, price_scale, size_scale) in [("AAPL", 2, 0), ("BTC-USD", 2, 8)] {
            table.insert(SymbolInfo { name: name.into(), class: AssetClass::Equity, price_scale, size_scale }).unwrap();
        }
        let aliases = HashMap::from([("BTCUSDT".to_string(), "BTC-USD".to_string())]);
        Normalizer::new(Arc::new(table), &aliases, 60_000_000_000)
    }

    fn run(n: &mut Normalizer, text: &str) -> Result<Normalized, Reject> {
        n.normalize(&mut text.as_bytes().to_vec(), NOW)
    }

    #[test]
    fn good_messages_come_out_exact() {
        let mut n = normalizer();
        let t = run(&mut n, &format!(r#"{{"type":"trade","symbol":"AAPL","price":"187.12","size":100,"ts":{NOW}}}"#))
            .unwrap();
        assert_eq!(t.tick.kind, TickKind::Trade { price: 18712, size: 100 });
        let q = run(
            &mut n,
            &format!(r#"{{"type":"quote","symbol":"BTCUSDT","bid":"64000.5","bid_size":"0.00012345","ask":"64001","ask_size":"1","ts":{NOW}}}"#),
        )
        .unwrap();
        assert_eq!(q.tick.symbol, SymbolId(1), "mapped through the alias");
        assert_eq!(
            q.tick.kind,
            TickKind::Quote { bid: 6_400_050, bid_size: 12_345, ask: 6_400_100, ask_size: 100_000_000 }
        );
    }

    #[test]
    fn a_reject_knows_the_symbol_its_message_carried() {
        let mut n = normalizer();
        let long = "L".repeat(100);
        let cases = [
            (format!(r#"{{"type":"trade","symbol":"ZZZ","price":"1","size":"1","ts":{NOW}}}"#), "ZZZ".to_string()),
            (format!(r#"{{"type":"trade","symbol":"AAPL","price":"1.001","size":"1","ts":{NOW}}}"#), "AAPL".into()),
            (format!(r#"{{"type":"trade","symbol":"{long}","price":"1","size":"1","ts":{NOW}}}"#), "L".repeat(64)),
            (r#"{"type":"trade","price":"1"#.to_string(), String::new()),
        ];
        for (message, symbol) in cases {
            assert!(run(&mut n, &message).is_err(), "{message}");
            assert_eq!(n.last_symbol(), symbol, "{message}");
        }
    }

    #[test]
    fn bad_messages_are_rejected_with_their_reason() {
        let mut n = normalizer();
        let cases = [
            ("nope", Reject::Malformed),
            ("[1]", Reject::Malformed),
            (r#"{"type":"trade","price":"1","size":"1","ts":1}"#, Reject::MissingField("symbol")),
            (r#"{"type":"trade","symbol":"ZZZ","price":"1","size":"1","ts":1}"#, Reject::UnknownSymbol),
            (r#"{"type":"cancel","symbol":"AAPL","ts":1}"#, Reject::UnknownType),
            (r#"{"type":"trade","symbol":"AAPL","price":"1.001","size":"1","ts":1}"#, Reject::BadDecimal("price")),
            (r#"{"type":"trade","symbol":"AAPL","price":1.5,"size":"1","ts":1}"#, Reject::WrongType("price")),
            (r#"{"type":"trade","symbol":"AAPL","price":"NaN","size":"1","ts":1}"#, Reject::BadDecimal("price")),
            (r#"{"type":"trade","symbol":"AAPL","price":"0","size":"1","ts":1}"#, Reject::NonPositivePrice),
            (r#"{"type":"trade","symbol":"AAPL","price":"1","size":"-1","ts":1}"#, Reject::NegativeSize),
            (r#"{"type":"trade","symbol":"AAPL","price":"1","size":"1","ts":1}"#, Reject::TimestampSkew),
            (r#"{"type":"trade","symbol":"AAPL","price":"1","size":"1"}"#, Reject::MissingField("ts")),
        ];
        for (text, want) in cases {
            assert_eq!(run(&mut n, text), Err(want), "{text}");
        }
    }

    #[test]
    fn only_a_good_message_adds_its_unknown_symbol() {
        let mut table = SymbolTable::new();
        table
            .insert(SymbolInfo { name: "AAPL".into(), class: AssetClass::Equity, price_scale: 2, size_scale: 0 })
            .unwrap();
        table.reserve_additions(1);
        let table = Arc::new(table);
        let add = UnknownSymbols::Add(crate::resolve::AddedScales::uniform(2, 0));
        let mut n = Normalizer::with_resolver(SymbolResolver::new(table.clone(), &HashMap::new(), add), 60_000_000_000);
        let msg = |symbol: &str, price: &str| {
            format!(r#"{{"type":"trade","symbol":"{symbol}","price":"{price}","size":"1","ts":{NOW}}}"#)
        };
        assert_eq!(run(&mut n, &msg("JUNK", "1.001")), Err(Reject::BadDecimal("price")));
        assert_eq!(run(&mut n, &msg("JUNK", "-1")), Err(Reject::NonPositivePrice));
        assert_eq!(table.len(), 1, "bad messages add nothing");
        assert_eq!(run(&mut n, &msg("NEW", "2.5")).unwrap().tick.symbol, SymbolId(1));
        assert_eq!(run(&mut n, &msg("OTHER", "1")), Err(Reject::UniverseFull));
    }

    #[test]
    fn upstream_sequence_gaps_reversals_seq_zero_jumps_and_reconnects() {
        let mut n = normalizer();
        let msg =
            |seq: u64| format!(r#"{{"type":"trade","symbol":"AAPL","price":"1","size":"1","ts":{NOW},"seq":{seq}}}"#);
        assert_eq!(run(&mut n, &msg(10)).unwrap().upstream_gap, None);
        assert_eq!(run(&mut n, &msg(11)).unwrap().upstream_gap, None);
        assert_eq!(run(&mut n, &msg(15)).unwrap().upstream_gap, Some((12, 14)));
        assert_eq!(run(&mut n, &msg(15)), Err(Reject::SeqBackwards));
        assert_eq!(run(&mut n, &msg(0)), Err(Reject::SeqBackwards), "within max_seq_jump back: late");
        n.new_session();
        assert_eq!(run(&mut n, &msg(0)).unwrap().upstream_reset, Some(ResetReason::UpstreamRestart));
        assert_eq!(run(&mut n, &msg(0)), Err(Reject::SeqBackwards), "0 is a number: a repeat is a repeat");
        assert_eq!(run(&mut n, &msg(3)).unwrap().upstream_gap, Some((1, 2)));
        let jump = run(&mut n, &msg(u64::MAX)).unwrap();
        assert_eq!((jump.upstream_gap, jump.upstream_reset), (None, Some(ResetReason::SeqJump)));
        assert_eq!(run(&mut n, &msg(4)).unwrap().upstream_reset, Some(ResetReason::SeqJump), "no baseline");
        assert_eq!(run(&mut n, &msg(5)).unwrap().upstream_reset, None);
        n.new_session();
        let restart = run(&mut n, &msg(1)).unwrap();
        assert_eq!((restart.upstream_reset, restart.upstream_seq), (Some(ResetReason::UpstreamRestart), Some(1)));
        let marked = format!(
            r#"{{"type":"trade","symbol":"AAPL","price":"1","size":"1","ts":{NOW},"seq":1,"reset":"upstream_restart"}}"#
        );
        assert_eq!(run(&mut n, &marked).unwrap().upstream_reset, Some(ResetReason::UpstreamRestart));
        let bad = marked.replace("upstream_restart", "whenever");
        assert_eq!(run(&mut n, &bad), Err(Reject::WrongType("reset")));
    }

    #[derive(Debug, Clone)]
    enum Step {
        NewSession,
        Message { symbol: usize, seq: Option<u64>, ts: u64, garbage: bool },
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let seq = prop_oneof![0..12u64, Just(u64::MAX), any::<u64>(), 999_990..1_000_020u64];
        let ts = prop_oneof![
            4 => (NOW - 1_000)..(NOW + 1_000),
            1 => Just(NOW + SKEW + 1),
            1 => Just(0u64),
            1 => Just(u64::MAX),
            1 => any::<u64>(),
        ];
        let message = (0..2usize, proptest::option::weighted(0.9, seq), ts, proptest::bool::weighted(0.05))
            .prop_map(|(symbol, seq, ts, garbage)| Step::Message { symbol, seq, ts, garbage });
        prop_oneof![1 => Just(Step::NewSession), 12 => message]
    }

    const SKEW: u64 = 60_000_000_000;
    const MAX_JUMP: u64 = crate::upstream_seq::DEFAULT_MAX_SEQ_JUMP;

    proptest::proptest! {
        /// Over sessions (reconnects), any `seq` (0, repeats, going back, jumps to u64::MAX),
        /// any timestamp and the odd malformed line: every message is delivered or rejected for
        /// exactly its reason; a delivered message's gap or reset matches the numbering so far;
        /// a rejected one changes nothing; and whatever happened, the next number of each symbol
        /// (and any number after a reconnect) is delivered.
        #[test]
        fn every_message_is_delivered_or_rejected_for_its_reason_and_nothing_silences_a_symbol(
            steps in proptest::collection::vec(step(), 0..80),
        ) {
            let mut n = normalizer();
            let names = ["AAPL", "BTCUSDT"];
            let msg = |symbol: usize, seq: Option<u64>, ts: u64| {
                let seq = seq.map_or(String::new(), |s| format!(r#","seq":{s}"#));
                format!(r#"{{"type":"trade","symbol":"{}","price":"1","size":"1","ts":{ts}{seq}}}"#, names[symbol])
            };
            // Per symbol: the last delivered seq, and whether a session started since.
            let mut last: [Option<u64>; 2] = [None; 2];
            let mut fresh = [false; 2];
            for step in steps {
                let (symbol, seq, ts, garbage) = match step {
                    Step::NewSession => {
                        n.new_session();
                        fresh = [true; 2];
                        continue;
                    }
                    Step::Message { symbol, seq, ts, garbage } => (symbol, seq, ts, garbage),
                };
                let text = if garbage { msg(symbol, seq, ts).replace(':', "") } else { msg(symbol, seq, ts) };
                let outcome = run(&mut n, &text);
                if garbage {
                    proptest::prop_assert_eq!(outcome, Err(Reject::Malformed));
                    continue;
                }
                if ts.abs_diff(NOW) > SKEW {
                    proptest::prop_assert_eq!(outcome, Err(Reject::TimestampSkew));
                    continue;
                }
                let Some(seq) = seq else {
                    let delivered = outcome.unwrap();
                    proptest::prop_assert_eq!((delivered.upstream_gap, delivered.upstream_reset), (None, None));
                    continue;
                };
                match (outcome, last[symbol]) {
                    (Err(reject), Some(l)) => {
                        proptest::prop_assert_eq!(reject, Reject::SeqBackwards);
                        proptest::prop_assert!(!fresh[symbol] && seq <= l && l - seq <= MAX_JUMP);
                    }
                    (Err(reject), None) => proptest::prop_assert!(false, "a first number rejected: {reject:?}"),
                    (Ok(d), previous) => {
                        proptest::prop_assert_eq!(d.upstream_seq, Some(seq));
                        proptest::prop_assert!(d.upstream_gap.is_none() || d.upstream_reset.is_none());
                        if let Some((from, to)) = d.upstream_gap {
                            let l = previous.unwrap();
                            proptest::prop_assert!(from == l + 1 && to == seq - 1 && to - from < MAX_JUMP);
                        }
                        if d.upstream_reset.is_none() && d.upstream_gap.is_none() {
                            proptest::prop_assert!(previous.is_none_or(|l| l.checked_add(1) == Some(seq)));
                        }
                        if let Some(reason) = d.upstream_reset {
                            let reconnected = fresh[symbol] && reason == ResetReason::UpstreamRestart;
                            proptest::prop_assert!(reconnected || reason == ResetReason::SeqJump);
                        }
                        last[symbol] = Some(seq);
                        fresh[symbol] = false;
                    }
                }
            }
            for (symbol, last) in last.iter().enumerate() {
                if let Some(next) = last.and_then(|l| l.checked_add(1)) {
                    let d = run(&mut n, &msg(symbol, Some(next), NOW));
                    proptest::prop_assert!(d.is_ok_and(|d| d.upstream_gap.is_none()), "the next number is delivered");
                }
            }
            n.new_session();
            for symbol in 0..2 {
                proptest::prop_assert!(run(&mut n, &msg(symbol, Some(0), NOW)).is_ok(), "a reconnect starts anywhere");
            }
        }
    }

    #[test]
    fn never_panics() {
        proptest::proptest!(|(bytes in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..300))| {
            let mut n = normalizer();
            let mut buf = bytes;
            let _ = n.normalize(&mut buf, NOW);
        });
    }
}
