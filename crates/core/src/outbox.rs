//! A connection's outbox: its queue of frames, its byte budget, and what happens to a client
//! that cannot keep up.
//!
//! Below the soft watermark every event is queued in order (the fast path: one reference-count
//! bump). Above it the connection's [`Policy`] applies:
//!
//! - [`Policy::Conflate`]: quotes are state, so a queued quote that has not started to be
//!   written and is still the last queued event of its symbol is *replaced* by the newer quote,
//!   which then says how many it superseded (`"conflated":n`). Replacing only the last event of
//!   the symbol keeps each symbol's order: seq never goes back. Trades are events and are never
//!   merged: while the queue is under the trade limit (halfway between the watermarks) they are
//!   queued; past it they are dropped.
//! - [`Policy::Drop`]: every new event is dropped until the queue drains below the soft
//!   watermark.
//! - [`Policy::Disconnect`]: the connection is closed (1008 "slow consumer").
//!
//! A dropped event opens (or extends) a missed span for its symbol, and every later event of
//! that symbol is dropped into the same span until the span is announced: once the queue is
//! below the soft watermark, [`Outbox::next_gap`] hands the spans to the caller one at a time,
//! which sends a `gap` message and a fresh `snapshot` for each. So a client can rely on this:
//! seq never goes back, and every seq it did not receive is either a quote superseded by a later
//! quote it did receive, or inside a gap announced before the jump.
//!
//! A control frame about a symbol (a snapshot, a gap, an upstream notice) must not be overtaken
//! by what was queued before it: [`Outbox::settle`] ends the symbol's replaceable quote and hands
//! back its open span, which the caller announces first. That is the one way a control frame
//! about a symbol enters the queue (see `tickgate_server::session`).
//!
//! Past the hard watermark, or with no write progress for the write deadline, the verdict is
//! [`Verdict::Disconnect`]. Control frames (replies, snapshots, gaps, pongs, closes) are never
//! dropped by any policy. They count against the same budget: [`Outbox::push_within`] refuses
//! one that would take the queue past the hard watermark (the caller closes the connection as a
//! slow consumer); [`Outbox::push_control`] is for the frames that must go out regardless (a
//! pong, a close, an HTTP answer).
//!
//! A connection with a bandwidth cap ([`crate::bandwidth`]) is written no faster than its cap;
//! the bytes it holds back stay queued, and its policy applies past a soft watermark lowered to
//! half a second of the cap. Everything above holds for it unchanged.
//!
//! Sans IO: the reactor passes `now` in and does the writing.

use std::time::{Duration, Instant};

use crate::bandwidth::BandwidthCap;
use crate::frame::Frame;
use crate::outbound::{EntryId, OutboundQueue};
use crate::symbol::SymbolId;
use crate::throttle::Throttles;
use crate::tick::Tick;

/// What to do with a client that falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Replace superseded quotes; drop trades only past the trade limit, announcing them.
    #[default]
    Conflate,
    /// Drop new events until the queue drains, announcing them.
    Drop,
    /// Close the connection with 1008 "slow consumer".
    Disconnect,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Conflate => "conflate",
            Policy::Drop => "drop",
            Policy::Disconnect => "disconnect",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "conflate" => Some(Policy::Conflate),
            "drop" => Some(Policy::Drop),
            "disconnect" => Some(Policy::Disconnect),
            _ => None,
        }
    }
}

/// The first look at the kernel's queue of a connection whose writes wait is at this fraction of
/// the write deadline (see [`Outbox::wants_kernel_look`]).
const KERNEL_LOOK_AT_FRACTION: u32 = 4;

/// A connection's byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Queued bytes past which the policy applies.
    pub soft: usize,
    /// Queued bytes past which the connection is closed.
    pub hard: usize,
    /// Longest time with bytes queued and none written before the connection is closed.
    pub write_deadline: Duration,
}

impl Budget {
    /// Queued bytes past which a conflating connection drops trades.
    pub fn trade_limit(&self) -> usize {
        self.soft + (self.hard - self.soft) / 2
    }
}

/// Events `from_seq..=to_seq` of `symbol` that a connection will not receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissedSpan {
    pub symbol: SymbolId,
    pub from_seq: u64,
    pub to_seq: u64,
}

