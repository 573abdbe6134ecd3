//! The per-connection write path without a socket: push 16 shared frames into an
//! `OutboundQueue`, fill `io_slices` (up to 64, as one `writev`), and consume everything as if
//! the kernel took it all. Throughput in frames.

use std::hint::black_box;
use std::io::IoSlice;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickgate_benches::{MAX_IOV, aapl, event_frame, quote, slice_bytes, symbols, trade};
use tickgate_core::{Frame, OutboundQueue};
use tickgate_protocol::FrameBuilder;

const FRAMES: usize = 16;

fn outbound_queue(c: &mut Criterion) {
    let table = symbols(100);
    let (id, info) = aapl(&table);
    let mut builder = FrameBuilder::new();
    // 16 distinct frames, trades and quotes mixed about as the feed mixes them.
    let frames: Vec<Frame> = (0..FRAMES as u64)
        .map(|i| {
            let tick = if i % 3 == 0 { trade(id, i + 1) } else { quote(id, i + 1) };
            event_frame(&mut builder, info, &tick)
        })
        .collect();
    let mut queue = OutboundQueue::new();
    let mut group = c.benchmark_group("outbound_queue");
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.bench_function("push_16_writev_64_consume", |b| {
        b.iter(|| {
            for frame in &frames {
                queue.push(frame.clone());
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = queue.io_slices(&mut slices);
            let written = slice_bytes(black_box(&slices[..n]));
            black_box(queue.consume(written))
        })
    });
    group.finish();
    assert!(queue.is_empty());
}

criterion_group!(benches, outbound_queue);
criterion_main!(benches);
