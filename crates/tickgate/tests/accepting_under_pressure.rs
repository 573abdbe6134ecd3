//! Connections waiting in the listen backlog are served even when no new one arrives to wake
//! the listener: after the process ran out of file descriptors (accept is retried on a timer),
//! and after a connect storm larger than one turn's accept allowance (the rest is accepted next
//! turn).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{PATIENCE, Started, Tickgate};

/// Sends a health check on a fresh connection, without waiting for the answer.
fn send_health_check(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("tcp connect");
    stream.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    stream
}

/// The status line of the answer, if one comes within `within`.
fn answer(stream: &mut TcpStream, within: Duration) -> Option<String> {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.lines().next().map(str::to_string)
}

#[test]
fn connections_waiting_for_a_descriptor_are_served_once_one_frees_up() {
    let mut command = support::with_open_files_limit(40);
    command.args(["--listen", "127.0.0.1:0", "--reactors", "1", "--log-level", "warn"]);
    let mut tickgate = Tickgate::spawn(command);
    let Started::Listening(addr) = tickgate.started() else { panic!("no start: {}", tickgate.stderr()) };

    // Idle connections until the process has no descriptor left to accept one more.
    let holders: Vec<TcpStream> = (0..60).map(|_| TcpStream::connect(addr).expect("tcp connect")).collect();
    tickgate.wait_for_line("accept failed");
    let mut waiting = send_health_check(addr);
    assert_eq!(answer(&mut waiting, Duration::from_millis(500)), None, "no descriptor, no answer yet");

    // Descriptors free up; nothing new arrives, yet the waiting check is answered.
    drop(holders);
    let freed = Instant::now();
    let status = answer(&mut waiting, PATIENCE);
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"), "{}", tickgate.stdout());
    assert!(freed.elapsed() < Duration::from_secs(5), "answered {:?} after the descriptors freed", freed.elapsed());
}

#[test]
fn a_backlog_larger_than_one_turn_is_accepted_without_new_arrivals() {
    let (tickgate, addr) = Tickgate::start(&["--listen", "127.0.0.1:0", "--reactors", "1", "--log-level", "warn"], &[]);
    // Stopped, the process accepts nothing: every connection lands in the backlog at once.
    tickgate.signal("STOP");
    let mut checks: Vec<TcpStream> = (0..700).map(|_| send_health_check(addr)).collect();
    tickgate.signal("CONT");
    for (i, check) in checks.iter_mut().enumerate() {
        assert_eq!(answer(check, PATIENCE).as_deref(), Some("HTTP/1.1 200 OK"), "check {i}");
    }
}
