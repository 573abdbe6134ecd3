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
    /// Quotes claiming to supersede more quotes than the seqs they skipped.
    pub overclaimed: u64,
    /// Gaps announcing only seqs the client had already received.
    pub false_gaps: u64,
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
        self.overclaimed += other.overclaimed;
        self.false_gaps += other.false_gaps;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) symbol: u32,
    /// The last seq accounted for; None = not started (no snapshot, gap or event yet).
    pub(crate) last: Option<u64>,
    /// Unsubscribe sent, its reply not yet received: events may still come.
    pub(crate) leaving: bool,
    /// Where a resume of this subscription stands (see [`crate::resume`]).
    pub(crate) resume: Resume,
}

impl Slot {
    fn new(symbol: u32) -> Self {
        Self { symbol, last: None, leaving: false, resume: Resume::Idle }
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

    /// Unsubscribes sent and not answered yet.
    pub fn unanswered_unsubscribes(&self) -> usize {
        self.leaving.len()
    }

    /// Whether `symbol` is held or being left.
    pub fn knows(&self, symbol: u32) -> bool {
        self.slots.iter().any(|s| s.symbol == symbol)
    }

    /// Where each held subscription stands.
    pub fn pairs(&self) -> impl Iterator<Item = Pair> + '_ {
        self.slots.iter().filter(|s| !s.leaving).map(|s| Pair { symbol: s.symbol, last: s.last })
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
        let mut faults = 0;
        if let Some(last) = slot.last {
            if seq > last {
                faults = seq - last;
                self.counts.lost += faults;
            } else if seq < last {
                faults = last - seq;
                self.counts.duplicates += faults;
                slot.resume.add_faults(faults);
                return;
            }
        }
        slot.resume.add_faults(faults);
        slot.last = Some(seq);
    }

    /// An event; `conflated` is how many earlier quotes it says it superseded.
    pub fn on_event(&mut self, symbol: u32, seq: u64, conflated: u64, is_trade: bool) -> EventOutcome {
        let mut outcome = EventOutcome::default();
        let Some(slot) = self.slots.iter_mut().find(|s| s.symbol == symbol) else {
            self.counts.unexpected += 1;
            return outcome;
        };
        if is_trade && conflated > 0 {
            self.counts.conflated_trades += 1;
        }
        let faults = match slot.last {
            None => {
                // No snapshot (servers without one): the first event starts the sequence.
                slot.last = Some(seq);
                self.counts.received += 1;
                0
            }
            Some(last) if seq <= last => {
                self.counts.duplicates += 1;
                1
            }
            Some(last) => {
                let skipped = seq - last - 1;
                if conflated > skipped {
                    self.counts.overclaimed += 1;
                }
                let explained = if is_trade { 0 } else { skipped.min(conflated) };
                if explained > 0 {
                    outcome.superseded = Some((last + 1, seq - 1));
                }
                self.counts.conflated += explained;
                self.counts.lost += skipped - explained;
                self.counts.received += 1;
                slot.last = Some(seq);
                skipped - explained
            }
        };
        outcome.replayed = slot.resume.after_event(seq, faults, &mut self.resumes);
        outcome
    }

    /// Events `from..=to` will not come. A gap of seqs all already received is false.
    pub fn on_gap(&mut self, symbol: u32, from: u64, to: u64) {
        let Some(slot) = self.slots.iter_mut().find(|s| s.symbol == symbol) else {
            self.counts.unexpected += 1;
            return;
        };
        slot.resume.plain_gap(&mut self.resumes);
        let Some(last) = slot.last else {
            slot.last = Some(to);
            return;
        };
        if to <= last {
            self.counts.false_gaps += 1;
            return;
        }
        // `last < to`: `last + 1` cannot overflow.
        let next = last + 1;
        let from = from.max(next);
        self.counts.lost += from - next;
        slot.resume.add_faults(from - next);
        self.counts.announced += to - from + 1;
        slot.last = Some(to);
    }
}

/// What one event was, as far as the tracker saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventOutcome {
    /// Replayed after a resume (one of the events the client missed while away) rather than
    /// live.
    pub replayed: bool,
    /// The seqs (inclusive) this quote said it superseded: they must all have been quotes.
    pub superseded: Option<(u64, u64)>,
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
                ..SeqCounts::default()
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
        assert_eq!(t.unanswered_unsubscribes(), 2);
        t.left();
        assert_eq!(t.unanswered_unsubscribes(), 1);
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

    #[test]
    fn the_highest_seq_repeated_is_a_duplicate() {
        let mut t = SeqTracker::new(&[0]);
        t.on_snapshot(0, u64::MAX - 1);
        t.on_event(0, u64::MAX, 0, true);
        t.on_event(0, u64::MAX, 0, true);
        t.on_event(0, u64::MAX, 0, false);
        assert_eq!((t.counts.received, t.counts.duplicates, t.counts.lost), (1, 2, 0));
        assert_eq!(t.pairs().next(), Some(Pair { symbol: 0, last: Some(u64::MAX) }));
        // A gap or a snapshot at the top changes nothing either.
        t.on_gap(0, 5, u64::MAX);
        t.on_snapshot(0, u64::MAX);
        assert_eq!((t.counts.false_gaps, t.counts.announced, t.counts.lost), (1, 0, 0));
    }

    #[test]
    fn a_quote_claiming_more_than_it_skipped_is_an_overclaim() {
        let mut t = SeqTracker::new(&[0]);
        t.on_snapshot(0, 10);
        let o = t.on_event(0, 11, 999, false);
        assert_eq!((o.superseded, t.counts.overclaimed, t.counts.conflated), (None, 1, 0));
        let o = t.on_event(0, 14, 2, false);
        assert_eq!((o.superseded, t.counts.overclaimed, t.counts.conflated), (Some((12, 13)), 1, 2));
        // Claiming fewer than skipped: the rest is loss, the span still reported.
        let o = t.on_event(0, 18, 1, false);
        assert_eq!((o.superseded, t.counts.lost), (Some((15, 17)), 2));
    }

    #[test]
    fn a_gap_of_seqs_already_received_is_false() {
        let mut t = SeqTracker::new(&[0]);
        t.on_snapshot(0, 10);
        t.on_event(0, 11, 0, true);
        t.on_event(0, 12, 0, false);
        t.on_gap(0, 8, 12);
        assert_eq!((t.counts.false_gaps, t.counts.announced, t.counts.lost), (1, 0, 0));
        // One reaching past what was received announces the rest.
        t.on_gap(0, 11, 15);
        assert_eq!((t.counts.false_gaps, t.counts.announced), (1, 3));
        assert_eq!(t.pairs().next(), Some(Pair { symbol: 0, last: Some(15) }));
    }
}
