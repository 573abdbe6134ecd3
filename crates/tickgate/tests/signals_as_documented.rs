//! Signals do what docs/OPERATIONS.md says: SIGHUP reloads the TLS certificate (a bad new pair
//! keeps the old one) and is logged and ignored without TLS, SIGTERM and SIGINT close every client with 1001 and exit 0, from the first moment
//! the port accepts, with no warning on the way.

mod support;

use std::time::{Duration, Instant};

use support::{PATIENCE, TempConfig, Tickgate};
use tickgate_testkit::{TestClient, http_request};
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn sighup_is_logged_and_ignored() {
    let (mut tickgate, addr) = Tickgate::start(&["--listen", "127.0.0.1:0", "--reactors", "2"], &[]);
    let mut client = TestClient::connect(addr);
    client.subscribe(&["AAPL", "BTC-USD"]);
    tickgate.signal("HUP");
    tickgate.wait_for_line("SIGHUP ignored: TLS is off");
    // Still serving: the stream goes on, health checks pass, new clients get in.
    client.recv_type("trade");
    assert!(tickgate.running());
    assert!(http_request(addr, "GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    TestClient::connect(addr).subscribe(&["AAPL"]);
    tickgate.signal("INT");
    assert_eq!(client.recv_close().expect("a close frame").code, CloseCode::Away);
    assert!(tickgate.exit_status(PATIENCE).success());
}

#[test]
fn sighup_reloads_the_tls_certificate_and_keeps_the_old_one_when_the_new_is_bad() {
    let dir = std::env::temp_dir().join(format!("tickgate-sighup-{}", std::process::id()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/make-test-cert.sh");
    let made = std::process::Command::new("bash").arg(script).arg(&dir).output().expect("bash runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let config = dir.join("tickgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nreactors = 2\n\
             [tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            dir.join("chain.pem"),
            dir.join("key.pem")
        ),
    )
    .unwrap();
    let (mut tickgate, addr) = Tickgate::start(&["--config", config.to_str().unwrap()], &[]);
    tickgate.wait_for_line("tickgate listening: WebSocket wss://");
    // A new pair from the script: taken.
    let remade = std::process::Command::new("bash").arg(script).arg(&dir).output().expect("bash runs");
    assert!(remade.status.success());
    tickgate.signal("HUP");
    tickgate.wait_for_line("TLS certificate reloaded");
    // A key that is not PEM: refused, the process serves on.
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    tickgate.signal("HUP");
    tickgate.wait_for_line("TLS certificate NOT reloaded");
    let log = tickgate.stdout();
    let line = log.lines().find(|l| l.contains("NOT reloaded")).unwrap_or_default();
    assert!(line.contains("key.pem"), "the log names the file: {line}");
    assert!(tickgate.running());
    let plain = http_request(addr, "GET /healthz HTTP/1.1\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 400"), "the TLS port still answers: {plain}");
    tickgate.signal("TERM");
    assert!(tickgate.exit_status(PATIENCE).success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sigterm_as_soon_as_the_port_accepts_still_closes_with_1001() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut command = std::process::Command::new(support::BIN);
    command.args(["--listen", &listen, "--reactors", "2", "--log-level", "warn"]);
    let mut tickgate = Tickgate::spawn(command);
    let addr = listen.parse().unwrap();
    // Connect the moment the port accepts, without waiting for the line that says so.
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the port never accepted");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut client = TestClient::connect(addr);
    tickgate.signal("TERM");
    assert_eq!(client.recv_close().expect("a close frame").code, CloseCode::Away);
    assert!(tickgate.exit_status(PATIENCE).success());
}

#[test]
fn a_second_sigterm_during_the_shutdown_exits_at_once_with_130() {
    // A client that never reads its close would hold the shutdown for half a minute.
    let config = TempConfig::new(
        "long-drain",
        "[server]\npin_cores = false\nshutdown_grace_ms = 30000\n\n[limits]\nclose_linger_ms = 30000\n",
    );
    let (mut tickgate, addr) =
        Tickgate::start(&["--config", config.path(), "--listen", "127.0.0.1:0", "--reactors", "2"], &[]);
    let holder = TestClient::connect(addr);
    tickgate.signal("TERM");
    tickgate.wait_for_line("shutting down");
    assert!(tickgate.running(), "the first SIGTERM waits for the client");
    let second = Instant::now();
    tickgate.signal("TERM");
    assert_eq!(tickgate.exit_status(PATIENCE).code(), Some(130));
    assert!(second.elapsed() < Duration::from_secs(10), "exited {:?} after the second SIGTERM", second.elapsed());
    drop(holder);
}

#[test]
fn a_sigterm_logs_no_failed_accept() {
    // The reactors share one listening socket; the first to stop shuts it down, and the others'
    // accept then fails (EINVAL) on the way out: no failure, nothing to warn about. Several
    // reactors and several stops, for the race to show.
    for _ in 0..5 {
        let (mut tickgate, addr) = Tickgate::start(&["--listen", "127.0.0.1:0", "--reactors", "4"], &[]);
        let mut client = TestClient::connect(addr);
        client.subscribe(&["AAPL"]);
        tickgate.signal("TERM");
        assert_eq!(client.recv_close().expect("a close frame").code, CloseCode::Away);
        assert!(tickgate.exit_status(PATIENCE).success());
        tickgate.wait_for_line("INFO stopped");
        let log = tickgate.stdout();
        assert!(!log.contains("accept failed"), "a clean stop warned of a failed accept:\n{log}");
    }
}
