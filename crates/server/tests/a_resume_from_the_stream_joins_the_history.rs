//! An edge's resume older than its history, sans IO: one connection's `Session` and `Desk` with
//! a history of 8 events, the fetch thread's answers played by hand. What the client reads:
//! `resumed` and every event after its seq, contiguous, no repeat; or a gap. The real path
//! (a `nats-server`, a publisher, edges) is in `a_resume_older_than_the_history_comes_from_the_stream`.

use std::io::IoSlice;
use std::time::{Duration, Instant};

use serde_json::Value;
use tickgate_bus::fetch::{FetchAnswer, FetchRequest, Fetched};
use tickgate_core::subscription::ConnKey;
use tickgate_core::{
    AssetClass, Budget, Frame, History, HistoryLimits, LastValueCache, Outbox, Policy, SubscriptionIndex, SymbolId,
    SymbolInfo, SymbolSet, SymbolTable, Tick, TickKind,
};
use tickgate_feed::ingest::event_frame;
use tickgate_protocol::{FrameBuilder, parse_command};
use tickgate_server::replay::Replays;
use tickgate_server::resume_fetch::StreamFetches;
use tickgate_server::session::{CommandLimits, Desk, Outcome, Session};
use tickgate_server::stats::TurnCounters;

const KEY: ConnKey = 3;
const S: SymbolId = SymbolId(0);

macro_rules! desk {
    ($e:expr) => {
        Desk {
            symbols: &$e.symbols,
            lvc: &$e.lvc,
            history: &$e.history,
            replays: &mut $e.replays,
            builder: &mut $e.builder,
            budget: $e.budget,
            counters: &mut $e.counters,
            now: $e.now,
        }
    };
}

/// One reactor of an edge with one connection.
struct Edge {
    symbols: SymbolTable,
    lvc: LastValueCache,
    history: History,
    replays: Replays,
    index: SubscriptionIndex,
    builder: FrameBuilder,
    counters: TurnCounters,
    budget: Budget,
    out: Outbox,
    subs: SymbolSet,
    now: Instant,
    head: u64,
}

impl Edge {
    fn new() -> Self {
        let mut symbols = SymbolTable::new();
        let info = SymbolInfo { name: "AAPL".into(), class: AssetClass::Equity, price_scale: 2, size_scale: 0 };
        symbols.insert(info).unwrap();
        let n = symbols.capacity();
        let now = Instant::now();
        let limits = HistoryLimits { events_per_symbol: 8, bytes_per_symbol: 1 << 20, events: 100, bytes: 1 << 20 };
        Self {
            symbols,
            lvc: LastValueCache::new(n),
            history: History::new(n, limits),
            replays: Replays::with_stream(StreamFetches::new(0, 4, 1000)),
            index: SubscriptionIndex::new(n),
            builder: FrameBuilder::new(),
            counters: TurnCounters::default(),
            budget: Budget { soft: 1 << 20, hard: 4 << 20, write_deadline: Duration::from_secs(10) },
            out: Outbox::new(Policy::Conflate, now),
            subs: SymbolSet::new(),
            now,
            head: 0,
        }
    }

    /// Event `seq`: a trade when even, a quote when odd, with its live frame.
    fn event(&mut self, seq: u64) -> (Tick, Frame) {
        let kind = if seq % 2 == 0 {
            TickKind::Trade { price: 100 + seq as i64, size: 1 }
        } else {
            TickKind::Quote { bid: 99, bid_size: 1, ask: 101 + seq as i64, ask_size: 1 }
        };
        let tick = Tick { symbol: S, seq, ts: seq, gw_ts: seq, kind };
        let frame = event_frame(&mut self.builder, self.symbols.get(S), &tick);
        (tick, frame)
    }

    /// The feed goes on to `to`: into the last values and the history (the subscription is
    /// paused or absent in these tests, so the fan-out offers it nothing).
    fn feed_to(&mut self, to: u64) {
        for seq in self.head + 1..=to {
            let (tick, frame) = self.event(seq);
            self.lvc.record(&tick);
            self.history.record(&tick, &frame);
            assert!(self.index.channels(S).iter().all(|c| !c.admits(&tick.kind)), "paused");
        }
        self.head = to;
    }

