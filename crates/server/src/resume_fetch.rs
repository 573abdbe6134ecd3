//! Resumes older than the history, read from the stream (a cluster's edge), sans IO.
//!
//! [`Desk::resume`](crate::session) finds the history does not reach back to the client's
//! `seq`; on an edge it asks the stream instead ([`StreamFetches::start`]): the subscription is
//! paused with a replay cursor at the client's `seq`, *awaiting* an answer, and a
//! [`FetchRequest`] waits in [`StreamFetches::outgoing`] for the reactor to hand it to the fetch
//! thread (`tickgate_bus::fetch`). Live events go on into the history meanwhile, and the client
//! gets nothing of the symbol, as during a replay. The answer ([`Desk::on_fetched`]):
//!
//! - events `seq + 1 ..= F` that the history continues (it holds `F + 1` to the newest): the
//!   client gets `resumed`, then those events, then the history's, then live, through the
//!   replay cursor ([`crate::replay`]), which takes them from [`StreamFetches`] first. The
//!   history evicting past `F` while they go out cuts the replay as usual (a gap `history`);
//! - events the history no longer continues (it moved on while they were read): they are kept,
//!   and what came since is asked for from where they ended, up to [`ROUNDS`] requests;
//! - events that end at a seq the stream skips (the publisher did not publish it): they are
//!   replayed, then a gap `bus` from the first seq not sent to the newest, and a snapshot, as
//!   the live edge announces a skip;
//! - anything else (the stream no longer holds the events, could not be read, or the rounds or
//!   `bus.resume_fetch_max_events` ran out): a gap `history` and a snapshot, as without the
//!   stream.
//!
//! An answer carries the token of its request: one for a subscription that went away, or was
//! resumed again, meanwhile is dropped. A request the fetch thread does not answer within
//! [`FETCH_DEADLINE`] is answered [`Fetched::Unavailable`] by the reactor's sweep. At most
//! `bus.resume_fetches_per_reactor` fetches are in flight per reactor and
//! [`FETCHES_PER_CONNECTION`] per connection; a resume past either gets its gap at once
//! (counted).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use tickgate_bus::fetch::{FetchAnswer, FetchRequest, Fetched};
use tickgate_core::subscription::ConnKey;
use tickgate_core::{Frame, History, Outbox, Since, SubscriptionIndex, SymbolId, Tick};
use tickgate_protocol::message;

use crate::session::{Desk, HISTORY, Outcome};

/// Most fetches one connection has in flight.
pub const FETCHES_PER_CONNECTION: usize = 4;
/// How long a reactor waits for an answer before it answers the resume itself.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(10);

/// Events read from the stream, waiting to be replayed before the history's.
#[derive(Debug, Default)]
pub struct Pending {
    pub events: VecDeque<(Tick, Frame)>,
    /// The stream skips the seq after the last event: a gap `bus` follows them.
    pub hole: bool,
}

#[derive(Debug, Clone, Copy)]
struct Awaiting {
    token: u64,
    deadline: Instant,
    /// Where the replay cursor stood when the first request was made.
    cursor: u64,
    /// Requests made for this resume so far (a fetch whose events the history moved past
    /// meanwhile is followed by one for what came since).
    round: u8,
}

/// One reactor's fetches from the stream.
#[derive(Debug, Default)]
pub struct StreamFetches {
    /// This reactor's id and its bound on fetches in flight; `None`: not an edge (no fetch).
    limit: Option<(usize, usize)>,
    /// Most events fetched for one resume, over its rounds.
    max_events: usize,
    awaiting: BTreeMap<(ConnKey, SymbolId), Awaiting>,
    pending: BTreeMap<(ConnKey, SymbolId), Pending>,
    /// Requests for the reactor to hand to the fetch thread.
    pub outgoing: Vec<FetchRequest>,
    next_token: u64,
}

