//! Per-client sequence accounting: every event a client should have seen is either received,
//! announced as part of a gap, superseded (conflated), or lost. Sans IO.

/// Counts for one client (or a sum over clients).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SeqCounts {
    /// Events received in order.
    pub received: u64,
    /// Events announced missing by gap messages.
    pub announced: u64,
    /// Events reported superseded by a later quote (`conflated`).
    pub conflated: u64,
    /// Events skipped with no announcement: loss.
    pub lost: u64,
    /// Events with a seq at or below one already seen.
    pub out_of_order: u64,
    /// Events of symbols the client did not subscribe to.
    pub unexpected: u64,
}

impl SeqCounts {
    pub fn add(&mut self, other: &SeqCounts) {
        self.received += other.received;
        self.announced += other.announced;
        self.conflated += other.conflated;
        self.lost += other.lost;
        self.out_of_order += other.out_of_order;
        self.unexpected += other.unexpected;
    }
}

/// The sequence state of one client's subscriptions (a few dozen symbols: a small vector).
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    /// (symbol index, next expected seq; 0 = not started).
    next: Vec<(u32, u64)>,
    pub counts: SeqCounts,
}

impl SeqTracker {
    pub fn new(symbols: &[u32]) -> Self {
        Self { next: symbols.iter().map(|&s| (s, 0)).collect(), counts: SeqCounts::default() }
    }

    fn slot(next: &mut [(u32, u64)], symbol: u32) -> Option<&mut u64> {
        next.iter_mut().find(|(s, _)| *s == symbol).map(|(_, n)| n)
    }

    /// The symbols tracked.
    pub fn symbols(&self) -> impl Iterator<Item = u32> + '_ {
        self.next.iter().map(|(s, _)| *s)
    }

    /// Starts tracking `symbol` (just subscribed: its snapshot sets the sequence).
    pub fn add(&mut self, symbol: u32) {
        if !self.next.iter().any(|(s, _)| *s == symbol) {
            self.next.push((symbol, 0));
        }
    }

    /// Stops tracking `symbol` (unsubscribed; events still in flight count as unexpected).
    pub fn remove(&mut self, symbol: u32) {
        self.next.retain(|(s, _)| *s != symbol);
    }

    /// A snapshot as of `seq`: events continue from `seq + 1`.
    pub fn on_snapshot(&mut self, symbol: u32, seq: u64) {
        if let Some(next) = Self::slot(&mut self.next, symbol) {
            *next = seq + 1;
        }
    }

    /// A live event; `conflated` is how many earlier quotes it says it superseded.
    pub fn on_event(&mut self, symbol: u32, seq: u64, conflated: u64) {
        let Some(next) = Self::slot(&mut self.next, symbol) else {
            self.counts.unexpected += 1;
            return;
        };
        if *next == 0 {
            // No snapshot (servers without one): the first event starts the sequence.
            *next = seq + 1;
            self.counts.received += 1;
            return;
        }
        if seq < *next {
            self.counts.out_of_order += 1;
            return;
        }
        let skipped = seq - *next;
        let explained = skipped.min(conflated);
        self.counts.conflated += explained;
        self.counts.lost += skipped - explained;
        self.counts.received += 1;
        *next = seq + 1;
    }

    /// Events `from..=to` will not come.
    pub fn on_gap(&mut self, symbol: u32, from: u64, to: u64) {
        let Some(next) = Self::slot(&mut self.next, symbol) else { return };
        if *next == 0 {
            *next = to + 1;
            return;
        }
        let from = from.max(*next);
        if to >= from {
            let unannounced = from - *next;
            self.counts.lost += unannounced;
            self.counts.announced += to - from + 1;
            *next = to + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_for_every_seq() {
        let mut t = SeqTracker::new(&[0, 1]);
        t.on_snapshot(0, 10);
        t.on_event(0, 11, 0);
        t.on_event(0, 12, 0);
        t.on_event(0, 15, 0); // 13, 14 lost
        t.on_event(0, 15, 0); // duplicate
        t.on_gap(0, 16, 20);
        t.on_snapshot(0, 20);
        t.on_event(0, 21, 0);
        t.on_event(0, 24, 2); // 22, 23 superseded
        t.on_event(1, 5, 0); // no snapshot: starts here
        t.on_event(1, 6, 0);
        t.on_event(7, 1, 0);
        assert_eq!(
            t.counts,
            SeqCounts { received: 7, announced: 5, conflated: 2, lost: 2, out_of_order: 1, unexpected: 1 }
        );
    }
}
