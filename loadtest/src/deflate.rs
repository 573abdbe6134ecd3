//! permessage-deflate on the load generator's side (`--deflate`): the offer, inflating what
//! arrives compressed (timed, so the client's share of the cost is reported with the server's),
//! the bytes on the wire per event, and one probe of the wire size of a snapshot and of a
//! `list_symbols` reply.
//!
//! The loadtest offers `client_max_window_bits` like a browser and inflates each RSV1 message
//! on its own: the servers measured (tickgate, and Bun with its shared compressor) answer
//! `server_no_context_takeover`; a server that keeps its context would be refused here
//! (the probe and the runs stop counting such messages as readable).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use flate2::{Decompress, FlushDecompress};

use crate::tls::TlsClient;
use crate::wsframe::{parse_frame, write_client_frame};

/// The offer every browser sends.
pub const OFFER_HEADER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

/// The tail RFC 7692 strips from every compressed message.
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Largest inflated message (the loadtest's largest frame).
const MAX_INFLATED: usize = crate::wsframe::MAX_FRAME as usize;

/// What the reading clients received in the window, as sent on the wire, and what inflating
/// it cost them.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct WireFigures {
    /// Event (trade, quote) frames received in the window, and their bytes on the wire (header
    /// and payload, as the server sent them).
    pub event_frames: u64,
    pub event_wire_bytes: u64,
    /// Wire bytes per event frame: the bytes a tick costs one client.
    pub bytes_per_event: f64,
    /// Of the event frames, those that came compressed.
    pub compressed_events: u64,
    /// Messages the load generator inflated, and the time that took (its own CPU, on top of the
    /// server's), per message.
    pub inflated: u64,
    pub inflate_ns_per_message: f64,
    /// Wire bytes of one snapshot and of one `list_symbols` reply, from one probing client
    /// (0: the server sent none).
    pub snapshot_bytes: u64,
    pub list_symbols_bytes: u64,
    /// Whether the upgrade agreed to permessage-deflate (the probe's).
    pub agreed: bool,
}

impl WireFigures {
    /// Adds the figures of a run made at the same time: counts add up, the per-message figures
    /// are recomputed over the sum, the probe's sizes are the first run's that has them.
    pub fn add(&mut self, other: &Self) {
        let inflate_ns =
            self.inflate_ns_per_message * self.inflated as f64 + other.inflate_ns_per_message * other.inflated as f64;
        self.event_frames += other.event_frames;
        self.event_wire_bytes += other.event_wire_bytes;
        self.compressed_events += other.compressed_events;
        self.inflated += other.inflated;
        self.bytes_per_event =
            if self.event_frames > 0 { self.event_wire_bytes as f64 / self.event_frames as f64 } else { 0.0 };
        self.inflate_ns_per_message = if self.inflated > 0 { inflate_ns / self.inflated as f64 } else { 0.0 };
        if self.snapshot_bytes == 0 {
            self.snapshot_bytes = other.snapshot_bytes;
        }
        if self.list_symbols_bytes == 0 {
            self.list_symbols_bytes = other.list_symbols_bytes;
        }
        self.agreed |= other.agreed;
    }
}

/// Inflates RSV1 messages, one at a time, and counts what it did.
#[derive(Debug)]
pub struct Inflater {
    decompress: Decompress,
    input: Vec<u8>,
    pub out: Vec<u8>,
    pub messages: u64,
    pub ns: u64,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    pub fn new() -> Self {
        Self {
            decompress: Decompress::new(false),
            input: Vec::new(),
            out: Vec::with_capacity(64 * 1024),
            messages: 0,
            ns: 0,
        }
    }

    /// Inflates one compressed payload into `self.out`; false when it does not inflate.
    pub fn inflate(&mut self, payload: &[u8]) -> bool {
        let started = Instant::now();
        self.input.clear();
        self.input.extend_from_slice(payload);
        self.input.extend_from_slice(&TAIL);
        self.decompress.reset(false);
        self.out.clear();
        let ok = loop {
            if self.out.len() == self.out.capacity() {
                if self.out.len() >= MAX_INFLATED {
                    break false;
                }
                self.out.reserve(self.out.capacity().max(4096));
            }
            let consumed = self.decompress.total_in() as usize;
            match self.decompress.decompress_vec(&self.input[consumed..], &mut self.out, FlushDecompress::Sync) {
                Err(_) => break false,
                Ok(_)
                    if self.decompress.total_in() as usize == self.input.len()
                        && self.out.len() < self.out.capacity() =>
                {
                    break true;
                }
                Ok(_) => {}
            }
        };
        self.messages += 1;
        self.ns += started.elapsed().as_nanos() as u64;
        ok
    }
}

/// A blocking byte stream: a TCP socket, or a TLS session over one.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// One blocking client (over `tls` when given): upgrades (offering permessage-deflate with
/// `deflate`), asks `list_symbols` and subscribes to `symbol`, and returns the wire bytes of the
/// `symbols` reply and of the first `snapshot` (WebSocket frames, before any TLS), and whether
/// the server agreed. Best effort, within a few seconds: a server without those messages gives
/// zeros.
pub fn probe(addr: SocketAddr, tls: Option<&TlsClient>, deflate: bool, symbol: &str) -> WireFigures {
    let mut figures = WireFigures::default();
    let Ok(tcp) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return figures };
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(500)));
    let mut stream: Box<dyn Stream> = match tls {
        None => Box::new(tcp),
        Some(tls) => match tls.blocking(tcp) {
            Ok(session) => Box::new(session),
            Err(_) => return figures,
        },
    };
    let offer = if deflate { OFFER_HEADER } else { "" };
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    );
    let mut out = request.into_bytes();
    write_client_frame(&mut out, 1, br#"{"op":"list_symbols"}"#, [1, 2, 3, 4]);
    let subscribe = format!("{{\"op\":\"subscribe\",\"symbols\":[\"{symbol}\"]}}");
    write_client_frame(&mut out, 1, subscribe.as_bytes(), [5, 6, 7, 8]);
    if stream.write_all(&out).is_err() {
        return figures;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut at = None;
    let mut inflater = Inflater::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && (figures.snapshot_bytes == 0 || figures.list_symbols_bytes == 0) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        let start = match at {
            Some(a) => a,
            None => match buf.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(p) => {
                    let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                    figures.agreed = head.contains("sec-websocket-extensions: permessage-deflate");
                    p + 4
                }
                None => continue,
            },
        };
        let mut next = start;
        while let Ok(Some(frame)) = parse_frame(&buf, next) {
            let (from, to) = frame.payload;
            let payload: &[u8] =
                if frame.rsv & 0x40 != 0 && inflater.inflate(&buf[from..to]) { &inflater.out } else { &buf[from..to] };
            let wire = (frame.next - next) as u64;
            if payload.starts_with(b"{\"type\":\"symbols\"") && figures.list_symbols_bytes == 0 {
                figures.list_symbols_bytes = wire;
            } else if payload.starts_with(b"{\"type\":\"snapshot\"") && figures.snapshot_bytes == 0 {
                figures.snapshot_bytes = wire;
            }
            next = frame.next;
        }
        at = Some(next);
    }
    figures
}