impl StreamFetches {
    /// Fetches for reactor `reactor`, at most `in_flight` at once (0: none), at most
    /// `max_events` events for one resume.
    pub fn new(reactor: usize, in_flight: usize, max_events: usize) -> Self {
        Self { limit: (in_flight > 0).then_some((reactor, in_flight)), max_events, ..Self::default() }
    }

    pub fn in_flight(&self) -> usize {
        self.awaiting.len()
    }

    /// Asks for `key`'s events of `symbol` in `after + 1 ..= up_to`; false when this reactor
    /// does not fetch or is at a bound.
    pub fn start(&mut self, key: ConnKey, symbol: SymbolId, after: u64, up_to: u64, now: Instant) -> bool {
        let Some((reactor, in_flight)) = self.limit else { return false };
        let mine = self.awaiting.range((key, SymbolId(0))..=(key, SymbolId(u32::MAX))).count();
        if self.awaiting.len() >= in_flight || mine >= FETCHES_PER_CONNECTION {
            return false;
        }
        let awaiting = Awaiting { token: 0, deadline: now + FETCH_DEADLINE, cursor: after, round: 1 };
        let request = FetchRequest { reactor, key, symbol, token: 0, after, up_to, from_stream_seq: 0, deadline: now };
        self.request(request, awaiting);
        true
    }

    fn request(&mut self, request: FetchRequest, awaiting: Awaiting) {
        self.next_token = self.next_token.wrapping_add(1);
        let token = self.next_token;
        let (key, symbol) = (request.key, request.symbol);
        self.awaiting.insert((key, symbol), Awaiting { token, ..awaiting });
        self.outgoing.push(FetchRequest { token, deadline: awaiting.deadline, ..request });
    }

    /// Asks for what came after `after` (the events already fetched end there, before stream
    /// sequence `from_stream_seq`), as round `round` of a resume whose cursor is at `cursor`.
    /// The resume keeps its first request's deadline: every round together answers within
    /// [`FETCH_DEADLINE`].
    fn follow_up(&mut self, request: FetchRequest, deadline: Instant, cursor: u64, round: u8) {
        let Some((reactor, _)) = self.limit else { return };
        self.request(FetchRequest { reactor, ..request }, Awaiting { token: 0, deadline, cursor, round });
    }

    pub fn is_awaiting(&self, key: ConnKey, symbol: SymbolId) -> bool {
        self.awaiting.contains_key(&(key, symbol))
    }

    /// Whether `token` is the one awaited for `key`'s `symbol` (it is then no longer awaited):
    /// where the cursor stood when it was first asked, and the round.
    fn answered(&mut self, key: ConnKey, symbol: SymbolId, token: u64) -> Option<(u64, u8, Instant)> {
        match self.awaiting.get(&(key, symbol)) {
            Some(a) if a.token == token => {
                self.awaiting.remove(&(key, symbol)).map(|a| (a.cursor, a.round, a.deadline))
            }
            _ => None,
        }
    }

    /// The fetches past their deadline at `now`, as answers to handle like the thread's.
    pub fn expired(&self, now: Instant, into: &mut Vec<FetchAnswer>) {
        into.extend(self.awaiting.iter().filter(|(_, a)| a.deadline <= now).map(|(&(key, symbol), a)| FetchAnswer {
            key,
            symbol,
            token: a.token,
            after: 0,
            fetched: Fetched::Unavailable,
            next_stream_seq: 0,
        }));
    }

    pub(crate) fn take_pending(&mut self, key: ConnKey, symbol: SymbolId) -> Option<Pending> {
        self.pending.remove(&(key, symbol))
    }

    pub(crate) fn put_pending(&mut self, key: ConnKey, symbol: SymbolId, pending: Pending) {
        self.pending.insert((key, symbol), pending);
    }

    /// Forgets what `key` awaits or holds of `symbol`.
    pub fn cancel(&mut self, key: ConnKey, symbol: SymbolId) {
        self.awaiting.remove(&(key, symbol));
        self.pending.remove(&(key, symbol));
    }

