//! Peer: the ceiling. "The same frames written to the same sockets with coalescing and nothing
//! else": one thread, one mio `Poll`, no locks, no channels, no per-client copies.
//!
//! - The generator runs inside the event loop: the poll timeout is the time until the next tick is
//!   due (epoll rounds it up to whole milliseconds, so batches come about every millisecond).
//! - Each tick's WebSocket frame (unmasked text frame header + JSON) is built ONCE into an
//!   `Arc<[u8]>` and a reference is pushed to the queue of every subscriber, found through an index
//!   symbol -> subscribers.
//! - After the batch (and after reading), every connection with something queued is flushed with
//!   `writev` of up to 64 frames per call until its queue is empty or the socket would block; it
//!   resumes on the next writable readiness (edge-triggered).
//! - Slow consumers: a frame is dropped for a connection that already has --max-buffered bytes
//!   queued (default 16 MiB, as Bun's default backpressure limit), silently, counted.
//! - The handshake is done by hand: httparse for the request, SHA-1 + base64 for
//!   Sec-WebSocket-Accept; no extension is ever negotiated. Client frames are parsed and unmasked
//!   by a small parser (fragmented messages reassembled, pings answered, close echoed).
//!
//! Run: peer-ceiling --port 9001 --symbols-file symbols.txt --rate 5000

#[path = "../../common/tickgen.rs"]
mod tickgen;

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use tickgen::{Args, Op, TickGen};

const NAME: &str = "ceiling";
const USAGE: &str = "usage: peer-ceiling [--host 127.0.0.1] [--port 9001] [--symbols-file FILE] [--rate 5000]
                    [--max-buffered 16777216]";

const LISTENER: Token = Token(usize::MAX);
/// Frames per writev call at most.
const IOV_MAX_FRAMES: usize = 64;
/// Largest client message accepted (commands are small).
const MAX_MESSAGE: usize = 64 * 1024;
/// Largest handshake request accepted.
const MAX_REQUEST: usize = 16 * 1024;
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

type Frame = Arc<[u8]>;

/// A server frame (FIN, unmasked) of `opcode` around `payload`.
fn frame(opcode: u8, payload: &[u8]) -> Frame {
    let mut f = Vec::with_capacity(payload.len() + 10);
    frame_header(&mut f, opcode, payload.len());
    f.extend_from_slice(payload);
    f.into()
}

fn frame_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xFFFF {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Handshake,
    Open,
    /// Close frame queued (or the request refused): flush what is queued, then close.
    Closing,
}

struct Conn {
    stream: TcpStream,
    phase: Phase,
    inbuf: Vec<u8>,
    /// A fragmented message being reassembled: its opcode and payload so far.
    partial: Option<(u8, Vec<u8>)>,
    out: VecDeque<Frame>,
    /// Bytes of `out.front()` already written.
    head_written: usize,
    queued_bytes: usize,
    writable: bool,
    dirty: bool,
    /// Subscribed symbols, each with this connection's position in `index[symbol]`.
    subs: Vec<(u32, u32)>,
}

impl Conn {
    fn push(&mut self, f: Frame) {
        self.queued_bytes += f.len();
        self.out.push_back(f);
    }
}

#[derive(Default)]
struct Stats {
    deliveries: u64,
    dropped: u64,
    writev_calls: u64,
    frames_written: u64,
}

struct Server {
    conns: Slab<Conn>,
    /// symbol -> connection keys
    index: Vec<Vec<usize>>,
    symbol_ids: HashMap<String, usize>,
    names: Vec<String>,
    dirty: Vec<usize>,
    max_buffered: usize,
    welcome: Frame,
    stats: Stats,
}

