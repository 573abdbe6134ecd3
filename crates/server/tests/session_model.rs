//! The connection path against a model of the client contract, sans IO.
//!
//! One connection's [`Session`] and outbox are driven the way a reactor drives them (commands
//! parsed by the real parser, ticks recorded in a small history and offered with `deliver_tick`
//! where the index's fan-out view admits them, upstream notices, resyncs after the reactor fell
//! behind the feed, replays advanced a slice a turn, rate caps released from the wheel, the
//! announcement of dropped spans after each write, the sweep's slow-consumer checks, the close
//! of a slow consumer), under each slow-consumer policy,
//! while a client reads the bytes in pieces of any size. Every byte the client reads is decoded
//! and checked against the contract of docs/PROTOCOL.md, per symbol:
//!
//! - the first thing after `subscribed` for a symbol not held is its snapshot, or, when it was
//!   resumed after a seq, `resumed` from exactly that seq (then the events after it, replayed
//!   over the reactor's turns, then live, no snapshot) or a gap from right after it ("history")
//!   or from the gateway's newest seq up to it ("ahead"), then a snapshot; re-subscribing a held
//!   symbol sends no snapshot, resumed or not;
//! - a replay keeps the contract while live ticks, notices, resyncs, stalls, commands and the
//!   history's evictions interleave with it: one stream, replay then live, and history evicted
//!   under the replay is announced (a gap "history", then a snapshot);
//! - seq never goes back; an event's seq is exactly the one after what the client holds, plus
//!   the quotes its `conflated` says it superseded (all quotes);
//! - a gap starts right after what the client holds, and the next message about the symbol is
//!   a snapshot at or past its end;
//! - an `upstream_gap` is never overtaken by a later event (its `after_seq` is not behind what
//!   the client holds);
//! - nothing about a symbol arrives after its `unsubscribed`, until it is subscribed again;
//! - rate caps (`max_rate`, and the gateway's cap): quotes held back go out at their slot as
//!   the newest quote with `conflated` counting the ones it superseded; a trade is never held
//!   back and never overtakes a quote held back (seq never goes back);
//! - channels: only events of the channels held arrive; a subscribe that adds a channel to a
//!   held symbol is followed by a snapshot (after a gap if one is owed); every seq the client
//!   does not get is of a channel it does not hold, or a quote counted in a `conflated`, or in
//!   an announced gap;
//! - every command gets an answer; nothing follows a close frame;
//! - the queue never holds more than the hard limit (plus the close frame);
//! - once everything is read, the client holds the last seq of every symbol it subscribed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IoSlice;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::Value;
use tickgate_core::subscription::ConnKey;
use tickgate_core::{
    AssetClass, Budget, Channels, History, HistoryLimits, LastValueCache, Outbox, Policy, SlotWheel, SubscriptionIndex,
    SymbolId, SymbolInfo, SymbolSet, SymbolTable, Tick, TickKind, Verdict,
};
use tickgate_protocol::{CloseCode, FrameBuilder, close_frame, message, parse_command};
use tickgate_server::replay::Replays;
use tickgate_server::session::{CommandLimits, Desk, Moment, Outcome, Session, deliver_tick, release};
use tickgate_server::stats::TurnCounters;

const SYMBOLS: u32 = 5;
const KEY: ConnKey = 7;
/// The close frame of a slow consumer may be queued past the hard limit.
const CLOSE_SLACK: usize = 64;

#[derive(Debug, Clone)]
enum Op {
    Subscribe {
        mask: u8,
        policy: Option<Policy>,
        channels: Option<Channels>,
        max_rate: Option<u16>,
    },
    Unsubscribe {
        mask: u8,
        channels: Option<Channels>,
    },
    /// Subscribes the symbols of `mask` on `channels`, resuming each after the gateway's seq
    /// less `back` (at least 1), or, `ahead`, after a seq `back` + 1 past it.
    Resume {
        mask: u8,
        back: u64,
        ahead: bool,
        channels: Option<Channels>,
    },
    /// A reactor turn: the replays under way advance by at most `slice` events each.
    Turn {
        slice: usize,
    },
    ListSubscriptions,
    ListSymbols,
    Tick {
        symbol: u32,
        trade: bool,
    },
    /// Many quotes of one symbol in a row: what makes conflation happen.
    Quotes {
        symbol: u32,
        n: u32,
    },
    UpstreamGap {
        symbol: u32,
    },
    /// The reactor fell behind the feed and skips `skipped` seqs of `symbol`.
    Resync {
        symbol: u32,
        skipped: u64,
    },
    /// The client reads at most this many bytes.
    Read(usize),
    /// Time passes without the client reading, then the sweep runs.
    Stall {
        ms: u64,
    },
    /// A little time passes: quotes held back by rate caps whose slot has come are released.
    Elapse {
        ms: u64,
    },
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![Just(Policy::Conflate), Just(Policy::Drop), Just(Policy::Disconnect)]
}

/// No `max_rate` field, or a low or high rate.
fn max_rate() -> impl Strategy<Value = Option<u16>> {
    prop_oneof![2 => Just(None), 1 => Just(Some(1)), 1 => Just(Some(4)), 1 => Just(Some(50))]
}

