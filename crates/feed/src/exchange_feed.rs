//! An exchange's WebSocket feed as a [`Source`](crate::source::Source): a reader thread connects (`ws://`, or `wss://`
//! through rustls, see [`crate::tls`]), subscribes, maps every message with an
//! [`ExchangeMapper`], and reconnects with backoff ([`crate::upstream::Backoff`]) when the
//! exchange drops the connection (Binance does every 24 hours, Coinbase on errors), cannot be
//! reached (a refused TLS certificate included), refuses the subscription, or goes silent.
//!
//! Liveness: the client pings four times per silence bound ([`Liveness::silence`]) and answers
//! the exchange's pings (Binance pings every 20 s and drops clients that do not answer);
//! Coinbase is also subscribed to its heartbeat channel. Anything received (a message, a ping, a
//! pong) counts as life; nothing for the silence bound ends the session. The TLS and WebSocket
//! handshakes must finish within the silence bound (at most [`HANDSHAKE_TIMEOUT`]), however
//! slowly the exchange trickles bytes.
//!
//! The source is up once the exchange acknowledged the subscription (Binance
//! `{"result":null,"id":1}`, Coinbase `{"type":"subscriptions"}`) or sent a tick. A refused
//! subscription (Binance `{"error":{..},"id":1}`, Coinbase `{"type":"error"}`) is logged with the
//! exchange's message, counted, and ends the session.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::exchange::{Exchange, ExchangeMapper, binance_subscribe, coinbase_subscribe};
use crate::normalize::{Reject, RejectLog};
use crate::replay::RejectCounts;
use crate::source::SourceStats;
use crate::upstream::{
    Backoff, Liveness, Session, SourceHealth, Upstream, UpstreamFeed, UpstreamSource, sleep_unless_stopped,
};

/// How long the TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the TLS and WebSocket handshakes may take together, once connected (shorter if the
/// silence bound is).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message taken from an exchange: market-data messages are a few hundred bytes.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Ticks buffered between the reader and the ingest thread.
const CHANNEL: usize = 64 * 1024;
/// Longest part of an exchange's error message that is logged.
const MAX_LOGGED: usize = 200;

/// An exchange feed: [`ExchangeSource::start`] gives the ingest side.
#[derive(Debug)]
pub struct ExchangeSource;

impl ExchangeSource {
    /// Starts the reader thread for `url` (`ws://` or `wss://`, e.g.
    /// `wss://stream.binance.com:9443/stream`), subscribing to `upstream_symbols` (exchange
    /// names, e.g. `BTCUSDT` or `BTC-USD`). `tls` is used for `wss://` URLs
    /// ([`crate::tls::client_config`]).
    pub fn start(
        exchange: Exchange,
        url: String,
        upstream_symbols: Vec<String>,
        mapper: ExchangeMapper,
        tls: Arc<rustls::ClientConfig>,
        stats: Arc<SourceStats>,
        liveness: Liveness,
    ) -> io::Result<UpstreamSource> {
        let (tx, feed) = UpstreamFeed::channel(CHANNEL, &liveness);
        let stop = Arc::new(AtomicBool::new(false));
        let names: Vec<&str> = upstream_symbols.iter().map(String::as_str).collect();
        let subscribe = match exchange {
            Exchange::Binance => binance_subscribe(&names, 1),
            Exchange::Coinbase => coinbase_subscribe(&names),
        };
        let client = Client {
            exchange,
            url,
            subscribe,
            mapper,
            tls,
            name: stats.name.clone(),
            rejects: stats.rejected.clone(),
            health: stats.health.clone(),
            log: RejectLog::new(&stats.name),
            stop: stop.clone(),
            liveness,
        };
        std::thread::Builder::new().name(format!("tickgate-src-{}", stats.name)).spawn(move || client.run(tx))?;
        Ok(UpstreamSource::new(feed, stop))
    }
}

