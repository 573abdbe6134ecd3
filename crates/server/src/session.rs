//! One connection's side of the protocol, sans IO: its commands (subscribe, unsubscribe,
//! list_symbols, list_subscriptions) and what the fan-out offers it (ticks, upstream notices,
//! resyncs, the announcement of what its policy dropped).
//!
//! The reactor owns the sockets and the clock; it lends a [`Session`] (the connection's
//! subscriptions and outbox) and a [`Desk`] (the reactor-wide symbols, last values, history,
//! replays under way, frame builder, budget, counters and `now`) for one call, and acts on the
//! [`Outcome`]: marks the connection for writing, or closes it as a slow consumer. Nothing here
//! reads a clock or touches a socket, so the whole connection path is driven in tests without a
//! network (crates/server/tests/session_model.rs). Resumes are replayed over many turns by
//! [`crate::replay`].
//!
//! The client's contract (docs/PROTOCOL.md, "The snapshot and stream contract") is kept by one
//! rule: a control frame about a symbol (a snapshot, a gap, an upstream notice) is queued only
//! after [`tickgate_core::Outbox::settle`] has ended the symbol's replaceable quote (so no newer
//! quote overtakes the frame) and the span the client is owed, if any, has been announced (a gap,
//! then a snapshot) — see [`Desk::settle`]. And every frame queued here counts against the byte
//! budget when it is queued: one that would take the queue past the hard limit is not queued,
//! and the outcome is [`Outcome::SlowConsumer`].
//!
//! Channels and rate caps: the fan-out offers a tick only to subscribers whose channels admit
//! it; [`deliver_tick`] holds back a quote above its subscription's rate (see
//! [`tickgate_core::throttle`]), and a quote held back is sent before any frame about its
//! symbol ([`Desk::settle`]) and before a trade of it, so the rule above still holds.

use std::borrow::Cow;
use std::time::Instant;

use tickgate_core::subscription::ConnKey;
use tickgate_core::{
    Budget, Channels, Frame, History, LastValueCache, Outbox, OverHardLimit, Policy, QuoteVerdict, Release, Since,
    SubscriptionIndex, SymbolId, SymbolInfo, SymbolSet, SymbolTable, Tick, Verdict,
};
use tickgate_protocol::{Command, ErrorCode, FrameBuilder, RequestId, Resume, message};

use crate::auth::Principal;
use crate::replay::{Cursor, Replays};
use crate::stats::TurnCounters;

/// What the reactor must do with the connection after a call.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing more than writing what was queued.
    Open,
    /// A frame would have taken its queue past the hard limit: close it as a slow consumer
    /// (1008), like a client that falls behind the ticks.
    SlowConsumer,
}

impl From<Result<(), OverHardLimit>> for Outcome {
    fn from(result: Result<(), OverHardLimit>) -> Self {
        match result {
            Ok(()) => Outcome::Open,
            Err(OverHardLimit) => Outcome::SlowConsumer,
        }
    }
}

/// A span of seqs the gateway itself skipped for every subscriber of a symbol (its reactor fell
/// behind the feed), with its `gap` and `snapshot` frames, built once and shared by every
/// subscriber that is owed nothing more ([`Desk::resync`] builds it).
#[derive(Debug, Clone)]
pub struct Skipped {
    pub from_seq: u64,
    pub to_seq: u64,
    /// The gap's reason: [`OVERLOAD`], or [`BUS`] on a cluster edge.
    reason: &'static str,
    gap: Frame,
    snapshot: Frame,
}

const OVERLOAD: &str = tickgate_feed::fanout::OVERLOAD;
/// A cluster edge could not read these events from the bus (`tickgate_bus::edge::GAP_REASON`).
pub(crate) const BUS: &str = "bus";
const SLOW_CONSUMER: &str = "slow_consumer";
/// A resume's `seq` is older than the history still held.
pub(crate) const HISTORY: &str = "history";
/// A resume's `seq` is past the newest event of the symbol here (the client saw another
/// stream, or the gateway restarted): the client drops what it holds past the snapshot.
const AHEAD: &str = "ahead";

