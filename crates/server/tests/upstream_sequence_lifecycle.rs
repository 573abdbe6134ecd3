//! The upstream's own sequence numbers through real sockets: an upstream that restarts its
//! numbering on a reconnect keeps flowing to clients, with an `upstream_reset` before its first
//! tick; an absurd jump is announced and never becomes a baseline; and a recording of the live
//! run replays to clients as the same events with the same `upstream_gap` and `upstream_reset`
//! announcements.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;

use serde_json::Value;
use tickgate_server::Gateway;
use tickgate_server::config::SourceConfig;
use tickgate_testkit::{TestClient, eventually, metric, now_ns, start_gateway};

fn trade(symbol: &str, seq: u64, price: u64) -> String {
    format!(
        "{{\"type\":\"trade\",\"symbol\":\"{symbol}\",\"price\":\"{price}\",\"size\":\"1\",\"ts\":{},\"seq\":{seq}}}\n",
        now_ns()
    )
}

fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(false).unwrap();
    listener.accept().unwrap().0
}

/// The next `n` messages about the symbol's events and its upstream (trades, quotes, gaps,
/// resets), without `gw_ts` (the ingest time of this run); `status` and the like are skipped.
fn events(client: &mut TestClient, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut message = client.recv();
        if matches!(message["type"].as_str(), Some("trade" | "quote" | "upstream_gap" | "upstream_reset")) {
            message.as_object_mut().unwrap().remove("gw_ts");
            out.push(message);
        }
    }
    out
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["type"].as_str().unwrap() {
            "trade" => format!("trade {}", e["price"].as_str().unwrap()),
            "upstream_gap" => format!("gap {} after {}", e["missed"], e["after_seq"]),
            "upstream_reset" => format!("reset {} after {}", e["reason"].as_str().unwrap(), e["after_seq"]),
            other => other.to_string(),
        })
        .collect()
}

/// A gateway whose one source, "desk", connects to a TCP upstream at `upstream_addr`, recording
/// to `record` if given.
fn desk_gateway(upstream_addr: SocketAddr, record: Option<&Path>) -> Gateway {
    start_gateway(|c| {
        c.server.reactors = 1;
        let mut desk = SourceConfig::new("desk", "tcp");
        desk.tcp_connect = Some(upstream_addr);
        c.feed.sources = vec![desk];
        c.feed.record_path = record.map(Path::to_path_buf);
    })
}

/// Runs a TCP upstream through a gateway named "desk" that records to `record`: seq 10, 11,
/// 14, 15; a reconnect that numbers from 1; an absurd jump and a return. Returns what a
/// subscriber received.
fn live_run(upstream: &TcpListener, upstream_addr: SocketAddr, record: &Path) -> (Vec<Value>, [Option<f64>; 2]) {
    let gateway = desk_gateway(upstream_addr, Some(record));
    let addr = gateway.local_addr();
    let mut feed = accept(upstream);
    let mut client = TestClient::connect(addr);
    client.subscribe(&["AAPL"]);
    for (seq, price) in [(10, 101), (11, 102), (14, 103), (15, 104)] {
        feed.write_all(trade("AAPL", seq, price).as_bytes()).unwrap();
    }
    let mut received = events(&mut client, 5);
    // The upstream restarts: it comes back numbering from 1, as a daily reset would.
    drop(feed);
    assert_eq!(client.recv_type("status")["feed"], "down");
    let mut feed = accept(upstream);
    for (seq, price) in [(1, 105), (2, 106), (u64::MAX, 107), (3, 108)] {
        feed.write_all(trade("AAPL", seq, price).as_bytes()).unwrap();
    }
    received.extend(events(&mut client, 7));
    let resets = ["upstream_restart", "seq_jump"]
        .map(|r| metric(addr, &format!("tickgate_upstream_resets_total{{reason=\"{r}\",source=\"desk\"}}")));
    eventually("every tick ingested", || metric(addr, "tickgate_ticks_ingested_total{source=\"desk\"}") == Some(8.0));
    drop(feed);
    drop(client);
    gateway.shutdown();
    (received, resets)
}

