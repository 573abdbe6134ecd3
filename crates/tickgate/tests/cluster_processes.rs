//! A cluster of tickgate processes on a real NATS JetStream: a publisher killed with SIGKILL
//! and started again never reuses or lowers a seq, and its edges' clients are told; an edge
//! stopped with SIGTERM hands its clients to another on the same port with nothing missed; NATS
//! that cannot be reached or refuses the credentials is one clear line and a non-zero exit; a
//! publisher stopped while NATS is gone exits at once.

mod support;

use serde_json::Value;
use support::{Started, TempConfig, Tickgate};
use tickgate_testkit::TestClient;
use tickgate_testkit::nats::NatsServer;

const SYMBOL: &str = "AAPL";

fn cluster_process(role: &str, url: &str) -> (Tickgate, std::net::SocketAddr) {
    cluster_process_on(role, url, "127.0.0.1:0", &[])
}

fn cluster_process_on(role: &str, url: &str, listen: &str, extra: &[&str]) -> (Tickgate, std::net::SocketAddr) {
    cluster_process_at_rate(role, url, listen, "2000", extra)
}

fn cluster_process_at_rate(
    role: &str,
    url: &str,
    listen: &str,
    rate: &str,
    extra: &[&str],
) -> (Tickgate, std::net::SocketAddr) {
    let mut args =
        vec!["--bus-role", role, "--bus-url", url, "--listen", listen, "--reactors", "1", "--sim-symbols", "5"];
    args.extend_from_slice(&["--sim-rate", rate]);
    args.extend_from_slice(extra);
    Tickgate::start(&args, &[])
}

fn is_event(msg: &Value) -> bool {
    msg["symbol"] == SYMBOL && (msg["type"] == "trade" || msg["type"] == "quote")
}

#[test]
fn a_publisher_killed_and_restarted_goes_on_upward_and_edge_clients_are_told() {
    let nats = NatsServer::start();
    let (mut publisher, _) = cluster_process("publisher", &nats.url());
    let (_edge, edge_addr) = cluster_process("edge", &nats.url());
    let mut client = TestClient::connect(edge_addr);
    let (_, snaps) = client.subscribe(&[SYMBOL]);
    let mut last = snaps[0]["seq"].as_u64().unwrap();
    let mut events = 0;
    while events < 50 {
        let msg = client.recv();
        if is_event(&msg) {
            let seq = msg["seq"].as_u64().unwrap();
            // Before the edge has read anything, its snapshot is empty (seq 0); a gap and a
            // snapshot as of the first tick it reads follow.
            assert!(seq == last + 1 || (last == 0 && events == 0), "{msg} after {last}");
            last = seq;
            events += 1;
        }
    }
    publisher.signal("KILL");
    publisher.exit_status(support::PATIENCE);
    let (_publisher, _) = cluster_process("publisher", &nats.url());
    let (mut resets, mut after) = (0, 0);
    while after < 50 {
        let msg = client.recv();
        if msg["type"] == "upstream_reset" && msg["symbol"] == SYMBOL {
            assert_eq!(msg["reason"], "publisher_restart", "{msg}");
            resets += 1;
        } else if msg["type"] == "gap" && msg["symbol"] == SYMBOL {
            // Ticks the killed publisher sequenced and published but the edge had not read
            // cannot be missing (the stream keeps them): a gap here is a lost tick.
            panic!("nothing published is missing: {msg}");
        } else if is_event(&msg) {
            let seq = msg["seq"].as_u64().unwrap();
            assert_eq!(seq, last + 1, "seq goes on upward from the last published, never repeated: {msg}");
            last = seq;
            after += usize::from(resets > 0);
        }
    }
    assert_eq!(resets, 1, "the restart is announced once");
}

