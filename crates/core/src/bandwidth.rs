//! A bandwidth cap per connection: at most so many bytes a second written to its socket.
//!
//! A token bucket of bytes, refilled at the cap and holding at most a quarter of a second of
//! it. The write pass asks [`BandwidthCap::allowance`] before each `writev` and writes no more
//! than that; what is left waits in the queue, where the connection's slow-consumer policy
//! treats it as it treats the bytes of a client that reads too slowly (conflated quotes,
//! dropped events announced by a gap, or a close), against a soft limit lowered to half a
//! second of the cap ([`BandwidthCap::soft_limit`]), and under `conflate` trades are dropped
//! past one more second of it ([`BandwidthCap::trade_limit`]), so that what a capped client
//! receives stays fresh. The sequence contract is the outbox's, unchanged.
//!
//! Few writes: once held back, a connection waits until an eighth of a second of its cap (or
//! everything queued, if less) can go out, so it is written about eight times a second however
//! many frames it is sent. No timer per connection: the caller puts it once on its reactor's
//! wheel at [`BandwidthCap::due`]. Nothing is allocated or read from a clock per frame: the
//! reactor's `now` comes in.
//!
//! The state is boxed: one pointer, null for a connection without a cap.

use std::time::Instant;

use crate::outbox::Budget;

/// The lowest cap, in bytes per second: below it a client could not take one snapshot a second.
pub const MIN_BYTES_PER_SECOND: u64 = 1_024;
/// The highest cap, in bytes per second (1 GiB/s).
pub const MAX_BYTES_PER_SECOND: u64 = 1 << 30;

/// The bucket holds at most this fraction of a second of the cap (the largest burst).
const BURST_PER_SECOND: u32 = 4;
/// A connection held back waits for this fraction of a second of the cap before it is written.
const QUANTUM_PER_SECOND: u32 = 8;
/// Its soft limit is this fraction of a second of the cap...
const SOFT_PER_SECOND: u32 = 2;
/// ... but at least this many bytes (a few frames), and never more than the gateway's.
const MIN_SOFT_LIMIT: usize = 4 * 1024;

/// A cap outside [`MIN_BYTES_PER_SECOND`]..=[`MAX_BYTES_PER_SECOND`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be a whole number of bytes per second from {MIN_BYTES_PER_SECOND} to {MAX_BYTES_PER_SECOND}, got {0}")]
pub struct CapOutOfRange(pub u64);

/// Checks a cap in bytes per second.
pub fn check_cap(bytes_per_second: u64) -> Result<u32, CapOutOfRange> {
    if (MIN_BYTES_PER_SECOND..=MAX_BYTES_PER_SECOND).contains(&bytes_per_second) {
        Ok(bytes_per_second as u32)
    } else {
        Err(CapOutOfRange(bytes_per_second))
    }
}

#[derive(Debug)]
struct Bucket {
    /// Bytes per second.
    rate: u32,
    /// Bytes that may be written now, at most [`Bucket::burst`].
    tokens: f64,
    last: Instant,
    /// When the connection is due on its reactor's wheel (reactor milliseconds), if it is.
    scheduled: Option<u64>,
    /// The last allowance was nothing: bytes are waiting for the cap.
    holding: bool,
}

impl Bucket {
    fn burst(&self) -> f64 {
        f64::from(self.rate / BURST_PER_SECOND)
    }

    /// Bytes worth waking up for: an eighth of a second of the cap, or everything queued.
    fn quantum(&self, queued: usize) -> f64 {
        (queued as f64).min(f64::from(self.rate / QUANTUM_PER_SECOND))
    }

    fn refill(&mut self, now: Instant) {
        if now > self.last {
            let elapsed = now.duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(self.burst());
            self.last = now;
        }
    }
}

/// A connection's bandwidth cap, if it has one.
#[derive(Debug, Default)]
pub struct BandwidthCap(Option<Box<Bucket>>);

