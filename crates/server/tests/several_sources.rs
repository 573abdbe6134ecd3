//! Several named sources feeding one configured universe: each source's ticks come out exact
//! under its own name in metrics and /readyz; an upstream's own sequence gap reaches the
//! symbol's subscribers as an `upstream_gap` message just before the tick that revealed it; a
//! symbol the universe does not have is added when so configured (until the reserved room runs
//! out); and one source going down is told to clients without disturbing the other.

use std::io::Write;
use std::net::{TcpListener, TcpStream};

use serde_json::{Value, json};
use tickgate_server::config::{SourceConfig, SymbolConfig};
use tickgate_testkit::{TestClient, eventually, http_request, metric, start_gateway, trade_line};

fn tcp_source(name: &str, upstream: &TcpListener) -> SourceConfig {
    SourceConfig { tcp_connect: Some(upstream.local_addr().unwrap()), ..SourceConfig::new(name, "tcp") }
}

fn accept(listener: &TcpListener) -> TcpStream {
    listener.accept().unwrap().0
}

/// The next message that is not a `status` (sources come up in either order).
fn next_event(client: &mut TestClient) -> Value {
    loop {
        let msg = client.recv();
        if msg["type"] != "status" {
            return msg;
        }
    }
}

#[test]
fn two_sources_one_universe_gaps_announced_symbols_added() {
    let equities = TcpListener::bind("127.0.0.1:0").unwrap();
    let crypto = TcpListener::bind("127.0.0.1:0").unwrap();
    let gateway = start_gateway(|c| {
        c.server.reactors = 1;
        c.universe.symbols = vec![
            SymbolConfig { name: "AAPL".into(), price_scale: 2, size_scale: 0 },
            SymbolConfig { name: "BTC-USD".into(), price_scale: 2, size_scale: 8 },
        ];
        c.universe.unknown_symbols = "add".into();
        c.universe.added_price_scale = 4;
        c.universe.added_size_scale = 2;
        c.universe.max_added_symbols = 1;
        let mut crypto_source = tcp_source("crypto", &crypto);
        crypto_source.aliases.insert("XBTUSD".into(), "BTC-USD".into());
        c.feed.sources = vec![tcp_source("equities", &equities), crypto_source];
    });
    let addr = gateway.local_addr();
    let mut equities_feed = accept(&equities);
    let mut crypto_feed = accept(&crypto);
    let mut client = TestClient::connect(addr);
    client.subscribe(&["AAPL", "BTC-USD"]);

    equities_feed.write_all(trade_line("AAPL", 1, "187.12", "100").as_bytes()).unwrap();
    assert_eq!(next_event(&mut client)["price"], "187.12");
    crypto_feed.write_all(trade_line("XBTUSD", 10, "64000.5", "0.00012345").as_bytes()).unwrap();
    let first = next_event(&mut client);
    assert_eq!((first["symbol"].as_str(), first["seq"].as_u64()), (Some("BTC-USD"), Some(1)));
    assert_eq!(first["size"], "0.00012345", "exact at the configured scale");
    // Upstream seq 11 and 12 never come: the subscriber is told before the next tick.
    crypto_feed.write_all(trade_line("BTC-USD", 13, "64001", "1").as_bytes()).unwrap();
    assert_eq!(
        next_event(&mut client),
        json!({"type":"upstream_gap","symbol":"BTC-USD","source":"crypto","after_seq":1,"missed":2})
    );
    let after = next_event(&mut client);
    assert_eq!((after["type"].as_str(), after["seq"].as_u64()), (Some("trade"), Some(2)), "no hole in tickgate's seq");

    // A bad message never adds its symbol (it would take the one place left)...
    crypto_feed.write_all(trade_line("JUNK-USD", 1, "1.000001", "1").as_bytes()).unwrap();
    eventually("the bad message counted", || {
        metric(addr, "tickgate_ticks_rejected_total{reason=\"bad_decimal\",source=\"crypto\"}") == Some(1.0)
    });
    // ...a good one with an unknown symbol adds it with the configured scales, then it is
    // served like any other.
    crypto_feed.write_all(trade_line("SOL-USD", 1, "151.2345", "3.5").as_bytes()).unwrap();
    eventually("the new symbol is listed", || {
        let mut lister = TestClient::connect(addr);
        lister.send_json(json!({"op": "list_symbols"}));
        let list = lister.recv_type("symbols");
        list["symbols"].as_array().unwrap().iter().any(|s| s == "SOL-USD")
    });
    let (reply, snapshots) = client.subscribe(&["SOL-USD"]);
    assert_eq!(reply["symbols"], json!(["SOL-USD"]));
    // The symbol is listed as soon as it is added; its first tick follows through the feed, so
    // it is in the snapshot or comes right after it.
    let first_sol =
        if snapshots[0]["trade"].is_null() { next_event(&mut client) } else { snapshots[0]["trade"].clone() };
    assert_eq!((first_sol["price"].as_str(), first_sol["seq"].as_u64()), (Some("151.2345"), Some(1)));
    crypto_feed.write_all(trade_line("SOL-USD", 2, "151.25", "0.01").as_bytes()).unwrap();
    let sol = next_event(&mut client);
    assert_eq!(
        (sol["symbol"].as_str(), sol["price"].as_str(), sol["size"].as_str()),
        (Some("SOL-USD"), Some("151.2500"), Some("0.01"))
    );
    // The reserved room (one symbol) is used up: the next new name is refused and counted.
    crypto_feed.write_all(trade_line("DOGE-USD", 1, "0.1", "1").as_bytes()).unwrap();
    eventually("universe_full counted", || {
        metric(addr, "tickgate_ticks_rejected_total{reason=\"universe_full\",source=\"crypto\"}") == Some(1.0)
    });
    assert_eq!(metric(addr, "tickgate_ticks_ingested_total{source=\"equities\"}"), Some(1.0));
    assert_eq!(metric(addr, "tickgate_ticks_ingested_total{source=\"crypto\"}"), Some(4.0));
    assert_eq!(metric(addr, "tickgate_upstream_gaps_total{source=\"crypto\"}"), Some(2.0));
    eventually("the upstream gap message counted", || {
        metric(addr, "tickgate_gaps_sent_total{reason=\"upstream\"}") == Some(1.0)
    });

    // One source goes away: its name is in the status, /readyz says which, the other goes on.
    drop(equities_feed);
    let down = client.recv_type("status");
    assert_eq!((down["feed"].as_str(), down["source"].as_str()), (Some("down"), Some("equities")));
    let readyz = http_request(addr, "GET /readyz HTTP/1.1\r\n\r\n");
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    let body: Value = serde_json::from_str(readyz.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let sources = body["feed"]["sources"].as_array().unwrap();
    assert_eq!((sources[0]["name"].as_str(), sources[0]["connected"].as_bool()), (Some("equities"), Some(false)));
    assert_eq!((sources[1]["name"].as_str(), sources[1]["connected"].as_bool()), (Some("crypto"), Some(true)));
    crypto_feed.write_all(trade_line("BTC-USD", 14, "64002", "1").as_bytes()).unwrap();
    assert_eq!(client.recv_type("trade")["price"], "64002.00");
}
