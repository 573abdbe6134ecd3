//! Resumes replayed over many reactor turns, sans IO.
//!
//! A resume that finds every event after the client's `seq` in the history answers `resumed`
//! and leaves a cursor here: (connection, symbol) -> the last seq the client is accounted for.
//! The subscription itself is *paused* in the reactor's index
//! ([`SubscriptionIndex::pause`]): the fan-out offers it no live event, and the replay reads
//! those from the history too (the reactor records each tick there before fanning it out). Each
//! turn, after the live fan-out and its writes, the reactor advances the cursors round robin
//! ([`Replays::due`]), each by at most [`REPLAY_SLICE`] events and all of them by at most
//! [`REPLAY_PER_TURN`] events, [`REPLAY_BYTES_PER_TURN`] bytes and [`REPLAY_TIME_PER_TURN`],
//! through the connection's outbox ([`Desk::advance_replay`]), then writes what they queued. Once a cursor reaches the newest event, the subscription is
//! unpaused: the next event comes live. So the client sees one stream, replay then live, with
//! no hole and no duplicate.
//!
//! - The events go through [`Outbox::offer`] like live ones, while the queue is below the soft
//!   limit: a replay waits there for its client to read, so a client reading slowly gets all
//!   of it, at its pace, and one that does not read holds at most the soft limit (and a frame).
//!   Under the `disconnect` policy the next event is offered past the soft limit all the same,
//!   and the verdict closes the connection, as it would for a live event. A client that does
//!   not read under the other policies meets the write deadline, as it would with live events.
//!   Should an event be dropped all the same (a policy dropping below the soft limit), the
//!   replay ends there: the span it opens reaches the newest event and is announced (a
//!   `slow_consumer` gap and a snapshot) like any other once the client has read.
//! - History evicted under the cursor (the client read too slowly for the history's bounds):
//!   a gap `history` from the cursor on, and a snapshot; then live.
//! - The reactor skipping a span of the symbol (a resync): a gap `gateway_overload` from the
//!   cursor to the span's end, and a snapshot; the replay goes on from there.
//! - `upstream_gap` and `upstream_reset` notices are not sent to a subscription whose replay is
//!   behind the newest event (they are about the newest event, and not in the history).
//! - A `subscribe` adding a channel to the symbol ends the replay: a gap `history` from the
//!   cursor on, and the snapshot a symbol gaining a channel gets.
//! - Unsubscribing ends the cursor; closing forgets every cursor of the connection.

use std::collections::BTreeMap;
use std::ops::Bound;

use tickgate_core::subscription::ConnKey;
use tickgate_core::{Budget, Outbox, OverHardLimit, Policy, Since, SubscriptionIndex, SymbolId, Verdict};
use tickgate_protocol::message;

use tickgate_core::{Frame, SymbolInfo, Tick};

use crate::resume_fetch::{Pending, StreamFetches};
use crate::session::{BUS, Desk, HISTORY, Outcome};

/// What became of one replayed event.
enum Step {
    /// Of a channel the connection does not hold.
    Skipped,
    Sent,
    /// Dropped by the policy: the replay ends.
    Dropped,
    Disconnect,
}

/// Most events one cursor advances per reactor turn.
pub const REPLAY_SLICE: usize = 256;
/// Most events all cursors of a reactor advance per turn, so a resume storm costs every turn a
/// bounded time.
pub const REPLAY_PER_TURN: usize = 16 * 1024;
/// Most bytes all cursors of a reactor queue per turn: what the turn's replay write pass then
/// hands the kernel is bounded too (checked between cursors, so one slice more at most).
pub const REPLAY_BYTES_PER_TURN: usize = 512 * 1024;
/// Longest a reactor spends advancing cursors per turn (checked between cursors): a resume
/// storm delays the live fan-out, the accepts and the commands of the next turn by about this
/// much, not by the storm's size.
pub const REPLAY_TIME_PER_TURN: std::time::Duration = std::time::Duration::from_micros(300);
/// Most cursors looked at per turn (those waiting for their client to read cost a look).
pub const CURSORS_PER_TURN: usize = 1024;

/// Where one replay stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last seq gone through (replayed, or skipped for a channel the connection does not
    /// hold).
    pub after: u64,
    /// The last seq the client was sent or told of: a gap cutting the replay starts after it.
    pub sent: u64,
}

/// The replays under way on one reactor.
#[derive(Debug, Default)]
pub struct Replays {
    cursors: BTreeMap<(ConnKey, SymbolId), Cursor>,
    /// Resumes read from the stream on an edge (see [`crate::resume_fetch`]): awaited, or
    /// read and waiting to be replayed before the history.
    pub stream: StreamFetches,
    /// Where the last turn stopped: the next turn starts after it.
    next: Option<(ConnKey, SymbolId)>,
}

impl Replays {
    /// Replays that may also read from the stream (see [`crate::resume_fetch`]).
    pub fn with_stream(stream: StreamFetches) -> Self {
        Self { stream, ..Self::default() }
    }

