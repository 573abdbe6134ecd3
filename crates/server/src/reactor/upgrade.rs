//! The HTTP phase: reading the request head, answering the plain routes (health, readiness,
//! metrics), and upgrading to WebSocket after deciding the connection's authentication.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tickgate_core::Frame;
use tickgate_feed::ingest::wall_clock_ns;
use tickgate_protocol::message;
use tungstenite::WebSocket;
use tungstenite::protocol::Role;

use super::{READ_CHUNK, Reactor};
use crate::connection::{AuthState, CloseReason, Phase};
use crate::deflate::Inflating;
use crate::http::{self, Parsed, Route, Surface};
use crate::stats::HTTP_STATUSES;
use tickgate_protocol::deflate::Negotiation;

impl Reactor {
    /// Reads the request head and answers it or upgrades.
    pub(super) fn read_http(&mut self, key: usize) {
        let max_head = self.config.limits.max_request_head;
        let has_admin = self.config.server.admin_listen.is_some();
        let Some(conn) = self.conns.get_mut(key) else { return };
        let surface = if conn.admin {
            Surface::Admin
        } else {
            Surface::Public { operational: !has_admin, echo: self.config.server.echo_route }
        };
        let Phase::Http { io, head } = &mut conn.phase else { return };
        let mut chunk = [0u8; READ_CHUNK];
        let parsed = loop {
            let room = (max_head - head.len().min(max_head)).min(READ_CHUNK);
            if room == 0 {
                break http::parse_and_route(head, max_head, surface, &self.config.limits.allowed_origins);
            }
            match io.read_plain(&mut chunk[..room]) {
                Ok(0) => {
                    self.remove(key, CloseReason::ClientVanished);
                    return;
                }
                Ok(n) => {
                    if head.is_empty() && io.tls.is_none() && chunk[0] == crate::tls::HANDSHAKE_RECORD {
                        self.answer_tls_on_plain_port(key);
                        return;
                    }
                    head.extend_from_slice(&chunk[..n]);
                    if let Parsed::Complete(route) =
                        http::parse_and_route(head, max_head, surface, &self.config.limits.allowed_origins)
                    {
                        break Parsed::Complete(route);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    if !self.on_tls_failure(key) {
                        self.remove(key, CloseReason::ClientVanished);
                    }
                    return;
                }
            }
        };
        let response = match parsed {
            Parsed::Partial => return,
            Parsed::Complete(Route::Upgrade { .. }) if self.telemetry.liveness.has_failed() => http::response(
                503,
                "Service Unavailable",
                "the gateway failed and is stopping; connect again once it has restarted\n",
            ),
            Parsed::Complete(Route::Upgrade { response, head_len, echo, token, deflate }) => {
                if !self.take_forwarded_address(key) {
                    return;
                }
                match self.authorize(token.as_deref()) {
                    // The echo route has no commands, so no `auth` message: a token must come
                    // with the upgrade request.
                    Ok(AuthState::Pending { .. }) if echo => http::response(
                        401,
                        "Unauthorized",
                        "authentication is on: the echo route needs a token with the upgrade request\n",
                    ),
                    Ok(auth) => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.auth = auth;
                        }
                        return self.upgrade(key, response, head_len, echo, deflate);
                    }
                    Err(refusal) => refusal,
                }
            }
            Parsed::Complete(Route::Respond(response)) => response,
            Parsed::Complete(Route::Health { head }) => {
                // The failure's text (a panic message, an OS error) is for operators: with an admin
                // port, the public one only says that the gateway failed.
                let private = matches!(surface, Surface::Public { operational: false, .. });
                let full = match self.telemetry.liveness.failure() {
                    None => http::response(200, "OK", "ok\n"),
                    Some(_) if private => http::response(503, "Service Unavailable", "failed\n"),
                    Some(failure) => http::response(503, "Service Unavailable", &format!("failed: {failure}\n")),
                };
                if head { http::without_body(full) } else { full }
            }
            Parsed::Complete(Route::Metrics { head }) => {
                let full = match crate::metrics::render(&self.telemetry, wall_clock_ns()) {
                    Ok(text) => http::response_typed(200, "OK", "text/plain; version=0.0.4; charset=utf-8", &text),
                    Err(e) => http::response(500, "Internal Server Error", &format!("cannot render metrics: {e}\n")),
                };
                if head { http::without_body(full) } else { full }
            }
            Parsed::Complete(Route::Connz { head, query }) => match self.ask_connz(key, &query, head) {
                Some(refusal) => refusal,
                // Parked: answered once every reactor has posted its part.
                None => return,
            },
            Parsed::Complete(Route::Ready { head }) => {
                let readiness = crate::metrics::readiness(&self.telemetry, wall_clock_ns());
                let (status, reason) = if readiness.ready() { (200, "OK") } else { (503, "Service Unavailable") };
                let full = http::response_typed(status, reason, "application/json", &readiness.body);
                if head { http::without_body(full) } else { full }
            }
        };
        self.answer_http(key, &response);
    }

    /// Sends a plain HTTP response and closes the connection.
    pub(super) fn answer_http(&mut self, key: usize, response: &[u8]) {
        let status = http::status_of(response);
        if let Some(i) = HTTP_STATUSES.iter().position(|&s| s == status) {
            self.stats.http_by_status[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(io) = self.conns.get_mut(key).and_then(|c| c.io()) {
            io.out.push_control(Frame::from_bytes(response), self.now);
        }
        self.turn.http_responses += 1;
        self.begin_close(key, None, CloseReason::HttpAnswered);
    }

    pub(super) fn upgrade(&mut self, key: usize, response: Vec<u8>, head_len: usize, echo: bool, deflate: Negotiation) {
        let agreed = if self.config.server.permessage_deflate {
            for why in &deflate.declined {
                self.stats.deflate_declined[why.index()].fetch_add(1, Ordering::Relaxed);
            }
            deflate.agreed
        } else {
            None
        };
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Phase::Http { mut io, head } = std::mem::replace(&mut conn.phase, Phase::Moving) else { return };
        let mut early = head[head_len..].to_vec();
        match agreed {
            Some(agreed) => {
                let response = http::with_extensions(response, &agreed.response());
                io.out.push_control(Frame::from_bytes(&response), self.now);
                io.out.deflate_bits = agreed.server_max_window_bits;
                let mut inflating = Box::new(Inflating::new(self.config.limits.max_message_size));
                inflating.feed(&early);
                early = inflating.take_all();
                io.inflate = Some(inflating);
                self.turn.deflate_negotiated += 1;
                self.telemetry.stats.ingest.deflate.connections.fetch_add(1, Ordering::Relaxed);
            }
            None => io.out.push_control(Frame::from_bytes(&response), self.now),
        }
        // Bytes that came with the request head are WebSocket frames already (fewer than
        // READ_CHUNK bytes: the head is read in chunks until it is complete); their frames are
        // charged with the first read.
        if io.utf8.feed(&early).is_err() {
            io.invalid_utf8 = true;
        }
        // The echo route has the same limits as /ws (the conformance script raises them).
        let ws = WebSocket::from_partially_read(io, early, Role::Server, Some(self.ws_config));
        conn.phase = Phase::Ws(ws);
        conn.echo = echo;
        self.turn.upgraded += 1;
        if echo {
            return;
        }
        self.set_bandwidth_cap(key);
        let Some(conn) = self.conns.get_mut(key) else { return };
        let session = format!("r{}-{}", self.id, conn.session);
        let auth_required = matches!(conn.auth, AuthState::Pending { .. });
        let feed_down = self.telemetry.stats.ingest.any_source_down();
        let welcome = self.builder.text(|out| {
            message::welcome(out, env!("CARGO_PKG_VERSION"), &session, wall_clock_ns(), auth_required, feed_down)
        });
        self.reply(key, welcome);
    }

    /// Sets a WebSocket's bandwidth cap: its token's `max_bytes_per_second`, if it has one, else
    /// the gateway's (`limits.max_bytes_per_second`, validated with the configuration; 0 for none).
    pub(super) fn set_bandwidth_cap(&mut self, key: usize) {
        let default = tickgate_core::bandwidth::check_cap(self.config.limits.max_bytes_per_second).ok();
        let Some(conn) = self.conns.get_mut(key) else { return };
        let claim = match &conn.auth {
            AuthState::Authenticated(principal) => principal.max_bytes_per_second,
            _ => None,
        };
        let now = self.now;
        if let Some(io) = conn.io() {
            io.out.bandwidth.set(claim.or(default), now);
        }
    }

    /// Decides a new WebSocket's authentication from the token it brought (if any): the state
    /// to start in, or the HTTP response that refuses it (401 for a bad token, 429 past the
    /// user's connection limit).
    pub(super) fn authorize(&mut self, token: Option<&str>) -> Result<AuthState, Vec<u8>> {
        let Some(authenticator) = &self.authenticator else { return Ok(AuthState::Open) };
        let Some(token) = token else {
            let wait = Duration::from_millis(self.config.auth.auth_timeout_ms);
            return Ok(AuthState::Pending { deadline: self.now + wait });
        };
        match authenticator.verify(token) {
            Ok(principal) => {
                if !self.admission.admit_user(&principal.user, principal.max_connections) {
                    self.turn.connections_refused += 1;
                    return Err(http::response(429, "Too Many Requests", "too many connections for this user\n"));
                }
                Ok(AuthState::Authenticated(Box::new(principal)))
            }
            Err(e) => {
                self.turn.auth_failures += 1;
                Err(http::response(401, "Unauthorized", &format!("{e}\n")))
            }
        }
    }
}