impl BandwidthCap {
    /// Sets the cap (bytes per second, checked with [`check_cap`]), or lifts it (`None`). A new
    /// cap starts with a full bucket.
    pub fn set(&mut self, rate: Option<u32>, now: Instant) {
        self.0 = rate.map(|rate| {
            let mut bucket = Bucket { rate, tokens: 0.0, last: now, scheduled: None, holding: false };
            bucket.tokens = bucket.burst();
            Box::new(bucket)
        });
    }

    /// The cap in force, in bytes per second.
    pub fn rate(&self) -> Option<u32> {
        self.0.as_ref().map(|b| b.rate)
    }

    /// The soft limit of the connection's queue: the gateway's (`soft`), lowered for a capped
    /// connection to half a second of its cap (at least a few frames), so that its policy
    /// applies before what it is sent grows stale.
    #[inline]
    pub fn soft_limit(&self, soft: usize) -> usize {
        match &self.0 {
            None => soft,
            Some(b) => soft.min(((b.rate / SOFT_PER_SECOND) as usize).max(MIN_SOFT_LIMIT)),
        }
    }

    /// `budget` with the soft limit of [`BandwidthCap::soft_limit`].
    pub fn budget(&self, budget: &Budget) -> Budget {
        Budget { soft: self.soft_limit(budget.soft), ..*budget }
    }

    /// Queued bytes past which a conflating connection drops trades, given its `budget` (with
    /// the soft limit of [`BandwidthCap::budget`]): the budget's, and for a capped connection at
    /// most one second of its cap past its soft limit, so that what it gets is never more than
    /// about a second and a half old.
    pub fn trade_limit(&self, budget: &Budget) -> usize {
        match &self.0 {
            None => budget.trade_limit(),
            Some(b) => budget.trade_limit().min(budget.soft.saturating_add(b.rate as usize)),
        }
    }

    /// How many bytes the next write may take, of `queued`: all of them without a cap; with
    /// one, what the bucket holds once it holds a quantum (else `0`: wait for [`Self::due`]).
    #[inline]
    pub fn allowance(&mut self, queued: usize, now: Instant) -> usize {
        let Some(b) = &mut self.0 else { return usize::MAX };
        b.refill(now);
        let allowed = if b.tokens >= b.quantum(queued) { b.tokens as usize } else { 0 };
        b.holding = allowed == 0 && queued > 0;
        allowed
    }

    /// Takes `bytes` written from the bucket.
    #[inline]
    pub fn spend(&mut self, bytes: usize) {
        if let Some(b) = &mut self.0 {
            b.tokens -= bytes as f64;
        }
    }

    /// When (reactor milliseconds, `now_ms` being `now`) the bucket holds a quantum of
    /// `queued`, for the caller to put the connection on its wheel; `None` when it is already
    /// due at that time or earlier, or has no cap.
    pub fn due(&mut self, queued: usize, now: Instant, now_ms: u64) -> Option<u64> {
        let b = self.0.as_mut()?;
        b.refill(now);
        let missing = (b.quantum(queued) - b.tokens).max(0.0);
        // One millisecond more: the reactor's milliseconds are truncated.
        let wait_ms = (missing * 1_000.0 / f64::from(b.rate)).ceil() as u64 + 1;
        let due = now_ms.saturating_add(wait_ms);
        match b.scheduled {
            Some(at) if at > now_ms && at <= due => None,
            _ => {
                b.scheduled = Some(due);
                Some(due)
            }
        }
    }

