//! The verdict against fake servers over real sockets: each fake breaks the protocol's promises
//! in one way and must fail the step; the faithful fake and the real gateway must pass it.
//!
//! The fake publishes one sequence per symbol, shared by every client (as a real server does),
//! paced by the clock so that its rate holds on a loaded machine. Tests run one at a time: the
//! load generator's CPU share is measured over this whole process.

mod fakes;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fakes::{accept_client, one_at_a_time, params, text_frame, wall_ns};

use tickgate_feed::sim::{SimConfig, universe};
use tickgate_loadtest::run::{RunResult, SlowFates, run};
use tickgate_loadtest::tracker::SeqCounts;
use tickgate_loadtest::verdict::{Criteria, Status, Verdict, judge};

const SYMBOLS: [&str; 2] = ["AAA", "BBB"];
const CLIENTS: usize = 4;
/// Events per second per symbol.
const PER_SYMBOL: f64 = 200.0;
/// The seq at which a fault strikes (well inside the window: 0.5 s warm-up, 2 s window).
const FAULT_SEQ: u64 = 300;
/// The seq at which [`Fault::ClosesEveryone`] closes every client: 2 s after the fake started,
/// half a second before the earliest end of the window.
const CLOSE_EVERYONE_SEQ: u64 = 400;
const GOING_AWAY: &[u8] = b"going away";

/// How a fake breaks the protocol (for the first client, on the first symbol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    NoGwTs,
    SilentDrop,
    ConflatedTrade,
    RefusedSubscribe,
    SkippingSnapshot,
    NeverDeliveringPair,
    StopsEarly,
    /// Closes the first client with 1008 "slow consumer" (a fair fate for a stalled client).
    CutsFirst,
    /// Sends `seq` as a JSON string.
    SeqAsString,
    /// Sends one event twice.
    Duplicated,
    /// Drops five events and announces only the first three of them in a gap.
    ShortGap,
    /// Sends a snapshot as of the last seq the client already holds (faithful: nothing to skip
    /// or repeat).
    SnapshotAtLastHeld,
    /// Stamps `gw_ts` one second after the event was sent: a latency no clock can measure.
    GwTsInTheFuture,
    /// Closes every client with 1001 a little before the window ends.
    ClosesEveryone,
    /// Drops a trade and says the next quote superseded it (`conflated`).
    HiddenTrade,
    /// A quote claiming 999 superseded quotes, with no seq skipped.
    Overclaim,
    /// A gap announcing five seqs the client already received.
    StaleGap,
    /// Every event carries a member `NaN`: not JSON, though the scanner does not read it.
    NotJson,
    /// A binary frame, a frame with an RSV bit, a fragmented message and invalid UTF-8.
    BadFrames,
    /// An event without seq nor gw_ts (sent to the first client, stalled in these tests).
    Junk,
    /// Symbol AAA reaches no client from [`STOP_ALL_SEQ`] on (its seq goes on), with no gap.
    StopsForEveryone,
    /// Answers the first client's upgrade with a 101 lacking Upgrade and Sec-WebSocket-Accept.
    BadHandshake,
}

/// The seq from which [`Fault::StopsForEveryone`] sends AAA to no one: 1 s after the fake
/// started, 1.5 s or more before the window ends.
const STOP_ALL_SEQ: u64 = 200;

