//! Reading: readiness events, the per-turn read allowance, WebSocket messages and their
//! rate limits, and protocol errors.

use std::io;

use tickgate_core::subscription::ConnKey;
use tickgate_protocol::deflate::InflateError;
use tickgate_protocol::{CloseCode, ErrorCode, data_frame, message};
use tungstenite::Message;

use super::{MESSAGES_PER_TURN, Reactor};
use crate::connection::{CloseReason, Connection, Phase};

impl Reactor {
    /// A readiness event: reads the connection, unless it is to be read again anyway (then it is
    /// read once this turn, by [`Reactor::read_again`]).
    pub(super) fn on_readable(&mut self, key: usize) {
        if self.conns.get(key).is_some_and(|c| !c.read_again) {
            self.read(key);
        }
    }

    /// Reads every connection the previous turn left with more to read, each within a new
    /// allowance.
    pub(super) fn read_again(&mut self) {
        let mut revisiting = std::mem::take(&mut self.revisiting);
        for &(key, session) in &revisiting {
            let key = key as usize;
            match self.conns.get_mut(key) {
                Some(conn) if conn.session == session && conn.read_again => {
                    conn.read_again = false;
                    self.read(key);
                }
                // Closed since, and its key perhaps reused.
                _ => {}
            }
        }
        revisiting.clear();
        self.revisiting = revisiting;
    }

