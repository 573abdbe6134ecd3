//! A cluster of tickgate processes on a real NATS JetStream: a publisher killed with SIGKILL
//! and started again never reuses or lowers a seq, and its edges' clients are told; NATS that
//! cannot be reached or refuses the credentials is one clear line and a non-zero exit.

mod support;

use serde_json::Value;
use support::{Started, Tickgate};
use tickgate_testkit::TestClient;
use tickgate_testkit::nats::NatsServer;

const SYMBOL: &str = "AAPL";

fn cluster_process(role: &str, url: &str) -> (Tickgate, std::net::SocketAddr) {
    Tickgate::start(
        &[
            "--bus-role",
            role,
            "--bus-url",
            url,
            "--listen",
            "127.0.0.1:0",
            "--reactors",
            "1",
            "--sim-symbols",
            "5",
            "--sim-rate",
            "2000",
        ],
        &[],
    )
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
            // Before the edge has read anything, its snapshot is empty (seq 0).
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
        assert!(!stderr.contains("wrong@"), "no password in the message: {stderr}");
    }
}
