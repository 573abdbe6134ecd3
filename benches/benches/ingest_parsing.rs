//! The ingest thread's cost per upstream message: the normalizer (simd-json's borrowed value
//! tree, in place) on a trade and a quote of tickgate's upstream schema, against the same
//! normalization parsing into a typed struct with borrowed strings, with simd-json's serde
//! support and with serde_json (the usual choice).
//! Messages per second per core = 1 / time.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;
use tickgate_benches::symbols;
use tickgate_core::{SymbolTable, TickKind, parse_fixed};
use tickgate_feed::normalize::Normalizer;

const NOW: u64 = 1_700_000_000_000_000_000;
const TRADE: &[u8] =
    br#"{"type":"trade","symbol":"AAPL","price":"187.12","size":"100","ts":1700000000000000000,"seq":42}"#;
const QUOTE: &[u8] = br#"{"type":"quote","symbol":"BTC-USD","bid":"64000.50","bid_size":"0.00012345","ask":"64001.00","ask_size":"1.5","ts":1700000000000000000}"#;

/// The same message, parsed with serde_json and normalized the same way.
#[derive(Deserialize)]
struct Upstream<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    symbol: &'a str,
    price: Option<&'a str>,
    size: Option<&'a str>,
    bid: Option<&'a str>,
    bid_size: Option<&'a str>,
    ask: Option<&'a str>,
    ask_size: Option<&'a str>,
    ts: u64,
}

fn serde_json_normalize(
    table: &SymbolTable,
    names: &HashMap<&str, tickgate_core::SymbolId>,
    msg: &[u8],
) -> Option<TickKind> {
    typed_normalize(table, names, serde_json::from_slice(msg).ok()?)
}

/// simd-json with the same typed, borrowing struct (instead of the normalizer's value tree).
fn simd_json_typed_normalize(
    table: &SymbolTable,
    names: &HashMap<&str, tickgate_core::SymbolId>,
    msg: &mut [u8],
) -> Option<TickKind> {
    thread_local! {
        static BUFFERS: std::cell::RefCell<simd_json::Buffers> = std::cell::RefCell::new(simd_json::Buffers::new(1024));
    }
    let m = BUFFERS.with_borrow_mut(|buffers| simd_json::serde::from_slice_with_buffers(msg, buffers).ok())?;
    typed_normalize(table, names, m)
}

fn typed_normalize(
    table: &SymbolTable,
    names: &HashMap<&str, tickgate_core::SymbolId>,
    m: Upstream<'_>,
) -> Option<TickKind> {
    let info = table.get(*names.get(m.symbol)?);
    let d = |v: Option<&str>, scale| parse_fixed(v?, scale).ok();
    let _ = m.ts;
    match m.kind {
        "trade" => Some(TickKind::Trade { price: d(m.price, info.price_scale)?, size: d(m.size, info.size_scale)? }),
        "quote" => Some(TickKind::Quote {
            bid: d(m.bid, info.price_scale)?,
            bid_size: d(m.bid_size, info.size_scale)?,
            ask: d(m.ask, info.price_scale)?,
            ask_size: d(m.ask_size, info.size_scale)?,
        }),
        _ => None,
    }
}

fn ingest_parsing(c: &mut Criterion) {
    let table = Arc::new(symbols(100));
    let names: HashMap<&str, _> = table.iter().map(|(id, s)| (&*s.name, id)).collect();
    let mut normalizer = Normalizer::new(table.clone(), &HashMap::new(), u64::MAX);
    let mut group = c.benchmark_group("ingest_parsing");
    for (name, msg) in [("trade", TRADE), ("quote", QUOTE)] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("simd_json/{name}"), |b| {
            b.iter_batched_ref(
                || msg.to_vec(),
                |buf| black_box(normalizer.normalize(black_box(buf), NOW).is_ok()),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("simd_json_typed/{name}"), |b| {
            b.iter_batched_ref(
                || msg.to_vec(),
                |buf| black_box(simd_json_typed_normalize(&table, &names, black_box(buf))),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("serde_json/{name}"), |b| {
            b.iter(|| black_box(serde_json_normalize(&table, &names, black_box(msg))))
        });
    }
    group.finish();
}

criterion_group!(benches, ingest_parsing);
criterion_main!(benches);
