//! Per-client sequence accounting: every event a client should have seen is either received,
//! announced as part of a gap, superseded (a conflated quote), or lost. Sans IO.

use std::collections::VecDeque;

use crate::resume::{self, Resume, ResumeCounts};

/// Counts for one client (or a sum over clients).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SeqCounts {
    /// Events received in order.
    pub received: u64,
    /// Events announced missing by gap messages.
    pub announced: u64,
    /// Events reported superseded by a later quote (`conflated`).
    pub conflated: u64,
    /// Trades that carried `conflated` (trades are never merged): each one fails the run, and
    /// the seqs it claims to replace count as lost.
    pub conflated_trades: u64,
    /// Events skipped with no announcement, including snapshots that skip ahead: loss.
    pub lost: u64,
    /// Events with a seq at or below one already seen, and the seqs a snapshot went back over.
    pub duplicates: u64,
    /// Events and snapshots of symbols the client does not hold.
    pub unexpected: u64,
}

impl SeqCounts {
    pub fn add(&mut self, other: &SeqCounts) {
        self.received += other.received;
        self.announced += other.announced;
        self.conflated += other.conflated;
        self.conflated_trades += other.conflated_trades;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.unexpected += other.unexpected;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) symbol: u32,
    /// Next expected seq; 0 = not started (no snapshot, gap or event yet).
    pub(crate) next: u64,
    /// Unsubscribe sent, its reply not yet received: events may still come.
    pub(crate) leaving: bool,
    /// Where a resume of this subscription stands (see [`crate::resume`]).
    pub(crate) resume: Resume,
}

impl Slot {
    fn new(symbol: u32) -> Self {
        Self { symbol, next: 0, leaving: false, resume: Resume::Idle }
    }
}

/// The sequence state of one client's subscriptions (a few dozen symbols: a small vector).
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    pub(crate) slots: Vec<Slot>,
    /// The symbols being left, in the order their unsubscribes were sent: the replies come in
    /// that order, so the front is the one the next `unsubscribed` ends.
    pub(crate) leaving: VecDeque<u32>,
    pub counts: SeqCounts,
    /// How this client's resumes went.
    pub resumes: ResumeCounts,
}

/// Where one subscription stands: the last seq accounted for, or None if nothing came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    pub symbol: u32,
    pub last: Option<u64>,
}

impl SeqTracker {
    pub fn new(symbols: &[u32]) -> Self {
        Self {
            slots: symbols.iter().map(|&symbol| Slot::new(symbol)).collect(),
            leaving: VecDeque::new(),
            counts: SeqCounts::default(),
            resumes: ResumeCounts::default(),
        }
    }

    /// The symbols held (not being left).
    pub fn symbols(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().filter(|s| !s.leaving).map(|s| s.symbol)
    }

    /// Whether `symbol` is held or being left.
    pub fn knows(&self, symbol: u32) -> bool {
        self.slots.iter().any(|s| s.symbol == symbol)
    }

