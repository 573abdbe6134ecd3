//! Fixtures every tickgate integration test uses: a gateway on a random loopback port, a
//! blocking WebSocket client that speaks JSON, and a raw socket for sending what no client
//! library would.

pub mod nats;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tickgate_server::{Config, Gateway};
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// The wall clock in nanoseconds since the Unix epoch (what `ts` and `gw_ts` carry).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// One trade in tickgate's input schema, as a TCP upstream sends it (a line), stamped now.
pub fn trade_line(symbol: &str, seq: u64, price: &str, size: &str) -> String {
    format!(
        "{{\"type\":\"trade\",\"symbol\":\"{symbol}\",\"price\":\"{price}\",\"size\":\"{size}\",\"ts\":{},\"seq\":{seq}}}\n",
        now_ns()
    )
}

/// How long a test waits for anything before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A configuration for tests: random port, two reactors, unpinned, a busy market.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.reactors = 2;
    config.server.pin_cores = false;
    config.server.shutdown_grace_ms = 2_000;
    config.sim.symbols = 50;
    config.sim.rate = 20_000.0;
    config
}

/// Starts a gateway with [`test_config`] adjusted by `tweak`.
pub fn start_gateway(tweak: impl FnOnce(&mut Config)) -> Gateway {
    let mut config = test_config();
    tweak(&mut config);
    Gateway::start(config).expect("gateway starts")
}

/// A blocking WebSocket client that reads JSON messages.
#[derive(Debug)]
pub struct TestClient {
    pub ws: WebSocket<TcpStream>,
    /// The welcome message.
    pub welcome: Value,
}

impl TestClient {
    /// Connects to `ws://addr/ws` and reads the welcome.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::connect_stream(TcpStream::connect(addr).expect("tcp connect"), addr)
    }

    /// Connects with a small receive buffer (set before connecting, so the window stays small):
    /// a client that reads slowly or not at all backs up into the server quickly.
    pub fn connect_with_receive_buffer(addr: SocketAddr, bytes: usize) -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        socket.connect(&addr.into()).expect("tcp connect");
        Self::connect_stream(socket.into(), addr)
    }

    /// Connects to `ws://addr{path}` with extra request headers; the handshake's result is
    /// returned so tests can see refusals.
    pub fn try_connect_with(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, tungstenite::Error> {
        use tungstenite::client::IntoClientRequest;
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut request = format!("ws://{addr}{path}").into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                value.parse().expect("header value"),
            );
        }
        let (ws, _) = tungstenite::client(request, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
        })?;
        let mut client = TestClient { ws, welcome: Value::Null };
        client.welcome = client.recv();
        Ok(client)
    }

    fn connect_stream(stream: TcpStream, addr: SocketAddr) -> Self {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let (ws, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).expect("websocket handshake");
        let mut client = TestClient { ws, welcome: Value::Null };
        client.welcome = client.recv();
        assert_eq!(client.welcome["type"], "welcome", "first message is the welcome");
        client
    }

    /// The reactor this client landed on, from its session id (`r<reactor>-<n>`).
    pub fn reactor(&self) -> usize {
        let session = self.welcome["session"].as_str().expect("session id");
        session[1..session.find('-').expect("r<reactor>-<n>")].parse().expect("reactor number")
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    pub fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string());
    }

    /// The next message, whatever it is (panics on timeout or close).
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read().expect("read a message") {
                Message::Text(text) => return serde_json::from_str(&text).expect("server sends JSON"),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// The next message if one comes within `wait`; Err(()) if none does (or the connection
    /// ended). Waits of other calls return to [`PATIENCE`] afterwards.
    #[allow(clippy::result_unit_err)]
    pub fn try_recv_for(&mut self, wait: Duration) -> Result<Value, ()> {
        self.ws.get_mut().set_read_timeout(Some(wait)).map_err(|_| ())?;
        let got = loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => break serde_json::from_str(&text).map_err(|_| ()),
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                _ => break Err(()),
            }
        };
        let _ = self.ws.get_mut().set_read_timeout(Some(PATIENCE));
        got
    }

    /// The raw text of the next text message.
    pub fn recv_raw(&mut self) -> String {
        loop {
            match self.ws.read().expect("read a message") {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// Skips messages until one has `"type": kind`.
    pub fn recv_type(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            let msg = self.recv();
            if msg["type"] == kind {
                return msg;
            }
        }
        panic!("no {kind} message within {PATIENCE:?}");
    }

    /// Subscribes and returns the `subscribed` reply and one snapshot per symbol.
    pub fn subscribe(&mut self, symbols: &[&str]) -> (Value, Vec<Value>) {
        self.send_json(serde_json::json!({"op": "subscribe", "symbols": symbols}));
        let reply = self.recv_type("subscribed");
        let n = reply["symbols"].as_array().map_or(0, Vec::len);
        let snapshots = (0..n).map(|_| self.recv_type("snapshot")).collect();
        (reply, snapshots)
    }

    /// Sends a `subscribe` of one symbol (with any options) and returns its reply, which must be
    /// the next message, and the seq of the snapshot, which must follow it.
    pub fn subscribe_one(&mut self, command: Value) -> (Value, u64) {
        self.send_json(command);
        let reply = self.recv();
        let snapshot = self.recv();
        assert_eq!(snapshot["type"], "snapshot", "after {reply}: {snapshot}");
        (reply, snapshot["seq"].as_u64().expect("a snapshot has a seq"))
    }

    /// Reads until the server closes; returns its close frame.
    pub fn recv_close(&mut self) -> Option<CloseFrame> {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => {}
                Err(e) => panic!("connection ended without a close frame: {e}"),
            }
        }
        panic!("no close within {PATIENCE:?}");
    }
}

