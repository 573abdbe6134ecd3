//! Drop and resume against fake servers over real sockets: clients are dropped during the
//! window and come back with `resume`; a fake that answers as docs/PROTOCOL.md says passes, one
//! that skips or repeats an event of a resumed stream, or ignores the resume, fails the step.
//!
//! The fake keeps every event, so it can always replay; it answers each resume 30 ms late, so
//! that events were missed and a replay has something in it.

mod fakes;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fakes::{accept_client, one_at_a_time, params, text_frame, wall_ns};

use tickgate_loadtest::resume::ResumeCounts;
use tickgate_loadtest::run::{RunParams, RunResult, run};
use tickgate_loadtest::verdict::{Criteria, Status, Verdict, judge};

const SYMBOLS: [&str; 2] = ["AAA", "BBB"];
const CLIENTS: usize = 4;
/// Events per second per symbol.
const PER_SYMBOL: f64 = 200.0;

/// How the fake answers the first resume of symbol AAA (every other one it answers faithfully).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// `resumed` and every event after the seq held.
    Replay,
    /// A gap `history` up to its newest event and a snapshot there.
    HistoryGap,
    /// Replays, but leaves out the first event after the seq held.
    SkipsOne,
    /// Replays, sending the first event after the seq held twice.
    RepeatsOne,
    /// A snapshot as of its newest event, as if no resume had been asked.
    Ignores,
}

fn event(out: &mut Vec<u8>, symbol: usize, seq: u64) {
    let (name, gw) = (SYMBOLS[symbol], wall_ns());
    out.extend(text_frame(&format!(
        r#"{{"type":"trade","symbol":"{name}","seq":{seq},"price":"1.00","size":"1","ts":{gw},"gw_ts":{gw}}}"#
    )));
}

#[derive(Debug, Default)]
struct Fake {
    published: [u64; 2],
    clients: Vec<TcpStream>,
    /// The first resume of AAA was answered (with the fault).
    struck: bool,
}

/// What the fake sends for one symbol of a `subscribe`: the answer to a resume after `held`, or
/// a snapshot.
fn answer(out: &mut Vec<u8>, fake: &mut Fake, symbol: usize, held: Option<u64>, fault: Answer) {
    let (name, head) = (SYMBOLS[symbol], fake.published[symbol]);
    let Some(held) = held else {
        out.extend(text_frame(&format!(
            r#"{{"type":"snapshot","symbol":"{name}","seq":{head},"trade":null,"quote":null}}"#
        )));
        return;
    };
    let how = if symbol == 0 && !fake.struck {
        fake.struck = true;
        fault
    } else {
        Answer::Replay
    };
    match how {
        Answer::HistoryGap if head > held => {
            let from = held + 1;
            out.extend(text_frame(&format!(
                r#"{{"type":"gap","symbol":"{name}","from_seq":{from},"to_seq":{head},"reason":"history"}}"#
            )));
            out.extend(text_frame(&format!(
                r#"{{"type":"snapshot","symbol":"{name}","seq":{head},"trade":null,"quote":null}}"#
            )));
        }
        Answer::Ignores => {
            out.extend(text_frame(&format!(
                r#"{{"type":"snapshot","symbol":"{name}","seq":{head},"trade":null,"quote":null}}"#
            )));
        }
        _ => {
            out.extend(text_frame(&format!(
                r#"{{"type":"resumed","symbol":"{name}","after_seq":{held},"to_seq":{head}}}"#
            )));
            for seq in held + 1..=head {
                match how {
                    Answer::SkipsOne if seq == held + 1 => {}
                    Answer::RepeatsOne if seq == held + 1 => {
                        event(out, symbol, seq);
                        event(out, symbol, seq);
                    }
                    _ => event(out, symbol, seq),
                }
            }
        }
    }
}

