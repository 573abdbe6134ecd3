//! Whether a symbol stopped reaching the readers. Every reader being short of "the last
//! published seq" cannot show a symbol that stopped reaching all of them at once (that seq is
//! only what they saw), so each symbol's own pace is measured: from the seqs the readers
//! received and when, its mean interval between events. A symbol held at the window's end with
//! no event to any reader for [`INTERVALS`] of its intervals (and at least [`FLOOR`]) is stale.
//! Symbols with fewer than [`MIN_EVENTS`] events seen are not judged. Sans IO.

use std::time::{Duration, Instant};

/// Mean intervals of silence after which a symbol is stale (a Poisson stream is silent that
/// long with probability e^-20).
pub const INTERVALS: f64 = 20.0;
/// The least silence judged stale, whatever the symbol's pace.
pub const FLOOR: Duration = Duration::from_secs(1);
/// Seqs a symbol must have advanced by, as seen by the readers, for its pace to be judged.
pub const MIN_EVENTS: u64 = 10;

#[derive(Debug, Clone, Copy)]
struct Seen {
    first: (Instant, u64),
    last: (Instant, u64),
}

/// The first and the latest event the readers received of each symbol.
#[derive(Debug, Clone, Default)]
pub struct Silence {
    symbols: Vec<Option<Seen>>,
}

/// The symbols found stale, and the most silent one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stale {
    pub count: u64,
    /// The most silent stale symbol: its index, its silence and its mean interval, in seconds.
    pub worst: Option<(u32, f64, f64)>,
}

impl Silence {
    pub fn new(n_symbols: usize) -> Self {
        Self { symbols: vec![None; n_symbols] }
    }

    /// A reader received the event `seq` of `symbol` at `now`.
    pub fn event(&mut self, symbol: u32, seq: u64, now: Instant) {
        let Some(seen) = self.symbols.get_mut(symbol as usize) else { return };
        match seen {
            None => *seen = Some(Seen { first: (now, seq), last: (now, seq) }),
            Some(s) if seq > s.last.1 => s.last = (now, seq),
            Some(_) => {}
        }
    }

    /// Judges the symbols `held` at `end`.
    pub fn judge(&self, held: impl IntoIterator<Item = u32>, end: Instant) -> Stale {
        let mut stale = Stale::default();
        for symbol in held {
            let Some(Some(s)) = self.symbols.get(symbol as usize) else { continue };
            let events = s.last.1 - s.first.1;
            if events < MIN_EVENTS {
                continue;
            }
            let interval = s.last.0.duration_since(s.first.0).as_secs_f64() / events as f64;
            let silent = end.saturating_duration_since(s.last.0).as_secs_f64();
            if silent > FLOOR.as_secs_f64().max(INTERVALS * interval) {
                stale.count += 1;
                if stale.worst.is_none_or(|(_, worst, _)| silent > worst) {
                    stale.worst = Some((symbol, silent, interval));
                }
            }
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symbol_silent_for_many_of_its_intervals_is_stale() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut s = Silence::new(4);
        // 0: every 10 ms until 1 s, then nothing until 3 s. 1: every 10 ms throughout.
        // 2: every 200 ms until 2 s (silent 1 s of its 4 s limit). 3: too few events to judge.
        for i in 0..=100 {
            s.event(0, i, ms(i * 10));
        }
        for i in 0..=300 {
            s.event(1, i, ms(i * 10));
        }
        for i in 0..=10 {
            s.event(2, i, ms(i * 200));
        }
        s.event(3, 1, ms(0));
        s.event(3, 5, ms(10));
        let stale = s.judge([0, 1, 2, 3], ms(3_000));
        assert_eq!(stale.count, 1);
        let (symbol, silent, interval) = stale.worst.unwrap();
        assert_eq!(symbol, 0);
        assert!((silent - 2.0).abs() < 1e-6 && (interval - 0.01).abs() < 1e-6, "{silent} {interval}");
        // Under a second of silence is never stale; a symbol not held is not judged.
        assert_eq!(s.judge([0], ms(1_900)).count, 0);
        assert_eq!(s.judge([1, 2, 3], ms(3_000)).count, 0);
        // A repeated or older seq is not news.
        s.event(0, 50, ms(2_999));
        assert_eq!(s.judge([0], ms(3_000)).count, 1);
    }
}
