//! Exchange feeds over WebSocket, each from a local server speaking the exchange's protocol:
//! Binance (the gateway subscribes, maps trades and book tickers exactly, skips what it cannot
//! map, and reconnects when the exchange drops it) and Coinbase Exchange (ticker and matches
//! channels, with the upstream sequence gaps counted and hostile messages skipped).

use std::net::TcpListener;
use std::time::{SystemTime, UNIX_EPOCH};

use tickgate_testkit::{TestClient, eventually, http_request, start_gateway};
use tungstenite::Message;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Accepts the gateway's connection, checks its subscribe, and plays `messages`.
fn serve_once(listener: &TcpListener, messages: &[String]) -> tungstenite::WebSocket<std::net::TcpStream> {
    let (stream, _) = listener.accept().unwrap();
    let mut ws = tungstenite::accept(stream).unwrap();
    let subscribe = ws.read().unwrap().into_text().unwrap();
    assert_eq!(subscribe.as_str(), r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker"],"id":1}"#);
    ws.send(Message::text(r#"{"result":null,"id":1}"#)).unwrap();
    for m in messages {
        ws.send(Message::text(m.clone())).unwrap();
    }
    ws
}

#[test]
fn binance_trades_and_book_tickers_reach_subscribers_across_a_forced_disconnect() {
    let exchange = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/stream", exchange.local_addr().unwrap());
    let gateway = start_gateway(|c| {
        c.server.reactors = 1;
        c.feed.source = "binance".into();
        c.feed.exchange_url = Some(url);
        c.feed.exchange_symbols = vec!["BTCUSDT".into()];
        c.feed.aliases = [("BTCUSDT".to_string(), "BTC-USD".to_string())].into();
    });
    let addr = gateway.local_addr();
    let trade = |price: &str| {
        format!(
            r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{t},"s":"BTCUSDT","t":1,"p":"{price}","q":"0.00100000","T":{t},"m":true,"M":true}}}}"#,
            t = now_ms()
        )
    };
    let book = r#"{"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT","b":"64000.00000000","B":"1.50000000","a":"64000.50000000","A":"0.25000000"}}"#;
    let mut client = TestClient::connect(addr);
    client.subscribe(&["BTC-USD"]);
    let ws = serve_once(
        &exchange,
        &[trade("64000.01000000"), "garbage".into(), trade("64000.00100000"), book.into(), trade("64000.02000000")],
    );
    assert_eq!(client.recv_type("trade")["price"], "64000.01");
    let quote = client.recv_type("quote");
    assert_eq!((quote["bid"].as_str(), quote["ask_size"].as_str()), (Some("64000.00"), Some("0.25000000")));
    assert_eq!(client.recv_type("trade")["price"], "64000.02", "the inexact trade was skipped");
    // Binance pings every few minutes and drops a connection that does not answer.
    let mut ws = ws;
    ws.get_ref().set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    ws.send(Message::Ping(b"keepalive".to_vec().into())).unwrap();
    match ws.read() {
        Ok(Message::Pong(payload)) => assert_eq!(&payload[..], b"keepalive"),
        other => panic!("the gateway answers a ping with its pong, got {other:?}"),
    }
    // The exchange drops the connection; the gateway comes back and subscribes again.
    drop(ws);
    let mut ws = serve_once(&exchange, &[trade("64001.00000000")]);
    assert_eq!(client.recv_type("trade")["price"], "64001.00");
    // A binary message is skipped; one over the size limit cannot be skipped within the stream,
    // so the gateway counts it and connects again.
    ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    let _ = ws.send(Message::text("x".repeat(tickgate_feed::exchange::MAX_MESSAGE + 1)));
    let _ws = serve_once(&exchange, &[trade("64002.00000000")]);
    assert_eq!(client.recv_type("trade")["price"], "64002.00");
    drop(ws);
    eventually("the reconnects and the rejects are counted", || {
        let m = http_request(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        m.contains("tickgate_source_reconnects_total{source=\"binance\"} 2")
            && m.contains("tickgate_ticks_rejected_total{reason=\"malformed\",source=\"binance\"} 3")
            && m.contains("tickgate_ticks_rejected_total{reason=\"bad_decimal\",source=\"binance\"} 1")
    });
}