/// The reader thread's state.
struct Client {
    exchange: Exchange,
    url: String,
    subscribe: String,
    mapper: ExchangeMapper,
    tls: Arc<rustls::ClientConfig>,
    name: Box<str>,
    rejects: Arc<RejectCounts>,
    health: Arc<SourceHealth>,
    log: RejectLog,
    stop: Arc<AtomicBool>,
    liveness: Liveness,
}

impl Client {
    fn run(mut self, tx: crossbeam_channel::Sender<Upstream>) {
        let mut backoff = Backoff::new(&self.liveness);
        let mut connections = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let ended = match connect(&self.url, &self.tls, &self.liveness) {
                Ok(mut ws) => {
                    if connections > 0 {
                        self.health.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    connections += 1;
                    tracing::info!(source = &*self.name, url = %self.url, "exchange feed connected");
                    self.mapper.new_session();
                    let mut session = Session::start(&tx, &self.health);
                    let ended = match ws.send(tungstenite::Message::text(self.subscribe.as_str())) {
                        Ok(()) => self.read(&mut ws, &mut session),
                        Err(e) => format!("cannot subscribe: {e}"),
                    };
                    session.end(&self.liveness, &self.health, &mut backoff);
                    Ok(ended)
                }
                Err(e) => Err(e),
            };
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let wait = backoff.next(&self.health);
            let retry_in_ms = wait.as_millis() as u64;
            match ended {
                Ok(reason) => tracing::warn!(source = &*self.name, %reason, retry_in_ms, "exchange feed disconnected"),
                Err(e) => {
                    self.health.connect_failures.fetch_add(1, Ordering::Relaxed);
                    if e.is_tls() {
                        tracing::warn!(
                            source = &*self.name,
                            url = %self.url,
                            error = %e,
                            retry_in_ms,
                            "exchange TLS handshake failed (check the URL's host name and feed.exchange_ca_file)"
                        );
                    } else {
                        tracing::warn!(source = &*self.name, url = %self.url, error = %e, retry_in_ms, "cannot connect to the exchange");
                    }
                }
            }
            sleep_unless_stopped(wait, &self.stop);
        }
    }

