//! Resumes older than an edge's history, served from the stream.
//!
//! A reactor whose history does not reach back to a resuming client's `seq` hands a
//! [`FetchRequest`] (the events of one symbol after `after`, up to `up_to`) to the fetch thread
//! with `try_send`, never waiting. The thread (a current-thread runtime of its own, with its own
//! NATS connection, made when the first request comes and again after a failure) finds where
//! the symbol's seq `after + 1` sits in the stream ([`StartSearch`]: a binary search over stream
//! sequences, each probe a "next message of this subject at or after stream sequence N"), then
//! reads the subject's messages from there with an ordered consumer of that subject alone
//! ([`Collect`]), decodes each and builds its
//! frame with [`tickgate_feed::ingest::event_frame`], the one serializer of live frames (so the
//! replayed bytes are the bytes every edge sends live). The [`FetchAnswer`] goes back over the
//! reactor's own channel, and the reactor is woken.
//!
//! Bounds: at most `bus.resume_fetch_max_events` events and [`FETCH_MAX_BYTES`] bytes per fetch,
//! [`FETCH_TIMEOUT`] per fetch (then [`Fetched::Unavailable`]), one fetch at a time on the
//! thread (requests wait in a bounded queue; the reactors bound how many each has in flight).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream::RawMessageErrorKind};
use futures_util::StreamExt;
use tickgate_core::subscription::ConnKey;
use tickgate_core::{Frame, SymbolId, SymbolTable, Tick};
use tickgate_feed::ingest::event_frame;
use tickgate_protocol::FrameBuilder;
use tokio::sync::mpsc;

use crate::{BusConfig, BusError, BusStats, connect, payload};

/// Most bytes of frames one fetch collects.
pub const FETCH_MAX_BYTES: usize = 8 << 20;
/// Longest one fetch may take before it is answered [`Fetched::Unavailable`].
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A fetch's reading ends when the stream sends nothing more of the subject for this long.
const QUIET: Duration = Duration::from_millis(500);

/// The events of one symbol after `after` (the resuming client's seq), up to `up_to` (the
/// newest the reactor held when it asked), for connection `key` of reactor `reactor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRequest {
    pub reactor: usize,
    pub key: ConnKey,
    pub symbol: SymbolId,
    /// Tells this request's answer from a stale one (the client unsubscribed, went away, or
    /// resumed again meanwhile).
    pub token: u64,
    pub after: u64,
    pub up_to: u64,
    /// Where to read from in the stream, when a previous fetch of the same resume said so
    /// (0: find it).
    pub from_stream_seq: u64,
    /// Past it the reactor has answered the client without this fetch: it is not done.
    pub deadline: std::time::Instant,
}

/// What the fetch thread found for a [`FetchRequest`].
#[derive(Debug)]
pub struct FetchAnswer {
    pub key: ConnKey,
    pub symbol: SymbolId,
    pub token: u64,
    pub after: u64,
    pub fetched: Fetched,
    /// The stream sequence after the last message read (0: unknown): where a fetch for what
    /// came since starts.
    pub next_stream_seq: u64,
}

#[derive(Debug)]
pub enum Fetched {
    /// Events `after + 1` on, contiguous, oldest first, each with its live frame; `hole`: the
    /// stream skips the seq after the last one (the publisher did not publish it).
    Events { events: Vec<(Tick, Frame)>, hole: bool },
    /// The stream no longer holds the event after `after` (aged out).
    NotRetained,
    /// The stream could not be read (the bus is down, a timeout, a refusal).
    Unavailable,
    /// Not asked: the fetch thread's queue was full (the reactor answers it itself).
    Refused,
}

/// Where a reactor's answers go: its channel, and how to wake it.
pub struct AnswerTo {
    pub tx: SyncSender<FetchAnswer>,
    pub wake: Box<dyn Fn() + Send>,
}

impl std::fmt::Debug for AnswerTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerTo")
    }
}

/// A reactor's way to the fetch thread (cloned per reactor).
pub type Requests = mpsc::Sender<FetchRequest>;