#[test]
fn unreachable_nats_or_wrong_credentials_at_start_is_one_clear_line_and_a_failed_exit() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nats = NatsServer::start_with(&["--user", "tickgate", "--pass", "right"]);
    let wrong = format!("nats://tickgate:wrong@{}", nats.addr());
    for url in [format!("nats://127.0.0.1:{port}"), wrong] {
        let mut command = std::process::Command::new(support::BIN);
        command.args(["--bus-role", "edge", "--bus-url", &url, "--listen", "127.0.0.1:0"]);
        let mut tickgate = Tickgate::spawn(command);
        let Started::Exited(status) = tickgate.started() else { panic!("it must not serve without its bus") };
        assert!(!status.success());
        let stderr = tickgate.stderr();
        assert!(stderr.contains("cannot reach NATS at nats://"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(!stderr.contains("wrong@"), "no password in the message: {stderr}");
    }
}

/// What a client reads next: a message, or the close frame's code.
fn next(client: &mut TestClient) -> Result<Value, u16> {
    loop {
        match client.ws.read().expect("a message or a close frame") {
            tungstenite::Message::Text(text) => return Ok(serde_json::from_str(&text).unwrap()),
            tungstenite::Message::Close(frame) => return Err(frame.map_or(0, |f| u16::from(f.code))),
            _ => {}
        }
    }
}

/// Connects to `addr`, trying again for a while (a client's backoff), and resumes [`SYMBOL`]
/// after `seq`: the reply and `resumed` must come, nothing else before the events.
fn reconnect_and_resume(addr: std::net::SocketAddr, seq: u64) -> TestClient {
    let deadline = std::time::Instant::now() + support::PATIENCE;
    let mut client = loop {
        let attempt = std::net::TcpStream::connect(addr).ok().and_then(|stream| {
            stream.set_read_timeout(Some(support::PATIENCE)).ok()?;
            let (ws, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).ok()?;
            Some(TestClient { ws, welcome: Value::Null })
        });
        if let Some(client) = attempt {
            break client;
        }
        assert!(std::time::Instant::now() < deadline, "no edge took the reconnect on {addr}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(client.recv()["type"], "welcome");
    client.send_json(serde_json::json!({"op": "subscribe", "resume": [{"symbol": SYMBOL, "seq": seq}], "id": 1}));
    assert_eq!(client.recv()["type"], "subscribed");
    let resumed = client.recv();
    assert_eq!(resumed["type"], "resumed", "every event after its seq, no snapshot: {resumed}");
    assert_eq!(resumed["after_seq"].as_u64(), Some(seq), "{resumed}");
    client
}

#[test]
fn sigterm_on_an_edge_hands_its_clients_to_the_other_on_the_same_port_with_nothing_missed() {
    let nats = NatsServer::start();
    let (_publisher, _) = cluster_process("publisher", &nats.url());
    let shared = TempConfig::new("share-port", "[server]\nshare_port = true\n");
    let (mut edge_a, addr) = cluster_process_on("edge", &nats.url(), "127.0.0.1:0", &["--config", shared.path()]);
    let (_edge_b, _) = cluster_process_on("edge", &nats.url(), &addr.to_string(), &["--config", shared.path()]);
    // Clients through the one address: the kernel spreads them over both edges. Each holds a
    // seq of the symbol once it has had a few events (after a gap and snapshot if the edge had
    // not read the symbol yet when it subscribed).
    let clients: Vec<(TestClient, u64)> = (0..16)
        .map(|_| {
            let mut client = TestClient::connect(addr);
            let (_, snaps) = client.subscribe(&[SYMBOL]);
            let mut last = snaps[0]["seq"].as_u64().unwrap();
            let mut events = 0;
            while events < 5 {
                let msg = client.recv();
                if msg["type"] == "snapshot" {
                    last = msg["seq"].as_u64().unwrap();
                } else if is_event(&msg) {
                    last = msg["seq"].as_u64().unwrap();
                    events += 1;
                }
            }
            (client, last)
        })
        .collect();
    // Each client reads on its own thread, as a real one does: a client of edge A reads what A
    // sent, then 1001, reconnects at once and resumes; one of edge B reads on. Either way every
    // seq comes, once, in order, until past what B had when A was gone.
    let stop_at = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let readers: Vec<_> = clients
        .into_iter()
        .map(|(mut client, mut last)| {
            let stop_at = stop_at.clone();
            std::thread::spawn(move || {
                let mut reconnected = false;
                while last < stop_at.load(std::sync::atomic::Ordering::Relaxed) {
                    match next(&mut client) {
                        Ok(msg) if is_event(&msg) => {
                            let seq = msg["seq"].as_u64().unwrap();
                            assert_eq!(seq, last + 1, "contiguous, nothing missed: {msg}");
                            last = seq;
                        }
                        Ok(msg) => assert!(msg["type"] != "gap" && msg["type"] != "snapshot", "{msg}"),
                        Err(code) => {
                            assert!(!reconnected, "closed twice");
                            assert_eq!(code, 1001, "a planned stop says going away");
                            client = reconnect_and_resume(addr, last);
                            reconnected = true;
                        }
                    }
                }
                reconnected
            })
        })
        .collect();
    edge_a.signal("TERM");
    assert!(edge_a.exit_status(support::PATIENCE).success(), "a planned stop exits 0");
    // Edge B's newest seq now is past anything edge A sent.
    let mut probe = TestClient::connect(addr);
    let head = probe.subscribe(&[SYMBOL]).1[0]["seq"].as_u64().unwrap();
    stop_at.store(head + 20, std::sync::atomic::Ordering::Relaxed);
    let (mut moved, mut stayed) = (0, 0);
    for reader in readers {
        if reader.join().expect("every client kept the contract") { moved += 1 } else { stayed += 1 }
    }
    assert!(moved > 0, "some clients were on the edge that stopped");
    assert!(stayed > 0, "some clients were on the edge that stayed");
}

#[test]
fn a_flood_of_bad_bus_messages_is_counted_every_one_and_logged_once_a_second() {
    use std::io::Write;
    let nats = NatsServer::start();
    let (edge, addr) = cluster_process("edge", &nats.url());
    // A stray writer on the stream's subjects: 200 truncated messages in a burst.
    let mut raw = std::net::TcpStream::connect(nats.addr()).unwrap();
    let started = std::time::Instant::now();
    for _ in 0..200 {
        raw.write_all(b"PUB tickgate.ticks.AAPL 3\r\n\x02\x00\x01\r\n").unwrap();
    }
    raw.write_all(b"PING\r\n").unwrap();
    let series = r#"tickgate_bus_rejected_total{reason="truncated"}"#;
    tickgate_testkit::eventually("every reject is counted", || tickgate_testkit::metric(addr, series) == Some(200.0));
    let lines = edge.stdout().lines().filter(|l| l.contains("bus message rejected")).count();
    let seconds = started.elapsed().as_secs() as usize;
    assert!(lines >= 1 && lines <= seconds + 1, "{lines} lines in {seconds} s:\n{}", edge.stdout());
}

#[test]
fn a_publisher_stopped_while_nats_is_gone_exits_at_once_and_says_what_it_did_not_publish() {
    let mut nats = NatsServer::start();
    let (mut publisher, _) = cluster_process("publisher", &nats.url());
    std::thread::sleep(std::time::Duration::from_millis(300));
    nats.kill();
    // Its publishes time out; it then waits for NATS, asking the stream again and again.
    publisher.wait_for_line("cannot read the stream; retrying");
    publisher.signal("TERM");
    let status = publisher.exit_status(std::time::Duration::from_secs(10));
    assert!(status.success(), "{status:?}; output:\n{}", publisher.stdout());
    assert!(publisher.stdout().contains("the ticks still queued are not published"), "{}", publisher.stdout());
}

#[test]
fn an_edge_that_starts_on_a_long_stream_reads_all_of_it_without_overrunning_its_client() {
    let nats = NatsServer::start();
    let (publisher, publisher_addr) = cluster_process_at_rate("publisher", &nats.url(), "127.0.0.1:0", "20000", &[]);
    // More than the NATS client's buffer of 65,536 messages, all to be replayed at once.
    let published = 70_000.0;
    tickgate_testkit::eventually("the stream holds 70,000 ticks", || {
        tickgate_testkit::metric(publisher_addr, "tickgate_bus_published_total").unwrap_or(0.0) >= published
    });
    let not_published = tickgate_testkit::metric(publisher_addr, "tickgate_bus_publish_dropped_total");
    assert_eq!(not_published, Some(0.0), "the publisher kept up: every tick it sequenced is on the stream");
    drop(publisher);
    let (edge, addr) = cluster_process("edge", &nats.url());
    tickgate_testkit::eventually("the edge read the whole stream", || {
        tickgate_testkit::metric(addr, "tickgate_bus_received_total").unwrap_or(0.0) >= published
    });
    assert_eq!(tickgate_testkit::metric(addr, "tickgate_bus_gaps_total"), Some(0.0), "nothing read was missing");
    assert!(!edge.stdout().contains("slow consumer"), "{}", edge.stdout());
}
