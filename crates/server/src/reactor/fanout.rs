//! Fan-out: ticks and control messages from the ingest channel onto subscribers' outboxes, and
//! the delivery latency of what was fanned out.

use std::time::Instant;

use tickgate_core::subscription::ConnKey;
use tickgate_core::{Outbox, SymbolId, Verdict};
use tickgate_feed::fanout::FanoutMsg;
use tickgate_feed::ingest::wall_clock_ns;

use super::Reactor;
use crate::connection::Phase;
use crate::replay::{CURSORS_PER_TURN, REPLAY_BYTES_PER_TURN, REPLAY_PER_TURN, REPLAY_SLICE, REPLAY_TIME_PER_TURN};
use crate::session::{self, Desk, Moment, Outcome};

impl Reactor {
    /// Takes ticks from the ingest channel, within what is left of the turn's allowance
    /// ([`MAX_FANOUT_PER_TURN`] messages, [`MAX_OFFERS_PER_TURN`] offers, checked between
    /// messages), and offers each to its subscribers' outboxes.
    pub(super) fn fan_out(&mut self) {
        let budget = self.budget;
        let at = Moment { now: self.now, ms: self.now_ms.0 };
        let mut offers = 0;
        while self.fanout_left.0 > 0 && offers < self.fanout_left.1 {
            let Some(msg) = self.inbox.try_recv() else { break };
            self.fanout_left.0 -= 1;
            match msg {
                FanoutMsg::Tick { tick, frame, deflated } => {
                    // The compressed frame goes to the connections whose window takes the
                    // message whole (RFC 7692 §7.1.2.1): one comparison per delivery.
                    let (deflated, needs_bits) = match &deflated {
                        Some(d) => (d, window_bits_for(frame.len())),
                        None => (&frame, u8::MAX),
                    };
                    self.lvc.record(&tick);
                    self.history.record(&tick, &frame);
                    let subscribers = self.index.subscribers(tick.symbol);
                    let channels = self.index.channels(tick.symbol);
                    let info = self.symbols.get(tick.symbol);
                    offers += subscribers.len();
                    // Subscribers marked dirty during a write pass are written in the next one.
                    let mut next_pass = 0;
                    let mut offered = 0;
                    for (&key, channels) in subscribers.iter().zip(channels) {
                        if !channels.admits(&tick.kind) {
                            continue;
                        }
                        let conn = &mut self.conns[key as usize];
                        let Phase::Ws(ws) = &mut conn.phase else { continue };
                        let out = &mut ws.get_mut().out;
                        let compressed = out.deflate_bits >= needs_bits;
                        let frame = if compressed { deflated } else { &frame };
                        let verdict = session::deliver_tick(out, &tick, frame, info, &mut self.builder, &budget, at);
                        if compressed && verdict == Verdict::Queued {
                            self.turn.deflated_deliveries += 1;
                        }
                        count(&mut self.turn, &mut self.over_limit, key, verdict);
                        if let Verdict::Throttled { schedule_at } = verdict {
                            // Nothing queued: nothing to write, nothing to time.
                            if let Some(due) = schedule_at {
                                self.wheel.schedule(key, due);
                            }
                            continue;
                        }
                        offered += 1;
                        if !conn.dirty {
                            conn.dirty = true;
                            self.dirty.push(key);
                            next_pass += u64::from(self.passing);
                        }
                    }
                    self.fanned_out.push((tick.gw_ts, offered - next_pass));
                    if next_pass > 0 {
                        self.carried.push((tick.gw_ts, next_pass));
                    }
                }
                FanoutMsg::Notice { symbol, frame } => {
                    self.control_to_subscribers(symbol, |desk, key, out| {
                        desk.deliver_notice(out, key, symbol, frame.clone())
                    });
                }
                FanoutMsg::Broadcast { frame } => self.broadcast(&frame),
                FanoutMsg::Resync { symbol, from_seq, to_seq, reason, values } => {
                    self.lvc.replace(symbol, values);
                    self.history.forget(symbol);
                    let mut skipped = None;
                    self.control_to_subscribers(symbol, |desk, key, out| {
                        let skipped =
                            skipped.get_or_insert_with(|| desk.resync_because(symbol, from_seq, to_seq, reason));
                        desk.deliver_resync(out, key, symbol, skipped)
                    });
                }
            }
        }
        self.fanout_left.1 = self.fanout_left.1.saturating_sub(offers);
        while let Some(key) = self.over_limit.pop() {
            self.close_slow_consumer(key as usize);
        }
    }

