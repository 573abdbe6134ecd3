//! Housekeeping: close deadlines, the periodic sweep of every connection's timers, shutdown,
//! and publishing the reactor's counters.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tickgate_core::{Frame, Outbox};
use tickgate_feed::ingest::wall_clock_ns;
use tickgate_protocol::{CloseCode, message, ping_frame};

use super::Reactor;
use crate::connection::{AuthState, CloseReason, Phase, WriteCounts};
use crate::http;
use crate::liveness::{Fault, Part};
use crate::stats::{HTTP_STATUSES, ReactorStats, TurnCounters};

/// How often a reactor passes over every connection's timers.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// What a sweep found a connection needs.
#[derive(Debug, Clone, Copy)]
enum Sweep {
    SlowConsumer,
    HandshakeTimeout,
    AuthTimeout,
    TokenExpired,
    IdleTimeout,
    Pinged,
}

/// What the rate and bandwidth caps of a reactor's connections hold, gathered by a sweep.
#[derive(Debug, Default)]
struct CapGauges {
    bandwidth_capped: u64,
    bandwidth_held: u64,
    bandwidth_held_bytes: u64,
    rate_capped_subscriptions: u64,
}

impl CapGauges {
    fn count(&mut self, out: &Outbox) {
        self.rate_capped_subscriptions += out.throttles.len() as u64;
        if out.bandwidth.rate().is_some() {
            self.bandwidth_capped += 1;
            if out.bandwidth.is_holding() && !out.queue.is_empty() {
                self.bandwidth_held += 1;
                self.bandwidth_held_bytes += out.queue.queued_bytes() as u64;
            }
        }
    }

    fn publish(&self, stats: &ReactorStats) {
        stats.bandwidth_capped.store(self.bandwidth_capped, Ordering::Relaxed);
        stats.bandwidth_held.store(self.bandwidth_held, Ordering::Relaxed);
        stats.bandwidth_held_bytes.store(self.bandwidth_held_bytes, Ordering::Relaxed);
        stats.rate_capped_subscriptions.store(self.rate_capped_subscriptions, Ordering::Relaxed);
    }
}

/// How often a reactor publishes its latency histograms.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

