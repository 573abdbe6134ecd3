//! A reactor's cost per client command: `parse_command` (simd-json, in place) on a typical
//! subscribe of 10 symbols, and on a malformed command (the error path, message included).
//!
//! The parser works in place, so each iteration parses a fresh copy of the command; the copy is
//! made outside the measurement (`iter_batched_ref`). Dropping the result is measured.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tickgate_benches::{MALFORMED_COMMAND, subscribe_command, symbols};
use tickgate_protocol::parse_command;

fn command_parsing(c: &mut Criterion) {
    let table = symbols(100);
    let subscribe = subscribe_command(&table, 10);
    let mut group = c.benchmark_group("command_parsing");
    for (name, command) in [("subscribe_10_symbols", &subscribe[..]), ("malformed", MALFORMED_COMMAND)] {
        group.throughput(Throughput::Bytes(command.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || command.to_vec(),
                |buf| drop(black_box(parse_command(black_box(buf)))),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, command_parsing);
criterion_main!(benches);