    /// Whether the cap held bytes back at the last write.
    pub fn is_holding(&self) -> bool {
        self.0.as_ref().is_some_and(|b| b.holding)
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |_| std::mem::size_of::<Bucket>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn caps_outside_the_range_are_refused() {
        assert_eq!(check_cap(1_024), Ok(1_024));
        assert_eq!(check_cap(1 << 30), Ok(1 << 30));
        assert_eq!(check_cap(0), Err(CapOutOfRange(0)));
        assert_eq!(check_cap(1_023), Err(CapOutOfRange(1_023)));
        assert_eq!(check_cap(u64::MAX), Err(CapOutOfRange(u64::MAX)));
        let text = CapOutOfRange(5).to_string();
        assert_eq!(text, "must be a whole number of bytes per second from 1024 to 1073741824, got 5");
    }

    #[test]
    fn without_a_cap_everything_goes() {
        let mut cap = BandwidthCap::default();
        let now = Instant::now();
        assert_eq!(cap.allowance(1 << 20, now), usize::MAX);
        assert_eq!(cap.due(1 << 20, now, 0), None);
        assert_eq!(cap.soft_limit(262_144), 262_144);
        assert!(!cap.is_holding());
    }

    #[test]
    fn a_quarter_second_burst_then_the_rate_in_quanta() {
        let t0 = Instant::now();
        let mut cap = BandwidthCap::default();
        cap.set(Some(8_000), t0);
        assert_eq!(cap.allowance(100_000, t0), 2_000, "a full bucket: a quarter of a second");
        cap.spend(2_000);
        assert_eq!(cap.allowance(100_000, t0), 0, "empty");
        assert!(cap.is_holding());
        // A quantum (1,000 bytes at 8,000 B/s) is there in 125 ms: due at 126 on the reactor's clock.
        assert_eq!(cap.due(100_000, t0, 0), Some(126));
        assert_eq!(cap.due(100_000, t0, 0), None, "already due then");
        let t = t0 + Duration::from_millis(100);
        assert_eq!(cap.allowance(100_000, t), 0, "800 bytes: less than a quantum");
        assert_eq!(cap.allowance(500, t), 800, "but more than everything queued");
        let t = t0 + Duration::from_millis(126);
        assert_eq!(cap.allowance(100_000, t), 1_008);
        cap.spend(1_008);
        assert_eq!(cap.due(100_000, t, 126), Some(126 + 126), "the last wake-up fired: due again");
        // Idle for long, the bucket is full again, no more.
        assert_eq!(cap.allowance(100_000, t0 + Duration::from_secs(60)), 2_000);
        cap.set(None, t0);
        assert_eq!(cap.allowance(100_000, t0), usize::MAX);
    }

    #[test]
    fn the_soft_limit_is_half_a_second_of_the_cap() {
        let mut cap = BandwidthCap::default();
        cap.set(Some(100_000), Instant::now());
        assert_eq!(cap.soft_limit(262_144), 50_000);
        assert_eq!(cap.soft_limit(10_000), 10_000, "never above the gateway's");
        cap.set(Some(2_000), Instant::now());
        assert_eq!(cap.soft_limit(262_144), 4_096, "at least a few frames");
        let budget = Budget { soft: 262_144, hard: 1 << 20, write_deadline: Duration::from_secs(10) };
        assert_eq!(cap.budget(&budget), Budget { soft: 4_096, ..budget });
        assert_eq!(cap.trade_limit(&cap.budget(&budget)), 4_096 + 2_000, "a second of the cap past its soft limit");
        assert_eq!(BandwidthCap::default().trade_limit(&budget), budget.trade_limit());
    }

    #[test]
    fn over_any_stretch_at_most_the_rate_plus_a_burst() {
        let t0 = Instant::now();
        let mut cap = BandwidthCap::default();
        cap.set(Some(10_000), t0);
        let mut written = 0usize;
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            let n = cap.allowance(usize::MAX / 2, now);
            if n > 0 {
                let n = n.min(3_000);
                cap.spend(n);
                written += n;
            }
            assert!(written as f64 <= 10_000.0 * ms as f64 / 1_000.0 + 2_500.0, "{written} by {ms} ms");
        }
        assert!(written >= 99_000, "and the rate itself: {written}");
    }
}