    /// Reads until the session ends; returns why.
    fn read(&mut self, ws: &mut Ws, session: &mut Session<'_>) -> String {
        let mut buf = Vec::with_capacity(1024);
        let mut last_ping = Instant::now();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                let _ = ws.close(None);
                return "shutting down".into();
            }
            // Pongs keep a connection alive, not a subscription the exchange never answered.
            if let Some(waited) = session.not_live_for().filter(|w| *w >= self.liveness.silence) {
                self.health.subscription_errors.fetch_add(1, Ordering::Relaxed);
                let waited_ms = waited.as_millis() as u64;
                tracing::error!(source = &*self.name, url = %self.url, waited_ms, "the exchange did not answer the subscription");
                let _ = ws.close(None);
                return format!("subscription unanswered for {waited_ms} ms");
            }
            if last_ping.elapsed() >= self.liveness.ping_interval() {
                last_ping = Instant::now();
                if let Err(e) = ws.send(tungstenite::Message::Ping(Default::default())) {
                    return format!("cannot ping: {e}");
                }
            }
            let message = match ws.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    let silent = session.silent_for();
                    if silent >= self.liveness.silence {
                        self.health.silences.fetch_add(1, Ordering::Relaxed);
                        return format!("nothing received for {} ms", silent.as_millis());
                    }
                    continue;
                }
                // A message over MAX_MESSAGE cannot be skipped within the stream: it is counted,
                // and the connection starts over.
                Err(tungstenite::Error::Capacity(e)) => {
                    self.reject_unread(Reject::Malformed);
                    return format!("message too big: {e}");
                }
                Err(e) => return e.to_string(),
            };
            // A ping is answered by tungstenite (on the next read or send); a pong needs nothing.
            session.heard();
            match message {
                tungstenite::Message::Text(text) => {
                    if let Some(ended) = self.message(text.as_bytes(), &mut buf, session) {
                        return ended;
                    }
                }
                tungstenite::Message::Close(frame) => return format!("closed by the exchange: {frame:?}"),
                // Exchanges send text; anything else is counted and skipped.
                tungstenite::Message::Binary(_) => self.reject_unread(Reject::Malformed),
                _ => {}
            }
        }
    }

    /// Takes one text message; returns why the session must end, if it must.
    fn message(&mut self, text: &[u8], buf: &mut Vec<u8>, session: &mut Session<'_>) -> Option<String> {
        buf.clear();
        buf.extend_from_slice(text);
        let now = crate::ingest::wall_clock_ns();
        let unknown = match self.mapper.map(buf, now) {
            Ok(Some(normalized)) => {
                if let Some((from, to)) = normalized.upstream_gap {
                    self.health.count_gap(from, to);
                }
                self.health.last_message_ns.store(now, Ordering::Relaxed);
                session.deliver(normalized);
                return None;
            }
            Ok(None) => None,
            Err(Reject::UnknownType) => Some(Reject::UnknownType),
            Err(reject) => {
                self.reject(reject);
                return None;
            }
        };
        // Not a tick: a reply to the subscription, a heartbeat, or an event not taken. Only what
        // may be a reply is parsed again (a heartbeat a second per product is not).
        let may_be_reply = [&b"\"error\""[..], b"\"result\"", b"\"subscriptions\""]
            .iter()
            .any(|key| text.windows(key.len()).any(|w| w == *key));
        let reply = if may_be_reply {
            buf.clear();
            buf.extend_from_slice(text);
            reply(self.exchange, buf)
        } else {
            Reply::Other
        };
        match reply {
            Reply::Acknowledged => session.acknowledged(),
            Reply::Refused(message) => {
                self.health.subscription_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(source = &*self.name, url = %self.url, %message, "the exchange refused the subscription");
                return Some(format!("subscription refused: {message}"));
            }
            Reply::Other => {
                if let Some(reject) = unknown {
                    self.reject(reject);
                }
            }
        }
        None
    }

    /// Counts and logs the reject of the message just mapped, naming its symbol.
    fn reject(&mut self, reject: Reject) {
        self.rejects[reject.index()].fetch_add(1, Ordering::Relaxed);
        self.log.note(reject, self.mapper.last_symbol());
    }

    /// Counts and logs the reject of a message that was never mapped (no symbol to name).
    fn reject_unread(&mut self, reject: Reject) {
        self.rejects[reject.index()].fetch_add(1, Ordering::Relaxed);
        self.log.note(reject, "");
    }
}

/// What a message that carries no tick says about the subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The subscription was accepted.
    Acknowledged,
    /// The exchange refused it; its message (code and text), at most [`MAX_LOGGED`] characters.
    Refused(String),
    Other,
}

/// The fields of a reply; the rest is ignored.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct ReplyFields {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<serde::de::IgnoredAny>,
    e: Option<serde::de::IgnoredAny>,
    error: Option<BinanceError>,
    message: Option<String>,
    reason: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct BinanceError {
    code: Option<i64>,
    msg: Option<String>,
}

/// Reads a message the mapper took no tick from (parsed in place: `message` is scratch).
/// Binance: `{"result":null,"id":1}` or `{"error":{"code":2,"msg":".."},"id":1}`; Coinbase:
/// `{"type":"subscriptions",..}` or `{"type":"error","message":"..","reason":".."}`.
pub fn reply(exchange: Exchange, message: &mut [u8]) -> Reply {
    let Ok(fields) = simd_json::serde::from_slice::<ReplyFields>(message) else { return Reply::Other };
    // The exchange's text goes into a log line: no control characters, bounded.
    let refused = |text: String| {
        Reply::Refused(text.chars().take(MAX_LOGGED).map(|c| if c.is_control() { ' ' } else { c }).collect())
    };
    match exchange {
        Exchange::Binance => match fields.error {
            Some(error) => refused(format!(
                "code {}: {}",
                error.code.map_or_else(|| "?".into(), |c| c.to_string()),
                error.msg.unwrap_or_default()
            )),
            None if fields.id.is_some() && fields.e.is_none() => Reply::Acknowledged,
            None => Reply::Other,
        },
        Exchange::Coinbase => match fields.kind.as_deref() {
            Some("subscriptions") => Reply::Acknowledged,
            Some("error") => {
                refused(format!("{}: {}", fields.message.unwrap_or_default(), fields.reason.unwrap_or_default()))
            }
            _ => Reply::Other,
        },
    }
}

