//! What the network sources (TCP and exchange) share: liveness bounds, the reconnect backoff, the
//! session a reader thread runs, and the ingest side that turns a session's events into the
//! status clients are told.
//!
//! A reader thread sends its ticks and its session's two events down one channel, in order:
//! `Live` before the session's first tick (the upstream delivered, or acknowledged the
//! subscription) and `Lost` after its last one. The ingest side stops a batch at each event, so
//! a session's ticks go out after "up" and before "down", never after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::normalize::Normalized;
use crate::source::{Batch, Source};

/// How a network source decides its upstream is alive, and how it retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Nothing heard from the upstream for this long (no line, no WebSocket frame, no pong) ends
    /// the session: the source is down and reconnects.
    pub silence: Duration,
    /// The first wait before reconnecting after a failed attempt or a session that was not
    /// healthy; it doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// A session that delivered and lasted this long was healthy: the backoff starts over.
    pub healthy_after: Duration,
    /// After a "down", "up" is not announced sooner than this (the new session's ticks wait);
    /// also the least wait before reconnecting after a session that delivered.
    pub status_hold: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            silence: Duration::from_secs(20),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            healthy_after: Duration::from_secs(10),
            status_hold: Duration::from_secs(1),
        }
    }
}

impl Liveness {
    /// How often a quiet connection wakes up to check the silence bound and the stop flag.
    pub fn read_timeout(&self) -> Duration {
        (self.silence / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
    }

    /// How often the exchange client pings: four pings fit in the silence bound.
    pub fn ping_interval(&self) -> Duration {
        self.silence / 4
    }
}

/// What /readyz and /metrics say about a network source's upstream.
#[derive(Debug, Default)]
pub struct SourceHealth {
    /// A connection is open (it may not have delivered yet).
    pub connected: AtomicBool,
    /// Connections (re)established after the first.
    pub reconnects: AtomicU64,
    /// Attempts to connect that failed (unreachable, refused, a TLS or WebSocket handshake that
    /// failed), each followed by a retry after the backoff.
    pub connect_failures: AtomicU64,
    /// Events the upstream's own sequence numbers say were skipped.
    pub upstream_gaps: AtomicU64,
    /// Wall-clock ns of the last good message.
    pub last_message_ns: AtomicU64,
    /// Sessions ended because the upstream said nothing for the silence bound.
    pub silences: AtomicU64,
    /// Subscriptions the exchange refused, or left unanswered for the silence bound (each ends
    /// the session).
    pub subscription_errors: AtomicU64,
    /// Listen mode: connections that closed (or stayed silent) without sending anything.
    pub probes: AtomicU64,
    /// Listen mode: connections replaced by a newer one that sent data.
    pub replaced: AtomicU64,
    /// The wait before the next attempt, in ms (0 while a session is open).
    pub backoff_ms: AtomicU64,
    /// Attempts and sessions since the last healthy session.
    pub unhealthy_attempts: AtomicU64,
}

impl SourceHealth {
    /// Counts the upstream gap `from..=to`. Saturating: the sizes come from the upstream, and an
    /// upstream that jumps back and forth by `feed.max_seq_jump` would wrap a plain sum in
    /// seconds.
    pub fn count_gap(&self, from: u64, to: u64) {
        let missed = to.saturating_sub(from).saturating_add(1);
        let _ =
            self.upstream_gaps.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add(missed)));
    }
}

/// The wait between attempts: doubles from `reconnect_min` to `reconnect_max`, each wait drawn
/// between half and all of it (jitter, so restarted gateways do not reconnect in step).
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    /// The least the next wait may be (the status hold, after a session that delivered).
    floor: Duration,
    random: u64,
}

impl Backoff {
    pub fn new(liveness: &Liveness) -> Self {
        let seed = crate::ingest::wall_clock_ns() ^ (std::process::id() as u64).rotate_left(32);
        Self {
            min: liveness.reconnect_min,
            max: liveness.reconnect_max,
            current: liveness.reconnect_min,
            floor: Duration::ZERO,
            random: seed | 1,
        }
    }

