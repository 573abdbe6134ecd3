//! The connection path against a model of the client contract, sans IO.
//!
//! One connection's [`Session`] and outbox are driven the way a reactor drives them (commands
//! parsed by the real parser, ticks offered with `deliver_tick`, upstream notices, resyncs after
//! the reactor fell behind the feed, the announcement of dropped spans after each write, the
//! sweep's slow-consumer checks, the close of a slow consumer), under each slow-consumer policy,
//! while a client reads the bytes in pieces of any size. Every byte the client reads is decoded
//! and checked against the contract of docs/PROTOCOL.md, per symbol:
//!
//! - the first thing after `subscribed` for a symbol not held is its snapshot, or, when it was
//!   resumed after a seq, `resumed` from exactly that seq (then the events after it, no
//!   snapshot) or a gap from right after it ("history") or from the gateway's newest seq up to
//!   it ("ahead"), then a snapshot; re-subscribing a held symbol sends no snapshot, resumed or not;
//! - seq never goes back; an event's seq is exactly the one after what the client holds, plus
//!   the quotes its `conflated` says it superseded (all quotes);
//! - a gap starts right after what the client holds, and the next message about the symbol is
//!   a snapshot at or past its end;
//! - an `upstream_gap` is never overtaken by a later event (its `after_seq` is not behind what
//!   the client holds);
//! - nothing about a symbol arrives after its `unsubscribed`, until it is subscribed again;
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
    AssetClass, Budget, History, HistoryLimits, LastValueCache, Outbox, Policy, SubscriptionIndex, SymbolId,
    SymbolInfo, SymbolSet, SymbolTable, Tick, TickKind, Verdict,
};
use tickgate_protocol::{CloseCode, FrameBuilder, close_frame, message, parse_command};
use tickgate_server::session::{CommandLimits, Desk, Moment, Outcome, Session, deliver_tick};
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
    },
    Unsubscribe {
        mask: u8,
    },
    /// Subscribes the symbols of `mask`, resuming each after the gateway's seq less `back`
    /// (at least 1), or, `ahead`, after a seq `back` + 1 past it.
    Resume {
        mask: u8,
        back: u64,
        ahead: bool,
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
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![Just(Policy::Conflate), Just(Policy::Drop), Just(Policy::Disconnect)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..64, prop::option::weighted(0.2, policy())).prop_map(|(mask, policy)| Op::Subscribe { mask, policy }),
        1 => (1u8..64).prop_map(|mask| Op::Unsubscribe { mask }),
        2 => (1u8..64, prop_oneof![0u64..4, 4u64..40], prop::bool::weighted(0.15))
            .prop_map(|(mask, back, ahead)| Op::Resume { mask, back, ahead }),
        1 => Just(Op::ListSubscriptions),
        1 => Just(Op::ListSymbols),
        8 => (0..SYMBOLS, any::<bool>()).prop_map(|(symbol, trade)| Op::Tick { symbol, trade }),
        3 => (0..SYMBOLS, 1u32..40).prop_map(|(symbol, n)| Op::Quotes { symbol, n }),
        1 => (0..SYMBOLS).prop_map(|symbol| Op::UpstreamGap { symbol }),
        1 => (0..SYMBOLS, 1u64..5).prop_map(|(symbol, skipped)| Op::Resync { symbol, skipped }),
        4 => prop_oneof![1usize..64, 64usize..2000, Just(usize::MAX)].prop_map(Op::Read),
        1 => (1u64..6000).prop_map(|ms| Op::Stall { ms }),
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
    feed_lvc: LastValueCache,
    /// The reactor's history: small, so resumes find it exhausted too.
    history: History,
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
}

