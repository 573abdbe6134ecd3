//! Shared setup for the criterion benchmarks in `benches/benches/`.
//!
//! Realistic inputs for tickgate's per-message path: the simulated universe's symbols, a trade
//! and a quote as the ingest thread sees them, their frames as the ingest thread builds them, the
//! default per-connection budget, and the commands a client sends.
//!
//! Run them with `cargo bench -p tickgate-benches` (add `-- <filter>` for one benchmark).

use std::io::IoSlice;
use std::time::Duration;

use tickgate_core::{Budget, Frame, SymbolId, SymbolInfo, SymbolTable, Tick, TickKind};
use tickgate_feed::sim::{SimConfig, universe};
use tickgate_protocol::{FrameBuilder, message};

/// Slices handed to one `writev` by the reactor (tickgate-server's `connection::MAX_IOV`).
pub const MAX_IOV: usize = 64;

/// A nanosecond wall-clock timestamp of 2023-11-14, as ticks carry (19 digits, like real ones).
pub const TS_NS: u64 = 1_700_000_000_123_456_789;

/// The default per-connection budget (`[limits]` in config/default.toml: 256 KiB soft,
/// 1 MiB hard, 10 s write deadline).
pub fn default_budget() -> Budget {
    Budget { soft: 256 * 1024, hard: 1024 * 1024, write_deadline: Duration::from_millis(10_000) }
}

/// The first `n` symbols of the simulated universe (AAPL, MSFT, ... with a crypto pair every fifth).
pub fn symbols(n: usize) -> SymbolTable {
    universe(&SimConfig { symbols: n, ..SimConfig::default() })
}

/// The symbol ticks are built for: AAPL, an equity (price scale 2, size scale 0).
pub fn aapl(table: &SymbolTable) -> (SymbolId, &SymbolInfo) {
    let id = table.lookup("AAPL").expect("AAPL is the first symbol of the simulated universe");
    (id, table.get(id))
}

/// A trade as the ingest thread stamps it: `{"type":"trade",...,"price":"187.12","size":"100",...}`.
pub fn trade(symbol: SymbolId, seq: u64) -> Tick {
    Tick { symbol, seq, ts: TS_NS, gw_ts: TS_NS + 41_000, kind: TickKind::Trade { price: 18_712, size: 100 } }
}

/// A quote as the ingest thread stamps it: bid 187.11 x 300, ask 187.13 x 500.
pub fn quote(symbol: SymbolId, seq: u64) -> Tick {
    Tick {
        symbol,
        seq,
        ts: TS_NS,
        gw_ts: TS_NS + 41_000,
        kind: TickKind::Quote { bid: 18_711, bid_size: 300, ask: 18_713, ask_size: 500 },
    }
}

/// The shared frame of one event, built exactly as the ingest thread builds it.
pub fn event_frame(builder: &mut FrameBuilder, info: &SymbolInfo, tick: &Tick) -> Frame {
    builder.text(|out| message::event(out, info, tick, 0))
}

/// A typical subscribe: `{"op":"subscribe","symbols":[10 symbols],"id":1}`, as a client sends it.
pub fn subscribe_command(table: &SymbolTable, count: usize) -> Vec<u8> {
    let names: Vec<String> = table.iter().take(count).map(|(_, info)| format!("\"{}\"", info.name)).collect();
    format!("{{\"op\":\"subscribe\",\"symbols\":[{}],\"id\":1}}", names.join(",")).into_bytes()
}

/// A malformed command: a subscribe cut off in the middle of its symbol list (not valid JSON).
pub const MALFORMED_COMMAND: &[u8] = br#"{"op":"subscribe","symbols":["AAPL","MSFT","NV"#;

/// Total length of the slices `io_slices` filled: what a `writev` that takes everything returns.
pub fn slice_bytes(slices: &[IoSlice<'_>]) -> usize {
    slices.iter().map(|s| s.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickgate_protocol::parse_command;

    #[test]
    fn inputs_are_what_the_benchmarks_claim() {
        let table = symbols(100);
        let (id, info) = aapl(&table);
        let mut builder = FrameBuilder::new();
        let trade = event_frame(&mut builder, info, &trade(id, 42));
        assert!(trade.starts_with(&[0x81]), "an unmasked final text frame");
        let text = |frame: &[u8]| {
            let offset = if frame[1] == 126 { 4 } else { 2 };
            String::from_utf8(frame[offset..].to_vec()).unwrap()
        };
        assert!(text(&trade).contains(r#""price":"187.12","size":"100""#), "{}", text(&trade));
        let quote = event_frame(&mut builder, info, &quote(id, 43));
        assert!(text(&quote).contains(r#""bid":"187.11","bid_size":"300""#), "{}", text(&quote));

        let mut subscribe = subscribe_command(&table, 10);
        let request = parse_command(&mut subscribe).unwrap();
        match request.command {
            tickgate_protocol::Command::Subscribe { symbols, .. } => assert_eq!(symbols.len(), 10),
            other => panic!("not a subscribe: {other:?}"),
        }
        assert!(parse_command(&mut MALFORMED_COMMAND.to_vec()).is_err());
        assert!(default_budget().soft > MAX_IOV * trade.len(), "64 queued frames stay below the soft watermark");
    }
}