/// A TCP stream that refuses to read past a deadline: tungstenite's handshake keeps reading as
/// long as the peer trickles bytes, so the socket's read timeout alone would never end it.
#[derive(Debug)]
struct Deadline {
    stream: TcpStream,
    until: Option<Instant>,
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.until.is_some_and(|t| Instant::now() >= t) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "handshake deadline passed"));
        }
        self.stream.read(buf)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<Deadline>>;

/// Why a connection to the exchange could not be established.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("bad exchange URL: {0}")]
    Url(tungstenite::Error),
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("cannot connect to {host}:{port}: {source}")]
    Tcp { host: String, port: u16, source: io::Error },
    #[error("TLS handshake with {host} failed: {source}")]
    Tls { host: String, source: rustls::Error },
    #[error("TLS setup for {host} failed: {source}")]
    TlsSetup { host: String, source: tungstenite::error::TlsError },
    #[error("WebSocket handshake with {host} failed: {source}")]
    Handshake { host: String, source: Box<tungstenite::Error> },
    #[error("no complete answer from {host} within {} ms of connecting (TLS and WebSocket handshakes)", after.as_millis())]
    HandshakeTimeout { host: String, after: Duration },
}

impl ConnectError {
    /// A TLS failure: an untrusted or mismatched certificate, a protocol error, a bad host name.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls { .. } | Self::TlsSetup { .. })
    }

    fn from_handshake(host: &str, after: Duration, e: tungstenite::Error) -> Self {
        let host = host.to_string();
        match e {
            tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => {
                Self::HandshakeTimeout { host, after }
            }
            // rustls reports a failed handshake (a refused certificate, an alert from the
            // server) as an IO error wrapping its own.
            tungstenite::Error::Io(io) => match io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(tls) => Self::Tls { host, source: tls.clone() },
                None => Self::Handshake { host, source: Box::new(tungstenite::Error::Io(io)) },
            },
            tungstenite::Error::Tls(source) => Self::TlsSetup { host, source },
            other => Self::Handshake { host, source: Box::new(other) },
        }
    }
}

/// The socket under the WebSocket (and TLS).
fn socket(ws: &mut Ws) -> Option<&mut Deadline> {
    match ws.get_mut() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => Some(s),
        tungstenite::stream::MaybeTlsStream::Rustls(s) => Some(&mut s.sock),
        _ => None,
    }
}

