//! An edge's resumes read from the stream: this reactor's requests handed to the fetch thread
//! (`try_send`, never waiting), its answers taken from its channel, each through the
//! connection's sans-IO [`Desk::on_fetched`](crate::resume_fetch), and the ones past their
//! deadline answered here (see [`crate::resume_fetch`]).

use std::sync::mpsc::Receiver;

use tickgate_bus::fetch::{FetchAnswer, Fetched, Requests};

use super::Reactor;
use crate::connection::Phase;
use crate::session::{Desk, Outcome};

/// Most answers taken from the channel per turn.
const ANSWERS_PER_TURN: usize = 64;

/// A reactor's way to the fetch thread and back.
#[derive(Debug)]
pub struct FetchLink {
    pub requests: Requests,
    pub answers: Receiver<FetchAnswer>,
}

impl Reactor {
    /// Hands this turn's requests to the fetch thread and acts on the answers that came.
    pub(super) fn exchange_fetches(&mut self) {
        let Some(link) = &self.fetch else { return };
        let mut answers = std::mem::take(&mut self.fetch_answers);
        for request in self.replays.stream.outgoing.drain(..) {
            if link.requests.try_send(request).is_err() {
                // The fetch thread is behind or gone: answered at once, as without the stream.
                let tickgate_bus::fetch::FetchRequest { key, symbol, token, after, .. } = request;
                answers.push(FetchAnswer { key, symbol, token, after, fetched: Fetched::Refused, next_stream_seq: 0 });
            }
        }
        while answers.len() < ANSWERS_PER_TURN {
            let Ok(answer) = link.answers.try_recv() else { break };
            answers.push(answer);
        }
        self.answer_fetches(&mut answers);
        self.fetch_answers = answers;
    }

    /// Answers the fetches past their deadline (at housekeeping).
    pub(super) fn expire_fetches(&mut self) {
        if self.replays.stream.in_flight() == 0 {
            return;
        }
        let mut answers = std::mem::take(&mut self.fetch_answers);
        self.replays.stream.expired(self.now, &mut answers);
        self.answer_fetches(&mut answers);
        self.fetch_answers = answers;
    }

    fn answer_fetches(&mut self, answers: &mut Vec<FetchAnswer>) {
        for answer in answers.drain(..) {
            let key = answer.key;
            // A connection gone meanwhile forgot its fetches; one that took its key gets a
            // stale token.
            let Some(conn) = self.conns.get_mut(key as usize) else { continue };
            let Phase::Ws(ws) = &mut conn.phase else { continue };
            let mut desk = desk!(self);
            let out = &mut ws.get_mut().out;
            if desk.on_fetched(out, &mut self.index, answer) == Outcome::SlowConsumer {
                self.over_limit.push(key);
            }
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
        while let Some(key) = self.over_limit.pop() {
            self.close_slow_consumer(key as usize);
        }
    }
}
