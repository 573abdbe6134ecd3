//! One client, whatever it sends, must not freeze its reactor or balloon the gateway's memory.
//!
//! Each test runs one attack against a gateway with one reactor while a healthy client on that
//! reactor reads every tick of its symbols. The healthy client's tick rate and p99 delay are
//! measured without the attack and then with it, in the same test: the machine may be loaded
//! by other work, so only the ratio is asserted (at least half the rate, a p99 within a bound
//! relative to the baseline). Memory is checked through the gateway's own accounting of queued
//! bytes (published by every sweep, four times a second), against the documented bound of
//! `limits.outbound_hard_limit` per connection; the process RSS also holds the test's clients,
//! so it is only held to a loose bound that catches gross growth. The measurements run one test
//! at a time (a lock), so one test's attack does not land in another's baseline.
//!
//! `cargo test -p tickgate-server --test adversarial_clients -- --nocapture --test-threads 1`
//! prints one row per attack (the table in docs/BENCHMARKS.md).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tickgate_server::config::ApiKey;
use tickgate_server::connection::CloseReason;
use tickgate_server::{Config, Gateway};
use tickgate_testkit::{TestClient, client_frame, eventually, start_gateway};

/// How long each phase is measured.
const MEASURE: Duration = Duration::from_millis(2_000);

/// Clients in each flood, each on its own thread.
const FLOODERS: usize = 3;

/// Held while a test measures.
static MEASURING: Mutex<()> = Mutex::new(());

fn one_reactor(c: &mut Config) {
    c.server.reactors = 1;
    c.sim.symbols = 20;
    c.sim.rate = 2_000.0;
}

/// What the healthy client saw during one phase.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ticks_per_s: f64,
    p99: Duration,
}

/// A client subscribed to every symbol, that only reads.
struct Healthy {
    client: TestClient,
}

impl Healthy {
    fn new(addr: SocketAddr, symbols: &[String]) -> Self {
        let mut client = TestClient::connect(addr);
        client.send_json(json!({"op":"subscribe","symbols":symbols}));
        client.recv_type("subscribed");
        Healthy { client }
    }

    /// Reads for `dur`: ticks a second and the p99 of their delay from the gateway's timestamp.
    fn measure(&mut self, dur: Duration) -> Sample {
        let start = Instant::now();
        let mut delays = Vec::new();
        while start.elapsed() < dur {
            let msg = self.client.recv();
            if msg["type"] == "trade" || msg["type"] == "quote" {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
                delays.push(now.saturating_sub(msg["gw_ts"].as_u64().unwrap_or(now)));
            }
        }
        delays.sort_unstable();
        let p99 = delays.get(delays.len() * 99 / 100).copied().unwrap_or(u64::MAX);
        Sample { ticks_per_s: delays.len() as f64 / start.elapsed().as_secs_f64(), p99: Duration::from_nanos(p99) }
    }
}

/// An attack running on its own threads until dropped.
struct Attack {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Connections the attackers opened (the flood ones reconnect when closed).
    connections: Arc<AtomicU64>,
}

impl Attack {
    fn start(threads: usize, run: impl Fn(&AtomicBool, &AtomicU64) + Send + Sync + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let run = Arc::new(run);
        let threads = (0..threads)
            .map(|_| {
                let (stop, connections, run) = (stop.clone(), connections.clone(), run.clone());
                std::thread::spawn(move || run(&stop, &connections))
            })
            .collect();
        Attack { stop, threads, connections }
    }