/// The reactor-wide state a session call uses.
#[derive(Debug)]
pub struct Desk<'a> {
    pub symbols: &'a SymbolTable,
    /// Snapshots come from here: as of the last tick this reactor fanned out.
    pub lvc: &'a LastValueCache,
    /// What a resume replays: as of the same tick as `lvc`.
    pub history: &'a History,
    /// The resumes being replayed (see [`crate::replay`]).
    pub replays: &'a mut Replays,
    pub builder: &'a mut FrameBuilder,
    pub budget: Budget,
    pub counters: &'a mut TurnCounters,
    pub now: Instant,
}

/// One connection: its key in the reactor's index, its subscriptions, its outbox, and who it
/// is (with authentication on).
#[derive(Debug)]
pub struct Session<'a> {
    pub key: ConnKey,
    pub subs: &'a mut SymbolSet,
    pub out: &'a mut Outbox,
    pub principal: Option<&'a Principal>,
}

/// The reactor's clock for one turn: `now`, and the same in milliseconds since the reactor
/// started (the slot clock of the rate caps).
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    pub now: Instant,
    pub ms: u64,
}

/// Offers one live tick to a connection: the per-delivery path (no allocation unless the
/// connection is behind and conflating, or sends a quote that supersedes quotes its rate held
/// back: then one re-encoded frame).
#[inline]
pub fn deliver_tick(
    out: &mut Outbox,
    tick: &Tick,
    frame: &Frame,
    info: &SymbolInfo,
    builder: &mut FrameBuilder,
    budget: &Budget,
    at: Moment,
) -> Verdict {
    if !out.throttles.is_empty() {
        return deliver_throttled(out, tick, frame, info, builder, budget, at);
    }
    let deflate = out.deflate_max_len();
    out.offer(tick, frame, budget, at.now, |superseded| {
        builder.text_for(deflate, |o| message::event(o, info, tick, superseded))
    })
}

/// [`deliver_tick`] to a connection with rate caps: a quote above its subscription's rate is
/// held back; a trade first sends the quote held back, so seq never goes back.
#[inline(never)]
fn deliver_throttled(
    out: &mut Outbox,
    tick: &Tick,
    frame: &Frame,
    info: &SymbolInfo,
    builder: &mut FrameBuilder,
    budget: &Budget,
    at: Moment,
) -> Verdict {
    if tick.kind.is_trade() {
        if let Some(held) = out.throttles.take_held(tick.symbol) {
            if release(out, &held, info, builder, budget, at.now) == Verdict::Disconnect {
                return Verdict::Disconnect;
            }
        }
    } else {
        match out.throttles.on_quote(tick, at.ms) {
            None | Some(QuoteVerdict::Send) => {}
            Some(QuoteVerdict::Held { schedule_at }) => return Verdict::Throttled { schedule_at },
            Some(QuoteVerdict::Release(newest)) => return release(out, &newest, info, builder, budget, at.now),
        }
    }
    let deflate = out.deflate_max_len();
    out.offer(tick, frame, budget, at.now, |superseded| {
        builder.text_for(deflate, |o| message::event(o, info, tick, superseded))
    })
}

/// Sends a quote that supersedes quotes held back by its subscription's rate: a frame of its
/// own, saying how many.
pub fn release(
    out: &mut Outbox,
    r: &Release,
    info: &SymbolInfo,
    builder: &mut FrameBuilder,
    budget: &Budget,
    now: Instant,
) -> Verdict {
    let (quote, superseded) = (&r.quote, r.superseded);
    let deflate = out.deflate_max_len();
    let frame = builder.text_for(deflate, |o| message::event(o, info, quote, superseded));
    out.offer_superseding(quote, &frame, superseded, r.from_seq, budget, now, |total| {
        builder.text_for(deflate, |o| message::event(o, info, quote, total))
    })
}