impl Server {
    fn mark_dirty(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(key);
        }
    }

    fn subscribe(&mut self, key: usize, sym: usize) {
        let c = &mut self.conns[key];
        if c.subs.iter().any(|&(s, _)| s as usize == sym) {
            return;
        }
        c.subs.push((sym as u32, self.index[sym].len() as u32));
        self.index[sym].push(key);
    }

    fn unsubscribe(&mut self, key: usize, sym: usize) {
        let c = &mut self.conns[key];
        let Some(k) = c.subs.iter().position(|&(s, _)| s as usize == sym) else { return };
        let (_, pos) = c.subs.swap_remove(k);
        self.remove_from_index(sym, pos as usize);
    }

    /// Removes the entry at `pos` of `index[sym]`, fixing the position stored by the connection
    /// moved into its place.
    fn remove_from_index(&mut self, sym: usize, pos: usize) {
        let list = &mut self.index[sym];
        list.swap_remove(pos);
        if let Some(&moved) = list.get(pos) {
            let c = &mut self.conns[moved];
            if let Some(entry) = c.subs.iter_mut().find(|(s, _)| *s as usize == sym) {
                entry.1 = pos as u32;
            }
        }
    }

    /// Leaves every symbol: nothing more is queued for the connection.
    fn unsubscribe_all(&mut self, key: usize) {
        for (sym, pos) in std::mem::take(&mut self.conns[key].subs) {
            self.remove_from_index(sym as usize, pos as usize);
        }
    }

    fn close(&mut self, poll: &Poll, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        self.unsubscribe_all(key);
        let mut c = self.conns.remove(key);
        let _ = poll.registry().deregister(&mut c.stream);
    }

    fn accept(&mut self, poll: &Poll, listener: &TcpListener) {
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if poll
                        .registry()
                        .register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        continue;
                    }
                    entry.insert(Conn {
                        stream,
                        phase: Phase::Handshake,
                        inbuf: Vec::new(),
                        partial: None,
                        out: VecDeque::new(),
                        head_written: 0,
                        queued_bytes: 0,
                        writable: true,
                        dirty: false,
                        subs: Vec::new(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and the like: try again on the next readiness.
                    eprintln!("{NAME}: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads everything available and acts on it. Returns false when the connection must close now.
    fn on_readable(&mut self, key: usize) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            let c = &mut self.conns[key];
            match c.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    if c.phase == Phase::Closing {
                        continue; // discard whatever follows a close
                    }
                    c.inbuf.extend_from_slice(&chunk[..n]);
                    if !self.process_input(key) {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    fn process_input(&mut self, key: usize) -> bool {
        if self.conns[key].phase == Phase::Handshake {
            match self.handshake(key) {
                Some(true) => {}
                Some(false) => return true, // need more bytes
                None => return false,
            }
        }
        loop {
            let c = &mut self.conns[key];
            if c.phase != Phase::Open {
                return true;
            }
            match parse_client_frame(&c.inbuf) {
                Err(()) => return false,
                Ok(None) => {
                    if c.inbuf.len() > MAX_MESSAGE + 14 {
                        return false;
                    }
                    return true;
                }
                Ok(Some((fin, opcode, payload, used))) => {
                    c.inbuf.drain(..used);
                    if !self.on_frame(key, fin, opcode, payload) {
                        return false;
                    }
                }
            }
        }
    }

    /// Some(true): done; Some(false): incomplete; None: refuse and close.
    fn handshake(&mut self, key: usize) -> Option<bool> {
        let c = &mut self.conns[key];
        let Some(end) = c.inbuf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
            return if c.inbuf.len() > MAX_REQUEST { None } else { Some(false) };
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let accept = match req.parse(&c.inbuf[..end]) {
            Ok(httparse::Status::Complete(_)) if req.method == Some("GET") => {
                let header =
                    |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
                let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
                match (upgrade, header("sec-websocket-key")) {
                    (true, Some(k)) => {
                        let mut sha = sha1_smol::Sha1::new();
                        sha.update(k.trim_ascii());
                        sha.update(WS_GUID.as_bytes());
                        Some(base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes()))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        c.inbuf.drain(..end);
        let Some(accept) = accept else {
            c.push(Frame::from(&b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"[..]));
            c.phase = Phase::Closing;
            self.mark_dirty(key);
            return Some(true);
        };
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        c.push(Frame::from(response.as_bytes()));
        c.push(self.welcome.clone());
        c.phase = Phase::Open;
        self.mark_dirty(key);
        Some(true)
    }

    fn on_frame(&mut self, key: usize, fin: bool, opcode: u8, payload: Vec<u8>) -> bool {
        let c = &mut self.conns[key];
        match opcode {
            0x8 => {
                // Close: echo the status code, then close once flushed.
                let code = if payload.len() >= 2 { &payload[..2] } else { &[][..] };
                c.push(frame(0x8, code));
                c.phase = Phase::Closing;
                self.unsubscribe_all(key);
                self.mark_dirty(key);
                true
            }
            0x9 => {
                c.push(frame(0xA, &payload));
                self.mark_dirty(key);
                true
            }
            0xA => true,
            0x0..=0x2 => {
                let message = match (opcode, c.partial.take()) {
                    (0x0, None) | (0x1 | 0x2, Some(_)) => return false, // protocol error
                    (0x0, Some((op, mut acc))) => {
                        acc.extend_from_slice(&payload);
                        if acc.len() > MAX_MESSAGE {
                            return false;
                        }
                        (op, acc)
                    }
                    (op, None) => (op, payload),
                    _ => return false,
                };
                if !fin {
                    c.partial = Some(message);
                    return true;
                }
                let (op, data) = message;
                if op == 0x2 {
                    let reply =
                        r#"{"type":"error","code":"unsupported_frame","message":"binary frames are not supported"}"#;
                    c.push(frame(0x1, reply.as_bytes()));
                    self.mark_dirty(key);
                    return true;
                }
                let Ok(text) = std::str::from_utf8(&data) else { return false };
                self.on_command(key, text);
                true
            }
            _ => false,
        }
    }

    fn on_command(&mut self, key: usize, text: &str) {
        let replies = match tickgen::parse_command(text, &self.symbol_ids) {
            Ok(cmd) => {
                for &sym in &cmd.known {
                    match cmd.op {
                        Op::Subscribe => self.subscribe(key, sym),
                        Op::Unsubscribe => self.unsubscribe(key, sym),
                    }
                }
                cmd.replies(&self.names)
            }
            Err(e) => vec![e],
        };
        let c = &mut self.conns[key];
        for r in replies {
            c.push(frame(0x1, r.as_bytes()));
        }
        self.mark_dirty(key);
    }

    /// Queues a tick's frame for every subscriber of `sym`.
    fn fan_out(&mut self, sym: usize, f: &Frame) {
        for &key in &self.index[sym] {
            let c = &mut self.conns[key];
            if c.queued_bytes + f.len() > self.max_buffered {
                self.stats.dropped += 1;
                continue;
            }
            c.push(f.clone());
            self.stats.deliveries += 1;
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Writes queued frames with writev, up to 64 per call, until empty or WouldBlock.
    /// Returns false when the connection must close.
    fn flush(&mut self, key: usize) -> bool {
        let Some(c) = self.conns.get_mut(key) else { return true };
        while c.writable && !c.out.is_empty() {
            let result = {
                let mut iov = [IoSlice::new(&[]); IOV_MAX_FRAMES];
                let mut n = 0;
                for (i, f) in c.out.iter().take(IOV_MAX_FRAMES).enumerate() {
                    iov[i] = IoSlice::new(if i == 0 { &f[c.head_written..] } else { &f[..] });
                    n = i + 1;
                }
                c.stream.write_vectored(&iov[..n])
            };
            match result {
                Ok(0) => return false,
                Ok(mut written) => {
                    self.stats.writev_calls += 1;
                    c.queued_bytes -= written;
                    while written > 0 {
                        let left = c.out[0].len() - c.head_written;
                        if written >= left {
                            written -= left;
                            c.out.pop_front();
                            c.head_written = 0;
                            self.stats.frames_written += 1;
                        } else {
                            c.head_written += written;
                            written = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        !(c.phase == Phase::Closing && c.out.is_empty())
    }
}

/// Parses one client frame from the start of `buf`: Ok(Some((fin, opcode, unmasked payload,
/// bytes used))), Ok(None) if incomplete, Err on a protocol violation.
#[allow(clippy::type_complexity)]
fn parse_client_frame(buf: &[u8]) -> Result<Option<(bool, u8, Vec<u8>, usize)>, ()> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if b0 & 0x70 != 0 || b1 & 0x80 == 0 {
        return Err(()); // reserved bits (no extension negotiated) or an unmasked client frame
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let l = u64::from_be_bytes(buf[2..10].try_into().unwrap_or_default());
            (usize::try_from(l).unwrap_or(usize::MAX), 10)
        }
        l => (l as usize, 2),
    };
    if len > MAX_MESSAGE || (opcode >= 0x8 && (len > 125 || !fin)) {
        return Err(());
    }
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let payload = buf[at..at + len].iter().enumerate().map(|(i, b)| b ^ mask[i & 3]).collect();
    Ok(Some((fin, opcode, payload, at + len)))
}

fn main() -> io::Result<()> {
    let args = Args::parse(
        &[
            ("host", "127.0.0.1"),
            ("port", "9001"),
            ("symbols-file", ""),
            ("rate", "5000"),
            ("max-buffered", "16777216"),
        ],
        USAGE,
    );
    tickgen::raise_nofile_limit();
    let names = tickgen::load_symbols(args.str("symbols-file"));
    let rate: f64 = args.num("rate");
    let max_buffered: usize = args.num("max-buffered");
    let addr = format!("{}:{}", args.str("host"), args.str("port"))
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bad address: {e}")))?;

    let shutdown = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, shutdown.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, shutdown.clone())?;

    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);

    let mut server = Server {
        conns: Slab::new(),
        index: vec![Vec::new(); names.len()],
        symbol_ids: names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect(),
        names: names.clone(),
        dirty: Vec::new(),
        max_buffered: if max_buffered == 0 { usize::MAX } else { max_buffered },
        welcome: frame(0x1, tickgen::welcome(NAME).as_bytes()),
        stats: Stats::default(),
    };
    let mut tickgen = TickGen::new(names, rate);
    let mut json = String::with_capacity(256);
    let mut buf = Vec::with_capacity(256);
    let mut to_close = Vec::new();
    println!("ready {NAME} port={}", listener.local_addr()?.port());

    while !shutdown.load(Ordering::Relaxed) {
        let timeout = tickgen.until_next().min(Duration::from_millis(10));
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                server.accept(&poll, &listener);
                continue;
            }
            let key = event.token().0;
            if !server.conns.contains(key) {
                continue;
            }
            if event.is_writable() {
                server.conns[key].writable = true;
                server.mark_dirty(key);
            }
            if (event.is_readable() || event.is_read_closed() || event.is_error()) && !server.on_readable(key) {
                to_close.push(key);
            }
        }
        for key in to_close.drain(..) {
            server.close(&poll, key);
        }

        // The ticks due: each frame built once, shared by every subscriber.
        let due = tickgen.due();
        if due > 0 {
            for _ in 0..due {
                json.clear();
                let sym = tickgen.next_tick(&mut json);
                if server.index[sym].is_empty() {
                    continue;
                }
                buf.clear();
                frame_header(&mut buf, 0x1, json.len());
                buf.extend_from_slice(json.as_bytes());
                let f: Frame = Arc::from(&buf[..]);
                server.fan_out(sym, &f);
            }
        }

        // Flush every connection with something new queued or newly writable.
        let dirty = std::mem::take(&mut server.dirty);
        for &key in &dirty {
            if let Some(c) = server.conns.get_mut(key) {
                c.dirty = false;
            }
            if !server.flush(key) {
                server.close(&poll, key);
            }
        }
        server.dirty = dirty;
        server.dirty.clear();
    }

    let s = &server.stats;
    eprintln!(
        "{NAME}: ticks={} deliveries={} dropped_over_limit={} writev_calls={} frames_per_writev={:.1}",
        tickgen.ticks,
        s.deliveries,
        s.dropped,
        s.writev_calls,
        if s.writev_calls > 0 { s.frames_written as f64 / s.writev_calls as f64 } else { 0.0 }
    );
    Ok(())
}
