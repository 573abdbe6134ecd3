//! The publisher: every tick the ingest thread sequenced, onto the stream, in order.
//!
//! [`start`] connects, reads each symbol's last published seq from the stream (the last
//! message of its subject) so the ingest thread can go on from there, and starts the bus
//! thread. The ingest thread offers each sequenced tick to [`PublisherSink`] (never blocking:
//! a full queue drops the tick, counted, and edges see a `gap`); the bus thread publishes them
//! pipelined, one batch of acknowledgements awaited at a time.
//!
//! **Fencing.** Every message carries `Nats-Expected-Last-Sequence`: the stream sequence this
//! publisher expects its previous message to have. Alone on the stream it is always right; if
//! another publisher wrote in between, the stream refuses the message. The publisher then
//! reads the stream's last message: written by another publisher's epoch, it stops with
//! [`PublishFailure::Fenced`] (the process fails, loudly); written by itself or nothing new,
//! a message of its own was lost, and it carries on from the stream's last sequence.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream::Stream};
use bytes::Bytes;
use tickgate_core::{SymbolId, SymbolTable, Tick};
use tickgate_feed::ingest::SequencedSink;
use tokio::sync::mpsc;

use crate::payload::{self, subject};
use crate::{BusConfig, BusError, BusStats, connect};

/// How often a publisher that lost NATS asks the stream again.
const RETRY: std::time::Duration = std::time::Duration::from_millis(250);

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
    tx: mpsc::Sender<Tick>,
    stats: Arc<BusStats>,
}

impl SequencedSink for PublisherSink {
    fn sequenced(&mut self, tick: &Tick) {
        if self.tx.try_send(*tick).is_err() {
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
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    let config = config.clone();
    let thread_stats = stats.clone();
    let thread = std::thread::Builder::new()
        .name("tickgate-bus-publisher".into())
        .spawn(move || {
            let runtime = match connect::runtime() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return Ok(());
                }
            };
            runtime.block_on(async move {
                let setup = async {
                    let client = connect::connect(&config, thread_stats.clone()).await?;
                    let js = jetstream::new(client);
                    let mut stream = connect::stream(&js, &config).await?;
                    let stream_err = |e: &dyn std::fmt::Display| BusError::Stream {
                        stream: config.stream.clone(),
                        reason: e.to_string(),
                    };
                    let start_last = stream.info().await.map_err(|e| stream_err(&e))?.state.last_sequence;
                    let last_seqs = read_last_seqs(&stream, &config, &symbols).await?;
                    Ok::<_, BusError>((js, stream, start_last, last_seqs))
                };
                let (js, stream, start_last, last_seqs) = match setup.await {
                    Ok(ready) => ready,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let _ = started_tx.send(Ok(last_seqs));
                let subjects: Vec<async_nats::Subject> = (0..symbols.capacity())
                    .map(|i| subject(&config.subject_prefix, &symbols.get(SymbolId(i as u32)).name).into())
                    .collect();
                let mut run = Run {
                    js,
                    stream,
                    stream_name: config.stream.clone(),
                    epoch,
                    start_last,
                    expected: start_last,
                    stats: thread_stats,
                };
                run.publish_all(rx, &symbols, &subjects).await
            })
        })
        .map_err(BusError::Thread)?;
    match started_rx.recv() {
        Ok(Ok(last_seqs)) => Ok(Started { sink: PublisherSink { tx, stats }, last_seqs, thread }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BusError::Ended),
    }
}

/// Each symbol's last published seq: the last message of its subject, if any.
async fn read_last_seqs(
    stream: &Stream,
    config: &BusConfig,
    symbols: &SymbolTable,
) -> Result<Vec<(SymbolId, u64)>, BusError> {
    let mut last = Vec::new();
    for (id, info) in symbols.iter() {
        let subject = subject(&config.subject_prefix, &info.name);
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => match payload::decode(&message.payload, symbols) {
                Ok(bus) => last.push((id, bus.tick.seq)),
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
    stream_name: String,
    epoch: u64,
    /// The stream's last sequence when this publisher started.
    start_last: u64,
    /// The stream sequence of this publisher's last message, as it expects it.
    expected: u64,
    stats: Arc<BusStats>,
}

impl Run {
    async fn publish_all(
        &mut self,
        mut rx: mpsc::Receiver<Tick>,
        symbols: &SymbolTable,
        subjects: &[async_nats::Subject],
    ) -> Result<(), PublishFailure> {
        let mut ticks = Vec::with_capacity(MAX_IN_FLIGHT);
        let mut acks = Vec::with_capacity(MAX_IN_FLIGHT);
        let mut payload = Vec::with_capacity(128);
        while rx.recv_many(&mut ticks, MAX_IN_FLIGHT).await > 0 {
            for tick in ticks.drain(..) {
                payload.clear();
                payload::encode(&mut payload, self.epoch, &symbols.get(tick.symbol).name, &tick);
                let message = PublishMessage::build()
                    .payload(Bytes::copy_from_slice(&payload))
                    .expected_last_sequence(self.expected);
                match self.js.send_publish(subjects[tick.symbol.index()].clone(), message).await {
                    Ok(ack) => {
                        acks.push(ack);
                        self.expected += 1;
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
                self.resync().await?;
            }
        }
        Ok(())
    }

    /// After a refused or lost message: whose is the stream's last message? While NATS cannot
    /// answer (an outage), asks again every [`RETRY`]; ticks sequenced meanwhile wait in the
    /// queue, or are dropped and counted when it is full.
    async fn resync(&mut self) -> Result<(), PublishFailure> {
        loop {
            match self.last_written().await {
                Ok((last, epoch)) => {
                    if last != self.start_last && last > 0 && epoch != self.epoch {
                        return Err(PublishFailure::Fenced { stream: self.stream_name.clone(), other: epoch });
                    }
                    self.expected = last;
                    return Ok(());
                }
                Err(reason) => {
                    tracing::warn!(%reason, "cannot read the stream's last message; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// The stream's last sequence and the epoch of the publisher that wrote it (0: none).
    async fn last_written(&mut self) -> Result<(u64, u64), String> {
        let last = self.stream.info().await.map_err(|e| e.to_string())?.state.last_sequence;
        if last == 0 {
            return Ok((0, 0));
        }
        let message = self.stream.get_raw_message(last).await.map_err(|e| e.to_string())?;
        Ok((last, payload::epoch_of(&message.payload)))
    }
}
