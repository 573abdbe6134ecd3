//! A client that closes gets the close frame echoed (RFC 6455 §5.5.1) before the TCP connection
//! ends, and its connection is freed.

use std::sync::atomic::Ordering;

use tickgate_testkit::{TestClient, eventually, start_gateway};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn the_server_echoes_the_clients_close() {
    let gateway = start_gateway(|_| {});
    let mut client = TestClient::connect(gateway.local_addr());
    client.subscribe(&["AAPL"]);
    client.ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).unwrap();
    let echoed = client.recv_close().expect("the server's close frame");
    assert_eq!(echoed.code, CloseCode::Normal);
    eventually("the connection is freed", || {
        gateway.stats().reactors.iter().map(|r| r.connections.load(Ordering::Relaxed)).sum::<u64>() == 0
    });
}
