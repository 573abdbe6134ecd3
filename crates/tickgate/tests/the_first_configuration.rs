//! The first configuration of docs/OPERATIONS.md, taken from the document itself: the shipped
//! tape next to a TCP upstream of one's own symbols, run by the binary. Both deliver on the
//! first try, nothing is rejected, and the gateway is ready before anything connects to the
//! (optional) listening source; a stray symbol's reject is logged with its name and source.

mod support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{BIN, PATIENCE, Tickgate};
use tickgate_testkit::{TestClient, http_request};

const OPERATIONS: &str = include_str!("../../../docs/OPERATIONS.md");
const TAPE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/tapes/sim-3s.jsonl.gz");

/// The TOML block under the heading "A first configuration".
fn documented_configuration() -> &'static str {
    let section = OPERATIONS.split("### A first configuration").nth(1).expect("the section exists");
    let block = section.split("```toml\n").nth(1).expect("a toml block");
    block.split("```").next().unwrap()
}

/// A folder holding the documented file, as config/first.toml, beside a tapes/ folder with the
/// shipped tape; the listening port replaced by a free one.
fn checkout_like_folder(port: u16) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("tickgate-first-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("config/tapes")).unwrap();
    std::fs::copy(TAPE, dir.join("config/tapes/sim-3s.jsonl.gz")).unwrap();
    let text = documented_configuration();
    assert!(text.contains("tcp_listen = \"127.0.0.1:7000\""), "{text}");
    let text = text.replace("127.0.0.1:7000", &format!("127.0.0.1:{port}"));
    let file = dir.join("config/first.toml");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_tape_and_a_tcp_source_of_ones_own_symbols_deliver_side_by_side() {
    let port = free_port();
    let (dir, file) = checkout_like_folder(port);
    // From another working folder: the tape's path is taken from the file's folder.
    let checked = Command::new(BIN).current_dir("/").arg("--check-config").arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "no warning for the documented file: {stderr}");

    let mut command = Command::new(BIN);
    command.current_dir("/").arg("--config").arg(&file).args(["--listen", "127.0.0.1:0", "--reactors", "1"]);
    let mut gateway = Tickgate::spawn(command);
    let addr = match gateway.started() {
        support::Started::Listening(addr) => addr,
        support::Started::Exited(status) => panic!("exited {status}: {}", gateway.stderr()),
    };
    // Ready on the tape alone: the listening source is optional.
    let deadline = Instant::now() + PATIENCE;
    let ready = loop {
        let answer = http_request(addr, "GET /readyz HTTP/1.1\r\n\r\n");
        if answer.starts_with("HTTP/1.1 200") || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains("\"not_delivering\":[\"desk\"]"), "the optional source is reported: {ready}");

    let mut client = TestClient::connect(addr);
    let welcome = &client.welcome;
    assert!(welcome.get("feed").is_none(), "an optional source down is no feed down: {welcome}");
    let (reply, _) = client.subscribe(&["DESK-A", "BTC-USD"]);
    assert_eq!(reply["symbols"].as_array().map(Vec::len), Some(2), "{reply}");

    let mut upstream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut desk, mut tape) = (false, false);
    let deadline = Instant::now() + PATIENCE;
    while !(desk && tape) {
        assert!(Instant::now() < deadline, "desk {desk}, tape {tape}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let line =
            format!("{{\"type\":\"trade\",\"symbol\":\"DESK-A\",\"price\":\"101.25\",\"size\":\"10\",\"ts\":{now}}}\n");
        upstream.write_all(line.as_bytes()).unwrap();
        let message = client.recv();
        match (message["type"].as_str(), message["symbol"].as_str()) {
            (Some("trade"), Some("DESK-A")) => {
                assert_eq!(message["price"], "101.25");
                desk = true;
            }
            (Some("trade" | "quote"), Some("BTC-USD")) => tape = true,
            _ => {}
        }
    }
    let log = gateway.stdout();
    assert!(!log.contains("upstream message rejected"), "{log}");
    assert!(!log.contains("configuration warning"), "{log}");
    // A symbol of nobody's: its reject's log line names it and the source.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let stray =
        format!("{{\"type\":\"trade\",\"symbol\":\"NOT-LISTED\",\"price\":\"1\",\"size\":\"1\",\"ts\":{now}}}\n");
    upstream.write_all(stray.as_bytes()).unwrap();
    gateway.wait_for_line("upstream message rejected");
    let line = gateway.stdout().lines().find(|l| l.contains("upstream message rejected")).unwrap().to_string();
    assert!(line.contains("NOT-LISTED") && line.contains("desk") && line.contains("unknown_symbol"), "{line}");
    gateway.signal("TERM");
    assert!(gateway.exit_status(PATIENCE).success());
    std::fs::remove_dir_all(&dir).ok();
}