/// No `channels` field (both), or one naming some.
fn channels() -> impl Strategy<Value = Option<Channels>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Channels::TRADES)),
        1 => Just(Some(Channels::QUOTES)),
        1 => Just(Some(Channels::ALL)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..64, prop::option::weighted(0.2, policy()), channels(), max_rate())
            .prop_map(|(mask, policy, channels, max_rate)| Op::Subscribe { mask, policy, channels, max_rate }),
        1 => (1u8..64, channels()).prop_map(|(mask, channels)| Op::Unsubscribe { mask, channels }),
        2 => (1u8..64, prop_oneof![0u64..4, 4u64..40], prop::bool::weighted(0.15), channels())
            .prop_map(|(mask, back, ahead, channels)| Op::Resume { mask, back, ahead, channels }),
        4 => prop_oneof![1usize..4, Just(256)].prop_map(|slice| Op::Turn { slice }),
        1 => Just(Op::ListSubscriptions),
        1 => Just(Op::ListSymbols),
        8 => (0..SYMBOLS, any::<bool>()).prop_map(|(symbol, trade)| Op::Tick { symbol, trade }),
        3 => (0..SYMBOLS, 1u32..40).prop_map(|(symbol, n)| Op::Quotes { symbol, n }),
        1 => (0..SYMBOLS).prop_map(|symbol| Op::UpstreamGap { symbol }),
        1 => (0..SYMBOLS, 1u64..5).prop_map(|(symbol, skipped)| Op::Resync { symbol, skipped }),
        4 => prop_oneof![1usize..64, 64usize..2000, Just(usize::MAX)].prop_map(Op::Read),
        1 => (1u64..6000).prop_map(|ms| Op::Stall { ms }),
        3 => (1u64..400).prop_map(|ms| Op::Elapse { ms }),
    ]
}

/// The reactor-wide part of a session call, borrowing fields (so the connection can be
/// borrowed beside it).
macro_rules! desk {
    ($gw:expr) => {
        Desk {
            symbols: &$gw.symbols,
            lvc: &$gw.lvc,
            history: &$gw.history,
            replays: &mut $gw.replays,
            builder: &mut $gw.builder,
            budget: $gw.budget,
            counters: &mut $gw.counters,
            now: $gw.now,
        }
    };
}

/// The gateway side: what a reactor holds for one connection, and the feed.
struct Gateway {
    symbols: SymbolTable,
    /// The reactor's last values (snapshots) and the feed's (what a resync carries).
    lvc: LastValueCache,
    /// The reactor's history: small, so resumes find it exhausted and replays have it evicted
    /// under them.
    history: History,
    replays: Replays,
    feed_lvc: LastValueCache,
    index: SubscriptionIndex,
    builder: FrameBuilder,
    counters: TurnCounters,
    budget: Budget,
    out: Outbox,
    subs: SymbolSet,
    now: Instant,
    /// The feed's last seq per symbol, and which seqs were quotes.
    seq: Vec<u64>,
    quotes: BTreeSet<(u32, u64)>,
    next_id: u64,
    closed: bool,
    /// The gateway's cap on updates per second (`limits.max_update_rate`).
    cap: u16,
    wheel: SlotWheel,
    started: Instant,
}

impl Gateway {
    fn new(policy: Policy, soft: usize, cap: u16) -> Self {
        let mut symbols = SymbolTable::new();
        for i in 0..SYMBOLS {
            let info =
                SymbolInfo { name: format!("S{i}").into(), class: AssetClass::Equity, price_scale: 2, size_scale: 0 };
            symbols.insert(info).unwrap();
        }
        let n = symbols.capacity();
        let now = Instant::now();
        Self {
            symbols,
            lvc: LastValueCache::new(n),
            history: History::new(
                n,
                HistoryLimits { events_per_symbol: 12, bytes_per_symbol: 1 << 20, events: 30, bytes: 1 << 20 },
            ),
            replays: Replays::default(),
            feed_lvc: LastValueCache::new(n),
            index: SubscriptionIndex::new(n),
            builder: FrameBuilder::new(),
            counters: TurnCounters::default(),
            budget: Budget { soft, hard: 3 * soft, write_deadline: Duration::from_secs(10) },
            out: Outbox::new(policy, now),
            subs: SymbolSet::new(),
            now,
            seq: vec![0; SYMBOLS as usize],
            quotes: BTreeSet::new(),
            next_id: 0,
            closed: false,
            cap,
            wheel: SlotWheel::new(),
            started: now,
        }
    }

    fn desk(&mut self) -> (Desk<'_>, &mut Outbox) {
        let desk = desk!(self);
        (desk, &mut self.out)
    }

    /// The reactor's `begin_close` for a slow consumer.
    fn close_slow_consumer(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        for symbol in self.subs.take().iter() {
            self.index.remove(symbol, KEY);
        }
        self.replays.forget_connection(KEY);
        self.out.queue.discard_unstarted();
        self.out.push_control(close_frame(CloseCode::PolicyViolation, "slow consumer"), self.now);
    }

    fn act(&mut self, outcome: Outcome) {
        if outcome == Outcome::SlowConsumer {
            self.close_slow_consumer();
        }
    }