    /// Sends the quotes held back by rate caps whose slot has come: the connections due on the
    /// wheel, each once, whatever the number of symbols it throttles. Every connection due is
    /// written this turn: one its bandwidth cap held back is on the wheel too.
    pub(super) fn release_throttled(&mut self) {
        let at = Moment { now: self.now, ms: self.now_ms.0 };
        let mut due = std::mem::take(&mut self.due);
        self.wheel.expire(at.ms, &mut due);
        for &key in &due {
            let Some(conn) = self.conns.get_mut(key as usize) else { continue };
            let Phase::Ws(ws) = &mut conn.phase else { continue };
            let out = &mut ws.get_mut().out;
            let mut throttles = std::mem::take(&mut out.throttles);
            let (symbols, builder, budget) = (&self.symbols, &mut self.builder, &self.budget);
            let (turn, over_limit) = (&mut self.turn, &mut self.over_limit);
            let next = throttles.take_due(at.ms, |held| {
                let info = symbols.get(held.quote.symbol);
                let verdict = session::release(out, &held, info, builder, budget, at.now);
                count(turn, over_limit, key, verdict);
            });
            out.throttles = throttles;
            if let Some(next) = next {
                self.wheel.schedule(key, next);
            }
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
        due.clear();
        self.due = due;
        while let Some(key) = self.over_limit.pop() {
            self.close_slow_consumer(key as usize);
        }
    }

    /// Queues a control frame about `symbol` for each of its subscribers, through their
    /// sessions; the ones it takes past their hard limit are closed at the end of the fan-out.
    pub(super) fn control_to_subscribers(
        &mut self,
        symbol: SymbolId,
        mut deliver: impl FnMut(&mut Desk<'_>, ConnKey, &mut Outbox) -> Outcome,
    ) {
        let mut desk = desk!(self);
        for &key in self.index.subscribers(symbol) {
            let conn = &mut self.conns[key as usize];
            let Phase::Ws(ws) = &mut conn.phase else { continue };
            if deliver(&mut desk, key, &mut ws.get_mut().out) == Outcome::SlowConsumer {
                self.over_limit.push(key);
            }
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Advances the resumes being replayed (see [`crate::replay`]): round robin, each cursor by
    /// at most [`REPLAY_SLICE`] events, all by at most [`REPLAY_PER_TURN`] events,
    /// [`REPLAY_BYTES_PER_TURN`] bytes and [`REPLAY_TIME_PER_TURN`]. Runs after the turn's live
    /// fan-out and writes; the caller writes what it queued.
    pub(super) fn advance_replays(&mut self) {
        self.replay_moved = false;
        if self.replays.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut due = std::mem::take(&mut self.replay_due);
        self.replays.due(CURSORS_PER_TURN, &mut due);
        let (mut left, mut bytes_left) = (REPLAY_PER_TURN, REPLAY_BYTES_PER_TURN);
        for &(key, symbol) in &due {
            if left == 0 || bytes_left == 0 || started.elapsed() >= REPLAY_TIME_PER_TURN {
                break;
            }
            let Some(conn) = self.conns.get_mut(key as usize) else { continue };
            let Phase::Ws(ws) = &mut conn.phase else { continue };
            let mut desk = desk!(self);
            let out = &mut ws.get_mut().out;
            let before = (out.queue.len(), out.queue.queued_bytes());
            let (outcome, walked) = desk.advance_replay(out, &mut self.index, key, symbol, REPLAY_SLICE.min(left));
            let queued = before != (out.queue.len(), out.queue.queued_bytes());
            bytes_left = bytes_left.saturating_sub(out.queue.queued_bytes().saturating_sub(before.1));
            left -= walked;
            self.replays.stopped_at(key, symbol);
            if outcome == Outcome::SlowConsumer {
                self.over_limit.push(key);
            }
            if queued && !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
        self.replay_moved = left < REPLAY_PER_TURN;
        self.replay_due = due;
        while let Some(key) = self.over_limit.pop() {
            self.close_slow_consumer(key as usize);
        }
    }

    /// Times this turn's ticks from their ingest to the end of the write pass that handed them
    /// to the kernel: one histogram entry per tick, weighted by its deliveries.
    pub(super) fn time_deliveries(&mut self, fanout_started: Instant) {
        if self.fanned_out.is_empty() {
            return;
        }
        let written_ns = wall_clock_ns();
        for &(gw_ts, deliveries) in &self.fanned_out {
            if deliveries > 0 {
                let _ = self.latency.record_n(written_ns.saturating_sub(gw_ts).max(1_000), deliveries);
            }
        }
        self.fanned_out.clear();
        // What this pass fanned out to connections it had already written is timed after the next.
        std::mem::swap(&mut self.fanned_out, &mut self.carried);
        let _ = self.fanout_time.record((fanout_started.elapsed().as_nanos() as u64).max(1_000));
    }
}

/// The least window bits (8 to 15) a connection needs to take the compressed message of a
/// frame of `frame_len` bytes (its back-references stay within the message, and the frame's
/// length bounds its payload's).
fn window_bits_for(frame_len: usize) -> u8 {
    // 15 bits take any message: deflate never reaches further back than 2^15 bytes.
    (8..15).find(|bits| frame_len <= 1usize << bits).unwrap_or(15)
}

/// Counts what became of one event offered to a connection; one to close joins `over_limit`.
fn count(turn: &mut crate::stats::TurnCounters, over_limit: &mut Vec<ConnKey>, key: ConnKey, verdict: Verdict) {
    match verdict {
        Verdict::Queued => turn.deliveries += 1,
        Verdict::Conflated => turn.conflated += 1,
        Verdict::Dropped => turn.dropped += 1,
        Verdict::Throttled { .. } => turn.throttled += 1,
        Verdict::Disconnect => over_limit.push(key),
    }
}
