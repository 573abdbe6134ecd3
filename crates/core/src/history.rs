//! The recent events of every symbol, kept so a client that reconnects can resume from the last
//! `seq` it holds instead of starting again from a snapshot.
//!
//! Each entry shares the frame already encoded for live delivery (a [`Frame`] is a reference
//! count, not a copy). The history is bounded by [`HistoryLimits`]: events and bytes per symbol,
//! and events and bytes in all; the oldest entries go first. Each symbol's entries are
//! contiguous in `seq`: a tick that does not follow the last one held (the reactor skipped a
//! span) starts the symbol's history again, so [`History::since`] either has every event after a
//! `seq` or says it does not.
//!
//! Anything that sees a symbol's events in order can fill one: a reactor from its channel, an
//! edge gateway from a bus.

use std::collections::VecDeque;

use crate::frame::Frame;
use crate::symbol::SymbolId;
use crate::tick::Tick;

/// How much history is kept (0 in any field keeps none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub events_per_symbol: usize,
    pub bytes_per_symbol: usize,
    pub events: usize,
    pub bytes: usize,
}

impl HistoryLimits {
    fn keeps_nothing(&self) -> bool {
        self.events_per_symbol == 0 || self.bytes_per_symbol == 0 || self.events == 0 || self.bytes == 0
    }
}

/// Bytes one entry is counted for besides its frame.
pub const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>() + std::mem::size_of::<(SymbolId, u64)>();

/// Bytes a history allocates up front per symbol (before any event).
pub const SYMBOL_SLOT_BYTES: usize = std::mem::size_of::<Symbol>();

#[derive(Debug, Clone)]
pub struct Entry {
    /// Order of arrival over every symbol (for the total bounds).
    stamp: u64,
    tick: Tick,
    frame: Frame,
}

#[derive(Debug, Default)]
struct Symbol {
    entries: VecDeque<Entry>,
    bytes: usize,
}

/// What the history holds after a client's last `seq` of a symbol.
#[derive(Debug)]
pub enum Since<'a> {
    /// Every event after it (none when the client is current), oldest first.
    Whole(Replay<'a>),
    /// Not every event after it is held any more (or it was never held).
    NotHeld,
}

/// The events a resume replays, oldest first.
#[derive(Debug)]
pub struct Replay<'a>(std::iter::Skip<std::collections::vec_deque::Iter<'a, Entry>>);

impl<'a> Iterator for Replay<'a> {
    type Item = (&'a Tick, &'a Frame);
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|e| (&e.tick, &e.frame))
    }
}

/// The recent events of every symbol of a universe.
#[derive(Debug)]
pub struct History {
    limits: HistoryLimits,
    symbols: Vec<Symbol>,
    /// Every entry held (and some already gone), oldest first, for the total bounds.
    order: VecDeque<(SymbolId, u64)>,
    next_stamp: u64,
    events: usize,
    bytes: usize,
}

impl History {
    pub fn new(symbols: usize, limits: HistoryLimits) -> Self {
        let mut all = Vec::with_capacity(symbols);
        all.resize_with(symbols, Symbol::default);
        Self { limits, symbols: all, order: VecDeque::new(), next_stamp: 0, events: 0, bytes: 0 }
    }