/// Starts the fetch thread; requests beyond `queue` waiting are refused at `try_send`.
pub fn start(
    config: &BusConfig,
    symbols: Arc<SymbolTable>,
    stats: Arc<BusStats>,
    answers: Vec<AnswerTo>,
    queue: usize,
) -> Result<(Requests, std::thread::JoinHandle<()>), BusError> {
    let (tx, mut rx) = mpsc::channel::<FetchRequest>(queue.max(1));
    let config = config.clone();
    let max_events = config.resume_fetch_max_events;
    let ((), thread) = connect::start_thread("tickgate-bus-fetch", (), move |started| async move {
        let _ = started.send(Ok(()));
        let mut reader = None;
        // At most one warning a second, saying how many were held back.
        let (mut warned, mut held_back) = (None::<std::time::Instant>, 0u64);
        let mut builder = FrameBuilder::new();
        while let Some(request) = rx.recv().await {
            // With the bus down (the edge's reader says so), answered at once.
            let up = stats.connected.load(Ordering::Relaxed);
            let left = request.deadline.saturating_duration_since(std::time::Instant::now());
            let (fetched, next_stream_seq) = if !up || left.is_zero() {
                (Fetched::Unavailable, 0)
            } else {
                match tokio::time::timeout(
                    FETCH_TIMEOUT.min(left),
                    fetch(&config, &symbols, &mut reader, &mut builder, &request, max_events),
                )
                .await
                {
                    Ok(Ok(fetched)) => fetched,
                    Ok(Err(e)) => {
                        if warned.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                            held_back += 1;
                        } else {
                            warned = Some(std::time::Instant::now());
                            let held_back = std::mem::take(&mut held_back);
                            tracing::warn!(error = %e, held_back, "reading a resume from the stream");
                        }
                        reader = None;
                        (Fetched::Unavailable, 0)
                    }
                    Err(_) => {
                        reader = None;
                        (Fetched::Unavailable, 0)
                    }
                }
            };
            let outcome = match &fetched {
                Fetched::Events { .. } => 0,
                Fetched::NotRetained => 1,
                Fetched::Unavailable | Fetched::Refused => 2,
            };
            stats.resume_fetches[outcome].fetch_add(1, Ordering::Relaxed);
            if let Fetched::Events { events, .. } = &fetched {
                stats.resume_fetched_events.fetch_add(events.len() as u64, Ordering::Relaxed);
            }
            let FetchRequest { reactor, key, symbol, token, after, .. } = request;
            if let Some(to) = answers.get(reactor) {
                // The reactor bounds what it has in flight below the channel's size; an answer
                // that finds it full (or gone) is lost, and the reactor's deadline answers it.
                if to.tx.try_send(FetchAnswer { key, symbol, token, after, fetched, next_stream_seq }).is_ok() {
                    (to.wake)();
                }
            }
        }
    })?;
    Ok((tx, thread))
}

/// Outcomes counted in [`BusStats::resume_fetches`], by index.
pub const OUTCOMES: [&str; 3] = ["events", "not_retained", "unavailable"];

async fn fetch(
    config: &BusConfig,
    symbols: &SymbolTable,
    reader: &mut Option<(async_nats::Client, jetstream::stream::Stream)>,
    builder: &mut FrameBuilder,
    request: &FetchRequest,
    max_events: usize,
) -> Result<(Fetched, u64), BusError> {
    let stream_err =
        |e: &dyn std::fmt::Display| BusError::Stream { stream: config.stream.clone(), reason: e.to_string() };
    if reader.is_none() {
        // A connection of its own, so a fetch never waits behind the edge's live reading; its
        // state is not the edge's (`connected` stays the live reader's).
        let client = connect::connect(config, Arc::new(BusStats::default())).await?;
        let js = jetstream::new(client.clone());
        *reader = Some((client, js.get_stream(&config.stream).await.map_err(|e| stream_err(&e))?));
    }
    let Some((client, stream)) = reader.as_mut() else { return Ok((Fetched::Unavailable, 0)) };
    let stream: &jetstream::stream::Stream = stream;
    let subject = payload::subject(&config.subject_prefix, &symbols.get(request.symbol).name);
    let start = if request.from_stream_seq > 0 {
        request.from_stream_seq
    } else {
        let info = stream.get_info().await.map_err(|e| stream_err(&e))?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut search = StartSearch::new(first, last, request.after);
        while let Some(probe) = search.probe() {
            let found = next_of(stream, &subject, probe, symbols, request.symbol, config).await?;
            search.found(probe, found.map(|(at, tick)| (at, tick.map_or(0, |t| t.seq))));
        }
        let Some(start) = search.start() else { return Ok((Fetched::NotRetained, 0)) };
        start
    };
    // From there, the subject's messages in order: an ordered consumer of that subject alone.
    let consumer = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: subject.clone(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: start },
            ..Default::default()
        })
        .await
        .map_err(|e| stream_err(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| stream_err(&e))?;
    let mut collect = Collect::new(request.after, request.up_to, max_events, FETCH_MAX_BYTES);
    let mut next_stream_seq = start;
    loop {
        // Nothing more within a moment: the stream holds no more of the subject for now (or,
        // when not even the message the search found came, NATS is too slow to tell).
        let Ok(message) = tokio::time::timeout(QUIET, messages.next()).await else {
            let fetched = if collect.is_empty() { Fetched::Unavailable } else { collect.end() };
            return Ok((fetched, next_stream_seq));
        };
        let Some(message) = message else { return Ok((collect.end(), next_stream_seq)) };
        let message = message.map_err(|e| stream_err(&e))?;
        if let Ok(info) = message.info() {
            next_stream_seq = info.stream_sequence.saturating_add(1);
        }
        let Ok(bus) = payload::decode(&message.payload, symbols) else { continue };
        if bus.tick.symbol != request.symbol {
            continue;
        }
        let frame = event_frame(builder, symbols.get(bus.tick.symbol), &bus.tick);
        if let Some(done) = collect.take(bus.tick, frame) {
            return Ok((done, next_stream_seq));
        }
    }
}