    /// Sends a command as the client would; returns its id.
    fn command(&mut self, json: String) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if self.closed {
            return id;
        }
        let mut bytes = json.replacen('{', &format!("{{\"id\":{id},"), 1).into_bytes();
        let request = parse_command(&mut bytes).expect("the model sends valid commands");
        let limits = CommandLimits { max_subscriptions: 4, max_rate: self.cap };
        let mut desk = desk!(self);
        let mut session = Session { key: KEY, subs: &mut self.subs, out: &mut self.out, principal: None };
        let behind = session.out.is_behind(&desk.budget);
        let before = session.out.queue.queued_bytes();
        let outcome = session.handle(&mut desk, &mut self.index, limits, request.id.as_ref(), &request.command);
        let grown = self.out.queue.queued_bytes().saturating_sub(before);
        let large = !json.contains("\"unsubscribe\"");
        assert!(!behind || !large || grown < 256, "a client behind got {grown} bytes for {json}");
        self.act(outcome);
        id
    }

    fn subscribed_here(&self, symbol: SymbolId) -> bool {
        self.index.subscribers(symbol).contains(&KEY)
    }

    /// Whether the fan-out offers this tick to the connection (as the reactor's fan-out sees the
    /// index: a paused subscription admits nothing).
    fn offered(&self, tick: &Tick) -> bool {
        let subscribers = self.index.subscribers(tick.symbol);
        let channels = self.index.channels(tick.symbol);
        subscribers.iter().zip(channels).any(|(&key, c)| key == KEY && c.admits(&tick.kind))
    }

    fn is_quote(&self, symbol: SymbolId, seq: u64) -> bool {
        self.quotes.contains(&(symbol.0, seq))
    }

    fn tick(&mut self, symbol: u32, trade: bool) {
        let id = SymbolId(symbol);
        self.seq[symbol as usize] += 1;
        let seq = self.seq[symbol as usize];
        let kind = if trade {
            TickKind::Trade { price: 10_000 + seq as i64, size: 5 }
        } else {
            self.quotes.insert((symbol, seq));
            TickKind::Quote { bid: 9_900 + seq as i64, bid_size: 3, ask: 10_100 + seq as i64, ask_size: 4 }
        };
        let tick = Tick { symbol: id, seq, ts: seq, gw_ts: seq, kind };
        self.feed_lvc.record(&tick);
        self.lvc.record(&tick);
        let info = self.symbols.get(id);
        let frame = self.builder.text(|o| message::event(o, info, &tick, 0));
        self.history.record(&tick, &frame);
        if self.closed || !self.offered(&tick) {
            return;
        }
        let at = self.moment();
        let verdict = deliver_tick(&mut self.out, &tick, &frame, info, &mut self.builder, &self.budget, at);
        match verdict {
            Verdict::Disconnect => self.close_slow_consumer(),
            Verdict::Throttled { schedule_at: Some(due) } => self.wheel.schedule(KEY, due),
            _ => {}
        }
    }

    fn moment(&self) -> Moment {
        Moment { now: self.now, ms: self.now.duration_since(self.started).as_millis() as u64 }
    }

    /// The reactor's release of the quotes held back whose slot has come.
    fn release_due(&mut self) {
        let at = self.moment();
        let mut due = Vec::new();
        self.wheel.expire(at.ms, &mut due);
        if due.is_empty() || self.closed {
            return;
        }
        let mut throttles = std::mem::take(&mut self.out.throttles);
        let mut disconnect = false;
        let (out, symbols, builder, budget) = (&mut self.out, &self.symbols, &mut self.builder, &self.budget);
        let next = throttles.take_due(at.ms, |held| {
            let verdict = release(out, &held, symbols.get(held.quote.symbol), builder, budget, at.now);
            disconnect |= verdict == Verdict::Disconnect;
        });
        self.out.throttles = throttles;
        if let Some(next) = next {
            self.wheel.schedule(KEY, next);
        }
        if disconnect {
            self.close_slow_consumer();
        }
    }

    fn upstream_gap(&mut self, symbol: u32) {
        let id = SymbolId(symbol);
        let info = self.symbols.get(id);
        let after = self.lvc.get(id).seq;
        let notice = self.builder.text(|o| message::upstream_gap(o, info, "sim", after, 3));
        if self.closed || !self.subscribed_here(id) {
            return;
        }
        let (mut desk, out) = self.desk();
        let outcome = desk.deliver_notice(out, KEY, id, notice);
        self.act(outcome);
    }

    fn resync(&mut self, symbol: u32, skipped: u64) {
        let id = SymbolId(symbol);
        let from_seq = self.seq[symbol as usize] + 1;
        for _ in 0..skipped {
            // Ticks the reactor never sees: only the feed's cache has them.
            self.seq[symbol as usize] += 1;
            let seq = self.seq[symbol as usize];
            let tick = Tick { symbol: id, seq, ts: seq, gw_ts: seq, kind: TickKind::Trade { price: 1, size: 1 } };
            self.feed_lvc.record(&tick);
        }
        let to_seq = self.seq[symbol as usize];
        self.lvc.replace(id, *self.feed_lvc.get(id));
        self.history.forget(id);
        if self.closed || !self.subscribed_here(id) {
            return;
        }
        let (mut desk, out) = self.desk();
        let skipped = desk.resync(id, from_seq, to_seq);
        let outcome = desk.deliver_resync(out, KEY, id, &skipped);
        self.act(outcome);
    }

    /// A reactor turn's replays: each cursor of the connection by at most `slice` events.
    fn turn(&mut self, slice: usize) {
        let mut due = Vec::new();
        self.replays.due(usize::MAX, &mut due);
        for (key, symbol) in due {
            if self.closed {
                return;
            }
            let mut desk = desk!(self);
            let (outcome, walked) = desk.advance_replay(&mut self.out, &mut self.index, key, symbol, slice);
            assert!(walked <= slice);
            self.act(outcome);
        }
    }

    /// The client reads up to `max` bytes; then, as the reactor's flush does, what the policy
    /// dropped is announced.
    fn read(&mut self, max: usize, sink: &mut Vec<u8>) {
        let mut slices = [IoSlice::new(&[]); 16];
        let n = self.out.queue.io_slices(&mut slices);
        let mut taken = 0;
        for s in &slices[..n] {
            let take = s.len().min(max - taken);
            sink.extend_from_slice(&s[..take]);
            taken += take;
        }
        self.out.wrote(taken, self.now);
        if !self.closed {
            let (mut desk, out) = self.desk();
            let outcome = desk.announce_gaps(out);
            self.act(outcome);
        }
    }

    /// The reactor's sweep: no write progress within the deadline, or past the hard limit.
    fn sweep(&mut self) {
        self.out.trim(&self.budget);
        if !self.closed && (self.out.is_stalled(&self.budget, self.now) || self.out.is_over(&self.budget)) {
            self.close_slow_consumer();
        }
    }
}

