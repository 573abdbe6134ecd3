//! `/connz` on the reactor side: posting this reactor's connections when a request is under
//! way, and answering a request this reactor got once every reactor has posted (see
//! [`crate::connz`]).

use std::time::Instant;

use crate::connection::{AuthState, Phase};
use crate::connz::{Busy, ConnInfo, GATHER_TIMEOUT, Query, keep_first};
use crate::http;

use super::Reactor;

/// A parked `/connz` request: the HTTP connection (by key and session) and what it waits for.
#[derive(Debug)]
pub(super) struct Waiting {
    key: usize,
    session: u64,
    generation: u64,
    until: Instant,
    head: bool,
}

impl Reactor {
    /// A `/connz` request: posts it and parks the connection, or returns the response that
    /// refuses it (400 for a bad query, 429 while another is gathered).
    pub(super) fn ask_connz(&mut self, key: usize, query: &str, head: bool) -> Option<Vec<u8>> {
        let query = match Query::parse(query) {
            Ok(query) => query,
            Err(e) => return Some(http::response(400, "Bad Request", &format!("{e}\n"))),
        };
        if self.connz_waiting.is_some() {
            return Some(http::response(429, "Too Many Requests", "a /connz is being gathered; retry\n"));
        }
        match self.telemetry.connz.begin(query) {
            Err(Busy) => Some(http::response(429, "Too Many Requests", "a /connz is being gathered; retry\n")),
            Ok(generation) => {
                let session = self.conns.get(key).map_or(0, |c| c.session);
                let until = self.now + GATHER_TIMEOUT;
                self.connz_waiting = Some(Waiting { key, session, generation, until, head });
                None
            }
        }
    }

    /// At housekeeping: posts this reactor's part of a request under way, and answers the
    /// request this reactor parked once it is complete (or timed out).
    pub(super) fn connz_turn(&mut self) {
        if let Some((generation, query)) = self.telemetry.connz.pending(self.connz_answered) {
            self.connz_answered = generation;
            let (connections, rows) = self.connz_rows(&query);
            self.telemetry.connz.answer(self.id, generation, connections, rows);
        }
        let Some(waiting) = &self.connz_waiting else { return };
        let reactors = self.telemetry.stats.reactors.len();
        let give_up = self.now >= waiting.until || self.draining_until.is_some();
        let Some(body) = self.telemetry.connz.finish(waiting.generation, reactors, give_up) else { return };
        let Some(waiting) = self.connz_waiting.take() else { return };
        if self.conns.get(waiting.key).is_none_or(|c| c.session != waiting.session || c.closing.is_some()) {
            return;
        }
        let full = http::response_typed(200, "OK", "application/json", &body);
        let response = if waiting.head { http::without_body(full) } else { full };
        self.answer_http(waiting.key, &response);
    }

    /// This reactor's WebSocket connections (not closing, not echo), the first
    /// `offset + limit` by the sort key; and how many it holds.
    fn connz_rows(&mut self, query: &Query) -> (usize, Vec<ConnInfo>) {
        let (now, now_ms, id) = (self.now, self.now_ms, self.id);
        let mut rows = Vec::new();
        let mut connections = 0;
        for (_, c) in self.conns.iter_mut() {
            if c.closing.is_some() || c.echo || c.admin {
                continue;
            }
            let user = match &c.auth {
                AuthState::Authenticated(p) => Some(p.user.clone()),
                _ => None,
            };
            let (subscriptions, session, peer, opened, frames_sent) =
                (c.subs.len(), c.session, c.peer, c.opened, c.frames_sent);
            let Phase::Ws(ws) = &mut c.phase else { continue };
            let out = &ws.get_ref().out;
            connections += 1;
            rows.push(ConnInfo {
                reactor: id,
                session: format!("r{id}-{session}"),
                client: peer.to_string(),
                user,
                subscriptions,
                policy: out.policy.as_str(),
                max_bytes_per_second: out.bandwidth.rate(),
                queued_bytes: out.queue.queued_bytes() as u64,
                waiting_ms: out.waiting(now).as_millis() as u64,
                gaps_sent: u64::from(out.gaps_sent),
                messages_sent: frames_sent,
                age_ms: opened.until(now_ms),
            });
            // Bounded: never more than twice what is kept.
            if rows.len() >= 2 * (query.offset + query.limit) {
                keep_first(&mut rows, query);
            }
        }
        keep_first(&mut rows, query);
        (connections, rows)
    }
}