    /// Where each held subscription stands.
    pub fn pairs(&self) -> impl Iterator<Item = Pair> + '_ {
        self.slots.iter().filter(|s| !s.leaving).map(|s| Pair { symbol: s.symbol, last: s.next.checked_sub(1) })
    }

    /// Starts tracking `symbol` (a subscribe was sent: its snapshot sets the sequence).
    pub fn add(&mut self, symbol: u32) {
        if !self.slots.iter().any(|s| s.symbol == symbol) {
            self.slots.push(Slot::new(symbol));
        }
    }

    /// An unsubscribe of `symbol` was sent: its events may still come until the reply.
    pub fn leave(&mut self, symbol: u32) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.symbol == symbol && !s.leaving) {
            slot.leaving = true;
            self.leaving.push_back(symbol);
        }
    }

    /// An `unsubscribed` reply came: the symbol whose unsubscribe was sent first among those
    /// still being left is gone (replies come in the order of the requests, one symbol each).
    pub fn left(&mut self) {
        let Some(symbol) = self.leaving.pop_front() else { return };
        if let Some(i) = self.slots.iter().position(|s| s.symbol == symbol && s.leaving) {
            self.slots.remove(i);
        }
    }

    /// A snapshot as of `seq`: events continue from `seq + 1`. One that skips ahead of what
    /// was received, with no gap, hides loss; one that goes back repeats what was received.
    pub fn on_snapshot(&mut self, symbol: u32, seq: u64) {
        let Some(slot) = self.slots.iter_mut().find(|s| s.symbol == symbol) else {
            self.counts.unexpected += 1;
            return;
        };
        if resume::snapshot_settles(slot, seq, &mut self.resumes) {
            return;
        }
        let after = seq.saturating_add(1);
        let mut faults = 0;
        if slot.next != 0 {
            if after > slot.next {
                faults = after - slot.next;
                self.counts.lost += faults;
            } else if after < slot.next {
                faults = slot.next - after;
                self.counts.duplicates += faults;
                slot.resume.add_faults(faults);
                return;
            }
        }
        slot.resume.add_faults(faults);
        slot.next = after;
    }

    /// An event; `conflated` is how many earlier quotes it says it superseded. Returns whether
    /// it was replayed after a resume (one of the events the client missed while away) rather
    /// than live.
    pub fn on_event(&mut self, symbol: u32, seq: u64, conflated: u64, is_trade: bool) -> bool {
        let Some(slot) = self.slots.iter_mut().find(|s| s.symbol == symbol) else {
            self.counts.unexpected += 1;
            return false;
        };
        if is_trade && conflated > 0 {
            self.counts.conflated_trades += 1;
        }
        let faults = if slot.next == 0 {
            // No snapshot (servers without one): the first event starts the sequence.
            slot.next = seq.saturating_add(1);
            self.counts.received += 1;
            0
        } else if seq < slot.next {
            self.counts.duplicates += 1;
            1
        } else {
            let skipped = seq - slot.next;
            let explained = if is_trade { 0 } else { skipped.min(conflated) };
            self.counts.conflated += explained;
            self.counts.lost += skipped - explained;
            self.counts.received += 1;
            slot.next = seq.saturating_add(1);
            skipped - explained
        };
        slot.resume.after_event(seq, faults, &mut self.resumes)
    }

    /// Events `from..=to` will not come.
    pub fn on_gap(&mut self, symbol: u32, from: u64, to: u64) {
        let Some(slot) = self.slots.iter_mut().find(|s| s.symbol == symbol) else {
            self.counts.unexpected += 1;
            return;
        };
        slot.resume.plain_gap(&mut self.resumes);
        if slot.next == 0 {
            slot.next = to.saturating_add(1);
            return;
        }
        let from = from.max(slot.next);
        if to >= from {
            self.counts.lost += from - slot.next;
            slot.resume.add_faults(from - slot.next);
            self.counts.announced += to - from + 1;
            slot.next = to.saturating_add(1);
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
        t.on_event(0, 11, 0, true);
        t.on_event(0, 12, 0, false);
        t.on_event(0, 15, 0, true); // 13, 14 lost
        t.on_event(0, 15, 0, true); // duplicate
        t.on_gap(0, 16, 20);
        t.on_snapshot(0, 20);
        t.on_event(0, 21, 0, false);
        t.on_event(0, 24, 2, false); // 22, 23 superseded
        t.on_event(1, 5, 0, false); // no snapshot: starts here
        t.on_event(1, 6, 0, false);
        t.on_event(7, 1, 0, false);
        assert_eq!(
            t.counts,
            SeqCounts {
                received: 7,
                announced: 5,
                conflated: 2,
                lost: 2,
                duplicates: 1,
                unexpected: 1,
                conflated_trades: 0
            }
        );
        assert_eq!(
            t.pairs().collect::<Vec<_>>(),
            [Pair { symbol: 0, last: Some(24) }, Pair { symbol: 1, last: Some(6) }]
        );
    }

    #[test]
    fn unsubscribe_replies_end_the_symbols_in_the_order_they_were_left() {
        // Left in the order 5 then 2 (2 sits before 5 among the slots): the first reply ends 5,
        // so 2's events still in flight are expected until the second reply.
        let mut t = SeqTracker::new(&[1, 2, 3, 5]);
        t.on_snapshot(2, 10);
        t.leave(5);
        t.leave(2);
        t.left();
        t.on_event(2, 11, 0, false);
        assert_eq!((t.counts.received, t.counts.unexpected), (1, 0));
        assert!(!t.knows(5));
        t.left();
        t.on_event(2, 12, 0, false);
        assert_eq!(t.counts.unexpected, 1);
        assert_eq!(t.symbols().collect::<Vec<_>>(), vec![1, 3]);
        // A reply with nothing being left changes nothing.
        t.left();
        assert_eq!(t.symbols().collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn a_conflated_trade_explains_nothing() {
        let mut t = SeqTracker::new(&[0]);
        t.on_snapshot(0, 1);
        t.on_event(0, 5, 3, true);
        assert_eq!((t.counts.conflated_trades, t.counts.conflated, t.counts.lost), (1, 0, 3));
    }

    #[test]
    fn snapshots_that_skip_ahead_are_loss_and_ones_that_go_back_are_duplicates() {
        let mut t = SeqTracker::new(&[0]);
        t.on_snapshot(0, 10);
        t.on_event(0, 11, 0, false);
        t.on_snapshot(0, 15); // 12..=15 never came, no gap
        assert_eq!(t.counts.lost, 4);
        t.on_event(0, 16, 0, false);
        t.on_snapshot(0, 13); // back over 14, 15, 16
        assert_eq!(t.counts.duplicates, 3);
        t.on_event(0, 17, 0, false);
        assert_eq!((t.counts.lost, t.counts.received), (4, 3));
        // After a gap, the snapshot as of its end is the expected one.
        t.on_gap(0, 18, 20);
        t.on_snapshot(0, 20);
        assert_eq!((t.counts.lost, t.counts.duplicates, t.counts.announced), (4, 3, 3));
    }

    #[test]
    fn pairs_start_unaccounted_and_leaving_symbols_are_tracked_until_the_reply() {
        let mut t = SeqTracker::new(&[3, 4]);
        assert_eq!(t.pairs().map(|p| p.last).collect::<Vec<_>>(), [None, None]);
        t.on_snapshot(3, 0);
        assert_eq!(t.pairs().next(), Some(Pair { symbol: 3, last: Some(0) }));
        t.leave(3);
        t.add(5);
        t.on_event(3, 1, 0, false); // in flight before the reply: fine
        t.left();
        t.on_event(3, 2, 0, false); // after the reply: unexpected
        t.on_snapshot(9, 1);
        assert_eq!((t.counts.received, t.counts.unexpected), (1, 2));
        assert_eq!(t.symbols().collect::<Vec<_>>(), [4, 5]);
    }
}
