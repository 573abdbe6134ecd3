//! `outbox_ops` and `outbox_resync`: operation sequences driven through `tickgate_core::Outbox`.
//!
//! A port of the proptest harness in crates/core/src/outbox.rs (`Harness`, `check`): a feed
//! with per-symbol seq offers events, a client reads the queue in partial writes, and the
//! reactor's recovery (`next_gap`, then a gap and a snapshot per span with `push_control`)
//! runs after every write. The client-visible contract, checked on the bytes the client got:
//!
//! - whole frames only;
//! - per symbol, seq never goes back;
//! - every skipped seq is a quote superseded by the next event delivered (its `conflated`
//!   count says how many), or inside a gap announced before the jump;
//! - once drained, unless the connection was disconnected, every event is accounted for
//!   exactly once (delivered, superseded or announced);
//! - the queue stays bounded by the hard watermark plus a little (the proptest's `hard + 128`),
//!   control frames aside: they are never dropped, so an event must never grow a queue that is
//!   already past that bound.
//!
//! And each verdict means what it says: `Queued` adds exactly the frame, `Conflated` replaces
//! one frame in place, `Dropped` and `Disconnect` leave the queue alone.
//!
//! Beyond the proptest: symbols 0..8, budgets other than 200/600 (hard ≥ 2 × soft, as the
//! server's config demands), control pushes (replies, pongs) interleaved, and, in
//! `outbox_resync` only, the reactor's handling of a feed resync (`FanoutMsg::Resync` in
//! crates/server/src/session.rs: `settle(symbol)`, then one gap from the start of the span the
//! connection still owed, if any, to the end of the span the gateway skipped, and a snapshot).
//!
//! Input format (every byte string decodes; missing bytes read as 0):
//! `[policy] [soft] [hard]` then 3-byte ops `[tag] [a] [b]` until the input ends.
//! - policy: `% 3` → conflate, drop, disconnect.
//! - soft = 0: the proptest budget (soft 200, hard 600); otherwise soft = 16 + byte and
//!   hard = 2 × soft + 2 × (hard byte).
//! - tag `% 16` in 0..=10: event of symbol `a % 8`, trade if `b & 1`, padding `(b >> 1) % 40`;
//!   11..=14: a write of at most `u16::from_le_bytes([a, b]) % 300` bytes; 15: a control push
//!   with padding `b % 40`, or, in `outbox_resync` with `a & 1`, a resync of symbol
//!   `(a >> 1) % 8` skipping `1 + b % 4` seqs.

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use tickgate_core::{Budget, Frame, Outbox, Policy, SymbolId, Tick, TickKind, Verdict};

pub const SYMBOLS: u32 = 8;
pub const MAX_PAD: usize = 40;
pub const MAX_WRITE: usize = 300;
/// The proptest's "a little" past the hard watermark.
pub const SLACK: usize = 64 * 2;

// Frames: [len][kind][symbol][seq: 8][conflated or gap end: 4][padding], len counting itself.
const GAP: u8 = b'G';
const SNAP: u8 = b'S';
const CONTROL: u8 = b'C';
const TRADE: u8 = b'T';
const QUOTE: u8 = b'Q';
/// A gap and a snapshot, as the harness encodes them.
const RECOVERY_BYTES: usize = 2 * 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Event {
        symbol: u32,
        trade: bool,
        pad: usize,
    },
    Write(usize),
    Control {
        pad: usize,
    },
    /// The gateway skipped `skipped` seqs of `symbol` and resyncs every subscriber.
    Resync {
        symbol: u32,
        skipped: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Input {
    pub policy: Policy,
    pub budget: Budget,
    pub ops: Vec<Op>,
}

impl Input {
    pub fn decode(u: &mut Unstructured<'_>, resync: bool) -> arbitrary::Result<Self> {
        let byte = |u: &mut Unstructured<'_>| u8::arbitrary(u);
        let policy = [Policy::Conflate, Policy::Drop, Policy::Disconnect][usize::from(byte(u)? % 3)];
        let (soft, hard) = (usize::from(byte(u)?), usize::from(byte(u)?));
        let budget = if soft == 0 {
            Budget { soft: 200, hard: 600, write_deadline: Duration::from_secs(10) }
        } else {
            let soft = 16 + soft;
            Budget { soft, hard: 2 * soft + 2 * hard, write_deadline: Duration::from_secs(10) }
        };
        let mut ops = Vec::new();
        while !u.is_empty() {
            let (tag, a, b) = (byte(u)?, byte(u)?, byte(u)?);
            ops.push(match tag % 16 {
                0..=10 => {
                    Op::Event { symbol: u32::from(a) % SYMBOLS, trade: b & 1 == 1, pad: usize::from(b >> 1) % MAX_PAD }
                }
                11..=14 => Op::Write(usize::from(u16::from_le_bytes([a, b])) % MAX_WRITE),
                _ if resync && a & 1 == 1 => {
                    Op::Resync { symbol: u32::from(a >> 1) % SYMBOLS, skipped: 1 + u64::from(b % 4) }
                }
                _ => Op::Control { pad: usize::from(b) % MAX_PAD },
            });
        }
        Ok(Input { policy, budget, ops })
    }
}

/// `outbox_ops`' input: events, writes and control pushes.
#[derive(Debug, Clone)]
pub struct OpsInput(pub Input);

impl<'a> Arbitrary<'a> for OpsInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Input::decode(u, false).map(OpsInput)
    }
    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::arbitrary(&mut u)
    }
}

