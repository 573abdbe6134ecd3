//! `replay_file`: arbitrary bytes as a recording, replayed looping at the recorded pace.
//!
//! Input: the bytes of a recording file (JSON lines of tickgate's upstream schema, or anything).
//!
//! Contract: never panics (debug builds included: no arithmetic on recorded values wraps);
//! never floods: by a time T into the replay, at most (good lines) × (T / 1 ms + 1) ticks have
//! come out, since a lap of the recording lasts at least the 1 ms pause between laps, whatever
//! its timestamps do; every tick is sane (see [`crate::normalize::assert_sane`]); and exchange
//! time never goes back from one lap to the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tickgate_core::{AssetClass, SymbolInfo, SymbolTable};
use tickgate_feed::replay::Replay;
use tickgate_feed::source::{Batch, Source, SourceStats};

fn table() -> Arc<SymbolTable> {
    let mut t = SymbolTable::new();
    for (name, price_scale, size_scale) in [("AAPL", 2, 0), ("BTC-USD", 2, 8), ("X", 0, 0)] {
        let info = SymbolInfo { name: name.into(), class: AssetClass::Equity, price_scale, size_scale };
        t.insert(info).expect("valid symbol");
    }
    Arc::new(t)
}

/// How far into the replay it is polled, in 1 ms steps.
const STEPS: u32 = 50;

pub fn check(data: &[u8]) {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("tickgate-fuzz-replay-{}-{run}.jsonl", std::process::id()));
    std::fs::write(&path, data).expect("temp file");
    let table = table();
    let stats = Arc::new(SourceStats::new("replay", "replay", 0.0));
    let replay = Replay::open(&path, table.clone(), 1.0, true, stats);
    let mut replay = match replay {
        Ok(replay) => replay,
        Err(e) => panic!("cannot open the recording: {e}"),
    };
    let lines = data.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64;
    let mut batch = Batch::default();
    for step in 0..=STEPS {
        let elapsed = Duration::from_millis(u64::from(step));
        replay.poll(elapsed, 0, 100_000, &mut batch);
        let limit = lines * (u64::from(step) + 1);
        assert!(batch.len() as u64 <= limit, "{} ticks by {elapsed:?} from {lines} lines", batch.len());
    }
    std::fs::remove_file(&path).ok();
    for tick in &batch.ticks {
        let normalized = tickgate_feed::normalize::Normalized {
            tick: *tick,
            upstream_gap: None,
            upstream_reset: None,
            upstream_seq: None,
        };
        crate::normalize::assert_sane(&normalized, &table);
    }
    // Each lap starts after the latest exchange time of the one before it.
    let mut latest = 0u64;
    for (i, tick) in batch.ticks.iter().enumerate() {
        let lap_starts = batch.upstream_gaps.iter().any(|g| {
            g.before == i
                && g.kind
                    == tickgate_feed::source::Discontinuity::Reset(tickgate_feed::upstream_seq::ResetReason::ReplayLoop)
        });
        if lap_starts {
            assert!(tick.ts > latest || latest == u64::MAX, "a lap went back in time");
        }
        latest = latest.max(tick.ts);
    }
}
