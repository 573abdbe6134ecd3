//! The edge: its one source is the stream.
//!
//! The bus thread reads the stream with an ordered pull consumer that starts with the last
//! message of every subject (each symbol's latest tick: the edge's snapshots) and then goes on
//! live. Pulled, not pushed: an edge that starts on a long stream asks for what it can take, and
//! NATS never overruns the client's buffer (a push consumer would, dropping messages and
//! recreating itself over and over). When the connection drops, async-nats reconnects and the
//! edge reads on with a new consumer from the stream sequence after the last it read: a short
//! outage is caught up from the stream, with nothing missing while the stream still holds it.
//!
//! [`BusSource`] is what the edge's ingest thread polls. It checks the publisher's numbering
//! of each symbol: a tick already seen is dropped; a jump (ticks sequenced but not read here:
//! not published, or gone from the stream after a long outage) is announced as a `gap` with
//! reason `bus` that ends with the tick, followed by a `snapshot` as of it (each message carries
//! the symbol's latest event of the other kind, so the edge has the symbol's whole state); a
//! tick of a new publisher epoch (the publisher restarted) is announced as an `upstream_reset`
//! with reason `publisher_restart`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use tickgate_core::SymbolTable;
use tickgate_feed::ingest::wall_clock_ns;
use tickgate_feed::source::{Batch, Discontinuity, IngestWaker, Source, UpstreamGap};
use tickgate_feed::upstream_seq::ResetReason;
use tokio::sync::mpsc;

use crate::payload::{self, BusTick};
use crate::{BusConfig, BusError, BusStats, connect};

/// Ticks read from the stream and not yet taken by the ingest thread.
const QUEUE: usize = 16_384;

/// The reason of the `gap` an edge announces for ticks it never read.
pub const GAP_REASON: &str = "bus";

/// The edge's source: ticks from the stream, checked against each symbol's numbering.
#[derive(Debug)]
pub struct BusSource {
    rx: mpsc::Receiver<BusTick>,
    /// The ingest thread's, once it polls: woken after each tick queued.
    waker: Arc<OnceLock<IngestWaker>>,
    stats: Arc<BusStats>,
    /// Ticks of a new publisher numbered below the last seq handed on: logged at most once a
    /// second.
    numbering_back: RejectLog,
    /// Per symbol: the last seq handed on and the publisher epoch that numbered it.
    last: Vec<(u64, u64)>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Connects, finds the stream, starts reading it on the bus thread.
pub fn start(config: &BusConfig, symbols: Arc<SymbolTable>, stats: Arc<BusStats>) -> Result<BusSource, BusError> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let tx = Handoff { tx, waker: Arc::new(OnceLock::new()) };
    let waker = tx.waker.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let config = config.clone();
    let thread_stats = stats.clone();
    let capacity = symbols.capacity();
    let ((), thread) = connect::start_thread("tickgate-bus-edge", (), move |started| async move {
        let stream_err =
            |e: &dyn std::fmt::Display| BusError::Stream { stream: config.stream.clone(), reason: e.to_string() };
        let messages = async {
            let client = connect::connect(&config, thread_stats.clone()).await?;
            let js = jetstream::new(client);
            let stream = connect::stream(&js, &config, false).await?;
            let end = stream.cached_info().state.last_sequence;
            if end == 0 {
                thread_stats.caught_up.store(true, Ordering::Relaxed);
            }
            // Without a replay: each symbol's last tick, then the live stream. With one: the
            // last tick of each symbol quiet since the replay's start, then everything from it.
            let (deliver_policy, before) = if config.replay_s == 0 {
                (consumer::DeliverPolicy::LastPerSubject, Vec::new())
            } else {
                let start_time = time::OffsetDateTime::now_utc() - Duration::from_secs(config.replay_s);
                let before = last_before(&stream, &config, &symbols, start_time).await?;
                (consumer::DeliverPolicy::ByStartTime { start_time }, before)
            };
            let reader = Reader { stream, filter: format!("{}.>", config.subject_prefix), first: deliver_policy };
            let messages = reader.messages_after(0).await.map_err(|e| stream_err(&e))?;
            Ok::<_, BusError>((before, end, reader, messages))
        };
        let (before, end, reader, messages) = match messages.await {
            Ok(messages) => messages,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let _ = started.send(Ok(()));
        let mut rejects = RejectLog::default();
        let read_all = async {
            for message in before {
                if !hand_on(&message.payload, &message.subject, &symbols, &tx, &thread_stats, &mut rejects).await {
                    return;
                }
                if message.sequence >= end {
                    thread_stats.caught_up.store(true, Ordering::Relaxed);
                }
            }
            read(&reader, messages, end, &symbols, &tx, &thread_stats, &mut rejects).await;
        };
        tokio::select! {
            () = read_all => {}
            _ = stopped => {}
        }
    })?;
    Ok(BusSource {
        rx,
        waker,
        stats,
        numbering_back: RejectLog::default(),
        last: vec![(0, 0); capacity],
        thread: Some(thread),
        stop: Some(stop),
    })
}

/// The last message of every symbol's subject that is older than `start_time`, in stream order.
async fn last_before(
    stream: &jetstream::stream::Stream,
    config: &BusConfig,
    symbols: &SymbolTable,
    start_time: time::OffsetDateTime,
) -> Result<Vec<jetstream::message::StreamMessage>, BusError> {
    let mut last = Vec::new();
    for (_, info) in symbols.iter() {
        let subject = payload::subject(&config.subject_prefix, &info.name);
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) if message.time < start_time => last.push(message),
            Ok(_) => {}
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(BusError::LastSeq { symbol: info.name.to_string(), reason: e.to_string() }),
        }
    }
    last.sort_by_key(|m| m.sequence);
    Ok(last)
}

