//! The publisher: every tick the ingest thread sequenced, onto the stream, in order.
//!
//! [`start`] connects, reads each symbol's last published seq from the stream (the last
//! message of its subject) so the ingest thread can go on from there, and starts the bus
//! thread. The ingest thread offers each sequenced tick to [`PublisherSink`] (never blocking:
//! a full queue drops the tick, counted, and edges see a `gap`); the bus thread publishes them
//! pipelined, one batch of acknowledgements awaited at a time.
//!
//! **Fencing.** Every message carries `Nats-Expected-Last-Sequence` (the stream sequence this
//! publisher expects the stream's last message to have) and `Nats-Expected-Last-Subject-Sequence`
//! (the same for the last message of the tick's own subject). Alone on the stream it is always
//! right; the stream refuses a message when anyone else wrote in between, and the subject check
//! means that even a pipelined chain that lines up again after an intruder never puts a
//! symbol's message after anything but that publisher's previous one. On a refusal the
//! publisher reads every message since the last it had verified: one written by another epoch
//! (another publisher, or a stray message) stops it with [`PublishFailure::Fenced`] (the process
//! fails, loudly); if all are its own, one of its messages was lost, and it carries on from the
//! stream's state (edges announce the lost seqs as a `gap`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream::Stream};
use bytes::Bytes;
use tickgate_core::{LastValues, SymbolId, SymbolTable, Tick};
use tickgate_feed::ingest::SequencedSink;
use tokio::sync::mpsc;

use crate::payload::{self, subject};
use crate::{BusConfig, BusError, BusStats, connect};

/// How often a publisher that lost NATS asks the stream again.
const RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// How often a publisher waiting for NATS looks whether the gateway is stopping.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Most ticks published before their acknowledgements are awaited.
const MAX_IN_FLIGHT: usize = 1024;

/// Why a running publisher stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishFailure {
    #[error(
        "another publisher (epoch {other}) is writing to stream {stream}: this one stops; run one publisher per stream"
    )]
    Fenced { stream: String, other: u64 },
}

/// The ingest thread's side: offers each sequenced tick to the bus thread.
#[derive(Debug)]
pub struct PublisherSink {
    /// Each tick with its symbol's latest event of the other kind.
    tx: mpsc::Sender<(Tick, Option<Tick>)>,
    stats: Arc<BusStats>,
}