/// A control frame was not queued: it would take the queue past the hard watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverHardLimit;

/// What became of one offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Queued,
    /// Replaced a superseded quote.
    Conflated,
    /// Not delivered; it is in a missed span to be announced.
    Dropped,
    /// The connection must be closed as a slow consumer.
    Disconnect,
    /// A quote held back by its subscription's rate (see [`crate::throttle`]); the connection
    /// must be put on the reactor's wheel at `schedule_at`, if given.
    Throttled {
        schedule_at: Option<u64>,
    },
}

/// A quote that a newer quote of the same symbol may still replace.
#[derive(Debug, Clone, Copy)]
struct Replaceable {
    symbol: SymbolId,
    entry: EntryId,
    /// Quotes it already superseded (saturates: the wire says at least this many).
    superseded: u32,
}

/// What an outbox keeps only while its connection is behind: the quotes a newer one may still
/// replace, the spans still to be announced, and what the kernel held when last looked at while
/// no write went through. Boxed: most connections are never behind, and every connection pays
/// for the inline size of its outbox.
#[derive(Debug, Default)]
struct Behind {
    replaceable: Vec<Replaceable>,
    missed: Vec<MissedSpan>,
    /// Bytes the kernel still held for the client (unsent or unacknowledged) when last looked
    /// at, since the last write (see [`Outbox::kernel_queue_seen`]).
    kernel_queued: Option<usize>,
}

impl Behind {
    /// Opens a span for `tick`, from `from_seq` (the first quote it supersedes, if any).
    fn miss(&mut self, tick: &Tick, from_seq: u64) -> Verdict {
        self.replaceable.retain(|r| r.symbol != tick.symbol);
        self.missed.push(MissedSpan { symbol: tick.symbol, from_seq, to_seq: tick.seq });
        Verdict::Dropped
    }
}

/// A connection's queue with its slow-consumer state.
#[derive(Debug)]
pub struct Outbox {
    pub queue: OutboundQueue,
    pub policy: Policy,
    /// Allocated the first time the queue is past the soft watermark, given back by
    /// [`Outbox::trim`] once there is nothing left in it.
    behind: Option<Box<Behind>>,
    /// Last time bytes were written, or the queue became non-empty.
    last_progress: Instant,
    /// The subscriptions with a maximum update rate (see [`crate::throttle`]).
    pub throttles: Throttles,
    /// The connection's bandwidth cap, if any (see [`crate::bandwidth`]).
    pub bandwidth: BandwidthCap,
    /// Gap messages queued for this connection (for operators: who is behind); saturates. A
    /// `u32` beside `policy`, in what was padding: a connection's size does not grow.
    pub gaps_sent: u32,
    /// permessage-deflate: `0` when the connection did not agree to it, else the server window
    /// bits it allows (8 to 15): messages of at most 2^bits bytes may go compressed. A `u8` in
    /// what was padding, like `gaps_sent`.
    pub deflate_bits: u8,
}

impl Outbox {
    pub fn new(policy: Policy, now: Instant) -> Self {
        Self {
            queue: OutboundQueue::new(),
            policy,
            behind: None,
            last_progress: now,
            throttles: Throttles::default(),
            bandwidth: BandwidthCap::default(),
            gaps_sent: 0,
            deflate_bits: 0,
        }
    }

    /// The longest payload that may go compressed to this connection (`0`: none may). With a
    /// window of 15 bits, any: deflate never reaches further back than 2^15 bytes.
    #[inline]
    pub fn deflate_max_len(&self) -> usize {
        match self.deflate_bits {
            0 => 0,
            15.. => usize::MAX,
            bits => 1usize << bits,
        }
    }

    /// Offers one live event. `frame` is the shared frame; `reencode(n)` builds this client's
    /// own copy of the event saying it superseded `n` quotes (only called when conflating).
    #[inline]
    pub fn offer(
        &mut self,
        tick: &Tick,
        frame: &Frame,
        budget: &Budget,
        now: Instant,
        reencode: impl FnOnce(u32) -> Frame,
    ) -> Verdict {
        self.offer_superseding(tick, frame, 0, tick.seq, budget, now, reencode)
    }

