//! permessage-deflate through real sockets: a client that negotiates it decodes byte for byte
//! the JSON an uncompressed client reads (ticks, snapshots, list_symbols); each tick is
//! compressed once whatever the number of compressing clients; bad offers are declined as
//! RFC 7692 says (the upgrade goes on uncompressed) and counted; a deflate bomb gets 1009.
//!
//! The compressing client is written here on flate2, apart from the gateway's code: it offers
//! the extension, checks the answer, inflates every RSV1 message on its own (the gateway
//! answered `server_no_context_takeover`) and compresses what it sends.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use tickgate_server::Gateway;
use tickgate_testkit::{PATIENCE, TestClient, client_frame, eventually, metric, start_gateway};

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// A WebSocket client that negotiates permessage-deflate.
struct DeflateClient {
    stream: TcpStream,
    pending: Vec<u8>,
    /// The upgrade response's head.
    head: String,
    inflater: Decompress,
    /// Messages that arrived compressed.
    compressed: usize,
}

/// One server message: opcode, whether it came compressed, payload (inflated).
type Received = (u8, bool, Vec<u8>);

impl DeflateClient {
    /// Upgrades with `offer` as `Sec-WebSocket-Extensions` (none when empty).
    fn connect(addr: SocketAddr, offer: &str) -> Self {
        let mut stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let extensions =
            if offer.is_empty() { String::new() } else { format!("Sec-WebSocket-Extensions: {offer}\r\n") };
        write!(
            stream,
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n"
        )
        .unwrap();
        let mut client = DeflateClient {
            stream,
            pending: Vec::new(),
            head: String::new(),
            inflater: Decompress::new(false),
            compressed: 0,
        };
        let head = loop {
            if let Some(p) = client.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break client.pending.drain(..p + 4).collect::<Vec<u8>>();
            }
            assert!(client.fill(), "no upgrade response");
        };
        client.head = String::from_utf8(head).unwrap();
        assert!(client.head.starts_with("HTTP/1.1 101"), "{}", client.head);
        client
    }

    /// The `Sec-WebSocket-Extensions` answer, if any.
    fn agreed(&self) -> Option<&str> {
        self.head.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
    }

    fn fill(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        match self.stream.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// The next message (the gateway never fragments); None once the connection ends.
    fn recv(&mut self) -> Option<Received> {
        loop {
            if self.pending.len() >= 2 {
                let (len, at) = match self.pending[1] & 0x7f {
                    126 if self.pending.len() >= 4 => {
                        (u16::from_be_bytes([self.pending[2], self.pending[3]]) as usize, 4)
                    }
                    127 if self.pending.len() >= 10 => {
                        (u64::from_be_bytes(self.pending[2..10].try_into().unwrap()) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.pending.len() >= at + len {
                    let first = self.pending[0];
                    assert_eq!(first & 0x80, 0x80, "the gateway never fragments");
                    let payload: Vec<u8> = self.pending[at..at + len].to_vec();
                    self.pending.drain(..at + len);
                    let rsv1 = first & 0x40 != 0;
                    if !rsv1 {
                        return Some((first & 0x0f, false, payload));
                    }
                    assert!(self.agreed().is_some(), "RSV1 without permessage-deflate");
                    self.compressed += 1;
                    return Some((first & 0x0f, true, self.inflate(&payload)));
                }
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn inflate(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&TAIL);
        // No context taken over: every message inflates on its own.
        self.inflater.reset(false);
        let mut out = Vec::with_capacity(16 << 20);
        self.inflater.decompress_vec(&input, &mut out, FlushDecompress::Sync).expect("valid deflate");
        assert_eq!(self.inflater.total_in() as usize, input.len(), "all of it inflated");
        out
    }

    /// The next text message as a string.
    fn recv_text(&mut self) -> (bool, String) {
        let (opcode, compressed, payload) = self.recv().expect("a message");
        assert_eq!(opcode, 1, "text");
        (compressed, String::from_utf8(payload).expect("UTF-8"))
    }

    fn send_text(&mut self, text: &str, compress: bool) {
        let frame = if compress {
            let mut c = Compress::new(Compression::default(), false);
            let mut out = Vec::with_capacity(text.len() + 64);
            c.compress_vec(text.as_bytes(), &mut out, FlushCompress::Sync).unwrap();
            assert!(out.ends_with(&TAIL));
            out.truncate(out.len() - 4);
            client_frame(0xc1, &out, true)
        } else {
            client_frame(0x81, text.as_bytes(), true)
        };
        self.stream.write_all(&frame).unwrap();
    }

    /// Reads until a close frame; its code.
    fn recv_close_code(&mut self) -> Option<u16> {
        while let Some((opcode, _, payload)) = self.recv() {
            if opcode == 8 {
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
        None
    }
}

const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// (symbol, seq) of a live event, or None for other messages.
fn event_key(text: &str) -> Option<(String, u64)> {
    let v: Value = serde_json::from_str(text).ok()?;
    if !matches!(v["type"].as_str(), Some("trade" | "quote")) {
        return None;
    }
    Some((v["symbol"].as_str()?.to_string(), v["seq"].as_u64()?))
}

#[test]
fn a_compressed_client_decodes_the_same_json_as_a_plain_one() {
    let gateway = start_gateway(|c| {
        c.server.reactors = 1;
        c.sim.symbols = 20;
        c.sim.rate = 2_000.0;
    });
    let addr = gateway.local_addr();
    let mut plain = TestClient::connect(addr);
    let mut deflate = DeflateClient::connect(addr, BROWSER_OFFER);
    assert_eq!(deflate.agreed(), Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"));
    let (_, welcome) = deflate.recv_text();
    assert!(welcome.starts_with("{\"type\":\"welcome\""), "{welcome}");

    // list_symbols: a large reply, compressed for this connection alone.
    plain.send_json(json!({"op": "list_symbols", "id": 1}));
    deflate.send_text(r#"{"op":"list_symbols","id":1}"#, true);
    let plain_list = plain.recv_raw();
    let (compressed, deflate_list) = deflate.recv_text();
    assert!(compressed, "the symbol list came compressed");
    assert_eq!(deflate_list, plain_list, "byte-identical JSON");

    // The same subscription; the command itself sent compressed.
    let symbols: Vec<String> = gateway.symbols().iter().map(|(_, s)| s.name.to_string()).collect();
    let subscribe = json!({"op": "subscribe", "symbols": symbols, "id": 2}).to_string();
    plain.send_text(&subscribe);
    deflate.send_text(&subscribe, true);

    let mut plain_events = HashMap::new();
    let mut deflate_events = HashMap::new();
    let (mut plain_snapshots, mut deflate_snapshots) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let text = plain.recv_raw();
        match event_key(&text) {
            Some(key) => drop(plain_events.insert(key, text)),
            None if text.contains("\"type\":\"snapshot\"") => plain_snapshots.push(text),
            None => {}
        }
        let (_, text) = deflate.recv_text();
        match event_key(&text) {
            Some(key) => drop(deflate_events.insert(key, text)),
            None if text.contains("\"type\":\"snapshot\"") => deflate_snapshots.push(text),
            None => {}
        }
    }
    assert_eq!(plain_snapshots.len(), symbols.len());
    assert_eq!(deflate_snapshots.len(), symbols.len());
    let mut common = 0;
    for (key, text) in &deflate_events {
        if let Some(plain_text) = plain_events.get(key) {
            assert_eq!(text, plain_text, "event {key:?}");
            common += 1;
        }
    }
    assert!(common > 500, "only {common} events seen by both");
    assert!(deflate.compressed > common / 2, "{} of {common} ticks came compressed", deflate.compressed);
    eventually("compression is counted", || {
        metric(addr, "tickgate_deflate_connections") == Some(1.0)
            && metric(addr, "tickgate_deflate_messages_total{kind=\"shared\"}").is_some_and(|n| n > 0.0)
            && metric(addr, "tickgate_deflate_messages_total{kind=\"own\"}").is_some_and(|n| n > 0.0)
            && metric(addr, "tickgate_inflate_messages_total") == Some(2.0)
    });
    let raw = metric(addr, "tickgate_deflate_raw_bytes_total{kind=\"shared\"}").unwrap();
    let compressed = metric(addr, "tickgate_deflate_compressed_bytes_total{kind=\"shared\"}").unwrap();
    assert!(compressed < raw, "{compressed} compressed bytes for {raw}");
}

/// Totals of the shared compression and of the ticks, once the feed is paused and every
/// reactor has fanned out and published what it was sent.
fn settled(gateway: &Gateway) -> (u64, u64, u64) {
    gateway.feed_control().pause();
    let stats = gateway.stats();
    let ticks = || stats.ingest.ticks.load(Ordering::Relaxed);
    eventually("the feed stopped", || {
        let before = ticks();
        std::thread::sleep(Duration::from_millis(50));
        ticks() == before
    });
    let beats: Vec<u64> = stats.reactors.iter().map(|r| r.heartbeat_ns.load(Ordering::Relaxed)).collect();
    eventually("every reactor published its counters", || {
        stats.reactors.iter().zip(&beats).all(|(r, &beat)| {
            r.heartbeat_ns.load(Ordering::Relaxed) > beat && r.channel_depth.load(Ordering::Relaxed) == 0
        })
    });
    let shared_deliveries = stats.reactors.iter().map(|r| r.counters.deflated_deliveries.load(Ordering::Relaxed)).sum();
    (ticks(), stats.ingest.deflate.frames.load(Ordering::Relaxed), shared_deliveries)
}

#[test]
fn each_tick_is_compressed_once_whatever_the_number_of_clients() {
    let gateway = start_gateway(|c| {
        c.sim.symbols = 10;
        c.sim.rate = 2_000.0;
    });
    let addr = gateway.local_addr();
    let symbols: Vec<String> = gateway.symbols().iter().map(|(_, s)| s.name.to_string()).collect();
    let subscribe = json!({"op": "subscribe", "symbols": symbols}).to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..12)
        .map(|_| {
            let mut client = DeflateClient::connect(addr, BROWSER_OFFER);
            client.send_text(&subscribe, false);
            let stop = stop.clone();
            std::thread::spawn(move || while !stop.load(Ordering::Relaxed) && client.recv().is_some() {})
        })
        .collect();
    eventually("twelve compressing clients", || metric(addr, "tickgate_deflate_connections") == Some(12.0));
    let before = settled(&gateway);
    gateway.feed_control().resume();
    std::thread::sleep(Duration::from_millis(1500));
    let after = settled(&gateway);
    stop.store(true, Ordering::Relaxed);
    let (ticks, frames, deliveries) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    assert!(ticks > 500, "{ticks} ticks");
    // Every tick is compressible JSON: compressed exactly once, shared twelve times.
    assert_eq!(frames, ticks, "compressions per tick");
    assert_eq!(deliveries, 12 * ticks, "every client got the shared frame of every tick");
    drop(gateway);
    for reader in readers {
        let _ = reader.join();
    }
}

#[test]
fn no_tick_is_compressed_without_a_compressing_client() {
    let gateway = start_gateway(|c| c.sim.rate = 2_000.0);
    let addr = gateway.local_addr();
    let mut plain = TestClient::connect(addr);
    plain.subscribe(&["AAPL"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gateway.stats().ingest.deflate.frames.load(Ordering::Relaxed), 0);
}

#[test]
fn bad_offers_are_declined_and_counted_and_the_upgrade_goes_on() {
    let gateway = start_gateway(|_| {});
    let addr = gateway.local_addr();
    let cases = [
        ("permessage-deflate; server_max_window_bits=16", "window_bits_out_of_range"),
        ("permessage-deflate; client_max_window_bits=7", "window_bits_out_of_range"),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", "duplicate_parameter"),
        ("permessage-deflate; mystery=1", "unknown_parameter"),
        ("permessage-deflate; server_max_window_bits", "invalid_value"),
        ("permessage-deflate; server_max_window_bits=\"10", "malformed"),
    ];
    for (i, (offer, reason)) in cases.iter().enumerate() {
        let mut client = DeflateClient::connect(addr, offer);
        assert_eq!(client.agreed(), None, "{offer}: declined");
        let (compressed, welcome) = client.recv_text();
        assert!(!compressed && welcome.contains("welcome"));
        client.send_text(r#"{"op":"list_symbols"}"#, false);
        let (compressed, list) = client.recv_text();
        assert!(!compressed && list.contains("\"type\":\"symbols\""), "{offer}: served uncompressed: {list}");
        let series = format!("tickgate_deflate_offers_declined_total{{reason=\"{reason}\"}}");
        eventually(&format!("{offer} counted"), || metric(addr, &series).is_some_and(|n| n >= 1.0));
        let _ = i;
    }
    // A declined offer, then one that can be honoured: the second is taken, with its window.
    let client = DeflateClient::connect(addr, "permessage-deflate; x=1, permessage-deflate; server_max_window_bits=10");
    assert_eq!(
        client.agreed(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
    );
    // A compressed frame on a connection that did not agree to compression: RSV1 is a protocol error.
    let mut plain = DeflateClient::connect(addr, "");
    plain.recv_text();
    plain.send_text(r#"{"op":"list_symbols","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#, true);
    assert_eq!(plain.recv_close_code(), Some(1002));
}

#[test]
fn a_small_window_gets_only_messages_that_fit_it_compressed() {
    let gateway = start_gateway(|c| c.sim.rate = 2_000.0);
    let addr = gateway.local_addr();
    let mut client = DeflateClient::connect(addr, "permessage-deflate; server_max_window_bits=8");
    client.recv_text();
    client.send_text(r#"{"op":"list_symbols"}"#, false);
    let (compressed, list) = client.recv_text();
    assert!(list.len() > 256 && !compressed, "longer than 2^8 bytes: sent as it is");
    client.send_text(r#"{"op":"subscribe","symbols":["AAPL","MSFT"]}"#, false);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let (compressed, text) = client.recv_text();
        assert!(!compressed || text.len() <= 256, "{text}");
    }
    assert!(client.compressed > 0, "ticks fit a 256-byte window");
}

#[test]
fn a_deflate_bomb_gets_1009() {
    let gateway = start_gateway(|_| {});
    let addr = gateway.local_addr();
    let mut client = DeflateClient::connect(addr, BROWSER_OFFER);
    client.recv_text();
    // 10 MB of spaces compress to about 10 KB, under limits.max_message_size (16 KiB).
    let mut c = Compress::new(Compression::best(), false);
    let mut bomb = Vec::with_capacity(1 << 20);
    c.compress_vec(&vec![b' '; 10 << 20], &mut bomb, FlushCompress::Sync).unwrap();
    bomb.truncate(bomb.len() - 4);
    assert!(bomb.len() < 16 * 1024, "{}", bomb.len());
    client.stream.write_all(&client_frame(0xc1, &bomb, true)).unwrap();
    assert_eq!(client.recv_close_code(), Some(1009));
    eventually("the bomb is counted", || metric(addr, "tickgate_inflate_too_big_closes_total") == Some(1.0));
    // The gateway goes on serving.
    let mut other = DeflateClient::connect(addr, BROWSER_OFFER);
    assert!(other.recv_text().1.contains("welcome"));
}

#[test]
fn configuration_turns_it_off() {
    let gateway = start_gateway(|c| c.server.permessage_deflate = false);
    let mut client = DeflateClient::connect(gateway.local_addr(), BROWSER_OFFER);
    assert_eq!(client.agreed(), None);
    client.send_text(r#"{"op":"list_symbols"}"#, false);
    client.recv_text();
    let (compressed, _) = client.recv_text();
    assert!(!compressed);
}
