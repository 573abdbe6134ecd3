//! A TCP upstream in tickgate's schema: good lines come out exact, bad ones are counted and
//! skipped without disturbing anything, and an upstream that dies and comes back is reconnected
//! to, with the outage told to clients (`status` messages) and visible on /readyz.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use tickgate_testkit::{TestClient, eventually, http_request, metric, now_ns, start_gateway, trade_line};

fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(false).unwrap();
    listener.accept().unwrap().0
}

#[test]
fn good_lines_come_out_exact_bad_ones_are_counted_and_outages_are_seen() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let gateway = start_gateway(|c| {
        c.server.reactors = 1;
        c.feed.source = "tcp".into();
        c.feed.tcp_connect = Some(upstream_addr);
    });
    let addr = gateway.local_addr();
    let mut feed = accept(&upstream);
    let mut client = TestClient::connect(addr);
    client.subscribe(&["AAPL"]);

    let hostile = [
        "not json\n".to_string(),
        "{\"type\":\"trade\",\"symbol\":\"AAPL\",\"price\":\"NaN\",\"size\":\"1\",\"ts\":1}\n".to_string(),
        "{\"type\":\"trade\",\"symbol\":\"AAPL\",\"price\":\"187.123\",\"size\":\"1\",\"ts\":1}\n".to_string(),
        format!("{{\"type\":\"trade\",\"symbol\":\"AAPL\",\"price\":\"-1\",\"size\":\"1\",\"ts\":{}}}\n", now_ns()),
        format!("{{\"type\":\"trade\",\"symbol\":\"ZZZZ\",\"price\":\"1\",\"size\":\"1\",\"ts\":{}}}\n", now_ns()),
        format!("{}\n", "[".repeat(500)),
        format!("{{\"pad\":\"{}\"}}\n", "x".repeat(100_000)),
        "{\"type\":\"trade\",\"symbol\":\"AAPL\",\"pri".to_string() + "\n",
    ];
    feed.write_all(trade_line("AAPL", 1, "187.12", "100").as_bytes()).unwrap();
    for line in &hostile {
        feed.write_all(line.as_bytes()).unwrap();
    }
    feed.write_all(trade_line("AAPL", 2, "187.13", "100").as_bytes()).unwrap();
    feed.write_all(trade_line("AAPL", 5, "187.10", "100").as_bytes()).unwrap();

    let prices: Vec<String> =
        (0..3).map(|_| client.recv_type("trade")["price"].as_str().unwrap().to_string()).collect();
    assert_eq!(prices, ["187.12", "187.13", "187.10"], "exact, in order, nothing else");
    eventually("every bad line counted", || {
        let rejected: f64 = ["malformed", "bad_decimal", "non_positive_price", "unknown_symbol"]
            .iter()
            .map(|r| {
                metric(addr, &format!("tickgate_ticks_rejected_total{{reason=\"{r}\",source=\"tcp\"}}")).unwrap_or(0.0)
            })
            .sum();
        rejected == hostile.len() as f64
    });
    assert_eq!(metric(addr, "tickgate_upstream_gaps_total{source=\"tcp\"}"), Some(2.0), "seq 3 and 4 never came");

    // The upstream dies: /readyz says so; it comes back: the gateway reconnects.
    drop(feed);
    let down = client.recv_type("status");
    assert_eq!((down["feed"].as_str(), down["source"].as_str()), (Some("down"), Some("tcp")), "clients are told");
    eventually("not ready while the upstream is gone", || {
        http_request(addr, "GET /readyz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 503")
    });
    // A client connecting during the outage is told in its welcome.
    assert_eq!(TestClient::connect(addr).welcome["feed"], "down");
    // "up" once the upstream delivers again, before what it delivered.
    let mut feed = accept(&upstream);
    feed.write_all(trade_line("AAPL", 6, "188.00", "100").as_bytes()).unwrap();
    let (status, trade) = (client.recv(), client.recv());
    assert_eq!((status["type"].as_str(), status["feed"].as_str()), (Some("status"), Some("up")));
    assert_eq!(trade["price"], "188.00");
    assert!(metric(addr, "tickgate_source_reconnects_total{source=\"tcp\"}").is_some_and(|n| n >= 1.0));
    eventually("ready again", || http_request(addr, "GET /readyz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(10));
}
