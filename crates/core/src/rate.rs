//! A token bucket: how many messages a client may send, sans IO.

/// Allows `rate` events per second on average and bursts of up to `burst`.
///
/// Time is in milliseconds on the caller's clock (a reactor's): 8 bytes where an `Instant`
/// takes 16, in a struct every connection holds.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn new(burst: u32, now_ms: u64) -> Self {
        Self { tokens: f64::from(burst), last_ms: now_ms }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now_ms: u64, rate: f64, burst: u32) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1_000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let t0 = 5_000;
        let mut bucket = TokenBucket::new(50, t0);
        let allowed = (0..100).filter(|_| bucket.allow(t0, 20.0, 50)).count();
        assert_eq!(allowed, 50, "the burst");
        assert!(!bucket.allow(t0 + 10, 20.0, 50), "0.2 tokens refilled");
        assert!(bucket.allow(t0 + 60, 20.0, 50), "1.2 tokens refilled");
        assert!(!bucket.allow(t0 + 30, 20.0, 50), "a clock that goes back refills nothing");
        let later = t0 + 3_600_000;
        let allowed = (0..100).filter(|_| bucket.allow(later, 20.0, 50)).count();
        assert_eq!(allowed, 50, "refills up to the burst, not beyond");
    }
}
