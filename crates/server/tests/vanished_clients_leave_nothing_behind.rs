//! A client that disappears (reset, half-close, plain drop) is cleaned up completely.

use std::net::Shutdown;
use std::sync::atomic::Ordering;

use tickgate_testkit::{TestClient, eventually, start_gateway};

fn open_and_subscribed(gateway: &tickgate_server::Gateway) -> (u64, u64) {
    let stats = &gateway.stats().reactors;
    (
        stats.iter().map(|r| r.connections.load(Ordering::Relaxed)).sum(),
        stats.iter().map(|r| r.subscriptions.load(Ordering::Relaxed)).sum(),
    )
}

#[test]
fn reset_half_closed_and_dropped_clients_are_forgotten() {
    let gateway = start_gateway(|_| {});
    let symbols = ["AAPL", "MSFT", "NVDA"];
    let mut keeper = TestClient::connect(gateway.local_addr());
    keeper.subscribe(&symbols);
    for way in 0..3 {
        let mut clients: Vec<TestClient> = (0..10).map(|_| TestClient::connect(gateway.local_addr())).collect();
        for c in &mut clients {
            c.subscribe(&symbols);
        }
        eventually("subscriptions counted", || open_and_subscribed(&gateway) == (11, 33));
        for c in clients {
            let stream = c.ws.get_ref();
            match way {
                0 => {
                    // Reset: linger 0 makes close send RST.
                    socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO)).unwrap();
                }
                1 => stream.shutdown(Shutdown::Write).unwrap(),
                _ => {}
            }
            drop(c);
        }
        eventually("vanished clients removed with their subscriptions", || open_and_subscribed(&gateway) == (1, 3));
    }
    // The survivor still receives.
    assert!(symbols.contains(&keeper.recv_type("quote")["symbol"].as_str().unwrap()));
}
