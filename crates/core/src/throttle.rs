//! A maximum update rate per subscription: quotes above it are held back and conflated, trades
//! never are.
//!
//! Time is cut into slots of `1 / rate` seconds, aligned on the reactor's clock, so every
//! subscription at the same rate has the same slots. A subscription sends at most one quote per
//! slot: a quote that comes when its slot is used is held back (the newest replaces the one
//! held, which is then superseded), and goes out at the next slot, saying how many quotes it
//! superseded (`"conflated": n`). Nothing is owed across a trade: a trade of the symbol first
//! sends the quote held back, so seq never goes back and the only seqs
//! skipped are quotes counted in a `conflated`.
//!
//! No timer per subscription: a connection with quotes held back is scheduled once, at its
//! earliest due slot, on its reactor's [`SlotWheel`]; the reactor expires the wheel once a turn
//! and releases what is due ([`Throttles::take_due`]).
//!
//! Sans IO: times are milliseconds on the reactor's clock, passed in.

use crate::subscription::ConnKey;
use crate::symbol::SymbolId;
use crate::tick::Tick;

/// Highest rate a subscription may ask for, in updates per second.
pub const MAX_RATE: u16 = 1_000;

/// One throttled subscription of a connection.
#[derive(Debug, Clone)]
struct Throttle {
    symbol: SymbolId,
    rate: u16,
    /// The first slot in which a quote may go out.
    next_slot: u64,
    held: Option<Held>,
}

/// The quotes a subscription holds back: the newest, how many (all but the newest are
/// superseded), and the seq of the first.
#[derive(Debug, Clone, Copy)]
struct Held {
    quote: Tick,
    count: u32,
    from_seq: u64,
}

/// A quote to send that supersedes quotes held back before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub quote: Tick,
    /// How many quotes it supersedes.
    pub superseded: u32,
    /// The first seq it covers: the first quote it supersedes, or its own seq.
    pub from_seq: u64,
}

impl Held {
    /// Sent as the newest quote.
    fn release(self) -> Release {
        Release { quote: self.quote, superseded: self.count - 1, from_seq: self.from_seq }
    }

    /// Superseded by a newer quote sent now.
    fn superseded_by(self, quote: &Tick) -> Release {
        Release { quote: *quote, superseded: self.count, from_seq: self.from_seq }
    }
}

impl Throttle {
    fn slot(&self, now_ms: u64) -> u64 {
        now_ms.saturating_mul(u64::from(self.rate)) / 1_000
    }

    /// The first millisecond of `next_slot`.
    fn due_ms(&self) -> u64 {
        let rate = u64::from(self.rate);
        self.next_slot.saturating_mul(1_000).saturating_add(rate - 1) / rate
    }
}

/// What becomes of a quote offered to a throttled subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteVerdict {
    /// Send it now, as is.
    Send,
    /// Send it now, superseding the quotes held back.
    Release(Release),
    /// Held back until the next slot; the connection must be put on the wheel at
    /// `schedule_at`, if given (it is not scheduled for that time or earlier yet).
    Held { schedule_at: Option<u64> },
}

/// The throttled subscriptions of one connection, by symbol. One pointer, null for a
/// connection without a rate cap (every connection pays for the inline size of its outbox): the
/// fan-out checks that first.
#[derive(Debug, Default)]
pub struct Throttles(Option<Box<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    /// Sorted by symbol; never empty.
    entries: Vec<Throttle>,
    /// When the connection is scheduled on the reactor's wheel, if it is.
    scheduled: Option<u64>,
}