    /// [`Outbox::offer`] for a quote that already supersedes `superseded` quotes, the first of
    /// them `from_seq` (its frame says so): replacing a queued quote adds them up, and dropping
    /// it misses them too.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn offer_superseding(
        &mut self,
        tick: &Tick,
        frame: &Frame,
        superseded: u32,
        from_seq: u64,
        budget: &Budget,
        now: Instant,
        reencode: impl FnOnce(u32) -> Frame,
    ) -> Verdict {
        let queued = self.queue.queued_bytes();
        if queued < self.bandwidth.soft_limit(budget.soft) {
            let caught_up = match &mut self.behind {
                None => true,
                Some(behind) if behind.missed.is_empty() => {
                    behind.replaceable.clear();
                    true
                }
                Some(_) => false,
            };
            if caught_up {
                if queued == 0 {
                    self.last_progress = now;
                }
                self.queue.push(frame.clone());
                return Verdict::Queued;
            }
        }
        self.offer_behind(tick, frame, superseded, from_seq, budget, reencode)
    }

    #[cold]
    fn offer_behind(
        &mut self,
        tick: &Tick,
        frame: &Frame,
        already: u32,
        from_seq: u64,
        budget: &Budget,
        reencode: impl FnOnce(u32) -> Frame,
    ) -> Verdict {
        let budget = &self.bandwidth.budget(budget);
        let behind = self.behind.get_or_insert_with(Box::default);
        if let Some(span) = behind.missed.iter_mut().find(|s| s.symbol == tick.symbol) {
            span.to_seq = tick.seq;
            return Verdict::Dropped;
        }
        let queued = self.queue.queued_bytes();
        // Past the hard watermark, as `is_over` and `push_within` count it: a queue filled to
        // exactly the watermark (a reply may take it there) is not closed by the next event.
        if queued > budget.hard {
            return Verdict::Disconnect;
        }
        if queued < budget.soft {
            // Below the soft watermark but with spans waiting to be announced (see next_gap).
            // A quote tracked earlier must not be replaced past this event.
            behind.replaceable.clear();
            self.queue.push(frame.clone());
            return Verdict::Queued;
        }
        match self.policy {
            Policy::Disconnect => Verdict::Disconnect,
            Policy::Drop => behind.miss(tick, from_seq),
            Policy::Conflate if tick.kind.is_trade() => {
                behind.replaceable.retain(|r| r.symbol != tick.symbol);
                if queued + frame.len() <= self.bandwidth.trade_limit(budget) {
                    self.queue.push(frame.clone());
                    Verdict::Queued
                } else {
                    behind.miss(tick, from_seq)
                }
            }
            Policy::Conflate => {
                if let Some(pos) = behind.replaceable.iter().position(|r| r.symbol == tick.symbol) {
                    let r = behind.replaceable[pos];
                    let superseded = r.superseded.saturating_add(1).saturating_add(already);
                    if self.queue.replace(r.entry, reencode(superseded)) {
                        behind.replaceable[pos].superseded = superseded;
                        return Verdict::Conflated;
                    }
                    behind.replaceable.swap_remove(pos);
                }
                if queued + frame.len() > budget.hard {
                    return behind.miss(tick, from_seq);
                }
                let entry = self.queue.push(frame.clone());
                behind.replaceable.push(Replaceable { symbol: tick.symbol, entry, superseded: already });
                Verdict::Queued
            }
        }
    }

    /// Queues a frame that must go out whatever the budget (pongs, closes, HTTP answers).
    pub fn push_control(&mut self, frame: Frame, now: Instant) {
        if self.queue.is_empty() {
            self.last_progress = now;
        }
        self.queue.push(frame);
    }

    /// Queues a control frame (a reply, a snapshot, a gap, a notice) unless it would take the
    /// queue past the hard watermark; then nothing is queued and the connection is a slow
    /// consumer.
    pub fn push_within(&mut self, frame: Frame, budget: &Budget, now: Instant) -> Result<(), OverHardLimit> {
        match self.queue.queued_bytes().checked_add(frame.len()) {
            Some(total) if total <= budget.hard => {
                self.push_control(frame, now);
                Ok(())
            }
            _ => Err(OverHardLimit),
        }
    }

    /// Whether the queue is at or past the soft watermark (the client is behind).
    pub fn is_behind(&self, budget: &Budget) -> bool {
        self.queue.queued_bytes() >= budget.soft
    }

    /// Records that `written` bytes went out at `now`; returns how many frames that completed.
    pub fn wrote(&mut self, written: usize, now: Instant) -> usize {
        if written == 0 {
            return 0;
        }
        self.last_progress = now;
        if let Some(behind) = &mut self.behind {
            behind.kernel_queued = None;
        }
        self.bandwidth.spend(written);
        self.queue.consume(written)
    }

    /// How many bytes the next write may take: everything, or what the bandwidth cap allows
    /// (`0`: wait, see [`BandwidthCap::due`]).
    #[inline]
    pub fn write_allowance(&mut self, now: Instant) -> usize {
        self.bandwidth.allowance(self.queue.queued_bytes(), now)
    }

    /// Whether the queue is at or past the soft watermark of the policy (lowered under a
    /// bandwidth cap).
    fn is_past_soft(&self, budget: &Budget) -> bool {
        self.queue.queued_bytes() >= self.bandwidth.soft_limit(budget.soft)
    }

    /// The next missed span to announce, while the queue is below the soft watermark. The
    /// caller queues a `gap` and a `snapshot` for it, then asks again: announcing stops at the
    /// soft watermark, so recovery never takes the queue far past it.
    pub fn next_gap(&mut self, budget: &Budget) -> Option<MissedSpan> {
        if self.is_past_soft(budget) {
            return None;
        }
        self.behind.as_mut()?.missed.pop()
    }

    /// Whether spans are waiting to be announced.
    pub fn has_gaps(&self) -> bool {
        self.behind.as_ref().is_some_and(|b| !b.missed.is_empty())
    }

    /// Ends what the outbox holds open for `symbol`, before a control frame about it is queued
    /// or once the client unsubscribed: its queued quote can no longer be replaced (a newer
    /// quote would overtake the control frame), and its span still to be announced, if any, is
    /// handed back for the caller to announce now (or to drop, after an unsubscribe).
    pub fn settle(&mut self, symbol: SymbolId) -> Option<MissedSpan> {
        let behind = self.behind.as_mut()?;
        behind.replaceable.retain(|r| r.symbol != symbol);
        let pos = behind.missed.iter().position(|s| s.symbol == symbol)?;
        Some(behind.missed.swap_remove(pos))
    }

    /// Gives back memory the connection no longer needs: the queue's unused ring (see
    /// [`OutboundQueue::trim`]) and the slow-consumer state of a connection that has caught up
    /// (no span to announce, below the soft watermark). Meant to be called every few hundred
    /// milliseconds, so that a connection hovering at the watermark does not allocate per event.
    pub fn trim(&mut self, budget: &Budget) {
        self.queue.trim();
        let watching_kernel = !self.queue.is_empty() && self.behind.as_ref().is_some_and(|b| b.kernel_queued.is_some());
        if !self.is_past_soft(budget) && !self.has_gaps() && !watching_kernel {
            self.behind = None;
        }
    }

    /// How long queued bytes have waited with none written (zero when the queue is empty).
    pub fn waiting(&self, now: Instant) -> std::time::Duration {
        if self.queue.is_empty() {
            std::time::Duration::ZERO
        } else {
            now.saturating_duration_since(self.last_progress)
        }
    }

    /// Whether the caller should look at how many bytes the kernel still holds for the client
    /// and report it with [`Outbox::kernel_queue_seen`]: queued bytes have waited a quarter of
    /// the write deadline with none written (the first look), or the whole deadline (the look
    /// that decides). Asked once per sweep, so that is at most one system call per waiting
    /// connection per sweep, and none for a connection whose writes go through.
    pub fn wants_kernel_look(&self, budget: &Budget, now: Instant) -> bool {
        let waited = self.waiting(now);
        if waited.is_zero() {
            return false;
        }
        match self.behind.as_ref().and_then(|b| b.kernel_queued) {
            None => waited >= budget.write_deadline / KERNEL_LOOK_AT_FRACTION,
            Some(_) => waited >= budget.write_deadline,
        }
    }

    /// Records how many bytes the kernel still holds for the client (`SIOCOUTQ`). Fewer than at
    /// the previous look is progress: the client is reading, only the kernel, whose buffer may
    /// be megabytes, reports the socket writable again only once much of it drained. It counts
    /// like a write for the write deadline.
    pub fn kernel_queue_seen(&mut self, kernel_queued: usize, now: Instant) {
        let behind = self.behind.get_or_insert_with(Box::default);
        if behind.kernel_queued.is_some_and(|before| kernel_queued < before) {
            self.last_progress = now;
        }
        behind.kernel_queued = Some(kernel_queued);
    }

    /// Whether bytes have waited longer than the write deadline with none written and the
    /// kernel's queue not shrinking either (see [`Outbox::kernel_queue_seen`]).
    pub fn is_stalled(&self, budget: &Budget, now: Instant) -> bool {
        !self.queue.is_empty() && now.saturating_duration_since(self.last_progress) >= budget.write_deadline
    }

    /// Whether the queue is past the hard watermark.
    pub fn is_over(&self, budget: &Budget) -> bool {
        self.queue.queued_bytes() > budget.hard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::TickKind;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::io::IoSlice;

    // Frames in these tests: [len][kind][symbol][seq: 8][conflated: 4], len counting itself.
    const GAP: u8 = b'G';
    const SNAP: u8 = b'S';

    fn encode(kind: u8, symbol: u32, seq: u64, conflated: u32, pad: usize) -> Frame {
        let mut b = vec![0u8; 15 + pad];
        b[0] = b.len() as u8;
        b[1] = kind;
        b[2] = symbol as u8;
        b[3..11].copy_from_slice(&seq.to_be_bytes());
        b[11..15].copy_from_slice(&conflated.to_be_bytes());
        Frame::from_bytes(&b)
    }

    fn tick(symbol: u32, seq: u64, trade: bool) -> Tick {
        let kind = if trade {
            TickKind::Trade { price: 1, size: 1 }
        } else {
            TickKind::Quote { bid: 1, bid_size: 1, ask: 2, ask_size: 1 }
        };
        Tick { symbol: SymbolId(symbol), seq, ts: 0, gw_ts: 0, kind }
    }

    fn budget() -> Budget {
        Budget { soft: 200, hard: 600, write_deadline: Duration::from_secs(10) }
    }

    #[test]
    fn a_quote_that_already_supersedes_adds_up_and_misses_from_its_first() {
        let (budget, now) = (budget(), Instant::now());
        let mut out = Outbox::new(Policy::Conflate, now);
        // Past the soft watermark: the next quote stays replaceable.
        out.push_control(encode(GAP, 9, 0, 0, 250), now);
        let q = tick(1, 10, false);
        let v = out.offer_superseding(&q, &encode(b'Q', 1, 10, 2, 0), 2, 8, &budget, now, |_| unreachable!());
        assert_eq!(v, Verdict::Queued);
        // A newer quote superseding 3 held back replaces it: 2 + 1 + 3.
        let newer = tick(1, 14, false);
        let mut said = 0;
        let v = out.offer_superseding(&newer, &encode(b'Q', 1, 14, 3, 0), 3, 11, &budget, now, |n| {
            said = n;
            encode(b'Q', 1, 14, n, 0)
        });
        assert_eq!((v, said), (Verdict::Conflated, 6));
        // Dropped, it misses the quotes it superseded too.
        let mut out = Outbox::new(Policy::Drop, now);
        out.push_control(encode(GAP, 9, 0, 0, 250), now);
        let v = out.offer_superseding(&newer, &encode(b'Q', 1, 14, 3, 0), 3, 11, &budget, now, |_| unreachable!());
        assert_eq!(v, Verdict::Dropped);
        assert_eq!(out.settle(SymbolId(1)), Some(MissedSpan { symbol: SymbolId(1), from_seq: 11, to_seq: 14 }));
    }

    /// The world around one outbox: a feed with per-symbol seq, and a client reading bytes.
    struct Harness {
        outbox: Outbox,
        budget: Budget,
        seq: BTreeMap<u32, u64>,
        kind_of: BTreeMap<(u32, u64), bool>,
        bytes: Vec<u8>,
        now: Instant,
        disconnected: bool,
    }

    impl Harness {
        fn new(policy: Policy) -> Self {
            Self {
                outbox: Outbox::new(policy, Instant::now()),
                budget: budget(),
                seq: BTreeMap::new(),
                kind_of: BTreeMap::new(),
                bytes: Vec::new(),
                now: Instant::now(),
                disconnected: false,
            }
        }

        fn event(&mut self, symbol: u32, trade: bool, pad: usize) {
            if self.disconnected {
                return;
            }
            let seq = self.seq.entry(symbol).or_default();
            *seq += 1;
            let t = tick(symbol, *seq, trade);
            self.kind_of.insert((symbol, t.seq), trade);
            let kind = if trade { b'T' } else { b'Q' };
            let frame = encode(kind, symbol, t.seq, 0, pad);
            let v = self.outbox.offer(&t, &frame, &self.budget, self.now, |n| encode(kind, symbol, t.seq, n, pad));
            if v == Verdict::Disconnect {
                self.disconnected = true;
            }
        }

        fn write(&mut self, max: usize) {
            let mut slices = [IoSlice::new(&[]); 8];
            let n = self.outbox.queue.io_slices(&mut slices);
            let mut taken = 0;
            for s in &slices[..n] {
                let take = s.len().min(max - taken);
                self.bytes.extend_from_slice(&s[..take]);
                taken += take;
            }
            self.outbox.wrote(taken, self.now);
            self.recover();
        }

        fn drain(&mut self) {
            for _ in 0..10_000 {
                self.write(1 << 20);
                if self.outbox.queue.is_empty() && !self.outbox.has_gaps() {
                    return;
                }
            }
            panic!("the outbox does not drain");
        }

        fn recover(&mut self) {
            while let Some(s) = self.outbox.next_gap(&self.budget) {
                self.outbox.push_control(encode(GAP, s.symbol.0, s.from_seq, s.to_seq as u32, 0), self.now);
                self.outbox.push_control(encode(SNAP, s.symbol.0, s.to_seq, 0, 0), self.now);
            }
        }

        /// Parses the client's bytes and checks the contract; returns per-symbol accounted seqs.
        fn check(&self) -> BTreeMap<u32, Vec<u64>> {
            let mut next: BTreeMap<u32, u64> = BTreeMap::new();
            let mut accounted: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            let mut at = 0;
            while at < self.bytes.len() {
                let len = self.bytes[at] as usize;
                assert!(at + len <= self.bytes.len(), "whole frames only");
                let f = &self.bytes[at..at + len];
                let (kind, symbol) = (f[1], u32::from(f[2]));
                let seq = u64::from_be_bytes(f[3..11].try_into().unwrap());
                let extra = u32::from_be_bytes(f[11..15].try_into().unwrap());
                let expect = next.entry(symbol).or_insert(1);
                let acc = accounted.entry(symbol).or_default();
                match kind {
                    GAP => {
                        assert_eq!(seq, *expect, "a gap starts where the stream stopped");
                        acc.extend(seq..=u64::from(extra));
                        *expect = u64::from(extra) + 1;
                    }
                    SNAP => assert_eq!(seq + 1, *expect, "the snapshot follows its gap"),
                    _ => {
                        assert!(seq >= *expect, "seq never goes back");
                        let skipped = seq - *expect;
                        assert_eq!(u64::from(extra), skipped, "every skipped seq is a superseded quote");
                        for s in *expect..seq {
                            assert!(!self.kind_of[&(symbol, s)], "a trade was merged away: {symbol}/{s}");
                        }
                        acc.extend(*expect..=seq);
                        *expect = seq + 1;
                    }
                }
                at += len;
            }
            accounted
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Event { symbol: u32, trade: bool, pad: usize },
        Write(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            prop_oneof![
                4 => (0u32..4, any::<bool>(), 0usize..40).prop_map(|(symbol, trade, pad)| Op::Event { symbol, trade, pad }),
                1 => (0usize..300).prop_map(Op::Write),
            ],
            0..400,
        )
    }

    proptest! {
        /// For any interleaving of events and partial writes, under any policy: whole frames,
        /// seq never back, every skip explained, and once drained, every event accounted for
        /// exactly once.
        #[test]
        fn delivered_plus_announced_cover_every_event_once(ops in ops(), policy in prop_oneof![Just(Policy::Conflate), Just(Policy::Drop), Just(Policy::Disconnect)]) {
            let mut h = Harness::new(policy);
            for op in ops {
                match op {
                    Op::Event { symbol, trade, pad } => h.event(symbol, trade, pad),
                    Op::Write(n) => h.write(n),
                }
                prop_assert!(h.outbox.queue.queued_bytes() <= h.budget.hard + 64 * 2, "bounded by the hard watermark");
            }
            h.drain();
            let accounted = h.check();
            if !h.disconnected {
                for (symbol, last) in &h.seq {
                    let got = accounted.get(symbol).cloned().unwrap_or_default();
                    let want: Vec<u64> = (1..=*last).collect();
                    prop_assert_eq!(got, want, "symbol {}", symbol);
                }
            }
        }
    }

    #[test]
    fn conflation_replaces_the_last_quote_and_counts() {
        let mut h = Harness::new(Policy::Conflate);
        for _ in 0..20 {
            h.event(0, false, 0);
        }
        // 13 quotes of 15 bytes reach the soft watermark (200); the rest replace the last one.
        assert!(h.outbox.queue.len() <= 15);
        h.drain();
        let accounted = h.check();
        assert_eq!(accounted[&0], (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn drop_policy_announces_a_gap_and_a_snapshot_once_drained() {
        let mut h = Harness::new(Policy::Drop);
        for _ in 0..30 {
            h.event(1, true, 0);
        }
        assert!(h.outbox.has_gaps());
        h.drain();
        let tail: Vec<u8> = h.bytes.chunks(15).rev().take(2).map(|f| f[1]).collect();
        assert_eq!(tail, [SNAP, GAP], "a gap, then a snapshot, at the end");
        h.check();
    }

    #[test]
    fn settling_a_symbol_ends_its_replaceable_quote_and_hands_back_its_span() {
        let mut h = Harness::new(Policy::Conflate);
        for _ in 0..20 {
            h.event(0, false, 0);
        }
        let len = h.outbox.queue.len();
        assert_eq!(h.outbox.settle(SymbolId(0)), None, "nothing dropped");
        h.event(0, false, 0);
        assert_eq!(h.outbox.queue.len(), len + 1, "queued after the settle, not conflated into a slot before it");
        let mut h = Harness::new(Policy::Drop);
        for _ in 0..30 {
            h.event(1, true, 0);
        }
        let span = h.outbox.settle(SymbolId(1)).expect("the dropped span");
        assert_eq!(span.to_seq, 30);
        assert!(!h.outbox.has_gaps(), "handed back, no longer owed");
    }

    #[test]
    fn a_caught_up_outbox_gives_its_slow_consumer_state_back() {
        let mut h = Harness::new(Policy::Drop);
        h.event(1, true, 0);
        h.drain();
        assert!(h.outbox.behind.is_none(), "never behind: nothing allocated");
        for _ in 0..30 {
            h.event(1, true, 0);
        }
        assert!(h.outbox.has_gaps());
        h.outbox.trim(&h.budget);
        assert!(h.outbox.behind.is_some(), "a span is still to be announced");
        h.drain();
        h.outbox.trim(&h.budget);
        assert!(h.outbox.behind.is_none(), "caught up: given back");
        h.event(1, true, 0);
        h.drain();
        h.check();
    }

    #[test]
    fn disconnect_policy_and_the_hard_watermark_disconnect() {
        let mut h = Harness::new(Policy::Disconnect);
        for _ in 0..20 {
            h.event(0, true, 0);
        }
        assert!(h.disconnected);
        let mut h = Harness::new(Policy::Conflate);
        for _ in 0..100 {
            h.outbox.push_control(encode(SNAP, 0, 0, 0, 40), h.now);
        }
        assert!(h.outbox.is_over(&h.budget));
        h.event(0, false, 0);
        assert!(h.disconnected, "past the hard watermark every event disconnects");
    }

    #[test]
    fn a_queue_exactly_at_the_hard_watermark_is_not_past_it() {
        let mut h = Harness::new(Policy::Conflate);
        // 14 quotes reach the soft watermark (200); the 15th is queued past it, replaceable.
        for _ in 0..15 {
            h.event(0, false, 0);
        }
        let room = h.budget.hard - h.outbox.queue.queued_bytes();
        let reply = |n: usize| Frame::from_bytes(&vec![0u8; n]);
        assert_eq!(h.outbox.push_within(reply(room + 1), &h.budget, h.now), Err(OverHardLimit));
        assert_eq!(h.outbox.push_within(reply(room), &h.budget, h.now), Ok(()), "up to the hard watermark");
        assert!(!h.outbox.is_over(&h.budget), "at the watermark, not past it");
        h.event(0, false, 0);
        assert!(!h.disconnected, "a quote that replaces a queued one does not disconnect at the watermark");
        h.event(1, true, 0);
        assert!(!h.disconnected, "a trade with no room is dropped, as below the watermark");
        assert!(h.outbox.has_gaps());
        h.outbox.push_control(reply(1), h.now);
        h.event(0, false, 0);
        assert!(h.disconnected, "past the hard watermark every event disconnects");
    }

    #[test]
    fn a_queue_without_progress_stalls_after_the_deadline() {
        let t0 = Instant::now();
        let b = budget();
        let mut o = Outbox::new(Policy::Conflate, t0 - Duration::from_secs(3600));
        assert!(!o.is_stalled(&b, t0), "an empty queue never stalls");
        o.offer(&tick(0, 1, true), &encode(b'T', 0, 1, 0, 0), &b, t0, |_| unreachable!());
        assert!(!o.is_stalled(&b, t0 + Duration::from_secs(9)));
        assert!(o.is_stalled(&b, t0 + Duration::from_secs(10)));
        o.wrote(3, t0 + Duration::from_secs(10));
        assert!(!o.is_stalled(&b, t0 + Duration::from_secs(19)));
    }

    /// The sweep's part, as the reactor plays it: look at the kernel's queue when asked, then
    /// decide.
    fn sweep(o: &mut Outbox, b: &Budget, now: Instant, kernel_queued: usize) -> bool {
        if o.wants_kernel_look(b, now) {
            o.kernel_queue_seen(kernel_queued, now);
        }
        o.is_stalled(b, now)
    }

    #[test]
    fn a_kernel_queue_that_shrinks_is_progress_and_one_that_does_not_is_a_stall() {
        let t0 = Instant::now();
        let b = budget();
        let s = Duration::from_secs;
        let mut o = Outbox::new(Policy::Conflate, t0);
        o.offer(&tick(0, 1, true), &encode(b'T', 0, 1, 0, 0), &b, t0, |_| unreachable!());
        assert!(!o.wants_kernel_look(&b, t0 + s(2)), "no look before a quarter of the deadline");
        assert!(!sweep(&mut o, &b, t0 + s(3), 4_000_000), "the first look only records");
        assert!(!o.wants_kernel_look(&b, t0 + s(5)), "then no look until the deadline");
        assert!(!sweep(&mut o, &b, t0 + s(10), 3_990_000), "the kernel's queue shrank: progress");
        assert!(!o.is_stalled(&b, t0 + s(19)), "the deadline starts again from that look");
        o.trim(&b);
        assert!(!sweep(&mut o, &b, t0 + s(20), 3_980_000), "the record survives a trim");
        assert!(sweep(&mut o, &b, t0 + s(30), 3_980_000), "the kernel's queue stood still: stalled");

        // A write forgets the record: the next look only records again.
        let mut o = Outbox::new(Policy::Conflate, t0);
        o.offer(&tick(0, 1, true), &encode(b'T', 0, 1, 0, 0), &b, t0, |_| unreachable!());
        assert!(!sweep(&mut o, &b, t0 + s(3), 100));
        o.wrote(3, t0 + s(4));
        assert!(!sweep(&mut o, &b, t0 + s(8), 50), "a first look after the write");
        assert!(sweep(&mut o, &b, t0 + s(14), 60), "the queue grew back: no progress since the write");

        // Without a look in time (a short deadline), the deadline holds as before.
        let mut o = Outbox::new(Policy::Conflate, t0);
        o.offer(&tick(0, 1, true), &encode(b'T', 0, 1, 0, 0), &b, t0, |_| unreachable!());
        assert!(sweep(&mut o, &b, t0 + s(10), 10), "a first look at the deadline decides nothing");
    }
}