    /// Events held, in all.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Bytes held, in all (frames and entries).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps `tick` (with the frame sent live for it) as the newest event of its symbol.
    pub fn record(&mut self, tick: &Tick, frame: &Frame) {
        if self.limits.keeps_nothing() {
            return;
        }
        let size = frame.len() + ENTRY_OVERHEAD;
        let index = tick.symbol.index();
        if self.symbols[index].entries.back().is_some_and(|last| last.tick.seq.checked_add(1) != Some(tick.seq)) {
            self.forget(tick.symbol);
        }
        if size > self.limits.bytes_per_symbol || size > self.limits.bytes {
            return;
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let symbol = &mut self.symbols[index];
        symbol.entries.push_back(Entry { stamp, tick: *tick, frame: frame.clone() });
        symbol.bytes += size;
        self.events += 1;
        self.bytes += size;
        self.order.push_back((tick.symbol, stamp));
        while symbol.entries.len() > self.limits.events_per_symbol || symbol.bytes > self.limits.bytes_per_symbol {
            let Some(gone) = symbol.entries.pop_front() else { break };
            let gone_size = gone.frame.len() + ENTRY_OVERHEAD;
            symbol.bytes -= gone_size;
            self.events -= 1;
            self.bytes -= gone_size;
        }
        // `order` may name entries already gone (evicted per symbol, or forgotten): it is kept
        // at most `events` long, so it stays bounded too.
        while self.order.len() > self.limits.events || self.bytes > self.limits.bytes {
            let Some((symbol, stamp)) = self.order.pop_front() else { break };
            let symbol = &mut self.symbols[symbol.index()];
            if symbol.entries.front().is_some_and(|e| e.stamp == stamp) {
                if let Some(gone) = symbol.entries.pop_front() {
                    let gone_size = gone.frame.len() + ENTRY_OVERHEAD;
                    symbol.bytes -= gone_size;
                    self.events -= 1;
                    self.bytes -= gone_size;
                }
            }
        }
    }

    /// Forgets every event of `symbol` (its stream skipped a span).
    pub fn forget(&mut self, symbol: SymbolId) {
        let symbol = &mut self.symbols[symbol.index()];
        self.events -= symbol.entries.len();
        self.bytes -= symbol.bytes;
        symbol.entries.clear();
        symbol.bytes = 0;
    }

    /// The newest event held of `symbol`.
    pub fn newest(&self, symbol: SymbolId) -> Option<(&Tick, &Frame)> {
        self.symbols[symbol.index()].entries.back().map(|e| (&e.tick, &e.frame))
    }

    /// The events of `symbol` after `seq`, when the newest event of the symbol is `head`
    /// (`seq` <= `head`; the caller answers a `seq` ahead of it).
    pub fn since(&self, symbol: SymbolId, seq: u64, head: u64) -> Since<'_> {
        let entries = &self.symbols[symbol.index()].entries;
        if seq >= head {
            return Since::Whole(Replay(entries.iter().skip(entries.len())));
        }
        let (Some(first), Some(last)) = (entries.front(), entries.back()) else { return Since::NotHeld };
        if first.tick.seq > seq.saturating_add(1) || last.tick.seq != head {
            return Since::NotHeld;
        }
        let skip = (seq + 1 - first.tick.seq) as usize;
        Since::Whole(Replay(entries.iter().skip(skip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::TickKind;

    fn tick(symbol: u32, seq: u64) -> Tick {
        Tick { symbol: SymbolId(symbol), seq, ts: 0, gw_ts: 0, kind: TickKind::Trade { price: 1, size: 1 } }
    }

    fn limits(events_per_symbol: usize, events: usize) -> HistoryLimits {
        HistoryLimits { events_per_symbol, bytes_per_symbol: 1 << 20, events, bytes: 1 << 30 }
    }

    fn seqs(h: &History, symbol: u32, seq: u64, head: u64) -> Option<Vec<u64>> {
        match h.since(SymbolId(symbol), seq, head) {
            Since::Whole(events) => Some(events.map(|(t, _)| t.seq).collect()),
            Since::NotHeld => None,
        }
    }

    #[test]
    fn replays_what_follows_a_seq_and_shares_the_live_frame() {
        let mut h = History::new(2, limits(4, 100));
        let frame = Frame::from_bytes(b"frame");
        for seq in 1..=6 {
            h.record(&tick(0, seq), &frame);
        }
        assert_eq!(seqs(&h, 0, 3, 6), Some(vec![4, 5, 6]));
        assert_eq!(seqs(&h, 0, 2, 6), Some(vec![3, 4, 5, 6]));
        assert_eq!(seqs(&h, 0, 1, 6), None, "seq 2 is gone (4 per symbol)");
        assert_eq!(seqs(&h, 0, 6, 6), Some(vec![]));
        assert_eq!(seqs(&h, 1, 0, 3), None);
        let Since::Whole(mut events) = h.since(SymbolId(0), 5, 6) else { panic!() };
        assert!(events.next().unwrap().1.ptr_eq(&frame));
        assert_eq!(h.events(), 4);
        assert_eq!(h.newest(SymbolId(0)).map(|(t, _)| t.seq), Some(6));
        assert!(h.newest(SymbolId(1)).is_none());
    }

    #[test]
    fn a_skipped_span_starts_the_symbol_again() {
        let mut h = History::new(1, limits(100, 100));
        let frame = Frame::from_bytes(b"f");
        for seq in [1, 2, 3, 7, 8] {
            h.record(&tick(0, seq), &frame);
        }
        assert_eq!(seqs(&h, 0, 2, 8), None);
        assert_eq!(seqs(&h, 0, 6, 8), Some(vec![7, 8]));
        assert_eq!(h.events(), 2);
    }

    #[test]
    fn the_totals_bound_every_symbol_together() {
        let mut h = History::new(3, limits(100, 5));
        let frame = Frame::from_bytes(b"f");
        for seq in 1..=4 {
            for symbol in 0..3 {
                h.record(&tick(symbol, seq), &frame);
            }
        }
        assert_eq!(h.events(), 5);
        assert_eq!(h.bytes(), 5 * (1 + ENTRY_OVERHEAD));
        assert_eq!(seqs(&h, 2, 2, 4), Some(vec![3, 4]));
        assert_eq!(seqs(&h, 0, 2, 4), None);
        let bytes = HistoryLimits {
            events_per_symbol: 100,
            bytes_per_symbol: 1 << 20,
            events: 100,
            bytes: 3 * (4 + ENTRY_OVERHEAD),
        };
        let mut h = History::new(1, bytes);
        for seq in 1..=10 {
            h.record(&tick(0, seq), &Frame::from_bytes(b"four"));
        }
        assert_eq!(h.events(), 3);
        h.forget(SymbolId(0));
        assert_eq!((h.events(), h.bytes()), (0, 0));
    }

    #[test]
    fn keeps_nothing_when_a_bound_is_zero() {
        let mut h = History::new(1, limits(0, 100));
        h.record(&tick(0, 1), &Frame::from_bytes(b"f"));
        assert_eq!(h.events(), 0);
        assert_eq!(seqs(&h, 0, 0, 1), None);
    }
}