impl Throttles {
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// How many subscriptions are throttled.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |inner| inner.entries.len())
    }

    /// The rate of `symbol`'s subscription, if it is throttled.
    pub fn rate(&self, symbol: SymbolId) -> Option<u16> {
        let inner = self.0.as_ref()?;
        inner.find(symbol).ok().map(|i| inner.entries[i].rate)
    }

    /// Sets `symbol`'s rate (`0`: no cap). A quote held back stays held under the new rate; with
    /// no cap it is handed back, with the quotes it supersedes, for the caller to send or drop.
    pub fn set(&mut self, symbol: SymbolId, rate: u16) -> Option<Release> {
        debug_assert!(rate <= MAX_RATE);
        if rate == 0 {
            let inner = self.0.as_mut()?;
            let i = inner.find(symbol).ok()?;
            let removed = inner.entries.remove(i);
            if inner.entries.is_empty() {
                self.0 = None;
            }
            return removed.held.map(Held::release);
        }
        let inner = self.0.get_or_insert_with(Box::default);
        match inner.find(symbol) {
            Ok(i) => {
                // The next slot starts no earlier than it did under the old rate: changing the
                // rate back and forth does not let more quotes through.
                let t = &mut inner.entries[i];
                let due = t.due_ms();
                t.rate = rate;
                t.next_slot = due.saturating_mul(u64::from(rate)).div_ceil(1_000);
            }
            Err(i) => inner.entries.insert(i, Throttle { symbol, rate, next_slot: 0, held: None }),
        }
        None
    }

    /// Offers a quote; `None` if its symbol is not throttled.
    #[inline]
    pub fn on_quote(&mut self, tick: &Tick, now_ms: u64) -> Option<QuoteVerdict> {
        let inner = self.0.as_mut()?;
        let i = inner.find(tick.symbol).ok()?;
        let t = &mut inner.entries[i];
        let slot = t.slot(now_ms);
        if slot >= t.next_slot {
            t.next_slot = slot + 1;
            return Some(match t.held.take() {
                None => QuoteVerdict::Send,
                Some(held) => QuoteVerdict::Release(held.superseded_by(tick)),
            });
        }
        t.held = Some(match t.held {
            None => Held { quote: *tick, count: 1, from_seq: tick.seq },
            Some(held) => Held { quote: *tick, count: held.count.saturating_add(1), from_seq: held.from_seq },
        });
        let due = t.due_ms();
        let schedule_at = match inner.scheduled {
            Some(at) if at <= due => None,
            _ => {
                inner.scheduled = Some(due);
                Some(due)
            }
        };
        Some(QuoteVerdict::Held { schedule_at })
    }

    /// Takes the quote held back for `symbol`, with how many quotes it supersedes: before a
    /// trade or a control frame about the symbol goes out. It uses no slot (were it to use the
    /// next, a busy stretch of trades would push the slots far ahead of the clock), so a
    /// subscription gets at most its rate of quotes plus one per trade.
    pub fn take_held(&mut self, symbol: SymbolId) -> Option<Release> {
        let inner = self.0.as_mut()?;
        let i = inner.find(symbol).ok()?;
        let t = &mut inner.entries[i];
        Some(t.held.take()?.release())
    }

    /// When the connection must be put on the wheel: the earliest due time of what it holds,
    /// if it is not scheduled for that time or earlier already. Marks it scheduled.
    pub fn to_schedule(&mut self) -> Option<u64> {
        let inner = self.0.as_mut()?;
        let due = inner.entries.iter().filter(|t| t.held.is_some()).map(Throttle::due_ms).min()?;
        match inner.scheduled {
            Some(at) if at <= due => None,
            _ => {
                inner.scheduled = Some(due);
                Some(due)
            }
        }
    }

    /// Hands every quote held back whose slot has come to `send` (with how many quotes it
    /// supersedes), then tells when the connection is next due, if it still holds any.
    pub fn take_due(&mut self, now_ms: u64, mut send: impl FnMut(Release)) -> Option<u64> {
        let inner = self.0.as_mut()?;
        inner.scheduled = None;
        for t in &mut inner.entries {
            let slot = t.slot(now_ms);
            if slot >= t.next_slot {
                if let Some(held) = t.held.take() {
                    t.next_slot = slot + 1;
                    send(held.release());
                }
            }
        }
        self.to_schedule()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |inner| {
            std::mem::size_of::<Inner>() + inner.entries.capacity() * std::mem::size_of::<Throttle>()
        })
    }
}

impl Inner {
    fn find(&self, symbol: SymbolId) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&symbol, |t| t.symbol)
    }
}