impl Gateway {
    fn new(policy: Policy, soft: usize) -> Self {
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
            feed_lvc: LastValueCache::new(n),
            history: History::new(
                n,
                HistoryLimits { events_per_symbol: 12, bytes_per_symbol: 1 << 20, events: 30, bytes: 1 << 20 },
            ),
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
        let limits = CommandLimits { max_subscriptions: 4, max_rate: 0 };
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
        if self.closed || !self.subscribed_here(id) {
            return;
        }
        let at = Moment { now: self.now, ms: 0 };
        let verdict = deliver_tick(&mut self.out, &tick, &frame, info, &mut self.builder, &self.budget, at);
        if verdict == Verdict::Disconnect {
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
        let outcome = desk.deliver_notice(out, id, notice);
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
        let outcome = desk.deliver_resync(out, id, &skipped);
        self.act(outcome);
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
    /// Subscribed resuming after `seq`: `resumed` or a gap comes next.
    awaiting_resume: bool,
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
                let resuming = m["id"].as_u64().and_then(|id| self.resuming.remove(&id)).unwrap_or_default();
                for name in names() {
                    let name = name.as_str().unwrap().to_string();
                    let new = !self.held.contains_key(&name);
                    let held = self.held.entry(name.clone()).or_default();
                    match resuming.get(&name) {
                        Some(&after) if new => {
                            *held = Held { seq: Some(after), awaiting_resume: true, ..Held::default() }
                        }
                        _ if held.seq.is_none() => held.awaiting_snapshot = true,
                        _ => {}
                    }
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
            }
            "unsubscribed" => {
                for name in names() {
                    self.held.remove(name.as_str().unwrap());
                }
            }
            "snapshot" => {
                let held = self.held.get_mut(&symbol);
                prop_assert!(held.is_some(), "snapshot of {} not subscribed: {}", symbol, m);
                let held = held.unwrap();
                let s = seq("seq");
                match (held.awaiting_snapshot, held.gap_to) {
                    (true, None) => {}
                    (false, Some(to)) => prop_assert!(s >= to, "snapshot {} older than its gap's end {}", s, to),
                    _ => prop_assert!(false, "snapshot not after a subscribe or a gap: {} ({:?})", m, held),
                }
                if let Some(h) = held.seq {
                    prop_assert!(s >= h, "snapshot {} older than held {}", s, h);
                }
                *held = Held { seq: Some(s), ..Held::default() };
            }
            "gap" => {
                let held = self.held.get_mut(&symbol);
                prop_assert!(held.is_some(), "gap of {} not subscribed: {}", symbol, m);
                let held = held.unwrap();
                prop_assert!(
                    !held.awaiting_snapshot && held.gap_to.is_none(),
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
                    *held = Held { gap_to: Some(from - 1), ..Held::default() };
                } else {
                    let history = m["reason"] == "history";
                    prop_assert_eq!(history, held.awaiting_resume, "a gap \"history\" answers a resume: {}", m);
                    prop_assert_eq!(Some(from), held.seq.map(|h| h + 1), "gap starts right after what is held: {}", m);
                    held.gap_to = Some(to);
                    held.awaiting_resume = false;
                }
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
                prop_assert_eq!(s, h + 1 + conflated, "every missing seq is accounted for: held {}, got {}", h, m);
                let id: u32 = symbol[1..].parse().unwrap();
                for missing in h + 1..s {
                    prop_assert!(quotes.contains(&(id, missing)), "seq {} superseded but not a quote: {}", missing, m);
                }
                self.held.get_mut(&symbol).unwrap().seq = Some(s);
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

fn run(policy: Policy, soft: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut gw = Gateway::new(policy, soft);
    let mut client = Client::default();
    let mut sent = Vec::new();
    for op in ops {
        let mut read = Vec::new();
        match op {
            Op::Subscribe { mask, policy } => {
                let policy = policy.map(|p| format!(",\"policy\":\"{}\"", p.as_str())).unwrap_or_default();
                sent.push(gw.command(format!("{{\"op\":\"subscribe\",\"symbols\":[{}]{policy}}}", names(mask))));
            }
            Op::Unsubscribe { mask } => {
                sent.push(gw.command(format!("{{\"op\":\"unsubscribe\",\"symbols\":[{}]}}", names(mask))))
            }
            Op::Resume { mask, back, ahead } => {
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
                let id = gw.command(format!("{{\"op\":\"subscribe\",\"resume\":[{}]}}", entries.join(",")));
                client.resuming.insert(id, after);
                sent.push(id);
            }
            Op::ListSubscriptions => sent.push(gw.command("{\"op\":\"list_subscriptions\"}".into())),
            Op::ListSymbols => sent.push(gw.command("{\"op\":\"list_symbols\"}".into())),
            Op::Tick { symbol, trade } => gw.tick(symbol, trade),
            Op::Quotes { symbol, n } => (0..n).for_each(|_| gw.tick(symbol, false)),
            Op::UpstreamGap { symbol } => gw.upstream_gap(symbol),
            Op::Resync { symbol, skipped } => gw.resync(symbol, skipped),
            Op::Read(max) => gw.read(max, &mut read),
            Op::Stall { ms } => {
                gw.now += Duration::from_millis(ms);
                gw.sweep();
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
    // The client reads everything.
    for _ in 0..10_000 {
        let mut read = Vec::new();
        gw.read(usize::MAX, &mut read);
        client.absorb(&read, &gw.quotes)?;
        if gw.out.queue.is_empty() && (gw.closed || !gw.out.has_gaps()) {
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
            prop_assert_eq!(client.held[&**name].seq, Some(gw.seq[s.index()]), "{} caught up", name);
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
        ops in prop::collection::vec(op(), 0..300),
    ) {
        run(policy, soft, ops)?;
    }
}

/// The scenario that broke the contract: a conflating client past its soft limit re-subscribes
/// the symbols it holds, several times, then reads everything.
#[test]
fn re_subscribing_held_symbols_while_behind_keeps_the_contract() {
    let mut ops = vec![Op::Subscribe { mask: 0b111, policy: Some(Policy::Conflate) }, Op::Read(usize::MAX)];
    for round in 0..6 {
        for symbol in 0..3 {
            ops.push(Op::Quotes { symbol, n: 30 });
            ops.push(Op::Tick { symbol, trade: round % 2 == 0 });
        }
        ops.push(Op::Subscribe { mask: 0b111, policy: None });
        ops.push(Op::UpstreamGap { symbol: round % 3 });
        ops.push(Op::Read(100));
    }
    run(Policy::Conflate, 700, ops.clone()).unwrap();
    run(Policy::Drop, 700, ops).unwrap();
}

/// Resumes that find the history whole, exhausted, and behind the client, in one run.
#[test]
fn resumes_are_whole_exhausted_or_ahead() {
    let ops = vec![
        Op::Tick { symbol: 0, trade: true },
        Op::Quotes { symbol: 0, n: 5 },
        Op::Quotes { symbol: 1, n: 40 },
        Op::Resume { mask: 0b001, back: 3, ahead: false },
        Op::Resume { mask: 0b010, back: 30, ahead: false },
        Op::Resume { mask: 0b100, back: 2, ahead: true },
        Op::Read(usize::MAX),
    ];
    for policy in [Policy::Conflate, Policy::Drop, Policy::Disconnect] {
        run(policy, 4000, ops.clone()).unwrap();
    }
    let mut gw = Gateway::new(Policy::Drop, 4000);
    for _ in 0..6 {
        gw.tick(0, true);
    }
    gw.command("{\"op\":\"subscribe\",\"resume\":[{\"symbol\":\"S0\",\"seq\":3}]}".into());
    let mut read = Vec::new();
    gw.read(usize::MAX, &mut read);
    let text = String::from_utf8_lossy(&read);
    assert!(text.contains("\"type\":\"resumed\",\"symbol\":\"S0\",\"after_seq\":3,\"to_seq\":6"), "{text}");
    assert!(!text.contains("snapshot"), "{text}");
    assert_eq!((gw.counters.resumes_whole, gw.counters.replayed), (1, 3));
}

/// One command replays at most `MAX_REPLAY_PER_COMMAND` events: a symbol past it gets a gap
/// "history" and a snapshot, the others of the command are still replayed.
#[test]
fn one_command_replays_a_bounded_number_of_events() {
    let mut gw = Gateway::new(Policy::Drop, 1 << 30);
    let limits =
        HistoryLimits { events_per_symbol: 1 << 20, bytes_per_symbol: 1 << 30, events: 1 << 20, bytes: 1 << 30 };
    gw.history = History::new(gw.symbols.capacity(), limits);
    let max = tickgate_server::session::MAX_REPLAY_PER_COMMAND;
    for _ in 0..max + 2 {
        gw.tick(0, true);
    }
    for _ in 0..10 {
        gw.tick(1, true);
    }
    gw.command(
        "{\"op\":\"subscribe\",\"resume\":[{\"symbol\":\"S1\",\"seq\":1},{\"symbol\":\"S0\",\"seq\":1}]}".into(),
    );
    assert_eq!((gw.counters.resumes_whole, gw.counters.resumes_history), (1, 1));
    assert_eq!(gw.counters.replayed, 9, "S1 replayed, S0 past the bound");
}