/// Connects clients until there is one on each of the gateway's `reactors` reactors (whichever
/// reactor accepts first takes a connection).
pub fn one_client_per_reactor(addr: SocketAddr, reactors: usize) -> Vec<TestClient> {
    let mut found: Vec<Option<TestClient>> = (0..reactors).map(|_| None).collect();
    for _ in 0..200 {
        let client = TestClient::connect(addr);
        let r = client.reactor();
        if found[r].is_none() {
            found[r] = Some(client);
        }
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
    }
    panic!("200 connections did not reach all {reactors} reactors");
}

/// A raw TCP connection that has completed the WebSocket upgrade and read the welcome, for
/// sending frames no client library would send.
#[derive(Debug)]
pub struct RawClient {
    pub stream: TcpStream,
    pending: Vec<u8>,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            stream,
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut raw = RawClient { stream, pending: Vec::new() };
        let head = raw.read_until(b"\r\n\r\n");
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        let (opcode, payload) = raw.read_frame().expect("welcome");
        assert_eq!(opcode, 1);
        assert!(payload.starts_with(b"{\"type\":\"welcome\""));
        raw
    }

    fn fill(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        match self.stream.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        loop {
            if let Some(pos) = self.pending.windows(end.len()).position(|w| w == end) {
                return self.pending.drain(..pos + end.len()).collect();
            }
            assert!(self.fill(), "connection ended before {:?}", String::from_utf8_lossy(end));
        }
    }

    /// Sends a client frame; `mask` chooses whether it is masked (clients must mask).
    pub fn send_frame(&mut self, fin_opcode: u8, payload: &[u8], mask: bool) {
        // The server may close before taking it all; that is what some tests check.
        let _ = self.stream.write_all(&client_frame(fin_opcode, payload, mask));
    }

    /// Reads one server frame: (opcode, payload); None if the connection ended first.
    pub fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.pending.len() >= 2 {
                assert_eq!(self.pending[1] & 0x80, 0, "server frames are unmasked");
                let (len, offset) = match self.pending[1] & 0x7f {
                    126 if self.pending.len() >= 4 => {
                        (u16::from_be_bytes([self.pending[2], self.pending[3]]) as usize, 4)
                    }
                    127 if self.pending.len() >= 10 => {
                        (u64::from_be_bytes(self.pending[2..10].try_into().unwrap()) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.pending.len() >= offset + len {
                    let opcode = self.pending[0] & 0x0f;
                    let payload = self.pending[offset..offset + len].to_vec();
                    self.pending.drain(..offset + len);
                    return Some((opcode, payload));
                }
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Reads frames until a close frame; returns its code and reason.
    pub fn read_close(&mut self) -> Option<(u16, String)> {
        while let Some((opcode, payload)) = self.read_frame() {
            if opcode == 8 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
            }
        }
        None
    }
}

/// A client frame: the first byte (FIN and opcode), the payload, masked or not (clients must mask).
pub fn client_frame(fin_opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut frame = vec![fin_opcode];
    let mask_bit = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= 65_535 => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if mask {
        let key = [0x12, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    frame
}

/// Sends a raw HTTP request and returns the whole response.
pub fn http_request(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("tcp connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// The value of one series of the gateway's /metrics (`name{labels}` as Prometheus prints it,
/// labels sorted by name), or None if there is no such series.
pub fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let text = http_request(addr, "GET /metrics HTTP/1.1\r\n\r\n");
    text.lines()
        .find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `check` until it holds or [`PATIENCE`] runs out.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within {PATIENCE:?}");
}
