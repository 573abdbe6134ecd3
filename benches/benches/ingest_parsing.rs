//! The ingest thread's cost per upstream message: the normalizer (simd-json straight into a
//! typed struct borrowing from the message, with reused buffers and tape: no allocation) on a
//! trade and a quote of tickgate's upstream schema, against the same normalization with
//! serde_json (the usual choice); and the exchange mapper on a Binance trade (in the
//! combined-stream envelope) and a Coinbase ticker. Every message is a good one: where it
//! carries an upstream sequence number, each iteration gets the next.
//! Messages per second per core = 1 / time.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;
use tickgate_benches::symbols;
use tickgate_core::{SymbolTable, TickKind, parse_fixed};
use tickgate_feed::exchange::{Exchange, ExchangeMapper};
use tickgate_feed::normalize::Normalizer;

const NOW: u64 = 1_700_000_000_000_000_000;
const TRADE: &str =
    r#"{"type":"trade","symbol":"AAPL","price":"187.12","size":"100","ts":1700000000000000000,"seq":SEQ}"#;
const QUOTE: &str = r#"{"type":"quote","symbol":"BTC-USD","bid":"64000.50","bid_size":"0.00012345","ask":"64001.00","ask_size":"1.5","ts":1700000000000000000}"#;
/// Binance's "Trade Streams" example in the combined-stream envelope.
const BINANCE_TRADE: &str = r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1672515782136,"s":"BTCUSDT","t":12345,"p":"64000.01","q":"0.5","T":1672515782136,"m":true,"M":true}}"#;
/// Coinbase's ticker channel example.
const COINBASE_TICKER: &str = r#"{"type":"ticker","sequence":SEQ,"product_id":"ETH-USD","price":"1285.22","open_24h":"1310.79","volume_24h":"245532.79269678","low_24h":"1280.52","high_24h":"1313.8","volume_30d":"9788783.60117027","best_bid":"1285.04","best_bid_size":"0.46688654","best_ask":"1285.27","best_ask_size":"1.56637040","side":"buy","time":"2022-10-19T23:28:22.061769Z","trade_id":370843401,"last_size":"11.4396987"}"#;

/// `template` with its upstream sequence number (`SEQ`) set: the setup of each iteration.
fn numbered(template: &str, seq: &mut u64) -> Vec<u8> {
    *seq += 1;
    template.replace("SEQ", &seq.to_string()).into_bytes()
}

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
    let aliases = HashMap::from([("BTCUSDT".to_string(), "BTC-USD".to_string())]);
    let mut binance = ExchangeMapper::new(Exchange::Binance, table.clone(), &aliases);
    let mut coinbase = ExchangeMapper::new(Exchange::Coinbase, table.clone(), &aliases);
    let mut seq = 1_000_000;
    let mut group = c.benchmark_group("ingest_parsing");
    group.throughput(Throughput::Elements(1));
    for (name, msg) in [("trade", TRADE), ("quote", QUOTE)] {
        group.bench_function(format!("simd_json/{name}"), |b| {
            b.iter_batched_ref(
                || numbered(msg, &mut seq),
                |buf| assert!(normalizer.normalize(black_box(buf), NOW).is_ok()),
                BatchSize::SmallInput,
            )
        });
        let msg = numbered(msg, &mut seq);
        group.bench_function(format!("serde_json/{name}"), |b| {
            b.iter(|| assert!(serde_json_normalize(&table, &names, black_box(&msg)).is_some()))
        });
    }
    group.bench_function("binance/trade", |b| {
        b.iter_batched_ref(
            || BINANCE_TRADE.as_bytes().to_vec(),
            |buf| assert!(matches!(binance.map(black_box(buf), NOW), Ok(Some(_)))),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("coinbase/ticker", |b| {
        b.iter_batched_ref(
            || numbered(COINBASE_TICKER, &mut seq),
            |buf| assert!(matches!(coinbase.map(black_box(buf), NOW), Ok(Some(_)))),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, ingest_parsing);
criterion_main!(benches);