/// What the client knows of one symbol.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    /// The seq it holds (after a snapshot).
    seq: Option<u64>,
    /// Subscribed, its snapshot not yet read.
    awaiting_snapshot: bool,
    /// A gap was read: the next message about the symbol is a snapshot at or past this seq.
    gap_to: Option<u64>,
    /// The channels held, as the replies stated them.
    channels: Option<Channels>,
    /// Subscribed resuming after `seq`: `resumed` or a gap comes next.
    awaiting_resume: bool,
    /// `resumed` was read: the replay may be cut short by a gap "history".
    resumed: bool,
}

/// The kind of event `seq` of symbol `id` was (the ones the reactor skipped count as trades).
fn kind_of(quotes: &BTreeSet<(u32, u64)>, id: u32, seq: u64) -> TickKind {
    if quotes.contains(&(id, seq)) {
        TickKind::Quote { bid: 0, bid_size: 0, ask: 0, ask_size: 0 }
    } else {
        TickKind::Trade { price: 0, size: 0 }
    }
}

/// The channels a `subscribed` or `unsubscribed` names (none named: both).
fn stated_channels(m: &Value) -> Channels {
    match m["channels"].as_array() {
        None => Channels::ALL,
        Some(names) => names
            .iter()
            .map(|n| Channels::parse(n.as_str().unwrap()).expect("a channel name"))
            .fold(Channels::NONE, Channels::union),
    }
}

/// The client: decodes frames and checks each message against the contract.
#[derive(Debug, Default)]
struct Client {
    buf: Vec<u8>,
    held: BTreeMap<String, Held>,
    answered: BTreeSet<u64>,
    closed: bool,
    /// The seqs each resuming command resumes after, by command id.
    resuming: BTreeMap<u64, BTreeMap<String, u64>>,
    /// Every event read: symbol and seq.
    events: Vec<(String, u64)>,
}

impl Client {
    fn absorb(&mut self, bytes: &[u8], quotes: &BTreeSet<(u32, u64)>) -> Result<(), TestCaseError> {
        self.buf.extend_from_slice(bytes);
        loop {
            if self.buf.len() < 2 {
                return Ok(());
            }
            let (first, len7) = (self.buf[0], usize::from(self.buf[1] & 0x7f));
            prop_assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
            let (header, len) = match len7 {
                126 if self.buf.len() >= 4 => (4, usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]))),
                127 if self.buf.len() >= 10 => (10, u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize),
                126 | 127 => return Ok(()),
                n => (2, n),
            };
            if self.buf.len() < header + len {
                return Ok(());
            }
            let payload: Vec<u8> = self.buf[header..header + len].to_vec();
            self.buf.drain(..header + len);
            prop_assert!(!self.closed, "nothing follows a close frame");
            match first {
                0x81 => {
                    let message: Value = serde_json::from_slice(&payload).expect("text frames are JSON");
                    self.check(&message, quotes)?;
                }
                0x88 => self.closed = true,
                other => prop_assert!(false, "unexpected frame {:#x}", other),
            }
        }
    }

    fn check(&mut self, m: &Value, quotes: &BTreeSet<(u32, u64)>) -> Result<(), TestCaseError> {
        let kind = m["type"].as_str().unwrap_or_default();
        if let Some(id) = m["id"].as_u64() {
            self.answered.insert(id);
        }
        let names = || m["symbols"].as_array().cloned().unwrap_or_default();
        let symbol = m["symbol"].as_str().unwrap_or_default().to_string();
        let seq = |field: &str| m[field].as_u64().unwrap_or_else(|| panic!("{field} in {m}"));
        match kind {
            "subscribed" => {
                let wanted = stated_channels(m);
                let resuming = m["id"].as_u64().and_then(|id| self.resuming.remove(&id)).unwrap_or_default();
                for name in names() {
                    let name = name.as_str().unwrap().to_string();
                    let new = !self.held.contains_key(&name);
                    let held = self.held.entry(name.clone()).or_default();
                    let before = held.channels.unwrap_or(Channels::NONE);
                    match resuming.get(&name) {
                        Some(&after) if new => {
                            *held = Held { seq: Some(after), awaiting_resume: true, ..Held::default() };
                        }
                        _ if held.seq.is_none() || !before.contains(wanted) => held.awaiting_snapshot = true,
                        _ => {}
                    }
                    held.channels = Some(before.union(wanted));
                }
            }
            "resumed" => {
                let held = self.held.get_mut(&symbol);
                prop_assert!(held.is_some(), "resumed {} not subscribed: {}", symbol, m);
                let held = held.unwrap();
                prop_assert!(held.awaiting_resume, "resumed without a resume: {} ({:?})", m, held);
                prop_assert_eq!(Some(seq("after_seq")), held.seq, "resumed from the seq asked: {}", m);
                prop_assert!(seq("to_seq") >= seq("after_seq"));
                held.awaiting_resume = false;
                held.resumed = true;
            }
            "unsubscribed" => {
                let leaving = stated_channels(m);
                for name in names() {
                    let name = name.as_str().unwrap();
                    if let Some(held) = self.held.get_mut(name) {
                        let left = held.channels.unwrap_or(Channels::ALL).without(leaving);
                        if left.is_empty() {
                            self.held.remove(name);
                        } else {
                            held.channels = Some(left);
                        }
                    }
                }
            }
            "snapshot" => {
                let held = self.held.get_mut(&symbol);
                prop_assert!(held.is_some(), "snapshot of {} not subscribed: {}", symbol, m);
                let held = held.unwrap();
                let s = seq("seq");
                match (held.awaiting_snapshot, held.gap_to) {
                    (true, None) => {}
                    (_, Some(to)) => prop_assert!(s >= to, "snapshot {} older than its gap's end {}", s, to),
                    (false, None) => prop_assert!(false, "snapshot not after a subscribe or a gap: {} ({:?})", m, held),
                }
                if let Some(h) = held.seq {
                    prop_assert!(s >= h, "snapshot {} older than held {}", s, h);
                }
                *held = Held { seq: Some(s), channels: held.channels, resumed: held.resumed, ..Held::default() };
            }
            "gap" => {
                let held = self.held.get_mut(&symbol);
                prop_assert!(held.is_some(), "gap of {} not subscribed: {}", symbol, m);
                let held = held.unwrap();
                // A held symbol that gains a channel is owed a snapshot, and may get a gap first.
                prop_assert!(
                    (!held.awaiting_snapshot || held.seq.is_some()) && held.gap_to.is_none(),
                    "gap before a snapshot: {} ({:?})",
                    m,
                    held
                );
                let (from, to) = (seq("from_seq"), seq("to_seq"));
                prop_assert!(to >= from);
                if m["reason"] == "ahead" {
                    prop_assert!(held.awaiting_resume, "gap ahead without a resume: {}", m);
                    prop_assert_eq!(Some(to), held.seq, "gap ahead ends at the seq resumed from: {}", m);
                    // The client drops what it holds past the gateway's newest event.
                    *held = Held { gap_to: Some(from - 1), channels: held.channels, ..Held::default() };
                    return Ok(());
                }
                let history = m["reason"] == "history";
                prop_assert!(
                    history == held.awaiting_resume || history && held.resumed,
                    "a gap \"history\" answers a resume or cuts its replay: {} ({:?})",
                    m,
                    held
                );
                // Right after what is held, but for the seqs of a channel not held.
                let h = held.seq.unwrap_or_default();
                prop_assert!(from > h, "gap starts after what is held: {}", m);
                let channels = held.channels.unwrap_or(Channels::ALL);
                let id: u32 = symbol[1..].parse().unwrap();
                for seq in h + 1..from {
                    prop_assert!(!channels.admits(&kind_of(quotes, id, seq)), "gap {} leaves {} out", m, seq);
                }
                held.gap_to = Some(to);
                held.awaiting_resume = false;
            }
            "trade" | "quote" => {
                let held = self.held.get(&symbol).copied().unwrap_or_default();
                prop_assert!(
                    held.seq.is_some() && !held.awaiting_snapshot && held.gap_to.is_none() && !held.awaiting_resume,
                    "event {} with {:?}",
                    m,
                    held
                );
                let h = held.seq.unwrap();
                let s = seq("seq");
                let conflated = m["conflated"].as_u64().unwrap_or(0);
                prop_assert!(kind == "quote" || conflated == 0);
                prop_assert!(s > h, "seq never goes back: held {}, got {}", h, m);
                let id: u32 = symbol[1..].parse().unwrap();
                let channels = held.channels.unwrap_or(Channels::ALL);
                let is_quote = |seq: u64| quotes.contains(&(id, seq));
                let kind_of = |seq: u64| kind_of(quotes, id, seq);
                prop_assert!(channels.admits(&kind_of(s)), "{} on channels {:?}", m, channels);
                // What is missing on the channels held: superseded quotes, as many as it says.
                let mut superseded = 0;
                for missing in (h + 1..s).filter(|&seq| channels.admits(&kind_of(seq))) {
                    prop_assert!(is_quote(missing), "seq {} superseded but not a quote: {}", missing, m);
                    superseded += 1;
                }
                prop_assert_eq!(superseded, conflated, "every missing seq is accounted for: held {}, got {}", h, m);
                self.held.get_mut(&symbol).unwrap().seq = Some(s);
                self.events.push((symbol, s));
            }
            "upstream_gap" => {
                let held = self.held.get(&symbol).copied().unwrap_or_default();
                prop_assert!(
                    held.seq.is_some() && !held.awaiting_snapshot && held.gap_to.is_none() && !held.awaiting_resume,
                    "notice {} with {:?}",
                    m,
                    held
                );
                prop_assert!(
                    seq("after_seq") >= held.seq.unwrap(),
                    "notice overtaken: {} after holding {:?}",
                    m,
                    held.seq
                );
            }
            "error" => {
                prop_assert!(m["id"].as_u64().is_some(), "errors answer a command: {}", m);
            }
            "symbols" | "subscriptions" => {}
            other => prop_assert!(false, "unexpected message {}: {}", other, m),
        }
        Ok(())
    }
}