    /// Lists a connection whose allowance ran out, to be read again next turn.
    pub(super) fn read_later(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.read_again {
                conn.read_again = true;
                self.to_read_again.push((key as ConnKey, conn.session));
            }
        }
    }

    pub(super) fn read(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        // A connection refused at admission once its header is read is read on (discarding),
        // so that a TLS client's handshake completes and its answer reaches it.
        if conn.proxy_pending
            && conn.closing.is_none()
            && !self.read_proxy_header(key)
            && self.conns.get(key).is_none_or(|c| c.closing.is_none())
        {
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else { return };
        let handshaking = conn.io().is_some_and(|io| io.tls_handshaking());
        if conn.closing.is_some() {
            self.read_discarding(key);
        } else {
            if matches!(conn.phase, Phase::Http { .. }) {
                self.read_http(key);
            }
            if matches!(self.conns.get(key), Some(Connection { phase: Phase::Ws(_), closing: None, .. })) {
                self.read_ws(key);
            }
        }
        // TLS: a handshake that moved on has records to send that no frame will carry, and a
        // read that stopped at its cap goes on next turn.
        let Some(io) = self.conns.get_mut(key).and_then(|c| c.io()) else { return };
        let Some(tls) = &io.tls else { return };
        let (capped, wants_write) = (tls.capped, tls.session.wants_write());
        if handshaking && !tls.session.is_handshaking() {
            self.turn.tls_handshakes += 1;
        }
        if wants_write {
            self.mark_dirty(key);
        }
        if capped {
            self.read_later(key);
        }
    }

    /// Reads WebSocket messages within the turn's allowance: [`MESSAGES_PER_TURN`] messages, and
    /// the bytes and frames of [`crate::connection::ConnIo::grant_turn`]. A connection that used
    /// it up with more to read is read again next turn; the frames read (every kind) are charged to
    /// its frame rate.
    pub(super) fn read_ws(&mut self, key: usize) {
        let Some(io) = self.conns.get_mut(key).and_then(|c| c.io()) else { return };
        io.grant_turn();
        let mut messages = 0;
        let more = loop {
            let Some(conn) = self.conns.get_mut(key) else { return };
            if conn.closing.is_some() {
                return;
            }
            if messages == MESSAGES_PER_TURN {
                break true;
            }
            let echo = conn.echo;
            let Phase::Ws(ws) = &mut conn.phase else { return };
            let result = ws.read();
            if result.is_ok() {
                conn.last_inbound = self.now_ms;
                messages += 1;
            }
            // Every client message spends a token.
            if let Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_)) = &result {
                let limits = &self.config.limits;
                if conn.bucket.allow(self.now_ms.0, limits.messages_per_second, limits.message_burst) {
                    conn.strikes = 0;
                } else {
                    conn.strikes += 1;
                    self.turn.rate_limited += 1;
                    if conn.strikes > limits.message_burst {
                        self.begin_close(
                            key,
                            Some((CloseCode::PolicyViolation, "rate limit exceeded")),
                            CloseReason::RateLimit,
                        );
                        return;
                    }
                    let frame = self.builder.text(|out| {
                        message::error(
                            out,
                            None,
                            ErrorCode::RateLimited,
                            "too many messages: this one was not executed (limits.messages_per_second)",
                            [],
                        )
                    });
                    self.reply(key, frame);
                    continue;
                }
            }
            if !ws.get_ref().out.queue.is_empty() {
                // tungstenite queued a pong or a close reply.
                self.mark_dirty(key);
            }
            match result {
                Ok(Message::Text(text)) if echo => {
                    let frame = data_frame(true, text.as_bytes());
                    self.reply(key, frame);
                }
                Ok(Message::Binary(data)) if echo => {
                    let frame = data_frame(false, &data);
                    self.reply(key, frame);
                }
                Ok(Message::Text(text)) => {
                    self.command_buf.clear();
                    self.command_buf.extend_from_slice(text.as_bytes());
                    self.on_command(key);
                }
                Ok(Message::Binary(_)) => {
                    self.turn.command_errors += 1;
                    let frame = self.builder.text(|out| {
                        message::error(
                            out,
                            None,
                            ErrorCode::UnsupportedFrame,
                            "binary frames are not supported: send JSON commands in text frames",
                            [],
                        )
                    });
                    self.reply(key, frame);
                }
                Ok(Message::Close(_)) => {
                    // tungstenite holds its close reply until the next write: flushing moves it
                    // into the outbox (its error only says the connection is now closing).
                    if let Some(Connection { phase: Phase::Ws(ws), .. }) = self.conns.get_mut(key) {
                        let _ = ws.flush();
                    }
                    self.begin_close(key, None, CloseReason::ClientClose);
                    return;
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Everything valid has been handled; invalid text seen in a frame not yet
                    // complete fails the connection now rather than once it is all in.
                    let Some(Connection { phase: Phase::Ws(ws), .. }) = self.conns.get(key) else { return };
                    if ws.get_ref().invalid_utf8 {
                        self.on_ws_error(key, tungstenite::Error::Utf8(String::from("invalid UTF-8")));
                        return;
                    }
                    // Either the socket is empty, or the allowance is spent and it may not be.
                    break ws.get_ref().turn_spent();
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.on_ws_error(key, e);
                    return;
                }
            }
        };
        if self.charge_frames(key) && more {
            self.read_later(key);
        }
    }

    /// Charges the frames read since the last charge to the connection's frame rate; past
    /// `limits.max_frames_per_second`, closes it with 1008. Returns whether it is still open.
    pub(super) fn charge_frames(&mut self, key: usize) -> bool {
        let max = self.config.limits.max_frames_per_second;
        let now_ms = self.now_ms;
        let Some(conn) = self.conns.get_mut(key) else { return false };
        let Some(io) = conn.io() else { return false };
        let frames = io.take_frames();
        if conn.frame_window.charge(now_ms, u32::from(frames), max) {
            return true;
        }
        self.begin_close(key, Some((CloseCode::PolicyViolation, "too many frames")), CloseReason::TooManyFrames);
        false
    }

    /// A compressed message the connection cannot take: 1009 past the size limit (a deflate
    /// bomb), 1007 for data that does not inflate, 1002 for frames RFC 7692 forbids.
    fn on_inflate_error(&mut self, key: usize, failure: InflateError) {
        let (code, reason) = match failure {
            InflateError::TooBig { .. } => {
                self.turn.inflate_too_big += 1;
                (CloseCode::MessageTooBig, CloseReason::MessageTooBig)
            }
            InflateError::BadData => (CloseCode::InvalidPayload, CloseReason::ProtocolError),
            InflateError::Protocol(_) => (CloseCode::ProtocolError, CloseReason::ProtocolError),
        };
        self.turn.protocol_closes += 1;
        tracing::debug!(reactor = self.id, error = %failure, "closing connection for a compressed message");
        self.begin_close(key, Some((code, &failure.to_string())), reason);
    }

    pub(super) fn on_ws_error(&mut self, key: usize, error: tungstenite::Error) {
        use tungstenite::error::{CapacityError, ProtocolError};
        if let Some(failure) = self.conns.get_mut(key).and_then(|c| c.io()).and_then(|io| io.inflate_error()) {
            return self.on_inflate_error(key, failure);
        }
        let (code, reason, text) = match &error {
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            | tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed => {
                self.remove(key, CloseReason::ClientVanished);
                return;
            }
            tungstenite::Error::Io(_) if self.on_tls_failure(key) => return,
            tungstenite::Error::Io(e) => {
                let reason = match e.kind() {
                    io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    // TLS: the client hung up without close_notify.
                    | io::ErrorKind::UnexpectedEof => {
                        CloseReason::ClientVanished
                    }
                    _ => CloseReason::IoError,
                };
                self.remove(key, reason);
                return;
            }
            tungstenite::Error::Protocol(e) => (CloseCode::ProtocolError, CloseReason::ProtocolError, e.to_string()),
            tungstenite::Error::Utf8(_) => {
                (CloseCode::InvalidPayload, CloseReason::InvalidUtf8, "invalid UTF-8 in text message".to_string())
            }
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => (
                CloseCode::MessageTooBig,
                CloseReason::MessageTooBig,
                format!("message of {size} bytes is over the limit of {max_size}"),
            ),
            tungstenite::Error::Capacity(e) => (CloseCode::MessageTooBig, CloseReason::MessageTooBig, e.to_string()),
            other => (CloseCode::ProtocolError, CloseReason::ProtocolError, other.to_string()),
        };
        self.turn.protocol_closes += 1;
        tracing::debug!(reactor = self.id, error = %error, "closing connection for a protocol error");
        self.begin_close(key, Some((code, &text)), reason);
    }
}