    /// Forgets every fetch of a connection that is closing.
    pub fn forget_connection(&mut self, key: ConnKey) {
        let range = (key, SymbolId(0))..=(key, SymbolId(u32::MAX));
        let mine: Vec<_> = self.awaiting.range(range.clone()).map(|(&k, _)| k).collect();
        for k in mine {
            self.awaiting.remove(&k);
        }
        let mine: Vec<_> = self.pending.range(range).map(|(&k, _)| k).collect();
        for k in mine {
            self.pending.remove(&k);
        }
    }
}

/// Most requests for one resume: a fetch whose events the history moved past meanwhile is
/// followed by one for what came since, this many times at most.
pub const ROUNDS: u8 = 8;

/// What to do with the events fetched after a resume's `after`.
#[derive(Debug)]
pub enum Splice {
    /// Replay them, then the history (or, after a hole, a gap `bus`).
    Ready(Pending),
    /// Contiguous, but the history no longer holds what follows them (it moved on while they
    /// were read): fetch what came since, after them.
    More(Pending),
    /// They do not join: a gap `history`.
    No,
}

/// What of `fetched` (the events after `after`) to replay before the history, whose newest
/// event of `symbol` is `head`.
pub fn splice(after: u64, head: u64, fetched: Fetched, history: &History, symbol: SymbolId) -> Splice {
    let Fetched::Events { events, mut hole } = fetched else { return Splice::No };
    let mut expected = after;
    let mut events: VecDeque<(Tick, Frame)> = events.into();
    for (tick, _) in &events {
        let Some(next) = expected.checked_add(1) else { return Splice::No };
        expected = next;
        if tick.seq != expected || tick.symbol != symbol {
            return Splice::No;
        }
    }
    // Never past what the reactor holds (it asked for no more).
    if events.back().is_some_and(|(t, _)| t.seq > head) {
        events.retain(|(t, _)| t.seq <= head);
        hole = false;
    }
    let last = events.back().map_or(after, |(t, _)| t.seq);
    if events.is_empty() && !hole {
        return Splice::No;
    }
    if hole || last >= head {
        return Splice::Ready(Pending { events, hole });
    }
    match history.since(symbol, last, head) {
        Since::Whole(_) => Splice::Ready(Pending { events, hole }),
        Since::NotHeld => Splice::More(Pending { events, hole }),
    }
}

