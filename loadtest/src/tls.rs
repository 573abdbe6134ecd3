//! `wss://` for the load generator: rustls (ring) over the same non-blocking sockets, with the
//! plaintext read in large pieces and the writes buffered in rustls until the socket takes them,
//! so that a TLS run costs the generator the decryption and little else.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

/// What every TLS connection of a run uses: the configuration (the CA trusted) and the name
/// the server's certificate must carry.
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts the certificates of `ca` (PEM) besides the webpki roots, and checks the server's
    /// certificate against `server_name` (a DNS name or an IP address). Every connection does a
    /// full handshake (no session resumption), as that many distinct clients would.
    pub fn new(ca: Option<&Path>, server_name: &str) -> Result<Self, String> {
        let config = tickgate_feed::tls::client_config(ca).map_err(|e| e.to_string())?;
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        let name = match server_name.parse::<IpAddr>() {
            Ok(ip) => ServerName::from(ip),
            Err(_) => ServerName::try_from(server_name.to_string())
                .map_err(|e| format!("--server-name {server_name:?}: {e}"))?,
        };
        Ok(Self { config: Arc::new(config), name })
    }

    /// A new client session (its ClientHello waits to be written).
    pub fn connection(&self) -> io::Result<Box<ClientConnection>> {
        ClientConnection::new(Arc::clone(&self.config), self.name.clone()).map(Box::new).map_err(io::Error::other)
    }
}

/// Reads plaintext into `buf`: what rustls holds, else what the socket brings (handshake
/// messages are answered on the way). `WouldBlock` once the socket has nothing more; `Ok(0)`
/// at the end of the stream.
pub fn read(conn: &mut ClientConnection, sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match conn.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        match conn.read_tls(sock)? {
            0 => return Ok(0),
            _ => {
                let state = conn.process_new_packets();
                // An alert for the server, or the handshake's next flight.
                flush(conn, sock)?;
                state.map_err(io::Error::other)?;
            }
        }
    }
}

/// Hands `plain` to rustls (which holds it until the handshake is done) and writes what it has
/// encrypted as far as the socket takes it.
pub fn write(conn: &mut ClientConnection, sock: &mut TcpStream, plain: &[u8]) -> io::Result<()> {
    if !plain.is_empty() {
        conn.writer().write_all(plain)?;
    }
    flush(conn, sock)
}

/// Writes what rustls has to send until it is all out or the socket is full.
pub fn flush(conn: &mut ClientConnection, sock: &mut TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