/// The symbols of `mask`, one bit each, and a name not in the universe for bit 5.
fn names(mask: u8) -> String {
    let mut names: Vec<String> = (0..SYMBOLS).filter(|i| mask & (1 << i) != 0).map(|i| format!("\"S{i}\"")).collect();
    if mask & (1 << SYMBOLS) != 0 {
        names.push("\"NOPE\"".into());
    }
    names.join(",")
}

/// The `channels` field of a command, if any.
fn channels_field(channels: Option<Channels>) -> String {
    channels
        .map(|c| format!(",\"channels\":[{}]", c.names().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(",")))
        .unwrap_or_default()
}

fn run(policy: Policy, soft: usize, cap: u16, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut gw = Gateway::new(policy, soft, cap);
    let mut client = Client::default();
    let mut sent = Vec::new();
    for op in ops {
        let mut read = Vec::new();
        match op {
            Op::Subscribe { mask, policy, channels, max_rate } => {
                let policy = policy.map(|p| format!(",\"policy\":\"{}\"", p.as_str())).unwrap_or_default();
                let channels = channels_field(channels);
                let rate = max_rate.map(|r| format!(",\"max_rate\":{r}")).unwrap_or_default();
                sent.push(gw.command(format!(
                    "{{\"op\":\"subscribe\",\"symbols\":[{}]{policy}{channels}{rate}}}",
                    names(mask)
                )));
            }
            Op::Unsubscribe { mask, channels } => {
                let channels = channels_field(channels);
                sent.push(gw.command(format!("{{\"op\":\"unsubscribe\",\"symbols\":[{}]{channels}}}", names(mask))))
            }
            Op::Resume { mask, back, ahead, channels } => {
                let mut after = BTreeMap::new();
                let mut entries = Vec::new();
                for i in (0..SYMBOLS).filter(|i| mask & (1 << i) != 0) {
                    let head = gw.seq[i as usize];
                    let seq = if ahead { head + back + 1 } else { head.saturating_sub(back).max(1) };
                    after.insert(format!("S{i}"), seq);
                    entries.push(format!("{{\"symbol\":\"S{i}\",\"seq\":{seq}}}"));
                }
                if mask & (1 << SYMBOLS) != 0 {
                    entries.push("{\"symbol\":\"NOPE\",\"seq\":5}".to_string());
                }
                let channels = channels_field(channels);
                let id = gw.command(format!("{{\"op\":\"subscribe\",\"resume\":[{}]{channels}}}", entries.join(",")));
                client.resuming.insert(id, after);
                sent.push(id);
            }
            Op::Turn { slice } => gw.turn(slice),
            Op::ListSubscriptions => sent.push(gw.command("{\"op\":\"list_subscriptions\"}".into())),
            Op::ListSymbols => sent.push(gw.command("{\"op\":\"list_symbols\"}".into())),
            Op::Tick { symbol, trade } => gw.tick(symbol, trade),
            Op::Quotes { symbol, n } => (0..n).for_each(|_| gw.tick(symbol, false)),
            Op::UpstreamGap { symbol } => gw.upstream_gap(symbol),
            Op::Resync { symbol, skipped } => gw.resync(symbol, skipped),
            Op::Read(max) => gw.read(max, &mut read),
            Op::Stall { ms } => {
                gw.now += Duration::from_millis(ms);
                gw.release_due();
                gw.sweep();
            }
            Op::Elapse { ms } => {
                gw.now += Duration::from_millis(ms);
                gw.release_due();
            }
        }
        prop_assert!(
            gw.out.queue.queued_bytes() <= gw.budget.hard + CLOSE_SLACK,
            "{} bytes queued, hard limit {}",
            gw.out.queue.queued_bytes(),
            gw.budget.hard
        );
        client.absorb(&read, &gw.quotes)?;
    }
    // The client reads everything, while time passes for what rate caps hold back and the
    // replays advance.
    for _ in 0..10_000 {
        gw.now += Duration::from_millis(200);
        gw.release_due();
        gw.turn(256);
        let mut read = Vec::new();
        gw.read(usize::MAX, &mut read);
        client.absorb(&read, &gw.quotes)?;
        let done = gw.out.queue.is_empty() && (gw.closed || !gw.out.has_gaps());
        if done && gw.wheel.is_empty() && (gw.closed || gw.replays.is_empty()) {
            break;
        }
    }
    prop_assert!(gw.out.queue.is_empty() && (gw.closed || !gw.out.has_gaps()), "the queue drains");
    prop_assert!(client.buf.is_empty(), "whole frames only");
    prop_assert_eq!(client.closed, gw.closed);
    if !gw.closed {
        for id in &sent {
            prop_assert!(client.answered.contains(id), "command {} answered", id);
        }
        let held: BTreeSet<&str> = client.held.keys().map(String::as_str).collect();
        let subs: Vec<String> = gw.subs.iter().map(|s| gw.symbols.get(s).name.to_string()).collect();
        prop_assert_eq!(held, subs.iter().map(String::as_str).collect::<BTreeSet<_>>());
        for s in gw.subs.iter() {
            let name = &gw.symbols.get(s).name;
            let held = client.held[&**name];
            let channels = gw.index.channels_of(s, KEY).expect("held symbols are in the index");
            prop_assert_eq!(held.channels.unwrap_or(Channels::ALL), channels, "{} channels as stated", name);
            // Caught up: whatever came after the seq held is of a channel not held.
            let h = held.seq.expect("a snapshot was read");
            for seq in h + 1..=gw.seq[s.index()] {
                prop_assert!(
                    !gw.is_quote(s, seq) && channels == Channels::QUOTES
                        || gw.is_quote(s, seq) && channels == Channels::TRADES,
                    "{} caught up: holds {}, missed {} on {:?}",
                    name,
                    h,
                    seq,
                    channels
                );
            }
        }
    }
    Ok(())
}