    /// `clients` clients that upgrade and then write `opening` once and `flood` over and over,
    /// never reading, reconnecting whenever the gateway closes them.
    fn flood(addr: SocketAddr, clients: usize, opening: Vec<u8>, flood: Vec<u8>) -> Self {
        Attack::start(clients, move |stop, connections| {
            while !stop.load(Ordering::Relaxed) {
                let Some(mut stream) = upgraded_small_window(addr) else { continue };
                connections.fetch_add(1, Ordering::Relaxed);
                if stream.write_all(&opening).is_err() {
                    continue;
                }
                // Where the next write starts in `flood`: a partial write resumes mid-frame.
                let mut at = 0;
                while !stop.load(Ordering::Relaxed) {
                    match stream.write(&flood[at..]) {
                        Ok(0) => break,
                        Ok(n) => at = (at + n) % flood.len(),
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        }
                        Err(_) => break,
                    }
                }
            }
        })
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A TCP connection that completed the WebSocket upgrade (the welcome is not read).
fn upgraded(addr: SocketAddr, path: &str) -> Option<TcpStream> {
    upgrade(TcpStream::connect(addr).ok()?, addr, path, b"")
}

/// The same with a 4 KiB receive buffer, for a client that never reads: what the gateway sends
/// it backs up into the gateway's queue instead of the kernel's buffers.
fn upgraded_small_window(addr: SocketAddr) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).ok()?;
    socket.set_recv_buffer_size(4096).ok()?;
    socket.connect(&addr.into()).ok()?;
    upgrade(socket.into(), addr, "/ws", b"")
}

/// Upgrades `stream`, sending `early` (frames) in the same write as the request.
fn upgrade(mut stream: TcpStream, addr: SocketAddr, path: &str, early: &[u8]) -> Option<TcpStream> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.set_write_timeout(Some(Duration::from_millis(100))).ok()?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(early);
    stream.write_all(&request).ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    head.starts_with(b"HTTP/1.1 101").then_some(stream)
}

/// A masked client frame.
fn frame(fin_opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(fin_opcode, payload, true)
}

/// `frame` repeated to about 64 KiB.
fn repeated(frame: &[u8]) -> Vec<u8> {
    frame.repeat((64 * 1024 / frame.len()).max(1))
}

/// Measures the healthy client without, then with, the attack `start` returns; samples the
/// gateway's queued bytes meanwhile; asserts the healthy client kept half its rate and a bounded
/// p99, and that the queue stayed within `outbound_hard_limit` for each connection open.
fn under_attack(name: &str, gateway: &Gateway, start: impl FnOnce() -> Attack) {
    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let symbols: Vec<String> = gateway.symbols().iter().map(|(_, s)| s.name.to_string()).collect();
    let mut healthy = Healthy::new(gateway.local_addr(), &symbols);
    healthy.measure(Duration::from_millis(300));
    let base = healthy.measure(MEASURE);
    let reactor = gateway.stats().reactors[0].clone();
    let rss_before = rss_bytes();
    let attack = start();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, reactor) = (sampling.clone(), reactor.clone());
        std::thread::spawn(move || {
            let mut most = (0u64, 1u64);
            let mut most_rss = 0;
            while sampling.load(Ordering::Relaxed) {
                most_rss = most_rss.max(rss_bytes());
                let queued = reactor.queued_bytes.load(Ordering::Relaxed);
                let open = reactor.connections.load(Ordering::Relaxed).max(1);
                if queued * most.1 > most.0 * open {
                    most = (queued, open);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (most, most_rss)
        })
    };
    // The attack gets going while the healthy client reads on.
    healthy.measure(Duration::from_millis(300));
    let attacked = healthy.measure(MEASURE);
    sampling.store(false, Ordering::Relaxed);
    let ((most_queued, open), most_rss) = sampler.join().unwrap();
    let rss_growth = most_rss.saturating_sub(rss_before);
    let attackers = attack.connections.load(Ordering::Relaxed);
    drop(attack);
    let ratio = attacked.ticks_per_s / base.ticks_per_s;
    let closes: Vec<String> = CloseReason::ALL
        .iter()
        .filter_map(|&r| Some(format!("{} {}", r.as_str(), Some(closed_for(gateway, r)).filter(|&n| n > 0)?)))
        .collect();
    println!(
        "| {name} | {:.0} | {:.0} | {ratio:.2} | {:.1} | {:.1} | {} KiB | {} MiB | {attackers} | {} |",
        base.ticks_per_s,
        attacked.ticks_per_s,
        base.p99.as_secs_f64() * 1e3,
        attacked.p99.as_secs_f64() * 1e3,
        most_queued / open / 1024,
        rss_growth >> 20,
        closes.join(", "),
    );
    assert!(base.ticks_per_s > 100.0, "{name}: the baseline saw ticks ({base:?})");
    assert!(ratio >= 0.5, "{name}: the healthy client kept at least half its rate: {base:?} then {attacked:?}");
    let bound = base.p99 * 10 + Duration::from_millis(200);
    assert!(attacked.p99 <= bound, "{name}: p99 {:?} within {bound:?} (baseline {:?})", attacked.p99, base.p99);
    let hard = Config::default().limits.outbound_hard_limit as u64;
    assert!(most_queued <= open * hard, "{name}: {most_queued} bytes queued for {open} connections");
    // The process also holds the test's clients: only gross growth would show here.
    assert!(rss_growth < 64 << 20, "{name}: the process grew by {} MiB", rss_growth >> 20);
}

