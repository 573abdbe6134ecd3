//! Accepting connections: from the public and admin listeners, within the per-turn cap, and
//! refusing those a limit turns away.

use std::io::{self};
use std::sync::atomic::Ordering;

use mio::{Interest, Token};
use tickgate_core::Frame;

use super::{Backlog, MAX_ACCEPTS_PER_TURN, REFUSED_ANSWERING_MAX, Reactor};
use crate::admission::Refusal;
use crate::connection::{Admitted, CloseReason, Connection, Phase};
use crate::http;
use crate::stats::HTTP_STATUSES;
use crate::tls::TlsLayer;

impl Reactor {
    /// Accepts from the listeners marked in `which`: the public one, then the admin one.
    pub(super) fn accept_from(&mut self, which: [bool; 2]) {
        for (admin, accept) in [false, true].into_iter().zip(which) {
            if accept {
                self.accept(admin);
            }
        }
    }

    /// Accepts from a listener until `WouldBlock`, at most [`MAX_ACCEPTS_PER_TURN`]; records
    /// what is left in [`Reactor::backlog`].
    pub(super) fn accept(&mut self, admin: bool) {
        let backlog = usize::from(admin);
        self.backlog[backlog] = Backlog::Drained;
        // While stopping, nothing is accepted, except health checks after a failure.
        if self.draining_until.is_some() && !self.failed {
            return;
        }
        for accepted_so_far in 0.. {
            if accepted_so_far == MAX_ACCEPTS_PER_TURN {
                self.backlog[backlog] = Backlog::Capped;
                return;
            }
            let accepted = match (&self.admin_listener, admin) {
                (Some(listener), true) => listener.accept(),
                _ => self.listener.accept(),
            };
            match accepted {
                Ok((mut sock, peer)) => {
                    if let Err(e) = sock.set_nodelay(self.config.server.tcp_nodelay) {
                        tracing::debug!(%peer, error = %e, "set_nodelay failed");
                    }
                    let send_buffer = self.config.server.socket_send_buffer;
                    if send_buffer > 0 {
                        if let Err(e) = socket2::SockRef::from(&sock).set_send_buffer_size(send_buffer) {
                            tracing::debug!(%peer, error = %e, "setting SO_SNDBUF failed");
                        }
                    }
                    // On a TLS listener, the session first: without one the socket is dropped
                    // before it is registered (rustls refuses only a broken configuration).
                    let tls = self.tls.as_ref().filter(|tls| !admin || tls.admin);
                    let session = match tls.map(|tls| tls.accept()).transpose() {
                        Ok(session) => session,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "cannot start a TLS session");
                            continue;
                        }
                    };
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if let Err(e) =
                        self.poll.registry().register(&mut sock, Token(key), Interest::READABLE | Interest::WRITABLE)
                    {
                        tracing::warn!(%peer, error = %e, "cannot register connection");
                        continue;
                    }
                    self.next_session += 1;
                    let burst = self.config.limits.message_burst;
                    let mut conn = Connection::new(
                        sock,
                        peer,
                        self.next_session,
                        self.default_policy,
                        burst,
                        self.now,
                        self.now_ms,
                    );
                    conn.admin = admin;
                    // Behind a PROXY-protocol balancer or a trusted proxy, admission waits for the
                    // client's address (the header; the forwarding headers at the upgrade), so the
                    // proxy's own address is never held to the per-address limit.
                    conn.proxy_pending = !admin && self.config.server.proxy_protocol;
                    // A peer not allowed to send a PROXY header: nothing it says can be believed.
                    let barred = conn.proxy_pending && !self.proxy_peers.contains(peer.ip());
                    let deferred = conn.proxy_pending || self.trusted_proxies.contains(peer.ip());
                    if let (Some(session), Phase::Http { io, .. }) = (session, &mut conn.phase) {
                        io.tls = Some(Box::new(TlsLayer::new(session)));
                    }
                    // The admin port is for operators and is not counted against clients' limits.
                    // A connection whose client address is not known yet counts in the total
                    // (`limits.max_connections`) now, under its address later.
                    let refusal = match (admin || barred, deferred) {
                        (true, _) => None,
                        (false, true) => self.admission.admit_total().err(),
                        (false, false) => self.admission.admit(peer.ip()).err(),
                    };
                    conn.admitted = match (admin || barred || refusal.is_some(), deferred) {
                        (true, _) => Admitted::No,
                        (false, true) => Admitted::InTotal,
                        (false, false) => Admitted::UnderAddress,
                    };
                    entry.insert(conn);
                    self.turn.accepted += 1;
                    if barred {
                        tracing::debug!(reactor = self.id, %peer, "PROXY header refused: peer not in server.proxy_protocol_peers");
                        self.turn.proxy_headers_refused += 1;
                        self.remove(key, CloseReason::ProxyHeaderRefused);
                        continue;
                    }
                    if let Some(refusal) = refusal {
                        self.refuse(key, refusal);
                        continue;
                    }
                    // The request may already be there; with edge triggers, read it now.
                    self.on_readable(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                // Stopping: the reactor that stopped first has shut the shared listening socket
                // down, and accept fails (EINVAL) here until this one notices the stop too.
                Err(_) if self.shutdown.load(Ordering::Relaxed) => return,
                Err(e) => {
                    // Out of file descriptors or similar: the rest waits in the backlog, and is
                    // tried again at housekeeping.
                    self.backlog[backlog] = Backlog::Failed;
                    if let Some(held) = self.may_warn() {
                        tracing::warn!(reactor = self.id, error = %e, held_back = held, "accept failed");
                    }
                    return;
                }
            }
        }
    }

    /// Answers a connection a limit refused, and closes it; past [`REFUSED_ANSWERING_MAX`]
    /// refused connections being answered, resets it at once instead.
    pub(super) fn refuse(&mut self, key: usize, refusal: Refusal) {
        self.turn.connections_refused += 1;
        if self.refused_answering >= REFUSED_ANSWERING_MAX {
            if let Some(io) = self.conns.get_mut(key).and_then(|c| c.io()) {
                // A linger of 0: the close sends RST and leaves no TIME_WAIT behind.
                let _ = socket2::SockRef::from(&io.sock).set_linger(Some(std::time::Duration::ZERO));
            }
            self.turn.connections_refused_unanswered += 1;
            self.remove(key, CloseReason::Refused);
            return;
        }
        let response = match refusal {
            Refusal::Full => http::response(
                503,
                "Service Unavailable",
                "the gateway is at its connection limit (limits.max_connections); retry later\n",
            ),
            Refusal::PerAddress => http::response(
                429,
                "Too Many Requests",
                "too many connections from your address (limits.max_connections_per_ip)\n",
            ),
        };
        if let Some(i) = HTTP_STATUSES.iter().position(|&s| s == http::status_of(&response)) {
            self.stats.http_by_status[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(io) = self.conns.get_mut(key).and_then(|c| c.io()) {
            io.out.push_control(Frame::from_bytes(&response), self.now);
        }
        self.begin_close(key, None, CloseReason::Refused);
        if self.conns.get(key).and_then(|c| c.closing.as_ref()).is_some_and(|c| c.reason == CloseReason::Refused) {
            self.refused_answering += 1;
        }
    }
}