proptest! {
    /// Any interleaving of commands, ticks, notices, resyncs, reads and stalls, under any
    /// policy and budget, keeps the contract. (`PROPTEST_CASES=20000` for a longer search.)
    #[test]
    fn the_connection_path_keeps_the_contract(
        policy in policy(),
        soft in prop_oneof![Just(700usize), Just(1500), Just(4000)],
        cap in prop_oneof![2 => Just(0u16), 1 => Just(10)],
        ops in prop::collection::vec(op(), 0..300),
    ) {
        run(policy, soft, cap, ops)?;
    }
}

/// The scenario that broke the contract: a conflating client past its soft limit re-subscribes
/// the symbols it holds, several times, then reads everything.
#[test]
fn re_subscribing_held_symbols_while_behind_keeps_the_contract() {
    let mut ops = vec![
        Op::Subscribe { mask: 0b111, policy: Some(Policy::Conflate), channels: None, max_rate: None },
        Op::Read(usize::MAX),
    ];
    for round in 0..6 {
        for symbol in 0..3 {
            ops.push(Op::Quotes { symbol, n: 30 });
            ops.push(Op::Tick { symbol, trade: round % 2 == 0 });
        }
        ops.push(Op::Subscribe { mask: 0b111, policy: None, channels: None, max_rate: None });
        ops.push(Op::UpstreamGap { symbol: round % 3 });
        ops.push(Op::Read(100));
    }
    run(Policy::Conflate, 700, 0, ops.clone()).unwrap();
    run(Policy::Drop, 700, 0, ops).unwrap();
}

