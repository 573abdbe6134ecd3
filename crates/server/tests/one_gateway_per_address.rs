//! A second gateway on an address one already serves refuses to start instead of silently
//! sharing its clients.

use tickgate_server::{Gateway, StartError};
use tickgate_testkit::{start_gateway, test_config};

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