/// Buckets of one millisecond each over [`SlotWheel::SPAN_MS`]: when each connection with
/// quotes held back is next due. A slot lasts at most a second (the lowest rate is 1), so one
/// revolution covers every due time; a connection scheduled too far ahead is put in the last
/// bucket and asks again when it fires. Buckets keep their capacity, so a steady load
/// allocates nothing.
#[derive(Debug)]
pub struct SlotWheel {
    buckets: Vec<Vec<ConnKey>>,
    /// The first millisecond not yet expired.
    cursor: u64,
    len: usize,
}

impl Default for SlotWheel {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotWheel {
    pub const SPAN_MS: u64 = 1_024;

    pub fn new() -> Self {
        Self { buckets: vec![Vec::new(); Self::SPAN_MS as usize], cursor: 0, len: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `key` for `due_ms` (a time already past fires at the next expiry).
    pub fn schedule(&mut self, key: ConnKey, due_ms: u64) {
        let due = due_ms.clamp(self.cursor, self.cursor + Self::SPAN_MS - 1);
        self.buckets[(due % Self::SPAN_MS) as usize].push(key);
        self.len += 1;
    }

    /// Moves every key due at or before `now_ms` into `due` (a key may come more than once).
    pub fn expire(&mut self, now_ms: u64, due: &mut Vec<ConnKey>) {
        let end = now_ms.saturating_add(1);
        if self.len == 0 {
            self.cursor = self.cursor.max(end);
            return;
        }
        let mut steps = 0;
        while self.cursor < end && steps < Self::SPAN_MS && self.len > 0 {
            let bucket = &mut self.buckets[(self.cursor % Self::SPAN_MS) as usize];
            self.len -= bucket.len();
            due.append(bucket);
            self.cursor += 1;
            steps += 1;
        }
        self.cursor = self.cursor.max(end);
    }

    /// Milliseconds from `now_ms` to the next key due (0 if one is due already), if any.
    pub fn next_due_in(&self, now_ms: u64) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        (0..Self::SPAN_MS)
            .map(|i| self.cursor + i)
            .find(|&ms| !self.buckets[(ms % Self::SPAN_MS) as usize].is_empty())
            .map(|ms| ms.saturating_sub(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::TickKind;
    use proptest::prelude::*;

    fn quote(seq: u64) -> Tick {
        Tick {
            symbol: SymbolId(1),
            seq,
            ts: 0,
            gw_ts: 0,
            kind: TickKind::Quote { bid: 1, bid_size: 1, ask: 2, ask_size: 1 },
        }
    }

    #[test]
    fn one_quote_per_slot_and_the_newest_goes_out_at_the_next() {
        let mut t = Throttles::default();
        assert_eq!(t.on_quote(&quote(1), 0), None, "not throttled");
        t.set(SymbolId(1), 4); // slots of 250 ms
        assert_eq!(t.on_quote(&quote(1), 10), Some(QuoteVerdict::Send));
        assert_eq!(t.on_quote(&quote(2), 20), Some(QuoteVerdict::Held { schedule_at: Some(250) }));
        assert_eq!(t.on_quote(&quote(3), 30), Some(QuoteVerdict::Held { schedule_at: None }));
        assert_eq!(t.to_schedule(), None, "scheduled when it was first held");
        let mut sent = Vec::new();
        assert_eq!(t.take_due(249, |r| sent.push(r)), Some(250));
        assert!(sent.is_empty(), "not before the slot");
        assert_eq!(t.take_due(250, |r| sent.push(r)), None);
        assert_eq!(
            sent,
            [Release { quote: quote(3), superseded: 1, from_seq: 2 }],
            "the newest, superseding the one held"
        );
        // A new quote in a fresh slot sends at once, superseding whatever is held.
        assert_eq!(t.on_quote(&quote(4), 260), Some(QuoteVerdict::Held { schedule_at: Some(500) }));
        let released = Release { quote: quote(5), superseded: 1, from_seq: 4 };
        assert_eq!(t.on_quote(&quote(5), 510), Some(QuoteVerdict::Release(released)));
        // A trade takes the held quote first, and that uses the next slot.
        assert!(matches!(t.on_quote(&quote(6), 520), Some(QuoteVerdict::Held { .. })));
        assert_eq!(t.take_held(SymbolId(1)), Some(Release { quote: quote(6), superseded: 0, from_seq: 6 }));
        assert_eq!(t.on_quote(&quote(8), 760), Some(QuoteVerdict::Send), "slot 3 is free");
        assert!(matches!(t.on_quote(&quote(9), 770), Some(QuoteVerdict::Held { .. })));
        let released = Release { quote: quote(10), superseded: 1, from_seq: 9 };
        assert_eq!(t.on_quote(&quote(10), 1000), Some(QuoteVerdict::Release(released)));
        // A new rate starts its slots where the old one's next slot starts.
        assert!(t.set(SymbolId(1), 1).is_none());
        assert!(matches!(t.on_quote(&quote(11), 1200), Some(QuoteVerdict::Held { .. })));
        // The wheel fires at 1,000 (scheduled for quote 9): the connection is due again at 2,000.
        assert_eq!(t.take_due(1_000, |_| panic!("not due")), Some(2_000));
        assert!(t.set(SymbolId(1), 4).is_none());
        // Lifting the cap hands the held quote back.
        assert_eq!(t.set(SymbolId(1), 0).map(|r| (r.quote.seq, r.superseded)), Some((11, 0)));
        assert!(t.is_empty());
    }

    proptest! {
        /// Whatever the arrivals, at most `rate` quotes a second go out (plus one a trade
        /// takes early), seqs rise, and every quote is sent or counted as superseded once.
        #[test]
        fn at_most_the_rate_and_every_quote_accounted(
            rate in 1u16..50,
            events in prop::collection::vec((0u64..40, any::<bool>(), any::<bool>()), 1..400),
        ) {
            let mut t = Throttles::default();
            t.set(SymbolId(1), rate);
            let (mut now, mut seq) = (0u64, 0u64);
            let mut sent: Vec<(u64, u64)> = Vec::new(); // (ms, seq) of quotes sent
            let mut accounted = 0u64;
            let mut quotes = 0u64;
            let mut trades_early = 0u64;
            for (step, is_trade, expire) in events {
                now += step;
                if expire {
                    t.take_due(now, |r| { sent.push((now, r.quote.seq)); accounted += 1 + u64::from(r.superseded); });
                }
                seq += 1;
                if is_trade {
                    if let Some(r) = t.take_held(SymbolId(1)) {
                        sent.push((now, r.quote.seq));
                        accounted += 1 + u64::from(r.superseded);
                        trades_early += 1;
                    }
                } else {
                    quotes += 1;
                    match t.on_quote(&quote(seq), now) {
                        Some(QuoteVerdict::Send) => { sent.push((now, seq)); accounted += 1; }
                        Some(QuoteVerdict::Release(r)) => { sent.push((now, seq)); accounted += 1 + u64::from(r.superseded); }
                        _ => {}
                    }
                }
            }
            let _ = t.take_due(u64::MAX / 2_000, |r| { sent.push((now, r.quote.seq)); accounted += 1 + u64::from(r.superseded); });
            prop_assert_eq!(accounted, quotes, "every quote sent or superseded once");
            prop_assert!(sent.windows(2).all(|w| w[0].1 < w[1].1), "seqs rise");
            let span_s = now / 1_000 + 1;
            let bound = u64::from(rate) * span_s + 1 + trades_early + 1;
            prop_assert!(sent.len() as u64 <= bound, "{} quotes in {} s at rate {}", sent.len(), span_s, rate);
        }
    }

    #[test]
    fn the_wheel_fires_each_key_at_its_time() {
        let mut wheel = SlotWheel::new();
        let mut due = Vec::new();
        wheel.expire(100, &mut due);
        wheel.schedule(1, 150);
        wheel.schedule(2, 50); // past: next expiry
        wheel.schedule(3, 100_000); // too far: the last bucket
        assert_eq!(wheel.next_due_in(100), Some(1));
        wheel.expire(120, &mut due);
        assert_eq!(due, [2]);
        assert_eq!(wheel.next_due_in(120), Some(30));
        due.clear();
        wheel.expire(150, &mut due);
        assert_eq!(due, [1]);
        due.clear();
        wheel.expire(5_000, &mut due);
        assert_eq!(due, [3]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_due_in(5_000), None);
    }
}