/// The next message of `subject` at or after stream sequence `at`: its stream sequence, and its
/// tick when it is one of `symbol` (anything else is stepped over); `None` when there is none.
async fn next_of(
    stream: &jetstream::stream::Stream,
    subject: &str,
    at: u64,
    symbols: &SymbolTable,
    symbol: SymbolId,
    config: &BusConfig,
) -> Result<Option<(u64, Option<Tick>)>, BusError> {
    match stream.raw_message_builder().sequence(at).next_by_subject(subject).send().await {
        Ok(message) => match payload::decode(&message.payload, symbols) {
            Ok(bus) if bus.tick.symbol == symbol => Ok(Some((message.sequence, Some(bus.tick)))),
            _ => Ok(Some((message.sequence, None))),
        },
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(BusError::Stream { stream: config.stream.clone(), reason: e.to_string() }),
    }
}

/// Finds the first stream sequence holding a message of the subject whose seq is past
/// `after`, sans IO: [`StartSearch::probe`] names the stream sequence to look at,
/// [`StartSearch::found`] takes the subject's next message at or after it (its stream sequence
/// and seq), until `probe` says `None`; then [`StartSearch::start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartSearch {
    lo: u64,
    hi: u64,
    after: u64,
    start: Option<u64>,
}

impl StartSearch {
    /// Over the stream's sequences `first..=last`.
    pub fn new(first: u64, last: u64, after: u64) -> Self {
        Self { lo: first.max(1), hi: last.saturating_add(1), after, start: None }
    }

    pub fn probe(&self) -> Option<u64> {
        (self.lo < self.hi).then(|| self.lo + (self.hi - self.lo) / 2)
    }

    /// At or after `probe`, the subject's next message is at stream sequence `at` with seq
    /// `seq` (`None`: there is none).
    pub fn found(&mut self, probe: u64, next: Option<(u64, u64)>) {
        match next {
            Some((at, seq)) if seq > self.after => {
                self.start = Some(self.start.map_or(at, |s| s.min(at)));
                self.hi = probe;
            }
            Some((at, _)) => self.lo = at.saturating_add(1).max(probe.saturating_add(1)),
            None => self.hi = probe,
        }
    }

    /// The stream sequence to read from, once `probe` says `None`; `None`: nothing past `after`.
    pub fn start(&self) -> Option<u64> {
        self.start
    }
}

/// Collects a symbol's events after `after`, sans IO, in stream order, until `up_to`, a hole,
/// or a bound.
#[derive(Debug)]
pub struct Collect {
    next: u64,
    up_to: u64,
    max_events: usize,
    max_bytes: usize,
    bytes: usize,
    events: Vec<(Tick, Frame)>,
}

impl Collect {
    pub fn new(after: u64, up_to: u64, max_events: usize, max_bytes: usize) -> Self {
        Self { next: after.saturating_add(1), up_to, max_events, max_bytes, bytes: 0, events: Vec::new() }
    }

    /// Takes the next message's tick; returns the answer once it is complete.
    pub fn take(&mut self, tick: Tick, frame: Frame) -> Option<Fetched> {
        if tick.seq < self.next {
            // A repeat on the stream.
            return None;
        }
        if tick.seq > self.next {
            if self.events.is_empty() {
                return Some(Fetched::NotRetained);
            }
            return Some(Fetched::Events { events: std::mem::take(&mut self.events), hole: true });
        }
        self.bytes = self.bytes.saturating_add(frame.len());
        self.events.push((tick, frame));
        self.next = tick.seq.saturating_add(1);
        let full = self.events.len() >= self.max_events || self.bytes >= self.max_bytes;
        (tick.seq >= self.up_to || full)
            .then(|| Fetched::Events { events: std::mem::take(&mut self.events), hole: false })
    }

