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

/// A close that arrives behind more frames than one turn reads (the read allowance is cut in
/// the middle of the burst, which is all in the socket at once) is still answered, after a pong
/// for every ping before it, in order.
#[test]
fn a_close_behind_a_burst_of_pings_is_answered_after_every_pong() {
    use std::io::Write;
    use tickgate_testkit::{RawClient, client_frame};

    let gateway = start_gateway(|c| c.server.reactors = 1);
    let mut raw = RawClient::connect(gateway.local_addr());
    // Fewer than limits.message_burst (50): none is rate limited.
    let pings = 45u8;
    let mut burst: Vec<u8> = (0..pings).flat_map(|i| client_frame(0x89, &[i], true)).collect();
    burst.extend(client_frame(0x88, &[0x03, 0xe8, b'o', b'k'], true));
    raw.stream.write_all(&burst).unwrap();
    let mut pongs = Vec::new();
    let close = loop {
        match raw.read_frame().expect("a frame before the end") {
            (0xA, payload) => pongs.extend(payload),
            (0x8, payload) => break payload,
            // A broadcast (a feed's status) may come at any time.
            (0x1, _) => {}
            (opcode, payload) => panic!("unexpected frame {opcode:#x}: {}", String::from_utf8_lossy(&payload)),
        }
    };
    assert_eq!(pongs, (0..pings).collect::<Vec<u8>>(), "one pong per ping, in order, before the close");
    assert_eq!(close[..2], [0x03, 0xe8], "the close is echoed");
    assert_eq!(raw.read_frame(), None, "nothing after the close");
}
