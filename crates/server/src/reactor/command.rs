//! Commands: parsing a client's text message, authentication, and handing the rest to the
//! connection's sans-IO [`Session`](crate::session::Session); replies within the budget.

use std::sync::atomic::Ordering;

use tickgate_core::Frame;
use tickgate_core::subscription::ConnKey;
use tickgate_protocol::{CloseCode, Command, ErrorCode, RequestId, message, parse_command};

use super::Reactor;
use crate::connection::{AuthState, CloseReason, Phase};
use crate::session::{CommandLimits, Desk, Outcome, Session};
use crate::stats::COMMAND_OPS;

impl Reactor {
    pub(super) fn on_command(&mut self, key: usize) {
        self.turn.commands += 1;
        let errors_before = self.turn.command_errors;
        let mut buf = std::mem::take(&mut self.command_buf);
        let op = match parse_command(&mut buf) {
            Err(err) => {
                self.turn.command_errors += 1;
                let frame = self
                    .builder
                    .text(|out| message::error(out, err.id.as_ref(), ErrorCode::BadRequest, &err.message, []));
                self.reply(key, frame);
                "invalid"
            }
            Ok(request) if self.needs_auth(key, &request.command) => {
                self.turn.command_errors += 1;
                let frame = self.builder.text(|out| {
                    message::error(
                        out,
                        request.id.as_ref(),
                        ErrorCode::Unauthenticated,
                        "authenticate first: {\"op\":\"auth\",\"token\":\"...\"}",
                        [],
                    )
                });
                self.reply(key, frame);
                request.command.op()
            }
            Ok(request) => {
                let id = request.id.as_ref();
                let op = request.command.op();
                match &request.command {
                    Command::Auth { token } if self.authenticator.is_some() => self.on_auth(key, id, token),
                    command => {
                        let outcome = self.on_session_command(key, id, command);
                        self.after_session(key, outcome);
                    }
                }
                op
            }
        };
        self.command_buf = buf;
        let op_index = COMMAND_OPS.iter().position(|&o| o == op).unwrap_or(COMMAND_OPS.len() - 1);
        let result = usize::from(self.turn.command_errors > errors_before);
        self.stats.commands[op_index][result].fetch_add(1, Ordering::Relaxed);
    }

    /// Runs a command through the connection's [`Session`].
    pub(super) fn on_session_command(&mut self, key: usize, id: Option<&RequestId>, command: &Command<'_>) -> Outcome {
        let Some(conn) = self.conns.get_mut(key) else { return Outcome::Open };
        if conn.closing.is_some() {
            return Outcome::Open;
        }
        let principal = match &conn.auth {
            AuthState::Authenticated(principal) => Some(&**principal),
            _ => None,
        };
        let Phase::Ws(ws) = &mut conn.phase else { return Outcome::Open };
        let mut session = Session { key: key as ConnKey, subs: &mut conn.subs, out: &mut ws.get_mut().out, principal };
        let mut desk = desk!(self);
        let limits = CommandLimits {
            max_subscriptions: self.config.limits.max_subscriptions,
            max_rate: self.config.limits.max_update_rate,
        };
        session.handle(&mut desk, &mut self.index, limits, id, command)
    }

    /// Acts on what a session call asks: write what it queued, or close a slow consumer.
    pub(super) fn after_session(&mut self, key: usize, outcome: Outcome) {
        match outcome {
            Outcome::Open => self.mark_dirty(key),
            Outcome::SlowConsumer => self.close_slow_consumer(key),
        }
    }

    /// Whether the connection must authenticate before `command`.
    pub(super) fn needs_auth(&self, key: usize, command: &Command<'_>) -> bool {
        matches!(self.conns.get(key).map(|c| &c.auth), Some(AuthState::Pending { .. }))
            && !matches!(command, Command::Auth { .. })
    }

    /// `{"op":"auth"}`: authenticates a connection that brought no token at the handshake.
    pub(super) fn on_auth(&mut self, key: usize, id: Option<&tickgate_protocol::RequestId>, token: &str) {
        // Without an authenticator `auth` is the session's (answered as not enabled).
        let Some(authenticator) = &self.authenticator else { return };
        let refusal = match self.conns.get(key).map(|c| &c.auth) {
            Some(AuthState::Authenticated(_)) => Some("already authenticated".to_string()),
            _ => match authenticator.verify(token) {
                Ok(principal) if self.admission.admit_user(&principal.user, principal.max_connections) => {
                    let frame =
                        self.builder.text(|out| message::authenticated(out, id, &principal.user, principal.expires_at));
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.auth = AuthState::Authenticated(Box::new(principal));
                    }
                    self.set_bandwidth_cap(key);
                    self.reply(key, frame);
                    None
                }
                Ok(_) => Some("too many connections for this user".to_string()),
                Err(e) => Some(e.to_string()),
            },
        };
        let Some(reason) = refusal else { return };
        self.turn.command_errors += 1;
        let closing = matches!(self.conns.get(key).map(|c| &c.auth), Some(AuthState::Pending { .. }));
        let code = if closing { ErrorCode::AuthFailed } else { ErrorCode::BadRequest };
        let frame = self.builder.text(|out| message::error(out, id, code, &reason, []));
        self.reply(key, frame);
        if closing {
            self.turn.auth_failures += 1;
            self.begin_close(key, Some((CloseCode::PolicyViolation, "authentication failed")), CloseReason::AuthFailed);
        }
    }

    /// Queues a frame for one connection, within its budget: a frame that would take the queue
    /// past the hard limit closes the connection as a slow consumer instead. (Echo connections
    /// carry conformance messages larger than the budget: only the write deadline applies.)
    pub(super) fn reply(&mut self, key: usize, frame: Frame) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.closing.is_some() {
            return;
        }
        let echo = conn.echo;
        let Some(io) = conn.io() else { return };
        // Built for this connection alone: compressed for it when it agreed to permessage-deflate
        // (on the echo route every message is, as conformance runners expect).
        let max_len = io.out.deflate_max_len();
        let compressed = if echo {
            self.builder.recompress_always(&frame, max_len)
        } else {
            self.builder.recompress(&frame, max_len)
        };
        let frame = compressed.unwrap_or(frame);
        if echo {
            io.out.push_control(frame, self.now);
        } else if io.out.push_within(frame, &self.budget, self.now).is_err() {
            self.close_slow_consumer(key);
            return;
        }
        self.turn.replies += 1;
        self.mark_dirty(key);
    }
}