/// Connects to `url` (TCP within [`CONNECT_TIMEOUT`], trying each resolved address), then runs
/// the TLS handshake for `wss://` and the WebSocket handshake, together within the silence bound
/// (at most [`HANDSHAKE_TIMEOUT`]).
fn connect(url: &str, tls: &Arc<rustls::ClientConfig>, liveness: &Liveness) -> Result<Ws, ConnectError> {
    use std::net::ToSocketAddrs;
    let request = tungstenite::client::IntoClientRequest::into_client_request(url).map_err(ConnectError::Url)?;
    let mode = tungstenite::client::uri_mode(request.uri()).map_err(ConnectError::Url)?;
    let host = match request.uri().host() {
        Some(host) => host.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => return Err(ConnectError::Url(tungstenite::Error::Url(tungstenite::error::UrlError::NoHostName))),
    };
    let port = request.uri().port_u16().unwrap_or(match mode {
        tungstenite::stream::Mode::Plain => 80,
        tungstenite::stream::Mode::Tls => 443,
    });
    let addrs = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|source| ConnectError::Resolve { host: host.clone(), source })?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let stream = stream.ok_or_else(|| ConnectError::Tcp { host: host.clone(), port, source: last })?;
    let tcp_err = |source| ConnectError::Tcp { host: host.clone(), port, source };
    let handshake_timeout = liveness.silence.min(HANDSHAKE_TIMEOUT);
    stream.set_nodelay(true).map_err(tcp_err)?;
    stream.set_read_timeout(Some(liveness.read_timeout())).map_err(tcp_err)?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(tcp_err)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(liveness.silence.max(Duration::from_secs(1)))
        .with_interval((liveness.silence / 4).max(Duration::from_secs(1)));
    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive).map_err(tcp_err)?;
    let deadline = Instant::now() + handshake_timeout;
    let stream = Deadline { stream, until: Some(deadline) };
    // The TLS session is set up here rather than by tungstenite, which would take the URL's host
    // as written: "[::1]" is no server name, "::1" is an IP address.
    let stream = match mode {
        tungstenite::stream::Mode::Plain => tungstenite::stream::MaybeTlsStream::Plain(stream),
        tungstenite::stream::Mode::Tls => {
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| ConnectError::TlsSetup {
                host: host.clone(),
                source: tungstenite::error::TlsError::InvalidDnsName,
            })?;
            let session = rustls::ClientConnection::new(tls.clone(), name)
                .map_err(|source| ConnectError::Tls { host: host.clone(), source })?;
            tungstenite::stream::MaybeTlsStream::Rustls(rustls::StreamOwned::new(session, stream))
        }
    };
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let mut attempt = tungstenite::client::client_with_config(request, stream, Some(config));
    // The read timeout interrupts a handshake whose peer is slow to answer; the deadline stream
    // ends one whose peer trickles.
    loop {
        match attempt {
            Ok((mut ws, _response)) => {
                if let Some(socket) = socket(&mut ws) {
                    socket.until = None;
                    // A ping that cannot be written within the silence bound ends the session.
                    socket.stream.set_write_timeout(Some(handshake_timeout)).map_err(tcp_err)?;
                }
                return Ok(ws);
            }
            Err(tungstenite::HandshakeError::Failure(e)) => {
                return Err(ConnectError::from_handshake(&host, handshake_timeout, e));
            }
            Err(tungstenite::HandshakeError::Interrupted(mid)) => {
                if Instant::now() >= deadline {
                    return Err(ConnectError::HandshakeTimeout { host, after: handshake_timeout });
                }
                attempt = mid.handshake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(exchange: Exchange, text: &str) -> Reply {
        reply(exchange, &mut text.as_bytes().to_vec())
    }

    #[test]
    fn subscription_replies_are_told_apart_from_errors_and_events() {
        use Exchange::{Binance, Coinbase};
        assert_eq!(read(Binance, r#"{"result":null,"id":1}"#), Reply::Acknowledged);
        assert_eq!(
            read(Binance, r#"{"error":{"code":2,"msg":"Invalid request: unknown symbol"},"id":1}"#),
            Reply::Refused("code 2: Invalid request: unknown symbol".into())
        );
        assert_eq!(read(Binance, r#"{"e":"24hrTicker","s":"BTCUSDT","id":5}"#), Reply::Other);
        assert_eq!(read(Binance, "not json"), Reply::Other);
        assert_eq!(read(Coinbase, r#"{"type":"subscriptions","channels":[]}"#), Reply::Acknowledged);
        assert_eq!(
            read(
                Coinbase,
                r#"{"type":"error","message":"Failed to subscribe","reason":"XX-USD is not a valid product"}"#
            ),
            Reply::Refused("Failed to subscribe: XX-USD is not a valid product".into())
        );
        assert_eq!(read(Coinbase, r#"{"type":"heartbeat","product_id":"BTC-USD"}"#), Reply::Other);
        assert_eq!(
            read(Coinbase, r#"{"type":"error","message":"a\nforged log line\u0007"}"#),
            Reply::Refused("a forged log line : ".into())
        );
        let long = format!(r#"{{"type":"error","message":"{}"}}"#, "x".repeat(1_000));
        assert!(matches!(read(Coinbase, &long), Reply::Refused(m) if m.chars().count() == MAX_LOGGED));
    }
}
