//! The ingest thread's per-tick cost: encoding one event into its shared frame with
//! `FrameBuilder::text` + `message::event` (JSON into the scratch buffer, header in front, one
//! copy into an `Arc<[u8]>`). Built once per tick, whatever the number of subscribers.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickgate_benches::{aapl, event_frame, quote, symbols, trade};
use tickgate_protocol::FrameBuilder;

fn frame_building(c: &mut Criterion) {
    let table = symbols(100);
    let (id, info) = aapl(&table);
    let mut builder = FrameBuilder::new();
    let mut group = c.benchmark_group("frame_building");
    for (name, tick) in [("trade", trade(id, 1_234_567)), ("quote", quote(id, 1_234_568))] {
        let len = event_frame(&mut builder, info, &tick).len();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| b.iter(|| event_frame(&mut builder, info, black_box(&tick))));
    }
    group.finish();
}

criterion_group!(benches, frame_building);
criterion_main!(benches);
