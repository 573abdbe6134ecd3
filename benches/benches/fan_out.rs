//! The reactor's per-delivery path: one tick's shared frame offered to M outboxes with
//! `Outbox::offer` below the soft watermark (a reference-count bump and a push), for M = 1, 100
//! and 10,000 subscribers. Throughput is in deliveries (M per tick).
//!
//! - `fan_out/offer_and_drain/M`: one tick offered to all M outboxes, then each drained as the
//!   reactor's write does it without the socket (`io_slices` into 64 slices, `wrote` with all of
//!   it). Everything is measured.
//! - `fan_out/offer/M`: only the offers are measured. Ticks are offered in runs (256 per
//!   outbox for M = 1, 40 for M = 100, 16 for M = 10,000: every queue stays far below the soft
//!   watermark), and the queues are drained between runs outside the measurement.
//! - `fan_out/offer_and_drain_with_history/M`: `offer_and_drain` plus what the reactor adds per
//!   tick for resumes: recording the tick and its frame in a full `History` (default bounds, so
//!   each record also evicts the oldest event). The ratio to `offer_and_drain/M` is the cost of
//!   the history on the live path.

use std::hint::black_box;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tickgate_benches::{MAX_IOV, aapl, default_budget, event_frame, quote, slice_bytes, symbols};
use tickgate_core::{Budget, History, HistoryLimits, Outbox, Policy, SymbolInfo, Tick, Verdict};
use tickgate_protocol::{FrameBuilder, message};

const SUBSCRIBERS: [usize; 3] = [1, 100, 10_000];

/// Drains every outbox as the reactor's write does, with a socket that takes everything.
fn drain(outboxes: &mut [Outbox], now: Instant) {
    for out in outboxes {
        while !out.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = out.queue.io_slices(&mut slices);
            let written = slice_bytes(black_box(&slices[..n]));
            out.wrote(written, now);
        }
    }
}

/// Offers `tick`'s frame to every outbox, as `Reactor::fan_out` does; returns the deliveries.
fn offer_all(
    outboxes: &mut [Outbox],
    tick: &Tick,
    frame: &tickgate_core::Frame,
    info: &SymbolInfo,
    budget: &Budget,
    builder: &mut FrameBuilder,
    now: Instant,
) -> u64 {
    let mut queued = 0;
    for out in outboxes.iter_mut() {
        let verdict = out
            .offer(tick, frame, budget, now, |superseded| builder.text(|o| message::event(o, info, tick, superseded)));
        queued += u64::from(verdict == Verdict::Queued);
    }
    queued
}

fn fan_out(c: &mut Criterion) {
    let table = symbols(100);
    let (id, info) = aapl(&table);
    let budget = default_budget();
    let mut builder = FrameBuilder::new();
    let tick = quote(id, 1_234_567);
    let frame = event_frame(&mut builder, info, &tick);
    let now = Instant::now();
    let mut group = c.benchmark_group("fan_out");

    for m in SUBSCRIBERS {
        let mut outboxes: Vec<Outbox> = (0..m).map(|_| Outbox::new(Policy::Conflate, now)).collect();
        group.throughput(Throughput::Elements(m as u64));
        group.bench_with_input(BenchmarkId::new("offer_and_drain", m), &m, |b, &m| {
            b.iter(|| {
                let queued = offer_all(&mut outboxes, &tick, &frame, info, &budget, &mut builder, now);
                drain(&mut outboxes, now);
                assert_eq!(queued, m as u64, "every offer is below the soft watermark");
            })
        });

        let limits =
            HistoryLimits { events_per_symbol: 1024, bytes_per_symbol: 1 << 20, events: 1 << 20, bytes: 256 << 20 };
        let mut history = History::new(table.capacity(), limits);
        let mut live = tick;
        group.bench_with_input(BenchmarkId::new("offer_and_drain_with_history", m), &m, |b, &m| {
            b.iter(|| {
                live.seq += 1;
                history.record(black_box(&live), &frame);
                let queued = offer_all(&mut outboxes, &live, &frame, info, &budget, &mut builder, now);
                drain(&mut outboxes, now);
                assert_eq!(queued, m as u64, "every offer is below the soft watermark");
            })
        });

        let run = (4096 / m).clamp(16, 256) as u64;
        assert!((run as usize) * frame.len() < budget.soft, "a run stays below the soft watermark");
        group.bench_with_input(BenchmarkId::new("offer", m), &m, |b, &m| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let ticks = left.min(run);
                    let start = Instant::now();
                    let mut queued = 0;
                    for _ in 0..ticks {
                        queued += offer_all(&mut outboxes, &tick, &frame, info, &budget, &mut builder, now);
                    }
                    measured += start.elapsed();
                    assert_eq!(queued, ticks * m as u64, "every offer is below the soft watermark");
                    drain(&mut outboxes, now);
                    left -= ticks;
                }
                measured
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
