//! A good upstream message costs no allocation on the normalize path: tickgate's own schema
//! (`Normalizer`), Binance trade and bookTicker events (bare and in the combined-stream
//! envelope) and Coinbase ticker and match messages (`ExchangeMapper`).
//!
//! A counting global allocator (one per test binary, hence this file) counts the allocations
//! made on the calling thread while it is armed; each test warms the parser up with the same
//! messages first, so that its buffers have grown to their size, then normalizes them again and
//! expects a count of zero.

#![allow(unsafe_code)] // GlobalAlloc is an unsafe trait; this one only counts and delegates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use tickgate_core::{AssetClass, SymbolInfo, SymbolTable};
use tickgate_feed::exchange::{Exchange, ExchangeMapper};
use tickgate_feed::normalize::Normalizer;

struct CountingAllocator;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations (and reallocations) `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    ALLOCATIONS.with(Cell::get)
}

const NOW: u64 = 1_700_000_000_000_000_000;
/// Messages per run: enough to see a per-message allocation even if it were amortized.
const RUN: usize = 200;

fn table() -> Arc<SymbolTable> {
    let mut table = SymbolTable::new();
    for (name, price_scale, size_scale) in [("AAPL", 2, 0), ("BTC-USD", 2, 8), ("ETH-USD", 2, 8), ("BNB-BTC", 6, 2)] {
        table.insert(SymbolInfo { name: name.into(), class: AssetClass::Crypto, price_scale, size_scale }).unwrap();
    }
    Arc::new(table)
}

fn aliases() -> HashMap<String, String> {
    HashMap::from([("BTCUSDT".to_string(), "BTC-USD".to_string()), ("BNBBTC".to_string(), "BNB-BTC".to_string())])
}

/// Runs `messages` through `normalize` twice (warm-up, then counted), copying each into one
/// reused buffer first as the sources do; `normalize` says whether the message was accepted.
/// Returns the counted run's allocations.
fn counted(messages: &[Vec<u8>], mut normalize: impl FnMut(&mut Vec<u8>) -> bool) -> u64 {
    let (warm_up, run) = messages.split_at(messages.len() / 2);
    let mut buf = Vec::with_capacity(1024);
    let mut feed = |batch: &[Vec<u8>]| {
        for message in batch {
            buf.clear();
            buf.extend_from_slice(message);
            assert!(normalize(&mut buf), "accepted: {}", String::from_utf8_lossy(message));
        }
    };
    feed(warm_up);
    allocations(|| feed(run))
}

#[test]
fn the_counter_counts() {
    assert_eq!(allocations(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(16)))), 1);
    assert_eq!(allocations(|| drop(std::hint::black_box(Box::new(7u64)))), 1);
}

#[test]
fn tickgate_trades_and_quotes() {
    let mut normalizer = Normalizer::new(table(), &aliases(), 60_000_000_000);
    let messages: Vec<Vec<u8>> = (1..=2 * RUN)
        .map(|seq| {
            if seq % 2 == 0 {
                format!(r#"{{"type":"trade","symbol":"AAPL","price":"187.12","size":"100","ts":{NOW},"seq":{seq}}}"#)
            } else {
                format!(
                    r#"{{"type":"quote","symbol":"BTCUSDT","bid":"64000.5","bid_size":"0.00012345","ask":64001,"ask_size":"1","ts":{NOW},"seq":null}}"#
                )
            }
            .into_bytes()
        })
        .collect();
    let n = counted(&messages, |buf| normalizer.normalize(buf, NOW).is_ok());
    assert_eq!(n, 0, "allocations while normalizing {RUN} good messages of tickgate's schema");
}

#[test]
fn binance_trades_and_book_tickers() {
    let mut mapper = ExchangeMapper::new(Exchange::Binance, table(), &aliases());
    let messages: Vec<Vec<u8>> = (1..=2 * RUN)
        .map(|i| {
            match i % 3 {
                0 => format!(
                    r#"{{"stream":"bnbbtc@trade","data":{{"e":"trade","E":1672515782136,"s":"BNBBTC","t":{i},"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}}}}"#
                ),
                1 => format!(
                    r#"{{"e":"trade","E":1672515782136,"s":"BTCUSDT","t":{i},"p":"64000.01","q":"0.5","T":1672515782136,"m":false,"M":true}}"#
                ),
                _ => format!(
                    r#"{{"u":{i},"s":"BNBBTC","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}}"#
                ),
            }
            .into_bytes()
        })
        .collect();
    let n = counted(&messages, |buf| matches!(mapper.map(buf, NOW), Ok(Some(_))));
    assert_eq!(n, 0, "allocations while mapping {RUN} good Binance messages");
}

#[test]
fn coinbase_tickers_and_matches() {
    let mut mapper = ExchangeMapper::new(Exchange::Coinbase, table(), &aliases());
    let messages: Vec<Vec<u8>> = (1..=2 * RUN as u64)
        .map(|i| {
            let (sequence, trade_id) = (37_475_248_783 + i, 370_843_401 + i / 2);
            if i % 2 == 0 {
                format!(
                    r#"{{"type":"ticker","sequence":{sequence},"product_id":"ETH-USD","price":"1285.22","open_24h":"1310.79","volume_24h":"245532.79269678","low_24h":"1280.52","high_24h":"1313.8","volume_30d":"9788783.60117027","best_bid":"1285.04","best_bid_size":"0.46688654","best_ask":"1285.27","best_ask_size":"1.56637040","side":"buy","time":"2022-10-19T23:28:22.061769Z","trade_id":370843401,"last_size":"11.4396987"}}"#
                )
            } else {
                format!(
                    r#"{{"type":"match","trade_id":{trade_id},"sequence":{sequence},"maker_order_id":"ac928c66-ca53-498f-9c13-a110027a60e8","taker_order_id":"132fb6ae-456b-4654-b4e0-d681ac05cea1","time":"2022-10-19T23:28:22.5Z","product_id":"ETH-USD","size":"5.23512","price":"1285.23","side":"sell"}}"#
                )
            }
            .into_bytes()
        })
        .collect();
    let n = counted(&messages, |buf| matches!(mapper.map(buf, NOW), Ok(Some(n)) if n.upstream_gap.is_none()));
    assert_eq!(n, 0, "allocations while mapping {RUN} good Coinbase messages");
}
