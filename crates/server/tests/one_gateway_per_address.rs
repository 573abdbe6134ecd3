//! A second gateway on an address one already serves refuses to start instead of silently
//! sharing its clients, unless every gateway on it shares the port on purpose
//! (`server.share_port`). Two binaries started at the same moment: tickgate's
//! `one_process_per_port`.

use tickgate_server::{Gateway, StartError};
use tickgate_testkit::{eventually, start_gateway, test_config};

#[test]
fn a_second_gateway_on_the_same_port_fails_to_start() {
    let first = start_gateway(|_| {});
    let mut config = test_config();
    config.server.listen = first.local_addr();
    match Gateway::start(config) {
        Err(e @ StartError::Listen { .. }) => assert!(e.to_string().contains("in use"), "{e}"),
        other => panic!("expected a listen error, got {other:?}"),
    }
}

fn accepted(gateway: &Gateway) -> u64 {
    gateway.stats().reactors.iter().map(|r| r.counters.accepted.load(std::sync::atomic::Ordering::Relaxed)).sum()
}

#[test]
fn with_share_port_on_both_two_gateways_share_the_port_and_its_connections() {
    let first = start_gateway(|c| c.server.share_port = true);
    let mut config = test_config();
    config.server.listen = first.local_addr();
    config.server.share_port = true;
    let second = Gateway::start(config).expect("a second gateway joins a shared port");
    let _clients: Vec<std::net::TcpStream> =
        (0..64).map(|_| std::net::TcpStream::connect(first.local_addr()).unwrap()).collect();
    eventually("the two gateways accepted the 64 connections between them", || {
        let (a, b) = (accepted(&first), accepted(&second));
        a > 0 && b > 0 && a + b == 64
    });
}

#[test]
fn sharing_takes_every_process_of_the_port() {
    let exclusive = start_gateway(|_| {});
    let mut config = test_config();
    config.server.listen = exclusive.local_addr();
    config.server.share_port = true;
    assert!(matches!(Gateway::start(config), Err(StartError::Listen { .. })), "cannot join an exclusive port");

    let shared = start_gateway(|c| c.server.share_port = true);
    let mut config = test_config();
    config.server.listen = shared.local_addr();
    assert!(matches!(Gateway::start(config), Err(StartError::Listen { .. })), "an exclusive start refuses it");
}
