//! Dropping connections during the window and opening them again with a resume
//! (`--resume-share`, `--resume-every`): which clients go in each round, and the drop and
//! reconnect of one of them. What the server answers is checked by the tracker
//! ([`crate::resume`]).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use crate::conn::{self, Client, Reader, State};
use crate::resume::resume_command;
use crate::tls::TlsClient;
use crate::wsframe::write_client_frame;

/// Which clients are dropped when: every `every` of the window, `per_round` reading clients,
/// taken in turn so that successive rounds drop different ones.
#[derive(Debug, Clone)]
pub struct Schedule {
    every: Duration,
    per_round: usize,
    cursor: usize,
    /// Rounds made so far.
    pub rounds: u64,
}

impl Schedule {
    /// `share` of `reading` clients every `every`; None when that is nobody.
    pub fn new(share: f64, every: Duration, reading: usize) -> Option<Self> {
        if share.is_nan() || share <= 0.0 || reading == 0 || every.is_zero() {
            return None;
        }
        let per_round = ((share.min(1.0) * reading as f64).round() as usize).max(1);
        Some(Self { every, per_round, cursor: 0, rounds: 0 })
    }

    /// The clients to drop now, `into_window` after the window opened (a round at each whole
    /// `every`; none at its very start): open reading clients, from where the last round
    /// stopped.
    pub fn due(&mut self, into_window: Duration, clients: &[Client]) -> Vec<usize> {
        let due = (into_window.as_secs_f64() / self.every.as_secs_f64()) as u64;
        let mut chosen = Vec::new();
        while self.rounds < due {
            self.rounds += 1;
            let mut taken = 0;
            for _ in 0..clients.len() {
                let i = self.cursor;
                self.cursor = (self.cursor + 1) % clients.len();
                let c = &clients[i];
                if !c.slow && c.state == State::Open {
                    chosen.push(i);
                    taken += 1;
                    if taken == self.per_round {
                        break;
                    }
                }
            }
        }
        // Rounds that fell due together may have taken a client twice.
        chosen.sort_unstable();
        chosen.dedup();
        chosen
    }
}

/// Where and how a dropped client connects again.
#[derive(Debug, Clone, Copy)]
pub struct Redial<'a> {
    pub addr: SocketAddr,
    pub source: Option<IpAddr>,
    /// `wss://`: a new TLS session for the new connection.
    pub tls: Option<&'a TlsClient>,
    /// The HTTP upgrade request.
    pub handshake: &'a [u8],
    /// The universe, to name the symbols.
    pub universe: &'a [String],
    /// Appended to the subscribe (the policy asked for, if any).
    pub extra: &'a str,
}

/// Drops `c` at once (a reset, as a lost network would leave it at the server: no close frame,
/// no FIN) and connects again; once upgraded it subscribes with `resume`, the last seq it holds
/// of each symbol.
pub fn drop_and_resume(
    c: &mut Client,
    token: Token,
    registry: &Registry,
    reader: &mut Reader,
    redial: &Redial,
    mask: [u8; 4],
    now: Instant,
) -> io::Result<()> {
    let _ = registry.deregister(&mut c.sock);
    // Linger 0: close() sends a reset instead of a FIN.
    let _ = socket2::SockRef::from(&c.sock).set_linger(Some(Duration::ZERO));
    reader.dropping(c);
    let asks = c.tracker.begin_resume();
    let command = resume_command(redial.universe, &asks, redial.extra);
    let mut subscribe = Vec::new();
    write_client_frame(&mut subscribe, 1, command.as_bytes(), mask);
    let tls = redial.tls.map(TlsClient::connection).transpose()?;
    match conn::connect(redial.addr, redial.source) {
        Ok(mut sock) => {
            registry.register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)?;
            // The old socket is closed (reset) as it is replaced.
            c.reconnect(sock, tls, now, redial.handshake.to_vec(), subscribe);
            reader.in_flight += 1;
        }
        Err(_) => {
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
            c.tracker.resumes.reconnect_failed += 1;
            c.dropped = true;
        }
    }
    Ok(())
}