impl SequencedSink for PublisherSink {
    fn sequenced(&mut self, tick: &Tick, last: &LastValues) {
        let other = if tick.kind.is_trade() { last.quote } else { last.trade };
        if self.tx.try_send((*tick, other)).is_err() {
            self.stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A started publisher.
#[derive(Debug)]
pub struct Started {
    /// For [`tickgate_feed::ingest::Ingest::with_sink`].
    pub sink: PublisherSink,
    /// Each symbol's last published seq, for [`tickgate_feed::ingest::Ingest::continue_after`].
    pub last_seqs: Vec<(SymbolId, u64)>,
    /// The bus thread; it ends when the sink is dropped, or with the reason it had to stop.
    pub thread: std::thread::JoinHandle<Result<(), PublishFailure>>,
}

/// Connects, reads the last published seqs and starts the bus thread. `epoch` tells this
/// start of the publisher from others (its start time is a good one).
pub fn start(
    config: &BusConfig,
    symbols: Arc<SymbolTable>,
    stats: Arc<BusStats>,
    epoch: u64,
) -> Result<Started, BusError> {
    let (tx, rx) = mpsc::channel(config.publish_queue);
    let config = config.clone();
    let thread_stats = stats.clone();
    let (last_seqs, thread) = connect::start_thread("tickgate-bus-publisher", Ok(()), move |started| async move {
        let setup = async {
            let client = connect::connect(&config, thread_stats.clone()).await?;
            let js = jetstream::new(client);
            let mut stream = connect::stream(&js, &config, true).await?;
            let start_last = stream
                .info()
                .await
                .map_err(|e| BusError::Stream { stream: config.stream.clone(), reason: e.to_string() })?
                .state
                .last_sequence;
            let last_seqs = read_last(&stream, &config, &symbols).await?;
            Ok::<_, BusError>((js, stream, start_last, last_seqs))
        };
        let (js, stream, start_last, last_seqs) = match setup.await {
            Ok(ready) => ready,
            Err(e) => {
                let _ = started.send(Err(e));
                return Ok(());
            }
        };
        let _ = started.send(Ok(last_seqs.iter().map(|l| (l.symbol, l.seq)).collect()));
        // Filled on a symbol's first tick: a universe that grows has more room than names.
        let mut subjects: Vec<Option<async_nats::Subject>> = vec![None; symbols.capacity()];
        let mut run = Run {
            js,
            stream,
            config,
            epoch,
            expected: start_last,
            subject_last: vec![0; symbols.capacity()],
            stats: thread_stats,
        };
        run.set_subject_last(&last_seqs);
        run.publish_all(rx, &symbols, &mut subjects).await
    })?;
    Ok(Started { sink: PublisherSink { tx, stats }, last_seqs, thread })
}

/// The last message of a symbol's subject.
struct LastOnSubject {
    symbol: SymbolId,
    /// Its seq (the publisher's numbering).
    seq: u64,
    /// Its stream sequence.
    stream_seq: u64,
}

/// The last message of every symbol's subject that has one.
async fn read_last(stream: &Stream, config: &BusConfig, symbols: &SymbolTable) -> Result<Vec<LastOnSubject>, BusError> {
    let mut last = Vec::new();
    for (id, info) in symbols.iter() {
        let subject = subject(&config.subject_prefix, &info.name);
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => match payload::decode(&message.payload, symbols) {
                Ok(bus) => last.push(LastOnSubject { symbol: id, seq: bus.tick.seq, stream_seq: message.sequence }),
                Err(e) => {
                    return Err(BusError::LastSeq {
                        symbol: info.name.to_string(),
                        reason: format!("the stream's last message: {e}"),
                    });
                }
            },
            Err(e) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(BusError::LastSeq { symbol: info.name.to_string(), reason: e.to_string() }),
        }
    }
    Ok(last)
}

struct Run {
    js: jetstream::Context,
    stream: Stream,
    config: BusConfig,
    epoch: u64,
    /// The stream sequence of the stream's last message, as this publisher expects it: its own
    /// last message, or the last before it started.
    expected: u64,
    /// Per symbol, the stream sequence of the last message on its subject, as expected (0: none).
    subject_last: Vec<u64>,
    stats: Arc<BusStats>,
}

/// Whether a JetStream error says the stream does not exist (its API error code 10059).
fn is_stream_not_found(reason: &str) -> bool {
    reason.contains("10059")
}

/// Resolves once the ingest thread's side is gone (the gateway stops), checked every
/// [`STOP_POLL`]: a receiver cannot wait for its senders otherwise.
async fn senders_gone<T>(rx: &mpsc::Receiver<T>) {
    while !rx.is_closed() {
        tokio::time::sleep(STOP_POLL).await;
    }
}

impl Run {
    fn set_subject_last(&mut self, last: &[LastOnSubject]) {
        self.subject_last.fill(0);
        for l in last {
            self.subject_last[l.symbol.index()] = l.stream_seq;
        }
    }

    async fn publish_all(
        &mut self,
        mut rx: mpsc::Receiver<(Tick, Option<Tick>)>,
        symbols: &SymbolTable,
        subjects: &mut [Option<async_nats::Subject>],
    ) -> Result<(), PublishFailure> {
        let mut ticks = Vec::with_capacity(MAX_IN_FLIGHT);
        let mut acks = Vec::with_capacity(MAX_IN_FLIGHT);
        let mut payload = Vec::with_capacity(128);
        while rx.recv_many(&mut ticks, MAX_IN_FLIGHT).await > 0 {
            // Every message up to here is known: this publisher's, or there before it started.
            let verified = self.expected;
            for (tick, other) in ticks.drain(..) {
                payload.clear();
                payload::encode(&mut payload, self.epoch, &symbols.get(tick.symbol).name, &tick, other.as_ref());
                let message = PublishMessage::build()
                    .payload(Bytes::copy_from_slice(&payload))
                    .expected_last_sequence(self.expected)
                    .expected_last_subject_sequence(self.subject_last[tick.symbol.index()]);
                let name = &symbols.get(tick.symbol).name;
                let subject = subjects[tick.symbol.index()]
                    .get_or_insert_with(|| subject(&self.config.subject_prefix, name).into())
                    .clone();
                match self.js.send_publish(subject, message).await {
                    Ok(ack) => {
                        acks.push(ack);
                        self.expected += 1;
                        self.subject_last[tick.symbol.index()] = self.expected;
                    }
                    Err(e) => {
                        self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "publishing a tick failed");
                    }
                }
            }
            let mut broken = false;
            // Awaited together: after a loss of NATS, every one of them times out at once,
            // not one after the other.
            for ack in futures_util::future::join_all(acks.drain(..).map(std::future::IntoFuture::into_future)).await {
                match ack {
                    Ok(_) => {
                        self.stats.published.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                        if !broken {
                            tracing::warn!(error = %e, "the stream did not take a tick");
                        }
                        if e.kind() == PublishErrorKind::WrongLastSequence {
                            tracing::debug!("refused: the stream moved on without this publisher");
                        }
                        broken = true;
                    }
                }
            }
            if broken {
                // The gateway may be stopping meanwhile (its sink dropped): then the ticks still
                // queued are not published, and say so, rather than wait for NATS forever.
                let stopped = tokio::select! {
                    resynced = self.resync(verified, symbols) => { resynced?; false }
                    () = senders_gone(&rx) => true,
                };
                if stopped {
                    let unpublished = rx.len() as u64;
                    self.stats.publish_dropped.fetch_add(unpublished, Ordering::Relaxed);
                    tracing::warn!(
                        unpublished,
                        "stopping while NATS does not answer: the ticks still queued are not published"
                    );
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// After a refused or lost message: were all the stream's messages since `verified` this
    /// publisher's? Any other writer's fences it. If they were (a message of its own was lost),
    /// it takes the stream's state as it is and goes on. While NATS cannot answer (an outage),
    /// asks again every [`RETRY`]; ticks sequenced meanwhile wait in the queue, or are dropped
    /// and counted when it is full.
    async fn resync(&mut self, verified: u64, symbols: &SymbolTable) -> Result<(), PublishFailure> {
        loop {
            match self.foreign_since(verified).await {
                Ok((_, Some(other))) => {
                    return Err(PublishFailure::Fenced { stream: self.config.stream.clone(), other });
                }
                Ok((last, None)) => match read_last(&self.stream, &self.config, symbols).await {
                    Ok(subjects) => {
                        self.expected = last;
                        self.set_subject_last(&subjects);
                        return Ok(());
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the stream's last messages; retrying"),
                },
                Err(reason) if is_stream_not_found(&reason) => {
                    // NATS came back without the stream (started without its store): make it
                    // again and go on numbering where this publisher is; edges see a gap `bus`
                    // for what the lost stream held and they had not read.
                    match connect::stream(&self.js, &self.config, true).await {
                        Ok(stream) => {
                            tracing::warn!("the stream was gone; made it again, publishing goes on");
                            self.stream = stream;
                            self.expected = 0;
                            self.subject_last.fill(0);
                            return Ok(());
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read the stream; retrying"),
                    }
                }
                Err(reason) => tracing::warn!(%reason, "cannot read the stream; retrying"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// The stream's last sequence, and the epoch of another writer of a message after
    /// `verified`, if any (0: a message that is nobody's).
    async fn foreign_since(&mut self, verified: u64) -> Result<(u64, Option<u64>), String> {
        let last = self.stream.info().await.map_err(|e| e.to_string())?.state.last_sequence;
        for sequence in verified.saturating_add(1)..=last {
            match self.stream.get_raw_message(sequence).await {
                Ok(message) => {
                    let epoch = payload::epoch_of(&message.payload);
                    if epoch != self.epoch {
                        return Ok((last, Some(epoch)));
                    }
                }
                // Gone already (retention): nothing to say about it.
                Err(e) if e.kind() == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok((last, None))
    }
}