/// Resumes that find the history whole, exhausted, and behind the client, in one run.
#[test]
fn resumes_are_whole_exhausted_or_ahead() {
    let resume = |mask, back, ahead| Op::Resume { mask, back, ahead, channels: None };
    let ops = vec![
        Op::Tick { symbol: 0, trade: true },
        Op::Quotes { symbol: 0, n: 5 },
        Op::Quotes { symbol: 1, n: 40 },
        resume(0b001, 3, false),
        resume(0b010, 30, false),
        resume(0b100, 2, true),
        Op::Turn { slice: 256 },
        Op::Read(usize::MAX),
    ];
    for policy in [Policy::Conflate, Policy::Drop, Policy::Disconnect] {
        run(policy, 4000, 0, ops.clone()).unwrap();
    }
    let mut gw = Gateway::new(Policy::Drop, 4000, 0);
    for _ in 0..6 {
        gw.tick(0, true);
    }
    gw.command("{\"op\":\"subscribe\",\"resume\":[{\"symbol\":\"S0\",\"seq\":3}]}".into());
    gw.turn(256);
    let mut read = Vec::new();
    gw.read(usize::MAX, &mut read);
    let text = String::from_utf8_lossy(&read);
    assert!(text.contains("\"type\":\"resumed\",\"symbol\":\"S0\",\"after_seq\":3,\"to_seq\":6"), "{text}");
    assert!(!text.contains("snapshot"), "{text}");
    assert_eq!((gw.counters.resumes_whole, gw.counters.replayed), (1, 3));
}

/// A resume of a name not in the universe alone (a case the search once found).
#[test]
fn resuming_an_unknown_symbol_alone_is_answered() {
    run(Policy::Conflate, 700, 0, vec![Op::Resume { mask: 32, back: 0, ahead: false, channels: None }]).unwrap();
}

/// A replay is spread over turns, a slice each; live ticks meanwhile join it in order, none
/// twice, and the subscription goes live once it has caught up.
#[test]
fn a_replay_goes_a_slice_a_turn_and_live_ticks_join_it() {
    let mut gw = Gateway::new(Policy::Drop, 1 << 20, 0);
    let big = HistoryLimits { events_per_symbol: 1000, bytes_per_symbol: 1 << 30, events: 1000, bytes: 1 << 30 };
    gw.history = History::new(gw.symbols.capacity(), big);
    for _ in 0..100 {
        gw.tick(0, true);
    }
    let mut client = Client::default();
    let id = gw.command("{\"op\":\"subscribe\",\"resume\":[{\"symbol\":\"S0\",\"seq\":10}]}".into());
    client.resuming.insert(id, BTreeMap::from([("S0".to_string(), 10)]));
    for turn in 0..20 {
        // Live ticks while replaying are not offered: the replay reads them from the history.
        gw.tick(0, turn % 2 == 0);
        let before = gw.counters.replayed;
        gw.turn(16);
        let mut read = Vec::new();
        gw.read(usize::MAX, &mut read);
        client.absorb(&read, &gw.quotes).unwrap();
        if gw.replays.is_empty() {
            assert!(!gw.index.is_paused(SymbolId(0), KEY), "live once caught up");
            break;
        }
        assert_eq!(gw.counters.replayed - before, 16, "one slice a turn");
        assert!(gw.index.is_paused(SymbolId(0), KEY));
    }
    assert!(gw.replays.is_empty(), "the replay caught up");
    gw.tick(0, true);
    let mut read = Vec::new();
    gw.read(usize::MAX, &mut read);
    client.absorb(&read, &gw.quotes).unwrap();
    let head = gw.seq[0];
    let seqs: Vec<u64> = client.events.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs, (11..=head).collect::<Vec<_>>(), "replay then live, no hole, none twice");
    assert_eq!(client.held["S0"].seq, Some(head));
}

/// History evicted under a replay's cursor: a gap "history" from the cursor on, a snapshot,
/// then live; a client that does not read gets its policy's answer.
#[test]
fn a_replay_outrun_by_the_history_is_cut_and_a_stalled_one_meets_its_policy() {
    let mut gw = Gateway::new(Policy::Conflate, 1 << 20, 0);
    for _ in 0..12 {
        gw.tick(1, true);
    }
    let mut client = Client::default();
    let id = gw.command("{\"op\":\"subscribe\",\"resume\":[{\"symbol\":\"S1\",\"seq\":2}]}".into());
    client.resuming.insert(id, BTreeMap::from([("S1".to_string(), 2)]));
    gw.turn(2);
    // 12 events a symbol are held: these push the cursor's next events out.
    for _ in 0..20 {
        gw.tick(1, true);
    }
    gw.turn(2);
    assert_eq!(gw.counters.replays_cut, 1);
    assert!(gw.replays.is_empty() && !gw.index.is_paused(SymbolId(1), KEY));
    gw.tick(1, false);
    let mut read = Vec::new();
    gw.read(usize::MAX, &mut read);
    client.absorb(&read, &gw.quotes).unwrap();
    let text = String::from_utf8_lossy(&read);
    assert!(
        text.contains("\"type\":\"gap\",\"symbol\":\"S1\",\"from_seq\":5,\"to_seq\":32,\"reason\":\"history\""),
        "{text}"
    );
    assert_eq!(client.held["S1"].seq, Some(gw.seq[1]));

    // Disconnect: the slice that takes the queue past its soft limit closes the connection.
    let mut gw = Gateway::new(Policy::Disconnect, 700, 0);
    for _ in 0..12 {
        gw.tick(2, true);
    }
    gw.command("{\"op\":\"subscribe\",\"resume\":[{\"symbol\":\"S2\",\"seq\":1}]}".into());
    gw.turn(256);
    assert!(gw.closed, "past the soft limit, disconnect");
    assert!(gw.replays.is_empty(), "the closed connection's replays are forgotten");
    // Drop and conflate: the replay stops at the soft limit and waits for the client to read;
    // reading, it gets all of it. One that never reads meets the write deadline.
    for policy in [Policy::Drop, Policy::Conflate] {
        let mut gw = Gateway::new(policy, 700, 0);
        for _ in 0..12 {
            gw.tick(3, true);
        }
        let mut client = Client::default();
        let id = gw.command("{\"op\":\"subscribe\",\"resume\":[{\"symbol\":\"S3\",\"seq\":1}]}".into());
        client.resuming.insert(id, BTreeMap::from([("S3".to_string(), 1)]));
        gw.turn(256);
        let queued = gw.out.queue.queued_bytes();
        assert!(gw.out.is_behind(&gw.budget) && !gw.replays.is_empty(), "{policy:?}");
        assert!(queued < gw.budget.soft + 200, "at most a frame past the soft limit: {queued}");
        gw.turn(256);
        assert_eq!(gw.out.queue.queued_bytes(), queued, "behind: the replay waits");
        assert!(!gw.out.has_gaps(), "nothing dropped");
        for _ in 0..5 {
            let mut read = Vec::new();
            gw.read(usize::MAX, &mut read);
            client.absorb(&read, &gw.quotes).unwrap();
            gw.turn(256);
        }
        assert_eq!(client.held["S3"].seq, Some(12), "{policy:?}: the whole replay");
        assert_eq!(client.events.len(), 11);
        gw.command("{\"op\":\"unsubscribe\",\"symbols\":[\"S3\"]}".into());
        for _ in 0..12 {
            gw.tick(4, true);
        }
        gw.command("{\"op\":\"subscribe\",\"resume\":[{\"symbol\":\"S4\",\"seq\":1}]}".into());
        gw.turn(256);
        gw.now += Duration::from_secs(11);
        gw.sweep();
        assert!(gw.closed, "{policy:?}: a client that never reads");
    }
}

