//! A reactor or the ingest thread that ends unexpectedly takes the process down, loudly: every
//! client gets 1011 (after a `status` "down" when the feed is what died), `/healthz` and
//! `/readyz` answer 503 with the reason meanwhile, and the process exits with status 70 so
//! that its supervisor restarts it. Faults are injected through `TICKGATE_TEST_FAULT` and
//! SIGUSR2.

mod support;

use support::{PATIENCE, Started, TempConfig, Tickgate};
use tickgate_testkit::{TestClient, eventually, http_request, one_client_per_reactor};
use tungstenite::protocol::frame::coding::CloseCode;

/// Long drains, so that the health routes can be asked while clients still hold the process.
const CONFIG: &str = "[server]\npin_cores = false\nshutdown_grace_ms = 8000\n\n[limits]\nclose_linger_ms = 6000\n";

fn start_with_fault(fault: &str) -> (Tickgate, std::net::SocketAddr, TempConfig) {
    let config = TempConfig::new(fault, CONFIG);
    let (tickgate, addr) = Tickgate::start(
        &["--config", config.path(), "--listen", "127.0.0.1:0", "--reactors", "2", "--log-level", "info"],
        &[("TICKGATE_TEST_FAULT", fault)],
    );
    (tickgate, addr, config)
}

/// 503, with the failure in the body, on both health routes.
fn assert_unhealthy(addr: std::net::SocketAddr, reason: &str) {
    let mut health = String::new();
    eventually("/healthz answers 503", || {
        health = http_request(addr, "GET /healthz HTTP/1.1\r\n\r\n");
        health.starts_with("HTTP/1.1 503")
    });
    assert!(health.contains(reason), "{health}");
    let ready = http_request(addr, "GET /readyz HTTP/1.1\r\n\r\n");
    assert!(ready.starts_with("HTTP/1.1 503") && ready.contains(reason), "{ready}");
    let upgrade = http_request(
        addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(upgrade.starts_with("HTTP/1.1 503"), "no new client while failing: {upgrade}");
}

/// A subscribed client on each of the two reactors.
fn subscribed_clients(addr: std::net::SocketAddr) -> Vec<TestClient> {
    let mut clients = one_client_per_reactor(addr, 2);
    for client in &mut clients {
        client.subscribe(&["AAPL"]);
    }
    clients
}

fn assert_closed_with_1011(clients: &mut [TestClient]) {
    for client in clients {
        let close = client.recv_close().expect("a close frame");
        assert_eq!(close.code, CloseCode::Error, "{close:?}");
    }
}

/// Once the clients are gone, the process exits with 70 and says why on standard error.
fn assert_exits_70(mut tickgate: Tickgate, clients: Vec<TestClient>, failure: &str) {
    drop(clients);
    let status = tickgate.exit_status(PATIENCE);
    assert_eq!(status.code(), Some(70), "{status}");
    let stderr = tickgate.stderr();
    assert!(stderr.contains(&format!("tickgate: {failure}")), "{stderr}");
}

#[test]
fn a_reactor_that_panics_takes_the_process_down_with_1011_and_status_70() {
    let (tickgate, addr, _config) = start_with_fault("reactor-panic:1");
    let mut clients = subscribed_clients(addr);
    tickgate.signal("USR2");
    // The dead reactor's own client first: its connections are closed as it goes.
    let close = clients[1].recv_close().expect("a close frame");
    assert_eq!(close.code, CloseCode::Error, "{close:?}");
    // The client of reactor 0 has not read its close yet, so the process is still there.
    assert_unhealthy(addr, "reactor 1 stopped: panicked: injected fault");
    let close = clients[0].recv_close().expect("a close frame");
    assert_eq!(close.code, CloseCode::Error);
    assert_exits_70(tickgate, clients, "reactor 1 stopped: panicked: injected fault");
}

#[test]
fn a_reactor_whose_poll_fails_takes_the_process_down() {
    let (tickgate, addr, _config) = start_with_fault("reactor-poll:0");
    let mut clients = subscribed_clients(addr);
    tickgate.signal("USR2");
    assert_closed_with_1011(&mut clients);
    assert_exits_70(tickgate, clients, "reactor 0 stopped: poll failed: injected fault");
}

#[test]
fn when_the_ingest_thread_dies_clients_hear_the_feed_is_down_then_1011() {
    let (tickgate, addr, _config) = start_with_fault("ingest-panic");
    let mut clients = subscribed_clients(addr);
    tickgate.signal("USR2");
    let status = clients[0].recv_type("status");
    assert_eq!((status["feed"].as_str(), status["source"].as_str()), (Some("down"), Some("sim")), "{status}");
    assert_unhealthy(addr, "the ingest thread stopped: panicked: injected fault");
    assert_closed_with_1011(&mut clients);
    assert_exits_70(tickgate, clients, "the ingest thread stopped: panicked: injected fault");
}

/// A SIGTERM that arrives while the failure's stop is under way (a supervisor that stops what
/// its health check found failed) neither cuts the stop short nor hides the failure.
#[test]
fn a_sigterm_during_the_stop_after_a_failure_keeps_status_70() {
    let (mut tickgate, addr, _config) = start_with_fault("reactor-panic:1");
    let clients = subscribed_clients(addr);
    tickgate.signal("USR2");
    // The client of reactor 0 has not read its close: the stop is held open.
    assert_unhealthy(addr, "reactor 1 stopped: panicked: injected fault");
    tickgate.signal("TERM");
    tickgate.wait_for_line("already stopping after a failure");
    assert!(tickgate.running(), "the first signal after a failure lets the stop go on");
    assert_exits_70(tickgate, clients, "reactor 1 stopped: panicked: injected fault");
}

/// Clients that never take their 1011 hold the stop at most `server.shutdown_grace_ms`, not
/// their close linger, and not until the last-resort exit.
#[test]
fn clients_that_never_read_their_1011_do_not_hold_the_exit_past_the_grace() {
    let config = TempConfig::new(
        "short-grace",
        "[server]\npin_cores = false\nshutdown_grace_ms = 1000\n\n[limits]\nclose_linger_ms = 60000\n",
    );
    let (mut tickgate, addr) = Tickgate::start(
        &["--config", config.path(), "--listen", "127.0.0.1:0", "--reactors", "2", "--log-level", "info"],
        &[("TICKGATE_TEST_FAULT", "ingest-panic")],
    );
    let clients = subscribed_clients(addr);
    tickgate.signal("USR2");
    assert_eq!(tickgate.exit_status(PATIENCE).code(), Some(70));
    let stderr = tickgate.stderr();
    assert!(
        stderr.contains("tickgate: the ingest thread stopped") && !stderr.contains("did not finish in time"),
        "{stderr}"
    );
    drop(clients);
}

/// Too few descriptors for everything: at each limit the process either starts whole or exits
/// 1 with one line, and at one of them the line is a reactor's (the others already running).
#[test]
fn a_reactor_that_cannot_start_fails_the_start() {
    let config = TempConfig::new("hold", "[server]\npin_cores = false\nwrite_hold_max_us = 1000\n");
    let mut reactor_refused = Vec::new();
    for limit in 6..=40 {
        let mut command = support::with_open_files_limit(limit);
        command.args(["--config", config.path(), "--listen", "127.0.0.1:0", "--reactors", "2", "--log-level", "warn"]);
        let mut tickgate = Tickgate::spawn(command);
        match tickgate.started() {
            Started::Listening(_) => {
                tickgate.signal("TERM");
                assert!(tickgate.exit_status(PATIENCE).success(), "limit {limit}");
            }
            Started::Exited(status) => {
                let stderr = tickgate.stderr();
                assert_eq!(status.code(), Some(1), "limit {limit}: {stderr}");
                assert!(stderr.starts_with("tickgate: cannot ") && stderr.lines().count() == 1, "{stderr}");
                if stderr.starts_with("tickgate: cannot start reactor 1: Too many open files") {
                    reactor_refused.push(limit);
                }
            }
        }
    }
    assert!(!reactor_refused.is_empty(), "at some limit, reactor 1 alone could not start");
}

#[test]
fn without_the_fault_variable_sigusr2_is_not_a_hook() {
    let (mut tickgate, _addr) = Tickgate::start(&["--listen", "127.0.0.1:0", "--reactors", "1"], &[]);
    tickgate.signal("USR2");
    let status = tickgate.exit_status(PATIENCE);
    assert_eq!(status.code(), None, "killed by the signal's default action: {status}");
}
