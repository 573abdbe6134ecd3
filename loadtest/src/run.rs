//! One measured run: open N WebSocket connections, subscribe each to k symbols, read everything
//! the server sends for a window, and account for every message.
//!
//! Single-threaded and non-blocking (mio). The load is open loop: the server's feed decides the
//! rate, and nothing here ever slows it; latency is measured from the `gw_ts` the server stamped
//! when the tick entered it, so a server that falls behind shows it in the figures.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::procfs::{self, ProcSample};
use crate::scan::scan;
use crate::tracker::{SeqCounts, SeqTracker};
use crate::wsframe::{parse_frame, write_client_frame};

/// How clients pick their symbols.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Pick {
    Uniform,
    /// Zipf with this exponent: low-index symbols are picked far more often.
    Zipf(f64),
}

/// What to run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunParams {
    pub addr: SocketAddr,
    pub connections: usize,
    pub symbols_per_client: usize,
    /// The symbols clients choose from.
    pub universe: Vec<String>,
    pub pick: Pick,
    /// Local addresses to connect from, in turn (past ~28k connections to one address).
    pub source_addrs: Vec<IpAddr>,
    /// New connections per second; 0 = as fast as the server accepts (a connect storm).
    pub connect_rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    /// Share of clients that stop reading when the window starts.
    pub slow_share: f64,
    /// Subscription changes per second during the window (each: a client unsubscribes one of its
    /// symbols and subscribes another).
    pub churn_per_s: f64,
    pub seed: u64,
    /// Server process to measure (CPU, RSS).
    pub server_pid: Option<u32>,
    /// Print a progress line every second.
    pub progress: bool,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// From a histogram recorded in nanoseconds.
    pub fn from_ns(h: &Histogram<u64>) -> Self {
        let us = |v: u64| v as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// Figures of a server process over the window.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ServerFigures {
    pub cpu_s: f64,
    /// CPU nanoseconds per delivered message.
    pub cpu_ns_per_delivery: f64,
    pub rss_before_connect: u64,
    pub rss_connected: u64,
    /// (RSS with every client connected and subscribed, after the warm-up − RSS before) /
    /// connections.
    pub rss_per_connection: f64,
    pub rss_end: u64,
}

/// Everything one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    pub connections: usize,
    pub connected: usize,
    pub failed_connects: usize,
    pub connect_ms: Percentiles,
    pub connects_per_s: f64,
    pub window_s: f64,
    pub slow_clients: usize,
    /// Messages delivered to the fast clients in the window.
    pub delivered: u64,
    pub delivered_per_s: f64,
    pub per_client_per_s_min: f64,
    pub per_client_per_s_median: f64,
    /// gw_ts to receipt, fast clients, in the window.
    pub latency_us: Percentiles,
    pub seq: SeqCounts,
    pub slow_seq: SeqCounts,
    /// Close codes received from the server, by code.
    pub closes: BTreeMap<u16, u64>,
    /// Connections that ended without a close frame.
    pub dropped: u64,
    /// Subscription changes made during the window.
    pub churns: u64,
    pub server: Option<ServerFigures>,
    pub loadtest_cpu_s: f64,
    /// Load generator CPU over the window as a share of one core (near 1.0: saturated).
    pub loadtest_core_share: f64,
    pub tcp_socket_memory: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Upgrading,
    Open,
    Done,
}

#[derive(Debug)]
struct Client {
    sock: TcpStream,
    state: State,
    started: Instant,
    /// Bytes of an incomplete frame from the last read.
    carry: Vec<u8>,
    /// Bytes waiting to be written (handshake, subscribe, pongs).
    out: Vec<u8>,
    /// The subscribe frame, sent once the upgrade is accepted (a client must not send frames
    /// before the 101, RFC 6455 §4.1).
    subscribe: Vec<u8>,
    tracker: SeqTracker,
    slow: bool,
    delivered: u64,
}

