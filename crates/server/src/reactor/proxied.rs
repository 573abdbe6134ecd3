//! The client's address behind a balancer or proxy.
//!
//! Through a PROXY-protocol balancer (`server.proxy_protocol`): the header comes first, says
//! whose connection it is, and only then is the connection admitted, under the client's
//! address. The header is peeked and then consumed exactly, so what follows it (a TLS
//! ClientHello, an HTTP request) stays in the socket for the next layer.
//!
//! From a trusted HTTP proxy (`server.trusted_proxies`): at the upgrade, the address its
//! `Forwarded` or `X-Forwarded-For` names replaces the proxy's, and admission moves to it.

use std::io;

use super::Reactor;
use crate::connection::{Admitted, CloseReason, Phase};
use crate::forwarded;
use crate::proxy_protocol::{self, Parsed, ProxyHeader, V2_MAX};

impl Reactor {
    /// Reads the PROXY header if it is all there: true once it is taken and the connection is
    /// admitted (read on), false while it is incomplete or after the connection was refused.
    pub(super) fn read_proxy_header(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else { return false };
        let Some(io) = conn.io() else { return false };
        let mut buf = [0u8; V2_MAX];
        let peeked = loop {
            match io.sock.peek(&mut buf) {
                Ok(0) => {
                    self.remove(key, CloseReason::ClientVanished);
                    return false;
                }
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.remove(key, CloseReason::ClientVanished);
                    return false;
                }
            }
        };
        let (header, len) = match proxy_protocol::parse(&buf[..peeked]) {
            Ok(Parsed::Incomplete) => return false,
            Ok(Parsed::Complete { header, len }) => (header, len),
            Err(e) => {
                tracing::debug!(reactor = self.id, peer = %conn.peer, error = %e, "PROXY header refused");
                self.turn.proxy_headers_refused += 1;
                self.remove(key, CloseReason::ProxyHeaderRefused);
                return false;
            }
        };
        // The header's bytes are in the socket (peeked): take exactly them.
        let mut taken = 0;
        while taken < len {
            match io::Read::read(&mut io.sock, &mut buf[taken..len]) {
                Ok(0) => {
                    self.remove(key, CloseReason::ClientVanished);
                    return false;
                }
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.remove(key, CloseReason::ClientVanished);
                    return false;
                }
            }
        }
        if let ProxyHeader::Proxied { source, .. } = header {
            conn.peer = source;
        }
        conn.proxy_pending = false;
        self.turn.proxy_headers += 1;
        self.admit_client(key)
    }

    /// Before an upgrade from a trusted proxy (not yet admitted, see [`Reactor::accept`]): the
    /// client address its forwarding headers name, if any, replaces the proxy's, and the
    /// connection is counted in under it. False when a limit refuses it (the refusal is answered).
    pub(super) fn take_forwarded_address(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else { return false };
        if conn.admin || conn.admitted == Admitted::UnderAddress || !self.trusted_proxies.contains(conn.peer.ip()) {
            return true;
        }
        if let Phase::Http { head, .. } = &conn.phase {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut headers);
            let client = match request.parse(head) {
                Ok(httparse::Status::Complete(_)) => forwarded::client_address(request.headers, &self.trusted_proxies),
                _ => None,
            };
            if let Some(client) = client {
                // The headers carry no port worth keeping: 0 says so in the logs.
                conn.peer = std::net::SocketAddr::new(client, 0);
                self.turn.forwarded_addresses += 1;
            }
        }
        self.admit_client(key)
    }

    /// Counts the connection (already in the total) in under its client address; false when a
    /// limit refuses it (the refusal is answered).
    fn admit_client(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else { return false };
        match self.admission.admit_address(conn.peer.ip()) {
            Ok(()) => {
                conn.admitted = Admitted::UnderAddress;
                true
            }
            Err(refusal) => {
                self.refuse(key, refusal);
                false
            }
        }
    }
}