/// `outbox_resync`' input: the same, plus feed resyncs.
#[derive(Debug, Clone)]
pub struct ResyncInput(pub Input);

impl<'a> Arbitrary<'a> for ResyncInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Input::decode(u, true).map(ResyncInput)
    }
    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::arbitrary(&mut u)
    }
}

fn encode(kind: u8, symbol: u32, seq: u64, extra: u32, pad: usize) -> Frame {
    let mut b = vec![0u8; 15 + pad];
    b[0] = b.len() as u8;
    b[1] = kind;
    b[2] = symbol as u8;
    b[3..11].copy_from_slice(&seq.to_be_bytes());
    b[11..15].copy_from_slice(&extra.to_be_bytes());
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

/// What a seq of the feed was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Was {
    Trade,
    Quote,
    /// Skipped by the gateway itself and announced with a resync.
    Resynced,
}

/// The world around one outbox: a feed with per-symbol seq, and a client reading bytes.
pub struct Harness {
    pub outbox: Outbox,
    pub budget: Budget,
    seq: BTreeMap<u32, u64>,
    was: BTreeMap<(u32, u64), Was>,
    bytes: Vec<u8>,
    now: Instant,
    pub disconnected: bool,
    /// Bytes pushed by control and resync ops: exempt from the queue bound.
    exempt_bytes: usize,
}

impl Harness {
    pub fn new(policy: Policy, budget: Budget) -> Self {
        let now = Instant::now();
        Self {
            outbox: Outbox::new(policy, now),
            budget,
            seq: BTreeMap::new(),
            was: BTreeMap::new(),
            bytes: Vec::new(),
            now,
            disconnected: false,
            exempt_bytes: 0,
        }
    }

