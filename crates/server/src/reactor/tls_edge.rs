//! TLS at the edge of a connection: what a client that fails TLS, or brings it to the wrong
//! port, is answered, and how it is counted. The TLS layer itself is in
//! [`crate::connection::ConnIo`] and [`crate::tls`].

use std::sync::atomic::Ordering;

use tickgate_core::Frame;

use super::Reactor;
use crate::connection::CloseReason;
use crate::http;
use crate::stats::HTTP_STATUSES;
use crate::tls::{HANDSHAKE_FAILURE_ALERT, TlsFailure};

impl Reactor {
    /// After a read failed: answers and counts a TLS failure; false if there was none.
    pub(super) fn on_tls_failure(&mut self, key: usize) -> bool {
        let Some(io) = self.conns.get_mut(key).and_then(|c| c.io()) else { return false };
        match io.tls_failure() {
            None => false,
            Some(TlsFailure::PlainHttp) => {
                // The answer goes out in the clear: the client speaks plain HTTP.
                io.tls = None;
                let response =
                    http::response(400, "Bad Request", "this port speaks TLS: connect with https:// or wss://\n");
                io.out.push_control(Frame::from_bytes(&response), self.now);
                self.turn.tls_plain_http += 1;
                self.turn.http_responses += 1;
                self.count_status(400);
                self.begin_close(key, None, CloseReason::TlsFailed);
                true
            }
            Some(TlsFailure::NotTls | TlsFailure::Protocol | TlsFailure::Truncated) => {
                // rustls's alert, if any, went out with the failure.
                self.turn.tls_failures += 1;
                self.remove(key, CloseReason::TlsFailed);
                true
            }
        }
    }

    /// A TLS ClientHello reached a plain port: a `handshake_failure` alert, in the clear, so
    /// the client reports a TLS failure rather than a garbled answer.
    pub(super) fn answer_tls_on_plain_port(&mut self, key: usize) {
        if let Some(io) = self.conns.get_mut(key).and_then(|c| c.io()) {
            io.out.push_control(Frame::from_bytes(&HANDSHAKE_FAILURE_ALERT), self.now);
        }
        self.turn.tls_on_plain_port += 1;
        self.begin_close(key, None, CloseReason::TlsFailed);
    }

    pub(super) fn count_status(&self, status: u16) {
        if let Some(i) = HTTP_STATUSES.iter().position(|&s| s == status) {
            self.stats.http_by_status[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}