/// Starts a fake that publishes both symbols to every connection it accepts, for `lifetime`.
fn fake_server(fault: Answer, lifetime: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Arc::new(Mutex::new(Fake::default()));
    let accepting = Arc::clone(&fake);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let command = accept_client(&mut stream);
            let held = |symbol: &str| {
                command["resume"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["symbol"] == symbol)
                    .map(|r| r["seq"].as_u64().unwrap())
            };
            if command["resume"].is_array() {
                // Events go by meanwhile: the replay has something in it.
                thread::sleep(Duration::from_millis(30));
            }
            let mut fake = accepting.lock().unwrap();
            let mut hello = Vec::new();
            hello.extend(text_frame(r#"{"type":"subscribed","symbols":["AAA","BBB"],"policy":"conflate"}"#));
            for (s, name) in SYMBOLS.iter().enumerate() {
                answer(&mut hello, &mut fake, s, held(name), fault);
            }
            if stream.write_all(&hello).is_ok() {
                fake.clients.push(stream);
            }
        }
    });
    thread::spawn(move || {
        let start = Instant::now();
        let mut seq = 0u64;
        while start.elapsed() < lifetime {
            if seq >= (start.elapsed().as_secs_f64() * PER_SYMBOL) as u64 {
                thread::sleep(Duration::from_millis(2));
                continue;
            }
            seq += 1;
            let mut fake = fake.lock().unwrap();
            let mut batch = Vec::new();
            for s in 0..SYMBOLS.len() {
                event(&mut batch, s, seq);
            }
            // A dropped client's socket fails the write (reset): it is gone.
            fake.clients.retain_mut(|stream| stream.write_all(&batch).is_ok());
            fake.published = [seq; 2];
        }
    });
    addr
}

/// One run against a fake answering `fault`: a quarter of the clients dropped and resumed every
/// half second of a 2 s window.
fn against(fault: Answer) -> (RunResult, Verdict) {
    let _one = one_at_a_time();
    let addr = fake_server(fault, Duration::from_secs(8));
    let params = RunParams {
        resume_share: 0.25,
        resume_every: Duration::from_millis(500),
        ..params(addr, CLIENTS, SYMBOLS.iter().map(|s| s.to_string()).collect(), SYMBOLS.len())
    };
    let r = run(&params).expect("the run completes");
    // A loaded test machine: half the nominal rate, a p99 bound of 2 s.
    let nominal = PER_SYMBOL * (CLIENTS * SYMBOLS.len()) as f64;
    let criteria = Criteria { generator_bound_share: f64::INFINITY, ..Criteria::new(nominal / 2.0, 2_000_000.0) };
    let verdict = judge(&r, &criteria);
    (r, verdict)
}

fn resumes(r: &RunResult) -> ResumeCounts {
    r.resume.expect("the run dropped and resumed clients")
}

#[test]
fn a_faithful_replay_passes_and_every_resume_is_whole() {
    let (r, v) = against(Answer::Replay);
    assert_eq!(v, Verdict { status: Status::Passed, reasons: vec![] }, "{r:#?}");
    let resumes = resumes(&r);
    // Rounds at 0.5, 1 and 1.5 s (and maybe one at 2 s), one client each, both symbols.
    assert!(resumes.reconnects >= 3, "{resumes:?}");
    assert_eq!(resumes.asked, 2 * resumes.reconnects);
    assert_eq!((resumes.whole, resumes.with_gap, resumes.failed), (resumes.asked, 0, 0), "{resumes:?}");
    assert!(resumes.replayed > 0, "the 30 ms late answer replays what was missed: {resumes:?}");
    assert_eq!((r.latency_us.count, r.seq_tracked), (r.delivered, r.delivered), "replayed events are not live");
    assert_eq!(r.reconnect_ms.count, resumes.reconnects);
}

#[test]
fn a_history_gap_and_its_snapshot_pass_as_announced() {
    let (r, v) = against(Answer::HistoryGap);
    assert_eq!(v, Verdict { status: Status::Passed, reasons: vec![] }, "{r:#?}");
    let resumes = resumes(&r);
    assert_eq!((resumes.with_gap, resumes.failed), (1, 0), "{resumes:?}");
    assert!(resumes.announced > 0);
    assert_eq!(r.seq.announced, 0, "a resume's gap is not a gap to a reading client");
}

#[test]
fn a_replay_that_skips_an_event_fails() {
    let (r, v) = against(Answer::SkipsOne);
    assert_eq!(v.status, Status::Failed, "{r:#?}");
    assert!(v.reasons.iter().any(|why| why.contains("resumes: 1 of")), "{v:#?}");
    assert_eq!((resumes(&r).failed, r.seq.lost), (1, 1));
}

#[test]
fn a_replay_that_repeats_an_event_fails() {
    let (r, v) = against(Answer::RepeatsOne);
    assert_eq!(v.status, Status::Failed, "{r:#?}");
    assert!(v.reasons.iter().any(|why| why.contains("resumes: 1 of")), "{v:#?}");
    assert_eq!((resumes(&r).failed, r.seq.duplicates), (1, 1));
}

#[test]
fn a_resume_answered_with_a_plain_snapshot_fails() {
    let (r, v) = against(Answer::Ignores);
    assert_eq!(v.status, Status::Failed, "{r:#?}");
    assert_eq!(resumes(&r).failed, 1, "{r:#?}");
    assert!(r.seq.lost > 0, "the snapshot skipped what was missed: {r:#?}");
}
