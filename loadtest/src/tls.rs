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
use rustls::{ClientConfig, ClientConnection, StreamOwned};

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

    /// A new client session over a blocking socket (the handshake happens on first use).
    pub fn blocking(
        &self,
        sock: std::net::TcpStream,
    ) -> io::Result<StreamOwned<ClientConnection, std::net::TcpStream>> {
        let conn = ClientConnection::new(Arc::clone(&self.config), self.name.clone()).map_err(io::Error::other)?;
        Ok(StreamOwned::new(conn, sock))
    }
}

/// Reads plaintext into `buf`: what rustls holds, else what the socket brings (handshake
/// messages are answered on the way). `WouldBlock` once the socket has nothing more; `Ok(0)`
/// at the end of the stream.
///
/// The socket is read in large pieces into `scratch` (rustls alone reads 4 KiB per system call)
/// and fed to rustls from there; at most as much is read as `buf` has room for, so that every
/// byte of it is decrypted into `buf` before this returns and nothing is left over.
pub fn read(
    conn: &mut ClientConnection,
    sock: &mut TcpStream,
    scratch: &mut [u8],
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        let (held, closed) = drain_plaintext(conn, buf)?;
        if held > 0 || closed {
            return Ok(held);
        }
        let room = scratch.len().min(buf.len());
        let n = sock.read(&mut scratch[..room])?;
        if n == 0 {
            return Ok(0);
        }
        let mut ciphertext = &scratch[..n];
        let mut got = 0;
        while !ciphertext.is_empty() {
            if conn.read_tls(&mut ciphertext)? == 0 {
                // After a close_notify nothing more is read.
                break;
            }
            let state = conn.process_new_packets();
            // An alert for the server, or the handshake's next flight.
            flush(conn, sock)?;
            state.map_err(io::Error::other)?;
            let (n, closed) = drain_plaintext(conn, &mut buf[got..])?;
            got += n;
            if closed {
                break;
            }
        }
        if got > 0 {
            return Ok(got);
        }
    }
}

/// Moves the plaintext rustls holds into `buf`, as much as fits; and whether the server closed
/// the session (close_notify) with nothing more to read.
fn drain_plaintext(conn: &mut ClientConnection, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    let mut got = 0;
    while got < buf.len() {
        match conn.reader().read(&mut buf[got..]) {
            Ok(0) => return Ok((got, got == 0)),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok((got, false))
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
