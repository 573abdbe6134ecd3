//! What the ingest thread takes ticks from.

use std::time::Duration;

use tickgate_core::Tick;

/// A source of ticks, polled by the ingest thread: everything due by `elapsed` since the source
/// started comes out, at most `max_batch` at a time. Sources pace themselves; the ingest thread
/// only asks.
pub trait Source: Send {
    /// Appends the ticks due by `elapsed` (`seq` and `gw_ts` are the ingest thread's to stamp);
    /// returns how many.
    fn poll(&mut self, elapsed: Duration, now_ns: u64, max_batch: usize, out: &mut Vec<Tick>) -> usize;

    /// When the next tick is due, or None once the source has nothing more to give.
    fn next_due(&self) -> Option<Duration>;

    /// The source's name in metrics and logs.
    fn name(&self) -> &'static str;

    /// Whether the upstream is there (a network source's connection); clients are told when
    /// this changes.
    fn is_up(&self) -> bool {
        true
    }
}

impl Source for crate::sim::SimMarket {
    fn poll(&mut self, elapsed: Duration, now_ns: u64, max_batch: usize, out: &mut Vec<Tick>) -> usize {
        crate::sim::SimMarket::poll(self, elapsed, now_ns, max_batch, out)
    }

    fn next_due(&self) -> Option<Duration> {
        Some(crate::sim::SimMarket::next_due(self))
    }

    fn name(&self) -> &'static str {
        "sim"
    }
}