    /// The next wait, counted in `health`; the one after is twice as long (up to the cap).
    pub fn next(&mut self, health: &SourceHealth) -> Duration {
        // xorshift64: enough to spread reconnects.
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        let fraction = 0.5 + (self.random % 1_000) as f64 / 2_000.0;
        let wait = self.current.mul_f64(fraction).max(self.take_floor());
        self.current = self.current.saturating_mul(2).min(self.max);
        health.backoff_ms.store(wait.as_millis() as u64, Ordering::Relaxed);
        health.unhealthy_attempts.fetch_add(1, Ordering::Relaxed);
        wait
    }

    /// After a healthy session: the next wait is the shortest again.
    pub fn reset(&mut self, health: &SourceHealth) {
        self.current = self.min;
        health.unhealthy_attempts.store(0, Ordering::Relaxed);
    }

    /// What the next wait may not be shorter than, and forgets it: after a session that
    /// delivered, the status hold. A new session then never reaches the ingest thread while the
    /// hold still keeps the last one's "down" from turning "up", so none queue up behind it.
    pub fn take_floor(&mut self) -> Duration {
        std::mem::take(&mut self.floor)
    }

    /// The wait that [`Backoff::next`] would draw around.
    pub fn current(&self) -> Duration {
        self.current
    }
}

/// Sleeps `wait`, waking early when `stop` is set.
pub fn sleep_unless_stopped(wait: Duration, stop: &AtomicBool) {
    let until = Instant::now() + wait;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// What a reader thread sends the ingest thread.
#[derive(Debug)]
pub enum Upstream {
    Tick(Normalized),
    /// The session delivered (or its subscription was acknowledged): the source is up.
    Live,
    /// The session is over: the source is down.
    Lost,
}

/// One connection's session, on the reader thread.
#[derive(Debug)]
pub struct Session<'a> {
    tx: &'a Sender<Upstream>,
    started: Instant,
    last_heard: Instant,
    live: bool,
}

impl<'a> Session<'a> {
    pub fn start(tx: &'a Sender<Upstream>, health: &SourceHealth) -> Self {
        let now = Instant::now();
        health.connected.store(true, Ordering::Relaxed);
        health.backoff_ms.store(0, Ordering::Relaxed);
        Self { tx, started: now, last_heard: now, live: false }
    }

    /// Something came from the upstream.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    pub fn silent_for(&self) -> Duration {
        self.last_heard.elapsed()
    }

    /// How long the session has waited for its first tick or acknowledgement (None once live).
    pub fn not_live_for(&self) -> Option<Duration> {
        (!self.live).then(|| self.started.elapsed())
    }

    /// The upstream acknowledged the subscription: the source is up.
    pub fn acknowledged(&mut self) {
        if !self.live {
            self.live = true;
            let _ = self.tx.send(Upstream::Live);
        }
    }

    /// Hands a tick to the ingest thread (blocking while it is behind: backpressure on the
    /// upstream). The time blocked is not silence.
    pub fn deliver(&mut self, normalized: Normalized) {
        self.acknowledged();
        let _ = self.tx.send(Upstream::Tick(normalized));
        self.heard();
    }

    /// Ends the session; the backoff starts over if it was healthy (delivered, and lasted).
    pub fn end(self, liveness: &Liveness, health: &SourceHealth, backoff: &mut Backoff) {
        health.connected.store(false, Ordering::Relaxed);
        if self.live {
            let _ = self.tx.send(Upstream::Lost);
            if self.started.elapsed() >= liveness.healthy_after {
                backoff.reset(health);
            }
            backoff.floor = liveness.status_hold;
        }
    }
}

/// The ingest side of a network source: ticks, and whether clients were told it is up.
#[derive(Debug)]
pub struct UpstreamFeed {
    rx: Receiver<Upstream>,
    up: bool,
    down_since: Option<Instant>,
    /// A `Live` taken during the status hold: "up" once the hold is over.
    up_pending: bool,
    status_hold: Duration,
}