#[test]
fn an_upstream_that_restarts_keeps_flowing_and_the_recording_replays_the_same() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let record = std::env::temp_dir().join(format!("tickgate-seq-lifecycle-{}.jsonl", std::process::id()));
    let (live, resets) = live_run(&upstream, upstream_addr, &record);
    assert_eq!(
        kinds(&live),
        [
            "trade 101.00",
            "trade 102.00",
            "gap 2 after 2",
            "trade 103.00",
            "trade 104.00",
            "reset upstream_restart after 4",
            "trade 105.00",
            "trade 106.00",
            "reset seq_jump after 6",
            "trade 107.00",
            "reset seq_jump after 7",
            "trade 108.00",
        ],
        "nothing goes silent: every tick delivered, every discontinuity announced"
    );
    assert!(live.iter().all(|e| e["type"] == "trade" || e["source"] == "desk"), "{live:?}");
    assert_eq!(resets, [Some(1.0), Some(2.0)], "counted by reason");

    // The recording keeps the upstream's own numbers and the resets the live run announced.
    let recorded = std::fs::read_to_string(&record).unwrap();
    assert!(recorded.contains("\"seq\":14,\"gw_seq\":3}"), "{recorded}");
    assert!(recorded.contains("\"seq\":1,\"gw_seq\":5,\"reset\":\"upstream_restart\"}"), "{recorded}");
    // A lead-in of another symbol, 5 s before, gives the replay's subscriber time to subscribe.
    let first_ts: u64 = recorded.split("\"ts\":").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    let lead_in = format!(
        "{{\"type\":\"trade\",\"symbol\":\"MSFT\",\"price\":\"1\",\"size\":\"1\",\"ts\":{}}}\n",
        first_ts - 5_000_000_000
    );
    std::fs::write(&record, lead_in + &recorded).unwrap();

    let gateway = start_gateway(|c| {
        c.server.reactors = 1;
        let mut desk = SourceConfig::new("desk", "replay");
        desk.replay_path = Some(record.clone());
        c.feed.sources = vec![desk];
    });
    let mut client = TestClient::connect(gateway.local_addr());
    let (_, snapshots) = client.subscribe(&["AAPL"]);
    assert_eq!(snapshots[0]["seq"], 0, "subscribed before the replay reached AAPL");
    let replayed = events(&mut client, live.len());
    std::fs::remove_file(&record).ok();
    assert_eq!(replayed, live, "the same events and the same announcements, byte for byte but gw_ts");
    let addr = gateway.local_addr();
    assert_eq!(metric(addr, "tickgate_upstream_gaps_total{source=\"desk\"}"), Some(2.0));
    assert_eq!(metric(addr, "tickgate_upstream_resets_total{reason=\"seq_jump\",source=\"desk\"}"), Some(2.0));
}

/// An upstream that numbers afresh on the same connection (a daily reset, say), after fewer
/// messages than `feed.max_seq_jump`: a short run of its new numbers is refused as repeats, then
/// it flows again after an `upstream_reset`, instead of staying silent until its numbers pass
/// the old ones.
#[test]
fn an_upstream_that_numbers_afresh_without_reconnecting_flows_again_after_a_reset() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let gateway = desk_gateway(upstream_addr, None);
    let addr = gateway.local_addr();
    let mut feed = accept(&upstream);
    let mut client = TestClient::connect(addr);
    client.subscribe(&["AAPL"]);
    let run = u64::from(tickgate_feed::upstream_seq::RESTART_RUN);
    let mut lines = String::new();
    for seq in 1..=200 {
        lines += &trade("AAPL", seq, 1_000 + seq);
    }
    for seq in 1..=run + 9 {
        lines += &trade("AAPL", seq, 2_000 + seq);
    }
    feed.write_all(lines.as_bytes()).unwrap();
    let received = kinds(&events(&mut client, 200 + 1 + 10));
    assert_eq!(received[199], "trade 1200.00");
    assert_eq!(received[200], "reset upstream_restart after 200", "{received:?}");
    assert_eq!(received[201], format!("trade {}.00", 2_000 + run), "{received:?}");
    assert_eq!(received[210], format!("trade {}.00", 2_009 + run), "{received:?}");
    let refused = metric(addr, "tickgate_ticks_rejected_total{reason=\"seq_backwards\",source=\"desk\"}");
    assert_eq!(refused, Some((run - 1) as f64), "the run before the reset is counted");
    drop(feed);
    drop(client);
    gateway.shutdown();
}