/// How the edge reads the stream: an ordered pull consumer of every tick subject.
struct Reader {
    stream: jetstream::stream::Stream,
    filter: String,
    /// Where the first consumer starts (the edge's start: see [`start`]).
    first: consumer::DeliverPolicy,
}

impl Reader {
    /// A consumer from the message after stream sequence `last` (0: nothing read yet, from
    /// where the edge starts).
    async fn messages_after(&self, last: u64) -> Result<consumer::pull::Ordered, String> {
        let stream_last = self.last_sequence().await?;
        let deliver_policy = match last.checked_add(1) {
            // The stream ends before the last message read: it was emptied or made again (a
            // nats-server started without its store). What it holds now is all new.
            Some(_) if last > 0 && stream_last < last => {
                tracing::warn!(
                    last_read = last,
                    stream_last,
                    "the stream is behind what this edge read: it was emptied or made again; reading it from its start"
                );
                consumer::DeliverPolicy::All
            }
            Some(start_sequence) if last > 0 => consumer::DeliverPolicy::ByStartSequence { start_sequence },
            _ => self.first,
        };
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.filter.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        consumer.messages().await.map_err(|e| e.to_string())
    }

    /// The stream's last sequence now.
    async fn last_sequence(&self) -> Result<u64, String> {
        let mut stream = self.stream.clone();
        let info = tokio::time::timeout(STALL_CHECK, stream.info()).await.map_err(|_| "timed out".to_string())?;
        Ok(info.map_err(|e| e.to_string())?.state.last_sequence)
    }
}

/// How long an edge reads nothing before it asks whether the stream holds more: a consumer
/// that a hung nats-server let lapse is otherwise found out only after two missed heartbeats
/// (30 s), with the connection up all along.
const STALL_CHECK: Duration = Duration::from_secs(2);

/// Failures to read the stream again in a row that are logged: the first, then one in this many.
const RETRY_LOG_EVERY: u32 = 40;

/// How often the bus thread looks whether NATS came back after a loss.
const RECONNECT_POLL: Duration = Duration::from_millis(100);

/// Resolves when NATS is back after a loss (`tickgate_bus_reconnects_total` moved past `seen`).
async fn back_after(stats: &BusStats, seen: &mut u64) {
    loop {
        let now = stats.reconnects.load(Ordering::Relaxed);
        if now != *seen {
            *seen = now;
            return;
        }
        tokio::time::sleep(RECONNECT_POLL).await;
    }
}