impl Desk<'_> {
    /// Queues a control frame within the budget.
    pub(crate) fn push(&mut self, out: &mut Outbox, frame: Frame) -> Result<(), OverHardLimit> {
        out.push_within(frame, &self.budget, self.now)?;
        self.counters.replies += 1;
        Ok(())
    }

    /// Queues a gap for `from_seq..=to_seq` of `symbol`, then its snapshot.
    pub(crate) fn announce(
        &mut self,
        out: &mut Outbox,
        symbol: SymbolId,
        from_seq: u64,
        to_seq: u64,
        reason: &str,
    ) -> Result<(), OverHardLimit> {
        let info = self.symbols.get(symbol);
        let gap = self.builder.text_for(out.deflate_max_len(), |o| message::gap(o, info, from_seq, to_seq, reason));
        self.push(out, gap)?;
        out.gaps_sent = out.gaps_sent.saturating_add(1);
        self.push_snapshot(out, symbol)
    }

    fn push_snapshot(&mut self, out: &mut Outbox, symbol: SymbolId) -> Result<(), OverHardLimit> {
        let (info, values) = (self.symbols.get(symbol), self.lvc.get(symbol));
        let snapshot = self.builder.text_for(out.deflate_max_len(), |o| message::snapshot(o, info, values));
        self.push(out, snapshot)
    }

    /// The one way a control frame about `symbol` enters a queue: ends the symbol's replaceable
    /// quote, and announces the span the client is owed, widened to `skipped` (announced even
    /// when nothing was owed), as one gap followed by a snapshot. Returns whether it queued a
    /// snapshot; the caller then queues its own frame.
    pub fn settle(
        &mut self,
        out: &mut Outbox,
        symbol: SymbolId,
        skipped: Option<&Skipped>,
    ) -> Result<bool, OverHardLimit> {
        self.release_held(out, symbol)?;
        match (out.settle(symbol), skipped) {
            (None, None) => return Ok(false),
            (None, Some(s)) => {
                self.push(out, s.gap.clone())?;
                out.gaps_sent = out.gaps_sent.saturating_add(1);
                self.push(out, s.snapshot.clone())?;
            }
            (Some(owed), Some(s)) => {
                let info = self.symbols.get(symbol);
                let from_seq = owed.from_seq.min(s.from_seq);
                let gap = self
                    .builder
                    .text_for(out.deflate_max_len(), |o| message::gap(o, info, from_seq, s.to_seq, s.reason));
                self.push(out, gap)?;
                out.gaps_sent = out.gaps_sent.saturating_add(1);
                self.push(out, s.snapshot.clone())?;
            }
            (Some(owed), None) => {
                self.counters.slow_gaps_sent += 1;
                self.announce(out, symbol, owed.from_seq, owed.to_seq, SLOW_CONSUMER)?;
            }
        }
        Ok(true)
    }

    /// Sends the quote `symbol`'s rate holds back, if any: before a frame about the symbol.
    fn release_held(&mut self, out: &mut Outbox, symbol: SymbolId) -> Result<(), OverHardLimit> {
        if let Some(held) = out.throttles.take_held(symbol) {
            let info = self.symbols.get(symbol);
            if release(out, &held, info, self.builder, &self.budget, self.now) == Verdict::Disconnect {
                return Err(OverHardLimit);
            }
        }
        Ok(())
    }

    /// What a resync announces to every subscriber of `symbol`: the reactor skipped
    /// `from_seq..=to_seq`, and its last-value cache already holds the values after them.
    pub fn resync(&mut self, symbol: SymbolId, from_seq: u64, to_seq: u64) -> Skipped {
        self.resync_because(symbol, from_seq, to_seq, OVERLOAD)
    }

    /// [`Desk::resync`] for another `reason`: on a cluster edge, `bus` (events the edge could
    /// not read from the stream).
    pub fn resync_because(&mut self, symbol: SymbolId, from_seq: u64, to_seq: u64, reason: &'static str) -> Skipped {
        let (info, values) = (self.symbols.get(symbol), self.lvc.get(symbol));
        let gap = self.builder.text(|o| message::gap(o, info, from_seq, to_seq, reason));
        let snapshot = self.builder.text(|o| message::snapshot(o, info, values));
        Skipped { from_seq, to_seq, reason, gap, snapshot }
    }

    /// Announces what the connection's policy dropped, span by span, while its queue is below the
    /// soft limit (the rest waits for the next write).
    pub fn announce_gaps(&mut self, out: &mut Outbox) -> Outcome {
        while let Some(mut span) = out.next_gap(&self.budget) {
            // A quote held back by a rate cap came after the span (the event that opened it sent
            // what was held before): the snapshot supersedes it, so the gap covers it.
            if let Some(held) = out.throttles.take_held(span.symbol) {
                span.to_seq = span.to_seq.max(held.quote.seq);
            }
            self.counters.slow_gaps_sent += 1;
            if self.announce(out, span.symbol, span.from_seq, span.to_seq, SLOW_CONSUMER).is_err() {
                return Outcome::SlowConsumer;
            }
        }
        Outcome::Open
    }

    /// Resumes a symbol just subscribed after `seq`, the last of it the client holds: `resumed`,
    /// then every event after `seq` from the history, replayed over the next turns (see
    /// [`crate::replay`]: the subscription is paused meanwhile), with no snapshot; or, when the
    /// history does not reach back that far, a gap ("history") and a snapshot; or, for a `seq`
    /// past the newest event here, a gap ("ahead") from the newest event to `seq`, and a
    /// snapshot.
    fn resume(
        &mut self,
        out: &mut Outbox,
        index: &mut SubscriptionIndex,
        key: ConnKey,
        symbol: SymbolId,
        seq: u64,
    ) -> Result<(), OverHardLimit> {
        let head = self.lvc.get(symbol).seq;
        if seq > head {
            self.counters.resumes_ahead += 1;
            return self.announce(out, symbol, head + 1, seq, AHEAD);
        }
        match self.history.since(symbol, seq, head) {
            Since::NotHeld => {
                // On an edge, the stream may still hold them: the answer comes with its events.
                if self.fetch_resume(index, key, symbol, seq, head) {
                    return Ok(());
                }
                self.counters.resumes_history += 1;
                self.announce(out, symbol, seq + 1, head, HISTORY)
            }
            Since::Whole(_) => {
                self.counters.resumes_whole += 1;
                let info = self.symbols.get(symbol);
                let resumed = self.builder.text_for(out.deflate_max_len(), |o| message::resumed(o, info, seq, head));
                self.push(out, resumed)?;
                if seq < head {
                    // What was missed is replayed whole: a rate cap paces the live stream, not
                    // the replay; events of a channel the connection does not hold are skipped.
                    self.replays.set(key, symbol, Cursor { after: seq, sent: seq });
                    index.pause(symbol, key);
                }
                Ok(())
            }
        }
    }

    /// An `upstream_gap` notice for subscriber `key` of its symbol (none for a subscription
    /// whose replay is behind: the notice is about the newest event).
    pub fn deliver_notice(&mut self, out: &mut Outbox, key: ConnKey, symbol: SymbolId, notice: Frame) -> Outcome {
        let head = self.lvc.get(symbol).seq;
        if self.replays.get(key, symbol).is_some_and(|cursor| cursor.after < head) {
            return Outcome::Open;
        }
        self.counters.upstream_gaps_sent += 1;
        let queued = self.settle(out, symbol, None).and_then(|_| self.push(out, notice));
        queued.into()
    }

    /// The reactor fell behind the feed and skipped `skipped` of `symbol` (see [`Desk::resync`]):
    /// a gap (its reason: [`OVERLOAD`], or [`BUS`] on a cluster edge) and a snapshot for
    /// subscriber `key`. One still replaying gets the gap from its replay's cursor, which goes on
    /// after the span.
    pub fn deliver_resync(&mut self, out: &mut Outbox, key: ConnKey, symbol: SymbolId, skipped: &Skipped) -> Outcome {
        if skipped.reason == BUS {
            self.counters.bus_gaps_sent += 1;
        } else {
            self.counters.overload_gaps_sent += 1;
        }
        let Some(Cursor { after, sent }) = self.replays.get(key, symbol) else {
            return self.settle(out, symbol, Some(skipped)).map(|_| ()).into();
        };
        let to_seq = skipped.to_seq.max(after);
        self.replays.set(key, symbol, Cursor { after: to_seq, sent: to_seq });
        let info = self.symbols.get(symbol);
        let gap =
            self.builder.text_for(out.deflate_max_len(), |o| message::gap(o, info, sent + 1, to_seq, skipped.reason));
        let queued = self.settle(out, symbol, None).and_then(|_| self.push(out, gap)).and_then(|_| {
            out.gaps_sent = out.gaps_sent.saturating_add(1);
            self.push(out, skipped.snapshot.clone())
        });
        queued.into()
    }

    fn error<'s>(
        &mut self,
        out: &mut Outbox,
        id: Option<&RequestId>,
        code: ErrorCode,
        text: &str,
        symbols: impl IntoIterator<Item = &'s str>,
    ) -> Result<(), OverHardLimit> {
        self.counters.command_errors += 1;
        let frame = self.builder.text_for(out.deflate_max_len(), |o| message::error(o, id, code, text, symbols));
        self.push(out, frame)
    }
}