/// Coinbase Exchange's documented `match` example (BTC-USD, sequence 50), with `kind`, `price`,
/// `size`, and `trade_id` replaced (`sequence`, which on the real feed also counts the product's
/// other messages, is set a thousand times further on).
fn coinbase_match(kind: &str, trade_id: &str, product: &str, price: &str, size: &str) -> String {
    let sequence = trade_id.parse::<i64>().map_or_else(|_| trade_id.to_string(), |id| (id * 1000).to_string());
    format!(
        r#"{{"type":"{kind}","trade_id":{trade_id},"sequence":{sequence},"maker_order_id":"ac928c66-ca53-498f-9c13-a110027a60e8","taker_order_id":"132fb6ae-456b-4654-b4e0-d681ac05cea1","time":"2014-11-07T08:19:27.028459Z","product_id":"{product}","size":"{size}","price":"{price}","side":"sell"}}"#
    )
}

/// Coinbase Exchange's documented `ticker` example (ETH-USD), with the sequence and the best
/// bid and ask replaced.
fn coinbase_ticker(sequence: u64, bid: &str, bid_size: &str, ask: &str, ask_size: &str) -> String {
    format!(
        r#"{{"type":"ticker","sequence":{sequence},"product_id":"ETH-USD","price":"1285.22","open_24h":"1310.79","volume_24h":"245532.79269678","low_24h":"1280.52","high_24h":"1313.8","volume_30d":"9788783.60117027","best_bid":"{bid}","best_bid_size":"{bid_size}","best_ask":"{ask}","best_ask_size":"{ask_size}","side":"buy","time":"2022-10-19T23:28:22.061769Z","trade_id":370843401,"last_size":"11.4396987"}}"#
    )
}

