//! One measured run: open N WebSocket connections, subscribe each to k symbols, read everything
//! the server sends for a window, and account for every message.
//!
//! Single-threaded and non-blocking (mio). The load is open loop: the server's feed decides the
//! rate, and nothing here ever slows it; latency is measured from the `gw_ts` the server stamped
//! when the tick entered it, so a server that falls behind shows it in the figures.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::conn::{Client, Reader, State, connect};
use crate::deflate::WireFigures;
use crate::drops::{self, Redial, Schedule};
use crate::procfs::{self, ProcSample};
pub use crate::result::{PairCounts, Percentiles, RunResult, ServerFigures, SlowFates, StaleSymbol};
use crate::resume::ResumeCounts;
use crate::silence::Stale;
use crate::tls::TlsClient;
use crate::tracker::{SeqCounts, SeqTracker};
use crate::wsframe::{WS_KEY, write_client_frame};

/// How clients pick their symbols.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Pick {
    Uniform,
    /// Zipf with this exponent: low-index symbols are picked far more often.
    Zipf(f64),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunParams {
    /// The server's addresses: client i connects to the (i mod len)th.
    pub addrs: Vec<SocketAddr>,
    /// `wss://`: the TLS client every connection uses; None for `ws://`.
    pub tls: Option<TlsClient>,
    pub connections: usize,
    pub symbols_per_client: usize,
    /// The symbols clients choose from.
    pub universe: Vec<String>,
    pub pick: Pick,
    /// Local addresses to connect from, in turn for each server address (past ~28k
    /// connections from one local address to one server address).
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
    /// Show progress on standard error: a live bar on a terminal, a line a second otherwise.
    pub progress: bool,
    /// Slow-client policy to ask for in every subscribe; None: the server's default.
    pub policy: Option<String>,
    /// After the window: how long every subscription has to catch up with the last seq
    /// published in the window, and how long the stalled clients are read to learn their fate.
    pub drain: Duration,
    /// Offer permessage-deflate and inflate what comes compressed (see [`crate::deflate`]).
    pub deflate: bool,
    /// After the window, probe the wire size of a snapshot and a symbol list with one more
    /// connection (see [`crate::deflate::probe`]).
    pub wire_probe: bool,
    /// Share of the reading clients dropped and resumed in each round (0: none).
    pub resume_share: f64,
    /// Time between two rounds of drops, from the window's start.
    pub resume_every: Duration,
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

/// Where client `i` connects to and from: the server addresses in turn, and for each server
/// address the source addresses in turn (so every pair of them is used).
fn endpoint(params: &RunParams, i: usize) -> (SocketAddr, Option<IpAddr>) {
    let n = params.addrs.len().max(1);
    let source = (!params.source_addrs.is_empty()).then(|| params.source_addrs[(i / n) % params.source_addrs.len()]);
    (params.addrs[i % n], source)
}

const MAX_IN_FLIGHT_CONNECTS: usize = 512;

/// The phases of a run after every client is in.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Connecting,
    WarmingUp {
        since: Instant,
    },
    Measuring {
        until: Instant,
    },
    /// The window is over: everyone reads, until `until` or until nothing is left to wait for.
    Draining {
        until: Instant,
    },
}

/// The highest seq any reading client had of each symbol when the window closed.
fn published_marks(clients: &[Client], n_universe: usize) -> Vec<Option<u64>> {
    let mut marks = vec![None; n_universe];
    for c in clients.iter().filter(|c| !c.slow) {
        for pair in c.tracker.pairs() {
            let mark = &mut marks[pair.symbol as usize];
            *mark = (*mark).max(pair.last);
        }
    }
    marks
}

/// Whether a client still open holds a subscription short of the marks (or never started).
fn short_of_marks(c: &Client, marks: &[Option<u64>]) -> bool {
    c.state != State::Done
        && c.tracker.pairs().any(|pair| match (pair.last, marks[pair.symbol as usize]) {
            (None, _) => true,
            (Some(last), Some(mark)) => last < mark,
            (Some(_), None) => false,
        })
}