impl Reactor {
    /// Publishes counters, enforces close deadlines, runs shutdown. Returns true when the reactor
    /// should stop.
    pub(super) fn housekeeping(&mut self) -> bool {
        let now = self.now;
        let mut i = 0;
        while i < self.closing.len() {
            let key = self.closing[i] as usize;
            match self.conns.get(key).and_then(|c| c.closing.as_ref()) {
                Some(closing) if closing.deadline <= now => {
                    self.closing.swap_remove(i);
                    self.remove(key, CloseReason::IoError);
                }
                Some(_) => i += 1,
                None => {
                    self.closing.swap_remove(i);
                }
            }
        }
        self.connz_turn();
        self.expire_fetches();
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            self.sweep(now);
        }
        if self.shutdown.load(Ordering::Relaxed) && self.draining_until.is_none() {
            let grace = Duration::from_millis(self.config.server.shutdown_grace_ms);
            self.draining_until = Some(now + grace);
            let failure = self.telemetry.liveness.failure();
            self.failed = failure.is_some();
            // After a failure the listener stays: health checks get their 503 until the exit.
            if !self.failed {
                let _ = self.poll.registry().deregister(&mut self.listener);
                // Leave the port at once: a client that reconnects after its 1001 reaches a
                // process still listening on it (several share one with `server.share_port`),
                // not this one's backlog, which nobody accepts from any more.
                let _ = socket2::SockRef::from(&self.listener).shutdown(std::net::Shutdown::Read);
            }
            if failure.is_some_and(|f| f.part == Part::Ingest) {
                self.announce_feed_lost();
            }
            let close = match self.failed {
                true => (CloseCode::InternalError, "gateway failure"),
                false => (CloseCode::GoingAway, "going away"),
            };
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                match self.conns[key].phase {
                    Phase::Ws(_) => self.begin_close(key, Some(close), CloseReason::Shutdown),
                    _ => self.remove(key, CloseReason::Shutdown),
                }
            }
            self.flush_dirty(false);
        }
        self.publish_stats();
        match self.draining_until {
            Some(deadline) => self.conns.is_empty() || now >= deadline,
            None => false,
        }
    }

    /// One pass over every connection's timers and budgets: slow consumers (no write progress
    /// within the deadline, or past the hard watermark), handshakes that take too long, and
    /// keepalive (ping the silent, close the unresponsive).
    pub(super) fn sweep(&mut self, now: Instant) {
        let budget = self.budget;
        let limits = &self.config.limits;
        let (handshake_timeout, ping_interval, idle_timeout) =
            (limits.handshake_timeout_ms, limits.ping_interval_ms, limits.idle_timeout_ms);
        let now_ms = self.now_ms;
        let mut queued_bytes = 0;
        let mut capped = CapGauges::default();
        let mut actions = Vec::new();
        let now_secs = wall_clock_ns() / 1_000_000_000;
        for (key, c) in self.conns.iter_mut() {
            let closing = c.closing.is_some();
            let (opened, last_inbound, last_ping) = (c.opened, c.last_inbound, c.last_ping);
            let upgraded = matches!(c.phase, Phase::Ws(_));
            let auth_timeout = matches!(c.auth, AuthState::Pending { deadline } if deadline <= now);
            let token_expired =
                matches!(&c.auth, AuthState::Authenticated(p) if p.expires_at.is_some_and(|t| t <= now_secs));
            let Some(io) = c.io() else { continue };
            queued_bytes += io.out.queue.queued_bytes() as u64;
            capped.count(&io.out);
            io.out.trim(&budget);
            if closing {
                continue;
            }
            if io.out.wants_kernel_look(&budget, now)
                && let Some(kernel_queued) = io.kernel_queued()
            {
                io.out.kernel_queue_seen(kernel_queued, now);
            }
            let over = io.out.is_over(&budget);
            if io.out.is_stalled(&budget, now) || over {
                actions.push((key, Sweep::SlowConsumer));
            } else if !upgraded && opened.until(now_ms) >= handshake_timeout {
                actions.push((key, Sweep::HandshakeTimeout));
            } else if auth_timeout {
                actions.push((key, Sweep::AuthTimeout));
            } else if token_expired {
                actions.push((key, Sweep::TokenExpired));
            } else if upgraded && last_inbound.until(now_ms) >= idle_timeout {
                actions.push((key, Sweep::IdleTimeout));
            } else if upgraded
                && last_inbound.until(now_ms) >= ping_interval
                && last_ping.until(now_ms) >= ping_interval
            {
                io.out.push_control(ping_frame(), now);
                c.last_ping = now_ms;
                actions.push((key, Sweep::Pinged));
            }
        }
        self.stats.queued_bytes.store(queued_bytes, Ordering::Relaxed);
        capped.publish(&self.stats);
        for (key, action) in actions {
            match action {
                Sweep::SlowConsumer => self.close_slow_consumer(key),
                Sweep::HandshakeTimeout => {
                    // Stalled inside the TLS handshake: there is no channel to answer on.
                    if self.conns.get_mut(key).and_then(|c| c.io()).is_some_and(|io| io.tls_handshaking()) {
                        self.remove(key, CloseReason::HandshakeTimeout);
                        continue;
                    }
                    let response = http::response(408, "Request Timeout", "the upgrade took too long\n");
                    if let Some(i) = HTTP_STATUSES.iter().position(|&s| s == 408) {
                        self.stats.http_by_status[i].fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(io) = self.conns.get_mut(key).and_then(|c| c.io()) {
                        io.out.push_control(Frame::from_bytes(&response), now);
                    }
                    self.begin_close(key, None, CloseReason::HandshakeTimeout);
                }
                Sweep::AuthTimeout => {
                    self.turn.auth_failures += 1;
                    self.begin_close(
                        key,
                        Some((CloseCode::PolicyViolation, "authentication required")),
                        CloseReason::AuthFailed,
                    )
                }
                Sweep::TokenExpired => self.begin_close(
                    key,
                    Some((CloseCode::PolicyViolation, "token expired")),
                    CloseReason::TokenExpired,
                ),
                Sweep::IdleTimeout => {
                    self.begin_close(key, Some((CloseCode::PolicyViolation, "idle timeout")), CloseReason::IdleTimeout)
                }
                Sweep::Pinged => {
                    self.turn.pings_sent += 1;
                    self.mark_dirty(key);
                }
            }
        }
        self.flush_dirty(false);
    }

    /// Tells every client that no source delivers any more (the ingest thread is gone): one
    /// `status` "down" per source, before the close.
    pub(super) fn announce_feed_lost(&mut self) {
        let sources = self.telemetry.stats.ingest.sources.clone();
        for source in &sources {
            let frame = self.builder.text(|out| message::status(out, false, &source.name));
            self.broadcast(&frame);
        }
    }

    /// Queues `frame` for every WebSocket client (not closing, not on the echo route).
    pub(super) fn broadcast(&mut self, frame: &Frame) {
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Ws(_)) && c.closing.is_none() && !c.echo)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.reply(key, frame.clone());
        }
    }

    pub(super) fn publish_stats(&mut self) {
        self.turn.write_calls += self.writes.calls;
        self.turn.bytes_written += self.writes.bytes;
        self.turn.frames_written += self.writes.frames;
        self.writes = WriteCounts::default();
        self.stats.counters.add(&self.turn);
        self.turn = TurnCounters::default();
        self.stats.heartbeat_ns.store(wall_clock_ns(), Ordering::Relaxed);
        self.stats.channel_depth.store(self.inbox.len() as u64, Ordering::Relaxed);
        if self.now.duration_since(self.last_publish) >= PUBLISH_EVERY {
            self.last_publish = self.now;
            self.stats.delivery_latency.add(&self.latency);
            self.stats.fanout_time.add(&self.fanout_time);
            self.latency.reset();
            self.fanout_time.reset();
        }
        self.stats.connections.store(self.conns.len() as u64, Ordering::Relaxed);
        self.stats.subscriptions.store(self.index.total() as u64, Ordering::Relaxed);
        self.stats.history_bytes.store(self.history.bytes() as u64, Ordering::Relaxed);
        self.stats.history_events.store(self.history.events() as u64, Ordering::Relaxed);
        let own = self.builder.deflate_counts();
        for (stat, n) in self.stats.deflate_own.iter().zip([own.messages, own.raw_bytes, own.compressed_bytes]) {
            stat.store(n, Ordering::Relaxed);
        }
        for (stat, n) in self.stats.inflated.iter().zip(crate::deflate::inflated_on_this_thread()) {
            stat.store(n, Ordering::Relaxed);
        }
        self.stats.replays.store(self.replays.len() as u64, Ordering::Relaxed);
    }

    /// A fault a test armed (see `Gateway::start_with_fault_hook`), suffered as the real one.
    pub(super) fn suffer_injected_fault(&self) -> io::Result<()> {
        match self.telemetry.liveness.take_fault(self.id) {
            Some(Fault::ReactorPanic(_)) => panic!("injected fault"),
            Some(Fault::ReactorPollFails(_)) => Err(io::Error::other("injected fault")),
            _ => Ok(()),
        }
    }
}
