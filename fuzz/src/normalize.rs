//! `feed_normalizer`: arbitrary bytes into `tickgate_feed::normalize::Normalizer`, as an
//! upstream message of tickgate's input schema.
//!
//! Input: the bytes as one message (twice), then the same bytes as newline-separated messages
//! of one upstream, an empty line standing for a reconnect (a new session).
//!
//! Contract: never panics; a tick that comes out is sane: its symbol is in the table, prices are
//! positive, sizes are not negative, its timestamp is within the allowed skew, and the upstream
//! gap or reset it reveals (never both) is consistent with its `seq`; a reconnect never leaves a
//! symbol rejecting what its upstream sends.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tickgate_core::{AssetClass, SymbolId, SymbolInfo, SymbolTable, TickKind};
use tickgate_feed::normalize::{Normalized, Normalizer};
use tickgate_feed::upstream_seq::DEFAULT_MAX_SEQ_JUMP;

const NOW: u64 = 1_700_000_000_000_000_000;
const SKEW: u64 = 60_000_000_000;

fn table() -> Arc<SymbolTable> {
    static TABLE: OnceLock<Arc<SymbolTable>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let mut t = SymbolTable::new();
            for (name, price_scale, size_scale) in [("AAPL", 2, 0), ("BTC-USD", 2, 8), ("X", 0, 0)] {
                let info = SymbolInfo { name: name.into(), class: AssetClass::Equity, price_scale, size_scale };
                t.insert(info).expect("valid symbol");
            }
            Arc::new(t)
        })
        .clone()
}

pub fn check(data: &[u8]) {
    let aliases = HashMap::from([("BTCUSDT".to_string(), "BTC-USD".to_string())]);
    let mut normalizer = Normalizer::new(table(), &aliases, SKEW);
    // The same bytes twice: the second time exercises the upstream-sequence checks.
    for _ in 0..2 {
        let mut buf = data.to_vec();
        if let Ok(normalized) = normalizer.normalize(&mut buf, NOW) {
            assert_sane(&normalized, &table());
            assert!(normalized.tick.ts.abs_diff(NOW) <= SKEW);
        }
    }
    let mut normalizer = Normalizer::new(table(), &aliases, SKEW);
    // Per symbol: the last delivered seq of the session (None after a reconnect).
    let mut last: HashMap<SymbolId, Option<u64>> = HashMap::new();
    for line in data.split(|b| *b == b'\n') {
        if line.is_empty() {
            normalizer.new_session();
            last.values_mut().for_each(|l| *l = None);
            continue;
        }
        if let Ok(normalized) = normalizer.normalize(&mut line.to_vec(), NOW) {
            assert_sane(&normalized, &table());
            let symbol = normalized.tick.symbol;
            let previous = last.get(&symbol).copied().flatten();
            if let (Some((from, to)), Some(previous)) = (normalized.upstream_gap, previous) {
                assert!(from == previous + 1 && Some(to + 1) == normalized.upstream_seq);
            }
            if normalized.upstream_seq.is_some() {
                last.insert(symbol, normalized.upstream_seq);
            }
        }
    }
    // Whatever came before, no symbol is left silent: the next number is delivered, and after a
    // reconnect any number is.
    let message = |symbol: SymbolId, seq: u64| {
        let table = table();
        let name = &table.get(symbol).name;
        format!(r#"{{"type":"trade","symbol":"{name}","price":"1","size":"1","ts":{NOW},"seq":{seq}}}"#).into_bytes()
    };
    for (&symbol, &seq) in &last {
        if let Some(next) = seq.and_then(|s| s.checked_add(1)) {
            let delivered = normalizer.normalize(&mut message(symbol, next), NOW);
            assert!(delivered.is_ok_and(|d| d.upstream_gap.is_none() && d.upstream_reset.is_none()));
        }
    }
    normalizer.new_session();
    for &symbol in last.keys() {
        assert!(normalizer.normalize(&mut message(symbol, 0), NOW).is_ok(), "a reconnect may start anywhere");
    }
}

/// What every tick a source lets through must be: a symbol of the table, positive prices,
/// sizes not negative, and an upstream gap (if any) a non-empty span.
pub fn assert_sane(normalized: &Normalized, table: &SymbolTable) {
    let tick = normalized.tick;
    assert!(tick.symbol.index() < table.len());
    match tick.kind {
        TickKind::Trade { price, size } => assert!(price > 0 && size >= 0),
        TickKind::Quote { bid, bid_size, ask, ask_size } => {
            assert!(bid > 0 && ask > 0 && bid_size >= 0 && ask_size >= 0)
        }
    }
    if let Some((from, to)) = normalized.upstream_gap {
        assert!(from <= to && to - from < DEFAULT_MAX_SEQ_JUMP, "a gap is a plausible span: {from}..={to}");
        assert!(normalized.upstream_reset.is_none(), "a gap or a reset, never both");
    }
}
