//! A Binance-style exchange feed over WebSocket: the gateway subscribes, maps trades and book
//! tickers exactly, skips what it cannot map, and reconnects when the exchange drops it.

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
    // The exchange drops the connection; the gateway comes back and subscribes again.
    drop(ws);
    let _ws = serve_once(&exchange, &[trade("64001.00000000")]);
    assert_eq!(client.recv_type("trade")["price"], "64001.00");
    eventually("the reconnect and the rejects are counted", || {
        let m = http_request(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        m.contains("tickgate_source_reconnects_total{source=\"binance\"} 1")
            && m.contains("tickgate_ticks_rejected_total{reason=\"malformed\",source=\"binance\"} 1")
            && m.contains("tickgate_ticks_rejected_total{reason=\"bad_decimal\",source=\"binance\"} 1")
    });
}