#[test]
fn coinbase_tickers_and_matches_reach_subscribers_exactly_with_gaps_counted_and_hostile_messages_skipped() {
    let exchange = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", exchange.local_addr().unwrap());
    let gateway = start_gateway(|c| {
        c.server.reactors = 1;
        c.feed.source = "coinbase".into();
        c.feed.exchange_url = Some(url);
        c.feed.exchange_symbols = vec!["BTC-USD".into(), "ETH-USD".into()];
    });
    let addr = gateway.local_addr();
    let mut client = TestClient::connect(addr);
    client.subscribe(&["BTC-USD", "ETH-USD"]);

    let (stream, _) = exchange.accept().unwrap();
    let mut ws = tungstenite::accept(stream).unwrap();
    let subscribe: serde_json::Value = serde_json::from_str(ws.read().unwrap().into_text().unwrap().as_str()).unwrap();
    assert_eq!(
        subscribe,
        serde_json::json!({"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channels": ["ticker", "matches", "heartbeat"]})
    );
    let long_name = "X".repeat(10_000);
    let messages = [
        r#"{"type":"subscriptions","channels":[{"name":"ticker","product_ids":["BTC-USD","ETH-USD"]},{"name":"matches","product_ids":["BTC-USD","ETH-USD"]}]}"#.to_string(),
        // The documented ticker, as it is.
        coinbase_ticker(37_475_248_783, "1285.04", "0.46688654", "1285.27", "1.56637040"),
        coinbase_match("last_match", "49", "BTC-USD", "400.20", "0.10000000"),
        // The documented match, as it is.
        coinbase_match("match", "50", "BTC-USD", "400.23", "5.23512"),
        "garbage".into(),
        coinbase_match("match", "51", "BTC-USD", "400.231", "1"),
        coinbase_match("match", "51", "BTC-USD", "400.24", "0.001"),
        // A type not taken (a refused subscription is another matter: see upstream_liveness.rs).
        r#"{"type":"status","products":[]}"#.into(),
        coinbase_match("match", "52", "DOGE-EUR", "0.1", "1"),
        // Trades 52, 53 and 54 never come: a gap of three.
        coinbase_match("match", "55", "BTC-USD", "400.30", "1.5"),
        coinbase_match("match", "53", "BTC-USD", "399.00", "1"),
        coinbase_match("match", "-5", "BTC-USD", "400.30", "1"),
        coinbase_match("match", "56", "BTC-USD", "-1.00", "1"),
        r#"{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD","time":"2014-11-07T08:19:28.464459Z"}"#.into(),
        coinbase_ticker(37_475_248_784, "1285.05", "0.5", "1285.26", "2"),
        coinbase_match("match", "56", &long_name, "400.31", "1"),
        coinbase_match("match", "56", "BTC-USD", "400.31", "0.00000001"),
    ];
    for m in &messages {
        ws.send(Message::text(m.clone())).unwrap();
    }
    // Coinbase sends text only: a binary message is counted as malformed and skipped.
    ws.send(Message::binary(vec![0xff, 0x00, 0x7b])).unwrap();

    let mut received = Vec::new();
    while received.len() < 7 {
        let m = client.recv();
        let field = |name: &str| m[name].as_str().unwrap_or_default().to_string();
        match m["type"].as_str() {
            Some("trade") => {
                received.push(format!("trade {} {} {} ts={}", field("symbol"), field("price"), field("size"), m["ts"]))
            }
            Some("quote") => received.push(format!(
                "quote {} {} {} {} {} ts={}",
                field("symbol"),
                field("bid"),
                field("bid_size"),
                field("ask"),
                field("ask_size"),
                m["ts"]
            )),
            _ => {}
        }
    }
    assert_eq!(
        received,
        [
            "quote ETH-USD 1285.04 0.46688654 1285.27 1.56637040 ts=1666222102061769000",
            "trade BTC-USD 400.20 0.10000000 ts=1415348367028459000",
            "trade BTC-USD 400.23 5.23512000 ts=1415348367028459000",
            "trade BTC-USD 400.24 0.00100000 ts=1415348367028459000",
            "trade BTC-USD 400.30 1.50000000 ts=1415348367028459000",
            "quote ETH-USD 1285.05 0.50000000 1285.26 2.00000000 ts=1666222102061769000",
            "trade BTC-USD 400.31 0.00000001 ts=1415348367028459000",
        ]
    );
    let expected = [
        "tickgate_upstream_gaps_total{source=\"coinbase\"} 3",
        "tickgate_ticks_ingested_total{source=\"coinbase\"} 7",
        "tickgate_ticks_rejected_total{reason=\"malformed\",source=\"coinbase\"} 2",
        "tickgate_ticks_rejected_total{reason=\"bad_decimal\",source=\"coinbase\"} 1",
        "tickgate_ticks_rejected_total{reason=\"unknown_type\",source=\"coinbase\"} 1",
        "tickgate_ticks_rejected_total{reason=\"unknown_symbol\",source=\"coinbase\"} 2",
        "tickgate_ticks_rejected_total{reason=\"seq_backwards\",source=\"coinbase\"} 1",
        "tickgate_ticks_rejected_total{reason=\"wrong_type\",source=\"coinbase\"} 1",
        "tickgate_ticks_rejected_total{reason=\"non_positive_price\",source=\"coinbase\"} 1",
        "tickgate_source_reconnects_total{source=\"coinbase\"} 0",
    ];
    eventually("the gap and every reject are counted", || {
        let metrics = http_request(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        expected.iter().all(|line| metrics.lines().any(|l| l == *line))
    });
    let ready = http_request(addr, "GET /readyz HTTP/1.1\r\n\r\n");
    assert!(ready.contains("\"upstream_gaps\":3") && ready.contains("\"connected\":true"), "{ready}");
    drop(ws);
}
