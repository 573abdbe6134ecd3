//! The one internal event: a normalized trade or quote.

use crate::symbol::SymbolId;

/// A trade or a quote of one symbol, with exact fixed-point values at the symbol's scales.
///
/// `seq` is assigned by the [`Sequencer`](crate::Sequencer): +1 per event of the symbol, trades
/// and quotes sharing one sequence. Timestamps are nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    pub symbol: SymbolId,
    pub seq: u64,
    /// Exchange timestamp.
    pub ts: u64,
    /// Gateway ingest timestamp (wall clock when the tick entered tickgate; for an event of the
    /// simulated market released late, when it was due to).
    pub gw_ts: u64,
    pub kind: TickKind,
}

/// What happened: a trade, or a new best bid and offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickKind {
    Trade { price: i64, size: i64 },
    Quote { bid: i64, bid_size: i64, ask: i64, ask_size: i64 },
}

impl TickKind {
    pub fn is_trade(&self) -> bool {
        matches!(self, TickKind::Trade { .. })
    }
}