    /// Nothing was taken yet.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The stream holds nothing more of the subject.
    pub fn end(self) -> Fetched {
        if self.events.is_empty() { Fetched::NotRetained } else { Fetched::Events { events: self.events, hole: false } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickgate_core::TickKind;

    fn tick(seq: u64) -> Tick {
        Tick { symbol: SymbolId(0), seq, ts: 0, gw_ts: 0, kind: TickKind::Trade { price: 1, size: 1 } }
    }

    fn seqs(f: &Fetched) -> (Vec<u64>, bool) {
        match f {
            Fetched::Events { events, hole } => (events.iter().map(|(t, _)| t.seq).collect(), *hole),
            other => panic!("{other:?}"),
        }
    }

    /// Runs the search over a stream of (subject's seq or None for another subject's message),
    /// at stream sequences from `first`.
    fn search(stream: &[Option<u64>], first: u64, after: u64) -> (Option<u64>, usize) {
        let last = first + stream.len() as u64 - 1;
        let mut s = StartSearch::new(first, last, after);
        let mut probes = 0;
        while let Some(p) = s.probe() {
            probes += 1;
            assert!(probes < 100, "the search ends");
            let next = (p..=last).find_map(|at| stream[(at - first) as usize].map(|seq| (at, seq)));
            s.found(p, next);
        }
        (s.start(), probes)
    }

    #[test]
    fn the_search_finds_the_first_message_past_a_seq_in_a_few_probes() {
        // Stream sequences 100.. : the subject's seqs 1..=1000 every third message.
        let stream: Vec<Option<u64>> = (0..3000).map(|i| (i % 3 == 1).then_some(i as u64 / 3 + 1)).collect();
        for after in [0, 1, 2, 499, 998, 999] {
            let (start, probes) = search(&stream, 100, after);
            let expected = 100 + after * 3 + 1;
            assert_eq!(start, Some(expected), "after {after}");
            assert!(probes <= 14, "{probes} probes");
        }
        assert_eq!(search(&stream, 100, 1000).0, None, "nothing past the newest");
        let none: Vec<Option<u64>> = vec![None; 50];
        assert_eq!(search(&none, 1, 0).0, None, "no message of the subject");
    }

    #[test]
    fn collect_stops_at_up_to_at_a_bound_or_at_a_hole() {
        let frame = Frame::from_bytes(b"0123456789");
        let mut c = Collect::new(4, 7, 100, 1 << 20);
        assert!(c.take(tick(4), frame.clone()).is_none(), "a repeat is stepped over");
        assert!(c.take(tick(5), frame.clone()).is_none());
        assert!(c.take(tick(6), frame.clone()).is_none());
        assert_eq!(seqs(&c.take(tick(7), frame.clone()).unwrap()), (vec![5, 6, 7], false));

        let mut c = Collect::new(4, 100, 2, 1 << 20);
        assert!(c.take(tick(5), frame.clone()).is_none());
        assert_eq!(seqs(&c.take(tick(6), frame.clone()).unwrap()), (vec![5, 6], false), "events bound");

        let mut c = Collect::new(4, 100, 100, 25);
        assert!(c.take(tick(5), frame.clone()).is_none());
        assert!(c.take(tick(6), frame.clone()).is_none());
        assert_eq!(seqs(&c.take(tick(7), frame.clone()).unwrap()), (vec![5, 6, 7], false), "bytes bound");

        let mut c = Collect::new(4, 100, 100, 1 << 20);
        assert!(c.take(tick(5), frame.clone()).is_none());
        assert_eq!(seqs(&c.take(tick(8), frame.clone()).unwrap()), (vec![5], true), "6 and 7 never published");

        let mut c = Collect::new(4, 100, 100, 1 << 20);
        assert!(matches!(c.take(tick(9), frame.clone()), Some(Fetched::NotRetained)), "5 aged out");
        assert!(matches!(Collect::new(4, 100, 100, 1 << 20).end(), Fetched::NotRetained));
        let mut c = Collect::new(u64::MAX - 1, u64::MAX, 100, 1 << 20);
        assert_eq!(seqs(&c.take(tick(u64::MAX), frame).unwrap()), (vec![u64::MAX], false), "no overflow");
    }
}