    pub fn len(&self) -> usize {
        self.cursors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cursors.is_empty()
    }

    /// Where `key`'s replay of `symbol` stands, if one is under way.
    pub fn get(&self, key: ConnKey, symbol: SymbolId) -> Option<Cursor> {
        self.cursors.get(&(key, symbol)).copied()
    }

    pub(crate) fn set(&mut self, key: ConnKey, symbol: SymbolId, cursor: Cursor) {
        self.cursors.insert((key, symbol), cursor);
    }

    /// Ends `key`'s replay of `symbol`; false if none was under way.
    pub fn cancel(&mut self, key: ConnKey, symbol: SymbolId) -> bool {
        self.stream.cancel(key, symbol);
        self.cursors.remove(&(key, symbol)).is_some()
    }

    /// Forgets every replay of a connection that is closing (its key may be reused).
    pub fn forget_connection(&mut self, key: ConnKey) {
        self.stream.forget_connection(key);
        let mine: Vec<_> =
            self.cursors.range((key, SymbolId(0))..=(key, SymbolId(u32::MAX))).map(|(&k, _)| k).collect();
        for k in mine {
            self.cursors.remove(&k);
        }
    }

    /// Up to `n` cursors to advance this turn, round robin from where the last turn stopped
    /// (tell it with [`Replays::stopped_at`]).
    pub fn due(&self, n: usize, into: &mut Vec<(ConnKey, SymbolId)>) {
        into.clear();
        let after = match self.next {
            Some(k) => self.cursors.range((Bound::Excluded(k), Bound::Unbounded)),
            None => self.cursors.range(..),
        };
        let before = match self.next {
            Some(k) => self.cursors.range(..=k),
            None => self.cursors.range(..(ConnKey::MIN, SymbolId(0))),
        };
        into.extend(after.chain(before).take(n).map(|(&k, _)| k));
    }

    /// The last cursor this turn advanced: the next turn starts after it.
    pub fn stopped_at(&mut self, key: ConnKey, symbol: SymbolId) {
        self.next = Some((key, symbol));
    }
}

