//! The `tickgate` binary as an operator runs it: it prints where to connect, closes every
//! client with 1001 on SIGTERM and exits 0, and checks configuration files.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tickgate_testkit::TestClient;
use tungstenite::protocol::frame::coding::CloseCode;

const BIN: &str = env!("CARGO_BIN_EXE_tickgate");

#[test]
fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--reactors", "2", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tickgate starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").unwrap();
    let addr: SocketAddr = first
        .split("ws://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/ws"))
        .unwrap_or_else(|| panic!("the first line says where to connect: {first}"))
        .parse()
        .unwrap();
    let second = lines.next().expect("a line").unwrap();
    assert_eq!(second, format!("open http://{addr}"));

    let mut clients: Vec<TestClient> = (0..4).map(|_| TestClient::connect(addr)).collect();
    for c in &mut clients {
        c.subscribe(&["AAPL", "BTC-USD"]);
    }
    let signalled = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    for mut c in clients {
        let close = c.recv_close().expect("a close frame");
        assert_eq!(close.code, CloseCode::Away);
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(8), "exits within the shutdown grace");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn check_config_accepts_the_default_file_and_names_the_bad_key() {
    let default = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/default.toml");
    let ok = Command::new(BIN).args(["--check-config", default]).output().unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("listen"));

    let bad = std::env::temp_dir().join(format!("tickgate-bad-{}.toml", std::process::id()));
    std::fs::write(&bad, "[limits]\nmax_message_size = 10\n").unwrap();
    let out = Command::new(BIN).args(["--check-config", bad.to_str().unwrap()]).output().unwrap();
    let _ = std::fs::remove_file(&bad);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("limits.max_message_size"), "{stderr}");
}