    fn command(&mut self, json: &str) {
        let mut bytes = json.as_bytes().to_vec();
        let request = parse_command(&mut bytes).unwrap();
        let limits = CommandLimits { max_subscriptions: 10, max_rate: 0 };
        let mut desk = desk!(self);
        let mut session = Session { key: KEY, subs: &mut self.subs, out: &mut self.out, principal: None };
        let outcome = session.handle(&mut desk, &mut self.index, limits, request.id.as_ref(), &request.command);
        assert_eq!(outcome, Outcome::Open);
    }

    fn resume(&mut self, seq: u64, channels: &str) -> FetchRequest {
        self.command(&format!(r#"{{"op":"subscribe","resume":[{{"symbol":"AAPL","seq":{seq}}}]{channels},"id":1}}"#));
        let requests: Vec<FetchRequest> = self.replays.stream.outgoing.drain(..).collect();
        assert_eq!(requests.len(), 1, "one fetch asked for");
        requests[0]
    }

    fn answer(&mut self, request: &FetchRequest, fetched: Fetched) {
        let answer = FetchAnswer {
            key: request.key,
            symbol: request.symbol,
            token: request.token,
            after: request.after,
            fetched,
            next_stream_seq: 1234,
        };
        let mut desk = desk!(self);
        assert_eq!(desk.on_fetched(&mut self.out, &mut self.index, answer), Outcome::Open);
    }

    fn events(&mut self, seqs: std::ops::RangeInclusive<u64>) -> Fetched {
        Fetched::Events { events: seqs.map(|s| self.event(s)).collect(), hole: false }
    }

    /// Advances the replay as the reactor does, turn after turn, until it ends.
    fn replay_all(&mut self) {
        for _ in 0..1000 {
            if self.replays.get(KEY, S).is_none() {
                return;
            }
            let mut desk = desk!(self);
            let (outcome, _) = desk.advance_replay(&mut self.out, &mut self.index, KEY, S, 5);
            assert_eq!(outcome, Outcome::Open);
        }
        panic!("the replay never ended");
    }

    /// Every message queued, parsed (server frames are unmasked text frames).
    fn read(&mut self) -> Vec<Value> {
        let mut bytes = Vec::new();
        loop {
            let mut slices = [IoSlice::new(&[]); 64];
            let n = self.out.queue.io_slices_within(&mut slices, usize::MAX);
            if n == 0 {
                break;
            }
            let taken: usize = slices[..n].iter().map(|s| s.len()).sum();
            for s in &slices[..n] {
                bytes.extend_from_slice(s);
            }
            self.out.wrote(taken, self.now);
        }
        let mut messages = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let (len, header) = match bytes[at + 1] & 0x7f {
                126 => (u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize, 4),
                127 => (u64::from_be_bytes(bytes[at + 2..at + 10].try_into().unwrap()) as usize, 10),
                n => (n as usize, 2),
            };
            messages.push(serde_json::from_slice(&bytes[at + header..at + header + len]).unwrap());
            at += header + len;
        }
        messages
    }
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .filter(|m| m["type"] == "trade" || m["type"] == "quote")
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

fn types(messages: &[Value]) -> Vec<&str> {
    messages.iter().map(|m| m["type"].as_str().unwrap()).collect()
}

#[test]
fn fetched_events_then_the_history_then_live_contiguous_with_the_live_bytes() {
    let mut edge = Edge::new();
    edge.feed_to(30);
    let request = edge.resume(10, "");
    assert_eq!((request.after, request.up_to, request.from_stream_seq), (10, 30, 0));
    assert_eq!(types(&edge.read()), ["subscribed"], "nothing of the symbol while the stream is read");
    // Live events meanwhile go into the history only.
    edge.feed_to(33);
    let answer = edge.events(11..=25);
    edge.answer(&request, answer);
    edge.replay_all();
    let read = edge.read();
    assert_eq!(read[0], serde_json::json!({"type":"resumed","symbol":"AAPL","after_seq":10,"to_seq":33}));
    assert_eq!(seqs(&read), (11..=33).collect::<Vec<_>>(), "contiguous, no repeat: {read:?}");
    assert_eq!(read.len(), 1 + 23, "no gap, no snapshot");
    assert_eq!(edge.index.channels_of(S, KEY).map(|c| c.admits(&edge.event(34).0.kind)), Some(true), "live again");
    assert_eq!(edge.counters.resumes_stream, 1);
}

#[test]
fn the_history_moving_past_the_fetched_events_is_fetched_again_from_where_they_ended() {
    let mut edge = Edge::new();
    edge.feed_to(30);
    let request = edge.resume(10, "");
    assert_eq!(types(&edge.read()), ["subscribed"]);
    // The fetch took long: the history (8 events) now holds 33..=40, after 11..=30 fetched.
    edge.feed_to(40);
    let answer = edge.events(11..=30);
    edge.answer(&request, answer);
    let follow_up: Vec<FetchRequest> = edge.replays.stream.outgoing.drain(..).collect();
    assert_eq!(follow_up.len(), 1, "what came since is asked for");
    let follow_up = follow_up[0];
    assert_eq!((follow_up.after, follow_up.up_to, follow_up.from_stream_seq), (30, 40, 1234));
    assert!(edge.read().is_empty(), "still waiting");
    // The stale first answer, again: dropped.
    let answer = edge.events(11..=30);
    edge.answer(&request, answer);
    assert_eq!(edge.counters.resume_fetches_stale, 1);
    let answer = edge.events(31..=35);
    edge.answer(&follow_up, answer);
    edge.replay_all();
    let read = edge.read();
    assert_eq!(read[0], serde_json::json!({"type":"resumed","symbol":"AAPL","after_seq":10,"to_seq":40}));
    assert_eq!(seqs(&read), (11..=40).collect::<Vec<_>>());
    assert_eq!(read.len(), 31, "no gap, no snapshot");
}

#[test]
fn a_subscription_dropped_or_resumed_again_meanwhile_drops_the_stale_answer() {
    let mut edge = Edge::new();
    edge.feed_to(30);
    let first = edge.resume(10, "");
    edge.command(r#"{"op":"unsubscribe","symbols":["AAPL"],"id":2}"#);
    let answer = edge.events(11..=25);
    edge.answer(&first, answer);
    assert_eq!(edge.counters.resume_fetches_stale, 1);
    assert_eq!(types(&edge.read()), ["subscribed", "unsubscribed"], "nothing of the dropped subscription");
    // Resumed again from another seq: only its own answer counts.
    let second = edge.resume(12, "");
    assert_ne!(first.token, second.token);
    let answer = edge.events(11..=25);
    edge.answer(&first, answer);
    assert_eq!(edge.counters.resume_fetches_stale, 2);
    let answer = edge.events(13..=25);
    edge.answer(&second, answer);
    edge.replay_all();
    let read = edge.read();
    assert_eq!(read[1]["after_seq"], 12, "{read:?}");
    assert_eq!(seqs(&read), (13..=30).collect::<Vec<_>>());
}

#[test]
fn a_hole_in_the_stream_is_a_bus_gap_and_a_snapshot_after_the_events_before_it() {
    let mut edge = Edge::new();
    edge.feed_to(30);
    let request = edge.resume(10, "");
    let answer = Fetched::Events { events: (11..=15).map(|s| edge.event(s)).collect(), hole: true };
    edge.answer(&request, answer);
    edge.replay_all();
    let read = edge.read();
    assert_eq!(seqs(&read), (11..=15).collect::<Vec<_>>());
    let gap = &read[read.len() - 2];
    assert_eq!((gap["type"].as_str(), gap["reason"].as_str()), (Some("gap"), Some("bus")), "{read:?}");
    assert_eq!((gap["from_seq"].as_u64(), gap["to_seq"].as_u64()), (Some(16), Some(30)));
    assert_eq!(read[read.len() - 1]["type"], "snapshot");
    assert_eq!(read[read.len() - 1]["seq"], 30);
}

#[test]
fn the_stream_not_holding_them_or_unreachable_is_a_history_gap_and_a_snapshot() {
    let answers = [
        Fetched::NotRetained,
        Fetched::Unavailable,
        Fetched::Refused,
        Fetched::Events { events: Vec::new(), hole: false },
    ];
    for fetched in answers {
        let counted = match fetched {
            Fetched::Unavailable => (1, 0),
            Fetched::Refused => (0, 1),
            _ => (0, 0),
        };
        let mut edge = Edge::new();
        edge.feed_to(30);
        let request = edge.resume(10, "");
        edge.answer(&request, fetched);
        let read = edge.read();
        assert_eq!(types(&read), ["subscribed", "gap", "snapshot"], "{read:?}");
        assert_eq!((read[1]["reason"].as_str(), read[1]["from_seq"].as_u64()), (Some("history"), Some(11)));
        assert!(edge.replays.get(KEY, S).is_none());
        assert_eq!(edge.index.channels_of(S, KEY).map(|c| c.admits(&edge.event(31).0.kind)), Some(true));
        assert_eq!((edge.counters.resume_fetches_failed, edge.counters.resume_fetches_refused), counted);
        assert_eq!(edge.counters.resumes_history, 1);
    }
}

#[test]
fn a_resume_on_one_channel_replays_only_that_channels_fetched_events() {
    let mut edge = Edge::new();
    edge.feed_to(30);
    let request = edge.resume(10, r#","channels":["trades"]"#);
    let answer = edge.events(11..=25);
    edge.answer(&request, answer);
    edge.replay_all();
    let read = edge.read();
    assert!(read.iter().all(|m| m["type"] != "quote"), "{read:?}");
    assert_eq!(seqs(&read), (12..=30).step_by(2).collect::<Vec<_>>());
}

#[test]
fn a_channel_added_while_the_stream_is_read_ends_the_resume_with_a_history_gap() {
    let mut edge = Edge::new();
    edge.feed_to(30);
    let request = edge.resume(10, r#","channels":["trades"]"#);
    edge.command(r#"{"op":"subscribe","symbols":["AAPL"],"channels":["quotes"],"id":3}"#);
    let answer = edge.events(11..=25);
    edge.answer(&request, answer);
    let read = edge.read();
    assert_eq!(types(&read), ["subscribed", "subscribed", "gap", "snapshot"], "{read:?}");
    assert_eq!(read[2]["reason"], "history");
    assert_eq!(edge.counters.resume_fetches_stale, 1, "the answer came too late");
}

#[test]
fn a_connection_closed_while_the_stream_is_read_leaves_nothing_behind() {
    let mut edge = Edge::new();
    edge.feed_to(30);
    let request = edge.resume(10, "");
    edge.read();
    // What the reactor does when the connection goes (its key may be reused).
    edge.replays.forget_connection(KEY);
    edge.index.remove(S, KEY);
    assert_eq!(edge.replays.stream.in_flight(), 0);
    let answer = edge.events(11..=25);
    edge.answer(&request, answer);
    assert_eq!(edge.counters.resume_fetches_stale, 1);
    assert!(edge.read().is_empty());
    assert!(edge.replays.is_empty());
}

#[test]
fn the_history_evicted_while_fetched_events_go_out_slowly_ends_the_replay_with_a_history_gap() {
    let mut edge = Edge::new();
    edge.feed_to(30);
    let request = edge.resume(10, "");
    let answer = edge.events(11..=25);
    edge.answer(&request, answer);
    let mut desk = desk!(edge);
    let (_, walked) = desk.advance_replay(&mut edge.out, &mut edge.index, KEY, S, 5);
    assert_eq!(walked, 5);
    // The client reads slowly: the history moves on past 25 meanwhile.
    edge.feed_to(45);
    edge.replay_all();
    let read = edge.read();
    assert_eq!(seqs(&read), (11..=25).collect::<Vec<_>>(), "what was fetched goes out whole");
    let gap = &read[read.len() - 2];
    assert_eq!(
        (gap["reason"].as_str(), gap["from_seq"].as_u64(), gap["to_seq"].as_u64()),
        (Some("history"), Some(26), Some(45))
    );
    assert_eq!(read[read.len() - 1]["seq"], 45, "then a snapshot");
}

#[test]
fn a_resync_while_fetched_events_wait_skips_those_it_covered() {
    let mut edge = Edge::new();
    edge.feed_to(30);
    let request = edge.resume(10, "");
    let answer = edge.events(11..=25);
    edge.answer(&request, answer);
    let mut desk = desk!(edge);
    let (_, walked) = desk.advance_replay(&mut edge.out, &mut edge.index, KEY, S, 5);
    assert_eq!(walked, 5);
    // The reactor skipped 31..=40 (it fell behind the feed): every subscriber gets a gap and a
    // snapshot, the replay's from its cursor on.
    edge.feed_to(40);
    let mut desk = desk!(edge);
    let skipped = desk.resync_because(S, 31, 40, "gateway_overload");
    assert_eq!(desk.deliver_resync(&mut edge.out, KEY, S, &skipped), Outcome::Open);
    edge.history.forget(S);
    edge.feed_to(42);
    edge.replay_all();
    let read = edge.read();
    let events = seqs(&read);
    assert_eq!(events, [11, 12, 13, 14, 15, 41, 42], "nothing the gap covered comes after it: {read:?}");
    let gap = read.iter().find(|m| m["type"] == "gap").unwrap();
    assert_eq!((gap["from_seq"].as_u64(), gap["to_seq"].as_u64()), (Some(16), Some(40)));
}
