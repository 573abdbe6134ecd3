//! `bus_payload`: arbitrary bytes into `tickgate_bus::payload::decode` (a cluster edge's reading
//! of one message of the stream), against a universe of `AAPL`, `BRK.B` and `BTC-USD`.
//!
//! Contract: never panics. A message it accepts has a seq of at least 1, and the other kind's
//! event it carries (if any) is of the same symbol, of the other kind and older; writing the
//! decoded tick again gives the very same bytes (one layout, no slack), and its epoch is what
//! `epoch_of` reads; every shorter prefix of it is rejected as truncated.

use tickgate_bus::payload::{Reject, decode, encode, epoch_of};
use tickgate_core::{AssetClass, SymbolInfo, SymbolTable};

fn universe() -> SymbolTable {
    let mut table = SymbolTable::new();
    for (name, class, size_scale) in [("AAPL", AssetClass::Equity, 0), ("BRK.B", AssetClass::Equity, 0), ("BTC-USD", AssetClass::Crypto, 8)] {
        table.insert(SymbolInfo { name: name.into(), class, price_scale: 2, size_scale }).expect("a valid symbol");
    }
    table
}

pub fn check(data: &[u8]) {
    let symbols = universe();
    let Ok(bus) = decode(data, &symbols) else { return };
    assert!(bus.tick.seq >= 1, "seq 0 accepted");
    if let Some(other) = bus.other {
        assert_eq!(other.symbol, bus.tick.symbol, "the carried event is of another symbol");
        assert_ne!(other.kind.is_trade(), bus.tick.kind.is_trade(), "the carried event is of the same kind");
        assert!(other.seq >= 1 && other.seq < bus.tick.seq, "the carried event is not older: {} vs {}", other.seq, bus.tick.seq);
    }
    let mut again = Vec::new();
    encode(&mut again, bus.epoch, &symbols.get(bus.tick.symbol).name, &bus.tick, bus.other.as_ref());
    assert_eq!(again, data, "an accepted message is written back byte for byte");
    assert_eq!(epoch_of(data), bus.epoch);
    for len in [0, data.len() / 2, data.len() - 1] {
        assert_eq!(decode(&data[..len], &symbols), Err(Reject::Truncated), "a {len}-byte prefix was not truncated");
    }
}