impl Desk<'_> {
    /// Starts reading the stream for a resume of `symbol` after `seq` the history does not
    /// reach back to (`seq` below the newest, `head`); false when this reactor does not fetch,
    /// or is at a bound (counted), and the caller answers as without the stream.
    pub(crate) fn fetch_resume(
        &mut self,
        index: &mut SubscriptionIndex,
        key: ConnKey,
        symbol: SymbolId,
        seq: u64,
        head: u64,
    ) -> bool {
        if self.replays.stream.limit.is_none() {
            return false;
        }
        if !self.replays.stream.start(key, symbol, seq, head, self.now) {
            self.counters.resume_fetches_refused += 1;
            return false;
        }
        self.replays.set(key, symbol, crate::replay::Cursor { after: seq, sent: seq });
        index.pause(symbol, key);
        true
    }

    /// Acts on the fetch thread's answer (or the sweep's, past the deadline) for connection
    /// `answer.key`, whose outbox is `out` (see the module's documentation).
    pub fn on_fetched(&mut self, out: &mut Outbox, index: &mut SubscriptionIndex, answer: FetchAnswer) -> Outcome {
        let FetchAnswer { key, symbol, token, after: _, fetched, next_stream_seq } = answer;
        let Some((cursor_at, round, deadline)) = self.replays.stream.answered(key, symbol, token) else {
            self.counters.resume_fetches_stale += 1;
            return Outcome::Open;
        };
        match fetched {
            Fetched::Unavailable => self.counters.resume_fetches_failed += 1,
            Fetched::Refused => self.counters.resume_fetches_refused += 1,
            Fetched::Events { .. } | Fetched::NotRetained => {}
        }
        // What earlier rounds fetched comes first.
        let earlier = self.replays.stream.take_pending(key, symbol);
        let Some(cursor) = self.replays.get(key, symbol) else { return Outcome::Open };
        if index.channels_of(symbol, key).is_none() {
            self.replays.cancel(key, symbol);
            return Outcome::Open;
        }
        if cursor.after != cursor_at {
            // A resync moved the replay on meanwhile (its gap and snapshot went out): it goes
            // on from the history.
            return Outcome::Open;
        }
        let fetched = match (earlier, fetched) {
            (Some(earlier), Fetched::Events { events, hole }) => {
                let mut all: Vec<(Tick, Frame)> = earlier.events.into();
                all.extend(events);
                Fetched::Events { events: all, hole }
            }
            (_, fetched) => fetched,
        };
        let head = self.lvc.get(symbol).seq;
        let after = cursor.after;
        match splice(after, head, fetched, self.history, symbol) {
            Splice::More(pending) if round < ROUNDS && pending.events.len() < self.replays.stream.max_events => {
                let last = pending.events.back().map_or(after, |(t, _)| t.seq);
                self.replays.stream.put_pending(key, symbol, pending);
                let request = FetchRequest {
                    reactor: 0,
                    key,
                    symbol,
                    token: 0,
                    after: last,
                    up_to: head,
                    from_stream_seq: next_stream_seq,
                    deadline,
                };
                self.replays.stream.follow_up(request, deadline, cursor_at, round + 1);
                Outcome::Open
            }
            Splice::Ready(pending) => {
                self.counters.resumes_stream += 1;
                let info = self.symbols.get(symbol);
                let resumed = self.builder.text_for(out.deflate_max_len(), |o| message::resumed(o, info, after, head));
                if self.push(out, resumed).is_err() {
                    return Outcome::SlowConsumer;
                }
                self.replays.stream.put_pending(key, symbol, pending);
                Outcome::Open
            }
            Splice::More(_) | Splice::No => {
                self.counters.resumes_history += 1;
                self.finish_replay(index, key, symbol);
                self.announce(out, symbol, after.saturating_add(1), head, HISTORY).into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickgate_core::{HistoryLimits, TickKind};

    fn tick(seq: u64) -> Tick {
        Tick { symbol: SymbolId(0), seq, ts: 0, gw_ts: 0, kind: TickKind::Trade { price: 1, size: 1 } }
    }

    fn events(seqs: impl IntoIterator<Item = u64>) -> Vec<(Tick, Frame)> {
        seqs.into_iter().map(|s| (tick(s), Frame::from_bytes(b"f"))).collect()
    }

    fn history(seqs: std::ops::RangeInclusive<u64>) -> History {
        let limits = HistoryLimits { events_per_symbol: 100, bytes_per_symbol: 1 << 20, events: 100, bytes: 1 << 20 };
        let mut h = History::new(1, limits);
        for s in seqs {
            h.record(&tick(s), &Frame::from_bytes(b"f"));
        }
        h
    }

    /// `Some` when ready, with the seqs and the hole; "more" for [`Splice::More`].
    fn spliced(after: u64, head: u64, fetched: Fetched, h: &History) -> Option<(Vec<u64>, bool)> {
        match splice(after, head, fetched, h, SymbolId(0)) {
            Splice::Ready(p) => Some((p.events.iter().map(|(t, _)| t.seq).collect(), p.hole)),
            Splice::More(_) | Splice::No => None,
        }
    }

    fn more(after: u64, head: u64, fetched: Fetched, h: &History) -> bool {
        matches!(splice(after, head, fetched, h, SymbolId(0)), Splice::More(_))
    }

    #[test]
    fn fetched_events_join_the_history_or_are_refused() {
        let h = history(20..=30);
        let got = |events, hole| Fetched::Events { events, hole };
        assert_eq!(spliced(10, 30, got(events(11..=19), false), &h), Some(((11..=19).collect(), false)), "meets it");
        assert_eq!(spliced(10, 30, got(events(11..=25), false), &h), Some(((11..=25).collect(), false)), "overlaps");
        assert_eq!(spliced(10, 30, got(events(11..=17), false), &h), None, "18 and 19 are in neither");
        assert!(more(10, 30, got(events(11..=17), false), &h), "so they are fetched next");
        assert_eq!(spliced(10, 30, got(events(12..=19), false), &h), None, "11 is missing");
        assert_eq!(spliced(10, 30, got(events([11, 12, 14]), false), &h), None, "not contiguous");
        assert_eq!(spliced(10, 30, got(events(11..=15), true), &h), Some(((11..=15).collect(), true)), "a hole");
        assert_eq!(spliced(10, 12, got(events(11..=14), false), &h), Some((vec![11, 12], false)), "never past head");
        assert_eq!(spliced(10, 30, got(Vec::new(), false), &h), None);
        assert_eq!(spliced(10, 30, Fetched::NotRetained, &h), None);
        assert_eq!(spliced(10, 30, Fetched::Unavailable, &h), None);
        assert_eq!(spliced(u64::MAX, u64::MAX, got(events([u64::MAX]), false), &h), None, "no overflow");
        let evicted = history(22..=30);
        assert_eq!(spliced(10, 30, got(events(11..=20), false), &evicted), None, "the history moved on meanwhile");
        assert!(more(10, 30, got(events(11..=20), false), &evicted));
        assert!(!more(10, 30, got(events(12..=20), false), &evicted), "not contiguous: no more");
    }

    #[test]
    fn fetches_are_bounded_per_reactor_and_per_connection_and_tokens_tell_stale_answers() {
        let now = Instant::now();
        let mut f = StreamFetches::new(3, 6, 100);
        assert!(!StreamFetches::default().start(1, SymbolId(0), 1, 2, now), "not an edge");
        for s in 0..FETCHES_PER_CONNECTION as u32 {
            assert!(f.start(1, SymbolId(s), 1, 9, now));
        }
        assert!(!f.start(1, SymbolId(9), 1, 9, now), "per connection");
        assert!(f.start(2, SymbolId(0), 1, 9, now) && f.start(2, SymbolId(1), 1, 9, now));
        assert!(!f.start(3, SymbolId(0), 1, 9, now), "per reactor");
        assert_eq!(f.outgoing.len(), 6);
        assert!(f.outgoing.iter().all(|r| r.reactor == 3 && r.after == 1 && r.up_to == 9));
        let first = f.outgoing[0];
        f.forget_connection(1);
        assert!(f.answered(1, first.symbol, first.token).is_none(), "gone with its connection");
        let again = f.outgoing[4];
        f.cancel(2, SymbolId(0));
        assert!(f.start(2, SymbolId(0), 5, 9, now), "resumed again");
        assert!(f.answered(2, SymbolId(0), again.token).is_none(), "the old answer is stale");
        let mut expired = Vec::new();
        f.expired(now + FETCH_DEADLINE, &mut expired);
        assert_eq!(expired.len(), 2);
        for a in expired {
            assert!(f.answered(a.key, a.symbol, a.token).is_some());
        }
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn every_round_of_a_resume_answers_within_the_first_requests_deadline() {
        let start = Instant::now();
        let mut f = StreamFetches::new(0, 4, 100);
        assert!(f.start(1, SymbolId(0), 1, 9, start));
        let mut request = f.outgoing[0];
        let mut deadline = start + FETCH_DEADLINE;
        // Answers that each need one more round, arriving late: the deadline stays put.
        for round in 2..=ROUNDS {
            let (cursor, _, first) = f.answered(1, SymbolId(0), request.token).expect("awaited");
            assert_eq!(first, deadline);
            f.follow_up(request, first, cursor, round);
            request = *f.outgoing.last().unwrap();
            deadline = first;
        }
        let mut expired = Vec::new();
        f.expired(start + FETCH_DEADLINE, &mut expired);
        assert_eq!(expired.len(), 1, "the last round expires with the first request's deadline");
    }
}
