//! Closing: the close handshake within the linger deadline, slow consumers, and removing a
//! connection with everything it held.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tickgate_core::subscription::ConnKey;
use tickgate_protocol::{CloseCode, close_frame};

use super::{READ_CHUNK, Reactor};
use crate::connection::{Admitted, AuthState, CloseReason, Closing, Connection, Phase, READ_BYTES_PER_TURN};

impl Reactor {
    /// Starts closing: unsubscribes, queues the close frame (if any), and lets the queue drain
    /// within the linger deadline.
    pub(super) fn begin_close(&mut self, key: usize, close: Option<(CloseCode, &str)>, reason: CloseReason) {
        let linger = Duration::from_millis(self.config.limits.close_linger_ms);
        let deadline = self.now + linger;
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.closing.is_some() {
            return;
        }
        for symbol in conn.subs.take().iter() {
            self.index.remove(symbol, key as ConnKey);
        }
        self.replays.forget_connection(key as ConnKey);
        let now = self.now;
        if let Some(io) = conn.io() {
            if reason == CloseReason::SlowConsumer {
                io.out.queue.discard_unstarted();
            }
            // What is left and the close frame go out within the linger deadline, not at a
            // bandwidth cap: no more data follows.
            io.out.bandwidth.set(None, now);
            if let Some((code, text)) = close {
                io.out.push_control(close_frame(code, text), now);
            }
        }
        conn.closing = Some(Box::new(Closing { reason, deadline, fin_sent: false }));
        self.closing.push(key as ConnKey);
        self.mark_dirty(key);
    }

    pub(super) fn close_slow_consumer(&mut self, key: usize) {
        if self.conns.get(key).is_some_and(|c| c.closing.is_none()) {
            self.turn.slow_consumer_closes += 1;
            self.begin_close(key, Some((CloseCode::PolicyViolation, "slow consumer")), CloseReason::SlowConsumer);
        }
    }

    /// Reads and discards what a closing client still sends, until it hangs up, at most
    /// [`READ_BYTES_PER_TURN`] a turn (the rest is read again next turn).
    pub(super) fn read_discarding(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Some(io) = conn.io() else { return };
        let mut chunk = [0u8; READ_CHUNK];
        let mut left = READ_BYTES_PER_TURN as usize;
        loop {
            if left == 0 {
                self.read_later(key);
                return;
            }
            // Through TLS when there is TLS: a refused client's handshake completes, so its
            // answer can go out.
            match io.read_plain(&mut chunk[..left.min(READ_CHUNK)]) {
                Ok(0) => break,
                Ok(n) => left = left.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let reason = conn.closing.as_ref().map_or(CloseReason::ClientVanished, |c| c.reason);
        self.remove(key, reason);
    }

    /// Drops a connection and everything it held.
    pub(super) fn remove(&mut self, key: usize, reason: CloseReason) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        for symbol in conn.subs.take().iter() {
            self.index.remove(symbol, key as ConnKey);
        }
        self.replays.forget_connection(key as ConnKey);
        let reason = conn.closing.as_ref().map_or(reason, |c| c.reason);
        if conn.closing.is_some() && reason == CloseReason::Refused {
            self.refused_answering = self.refused_answering.saturating_sub(1);
        }
        if let Some(io) = conn.io() {
            let _ = self.poll.registry().deregister(&mut io.sock);
            if io.out.deflate_bits != 0 {
                self.telemetry.stats.ingest.deflate.connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.turn.closed += 1;
        self.stats.closed_by_reason[reason.index()].fetch_add(1, Ordering::Relaxed);
        match conn.admitted {
            Admitted::No => {}
            Admitted::InTotal => self.admission.release_total(),
            Admitted::UnderAddress => self.admission.release(conn.peer.ip()),
        }
        if let AuthState::Authenticated(principal) = &conn.auth {
            self.admission.release_user(&principal.user);
        }
        if matches!(conn.phase, Phase::Ws(_)) {
            tracing::info!(
                reactor = self.id,
                peer = %conn.peer,
                session = conn.session,
                duration_ms = conn.opened.until(self.now_ms),
                frames_sent = conn.frames_sent,
                reason = reason.as_str(),
                "connection closed"
            );
        }
    }

    /// After this reactor failed (a panic, a failed `poll`): closes every connection it still
    /// holds, with 1011 for WebSocket clients (one write attempt each), and gives back their
    /// admission slots.
    pub fn abandon(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for &key in &keys {
            if matches!(self.conns.get(key), Some(Connection { phase: Phase::Ws(_), closing: None, .. })) {
                self.begin_close(key, Some((CloseCode::InternalError, "gateway failure")), CloseReason::Shutdown);
            }
        }
        self.flush_dirty(false);
        for key in keys {
            self.remove(key, CloseReason::Shutdown);
        }
        self.publish_stats();
    }
}