    /// The most the queue may hold without control frames: the hard watermark, or what a
    /// recovery can push at the soft one (a gap and a snapshot per symbol), plus the slack.
    fn bound(&self) -> usize {
        self.budget.hard.max(self.budget.soft + SYMBOLS as usize * RECOVERY_BYTES) + SLACK
    }

    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Event { symbol, trade, pad } => self.event(symbol, trade, pad),
            Op::Write(n) => self.write(n),
            Op::Control { pad } => {
                let frame = encode(CONTROL, 0, 0, 0, pad);
                self.exempt_bytes += frame.len();
                self.outbox.push_control(frame, self.now);
            }
            Op::Resync { symbol, skipped } => self.resync(symbol, skipped),
        }
        let queued = self.outbox.queue.queued_bytes();
        assert!(
            queued <= self.bound() + self.exempt_bytes,
            "bounded by the hard watermark: {queued} bytes queued after {op:?} (budget {:?})",
            self.budget
        );
    }

    fn event(&mut self, symbol: u32, trade: bool, pad: usize) {
        if self.disconnected {
            return;
        }
        let seq = self.seq.entry(symbol).or_default();
        *seq += 1;
        let t = tick(symbol, *seq, trade);
        self.was.insert((symbol, t.seq), if trade { Was::Trade } else { Was::Quote });
        let kind = if trade { TRADE } else { QUOTE };
        let frame = encode(kind, symbol, t.seq, 0, pad);
        let (before, frames_before) = (self.outbox.queue.queued_bytes(), self.outbox.queue.len());
        let mut reencoded = None;
        let v = self.outbox.offer(&t, &frame, &self.budget, self.now, |n| {
            let f = encode(kind, symbol, t.seq, n, pad);
            reencoded = Some(f.len());
            f
        });
        let (after, frames_after) = (self.outbox.queue.queued_bytes(), self.outbox.queue.len());
        match v {
            Verdict::Queued => {
                assert_eq!((after, frames_after), (before + frame.len(), frames_before + 1), "Queued adds the frame")
            }
            Verdict::Conflated => {
                assert!(!trade, "a trade was conflated: {symbol}/{}", t.seq);
                assert!(reencoded.is_some(), "Conflated without re-encoding");
                assert_eq!(frames_after, frames_before, "Conflated replaces a frame in place");
            }
            Verdict::Dropped | Verdict::Disconnect => {
                assert_eq!((after, frames_after), (before, frames_before), "{v:?} leaves the queue alone")
            }
            Verdict::Throttled { .. } => panic!("the outbox itself never throttles (rate caps are the session's)"),
        }
        assert!(
            after <= before || after <= self.budget.hard + SLACK,
            "an event ({v:?}) took the queue from {before} to {after} bytes, past the hard watermark {} + {SLACK}",
            self.budget.hard
        );
        if v == Verdict::Disconnect {
            self.disconnected = true;
        }
    }

    /// What the reactor does with `FanoutMsg::Resync` for one subscriber: a span the
    /// connection's policy dropped and had not announced yet is merged into the gateway's gap.
    fn resync(&mut self, symbol: u32, skipped: u64) {
        if self.disconnected {
            return;
        }
        let seq = self.seq.entry(symbol).or_default();
        let from = *seq + 1;
        *seq += skipped;
        let to = *seq;
        for s in from..=to {
            self.was.insert((symbol, s), Was::Resynced);
        }
        let start = match self.outbox.settle(SymbolId(symbol)) {
            Some(owed) => owed.from_seq.min(from),
            None => from,
        };
        for frame in [encode(GAP, symbol, start, to as u32, 0), encode(SNAP, symbol, to, 0, 0)] {
            self.exempt_bytes += frame.len();
            self.outbox.push_control(frame, self.now);
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
            assert!(len >= 15 && at + len <= self.bytes.len(), "whole frames only (at byte {at})");
            let f = &self.bytes[at..at + len];
            let (kind, symbol) = (f[1], u32::from(f[2]));
            let seq = u64::from_be_bytes(f[3..11].try_into().unwrap());
            let extra = u32::from_be_bytes(f[11..15].try_into().unwrap());
            at += len;
            if kind == CONTROL {
                continue;
            }
            let expect = next.entry(symbol).or_insert(1);
            let acc = accounted.entry(symbol).or_default();
            match kind {
                GAP => {
                    assert_eq!(seq, *expect, "symbol {symbol}: a gap starts where the stream stopped");
                    acc.extend(seq..=u64::from(extra));
                    *expect = u64::from(extra) + 1;
                }
                SNAP => assert_eq!(seq + 1, *expect, "symbol {symbol}: the snapshot follows its gap"),
                _ => {
                    assert!(seq >= *expect, "symbol {symbol}: seq never goes back ({seq} after {})", *expect - 1);
                    let skipped = seq - *expect;
                    assert_eq!(
                        u64::from(extra),
                        skipped,
                        "symbol {symbol}: every skipped seq is a superseded quote (seq {seq}, after {})",
                        *expect - 1
                    );
                    for s in *expect..seq {
                        let was = self.was[&(symbol, s)];
                        assert_eq!(was, Was::Quote, "symbol {symbol}: seq {s} ({was:?}) was merged away into {seq}");
                    }
                    acc.extend(*expect..=seq);
                    *expect = seq + 1;
                }
            }
        }
        accounted
    }
}

/// Runs one input and checks the whole contract.
pub fn check(input: &Input) {
    let mut h = Harness::new(input.policy, input.budget);
    for &op in &input.ops {
        h.apply(op);
    }
    h.drain();
    let accounted = h.check();
    if !h.disconnected {
        for (symbol, last) in &h.seq {
            let got = accounted.get(symbol).cloned().unwrap_or_default();
            let want: Vec<u64> = (1..=*last).collect();
            assert_eq!(got, want, "symbol {symbol}: delivered plus announced cover every event once");
        }
    }
}

/// Encodes ops in the input format (for seeds and regression tests).
pub fn encode_input(policy: u8, soft: u8, hard: u8, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![policy, soft, hard];
    for op in ops {
        out.extend_from_slice(&match *op {
            Op::Event { symbol, trade, pad } => [0, symbol as u8, (pad as u8) << 1 | u8::from(trade)],
            Op::Write(n) => {
                let [a, b] = (n as u16).to_le_bytes();
                [11, a, b]
            }
            Op::Control { pad } => [15, 0, pad as u8],
            Op::Resync { symbol, skipped } => [15, (symbol as u8) << 1 | 1, (skipped - 1) as u8],
        });
    }
    out
}
