//! A token bucket: how many messages a client may send, sans IO.

use std::time::Instant;

/// Allows `rate` events per second on average and bursts of up to `burst`.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, now: Instant) -> Self {
        Self { tokens: f64::from(burst), last: now }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant, rate: f64, burst: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
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
    use std::time::Duration;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(50, t0);
        let allowed = (0..100).filter(|_| bucket.allow(t0, 20.0, 50)).count();
        assert_eq!(allowed, 50, "the burst");
        assert!(!bucket.allow(t0 + Duration::from_millis(10), 20.0, 50), "0.2 tokens refilled");
        assert!(bucket.allow(t0 + Duration::from_millis(60), 20.0, 50), "1.2 tokens refilled");
        let later = t0 + Duration::from_secs(3600);
        let allowed = (0..100).filter(|_| bucket.allow(later, 20.0, 50)).count();
        assert_eq!(allowed, 50, "refills up to the burst, not beyond");
    }
}
