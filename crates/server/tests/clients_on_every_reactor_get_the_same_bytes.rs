//! Every reactor sends the same events, with the same sequence numbers, byte for byte.

use std::collections::BTreeMap;

use tickgate_testkit::{TestClient, one_client_per_reactor, start_gateway};

fn collect(client: &mut TestClient, symbol: &str, from_seq: u64, count: usize) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    while out.len() < count {
        let raw = client.recv_raw();
        let msg: serde_json::Value = serde_json::from_str(&raw).unwrap();
        if msg["symbol"] == symbol && (msg["type"] == "trade" || msg["type"] == "quote") {
            let seq = msg["seq"].as_u64().unwrap();
            if seq >= from_seq && out.len() < count {
                out.insert(seq, raw);
            }
        }
    }
    out
}

#[test]
fn same_events_same_seq_same_bytes_on_every_reactor() {
    let gateway = start_gateway(|c| {
        c.server.reactors = 2;
        c.sim.symbols = 5;
        c.sim.rate = 5_000.0;
    });
    let mut clients = one_client_per_reactor(gateway.local_addr(), 2);
    assert_ne!(clients[0].reactor(), clients[1].reactor());
    let symbol = "AAPL";
    let mut start = 0;
    for client in &mut clients {
        let (_, snaps) = client.subscribe(&[symbol]);
        start = start.max(snaps[0]["seq"].as_u64().unwrap() + 1);
    }
    let streams: Vec<_> = clients.iter_mut().map(|c| collect(c, symbol, start, 200)).collect();
    assert_eq!(streams[0].len(), 200);
    assert_eq!(streams[0], streams[1], "identical bytes for identical seq");
    let seqs: Vec<u64> = streams[0].keys().copied().collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "contiguous");
}
