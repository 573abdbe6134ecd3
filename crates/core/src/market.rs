//! Per-symbol sequencing and the last-value cache.

use crate::symbol::SymbolId;
use crate::tick::{Tick, TickKind};

/// Assigns per-symbol sequence numbers: the first event of a symbol gets 1, then +1 per event.
#[derive(Debug, Clone)]
pub struct Sequencer {
    last: Vec<u64>,
}

impl Sequencer {
    pub fn new(symbols: usize) -> Self {
        Self { last: vec![0; symbols] }
    }

    /// Stamps `tick` with the next sequence number of its symbol.
    pub fn stamp(&mut self, tick: &mut Tick) {
        let last = &mut self.last[tick.symbol.index()];
        *last += 1;
        tick.seq = *last;
    }

    /// Takes `tick.seq` as the symbol's latest sequence number, for a tick sequenced elsewhere
    /// (by the publisher of a cluster). Returns false, changing nothing, if it is not above the
    /// latest one: such a tick was already seen.
    pub fn observe(&mut self, tick: &Tick) -> bool {
        let last = &mut self.last[tick.symbol.index()];
        if tick.seq <= *last {
            return false;
        }
        *last = tick.seq;
        true
    }

    /// Continues the symbol's numbering after `seq` (a restarted publisher goes on from the last
    /// number it published); never lowers it.
    pub fn continue_after(&mut self, symbol: SymbolId, seq: u64) {
        let last = &mut self.last[symbol.index()];
        *last = (*last).max(seq);
    }

    /// The sequence number of the symbol's latest event (0 before any).
    pub fn last_seq(&self, symbol: SymbolId) -> u64 {
        self.last[symbol.index()]
    }
}

/// The latest trade and latest quote of one symbol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastValues {
    /// Sequence number of the symbol's latest event (0 before any).
    pub seq: u64,
    pub trade: Option<Tick>,
    pub quote: Option<Tick>,
}

/// The latest trade and quote of every symbol, from which snapshots are built.
///
/// The ingest thread keeps one, and each reactor keeps its own, updated from the very stream
/// it fans out: a snapshot taken from a reactor's cache is therefore exactly consistent with
/// the events that reactor sends afterwards.
#[derive(Debug, Clone)]
pub struct LastValueCache {
    values: Vec<LastValues>,
}

impl LastValueCache {
    pub fn new(symbols: usize) -> Self {
        Self { values: vec![LastValues::default(); symbols] }
    }

    /// Records `tick` as the latest event of its symbol.
    pub fn record(&mut self, tick: &Tick) {
        let entry = &mut self.values[tick.symbol.index()];
        entry.seq = tick.seq;
        match tick.kind {
            TickKind::Trade { .. } => entry.trade = Some(*tick),
            TickKind::Quote { .. } => entry.quote = Some(*tick),
        }
    }

    /// Replaces everything known of a symbol (after a resynchronisation).
    pub fn replace(&mut self, symbol: SymbolId, values: LastValues) {
        self.values[symbol.index()] = values;
    }

    pub fn get(&self, symbol: SymbolId) -> &LastValues {
        &self.values[symbol.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(symbol: u32, kind: TickKind) -> Tick {
        Tick { symbol: SymbolId(symbol), seq: 0, ts: 1, gw_ts: 2, kind }
    }

    #[test]
    fn trades_and_quotes_share_one_sequence_per_symbol() {
        let mut seq = Sequencer::new(2);
        let mut lvc = LastValueCache::new(2);
        let trade = TickKind::Trade { price: 100, size: 1 };
        let quote = TickKind::Quote { bid: 99, bid_size: 5, ask: 101, ask_size: 7 };
        let mut seen = Vec::new();
        for (sym, kind) in [(0, trade), (0, quote), (1, quote), (0, trade)] {
            let mut t = tick(sym, kind);
            seq.stamp(&mut t);
            lvc.record(&t);
            seen.push((sym, t.seq));
        }
        assert_eq!(seen, [(0, 1), (0, 2), (1, 1), (0, 3)]);
        let aapl = lvc.get(SymbolId(0));
        assert_eq!(aapl.seq, 3);
        assert_eq!(aapl.trade.map(|t| t.seq), Some(3));
        assert_eq!(aapl.quote.map(|t| t.seq), Some(2));
        assert_eq!(seq.last_seq(SymbolId(1)), 1);
        assert_eq!(lvc.get(SymbolId(1)).trade, None);
    }
}