/// Reads the stream into `tx` until the source is dropped; the stream ended at `end` when the
/// edge started. When NATS comes back after a loss, or nothing was read for [`STALL_CHECK`]
/// while the stream holds more, reading goes on from a new consumer after the last message
/// read: a restarted nats-server has forgotten the old one, a hung one may have let it lapse,
/// and either is otherwise noticed only after two missed heartbeats (30 s).
async fn read(
    reader: &Reader,
    mut messages: consumer::pull::Ordered,
    end: u64,
    symbols: &SymbolTable,
    tx: &Handoff,
    stats: &BusStats,
    rejects: &mut RejectLog,
) {
    let mut reconnects_seen = stats.reconnects.load(Ordering::Relaxed);
    let mut last_read = 0;
    let mut catching_up = false;
    let mut read_at = tokio::time::Instant::now();
    let mut stall_check = tokio::time::interval(STALL_CHECK);
    stall_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let again = tokio::select! {
            next = messages.next() => match next {
                Some(message) => {
                    read_at = tokio::time::Instant::now();
                    Ok(message)
                }
                None => return,
            },
            () = back_after(stats, &mut reconnects_seen) => Err(()),
            _ = stall_check.tick() => {
                // Nothing read for a while although the stream holds more: a new consumer.
                if last_read == 0 || read_at.elapsed() < STALL_CHECK {
                    continue;
                }
                match reader.last_sequence().await {
                    Ok(stream_last) if stream_last != last_read => Err(()),
                    _ => continue,
                }
            }
        };
        let message = match again {
            Ok(message) => message,
            Err(()) => {
                let mut failures = 0u32;
                messages = loop {
                    match reader.messages_after(last_read).await {
                        Ok(messages) => break messages,
                        Err(reason) => {
                            if failures % RETRY_LOG_EVERY == 0 {
                                tracing::warn!(%reason, failures, "reading the stream again after NATS came back; retrying");
                            }
                            failures = failures.saturating_add(1);
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                    }
                };
                read_at = tokio::time::Instant::now();
                catching_up = true;
                continue;
            }
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                // The ordered consumer recreates itself after a loss; it says so here.
                tracing::warn!(error = %e, "reading the stream");
                continue;
            }
        };
        if let Ok(info) = message.info() {
            last_read = info.stream_sequence;
            stats.lag_messages.store(info.pending, Ordering::Relaxed);
            if info.stream_sequence >= end {
                stats.caught_up.store(true, Ordering::Relaxed);
            }
            if std::mem::take(&mut catching_up) && info.pending > 0 {
                stats.catch_ups.fetch_add(1, Ordering::Relaxed);
                tracing::info!(behind = info.pending, "catching up from the stream");
            }
        }
        if !hand_on(&message.payload, &message.subject, symbols, tx, stats, rejects).await {
            return;
        }
        // A wait for the ingest thread's queue is not a stall of the stream.
        read_at = tokio::time::Instant::now();
    }
}

/// Decodes one bus message and hands it to the ingest thread, or rejects it (counted, and
/// logged at most once per [`RejectLog::EVERY`]). Returns false once the source is gone.
async fn hand_on(
    bytes: &[u8],
    subject: &str,
    symbols: &SymbolTable,
    tx: &Handoff,
    stats: &BusStats,
    rejects: &mut RejectLog,
) -> bool {
    match payload::decode(bytes, symbols) {
        Ok(bus) => {
            stats.lag_ns.store(wall_clock_ns().saturating_sub(bus.tick.gw_ts), Ordering::Relaxed);
            let sent = tx.tx.send(bus).await.is_ok();
            if let Some(waker) = tx.waker.get() {
                waker.wake();
            }
            sent
        }
        Err(reject) => {
            stats.rejected[reject.index()].fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = rejects.due(std::time::Instant::now()) {
                tracing::warn!(subject, %reject, held_back, "bus message rejected");
            }
            true
        }
    }
}

/// The bus thread's way to the ingest thread: the queue, and the waker to ring after a tick.
#[derive(Debug)]
struct Handoff {
    tx: mpsc::Sender<BusTick>,
    waker: Arc<OnceLock<IngestWaker>>,
}

/// At most one log line per [`RejectLog::EVERY`] for rejected bus messages, as for an upstream's
/// (a stray writer can send many); the line says how many were held back, the metric counts
/// every one.
#[derive(Debug, Default)]
struct RejectLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RejectLog {
    const EVERY: Duration = Duration::from_secs(1);