/// A tiny deterministic generator for picking symbols.
#[derive(Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks `k` distinct symbol indices out of `n`.
fn pick_symbols(rng: &mut SplitMix, n: usize, k: usize, pick: Pick, zipf_cdf: &[f64]) -> Vec<u32> {
    let k = k.min(n);
    let mut chosen = Vec::with_capacity(k);
    while chosen.len() < k {
        let i = match pick {
            Pick::Uniform => (rng.next() % n as u64) as u32,
            Pick::Zipf(_) => {
                let u = rng.unit();
                zipf_cdf.partition_point(|&c| c < u).min(n - 1) as u32
            }
        };
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    chosen
}

fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

const READ_BUF: usize = 256 * 1024;
const MAX_IN_FLIGHT_CONNECTS: usize = 512;

/// Runs the scenario and returns what it measured.
pub fn run(params: &RunParams) -> io::Result<RunResult> {
    let n_universe = params.universe.len();
    if n_universe == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty symbol universe"));
    }
    let index: HashMap<&[u8], u32> =
        params.universe.iter().enumerate().map(|(i, s)| (s.as_bytes(), i as u32)).collect();
    let zipf_cdf: Vec<f64> = match params.pick {
        Pick::Uniform => Vec::new(),
        Pick::Zipf(s) => {
            let weights: Vec<f64> = (1..=n_universe).map(|r| 1.0 / (r as f64).powf(s)).collect();
            let total: f64 = weights.iter().sum();
            weights
                .iter()
                .scan(0.0, |acc, w| {
                    *acc += w / total;
                    Some(*acc)
                })
                .collect()
        }
    };
    let mut rng = SplitMix(params.seed);
    let host = params.addr.to_string();
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let mut clients: Vec<Client> = Vec::with_capacity(params.connections);
    let mut connect_hist = Histogram::<u64>::new_with_bounds(1_000, 120_000_000_000, 3).expect("bounds");
    let mut latency = Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3).expect("bounds");
    let mut closes: BTreeMap<u16, u64> = BTreeMap::new();
    let mut dropped = 0u64;
    let mut failed_connects = 0usize;
    let mut buf = vec![0u8; READ_BUF];
    let server_before = params.server_pid.map(|p| procfs::sample(Some(p))).transpose()?;

    let start = Instant::now();
    let mut open = 0usize;
    let mut in_flight = 0usize;
    let mut connected_at: Option<Instant> = None;
    let mut window: Option<(Instant, Option<ProcSample>, ProcSample)> = None;
    let mut rss_connected = 0;
    let mut window_end: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let mut progress_count = 0u64;
    let mut churns = 0u64;

    loop {
        let now = Instant::now();
        // Open more connections, at the requested rate and with a bounded number in flight.
        while clients.len() < params.connections && in_flight < MAX_IN_FLIGHT_CONNECTS {
            if params.connect_rate > 0.0 {
                let due = (now.duration_since(start).as_secs_f64() * params.connect_rate) as usize + 1;
                if clients.len() >= due {
                    break;
                }
            }
            let source = (!params.source_addrs.is_empty())
                .then(|| params.source_addrs[clients.len() % params.source_addrs.len()]);
            let symbols = pick_symbols(&mut rng, n_universe, params.symbols_per_client, params.pick, &zipf_cdf);
            match connect(params.addr, source) {
                Ok(mut sock) => {
                    let token = Token(clients.len());
                    poll.registry().register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)?;
                    let out = handshake.clone().into_bytes();
                    let subscribe_json = format!(
                        "{{\"op\":\"subscribe\",\"symbols\":[{}]}}",
                        symbols
                            .iter()
                            .map(|&s| format!("\"{}\"", params.universe[s as usize]))
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    let mut subscribe = Vec::new();
                    write_client_frame(&mut subscribe, 1, subscribe_json.as_bytes(), (rng.next() as u32).to_le_bytes());
                    clients.push(Client {
                        sock,
                        state: State::Connecting,
                        started: now,
                        carry: Vec::new(),
                        out,
                        subscribe,
                        tracker: SeqTracker::new(&symbols),
                        slow: false,
                        delivered: 0,
                    });
                    in_flight += 1;
                }
                Err(e) => {
                    failed_connects += 1;
                    if failed_connects == 1 {
                        eprintln!("connect failed: {e}");
                    }
                    if failed_connects > params.connections / 10 + 10 {
                        return Err(io::Error::other(format!("too many failed connects: {e}")));
                    }
                }
            }
        }

        // Phases: everyone connected -> warm up -> window -> done.
        if connected_at.is_none() && clients.len() == params.connections && in_flight == 0 {
            connected_at = Some(now);
        }
        if let (Some(at), None) = (connected_at, window) {
            if now.duration_since(at) >= params.warmup {
                // The window starts: reset the counts, make the slow clients stop reading.
                let slow_count = (params.slow_share * clients.len() as f64).round() as usize;
                for (i, c) in clients.iter_mut().enumerate() {
                    c.delivered = 0;
                    c.tracker.counts = SeqCounts::default();
                    c.slow = i < slow_count;
                }
                latency.reset();
                let server = params.server_pid.map(|p| procfs::sample(Some(p))).transpose()?;
                // Memory with every client connected and subscribed, after the warm-up settled.
                rss_connected = server.map_or(0, |s| s.rss_bytes);
                window = Some((now, server, procfs::sample(None)?));
                window_end = Some(now + params.duration);
            }
        }
        if window_end.is_some_and(|end| now >= end) {
            break;
        }
        // Subscription churn, spread evenly over the window.
        if let (Some((window_start, ..)), true) = (window, params.churn_per_s > 0.0) {
            let due = (now.duration_since(window_start).as_secs_f64() * params.churn_per_s) as u64;
            while churns < due && n_universe > params.symbols_per_client {
                churns += 1;
                let i = (rng.next() % clients.len() as u64) as usize;
                let c = &mut clients[i];
                if c.state != State::Open || c.slow {
                    continue;
                }
                let held: Vec<u32> = c.tracker.symbols().collect();
                let Some(&old) = held.get((rng.next() % held.len().max(1) as u64) as usize) else { continue };
                let new = loop {
                    let s = (rng.next() % n_universe as u64) as u32;
                    if !held.contains(&s) {
                        break s;
                    }
                };
                let ops = format!("{{\"op\":\"unsubscribe\",\"symbols\":[\"{}\"]}}", params.universe[old as usize]);
                write_client_frame(&mut c.out, 1, ops.as_bytes(), (rng.next() as u32).to_le_bytes());
                let ops = format!("{{\"op\":\"subscribe\",\"symbols\":[\"{}\"]}}", params.universe[new as usize]);
                write_client_frame(&mut c.out, 1, ops.as_bytes(), (rng.next() as u32).to_le_bytes());
                c.tracker.remove(old);
                c.tracker.add(new);
                if let Ok(n) = c.sock.write(&c.out) {
                    c.out.drain(..n);
                }
            }
        }
        if connected_at.is_none() && now.duration_since(start) > Duration::from_secs(120) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("only {open} of {} connections upgraded within 120 s", params.connections),
            ));
        }

        if params.progress && now.duration_since(last_progress) >= Duration::from_secs(1) {
            let delivered: u64 = clients.iter().map(|c| c.delivered).sum();
            let rate =
                (delivered - progress_count.min(delivered)) as f64 / now.duration_since(last_progress).as_secs_f64();
            progress_count = delivered;
            let phase = match (connected_at, window) {
                (None, _) => "connecting",
                (Some(_), None) => "warming up",
                _ => "measuring",
            };
            eprint!(
                "\r{phase:<11} t={:>5.1}s open={open:<6} msgs/s={rate:<10.0} p99={:.0}us      ",
                now.duration_since(start).as_secs_f64(),
                latency.value_at_quantile(0.99) as f64 / 1000.0
            );
            last_progress = now;
        }

        let timeout = if in_flight > 0 || clients.len() < params.connections {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(50)
        };
        poll.poll(&mut events, Some(timeout))?;
        for event in events.iter() {
            let key = event.token().0;
            let c = &mut clients[key];
            if c.state == State::Done {
                continue;
            }
            if c.state == State::Connecting && (event.is_writable() || event.is_error()) {
                match c.sock.peer_addr() {
                    Ok(_) => c.state = State::Upgrading,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected && !event.is_error() => continue,
                    Err(_) => {
                        c.state = State::Done;
                        failed_connects += 1;
                        in_flight -= 1;
                        continue;
                    }
                }
            }
            if !c.out.is_empty() && c.state != State::Connecting {
                match c.sock.write(&c.out) {
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        c.state = State::Done;
                        dropped += 1;
                        continue;
                    }
                }
            }
            if c.slow || !(event.is_readable() || event.is_read_closed()) {
                continue;
            }
            // Read until WouldBlock (edge-triggered), parsing whole frames in place.
            loop {
                let carried = c.carry.len();
                buf[..carried].copy_from_slice(&c.carry);
                let n = match c.sock.read(&mut buf[carried..]) {
                    Ok(0) => {
                        if c.state == State::Upgrading {
                            in_flight -= 1;
                            failed_connects += 1;
                        } else if c.state == State::Open {
                            dropped += 1;
                            open -= 1;
                        }
                        c.state = State::Done;
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        if c.state == State::Open {
                            dropped += 1;
                            open -= 1;
                        }
                        c.state = State::Done;
                        break;
                    }
                };
                let received_ns = wall_ns();
                let end = carried + n;
                let mut at = 0;
                if c.state == State::Upgrading {
                    match buf[..end].windows(4).position(|w| w == b"\r\n\r\n") {
                        None => {
                            c.carry.clear();
                            c.carry.extend_from_slice(&buf[..end]);
                            continue;
                        }
                        Some(pos) => {
                            in_flight -= 1;
                            if !buf.starts_with(b"HTTP/1.1 101") {
                                failed_connects += 1;
                                c.state = State::Done;
                                break;
                            }
                            let _ = connect_hist.record(now.duration_since(c.started).as_nanos() as u64);
                            c.state = State::Open;
                            open += 1;
                            at = pos + 4;
                            // Now the subscribe may go; write it at once (edge-triggered: no
                            // further writable event would come for an idle socket).
                            c.out.append(&mut c.subscribe);
                            if let Ok(n) = c.sock.write(&c.out) {
                                c.out.drain(..n);
                            }
                        }
                    }
                }
                let in_window = window.is_some();
                loop {
                    let frame = match parse_frame(&buf[..end], at) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(_) => {
                            dropped += 1;
                            open -= 1;
                            c.state = State::Done;
                            break;
                        }
                    };
                    at = frame.next;
                    let payload = &buf[frame.payload.0..frame.payload.1];
                    match frame.opcode {
                        1 => {
                            let f = scan(payload);
                            let symbol = index.get(f.symbol).copied();
                            match (f.kind, symbol) {
                                (b"trade" | b"quote", Some(s)) => {
                                    if let Some(seq) = f.seq {
                                        c.tracker.on_event(s, seq, f.conflated.unwrap_or(0));
                                    }
                                    if in_window {
                                        c.delivered += 1;
                                        if let Some(gw) = f.gw_ts {
                                            let _ = latency.record(received_ns.saturating_sub(gw).max(1_000));
                                        }
                                    }
                                }
                                (b"snapshot", Some(s)) => c.tracker.on_snapshot(s, f.seq.unwrap_or(0)),
                                (b"gap", Some(s)) => {
                                    c.tracker.on_gap(s, f.from_seq.unwrap_or(0), f.to_seq.unwrap_or(0))
                                }
                                _ => {}
                            }
                        }
                        8 => {
                            let code =
                                if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                            *closes.entry(code).or_default() += 1;
                            open -= 1;
                            c.state = State::Done;
                            break;
                        }
                        9 => write_client_frame(&mut c.out, 0xA, payload, [7, 7, 7, 7]),
                        _ => {}
                    }
                }
                c.carry.clear();
                if c.state == State::Done {
                    break;
                }
                c.carry.extend_from_slice(&buf[at..end]);
            }
        }
    }
    if params.progress {
        eprintln!();
    }

    let (window_start, server_start, own_start) = window.expect("the loop ends only after the window");
    let window_s = window_start.elapsed().as_secs_f64();
    let own_end = procfs::sample(None)?;
    let server_end = params.server_pid.map(|p| procfs::sample(Some(p))).transpose()?;
    let fast: Vec<&Client> = clients.iter().filter(|c| !c.slow).collect();
    let delivered: u64 = fast.iter().map(|c| c.delivered).sum();
    let mut per_client: Vec<f64> = fast.iter().map(|c| c.delivered as f64 / window_s).collect();
    per_client.sort_by(f64::total_cmp);
    let mut seq = SeqCounts::default();
    let mut slow_seq = SeqCounts::default();
    for c in &clients {
        if c.slow { slow_seq.add(&c.tracker.counts) } else { seq.add(&c.tracker.counts) }
    }
    let server = match (server_before, server_start, server_end) {
        (Some(before), Some(s), Some(e)) => {
            let cpu_s = e.cpu_s - s.cpu_s;
            Some(ServerFigures {
                cpu_s,
                cpu_ns_per_delivery: if delivered > 0 { cpu_s * 1e9 / delivered as f64 } else { 0.0 },
                rss_before_connect: before.rss_bytes,
                rss_connected,
                // Only meaningful when every client connected.
                rss_per_connection: if connect_hist.len() as usize == params.connections {
                    (rss_connected as f64 - before.rss_bytes as f64) / params.connections.max(1) as f64
                } else {
                    f64::NAN
                },
                rss_end: e.rss_bytes,
            })
        }
        _ => None,
    };
    let connect_ms = {
        let mut p = Percentiles::from_ns(&connect_hist);
        // from_ns gives microseconds; connect times read better in milliseconds.
        for v in [&mut p.p50, &mut p.p90, &mut p.p99, &mut p.p999, &mut p.max, &mut p.mean] {
            *v /= 1000.0;
        }
        p
    };
    let connect_span = connected_at.map_or(0.0, |at| at.duration_since(start).as_secs_f64());
    let loadtest_cpu_s = own_end.cpu_s - own_start.cpu_s;
    Ok(RunResult {
        connections: params.connections,
        connected: connect_hist.len() as usize,
        failed_connects,
        connect_ms,
        connects_per_s: if connect_span > 0.0 { params.connections as f64 / connect_span } else { 0.0 },
        window_s,
        slow_clients: clients.len() - fast.len(),
        delivered,
        delivered_per_s: delivered as f64 / window_s,
        per_client_per_s_min: per_client.first().copied().unwrap_or(0.0),
        per_client_per_s_median: per_client.get(per_client.len() / 2).copied().unwrap_or(0.0),
        latency_us: Percentiles::from_ns(&latency),
        seq,
        slow_seq,
        closes,
        dropped,
        churns,
        server,
        loadtest_cpu_s,
        loadtest_core_share: loadtest_cpu_s / window_s,
        tcp_socket_memory: procfs::tcp_socket_memory(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    fn server_frame(text: &str) -> Vec<u8> {
        let mut f = vec![0x81];
        match text.len() {
            n if n < 126 => f.push(n as u8),
            n => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(text.as_bytes());
        f
    }

    /// A scripted server: one connection, a known sequence with a loss, a gap and a known latency.
    fn scripted_server(latency_ns: u64) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            stream
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                .unwrap();
            stream
                .write_all(&server_frame(r#"{"type":"snapshot","symbol":"AAPL","seq":10,"trade":null,"quote":null}"#))
                .unwrap();
            // Let the window open (warmup is 100 ms).
            std::thread::sleep(Duration::from_millis(400));
            let mut script = Vec::new();
            for seq in [11, 12, 14] {
                let gw = wall_ns() - latency_ns;
                script.extend(server_frame(&format!(
                    r#"{{"type":"trade","symbol":"AAPL","seq":{seq},"price":"1.00","size":"1","ts":1,"gw_ts":{gw}}}"#
                )));
            }
            script.extend(server_frame(
                r#"{"type":"gap","symbol":"AAPL","from_seq":15,"to_seq":17,"reason":"slow_consumer"}"#,
            ));
            script.extend(server_frame(r#"{"type":"snapshot","symbol":"AAPL","seq":17,"trade":null,"quote":null}"#));
            let gw = wall_ns() - latency_ns;
            script.extend(server_frame(&format!(
                r#"{{"type":"quote","symbol":"AAPL","seq":20,"conflated":2,"gw_ts":{gw}}}"#
            )));
            // Split the script at odd places to exercise partial frames.
            for chunk in script.chunks(37) {
                stream.write_all(chunk).unwrap();
                stream.flush().unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_secs(3));
        });
        addr
    }

    #[test]
    fn counts_loss_gaps_conflation_and_latency_of_a_scripted_server() {
        let addr = scripted_server(2_000_000);
        let params = RunParams {
            addr,
            connections: 1,
            symbols_per_client: 1,
            universe: vec!["AAPL".into()],
            pick: Pick::Uniform,
            source_addrs: Vec::new(),
            connect_rate: 0.0,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(1500),
            slow_share: 0.0,
            churn_per_s: 0.0,
            seed: 1,
            server_pid: None,
            progress: false,
        };
        let r = run(&params).unwrap();
        assert_eq!(r.connected, 1);
        assert_eq!(r.delivered, 4);
        assert_eq!(
            r.seq,
            SeqCounts { received: 4, announced: 3, conflated: 2, lost: 1, out_of_order: 0, unexpected: 0 }
        );
        assert_eq!(r.latency_us.count, 4);
        // 2 ms stamped in the past, plus what the script's own pacing adds (a few ms at most).
        assert!(r.latency_us.p50 >= 2_000.0 && r.latency_us.max < 60_000.0, "{:?}", r.latency_us);
    }
}