impl Desk<'_> {
    /// Advances `key`'s replay of `symbol` by at most `max` events of the history (see the
    /// module's documentation); returns what the reactor does with the connection and how many
    /// events it went through.
    pub fn advance_replay(
        &mut self,
        out: &mut Outbox,
        index: &mut SubscriptionIndex,
        key: ConnKey,
        symbol: SymbolId,
        max: usize,
    ) -> (Outcome, usize) {
        let Some(Cursor { after, sent }) = self.replays.get(key, symbol) else { return (Outcome::Open, 0) };
        if self.replays.stream.is_awaiting(key, symbol) {
            return (Outcome::Open, 0);
        }
        let Some(channels) = index.channels_of(symbol, key) else {
            self.replays.cancel(key, symbol);
            return (Outcome::Open, 0);
        };
        let waits = |out: &Outbox, budget: &Budget| out.is_behind(budget) && out.policy != Policy::Disconnect;
        if waits(out, &self.budget) {
            return (Outcome::Open, 0);
        }
        let head = self.lvc.get(symbol).seq;
        let info = self.symbols.get(symbol);
        let (mut last, mut sent, mut walked) = (after, sent, 0);
        // First what was read from the stream (on an edge), then the history.
        if let Some(mut pending) = self.replays.stream.take_pending(key, symbol) {
            // A resync may have moved the cursor past some (its gap covered them).
            if pending.events.back().is_some_and(|(t, _)| t.seq <= after) {
                pending = Pending::default();
            }
            while pending.events.front().is_some_and(|(t, _)| t.seq <= after) {
                pending.events.pop_front();
            }
            while walked < max && !waits(out, &self.budget) {
                let Some((tick, frame)) = pending.events.pop_front() else { break };
                walked += 1;
                last = tick.seq;
                match self.replay_one(out, channels, info, &tick, &frame) {
                    Step::Skipped => {}
                    Step::Sent => sent = tick.seq,
                    Step::Dropped => {
                        self.offer_newest(out, info, symbol);
                        (last, pending) = (head, Pending::default());
                        break;
                    }
                    Step::Disconnect => return (Outcome::SlowConsumer, walked),
                }
            }
            if !pending.events.is_empty() {
                self.replays.stream.put_pending(key, symbol, pending);
                self.replays.set(key, symbol, Cursor { after: last, sent });
                return (Outcome::Open, walked);
            }
            if pending.hole && last < head {
                // The stream skips the next seq (its publisher did not publish it): a gap `bus`
                // and a snapshot, as the live edge announces a skip; then live.
                self.counters.bus_gaps_sent += 1;
                self.finish_replay(index, key, symbol);
                let announced =
                    self.settle(out, symbol, None).and_then(|_| self.announce(out, symbol, sent + 1, head, BUS));
                return (announced.into(), walked);
            }
            if last >= head {
                self.finish_replay(index, key, symbol);
                return (Outcome::Open, walked);
            }
        }
        if last >= head {
            self.finish_replay(index, key, symbol);
            return (Outcome::Open, walked);
        }
        let history = self.history;
        let events = match history.since(symbol, last, head) {
            Since::Whole(events) => events,
            Since::NotHeld => {
                self.counters.replays_cut += 1;
                self.finish_replay(index, key, symbol);
                let announced =
                    self.settle(out, symbol, None).and_then(|_| self.announce(out, symbol, sent + 1, head, HISTORY));
                return (announced.into(), walked);
            }
        };
        for (tick, frame) in events.take(max.saturating_sub(walked)) {
            if waits(out, &self.budget) {
                break;
            }
            walked += 1;
            last = tick.seq;
            match self.replay_one(out, channels, info, tick, frame) {
                Step::Skipped => {}
                Step::Sent => sent = tick.seq,
                Step::Dropped => {
                    self.offer_newest(out, info, symbol);
                    last = head;
                    break;
                }
                Step::Disconnect => return (Outcome::SlowConsumer, walked),
            }
        }
        if last >= head {
            self.finish_replay(index, key, symbol);
        } else {
            self.replays.set(key, symbol, Cursor { after: last, sent });
        }
        (Outcome::Open, walked)
    }

    /// Offers one replayed event to the connection, as a live one (a rate cap aside).
    fn replay_one(
        &mut self,
        out: &mut Outbox,
        channels: tickgate_core::Channels,
        info: &SymbolInfo,
        tick: &Tick,
        frame: &Frame,
    ) -> Step {
        if !channels.admits(&tick.kind) {
            return Step::Skipped;
        }
        let (builder, deflate) = (&mut *self.builder, out.deflate_max_len());
        let superseding = |n| builder.text_for(deflate, |o| message::event(o, info, tick, n));
        match out.offer(tick, frame, &self.budget, self.now, superseding) {
            Verdict::Queued | Verdict::Throttled { .. } => {
                self.counters.replayed += 1;
                Step::Sent
            }
            Verdict::Conflated => {
                self.counters.conflated += 1;
                Step::Sent
            }
            Verdict::Dropped => {
                self.counters.dropped += 1;
                Step::Dropped
            }
            Verdict::Disconnect => Step::Disconnect,
        }
    }

    /// Every later event of the symbol would be dropped into the span a drop opened: it reaches
    /// the newest event now, and the subscription goes live (into the span, until it is
    /// announced).
    fn offer_newest(&mut self, out: &mut Outbox, info: &SymbolInfo, symbol: SymbolId) {
        if let Some((newest, frame)) = self.history.newest(symbol) {
            let (builder, deflate) = (&mut *self.builder, out.deflate_max_len());
            let superseding = |n| builder.text_for(deflate, |o| message::event(o, info, newest, n));
            let _ = out.offer(newest, frame, &self.budget, self.now, superseding);
        }
    }

    /// Ends `key`'s replay of `symbol`, if one is under way, before a snapshot of it: a gap
    /// ("history") over what it had not sent yet, and the snapshot. Returns whether it queued
    /// them (nothing is queued for a replay that had caught up).
    pub fn cut_replay(
        &mut self,
        out: &mut Outbox,
        index: &mut SubscriptionIndex,
        key: ConnKey,
        symbol: SymbolId,
    ) -> Result<bool, OverHardLimit> {
        let Some(Cursor { after, sent }) = self.replays.get(key, symbol) else { return Ok(false) };
        self.finish_replay(index, key, symbol);
        let head = self.lvc.get(symbol).seq;
        if after >= head {
            return Ok(false);
        }
        self.counters.replays_cut += 1;
        self.settle(out, symbol, None)?;
        self.announce(out, symbol, sent + 1, head, HISTORY)?;
        Ok(true)
    }

    /// The replay has caught up (or was cut short): the next event of the symbol comes live.
    pub(crate) fn finish_replay(&mut self, index: &mut SubscriptionIndex, key: ConnKey, symbol: SymbolId) {
        self.replays.cancel(key, symbol);
        index.unpause(symbol, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_visited_round_robin_and_forgotten_with_their_connection() {
        let mut r = Replays::default();
        let cursor = Cursor { after: 10, sent: 9 };
        for (key, symbol) in [(1, 0), (1, 3), (2, 1), (5, 0)] {
            r.set(key, SymbolId(symbol), cursor);
        }
        let mut due = Vec::new();
        r.due(3, &mut due);
        assert_eq!(due, [(1, SymbolId(0)), (1, SymbolId(3)), (2, SymbolId(1))]);
        r.stopped_at(2, SymbolId(1));
        r.due(3, &mut due);
        assert_eq!(due, [(5, SymbolId(0)), (1, SymbolId(0)), (1, SymbolId(3))], "from where it stopped, wrapping");
        r.forget_connection(1);
        r.due(10, &mut due);
        assert_eq!(due, [(5, SymbolId(0)), (2, SymbolId(1))]);
        assert!(r.cancel(5, SymbolId(0)) && !r.cancel(5, SymbolId(0)));
        assert_eq!((r.len(), r.get(2, SymbolId(1))), (1, Some(cursor)));
    }
}