/// Unsubscribing mid-replay ends it; subscribing again starts afresh; a channel added
/// mid-replay cuts it (gap "history", snapshot).
#[test]
fn unsubscribing_or_adding_a_channel_mid_replay() {
    let mut gw = Gateway::new(Policy::Drop, 1 << 20, 0);
    for _ in 0..12 {
        gw.tick(0, false);
    }
    let mut client = Client::default();
    let id = gw
        .command("{\"op\":\"subscribe\",\"resume\":[{\"symbol\":\"S0\",\"seq\":2}],\"channels\":[\"trades\"]}".into());
    client.resuming.insert(id, BTreeMap::from([("S0".to_string(), 2)]));
    gw.turn(3);
    assert_eq!(gw.counters.replayed, 0, "quotes are skipped on trades alone");
    gw.command("{\"op\":\"unsubscribe\",\"symbols\":[\"S0\"]}".into());
    assert!(gw.replays.is_empty());
    gw.command("{\"op\":\"subscribe\",\"symbols\":[\"S0\"]}".into());
    gw.tick(0, true);
    let mut read = Vec::new();
    gw.read(usize::MAX, &mut read);
    client.absorb(&read, &gw.quotes).unwrap();
    for _ in 0..12 {
        gw.tick(2, true);
    }
    let id = gw
        .command("{\"op\":\"subscribe\",\"resume\":[{\"symbol\":\"S2\",\"seq\":3}],\"channels\":[\"trades\"]}".into());
    client.resuming.insert(id, BTreeMap::from([("S2".to_string(), 3)]));
    gw.turn(2);
    gw.command("{\"op\":\"subscribe\",\"symbols\":[\"S2\"],\"channels\":[\"quotes\"]}".into());
    assert!(gw.replays.is_empty() && gw.counters.replays_cut == 1);
    let mut read = Vec::new();
    gw.read(usize::MAX, &mut read);
    client.absorb(&read, &gw.quotes).unwrap();
    let text = String::from_utf8_lossy(&read);
    assert!(text.contains("\"from_seq\":6,\"to_seq\":12,\"reason\":\"history\""), "{text}");
    assert_eq!(client.held["S2"].seq, Some(12));
    assert_eq!(client.held["S0"].seq, Some(gw.seq[0]));
}

/// A `subscribe` whose symbols are all refused changes nothing, its policy included; one that
/// subscribes something, or asks for no symbol, applies it.
#[test]
fn a_subscribe_refused_whole_leaves_the_policy_alone() {
    let mut gw = Gateway::new(Policy::Conflate, 4000, 0);
    gw.command("{\"op\":\"subscribe\",\"symbols\":[\"NOPE\"],\"policy\":\"drop\"}".into());
    assert_eq!(gw.out.policy, Policy::Conflate, "unknown symbols only");
    gw.command("{\"op\":\"subscribe\",\"symbols\":[\"S0\",\"S1\",\"S2\",\"S3\"]}".into());
    gw.command("{\"op\":\"subscribe\",\"symbols\":[\"S4\"],\"policy\":\"disconnect\"}".into());
    assert_eq!(gw.out.policy, Policy::Conflate, "over the maximum of subscriptions");
    gw.command("{\"op\":\"subscribe\",\"resume\":[{\"symbol\":\"NOPE\",\"seq\":3}],\"policy\":\"drop\"}".into());
    assert_eq!(gw.out.policy, Policy::Conflate, "a resume of unknown symbols only");
    gw.command("{\"op\":\"subscribe\",\"symbols\":[\"S0\",\"NOPE\"],\"policy\":\"drop\"}".into());
    assert_eq!(gw.out.policy, Policy::Drop, "S0 is subscribed (again)");
    gw.command("{\"op\":\"subscribe\",\"symbols\":[],\"policy\":\"disconnect\"}".into());
    assert_eq!(gw.out.policy, Policy::Disconnect, "the policy alone");
    let mut read = Vec::new();
    gw.read(usize::MAX, &mut read);
    let text = String::from_utf8_lossy(&read);
    assert_eq!(text.matches("\"type\":\"subscribed\"").count(), 3, "{text}");
}