/// What a `subscribe` asks for besides its symbols.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    policy: Option<Policy>,
    channels: Option<Channels>,
    max_rate: Option<u16>,
}

/// The rate a subscription gets: the lower of what it asks for and the gateway's cap (`0`:
/// none), `0` when neither caps it.
fn effective_rate(asked: Option<u16>, cap: u16) -> u16 {
    match (asked, cap) {
        (None, cap) => cap,
        (Some(asked), 0) => asked,
        (Some(asked), cap) => asked.min(cap),
    }
}

/// The limits a command is checked against.
#[derive(Debug, Clone, Copy)]
pub struct CommandLimits {
    pub max_subscriptions: usize,
    /// The gateway's cap on updates per second per subscription (`limits.max_update_rate`),
    /// `0` for none.
    pub max_rate: u16,
}

impl Session<'_> {
    /// Executes one command (authentication is the reactor's: with it on, `auth` never reaches
    /// here) and queues its answer.
    ///
    /// Past the soft limit a client is behind: `subscribe`, `list_symbols` and
    /// `list_subscriptions` are refused with one short error `backlogged` and not executed
    /// (their answers could be large); `unsubscribe` is executed (it lightens the load).
    pub fn handle(
        &mut self,
        desk: &mut Desk<'_>,
        index: &mut SubscriptionIndex,
        limits: CommandLimits,
        id: Option<&RequestId>,
        command: &Command<'_>,
    ) -> Outcome {
        let large_answer =
            matches!(command, Command::Subscribe { .. } | Command::ListSymbols | Command::ListSubscriptions);
        let result = if large_answer && self.out.is_behind(&desk.budget) {
            let text = "your queue is past limits.outbound_soft_limit: this command was not executed; \
                        read what is queued, then send it again";
            desk.error(self.out, id, ErrorCode::Backlogged, text, [])
        } else {
            match command {
                Command::Subscribe { symbols, policy, channels, max_rate, resume } => {
                    let wanted = Wanted { policy: *policy, channels: *channels, max_rate: *max_rate };
                    self.subscribe(desk, index, limits, id, symbols, wanted, resume)
                }
                Command::Unsubscribe { symbols, channels } => self.unsubscribe(desk, index, id, symbols, *channels),
                Command::ListSymbols => {
                    let symbols = desk.symbols;
                    let frame = desk.builder.text_for(self.out.deflate_max_len(), |o| {
                        message::symbol_list(o, "symbols", id, symbols.iter().map(|(_, s)| &*s.name))
                    });
                    desk.push(self.out, frame)
                }
                Command::ListSubscriptions => {
                    let (symbols, out) = (desk.symbols, &*self.out);
                    let held: Vec<message::Held<'_>> = self
                        .subs
                        .iter()
                        .map(|s| message::Held {
                            symbol: &symbols.get(s).name,
                            channels: index.channels_of(s, self.key).unwrap_or(Channels::ALL),
                            max_rate: out.throttles.rate(s).unwrap_or(0),
                        })
                        .collect();
                    let cap = out.bandwidth.rate();
                    let frame = desk
                        .builder
                        .text_for(out.deflate_max_len(), |o| message::subscriptions(o, id, &held, out.policy, cap));
                    desk.push(self.out, frame)
                }
                Command::Auth { .. } => {
                    desk.error(self.out, id, ErrorCode::BadRequest, "authentication is not enabled on this gateway", [])
                }
            }
        };
        result.into()
    }

    /// Subscribes: answers `subscribed` with every symbol now held, then a snapshot for each
    /// symbol not held before and each held one that gains a channel, or, for one in `resume`,
    /// what [`Desk::resume`] sends. A symbol already held on the channels asked for is only
    /// acknowledged, resumed or not: its stream goes on where it is (no snapshot; what the client
    /// is owed still comes as a gap and a snapshot). Channels add up: a symbol held on trades and
    /// subscribed on quotes is then held on both.
    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &mut self,
        desk: &mut Desk<'_>,
        index: &mut SubscriptionIndex,
        limits: CommandLimits,
        id: Option<&RequestId>,
        names: &[Cow<'_, str>],
        Wanted { policy, channels, max_rate }: Wanted,
        resume: &[Resume<'_>],
    ) -> Result<(), OverHardLimit> {
        let mut resume_after: Vec<(SymbolId, u64)> =
            resume.iter().filter_map(|r| Some((desk.symbols.lookup(&r.symbol)?, r.seq))).collect();
        resume_after.sort_unstable();
        let names: Vec<Cow<'_, str>> = names.iter().chain(resume.iter().map(|r| &r.symbol)).cloned().collect();
        let (mut known, unknown) = resolve(desk.symbols, &names);
        let mut not_entitled = Vec::new();
        if let Some(principal) = self.principal {
            known.retain(|&s| {
                let entitled = principal.entitled(&desk.symbols.get(s).name);
                if !entitled {
                    not_entitled.push(s);
                }
                entitled
            });
        }
        let universe = desk.symbols.capacity();
        let max = limits.max_subscriptions;
        let mut refused = Vec::new();
        // Symbols not held before (`true`), and held ones that gain a channel: each gets a
        // snapshot (or, resumed, what `Desk::resume` sends).
        let mut added: Vec<(SymbolId, bool)> = Vec::new();
        let wanted = channels.unwrap_or(Channels::ALL);
        self.subs.reserve(known.len().min(max.saturating_sub(self.subs.len())), universe);
        known.retain(|&symbol| {
            if self.subs.contains(symbol) {
                let held = index.channels_of(symbol, self.key).unwrap_or(Channels::ALL);
                if !held.contains(wanted) {
                    index.set_channels(symbol, self.key, held.union(wanted));
                    added.push((symbol, false));
                }
                true
            } else if self.subs.len() < max {
                self.subs.insert(symbol, universe);
                index.add_on(symbol, self.key, wanted);
                added.push((symbol, true));
                true
            } else {
                refused.push(symbol);
                false
            }
        });
        // What a rate cap holds back of a symbol that gains a channel goes out before the answer
        // (a snapshot follows it).
        for &(symbol, _) in &added {
            desk.release_held(self.out, symbol)?;
        }
        // The rate of every symbol of the request is what the request says (none: the gateway's
        // cap alone); a quote held back under a cap lifted goes out first.
        let rate = effective_rate(max_rate, limits.max_rate);
        for &symbol in &known {
            if self.out.throttles.rate(symbol).unwrap_or(0) != rate {
                if let Some(held) = self.out.throttles.set(symbol, rate) {
                    let info = desk.symbols.get(symbol);
                    let verdict = release(self.out, &held, info, desk.builder, &desk.budget, desk.now);
                    if verdict == Verdict::Disconnect {
                        return Err(OverHardLimit);
                    }
                }
            }
        }
        // Answered with `subscribed` (which states the policy) when something was subscribed, or
        // nothing was asked; a request refused whole changes nothing, its policy included.
        if !known.is_empty() || (unknown.is_empty() && refused.is_empty() && not_entitled.is_empty()) {
            if let Some(policy) = policy {
                self.out.policy = policy;
            }
            let (symbols, policy) = (desk.symbols, self.out.policy);
            let frame = desk.builder.text_for(self.out.deflate_max_len(), |o| {
                message::subscribed(o, id, known.iter().map(|&s| &*symbols.get(s).name), policy);
                if let Some(channels) = channels {
                    message::with_channels(o, channels);
                }
                if rate > 0 {
                    message::with_max_rate(o, rate);
                }
            });
            desk.push(self.out, frame)?;
            for &(symbol, fresh) in &added {
                // A symbol still replaying that gains a channel: the replay ends, with a gap
                // ("history") over what it had not sent yet, and the snapshot.
                if !fresh && desk.cut_replay(self.out, index, self.key, symbol)? {
                    continue;
                }
                if desk.settle(self.out, symbol, None)? {
                    continue;
                }
                match resume_after.binary_search_by_key(&symbol, |&(s, _)| s) {
                    Ok(i) if fresh => desk.resume(self.out, index, self.key, symbol, resume_after[i].1)?,
                    _ => desk.push_snapshot(self.out, symbol)?,
                }
            }
        }
        if !not_entitled.is_empty() {
            desk.counters.not_entitled += not_entitled.len() as u64;
            let symbols = desk.symbols;
            let names: Vec<&str> = not_entitled.iter().map(|&s| &*symbols.get(s).name).collect();
            let text = format!("not entitled to {}", names.join(", "));
            desk.error(self.out, id, ErrorCode::NotEntitled, &text, names.iter().copied())?;
        }
        if !refused.is_empty() {
            desk.counters.subscriptions_refused += refused.len() as u64;
            let symbols = desk.symbols;
            let text = format!(
                "{} symbols not subscribed: a connection holds at most {max} (limits.max_subscriptions)",
                refused.len()
            );
            desk.error(
                self.out,
                id,
                ErrorCode::TooManySubscriptions,
                &text,
                refused.iter().map(|&s| &*symbols.get(s).name),
            )?;
        }
        self.reply_unknown(desk, id, &unknown)
    }

    /// Unsubscribes from `channels` of the symbols (none: both): answers `unsubscribed`. A symbol
    /// left with a channel stays held on it, its stream and what the client is owed unchanged;
    /// a symbol left with none is dropped, and what the client was still owed for it is
    /// forgotten (events of it queued before stay queued, ahead of the answer).
    fn unsubscribe(
        &mut self,
        desk: &mut Desk<'_>,
        index: &mut SubscriptionIndex,
        id: Option<&RequestId>,
        names: &[Cow<'_, str>],
        channels: Option<Channels>,
    ) -> Result<(), OverHardLimit> {
        let (known, unknown) = resolve(desk.symbols, names);
        let leaving = channels.unwrap_or(Channels::ALL);
        if !known.is_empty() || unknown.is_empty() {
            for &symbol in &known {
                let left = index.channels_of(symbol, self.key).map(|held| held.without(leaving));
                match left {
                    Some(left) if !left.is_empty() => {
                        // The answer is about the symbol: no quote queued before it may be
                        // replaced by one after it, and what the client is owed comes first.
                        desk.settle(self.out, symbol, None)?;
                        index.set_channels(symbol, self.key, left);
                    }
                    _ => {
                        if self.subs.remove(symbol) {
                            index.remove(symbol, self.key);
                        }
                        desk.replays.cancel(self.key, symbol);
                        let _ = self.out.settle(symbol);
                        // A quote held back is not sent: nothing of the symbol follows the answer.
                        let _ = self.out.throttles.set(symbol, 0);
                    }
                }
            }
            let symbols = desk.symbols;
            let frame = desk.builder.text_for(self.out.deflate_max_len(), |o| {
                message::symbol_list(o, "unsubscribed", id, known.iter().map(|&s| &*symbols.get(s).name));
                if let Some(channels) = channels {
                    message::with_channels(o, channels);
                }
            });
            desk.push(self.out, frame)?;
        }
        self.reply_unknown(desk, id, &unknown)
    }

    fn reply_unknown(
        &mut self,
        desk: &mut Desk<'_>,
        id: Option<&RequestId>,
        unknown: &[&str],
    ) -> Result<(), OverHardLimit> {
        if unknown.is_empty() {
            return Ok(());
        }
        let shown = unknown.iter().take(5).map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
        let more = if unknown.len() > 5 { format!(" and {} more", unknown.len() - 5) } else { String::new() };
        let text = format!("unknown symbols: {shown}{more}; list_symbols gives the universe");
        desk.error(self.out, id, ErrorCode::UnknownSymbol, &text, unknown.iter().copied())
    }
}

/// Splits requested names into known ids (deduplicated, in request order) and unknown names.
fn resolve<'a>(symbols: &SymbolTable, names: &'a [Cow<'a, str>]) -> (Vec<SymbolId>, Vec<&'a str>) {
    let mut known = Vec::with_capacity(names.len());
    let mut unknown = Vec::new();
    for name in names {
        match symbols.lookup(name) {
            Some(id) if !known.contains(&id) => known.push(id),
            Some(_) => {}
            None => unknown.push(name.as_ref()),
        }
    }
    (known, unknown)
}