/// The process's resident memory (the gateway and the test's clients), from /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

fn closed_for(gateway: &Gateway, reason: CloseReason) -> u64 {
    gateway.stats().reactors.iter().map(|r| r.closed_by_reason[reason.index()].load(Ordering::Relaxed)).sum()
}

/// Reads frames from `stream` until a close frame; its code and reason.
fn read_close(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut at = 0;
        while all.len() >= at + 2 {
            let (len, offset) = match all[at + 1] & 0x7f {
                126 if all.len() >= at + 4 => (usize::from(u16::from_be_bytes([all[at + 2], all[at + 3]])), 4),
                126 => break,
                127 => return None,
                n => (usize::from(n), 2),
            };
            if all.len() < at + offset + len {
                break;
            }
            if all[at] & 0x0f == 8 {
                let p = &all[at + offset..at + offset + len];
                return Some((u16::from_be_bytes([p[0], p[1]]), String::from_utf8_lossy(&p[2..]).into_owned()));
            }
            at += offset + len;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Starts a gateway configured by `tweak` and runs a flood of `flood` (after `opening`) from
/// [`FLOODERS`] clients against it with [`under_attack`]; returns the gateway, to check how the
/// flooders were closed.
fn flooded(name: &str, tweak: fn(&mut Config), opening: &[u8], flood: &[u8]) -> Gateway {
    let gateway = start_gateway(tweak);
    let addr = gateway.local_addr();
    under_attack(name, &gateway, || Attack::flood(addr, FLOODERS, opening.to_vec(), repeated(flood)));
    gateway
}

/// Flooders closed for their frames or for their messages.
fn closed_for_flooding(gateway: &Gateway) -> u64 {
    closed_for(gateway, CloseReason::TooManyFrames) + closed_for(gateway, CloseReason::RateLimit)
}

#[test]
fn a_pong_flood() {
    let gateway = flooded("pong flood", one_reactor, b"", &frame(0x8a, b""));
    let addr = gateway.local_addr();
    assert!(closed_for(&gateway, CloseReason::TooManyFrames) > 0, "the flooders were closed for their frames");
    // What the attacker sees: 1008 "too many frames".
    let mut stream = upgraded(addr, "/ws").unwrap();
    let _ = stream.write_all(&frame(0x8a, b"").repeat(500));
    assert_eq!(read_close(&mut stream), Some((1008, "too many frames".to_string())));
    // Frames sent in the same packet as the request head count too.
    let early = frame(0x8a, b"").repeat(500);
    let mut stream = upgrade(TcpStream::connect(addr).unwrap(), addr, "/ws", &early).unwrap();
    assert_eq!(read_close(&mut stream), Some((1008, "too many frames".to_string())));
}

/// The frame limit raised out of reach: the flood goes on for the whole measurement, and only the
/// per-turn read allowance stands between it and the healthy client.
fn no_frame_limit(c: &mut Config) {
    one_reactor(c);
    c.limits.max_frames_per_second = 100_000_000;
}

#[test]
fn a_pong_flood_held_by_the_read_allowance_alone() {
    let gateway = flooded("pong flood, frame limit off", no_frame_limit, b"", &frame(0x8a, b""));
    assert_eq!(closed_for(&gateway, CloseReason::TooManyFrames), 0, "the flood was read, not closed");
}

#[test]
fn a_continuation_frame_flood_held_by_the_read_allowance_alone() {
    let continuation = frame(0x00, b"");
    let gateway =
        flooded("continuation-frame flood, frame limit off", no_frame_limit, &frame(0x01, b"{"), &continuation);
    assert_eq!(closed_for(&gateway, CloseReason::TooManyFrames), 0, "the flood was read, not closed");
}

#[test]
fn a_ping_flood() {
    let gateway = flooded("ping flood", one_reactor, b"", &frame(0x89, b"are you there"));
    assert!(closed_for_flooding(&gateway) > 0);
}

#[test]
fn a_tiny_frame_flood() {
    let gateway = flooded("tiny-frame flood", one_reactor, b"", &frame(0x81, b""));
    assert!(closed_for_flooding(&gateway) > 0);
}

#[test]
fn a_continuation_frame_flood() {
    // One message that never ends: a first fragment, then empty continuations forever.
    let gateway = flooded("continuation-frame flood", one_reactor, &frame(0x01, b"{"), &frame(0x00, b""));
    assert!(closed_for(&gateway, CloseReason::TooManyFrames) > 0, "closed for its frames, not left to run");
}

#[test]
fn a_fragmented_message_flood() {
    // Valid commands, each cut into one-byte fragments.
    let command = br#"{"op":"list_subscriptions"}"#;
    let mut fragmented = frame(0x01, &command[..1]);
    for b in &command[1..command.len() - 1] {
        fragmented.extend(frame(0x00, std::slice::from_ref(b)));
    }
    fragmented.extend(frame(0x80, &command[command.len() - 1..]));
    let gateway = flooded("fragmented-message flood", one_reactor, b"", &fragmented);
    assert!(closed_for(&gateway, CloseReason::TooManyFrames) > 0);
}

#[test]
fn a_command_flood() {
    let command = frame(0x81, br#"{"op":"list_subscriptions"}"#);
    let gateway = flooded("command flood", one_reactor, b"", &command);
    assert!(closed_for_flooding(&gateway) > 0);
}

/// A universe big enough for amplification to matter.
fn big_universe(c: &mut Config) {
    one_reactor(c);
    c.sim.symbols = 500;
    // A small kernel buffer, so what the attacker does not read is queued where it is counted.
    c.server.socket_send_buffer = 8192;
}

#[test]
fn subscribe_amplification() {
    // Each `subscribe` to the whole universe asks for 500 snapshots; the attacker never reads.
    let gateway = start_gateway(big_universe);
    let addr = gateway.local_addr();
    let names: Vec<String> = gateway.symbols().iter().map(|(_, s)| s.name.to_string()).collect();
    let command = json!({"op":"subscribe","symbols":names}).to_string();
    under_attack("subscribe amplification", &gateway, || {
        Attack::flood(addr, FLOODERS, Vec::new(), repeated(&frame(0x81, command.as_bytes())))
    });
    assert!(closed_for_flooding(&gateway) + closed_for(&gateway, CloseReason::SlowConsumer) > 0);
}

#[test]
fn list_symbols_amplification() {
    let command = frame(0x81, br#"{"op":"list_symbols"}"#);
    let gateway = flooded("list_symbols amplification", big_universe, b"", &command);
    assert!(closed_for_flooding(&gateway) + closed_for(&gateway, CloseReason::SlowConsumer) > 0);
}

#[test]
fn slowloris_during_a_flood() {
    // The timers run on schedule however busy the reactor is: 300 half-open handshakes and a
    // silent client, all opened as the flood starts, are closed by the sweep during the flood.
    let gateway = start_gateway(|c| {
        one_reactor(c);
        c.limits.handshake_timeout_ms = 500;
        c.limits.ping_interval_ms = 200;
        c.limits.idle_timeout_ms = 700;
    });
    let addr = gateway.local_addr();
    let mut half_open = Vec::new();
    let mut silent = None;
    under_attack("slowloris during a pong flood", &gateway, || {
        let flood = Attack::flood(addr, FLOODERS, Vec::new(), repeated(&frame(0x8a, b"")));
        half_open.extend((0..300).map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        }));
        silent = upgraded(addr, "/ws");
        flood
    });
    // The flood lasted over 2 s, three times the longest timeout (plus a sweep period): the
    // answers were all sent during it, so they are waiting in the sockets now. (The closes are
    // counted only once the linger is over, since these clients never hang up.)
    for mut s in half_open {
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut status = [0u8; 12];
        assert!(s.read_exact(&mut status).is_ok() && &status == b"HTTP/1.1 408", "answered 408 during the flood");
    }
    let mut silent = silent.expect("the silent client upgraded");
    silent.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    assert_eq!(read_close(&mut silent), Some((1008, "idle timeout".to_string())));
}

#[test]
fn many_connections_from_one_ipv6_prefix() {
    // Only ::1 is there to connect from: the /64 grouping of other addresses is unit-tested
    // (admission::tests); here every connection comes from ::1 and the limit holds for it.
    let gateway = start_gateway(|c| {
        one_reactor(c);
        c.server.listen = "[::1]:0".parse().unwrap();
        c.limits.max_connections_per_ip = 20;
    });
    let addr = gateway.local_addr();
    let (refused, admitted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (counted_refused, counted_admitted) = (refused.clone(), admitted.clone());
    under_attack("many connections from one /64", &gateway, move || {
        Attack::start(1, move |stop, connections| {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(addr) else { continue };
                connections.fetch_add(1, Ordering::Relaxed);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = write!(
                    s,
                    "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                );
                let mut status = [0u8; 12];
                match s.read_exact(&mut status) {
                    Ok(()) if &status == b"HTTP/1.1 429" => counted_refused.fetch_add(1, Ordering::Relaxed),
                    Ok(()) if &status == b"HTTP/1.1 101" => {
                        held.push(s);
                        counted_admitted.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => 0,
                };
            }
        })
    });
    assert!(refused.load(Ordering::Relaxed) > 0, "connections past the limit were refused 429");
    assert_eq!(admitted.load(Ordering::Relaxed), 19, "the limit of 20 from ::1, the healthy client one of them");
}

#[test]
fn the_echo_route_has_the_limits_of_ws() {
    let gateway = start_gateway(|c| {
        one_reactor(c);
        c.server.echo_route = true;
    });
    let addr = gateway.local_addr();
    let mut stream = upgraded(addr, "/echo").unwrap();
    stream.write_all(&frame(0x81, &[b'x'; 20_000])).unwrap();
    let (code, _) = read_close(&mut stream).expect("closed for the size");
    assert_eq!(code, 1009, "limits.max_message_size applies on /echo");
    let mut stream = upgraded(addr, "/echo").unwrap();
    let _ = stream.write_all(&frame(0x8a, b"").repeat(500));
    assert_eq!(read_close(&mut stream), Some((1008, "too many frames".to_string())));
    eventually("counted", || closed_for(&gateway, CloseReason::TooManyFrames) >= 1);

    // With authentication on, /echo needs a token at the handshake, like /ws without `auth`.
    let gateway = start_gateway(|c| {
        one_reactor(c);
        c.server.echo_route = true;
        c.auth.enabled = true;
        c.auth.jwt_algorithm = String::new();
        c.auth.api_keys = vec![ApiKey {
            key: "echo-key-0123456789".into(),
            user: "tester".into(),
            symbols: vec!["*".into()],
            max_connections: None,
            max_bytes_per_second: None,
        }];
    });
    let refused = TestClient::try_connect_with(gateway.local_addr(), "/echo", &[]);
    assert!(
        matches!(&refused, Err(tungstenite::Error::Http(r)) if r.status() == 401),
        "no token, no echo: {refused:?}"
    );
    let auth = [("Authorization", "Bearer echo-key-0123456789")];
    let stream = TcpStream::connect(gateway.local_addr()).unwrap();
    let request =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{}/echo", gateway.local_addr()))
            .map(|mut r| {
                r.headers_mut().insert("Authorization", auth[0].1.parse().unwrap());
                r
            })
            .unwrap();
    let (mut ws, _) = tungstenite::client(request, stream).expect("a token opens /echo");
    ws.send(tungstenite::Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("hello"));
}
