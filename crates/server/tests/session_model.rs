//! The connection path against a model of the client contract, sans IO.
//!
//! One connection's [`Session`] and outbox are driven the way a reactor drives them (commands
//! parsed by the real parser, ticks offered with `deliver_tick`, upstream notices, resyncs after
//! the reactor fell behind the feed, the announcement of dropped spans after each write, the
//! sweep's slow-consumer checks, the close of a slow consumer), under each slow-consumer policy,
//! while a client reads the bytes in pieces of any size. Every byte the client reads is decoded
//! and checked against the contract of docs/PROTOCOL.md, per symbol:
//!
//! - the first thing after `subscribed` for a symbol not held is its snapshot; re-subscribing a
//!   held symbol sends no snapshot;
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
//! - a bandwidth cap: the client never gets more than the cap's bytes over the time elapsed
//!   plus one burst, and all of the above holds for what its policy does past the cap;
//! - `list_subscriptions` shows what the replies before it stated: the symbols held, their
//!   channels and rates, and the bandwidth cap;
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
    /// Empty: resumes are modelled in session_model_resume.rs.
    history: History,
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
    /// The connection's bandwidth cap, and the bytes the client has read.
    bandwidth: Option<u32>,
    bytes_read: usize,
}

impl Gateway {
    fn new(policy: Policy, soft: usize, cap: u16, bandwidth: Option<u32>) -> Self {
        let mut symbols = SymbolTable::new();
        for i in 0..SYMBOLS {
            let info =
                SymbolInfo { name: format!("S{i}").into(), class: AssetClass::Equity, price_scale: 2, size_scale: 0 };
            symbols.insert(info).unwrap();
        }
        let n = symbols.capacity();
        let now = Instant::now();
        let mut out = Outbox::new(policy, now);
        out.bandwidth.set(bandwidth, now);
        Self {
            symbols,
            lvc: LastValueCache::new(n),
            history: History::new(n, HistoryLimits { events_per_symbol: 0, bytes_per_symbol: 0, events: 0, bytes: 0 }),
            feed_lvc: LastValueCache::new(n),
            index: SubscriptionIndex::new(n),
            builder: FrameBuilder::new(),
            counters: TurnCounters::default(),
            budget: Budget { soft, hard: 3 * soft, write_deadline: Duration::from_secs(10) },
            out,
            subs: SymbolSet::new(),
            now,
            seq: vec![0; SYMBOLS as usize],
            quotes: BTreeSet::new(),
            next_id: 0,
            closed: false,
            cap,
            wheel: SlotWheel::new(),
            started: now,
            bandwidth,
            bytes_read: 0,
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

    /// Whether the fan-out offers this tick to the connection.
    fn offered(&self, tick: &Tick) -> bool {
        self.index.channels_of(tick.symbol, KEY).is_some_and(|c| c.admits(&tick.kind))
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
        if self.closed || !self.offered(&tick) {
            return;
        }
        let at = self.moment();
        let info = self.symbols.get(id);
        let frame = self.builder.text(|o| message::event(o, info, &tick, 0));
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
        if self.closed || !self.subscribed_here(id) {
            return;
        }
        let (mut desk, out) = self.desk();
        let skipped = desk.resync(id, from_seq, to_seq);
        let outcome = desk.deliver_resync(out, id, &skipped);
        self.act(outcome);
    }

    /// The client reads up to `max` bytes, within what the bandwidth cap allows; then, as the
    /// reactor's flush does, what the policy dropped is announced.
    fn read(&mut self, max: usize, sink: &mut Vec<u8>) -> Result<(), TestCaseError> {
        let allowed = self.out.write_allowance(self.now);
        let mut slices = [IoSlice::new(&[]); 16];
        let n = self.out.queue.io_slices_within(&mut slices, allowed);
        let mut taken = 0;
        for s in &slices[..n] {
            let take = s.len().min(max - taken);
            sink.extend_from_slice(&s[..take]);
            taken += take;
        }
        self.out.wrote(taken, self.now);
        self.bytes_read += taken;
        if let Some(rate) = self.bandwidth {
            let elapsed = self.now.duration_since(self.started).as_secs_f64();
            let bound = f64::from(rate) * elapsed + f64::from(rate / 4) + 1.0;
            prop_assert!(
                self.bytes_read as f64 <= bound,
                "{} bytes read in {:.3} s at {} B/s",
                self.bytes_read,
                elapsed,
                rate
            );
        }
        if !self.closed {
            let (mut desk, out) = self.desk();
            let outcome = desk.announce_gaps(out);
            self.act(outcome);
        }
        Ok(())
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
    /// The rate cap the last `subscribed` of the symbol stated.
    max_rate: Option<u64>,
    /// The channels held before a `subscribed` added one, until the snapshot that follows: a gap
    /// owed comes first, and the seqs before it the client did not get were of a channel it did
    /// not hold then.
    channels_before: Option<Channels>,
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
    /// The connection's bandwidth cap.
    bandwidth: Option<u32>,
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
                for name in names() {
                    let held = self.held.entry(name.as_str().unwrap().to_string()).or_default();
                    let before = held.channels.unwrap_or(Channels::NONE);
                    if held.seq.is_none() || !before.contains(wanted) {
                        held.awaiting_snapshot = true;
                        if held.seq.is_some() {
                            held.channels_before = held.channels_before.or(held.channels);
                        }
                    }
                    held.channels = Some(before.union(wanted));
                    held.max_rate = m["max_rate"].as_u64();
                }
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
                *held = Held { seq: Some(s), awaiting_snapshot: false, gap_to: None, channels_before: None, ..*held };
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
                // Right after what is held, but for the seqs of a channel not held.
                let h = held.seq.unwrap_or_default();
                prop_assert!(from > h, "gap starts after what is held: {}", m);
                let channels = held.channels_before.or(held.channels).unwrap_or(Channels::ALL);
                let id: u32 = symbol[1..].parse().unwrap();
                for seq in h + 1..from {
                    prop_assert!(!channels.admits(&kind_of(quotes, id, seq)), "gap {} leaves {} out", m, seq);
                }
                prop_assert!(to >= from);
                held.gap_to = Some(to);
            }
            "trade" | "quote" => {
                let held = self.held.get(&symbol).copied().unwrap_or_default();
                prop_assert!(
                    held.seq.is_some() && !held.awaiting_snapshot && held.gap_to.is_none(),
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
            }
            "upstream_gap" => {
                let held = self.held.get(&symbol).copied().unwrap_or_default();
                prop_assert!(
                    held.seq.is_some() && !held.awaiting_snapshot && held.gap_to.is_none(),
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
            "subscriptions" => {
                let listed = m["subscriptions"].as_array().expect("subscriptions listed");
                let shown: Vec<&str> = listed.iter().map(|s| s["symbol"].as_str().unwrap()).collect();
                let held: Vec<&str> = self.held.keys().map(String::as_str).collect();
                prop_assert_eq!(&shown, &held, "the symbols held, in the universe's order: {}", m);
                prop_assert_eq!(names(), listed.iter().map(|s| s["symbol"].clone()).collect::<Vec<_>>());
                for s in listed {
                    let held = self.held[s["symbol"].as_str().unwrap()];
                    prop_assert_eq!(stated_channels(s), held.channels.unwrap_or(Channels::ALL), "{}", m);
                    prop_assert_eq!(s["max_rate"].as_u64(), held.max_rate, "{}", m);
                }
                prop_assert_eq!(m["max_bytes_per_second"].as_u64(), self.bandwidth.map(u64::from), "{}", m);
            }
            "symbols" => {}
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

fn run(policy: Policy, soft: usize, cap: u16, bandwidth: Option<u32>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut gw = Gateway::new(policy, soft, cap, bandwidth);
    let mut client = Client { bandwidth, ..Client::default() };
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
            Op::ListSubscriptions => sent.push(gw.command("{\"op\":\"list_subscriptions\"}".into())),
            Op::ListSymbols => sent.push(gw.command("{\"op\":\"list_symbols\"}".into())),
            Op::Tick { symbol, trade } => gw.tick(symbol, trade),
            Op::Quotes { symbol, n } => (0..n).for_each(|_| gw.tick(symbol, false)),
            Op::UpstreamGap { symbol } => gw.upstream_gap(symbol),
            Op::Resync { symbol, skipped } => gw.resync(symbol, skipped),
            Op::Read(max) => gw.read(max, &mut read)?,
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
    // The client reads everything, while time passes for what rate caps hold back.
    for _ in 0..10_000 {
        gw.now += Duration::from_millis(200);
        gw.release_due();
        let mut read = Vec::new();
        gw.read(usize::MAX, &mut read)?;
        client.absorb(&read, &gw.quotes)?;
        if gw.out.queue.is_empty() && (gw.closed || !gw.out.has_gaps()) && gw.wheel.is_empty() {
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
        soft in prop_oneof![Just(700usize), Just(1500), Just(4000), Just(12_000)],
        cap in prop_oneof![2 => Just(0u16), 1 => Just(10)],
        bandwidth in prop_oneof![3 => Just(None), 1 => Just(Some(1_024u32)), 1 => Just(Some(20_000))],
        ops in prop::collection::vec(op(), 0..300),
    ) {
        run(policy, soft, cap, bandwidth, ops)?;
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
    run(Policy::Conflate, 700, 0, None, ops.clone()).unwrap();
    run(Policy::Drop, 700, 0, None, ops).unwrap();
}
