//! What rate caps cost the reactor: 10,000 connections on one busy symbol (1,000 quotes a
//! second, one a millisecond of simulated time), each tick offered to every connection and every
//! queue drained once a millisecond, as the reactor's turn does without the socket. Throughput is
//! in offers (10,000 per tick, 250 ticks an iteration: one slot at 4 updates a second).
//!
//! - `rate_caps/uncapped/10000`: every quote queued for every connection.
//! - `rate_caps/max_rate_4/10000`: every connection capped at 4 updates a second, the path of
//!   `tickgate_server::session::deliver_tick` for a capped connection: the quote is held back
//!   (`Throttles::on_quote`), the connection put on the reactor's `SlotWheel` once per slot, and
//!   at the slot the wheel hands the connections due back and the newest quote goes out with its
//!   own `conflated` frame.
//!
//! The ratio of the two is the figure: compare them within one run (the machine is shared).

use std::hint::black_box;
use std::io::IoSlice;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tickgate_benches::{MAX_IOV, aapl, default_budget, event_frame, quote, slice_bytes, symbols};
use tickgate_core::subscription::ConnKey;
use tickgate_core::{Outbox, Policy, QuoteVerdict, SlotWheel, Verdict};
use tickgate_protocol::{FrameBuilder, message};

const CONNECTIONS: usize = 10_000;
const TICKS_PER_ITERATION: u64 = 250;

fn drain(out: &mut Outbox, now: Instant) {
    while !out.queue.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let n = out.queue.io_slices(&mut slices);
        let written = slice_bytes(black_box(&slices[..n]));
        out.wrote(written, now);
    }
}

fn rate_caps(c: &mut Criterion) {
    let table = symbols(100);
    let (id, info) = aapl(&table);
    let budget = default_budget();
    let mut builder = FrameBuilder::new();
    let now = Instant::now();
    let mut group = c.benchmark_group("rate_caps");
    group.sample_size(10);
    group.throughput(Throughput::Elements(TICKS_PER_ITERATION * CONNECTIONS as u64));

    for rate in [0u16, 4] {
        let mut outboxes: Vec<Outbox> = (0..CONNECTIONS).map(|_| Outbox::new(Policy::Conflate, now)).collect();
        for out in &mut outboxes {
            let _ = out.throttles.set(id, rate);
        }
        let mut wheel = SlotWheel::new();
        let mut due: Vec<ConnKey> = Vec::new();
        let (mut seq, mut ms) = (0u64, 0u64);
        let name = if rate == 0 { "uncapped".to_string() } else { format!("max_rate_{rate}") };
        group.bench_function(BenchmarkId::new(name, CONNECTIONS), |b| {
            b.iter(|| {
                let mut queued = 0u64;
                for _ in 0..TICKS_PER_ITERATION {
                    seq += 1;
                    ms += 1;
                    let tick = quote(id, seq);
                    let frame = event_frame(&mut builder, info, &tick);
                    for (key, out) in outboxes.iter_mut().enumerate() {
                        let verdict = match out.throttles.on_quote(&tick, ms) {
                            None | Some(QuoteVerdict::Send) => out.offer(&tick, &frame, &budget, now, |n| {
                                builder.text(|o| message::event(o, info, &tick, n))
                            }),
                            Some(QuoteVerdict::Held { schedule_at }) => {
                                if let Some(at) = schedule_at {
                                    wheel.schedule(key as ConnKey, at);
                                }
                                Verdict::Throttled { schedule_at }
                            }
                            Some(QuoteVerdict::Release(r)) => {
                                let frame = builder.text(|o| message::event(o, info, &r.quote, r.superseded));
                                out.offer_superseding(&r.quote, &frame, r.superseded, r.from_seq, &budget, now, |n| {
                                    builder.text(|o| message::event(o, info, &r.quote, n))
                                })
                            }
                        };
                        queued += u64::from(verdict == Verdict::Queued);
                    }
                    wheel.expire(ms, &mut due);
                    for &key in &due {
                        let out = &mut outboxes[key as usize];
                        let mut throttles = std::mem::take(&mut out.throttles);
                        let next = throttles.take_due(ms, |r| {
                            let frame = builder.text(|o| message::event(o, info, &r.quote, r.superseded));
                            let verdict =
                                out.offer_superseding(&r.quote, &frame, r.superseded, r.from_seq, &budget, now, |n| {
                                    builder.text(|o| message::event(o, info, &r.quote, n))
                                });
                            queued += u64::from(verdict == Verdict::Queued);
                        });
                        out.throttles = throttles;
                        if let Some(next) = next {
                            wheel.schedule(key, next);
                        }
                    }
                    due.clear();
                    for out in &mut outboxes {
                        drain(out, now);
                    }
                }
                black_box(queued)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, rate_caps);
criterion_main!(benches);
