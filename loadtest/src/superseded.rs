//! Whether a conflated quote stood for a trade. A quote's `conflated` says the seqs it skipped
//! were quotes it superseded; trades are never merged. A client cannot tell from its own stream,
//! but the other clients of the symbol received those seqs: every event any client received is
//! marked (trades apart), every span a client was told was superseded is marked. A seq told
//! superseded that some client received as a trade is a trade hidden; one that no client
//! received at all cannot be told a quote, and is unchecked. Sans IO.
//!
//! Memory is bounded: seqs are kept in chunks of bits, at most [`MAX_CHUNKS`] of them. What
//! could not be marked is counted, and fails the step when any conflation has to be checked.

/// Seqs per chunk.
const CHUNK_SEQS: u64 = 4096;
const WORDS: usize = (CHUNK_SEQS / 64) as usize;
/// Chunks kept over all symbols (1.5 KiB each: 48 MiB at most).
pub const MAX_CHUNKS: usize = 32 * 1024;
/// Longest superseded span marked (a longer one is counted as unchecked).
const MAX_SPAN: u64 = 1 << 20;

#[derive(Debug, Clone)]
struct Chunk {
    index: u64,
    received: [u64; WORDS],
    trades: [u64; WORDS],
    superseded: [u64; WORDS],
}

/// Trades received and spans said superseded, by symbol.
#[derive(Debug, Clone, Default)]
pub struct Superseded {
    /// Per symbol, its chunks (seqs mostly rise: the newest is searched first).
    symbols: Vec<Vec<Chunk>>,
    chunks: usize,
    /// Spans marked.
    spans: u64,
    /// Trades that could not be marked (the bound hit).
    trades_unmarked: u64,
    /// Spans that could not be marked (the bound hit, or too long).
    spans_unmarked: u64,
}

impl Superseded {
    pub fn new(n_symbols: usize) -> Self {
        Self { symbols: vec![Vec::new(); n_symbols], ..Self::default() }
    }

    fn chunk(&mut self, symbol: u32, index: u64) -> Option<&mut Chunk> {
        let chunks = self.symbols.get_mut(symbol as usize)?;
        match chunks.iter().rposition(|c| c.index == index) {
            Some(i) => Some(&mut chunks[i]),
            None if self.chunks < MAX_CHUNKS => {
                self.chunks += 1;
                chunks.push(Chunk { index, received: [0; WORDS], trades: [0; WORDS], superseded: [0; WORDS] });
                chunks.last_mut()
            }
            None => None,
        }
    }

    /// A client received the event `seq` of `symbol`, a trade or a quote.
    pub fn event(&mut self, symbol: u32, seq: u64, is_trade: bool) {
        let bit = seq % CHUNK_SEQS;
        let (word, mask) = ((bit / 64) as usize, 1 << (bit % 64));
        match self.chunk(symbol, seq / CHUNK_SEQS) {
            Some(c) => {
                c.received[word] |= mask;
                if is_trade {
                    c.trades[word] |= mask;
                }
            }
            None => self.trades_unmarked += 1,
        }
    }

    /// A client was told the seqs `from..=to` of `symbol` were quotes superseded.
    pub fn span(&mut self, symbol: u32, from: u64, to: u64) {
        if to < from || to - from >= MAX_SPAN {
            self.spans_unmarked += 1;
            return;
        }
        for seq in from..=to {
            let bit = seq % CHUNK_SEQS;
            match self.chunk(symbol, seq / CHUNK_SEQS) {
                Some(c) => c.superseded[(bit / 64) as usize] |= 1 << (bit % 64),
                None => {
                    self.spans_unmarked += 1;
                    return;
                }
            }
        }
        self.spans += 1;
    }

    /// Seqs some client received as a trade and another was told were superseded quotes.
    pub fn hidden_trades(&self) -> u64 {
        let words = self.symbols.iter().flatten().flat_map(|c| c.trades.iter().zip(&c.superseded));
        words.map(|(t, s)| u64::from((t & s).count_ones())).sum()
    }

    /// What could not be checked: seqs told superseded that no client received, spans not
    /// marked, and, when some events could not be marked, every span.
    pub fn unchecked(&self) -> u64 {
        let words = self.symbols.iter().flatten().flat_map(|c| c.received.iter().zip(&c.superseded));
        let unseen: u64 = words.map(|(r, s)| u64::from((s & !r).count_ones())).sum();
        unseen + self.spans_unmarked + if self.trades_unmarked > 0 { self.spans } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trade_told_superseded_to_another_client_is_hidden() {
        let mut s = Superseded::new(2);
        for seq in [1, 3, 4097, 9001] {
            s.event(0, seq, true);
        }
        for seq in [2, 4095, 4096, 4098, 10_000, 10_002] {
            s.event(0, seq, false);
        }
        s.event(1, 2, true);
        s.span(0, 2, 2); // a quote another client received
        assert_eq!((s.hidden_trades(), s.unchecked()), (0, 0));
        s.span(0, 4095, 4098); // across two chunks, over the trade 4097
        s.span(1, 2, 2);
        assert_eq!((s.hidden_trades(), s.unchecked()), (2, 0));
        // Order does not matter: the span first, the trade after.
        s.span(0, 10_000, 10_002);
        s.event(0, 10_001, true);
        assert_eq!((s.hidden_trades(), s.unchecked()), (3, 0));
    }

    #[test]
    fn a_seq_told_superseded_that_no_client_received_is_unchecked() {
        let mut s = Superseded::new(1);
        s.event(0, 1, false);
        s.event(0, 4, false);
        s.span(0, 2, 3);
        assert_eq!((s.hidden_trades(), s.unchecked()), (0, 2));
        s.event(0, 2, false);
        assert_eq!(s.unchecked(), 1);
    }

    #[test]
    fn what_the_bound_leaves_unmarked_is_unchecked() {
        let mut s = Superseded::new(1);
        s.span(0, 0, MAX_SPAN);
        assert_eq!(s.unchecked(), 1);
        let mut s = Superseded::new(1024);
        for i in 0..MAX_CHUNKS as u64 {
            s.event((i % 1024) as u32, i / 1024 * CHUNK_SEQS + 1, false);
        }
        assert_eq!(s.unchecked(), 0);
        s.event(0, u64::MAX, false);
        assert_eq!(s.unchecked(), 0, "no conflation to check: nothing unchecked");
        s.span(0, 1, 1);
        assert_eq!(s.unchecked(), 1, "marked and received, but an event could not be marked");
        s.span(0, u64::MAX - 1, u64::MAX);
        assert_eq!(s.unchecked(), 2);
    }
}
