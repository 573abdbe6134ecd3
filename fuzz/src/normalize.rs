//! `feed_normalizer`: arbitrary bytes into `tickgate_feed::normalize::Normalizer`, as an
//! upstream message of tickgate's input schema.
//!
//! Contract: never panics; a tick that comes out is sane: its symbol is in the table, prices are
//! positive, sizes are not negative, and its timestamp is within the allowed skew.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tickgate_core::{AssetClass, SymbolInfo, SymbolTable, TickKind};
use tickgate_feed::normalize::{Normalized, Normalizer};

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
        assert!(from <= to);
    }
}
