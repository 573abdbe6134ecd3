//! Two gateways started at the same moment on one port: exactly one serves it, the other exits
//! with status 1 and says why, every time.

mod support;

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::{BIN, PATIENCE, Started, Tickgate};

const ROUNDS: usize = 30;

#[test]
fn of_two_gateways_started_at_once_on_one_port_exactly_one_survives() {
    let began = Instant::now();
    for round in 0..ROUNDS {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let barrier = Arc::new(Barrier::new(2));
        let starts: Vec<_> = (0..2)
            .map(|_| {
                let (barrier, listen) = (barrier.clone(), listen.clone());
                std::thread::spawn(move || {
                    let mut command = Command::new(BIN);
                    command.args(["--listen", &listen, "--reactors", "2", "--log-level", "warn"]);
                    barrier.wait();
                    let mut tickgate = Tickgate::spawn(command);
                    let started = tickgate.started();
                    (tickgate, started)
                })
            })
            .collect();
        let mut outcomes: Vec<(Tickgate, Started)> = starts.into_iter().map(|s| s.join().unwrap()).collect();
        let listening = outcomes.iter().filter(|(_, s)| matches!(s, Started::Listening(_))).count();
        assert_eq!(listening, 1, "round {round}: exactly one listens on {listen}");
        for (tickgate, started) in &mut outcomes {
            match started {
                Started::Listening(addr) => {
                    assert_eq!(addr.port(), port);
                    // It serves, and only it: what it answers is its own.
                    let health = tickgate_testkit::http_request(*addr, "GET /healthz HTTP/1.1\r\n\r\n");
                    assert!(health.starts_with("HTTP/1.1 200"), "round {round}: {health}");
                    tickgate.signal("TERM");
                    assert!(tickgate.exit_status(PATIENCE).success());
                }
                Started::Exited(status) => {
                    assert_eq!(status.code(), Some(1), "round {round}: {}", tickgate.stderr());
                    let stderr = tickgate.stderr();
                    assert_eq!(stderr.lines().count(), 1, "round {round}: one line: {stderr}");
                    assert!(
                        stderr.starts_with(&format!("tickgate: cannot listen on {listen}: Address already in use")),
                        "round {round}: {stderr}"
                    );
                }
            }
        }
    }
    assert!(began.elapsed() < Duration::from_secs(300), "{ROUNDS} rounds took {:?}", began.elapsed());
}
