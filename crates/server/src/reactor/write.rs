//! Writing: the connections with something queued, many frames per `writev`, fanning out what
//! arrives meanwhile; and the write hold after a long pass.

use std::time::{Duration, Instant};

use tickgate_core::subscription::ConnKey;

use super::{FLUSH_SLICE, Reactor};
use crate::connection::{CloseReason, WriteOutcome};
use crate::hold::Pass;
use crate::session::{Desk, Outcome};

impl Reactor {
    pub(super) fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key as ConnKey);
            }
        }
    }

    /// Writes every connection that has something queued. With `fan_out`, ticks that arrive
    /// meanwhile are fanned out every [`FLUSH_SLICE`] connections: the connections still to be
    /// written this pass send them with what they already had (no extra `writev`), the others
    /// are marked dirty again and send them next turn.
    /// Returns how many connections it wrote.
    pub(super) fn flush_dirty(&mut self, fan_out: bool) -> usize {
        // Connections queued to while this pass runs go on `self.dirty` for the next one.
        let mut dirty = std::mem::take(&mut self.flushing);
        std::mem::swap(&mut dirty, &mut self.dirty);
        let written = dirty.len();
        self.passing = fan_out;
        for (i, &key) in dirty.iter().enumerate() {
            if fan_out && i % FLUSH_SLICE == FLUSH_SLICE - 1 && !self.inbox.is_empty() {
                self.fan_out();
            }
            self.flush(key as usize);
        }
        self.passing = false;
        dirty.clear();
        self.flushing = dirty;
        written
    }

    pub(super) fn flush(&mut self, key: usize) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.dirty = false;
        let Some(io) = conn.io() else { return };
        let frames_before = self.writes.frames;
        let mut outcome = io.write_out(now, &mut self.writes);
        // Below the soft watermark: announce what the policy dropped, write, and again while
        // spans are owed and the socket takes more.
        let mut slow = false;
        while conn.closing.is_none() && outcome.is_ok() {
            let Some(io) = conn.io() else { break };
            let before = io.out.queue.queued_bytes();
            let mut desk = desk!(self);
            if desk.announce_gaps(&mut io.out) == Outcome::SlowConsumer {
                slow = true;
                break;
            }
            if io.out.queue.queued_bytes() == before {
                break;
            }
            outcome = io.write_out(now, &mut self.writes);
            if !matches!(outcome, Ok(WriteOutcome::Drained)) {
                break;
            }
        }
        conn.frames_sent += self.writes.frames - frames_before;
        match outcome {
            Ok(WriteOutcome::Blocked) => {}
            Ok(WriteOutcome::Capped) => {
                // Its bandwidth cap holds the rest back: written again once it is due, from the
                // wheel (no timer of its own; once, however often it is flushed meanwhile).
                if let Some(io) = conn.io() {
                    if let Some(due) = io.out.bandwidth.due(io.out.queue.queued_bytes(), now, self.now_ms.0) {
                        self.wheel.schedule(key as ConnKey, due);
                        self.turn.bandwidth_waits += 1;
                    }
                }
            }
            Ok(WriteOutcome::Drained) => {
                if let Some(closing) = &mut conn.closing {
                    if !closing.fin_sent {
                        closing.fin_sent = true;
                        // Everything, the close frame included, is out: send FIN, then wait for
                        // the client to hang up so our close is not lost to a reset.
                        if let Some(io) = conn.io() {
                            io.shutdown_write();
                        }
                    }
                }
            }
            Err(_) => return self.remove(key, CloseReason::IoError),
        }
        if slow {
            self.close_slow_consumer(key);
        }
    }

    /// Arms the hold after a pass (fan-out and writes) that took `took` and wrote to `written`
    /// connections, if [`WriteHold::after_pass`] says so (never while shutting down).
    pub(super) fn hold_after(&mut self, took: Duration, written: usize) {
        let Some((write_hold, timer)) = &self.write_hold else { return };
        if self.draining_until.is_some() {
            return;
        }
        let behind = self.fanout_left.0 == 0
            || self.fanout_left.1 == 0
            || self.inbox.len() * 2 > self.config.server.channel_capacity;
        let pass = Pass { took, written, open: self.conns.len(), behind };
        let Some(hold) = write_hold.after_pass(pass) else { return };
        // Taken before arming, so the timer never fires before the hold is over.
        let until = Instant::now() + hold;
        match timer.arm(hold) {
            Ok(()) => {
                self.hold_until = Some(until);
                self.turn.write_holds += 1;
            }
            Err(e) => tracing::debug!(reactor = self.id, error = %e, "hold timer failed; not holding"),
        }
    }
}