    /// Whether to log a reject seen `now`: then the number of rejects not logged since the last
    /// line.
    fn due(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < Self::EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

impl BusSource {
    /// Checks one tick against its symbol's numbering; returns whether it goes on.
    fn admit(&mut self, bus: BusTick, out: &mut Batch) -> bool {
        let tick = bus.tick;
        let Some(last) = self.last.get_mut(tick.symbol.index()) else { return false };
        let (last_seq, last_epoch) = *last;
        if tick.seq <= last_seq {
            self.stats.repeats.fetch_add(1, Ordering::Relaxed);
            if bus.epoch != last_epoch
                && let Some(held_back) = self.numbering_back.due(std::time::Instant::now())
            {
                // A publisher that started on an emptied stream numbers afresh: its ticks are
                // below what clients hold and cannot go out under those numbers.
                tracing::error!(
                    seq = tick.seq,
                    last_seq,
                    held_back,
                    "a new publisher numbers below what this edge delivered (the stream was emptied?): its ticks are dropped; restart the edges"
                );
            }
            return false;
        }
        let before = out.ticks.len();
        let mut discontinuity =
            |kind| out.upstream_gaps.push(UpstreamGap { before, symbol: tick.symbol, kind, source: 0 });
        if last_seq != 0 && bus.epoch != last_epoch {
            self.stats.publisher_restarts.fetch_add(1, Ordering::Relaxed);
            discontinuity(Discontinuity::Reset(ResetReason::PublisherRestart));
        }
        // Numbers this edge never read: a gap, and the snapshot as of this tick (clients of a
        // symbol not read yet hold seq 0: their gap starts at 1).
        if tick.seq > last_seq + 1 {
            if last_seq != 0 {
                self.stats.gaps.fetch_add(1, Ordering::Relaxed);
            }
            discontinuity(Discontinuity::Skipped { from_seq: last_seq + 1, reason: GAP_REASON });
        }
        *last = (tick.seq, bus.epoch);
        if let Some(other) = bus.other {
            out.carried.push((before, other));
        }
        out.ticks.push(tick);
        true
    }
}

impl Source for BusSource {
    fn poll(&mut self, _elapsed: Duration, _now_ns: u64, max_batch: usize, out: &mut Batch) -> usize {
        let mut n = 0;
        while n < max_batch {
            // A change of status ends the poll: ticks after it go out after its announcement.
            if !self.is_up() {
                break;
            }
            let Ok(bus) = self.rx.try_recv() else { break };
            if self.admit(bus, out) {
                n += 1;
                self.stats.received.fetch_add(1, Ordering::Relaxed);
            }
        }
        n
    }

    fn next_due(&self) -> Option<Duration> {
        // Ticks come when they come: now if one is queued, else when the bus thread wakes the
        // ingest thread.
        Some(if self.rx.is_empty() { Duration::MAX } else { Duration::ZERO })
    }

    fn set_waker(&mut self, waker: IngestWaker) {
        let _ = self.waker.set(waker);
    }

    fn is_up(&self) -> bool {
        self.stats.connected.load(Ordering::Relaxed)
    }
}

impl Drop for BusSource {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.rx.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickgate_core::{SymbolId, Tick, TickKind};

    fn source() -> BusSource {
        let (_tx, rx) = mpsc::channel(1);
        BusSource {
            rx,
            waker: Arc::default(),
            stats: Arc::default(),
            numbering_back: RejectLog::default(),
            last: vec![(0, 0); 2],
            thread: None,
            stop: None,
        }
    }

    fn bus(symbol: u32, seq: u64, epoch: u64) -> BusTick {
        let quote = TickKind::Quote { bid: 1, bid_size: 1, ask: 2, ask_size: 1 };
        BusTick {
            epoch,
            tick: Tick { symbol: SymbolId(symbol), seq, ts: 1, gw_ts: 2, kind: TickKind::Trade { price: 1, size: 1 } },
            other: (seq > 1).then_some(Tick { symbol: SymbolId(symbol), seq: seq - 1, ts: 1, gw_ts: 2, kind: quote }),
        }
    }

    #[test]
    fn rejects_are_logged_once_per_interval_saying_how_many_were_not() {
        let mut log = RejectLog::default();
        let t0 = std::time::Instant::now();
        assert_eq!(log.due(t0), Some(0));
        assert_eq!(log.due(t0 + Duration::from_millis(1)), None);
        assert_eq!(log.due(t0 + Duration::from_millis(999)), None);
        assert_eq!(log.due(t0 + RejectLog::EVERY), Some(2));
        assert_eq!(log.due(t0 + RejectLog::EVERY), None);
    }

    #[test]
    fn repeats_are_dropped_jumps_are_gaps_and_a_new_epoch_is_a_reset() {
        let mut source = source();
        let mut out = Batch::default();
        let admitted: Vec<bool> = [
            bus(0, 1, 1),
            bus(0, 1, 1),
            bus(0, 2, 1),
            bus(0, 5, 1),
            bus(1, 3, 1),
            bus(0, 6, 2),
            bus(0, 9, 3),
            bus(0, 4, 3),
        ]
        .into_iter()
        .map(|b| source.admit(b, &mut out))
        .collect();
        assert_eq!(admitted, [true, false, true, true, true, true, true, false]);
        let seqs: Vec<u64> = out.ticks.iter().map(|t| t.seq).collect();
        assert_eq!(seqs, [1, 2, 5, 3, 6, 9]);
        let gaps: Vec<(usize, Discontinuity)> = out.upstream_gaps.iter().map(|g| (g.before, g.kind)).collect();
        assert_eq!(
            gaps,
            [
                (2, Discontinuity::Skipped { from_seq: 3, reason: GAP_REASON }),
                (3, Discontinuity::Skipped { from_seq: 1, reason: GAP_REASON }),
                (4, Discontinuity::Reset(ResetReason::PublisherRestart)),
                (5, Discontinuity::Reset(ResetReason::PublisherRestart)),
                (5, Discontinuity::Skipped { from_seq: 7, reason: GAP_REASON }),
            ],
            "a symbol first read past seq 1 is a gap from 1 for clients holding nothing yet"
        );
        assert_eq!(source.stats.gaps.load(Ordering::Relaxed), 2, "a symbol's starting point is not counted");
        let carried: Vec<(usize, u64)> = out.carried.iter().map(|(i, t)| (*i, t.seq)).collect();
        assert_eq!(carried, [(1, 1), (2, 4), (3, 2), (4, 5), (5, 8)], "each tick's other kind, by index");
    }
}