/// The symbols a client's subscribe names.
fn subscribed_symbols(stream: &mut TcpStream) -> Vec<String> {
    let command = accept_client(stream);
    command["symbols"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// Separates two messages in what [`event_for`] returns.
const NEXT: char = '\n';

/// `text` with the value `from` of its member `key` replaced by `to` (with or without a space
/// after the colon).
fn with_member(text: &str, key: &str, from: &str, to: &str) -> String {
    let spaced = text.replacen(&format!("\"{key}\": {from}"), &format!("\"{key}\": {to}"), 1);
    spaced.replacen(&format!("\"{key}\":{from}"), &format!("\"{key}\":{to}"), 1)
}

/// What the fake sends one client for one event of `symbol`, given the fault: one message, or
/// several separated by [`NEXT`].
fn event_for(fault: Fault, first_client: bool, symbol: usize, seq: u64) -> Option<String> {
    let name = SYMBOLS[symbol];
    let hit = first_client && symbol == 0;
    let gw = wall_ns();
    // Odd seqs are trades, even ones quotes; whitespace after colons, as JSON allows.
    let trade = |extra: &str| {
        format!(
            r#"{{"type": "trade", "symbol": "{name}", "seq": {seq}, "price": "1.00", "size": "1"{extra}, "ts": {gw}, "gw_ts": {gw}}}"#
        )
    };
    let quote = format!(
        r#"{{"type":"quote","symbol":"{name}","seq":{seq},"bid":"0.99","bid_size":"1","ask":"1.01","ask_size":"1","ts":{gw},"gw_ts":{gw}}}"#
    );
    let normal = if seq % 2 == 1 { trade("") } else { quote };
    match fault {
        Fault::StopsForEveryone if symbol == 0 && seq >= STOP_ALL_SEQ => None,
        _ if !hit => Some(normal),
        Fault::HiddenTrade if seq == FAULT_SEQ + 1 => None,
        Fault::HiddenTrade | Fault::Overclaim if seq == FAULT_SEQ + 2 => {
            let claimed = if fault == Fault::HiddenTrade { 1 } else { 999 };
            Some(normal.replacen(r#""gw_ts""#, &format!(r#""conflated":{claimed},"gw_ts""#), 1))
        }
        Fault::StaleGap if seq == FAULT_SEQ => {
            let (from, to) = (seq - 5, seq - 1);
            Some(format!(
                r#"{{"type":"gap","symbol":"{name}","from_seq":{from},"to_seq":{to},"reason":"slow_consumer"}}{NEXT}{normal}"#
            ))
        }
        Fault::NotJson => Some(normal.replacen(r#""gw_ts""#, r#""note":NaN,"gw_ts""#, 1)),
        Fault::Junk if seq == FAULT_SEQ => {
            Some(format!(r#"{{"type":"trade","symbol":"{name}","price":"oops"}}{NEXT}{normal}"#))
        }
        Fault::SeqAsString => Some(with_member(&normal, "seq", &seq.to_string(), &format!("\"{seq}\""))),
        Fault::Duplicated if seq == FAULT_SEQ => Some(format!("{normal}{NEXT}{normal}")),
        Fault::ShortGap if (FAULT_SEQ..FAULT_SEQ + 5).contains(&seq) => (seq == FAULT_SEQ).then(|| {
            let to = FAULT_SEQ + 2;
            format!(r#"{{"type":"gap","symbol":"{name}","from_seq":{seq},"to_seq":{to},"reason":"slow_consumer"}}"#)
        }),
        Fault::SnapshotAtLastHeld if seq == FAULT_SEQ => {
            let held = seq - 1;
            Some(format!(
                r#"{{"type":"snapshot","symbol":"{name}","seq":{held},"trade":null,"quote":null}}{NEXT}{normal}"#
            ))
        }
        Fault::GwTsInTheFuture => {
            Some(with_member(&normal, "gw_ts", &gw.to_string(), &(gw + 1_000_000_000).to_string()))
        }
        Fault::NoGwTs => Some(format!(r#"{{"type":"quote","symbol":"{name}","seq":{seq},"bid":"1","ask":"2"}}"#)),
        Fault::SilentDrop if seq == FAULT_SEQ => None,
        Fault::ConflatedTrade if seq == FAULT_SEQ => None,
        Fault::ConflatedTrade if seq == FAULT_SEQ + 1 => Some(trade(r#", "conflated": 1"#)),
        Fault::SkippingSnapshot if (FAULT_SEQ..FAULT_SEQ + 5).contains(&seq) => None,
        Fault::SkippingSnapshot if seq == FAULT_SEQ + 5 => {
            Some(format!(r#"{{"type":"snapshot","symbol":"{name}","seq":{seq},"trade":null,"quote":null}}"#))
        }
        Fault::RefusedSubscribe | Fault::NeverDeliveringPair => None,
        Fault::StopsEarly | Fault::CutsFirst if seq >= FAULT_SEQ => None,
        _ => Some(normal),
    }
}

/// Starts a fake server that serves `CLIENTS` connections for `lifetime`.
fn fake_server(fault: Fault, lifetime: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let clients: Arc<Mutex<Vec<(TcpStream, bool)>>> = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::clone(&clients);
    // The last seq this fake published, per symbol. Its own: the publisher of an earlier test's
    // fake may still be running out its lifetime.
    let published: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let snapshot_at = Arc::clone(&published);
    thread::spawn(move || {
        for i in 0..CLIENTS {
            let (mut stream, _) = listener.accept().unwrap();
            if i == 0 && fault == Fault::BadHandshake {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    line.clear();
                }
                let _ = stream.write_all(b"HTTP/1.1 101 whatever\r\nX: y\r\n\r\n");
                continue;
            }
            let symbols = subscribed_symbols(&mut stream);
            assert_eq!(symbols.len(), SYMBOLS.len(), "every client holds every symbol");
            let first = i == 0;
            let mut hello = Vec::new();
            hello.extend(text_frame(r#"{"type":"welcome","server":"fake","version":"0","session":"f","time":0}"#));
            let refused = first && matches!(fault, Fault::RefusedSubscribe | Fault::NeverDeliveringPair);
            let listed = if refused { r#"["BBB"]"# } else { r#"["AAA","BBB"]"# };
            hello.extend(text_frame(&format!(r#"{{"type":"subscribed","symbols":{listed},"policy":"conflate"}}"#)));
            // Snapshots as of the seq just published, taken under the lock the publisher holds.
            let mut accepted = accepted.lock().unwrap();
            for (s, name) in SYMBOLS.iter().enumerate() {
                if refused && s == 0 {
                    continue;
                }
                let at = snapshot_at[s].load(Ordering::SeqCst);
                hello.extend(text_frame(&format!(
                    r#"{{"type":"snapshot","symbol":"{name}","seq":{at},"trade":null,"quote":null}}"#
                )));
            }
            if first && fault == Fault::RefusedSubscribe {
                hello.extend(text_frame(
                    r#"{"type":"error","code":"not_entitled","message":"not entitled","symbols":["AAA"]}"#,
                ));
            }
            stream.write_all(&hello).unwrap();
            accepted.push((stream, first));
        }
    });
    thread::spawn(move || {
        let start = Instant::now();
        let mut seq = 0u64;
        while start.elapsed() < lifetime {
            let due = (start.elapsed().as_secs_f64() * PER_SYMBOL) as u64;
            if seq >= due {
                thread::sleep(Duration::from_millis(2));
                continue;
            }
            seq += 1;
            let mut clients = clients.lock().unwrap();
            for (stream, first) in clients.iter_mut() {
                let mut batch = Vec::new();
                if *first && fault == Fault::CutsFirst && seq == FAULT_SEQ {
                    let reason = b"slow consumer";
                    batch.extend([0x88, 2 + reason.len() as u8, 0x03, 0xf0]);
                    batch.extend(reason);
                }
                if fault == Fault::ClosesEveryone && seq >= CLOSE_EVERYONE_SEQ {
                    if seq == CLOSE_EVERYONE_SEQ {
                        batch.extend([0x88, 2 + GOING_AWAY.len() as u8, 0x03, 0xe9]);
                        batch.extend(GOING_AWAY);
                    }
                    let _ = stream.write_all(&batch);
                    continue;
                }
                for s in 0..SYMBOLS.len() {
                    for text in event_for(fault, *first, s, seq).iter().flat_map(|text| text.split(NEXT)) {
                        batch.extend(text_frame(text));
                    }
                }
                if *first && fault == Fault::BadFrames && seq == FAULT_SEQ {
                    batch.extend([0x82, 2, 0, 1]); // binary
                    batch.extend([0xC1, 2, b'{', b'}']); // RSV1 set
                    batch.extend([0x01, 1, b'{', 0x80, 1, b'}']); // fragmented, then its continuation
                    batch.extend([0x81, 2, 0xff, 0xfe]); // invalid UTF-8
                }
                let _ = stream.write_all(&batch);
            }
            for symbol in published.iter() {
                symbol.store(seq, Ordering::SeqCst);
            }
        }
    });
    addr
}

/// Criteria for a loaded test machine: half the nominal rate, a p99 bound of 2 s.
fn criteria(nominal_per_s: f64) -> Criteria {
    Criteria { generator_bound_share: f64::INFINITY, ..Criteria::new(nominal_per_s / 2.0, 2_000_000.0) }
}

fn against_fake(fault: Fault) -> (RunResult, Verdict) {
    against_fake_with(fault, 0.0)
}

/// With `slow_share` of the clients (the first ones) stalled for the window.
fn against_fake_with(fault: Fault, slow_share: f64) -> (RunResult, Verdict) {
    against_fake_asking(fault, slow_share, None)
}

/// With `slow_share` of the clients stalled, asking for `policy` (the fake always announces
/// conflate).
fn against_fake_asking(fault: Fault, slow_share: f64, policy: Option<&str>) -> (RunResult, Verdict) {
    let _one = one_at_a_time();
    let addr = fake_server(fault, Duration::from_secs(8));
    let universe = SYMBOLS.iter().map(|s| s.to_string()).collect();
    let mut p = params(addr, CLIENTS, universe, SYMBOLS.len());
    p.slow_share = slow_share;
    p.policy = policy.map(String::from);
    let r = run(&p).expect("the run completes");
    let verdict = judge(&r, &criteria(PER_SYMBOL * (CLIENTS * SYMBOLS.len()) as f64));
    (r, verdict)
}

fn fails_with(fault: Fault, fragment: &str) -> RunResult {
    let (r, v) = against_fake(fault);
    assert_eq!(v.status, Status::Failed, "{fault:?} passed: {r:#?}");
    assert!(v.reasons.iter().any(|why| why.contains(fragment)), "{fault:?}: no reason with {fragment:?}: {v:#?}");
    r
}

/// One connection, a known script: a loss, a gap and its snapshot, a conflated quote, all split
/// into odd-sized pieces, and a known latency.
#[test]
fn a_scripted_sequence_is_counted_exactly() {
    const LATENCY_NS: u64 = 2_000_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        accept_client(&mut stream);
        stream
            .write_all(&text_frame(r#"{"type":"snapshot","symbol":"AAPL","seq":10,"trade":null,"quote":null}"#))
            .unwrap();
        // Let the window open (the warm-up is 100 ms).
        thread::sleep(Duration::from_millis(400));
        let mut script = Vec::new();
        for seq in [11, 12, 14] {
            let gw = wall_ns() - LATENCY_NS;
            script.extend(text_frame(&format!(
                r#"{{"type":"trade","symbol":"AAPL","seq":{seq},"price":"1.00","size":"1","ts":1,"gw_ts":{gw}}}"#
            )));
        }
        script
            .extend(text_frame(r#"{"type":"gap","symbol":"AAPL","from_seq":15,"to_seq":17,"reason":"slow_consumer"}"#));
        script.extend(text_frame(r#"{"type":"snapshot","symbol":"AAPL","seq":17,"trade":null,"quote":null}"#));
        let gw = wall_ns() - LATENCY_NS;
        script
            .extend(text_frame(&format!(r#"{{"type":"quote","symbol":"AAPL","seq":20,"conflated":2,"gw_ts":{gw}}}"#)));
        for chunk in script.chunks(37) {
            stream.write_all(chunk).unwrap();
            stream.flush().unwrap();
            thread::sleep(Duration::from_millis(2));
        }
        thread::sleep(Duration::from_secs(3));
    });
    let mut p = params(addr, 1, vec!["AAPL".into()], 1);
    p.warmup = Duration::from_millis(100);
    p.duration = Duration::from_millis(1500);
    p.drain = Duration::from_millis(500);
    let r = run(&p).unwrap();
    assert_eq!((r.connected, r.delivered, r.seq_tracked), (1, 4, 4));
    assert_eq!(r.seq, SeqCounts { received: 4, announced: 3, conflated: 2, lost: 1, ..SeqCounts::default() });
    assert_eq!(r.latency_us.count, 4);
    // 2 ms stamped in the past, plus what the script's own pacing adds (a few ms at most).
    assert!(r.latency_us.p50 >= 2_000.0 && r.latency_us.max < 60_000.0, "{:?}", r.latency_us);
}

#[test]
fn a_faithful_fake_passes() {
    let (r, v) = against_fake(Fault::None);
    assert_eq!(v, Verdict { status: Status::Passed, reasons: vec![] }, "{r:#?}");
    assert_eq!(r.pairs.caught_up, (CLIENTS * SYMBOLS.len()) as u64);
    assert_eq!((r.latency_us.count, r.seq_tracked), (r.delivered, r.delivered));
}

#[test]
fn events_without_gw_ts_fail() {
    let r = fails_with(Fault::NoGwTs, "readable gw_ts");
    assert!(r.latency_us.count < r.delivered);
}

#[test]
fn a_silent_drop_fails() {
    let r = fails_with(Fault::SilentDrop, "lost without a gap");
    assert_eq!(r.seq.lost, 1);
}

#[test]
fn a_conflated_trade_fails() {
    let r = fails_with(Fault::ConflatedTrade, "trades marked conflated");
    assert_eq!((r.seq.conflated_trades, r.seq.lost), (1, 1));
}

#[test]
fn a_refused_subscribe_fails() {
    let r = fails_with(Fault::RefusedSubscribe, "not_entitled ×1");
    assert_eq!(r.pairs.never_started, 1);
}

#[test]
fn a_snapshot_that_skips_ahead_fails() {
    let r = fails_with(Fault::SkippingSnapshot, "lost without a gap");
    // 300..=304 never came, and 305 only as the snapshot's state.
    assert_eq!(r.seq.lost, 6);
}

#[test]
fn a_pair_that_never_delivers_fails() {
    let r = fails_with(Fault::NeverDeliveringPair, "1 never started");
    assert!(r.errors.is_empty());
}

#[test]
fn a_pair_that_stops_before_the_window_ends_fails() {
    let r = fails_with(Fault::StopsEarly, "1 behind the last published seq");
    assert_eq!(r.seq.lost, 0, "nothing later came: no loss visible in the seqs themselves");
}

#[test]
fn the_real_gateway_passes() {
    let _one = one_at_a_time();
    const S: usize = 10;
    let gateway = tickgate_testkit::start_gateway(|c| {
        c.sim.symbols = S;
        c.sim.rate = 1_000.0;
    });
    let names: Vec<String> =
        universe(&SimConfig { symbols: S, ..SimConfig::default() }).iter().map(|(_, s)| s.name.to_string()).collect();
    let r = run(&params(gateway.local_addr(), 10, names, S)).expect("the run completes");
    // Every client holds every symbol: 10 × the tick rate.
    let v = judge(&r, &criteria(10.0 * 1_000.0));
    assert_eq!(v, Verdict { status: Status::Passed, reasons: vec![] }, "{r:#?}");
    assert_eq!(r.policy.as_deref(), Some("conflate"));
    gateway.shutdown();
}

#[test]
fn a_stalled_client_cut_with_1008_is_a_fair_fate() {
    let (r, v) = against_fake_with(Fault::CutsFirst, 0.25);
    assert_eq!(v, Verdict { status: Status::Passed, reasons: vec![] }, "{r:#?}");
    assert_eq!(r.slow, SlowFates { clients: 1, cut: 1, ..SlowFates::default() });
}

#[test]
fn a_stalled_client_kept_whole_passes_and_one_that_lost_untold_fails() {
    let (r, v) = against_fake_with(Fault::None, 0.25);
    assert_eq!(v, Verdict { status: Status::Passed, reasons: vec![] }, "{r:#?}");
    assert_eq!(r.slow, SlowFates { clients: 1, kept: 1, ..SlowFates::default() });
    assert!(r.slow_seq.received > 0, "the stalled client was read after the window");

    let (r, v) = against_fake_with(Fault::SilentDrop, 0.25);
    assert_eq!(v.status, Status::Failed, "{r:#?}");
    assert!(v.reasons.iter().any(|why| why.contains("1 events lost untold")), "{v:#?}");
    assert_eq!(r.seq.lost, 0, "the reading clients lost nothing");
}

#[test]
fn seqs_sent_as_strings_fail() {
    let r = fails_with(Fault::SeqAsString, "sequence-checked");
    assert!(r.seq_tracked < r.delivered, "{r:#?}");
}

#[test]
fn a_duplicated_event_fails() {
    let r = fails_with(Fault::Duplicated, "duplicate");
    assert_eq!(r.seq.duplicates, 1);
}

#[test]
fn a_gap_that_announces_fewer_seqs_than_were_missed_fails_even_for_a_stalled_client() {
    let r = fails_with(Fault::ShortGap, "2 events lost without a gap");
    assert_eq!((r.seq.announced, r.seq.lost), (3, 2));
    // A stalled client may be told of a gap; the two it was not told of still fail the step.
    let (r, v) = against_fake_with(Fault::ShortGap, 0.25);
    assert_eq!(v.status, Status::Failed, "{r:#?}");
    assert!(v.reasons.iter().any(|why| why.contains("2 events lost untold")), "{v:#?}");
    assert_eq!((r.slow_seq.announced, r.seq.lost), (3, 0));
}

#[test]
fn a_snapshot_as_of_the_last_held_seq_passes() {
    let (r, v) = against_fake(Fault::SnapshotAtLastHeld);
    assert_eq!(v, Verdict { status: Status::Passed, reasons: vec![] }, "{r:#?}");
    assert_eq!((r.seq.duplicates, r.seq.lost), (0, 0));
}

#[test]
fn a_gw_ts_later_than_the_receipt_fails() {
    let r = fails_with(Fault::GwTsInTheFuture, "gw_ts after");
    // The other client's events, and the first client's other symbol, are timed.
    assert!(r.latency_us.count > 0 && r.latency_us.count < r.delivered, "{r:#?}");
}

#[test]
fn a_server_that_closes_everyone_before_the_window_ends_fails() {
    let r = fails_with(Fault::ClosesEveryone, "1001 ×4");
    assert_eq!(r.closes.get(&1001), Some(&(CLIENTS as u64)));
}

fn fails_with_stalled(fault: Fault, fragment: &str) -> RunResult {
    let (r, v) = against_fake_with(fault, 0.25);
    assert_eq!(v.status, Status::Failed, "{fault:?} passed: {r:#?}");
    assert!(v.reasons.iter().any(|why| why.contains(fragment)), "{fault:?}: no reason with {fragment:?}: {v:#?}");
    r
}

#[test]
fn a_trade_hidden_as_a_superseded_quote_fails() {
    let r = fails_with(Fault::HiddenTrade, "1 trades hidden");
    assert_eq!((r.hidden_trades, r.seq.lost, r.seq.conflated), (1, 0, 1));
}

#[test]
fn a_policy_other_than_the_one_asked_fails() {
    let (r, v) = against_fake_asking(Fault::None, 0.0, Some("drop"));
    assert_eq!(v.status, Status::Failed, "{r:#?}");
    assert!(v.reasons.iter().any(|why| why.contains("policy drop asked, the server announced conflate")), "{v:#?}");
}

#[test]
fn a_symbol_that_stops_reaching_everyone_fails_as_stale() {
    let r = fails_with(Fault::StopsForEveryone, "1 stale symbols");
    assert_eq!(r.stalest_symbol.as_ref().map(|s| s.symbol.as_str()), Some("AAA"));
    assert_eq!((r.seq.lost, r.pairs.behind), (0, 0), "no loss visible in any client's seqs");
}

#[test]
fn a_stalled_client_the_server_stopped_sending_to_fails() {
    let r = fails_with_stalled(Fault::StopsEarly, "1 stalled clients still open but short");
    assert_eq!((r.slow.behind, r.slow_seq.lost), (1, 0));
}

#[test]
fn an_event_without_seq_or_gw_ts_outside_the_counted_window_fails() {
    let r = fails_with_stalled(Fault::Junk, "1 messages unreadable");
    assert_eq!(r.unreadable, 1);
}

#[test]
fn binary_fragmented_rsv_and_invalid_utf8_frames_fail() {
    let r = fails_with(Fault::BadFrames, "5 messages unreadable");
    assert_eq!(r.unreadable, 5);
}

#[test]
fn an_upgrade_without_accept_fails() {
    let r = fails_with(Fault::BadHandshake, "3 of 4 clients connected");
    assert_eq!(r.failed_connects, 1);
}

#[test]
fn a_quote_claiming_more_than_it_skipped_fails() {
    let r = fails_with(Fault::Overclaim, "1 quotes claimed to supersede more");
    assert_eq!(r.seq.overclaimed, 1);
}

#[test]
fn a_gap_of_seqs_already_delivered_fails() {
    let r = fails_with(Fault::StaleGap, "1 gaps announced only seqs");
    assert_eq!((r.seq.false_gaps, r.seq.announced), (1, 0));
}

#[test]
fn json_the_scanner_reads_differently_from_a_parser_fails() {
    let r = fails_with(Fault::NotJson, "disagreed with the scanner");
    assert!(r.json_mismatches > 0 && r.unreadable == 0, "{r:#?}");
}
