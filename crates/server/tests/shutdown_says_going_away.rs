//! Shutting the gateway down closes every client with 1001 "going away".

use tickgate_testkit::{TestClient, start_gateway};
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn every_client_gets_1001_on_shutdown() {
    let gateway = start_gateway(|_| {});
    let mut clients: Vec<TestClient> = (0..6).map(|_| TestClient::connect(gateway.local_addr())).collect();
    for c in &mut clients {
        c.subscribe(&["AAPL"]);
    }
    let stopper = std::thread::spawn(move || gateway.shutdown());
    for mut c in clients {
        let close = c.recv_close().expect("a close frame");
        assert_eq!(close.code, CloseCode::Away);
        assert_eq!(close.reason, "going away");
    }
    stopper.join().unwrap();
}
