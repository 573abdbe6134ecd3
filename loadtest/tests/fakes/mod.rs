//! What every fake server of the verdict's tests shares: the WebSocket upgrade, reading the
//! client's subscribe, writing unmasked text frames, the wall clock.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tickgate_loadtest::run::{Pick, RunParams};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Tests against fakes run one at a time: the load generator's CPU share is measured over the
/// whole test process.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// An unmasked text frame (payloads under 64 KiB).
pub fn text_frame(text: &str) -> Vec<u8> {
    let mut f = vec![0x81];
    match text.len() {
        n if n < 126 => f.push(n as u8),
        n => {
            f.push(126);
            f.extend_from_slice(&u16::try_from(n).expect("a frame under 64 KiB").to_be_bytes());
        }
    }
    f.extend_from_slice(text.as_bytes());
    f
}

/// Reads the upgrade request, answers it, and reads the first (masked) text frame: the
/// subscribe, as JSON.
pub fn accept_client(stream: &mut TcpStream) -> serde_json::Value {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    let mut key = String::new();
    while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        if let Some(value) = line.strip_prefix("Sec-WebSocket-Key:") {
            key = value.trim().to_string();
        }
        line.clear();
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    stream
        .write_all(
            format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut head = [0u8; 2];
    reader.read_exact(&mut head).unwrap();
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            reader.read_exact(&mut l).unwrap();
            usize::from(u16::from_be_bytes(l))
        }
        n => usize::from(n),
    };
    let mut mask = [0u8; 4];
    reader.read_exact(&mut mask).unwrap();
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).unwrap();
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    serde_json::from_slice(&payload).unwrap()
}

/// A short run against a fake: 0.5 s of warm-up, a window of 2 s, nothing but the clients.
pub fn params(addr: SocketAddr, connections: usize, universe: Vec<String>, per_client: usize) -> RunParams {
    RunParams {
        addrs: vec![addr],
        tls: None,
        connections,
        symbols_per_client: per_client,
        universe,
        pick: Pick::Uniform,
        source_addrs: Vec::new(),
        connect_rate: 0.0,
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(2),
        slow_share: 0.0,
        churn_per_s: 0.0,
        seed: 1,
        server_pid: None,
        progress: false,
        policy: None,
        drain: Duration::from_secs(2),
        deflate: false,
        wire_probe: false,
        resume_share: 0.0,
        resume_every: Duration::from_secs(1),
    }
}