/// How the reading clients' subscriptions stand against the marks.
fn count_pairs(clients: &[Client], marks: &[Option<u64>]) -> PairCounts {
    let mut counts = PairCounts::default();
    for c in clients.iter().filter(|c| !c.slow) {
        for pair in c.tracker.pairs() {
            counts.held += 1;
            match (pair.last, marks[pair.symbol as usize]) {
                (None, _) => counts.never_started += 1,
                (Some(last), Some(mark)) if last < mark => counts.behind += 1,
                _ => counts.caught_up += 1,
            }
        }
    }
    counts
}

fn slow_fates(clients: &[Client], marks: &[Option<u64>]) -> SlowFates {
    let mut fates = SlowFates::default();
    for c in clients.iter().filter(|c| c.slow) {
        fates.clients += 1;
        fates.behind += u64::from(short_of_marks(c, marks));
        let counts = &c.tracker.counts;
        match (c.state, c.close_code) {
            (State::Done, Some(1008)) => fates.cut += 1,
            (State::Done, None) if c.dropped => fates.cut += 1,
            (State::Done, _) => fates.unaccounted += 1,
            _ if counts.announced > 0 || counts.conflated > 0 => fates.told += 1,
            _ => fates.kept += 1,
        }
    }
    fates
}

/// Runs the scenario and returns what it measured.
pub fn run(params: &RunParams) -> io::Result<RunResult> {
    let n_universe = params.universe.len();
    if n_universe == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty symbol universe"));
    }
    let Some(first_addr) = params.addrs.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no server address"));
    };
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
    let host = first_addr.to_string();
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n{}\r\n",
        if params.deflate { crate::deflate::OFFER_HEADER } else { "" }
    );
    let policy_json = params.policy.as_ref().map_or(String::new(), |p| format!(",\"policy\":\"{p}\""));

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let mut clients: Vec<Client> = Vec::with_capacity(params.connections);
    let mut reader = Reader::new(&index);
    reader.inflater = params.deflate.then(crate::deflate::Inflater::new);
    let server_before = params.server_pid.map(|p| procfs::sample(Some(p))).transpose()?;

    let start = Instant::now();
    let mut phase = Phase::Connecting;
    let mut connected_at: Option<Instant> = None;
    let mut window: Option<(Instant, Option<ProcSample>, ProcSample)> = None;
    let mut window_closed: Option<(Instant, ProcSample, Option<ProcSample>)> = None;
    let mut marks: Vec<Option<u64>> = Vec::new();
    let mut stale = Stale::default();
    let mut held_at_start: BTreeSet<u32> = BTreeSet::new();
    let mut rss_connected = 0;
    let mut progress = params.progress.then(crate::progress::Progress::new);
    let mut churns = 0u64;
    let mut drop_schedule: Option<Schedule> = None;

    loop {
        let now = Instant::now();
        // Open more connections, at the requested rate and with a bounded number in flight.
        while clients.len() < params.connections && reader.in_flight < MAX_IN_FLIGHT_CONNECTS {
            if params.connect_rate > 0.0 {
                let due = (now.duration_since(start).as_secs_f64() * params.connect_rate) as usize + 1;
                if clients.len() >= due {
                    break;
                }
            }
            let (addr, source) = endpoint(params, clients.len());
            let symbols = pick_symbols(&mut rng, n_universe, params.symbols_per_client, params.pick, &zipf_cdf);
            match connect(addr, source) {
                Ok(mut sock) => {
                    let tls = params.tls.as_ref().map(TlsClient::connection).transpose()?;
                    let token = Token(clients.len());
                    poll.registry().register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)?;
                    let subscribe_json = format!(
                        "{{\"op\":\"subscribe\",\"symbols\":[{}]{policy_json}}}",
                        symbols
                            .iter()
                            .map(|&s| format!("\"{}\"", params.universe[s as usize]))
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    let mut subscribe = Vec::new();
                    write_client_frame(&mut subscribe, 1, subscribe_json.as_bytes(), (rng.next() as u32).to_le_bytes());
                    clients.push(Client::new(
                        sock,
                        tls,
                        now,
                        handshake.clone().into_bytes(),
                        subscribe,
                        SeqTracker::new(&symbols),
                    ));
                    reader.in_flight += 1;
                }
                Err(e) => {
                    reader.failed_connects += 1;
                    if reader.failed_connects == 1 {
                        eprintln!("connect failed: {e}");
                    }
                    if reader.failed_connects > params.connections / 10 + 10 {
                        return Err(io::Error::other(format!("too many failed connects: {e}")));
                    }
                }
            }
        }

        match phase {
            Phase::Connecting => {
                if clients.len() == params.connections && reader.in_flight == 0 {
                    connected_at = Some(now);
                    phase = Phase::WarmingUp { since: now };
                } else if now.duration_since(start) > Duration::from_secs(120) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("only {} of {} connections upgraded within 120 s", reader.open, params.connections),
                    ));
                }
            }
            Phase::WarmingUp { since } if now.duration_since(since) >= params.warmup => {
                // The window starts: reset the counts, make the slow clients stop reading.
                let slow_count = (params.slow_share * clients.len() as f64).round() as usize;
                for (i, c) in clients.iter_mut().enumerate() {
                    c.delivered = 0;
                    c.tracked = 0;
                    c.tracker.counts = SeqCounts::default();
                    c.tracker.resumes = ResumeCounts::default();
                    c.slow = i < slow_count;
                }
                drop_schedule = Schedule::new(params.resume_share, params.resume_every, clients.len() - slow_count);
                reader.latency.reset();
                reader.judging = true;
                held_at_start = clients.iter().filter(|c| !c.slow).flat_map(|c| c.tracker.symbols()).collect();
                let server = params.server_pid.map(|p| procfs::sample(Some(p))).transpose()?;
                // Memory with every client connected and subscribed, after the warm-up settled.
                rss_connected = server.map_or(0, |s| s.rss_bytes);
                window = Some((now, server, procfs::sample(None)?));
                phase = Phase::Measuring { until: now + params.duration };
            }
            Phase::WarmingUp { .. } => {}
            Phase::Measuring { until } if now >= until => {
                let own = procfs::sample(None)?;
                let server = params.server_pid.map(|p| procfs::sample(Some(p))).transpose()?;
                window_closed = Some((now, own, server));
                marks = published_marks(&clients, n_universe);
                // Judged: the symbols the readers held all through the window (one subscribed by
                // churn may not have had its first event yet).
                let held: BTreeSet<u32> = clients
                    .iter()
                    .filter(|c| !c.slow && c.state != State::Done)
                    .flat_map(|c| c.tracker.symbols())
                    .collect();
                stale = reader.silence.judge(held.intersection(&held_at_start).copied(), now);
                phase = Phase::Draining { until: now + params.drain };
                // The stalled clients read again; their sockets may have nothing new to signal
                // (the server may have stopped writing to them), so read them once right away.
                for c in clients.iter_mut().filter(|c| c.slow) {
                    reader.read(c, now, false);
                }
            }
            Phase::Measuring { .. } => {}
            Phase::Draining { until } => {
                // Stalled clients still open are read for the whole drain (to learn their fate);
                // otherwise done when every subscription reached the marks and every unsubscribe
                // was answered. A client dropped near the end of the window is still reconnecting
                // or resuming: its pairs may look caught up with marks its own stale seqs set.
                let waiting = clients.iter().any(|c| {
                    (c.slow && c.state != State::Done)
                        || short_of_marks(c, &marks)
                        || (c.state != State::Done && c.tracker.unanswered_unsubscribes() > 0)
                        || (!c.slow
                            && (matches!(c.state, State::Connecting | State::Upgrading) || c.tracker.resuming()))
                });
                let pairs = count_pairs(&clients, &marks);
                if now >= until || (!waiting && pairs.behind == 0 && pairs.never_started == 0) {
                    break;
                }
            }
        }

        // Subscription churn, spread evenly over the window.
        if let (Some((window_start, ..)), Phase::Measuring { .. }, true) = (window, phase, params.churn_per_s > 0.0) {
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
                    if !c.tracker.knows(s) {
                        break s;
                    }
                };
                let ops = format!("{{\"op\":\"unsubscribe\",\"symbols\":[\"{}\"]}}", params.universe[old as usize]);
                write_client_frame(&mut c.out, 1, ops.as_bytes(), (rng.next() as u32).to_le_bytes());
                let ops = format!("{{\"op\":\"subscribe\",\"symbols\":[\"{}\"]}}", params.universe[new as usize]);
                write_client_frame(&mut c.out, 1, ops.as_bytes(), (rng.next() as u32).to_le_bytes());
                c.tracker.leave(old);
                c.tracker.add(new);
                let _ = c.flush_out();
            }
        }

        // Drops and resumes, in rounds over the window.
        if let (Some(schedule), Some((window_start, ..)), Phase::Measuring { .. }) =
            (drop_schedule.as_mut(), window, phase)
        {
            let redial = Redial {
                addr: *first_addr,
                source: None,
                tls: params.tls.as_ref(),
                handshake: handshake.as_bytes(),
                universe: &params.universe,
                extra: &policy_json,
            };
            for i in schedule.due(now.duration_since(window_start), &clients) {
                let (addr, source) = endpoint(params, i);
                let mask = (rng.next() as u32).to_le_bytes();
                drops::drop_and_resume(
                    &mut clients[i],
                    Token(i),
                    poll.registry(),
                    &mut reader,
                    &Redial { addr, source, ..redial },
                    mask,
                    now,
                )?;
            }
        }

        if let Some(progress) = progress.as_mut().filter(|p| p.due(now)) {
            let ms = |d: Duration| d.as_millis() as u64;
            let left = |until: Instant| until.saturating_duration_since(now);
            let (phase_name, done, total) = match phase {
                Phase::Connecting => ("connecting", reader.open as u64, params.connections as u64),
                Phase::WarmingUp { since } => ("warming up", ms(now.duration_since(since)), ms(params.warmup)),
                Phase::Measuring { until } => {
                    ("measuring", ms(params.duration.saturating_sub(left(until))), ms(params.duration))
                }
                Phase::Draining { until } => {
                    ("draining", ms(params.drain.saturating_sub(left(until))), ms(params.drain))
                }
            };
            let status = crate::progress::Status {
                phase: phase_name,
                done,
                total,
                elapsed_s: now.duration_since(start).as_secs_f64(),
                open: reader.open,
                delivered: clients.iter().map(|c| c.delivered).sum(),
                p99_us: reader.latency.value_at_quantile(0.99) as f64 / 1000.0,
            };
            progress.show(now, &status);
        }

        let timeout = if reader.in_flight > 0 || clients.len() < params.connections {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(50)
        };
        poll.poll(&mut events, Some(timeout))?;
        let in_window = matches!(phase, Phase::Measuring { .. });
        let reading_stalled = matches!(phase, Phase::Draining { .. });
        for event in events.iter() {
            let c = &mut clients[event.token().0];
            reader.on_ready(c, event.is_writable(), event.is_error());
            if (c.slow && !reading_stalled) || !(event.is_readable() || event.is_read_closed()) {
                continue;
            }
            reader.read(c, now, in_window);
        }
    }
    if let Some(progress) = &progress {
        progress.finish();
    }

    let (window_start, server_start, own_start) = window.expect("the loop ends only after the window");
    let (window_end, own_end, server_end) = window_closed.expect("the loop ends only after the window");
    let window_s = window_end.duration_since(window_start).as_secs_f64();
    // A resume still under way when the run ended is settled now.
    for c in clients.iter_mut().filter(|c| !c.slow) {
        c.tracker.settle_resumes();
    }
    let fast: Vec<&Client> = clients.iter().filter(|c| !c.slow).collect();
    let delivered: u64 = fast.iter().map(|c| c.delivered).sum();
    let mut per_client: Vec<f64> = fast.iter().map(|c| c.delivered as f64 / window_s).collect();
    per_client.sort_by(f64::total_cmp);
    let mut seq = SeqCounts::default();
    let mut slow_seq = SeqCounts::default();
    let mut resumes = ResumeCounts::default();
    let mut closes: BTreeMap<u16, u64> = BTreeMap::new();
    let mut dropped = 0;
    let mut unanswered_unsubscribes = 0;
    for c in &clients {
        if c.state != State::Done {
            unanswered_unsubscribes += c.tracker.unanswered_unsubscribes() as u64;
        }
        if c.slow {
            slow_seq.add(&c.tracker.counts);
            continue;
        }
        resumes.add(&c.tracker.resumes);
        seq.add(&c.tracker.counts);
        if let Some(code) = c.close_code {
            *closes.entry(code).or_default() += 1;
        }
        dropped += u64::from(c.dropped);
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
                rss_per_connection: if reader.connect_hist.len() as usize == params.connections {
                    (rss_connected as f64 - before.rss_bytes as f64) / params.connections.max(1) as f64
                } else {
                    f64::NAN
                },
                rss_end: e.rss_bytes,
            })
        }
        _ => None,
    };
    let connect_ms = Percentiles::ms_from_ns(&reader.connect_hist);
    let connect_span = connected_at.map_or(0.0, |at| at.duration_since(start).as_secs_f64());
    let loadtest_cpu_s = own_end.cpu_s - own_start.cpu_s;
    let wire = wire_figures(&reader, params);
    Ok(RunResult {
        connections: params.connections,
        connected: reader.connect_hist.len() as usize,
        failed_connects: reader.failed_connects,
        connect_ms,
        connects_per_s: if connect_span > 0.0 { params.connections as f64 / connect_span } else { 0.0 },
        window_s,
        slow_clients: clients.len() - fast.len(),
        delivered,
        seq_tracked: fast.iter().map(|c| c.tracked).sum(),
        delivered_per_s: delivered as f64 / window_s,
        per_client_per_s_min: per_client.first().copied().unwrap_or(0.0),
        per_client_per_s_median: per_client.get(per_client.len() / 2).copied().unwrap_or(0.0),
        latency_us: Percentiles::from_ns(&reader.latency),
        seq,
        slow_seq,
        pairs: count_pairs(&clients, &marks),
        slow: slow_fates(&clients, &marks),
        unanswered_unsubscribes,
        asked_policy: params.policy.clone(),
        hidden_trades: reader.superseded.hidden_trades(),
        conflation_unchecked: reader.superseded.unchecked(),
        json_mismatches: reader.json_mismatches,
        stale_symbols: stale.count,
        stalest_symbol: stale.worst.map(|(symbol, silent_s, interval_s)| StaleSymbol {
            symbol: params.universe[symbol as usize].clone(),
            silent_s,
            interval_s,
        }),
        unreadable: reader.unreadable,
        stamped_ahead: reader.stamped_ahead,
        errors: reader.errors,
        policy: reader.policy,
        closes,
        dropped,
        churns,
        server,
        loadtest_cpu_s,
        loadtest_core_share: loadtest_cpu_s / window_s,
        tcp_socket_memory: procfs::tcp_socket_memory(),
        wire,
        resume: drop_schedule.is_some().then_some(resumes),
        reconnect_ms: Percentiles::ms_from_ns(&reader.reconnect_hist),
        latency_ns_buckets: crate::result::buckets(&reader.latency),
    })
}

/// The window's wire counts, the inflating done, and a probe of a snapshot's and a symbol
/// list's size (while the server still runs).
fn wire_figures(reader: &Reader<'_>, params: &RunParams) -> WireFigures {
    let mut wire = if params.wire_probe {
        match params.addrs.first() {
            Some(&addr) => crate::deflate::probe(addr, params.tls.as_ref(), params.deflate, &params.universe[0]),
            None => WireFigures::default(),
        }
    } else {
        WireFigures::default()
    };
    let counted = reader.wire;
    wire.event_frames = counted.event_frames;
    wire.event_wire_bytes = counted.event_wire_bytes;
    wire.compressed_events = counted.compressed_events;
    wire.bytes_per_event =
        if counted.event_frames > 0 { counted.event_wire_bytes as f64 / counted.event_frames as f64 } else { 0.0 };
    if let Some(inflater) = &reader.inflater {
        wire.inflated = inflater.messages;
        wire.inflate_ns_per_message =
            if inflater.messages > 0 { inflater.ns as f64 / inflater.messages as f64 } else { 0.0 };
    }
    wire
}
