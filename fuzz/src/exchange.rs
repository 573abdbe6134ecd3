//! `exchange_mapper`: arbitrary bytes into `tickgate_feed::exchange::ExchangeMapper`, as a
//! message of an exchange's WebSocket feed. The first byte picks the exchange (even: Binance,
//! odd: Coinbase), the rest is the message.
//!
//! Contract: never panics; a tick that comes out is sane: its symbol is in the table, prices are
//! positive, sizes are not negative, and an upstream gap is a non-empty span.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tickgate_core::{AssetClass, SymbolInfo, SymbolTable};
use tickgate_feed::exchange::{Exchange, ExchangeMapper};

const NOW: u64 = 1_700_000_000_000_000_000;

fn table() -> Arc<SymbolTable> {
    static TABLE: OnceLock<Arc<SymbolTable>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let mut t = SymbolTable::new();
            for (name, price_scale, size_scale) in [("BTC-USD", 2, 8), ("ETH-USD", 2, 8), ("BNB-BTC", 6, 2)] {
                let info = SymbolInfo { name: name.into(), class: AssetClass::Crypto, price_scale, size_scale };
                t.insert(info).expect("valid symbol");
            }
            Arc::new(t)
        })
        .clone()
}

pub fn check(data: &[u8]) {
    let Some((&selector, message)) = data.split_first() else { return };
    let exchange = if selector % 2 == 0 { Exchange::Binance } else { Exchange::Coinbase };
    let aliases =
        HashMap::from([("BTCUSDT".to_string(), "BTC-USD".to_string()), ("BNBBTC".to_string(), "BNB-BTC".to_string())]);
    let mut mapper = ExchangeMapper::new(exchange, table(), &aliases);
    // The same bytes twice: the second time exercises the sequence and trade-id checks.
    for _ in 0..2 {
        let mut buf = message.to_vec();
        if let Ok(Some(normalized)) = mapper.map(&mut buf, NOW) {
            crate::normalize::assert_sane(&normalized, &table());
        }
    }
}