impl UpstreamFeed {
    /// A channel (`capacity` ticks) between a reader thread and the ingest thread.
    pub fn channel(capacity: usize, liveness: &Liveness) -> (Sender<Upstream>, Self) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        (tx, Self { rx, up: false, down_since: None, up_pending: false, status_hold: liveness.status_hold })
    }

    fn hold_over(&self) -> bool {
        self.down_since.is_none_or(|t| t.elapsed() >= self.status_hold)
    }

    /// Takes up to `max_batch` ticks, stopping at a change of status so that the ingest thread
    /// announces it before the next session's ticks and after the last session's.
    pub fn poll(&mut self, max_batch: usize, out: &mut Batch) -> usize {
        if self.up_pending {
            if self.hold_over() {
                self.up_pending = false;
                self.up = true;
            }
            return 0;
        }
        let mut n = 0;
        while n < max_batch {
            match self.rx.try_recv() {
                Ok(Upstream::Tick(normalized)) => {
                    out.push(normalized);
                    n += 1;
                }
                Ok(Upstream::Live) => {
                    if self.hold_over() {
                        self.up = true;
                    } else {
                        self.up_pending = true;
                    }
                    break;
                }
                Ok(Upstream::Lost) => {
                    self.up = false;
                    self.down_since = Some(Instant::now());
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        n
    }

    pub fn is_up(&self) -> bool {
        self.up
    }
}

/// A network source as the ingest thread sees it: the ticks and status of its reader thread,
/// which stops when this is dropped.
#[derive(Debug)]
pub struct UpstreamSource {
    feed: UpstreamFeed,
    stop: Arc<AtomicBool>,
}

impl UpstreamSource {
    pub fn new(feed: UpstreamFeed, stop: Arc<AtomicBool>) -> Self {
        Self { feed, stop }
    }
}

impl Drop for UpstreamSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Source for UpstreamSource {
    fn poll(&mut self, _elapsed: Duration, _now_ns: u64, max_batch: usize, out: &mut Batch) -> usize {
        self.feed.poll(max_batch, out)
    }

    fn next_due(&self) -> Option<Duration> {
        // Ticks arrive when they arrive: look again after the batch interval.
        Some(Duration::ZERO)
    }

    fn is_up(&self) -> bool {
        self.feed.is_up()
    }
}

/// At most one log line a second for a repeated event; the next says how many were held back.
#[derive(Debug, Default)]
pub struct LogLimit {
    last: Option<Instant>,
    held: u64,
}

impl LogLimit {
    /// `Some(held back since the last line)` when a line may be logged now.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickgate_core::{SymbolId, Tick, TickKind};

    fn tick(ts: u64) -> Upstream {
        let tick = Tick { symbol: SymbolId(0), seq: 0, ts, gw_ts: 0, kind: TickKind::Trade { price: 1, size: 1 } };
        Upstream::Tick(Normalized::new(tick, None, crate::upstream_seq::Continuity::InOrder))
    }

    #[test]
    fn a_sessions_ticks_come_between_its_up_and_its_down() {
        let liveness = Liveness { status_hold: Duration::ZERO, ..Liveness::default() };
        let (tx, mut feed) = UpstreamFeed::channel(16, &liveness);
        for event in [Upstream::Live, tick(1), tick(2), Upstream::Lost, Upstream::Live, tick(3)] {
            tx.send(event).unwrap();
        }
        let mut batch = Batch::default();
        let mut seen = Vec::new();
        for _ in 0..6 {
            let n = feed.poll(100, &mut batch);
            seen.push((feed.is_up(), n));
        }
        assert_eq!(seen, [(true, 0), (false, 2), (true, 0), (true, 1), (true, 0), (true, 0)], "(up, ticks) per poll");
    }

    #[test]
    fn up_waits_for_the_status_hold_after_a_down_and_its_ticks_wait_with_it() {
        let liveness = Liveness { status_hold: Duration::from_millis(200), ..Liveness::default() };
        let (tx, mut feed) = UpstreamFeed::channel(16, &liveness);
        for event in [Upstream::Live, tick(1), Upstream::Lost, Upstream::Live, tick(2)] {
            tx.send(event).unwrap();
        }
        let mut batch = Batch::default();
        feed.poll(100, &mut batch);
        feed.poll(100, &mut batch);
        feed.poll(100, &mut batch);
        assert!(!feed.is_up());
        assert_eq!(feed.poll(100, &mut batch), 0, "the second Live is taken but held");
        assert_eq!((feed.is_up(), feed.poll(100, &mut batch)), (false, 0), "still held");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!((feed.poll(100, &mut batch), feed.is_up()), (0, true), "up first");
        assert_eq!(feed.poll(100, &mut batch), 1, "then the ticks");
    }

    #[test]
    fn sessions_that_end_during_the_status_hold_still_come_out_up_ticks_down_in_order() {
        let liveness = Liveness { status_hold: Duration::from_millis(50), ..Liveness::default() };
        let (tx, mut feed) = UpstreamFeed::channel(64, &liveness);
        // Three short sessions, all queued before the ingest side looks: the second and third
        // begin and end within the hold of the one before.
        for session in 1..=3 {
            for event in [Upstream::Live, tick(session), Upstream::Lost] {
                tx.send(event).unwrap();
            }
        }
        let mut batch = Batch::default();
        let (mut told, mut up) = (Vec::new(), false);
        let start = Instant::now();
        while told.len() < 9 && start.elapsed() < Duration::from_secs(10) {
            let n = feed.poll(100, &mut batch);
            if n > 0 {
                assert!(up, "ticks only while the clients were told up");
                told.push(format!("{n} ticks"));
            }
            if feed.is_up() != up {
                up = feed.is_up();
                told.push(if up { "up" } else { "down" }.to_string());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let once = ["up", "1 ticks", "down"];
        assert_eq!(told, [once, once, once].concat());
        let ts: Vec<u64> = batch.ticks.iter().map(|t| t.ts).collect();
        assert_eq!(ts, [1, 2, 3], "each session's tick, in order");
    }

    #[test]
    fn the_gap_count_saturates() {
        let health = SourceHealth::default();
        health.count_gap(3, 4);
        assert_eq!(health.upstream_gaps.load(Ordering::Relaxed), 2);
        health.count_gap(1, u64::MAX - 1);
        health.count_gap(1, 1_000_000);
        assert_eq!(health.upstream_gaps.load(Ordering::Relaxed), u64::MAX, "no wrap");
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_starts_over_after_a_healthy_session() {
        let liveness = Liveness {
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(1_000),
            ..Liveness::default()
        };
        let health = SourceHealth::default();
        let mut backoff = Backoff::new(&liveness);
        let waits: Vec<Duration> = (0..8).map(|_| backoff.next(&health)).collect();
        for (wait, base) in waits.iter().zip([100u64, 200, 400, 800, 1_000, 1_000, 1_000, 1_000]) {
            let base = Duration::from_millis(base);
            assert!(*wait >= base / 2 && *wait <= base, "{wait:?} not within half of {base:?}");
        }
        assert_eq!(health.unhealthy_attempts.load(Ordering::Relaxed), 8);
        backoff.reset(&health);
        assert_eq!(backoff.current(), Duration::from_millis(100));
        assert_eq!(health.unhealthy_attempts.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn after_a_session_that_delivered_the_next_attempt_waits_out_the_status_hold() {
        let liveness = Liveness { status_hold: Duration::from_millis(700), ..Liveness::default() };
        let health = SourceHealth::default();
        let mut backoff = Backoff::new(&liveness);
        let (tx, _feed) = UpstreamFeed::channel(16, &liveness);
        Session::start(&tx, &health).end(&liveness, &health, &mut backoff);
        assert!(backoff.next(&health) < Duration::from_millis(700), "nothing delivered: the backoff alone");
        let mut session = Session::start(&tx, &health);
        session.acknowledged();
        session.end(&liveness, &health, &mut backoff);
        assert!(backoff.next(&health) >= Duration::from_millis(700));
        assert!(backoff.next(&health) < Duration::from_millis(700), "once");
    }
}
