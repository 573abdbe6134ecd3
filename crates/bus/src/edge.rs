//! The edge: its one source is the stream.
//!
//! The bus thread reads the stream with an ordered push consumer that starts with the last
//! message of every subject (each symbol's latest tick: the edge's snapshots) and then goes on
//! live. When the connection drops, async-nats reconnects and the ordered consumer carries on
//! from the last stream sequence it delivered: a short outage is caught up from the stream,
//! with nothing missing while the stream still holds it.
//!
//! [`BusSource`] is what the edge's ingest thread polls. It checks the publisher's numbering
//! of each symbol: a tick already seen is dropped; a jump (ticks sequenced but not read here:
//! not published, or gone from the stream after a long outage) is announced as a `gap` with
//! reason `bus` before the tick; a tick of a new publisher epoch (the publisher restarted) is
//! announced as an `upstream_reset` with reason `publisher_restart`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use tickgate_core::SymbolTable;
use tickgate_feed::ingest::wall_clock_ns;
use tickgate_feed::source::{Batch, Discontinuity, Source, UpstreamGap};
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
    stats: Arc<BusStats>,
    /// Per symbol: the last seq handed on and the publisher epoch that numbered it.
    last: Vec<(u64, u64)>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Connects, finds the stream, starts reading it on the bus thread.
pub fn start(config: &BusConfig, symbols: Arc<SymbolTable>, stats: Arc<BusStats>) -> Result<BusSource, BusError> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let config = config.clone();
    let thread_stats = stats.clone();
    let capacity = symbols.capacity();
    let ((), thread) = connect::start_thread("tickgate-bus-edge", (), move |started| async move {
        let stream_err =
            |e: &dyn std::fmt::Display| BusError::Stream { stream: config.stream.clone(), reason: e.to_string() };
        let messages = async {
            let client = connect::connect(&config, thread_stats.clone()).await?;
            let js = jetstream::new(client.clone());
            let stream = connect::stream(&js, &config, false).await?;
            let consumer = stream
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: client.new_inbox(),
                    filter_subject: format!("{}.>", config.subject_prefix),
                    deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                    ..Default::default()
                })
                .await
                .map_err(|e| stream_err(&e))?;
            consumer.messages().await.map_err(|e| stream_err(&e))
        };
        let messages = match messages.await {
            Ok(messages) => messages,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let _ = started.send(Ok(()));
        tokio::select! {
            () = read(messages, &symbols, &tx, &thread_stats) => {}
            _ = stopped => {}
        }
    })?;
    Ok(BusSource { rx, stats, last: vec![(0, 0); capacity], thread: Some(thread), stop: Some(stop) })
}

/// Reads the stream into `tx` until the source is dropped.
async fn read(
    mut messages: consumer::push::Ordered,
    symbols: &SymbolTable,
    tx: &mpsc::Sender<BusTick>,
    stats: &BusStats,
) {
    let mut reconnects_seen = stats.reconnects.load(Ordering::Relaxed);
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                // The ordered consumer recreates itself after a loss; it says so here.
                tracing::warn!(error = %e, "reading the stream");
                continue;
            }
        };
        if let Ok(info) = message.info() {
            stats.lag_messages.store(info.pending, Ordering::Relaxed);
            let reconnects = stats.reconnects.load(Ordering::Relaxed);
            if reconnects != reconnects_seen {
                reconnects_seen = reconnects;
                if info.pending > 0 {
                    stats.catch_ups.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(behind = info.pending, "catching up from the stream");
                }
            }
        }
        match payload::decode(&message.payload, symbols) {
            Ok(bus) => {
                stats.lag_ns.store(wall_clock_ns().saturating_sub(bus.tick.gw_ts), Ordering::Relaxed);
                if tx.send(bus).await.is_err() {
                    return;
                }
            }
            Err(reject) => {
                stats.rejected[reject.index()].fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject = %message.subject, %reject, "bus message rejected");
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
            return false;
        }
        let before = out.ticks.len();
        let kind = if last_seq == 0 {
            None
        } else if bus.epoch != last_epoch {
            self.stats.publisher_restarts.fetch_add(1, Ordering::Relaxed);
            Some(Discontinuity::Reset(ResetReason::PublisherRestart))
        } else if tick.seq > last_seq + 1 {
            self.stats.gaps.fetch_add(1, Ordering::Relaxed);
            Some(Discontinuity::Skipped { from_seq: last_seq + 1, to_seq: tick.seq - 1, reason: GAP_REASON })
        } else {
            None
        };
        if let Some(kind) = kind {
            out.upstream_gaps.push(UpstreamGap { before, symbol: tick.symbol, kind, source: 0 });
        }
        *last = (tick.seq, bus.epoch);
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
        // Ticks come when they come: look again after one batch interval.
        Some(Duration::ZERO)
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
        BusSource { rx, stats: Arc::default(), last: vec![(0, 0); 2], thread: None, stop: None }
    }

    fn bus(symbol: u32, seq: u64, epoch: u64) -> BusTick {
        BusTick {
            epoch,
            tick: Tick { symbol: SymbolId(symbol), seq, ts: 1, gw_ts: 2, kind: TickKind::Trade { price: 1, size: 1 } },
        }
    }

    #[test]
    fn repeats_are_dropped_jumps_are_gaps_and_a_new_epoch_is_a_reset() {
        let mut source = source();
        let mut out = Batch::default();
        let admitted: Vec<bool> =
            [bus(0, 5, 1), bus(0, 5, 1), bus(0, 4, 1), bus(0, 6, 1), bus(0, 9, 1), bus(1, 3, 1), bus(0, 10, 2)]
                .into_iter()
                .map(|b| source.admit(b, &mut out))
                .collect();
        assert_eq!(admitted, [true, false, false, true, true, true, true]);
        let seqs: Vec<u64> = out.ticks.iter().map(|t| t.seq).collect();
        assert_eq!(seqs, [5, 6, 9, 3, 10]);
        let gaps: Vec<(usize, Discontinuity)> = out.upstream_gaps.iter().map(|g| (g.before, g.kind)).collect();
        assert_eq!(
            gaps,
            [
                (2, Discontinuity::Skipped { from_seq: 7, to_seq: 8, reason: GAP_REASON }),
                (4, Discontinuity::Reset(ResetReason::PublisherRestart)),
            ],
            "the first tick of a symbol is its starting point, not a gap"
        );
    }
}
