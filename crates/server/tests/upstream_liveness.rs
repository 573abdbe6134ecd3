//! Upstreams that misbehave, played by local fakes over real sockets (a TCP line upstream, an
//! exchange's WebSocket server), and what a WebSocket client of the gateway is told: a silent or
//! half-open upstream is noticed within the silence bound, a refused subscription never shows
//! the feed up, an upstream that closes at once is retried with growing waits, the ticks of a
//! closed connection come before its "down", and in listen mode a newer upstream takes over while
//! health probes change nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use tickgate_server::{Config, Gateway};
use tickgate_testkit::{PATIENCE, TestClient, eventually, http_request, metric, start_gateway, trade_line};
use tungstenite::Message;

/// Short bounds, so that the tests are quick, but not so short that a loaded machine trips them.
fn short_liveness(c: &mut Config) {
    c.server.reactors = 1;
    c.feed.upstream_silence_ms = 300;
    c.feed.reconnect_min_ms = 50;
    c.feed.reconnect_max_ms = 800;
    c.feed.healthy_session_ms = 60_000;
    c.feed.status_hold_ms = 0;
}

fn tcp_connect(c: &mut Config, upstream: &TcpListener) {
    c.feed.source = "tcp".into();
    c.feed.tcp_connect = Some(upstream.local_addr().unwrap());
}

fn binance(c: &mut Config, exchange: &TcpListener) {
    c.feed.source = "binance".into();
    c.feed.exchange_url = Some(format!("ws://{}/stream", exchange.local_addr().unwrap()));
    c.feed.exchange_symbols = vec!["BTCUSDT".into()];
    c.feed.aliases = [("BTCUSDT".to_string(), "BTC-USD".to_string())].into();
}

fn coinbase(c: &mut Config, exchange: &TcpListener) {
    c.feed.source = "coinbase".into();
    c.feed.exchange_url = Some(format!("ws://{}/", exchange.local_addr().unwrap()));
    c.feed.exchange_symbols = vec!["BTC-USD".into()];
}

/// A fake upstream's listener, a gateway with short bounds whose source (set by `source`) is
/// that upstream, and a client connected once the feed is down.
fn gateway_on(source: impl FnOnce(&mut Config, &TcpListener)) -> (TcpListener, Gateway, TestClient) {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let gateway = start_gateway(|c| {
        short_liveness(c);
        source(c, &upstream);
    });
    let client = client_once_down(gateway.local_addr());
    (upstream, gateway, client)
}

/// A client connected once the gateway has told clients the feed is down (its first turn), so
/// that every later status is one this test caused.
fn client_once_down(addr: SocketAddr) -> TestClient {
    let start = Instant::now();
    loop {
        let mut client = TestClient::connect(addr);
        if client.welcome["feed"] == "down" {
            // The first "down" may have been on its way to the reactor as the client came in.
            let early = messages_within(&mut client, Duration::from_millis(200));
            assert!(statuses(&early).iter().all(|s| s == "down"), "{early:?}");
            return client;
        }
        assert!(start.elapsed() < PATIENCE, "the feed is never down at start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every message the client receives within `window`.
fn messages_within(client: &mut TestClient, window: Duration) -> Vec<Value> {
    timed_messages_within(client, window).into_iter().map(|(_, m)| m).collect()
}

/// Every message the client receives within `window`, with when it came.
fn timed_messages_within(client: &mut TestClient, window: Duration) -> Vec<(Instant, Value)> {
    let deadline = Instant::now() + window;
    let mut messages = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        client.ws.get_mut().set_read_timeout(Some(left.min(Duration::from_millis(50)))).unwrap();
        match client.ws.read() {
            Ok(Message::Text(text)) => messages.push((Instant::now(), serde_json::from_str(&text).unwrap())),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("client connection failed: {e}"),
        }
    }
    client.ws.get_mut().set_read_timeout(Some(PATIENCE)).unwrap();
    messages
}

fn statuses(messages: &[Value]) -> Vec<String> {
    messages.iter().filter(|m| m["type"] == "status").map(|m| m["feed"].as_str().unwrap().to_string()).collect()
}

fn readyz(addr: SocketAddr) -> Value {
    let response = http_request(addr, "GET /readyz HTTP/1.1\r\n\r\n");
    let body = response.split("\r\n\r\n").nth(1).expect("a body");
    serde_json::from_str(body).expect("JSON")
}

/// The first source of /readyz.
fn source_health(addr: SocketAddr) -> Value {
    let ready = readyz(addr);
    ready["feed"]["sources"][0].clone()
}

/// The instants of the connections accepted on `listener` within `window`, each closed at once.
fn accepts_within(listener: &TcpListener, window: Duration) -> Vec<Instant> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + window;
    let mut at = Vec::new();
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                at.push(Instant::now());
                drop(stream);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    listener.set_nonblocking(false).unwrap();
    at
}

#[test]
fn a_tcp_upstream_that_goes_silent_is_told_down_within_the_bound_and_reconnected() {
    let (upstream, gateway, mut client) = gateway_on(tcp_connect);
    let addr = gateway.local_addr();
    let (mut feed, _) = upstream.accept().unwrap();
    client.subscribe(&["AAPL"]);

    feed.write_all(trade_line("AAPL", 1, "187.12", "100").as_bytes()).unwrap();
    assert_eq!(client.recv_type("status")["feed"], "up", "up once it delivered");
    let delivered = Instant::now();
    assert_eq!(client.recv_type("trade")["price"], "187.12");
    // The upstream stays connected and says nothing: the feed is down past the silence bound.
    let down = client.recv_type("status");
    assert_eq!((down["feed"].as_str(), down["source"].as_str()), (Some("down"), Some("tcp")));
    assert!(delivered.elapsed() >= Duration::from_millis(250), "not before the bound: {:?}", delivered.elapsed());
    assert_eq!(metric(addr, "tickgate_source_silences_total{source=\"tcp\"}"), Some(1.0));
    assert_eq!(source_health(addr)["up"], false);
    // The gateway dropped the silent connection and connects again.
    feed.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(feed.read(&mut [0u8; 16]).unwrap(), 0, "the silent connection is closed");
    let (mut feed, _) = upstream.accept().unwrap();
    feed.write_all(trade_line("AAPL", 2, "187.20", "100").as_bytes()).unwrap();
    assert_eq!(client.recv_type("status")["feed"], "up");
    assert_eq!(client.recv_type("trade")["price"], "187.20");
}

#[test]
fn an_upstream_that_closes_at_once_is_retried_with_growing_waits_and_never_shown_up() {
    let (upstream, gateway, mut client) = gateway_on(tcp_connect);
    let addr = gateway.local_addr();
    let at = accepts_within(&upstream, Duration::from_secs(4));
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // 50 ms doubling to 800 ms (each wait drawn between half and all of it): about ten connects
    // in four seconds; a backoff that starts over on every connect would make eighty.
    assert!((3..=20).contains(&at.len()), "{} connects in 4 s: {gaps:?}", at.len());
    assert!(gaps.iter().any(|g| *g >= Duration::from_millis(350)), "the wait grows: {gaps:?}");
    assert!(gaps.iter().all(|g| *g <= Duration::from_millis(800) + Duration::from_secs(2)), "capped: {gaps:?}");
    let health = source_health(addr);
    assert!(health["backoff_ms"].as_u64().unwrap() > 0, "{health}");
    assert!(health["unhealthy_attempts"].as_u64().unwrap() >= 3, "{health}");
    assert_eq!(statuses(&messages_within(&mut client, Duration::from_millis(300))), Vec::<String>::new());
}

#[test]
fn an_upstream_that_delivers_a_line_and_closes_every_time_does_not_flap_the_status() {
    let (upstream, gateway, mut client) = gateway_on(|c, l| {
        tcp_connect(c, l);
        c.feed.status_hold_ms = 1_000;
    });
    client.subscribe(&["AAPL"]);
    let _ = gateway.local_addr();
    let play = Duration::from_secs(4);
    let feeder = std::thread::spawn(move || {
        upstream.set_nonblocking(true).unwrap();
        let until = Instant::now() + play;
        let mut sessions = 0;
        while Instant::now() < until {
            match upstream.accept() {
                Ok((mut session, _)) => {
                    session.set_nonblocking(false).unwrap();
                    sessions += 1;
                    let _ = session.write_all(trade_line("AAPL", sessions, "1.00", "100").as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        sessions
    });
    let messages = timed_messages_within(&mut client, play + Duration::from_millis(500));
    let sessions = feeder.join().unwrap();
    let statuses: Vec<(Instant, &str)> = messages
        .iter()
        .filter(|(_, m)| m["type"] == "status")
        .map(|(at, m)| (*at, m["feed"].as_str().unwrap()))
        .collect();
    let told: Vec<&str> = statuses.iter().map(|(_, s)| *s).collect();
    assert!(sessions >= 3, "{sessions} sessions");
    // Each session delivered, so each "up" and "down" is true; but an "up" waits a second after a
    // "down": five pairs at most in 4.5 s, whatever the number of sessions.
    assert!(told.len() <= 10, "{told:?} for {sessions} sessions");
    assert!(told.chunks(2).all(|pair| pair[0] == "up" && pair.get(1).is_none_or(|s| *s == "down")), "{told:?}");
    for pair in statuses.windows(2).filter(|w| w[0].1 == "down") {
        let held = pair[1].0 - pair[0].0;
        assert!(held >= Duration::from_millis(900), "up {held:?} after down: {told:?}");
    }
    // No session queues up behind the hold: the gateway reconnects no sooner than it.
    let ups = told.iter().filter(|s| **s == "up").count();
    assert!(ups + 1 >= sessions as usize, "{ups} ups for {sessions} sessions");
    let trades = messages.iter().filter(|(_, m)| m["type"] == "trade").count();
    assert!(trades >= ups, "each session's line is delivered after its up");
}

#[test]
fn ticks_buffered_when_the_upstream_closes_come_before_down_and_the_last_line_needs_no_newline() {
    let (upstream, gateway, mut client) = gateway_on(|c, l| {
        c.feed.upstream_silence_ms = 10_000;
        tcp_connect(c, l);
    });
    let addr = gateway.local_addr();
    let (mut feed, _) = upstream.accept().unwrap();
    client.subscribe(&["AAPL"]);
    let lines: String = (1..=500).map(|seq| trade_line("AAPL", seq, "100.00", "100")).collect();
    feed.write_all(lines.as_bytes()).unwrap();
    // The last line without its newline, then the upstream is gone.
    feed.write_all(trade_line("AAPL", 501, "101.00", "100").trim_end().as_bytes()).unwrap();
    drop(feed);

    let mut trades = 0;
    let mut last_price = String::new();
    loop {
        let m = client.recv();
        match m["type"].as_str() {
            Some("trade") => {
                trades += 1;
                last_price = m["price"].as_str().unwrap().to_string();
            }
            Some("status") if m["feed"] == "up" => assert_eq!(trades, 0, "up before the ticks"),
            Some("status") => break,
            _ => {}
        }
    }
    assert_eq!(
        (trades, last_price.as_str()),
        (501, "101.00"),
        "every tick, the unterminated last one too, before down"
    );
    let after: Vec<Value> = messages_within(&mut client, Duration::from_millis(500));
    assert!(after.iter().all(|m| m["type"] != "trade"), "nothing after down: {after:?}");
    assert_eq!(metric(addr, "tickgate_ticks_ingested_total{source=\"tcp\"}"), Some(501.0));
}

/// Accepts the gateway's connection as Binance would, up to reading its subscribe.
fn exchange_accept(listener: &TcpListener) -> tungstenite::WebSocket<TcpStream> {
    let (stream, _) = listener.accept().unwrap();
    let mut ws = tungstenite::accept(stream).unwrap();
    let subscribe = ws.read().unwrap().into_text().unwrap();
    assert!(subscribe.to_lowercase().contains("subscribe"), "{subscribe}");
    ws
}

#[test]
fn an_exchange_that_acknowledges_then_goes_silent_is_up_then_down_and_reconnected() {
    let (exchange, gateway, mut client) = gateway_on(binance);
    let addr = gateway.local_addr();
    let mut ws = exchange_accept(&exchange);
    ws.send(Message::text(r#"{"result":null,"id":1}"#)).unwrap();
    assert_eq!(client.recv_type("status")["feed"], "up", "the acknowledged subscription");
    let acknowledged = Instant::now();
    // From here the exchange neither sends nor reads (so never answers the gateway's pings).
    let down = client.recv_type("status");
    assert_eq!((down["feed"].as_str(), down["source"].as_str()), (Some("down"), Some("binance")));
    assert!(acknowledged.elapsed() >= Duration::from_millis(250), "{:?}", acknowledged.elapsed());
    eventually("counted", || metric(addr, "tickgate_source_silences_total{source=\"binance\"}") == Some(1.0));
    // It reconnects; an exchange that answers pings and sends nothing else stays up.
    let mut ws2 = exchange_accept(&exchange);
    ws2.send(Message::text(r#"{"result":null,"id":1}"#)).unwrap();
    assert_eq!(client.recv_type("status")["feed"], "up");
    ws2.get_mut().set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    // The exchange pings too (as Binance does every 20 s): the gateway answers.
    ws2.send(Message::Ping("are you there".into())).unwrap();
    let until = Instant::now() + Duration::from_millis(1_500);
    let (mut pings, mut pongs) = (0, 0);
    while Instant::now() < until {
        // Reading answers the gateway's pings.
        match ws2.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(Message::Pong(payload)) if payload == "are you there" => pongs += 1,
            _ => {}
        }
    }
    assert!(pings >= 2, "the gateway pings a quiet exchange ({pings} in 1.5 s)");
    assert_eq!(pongs, 1, "the gateway answers the exchange's ping");
    assert_eq!(source_health(addr)["up"], true, "pongs are life");
    drop(ws);
}

#[test]
fn a_refused_subscription_is_logged_counted_and_never_shown_up() {
    let binance_refusal = r#"{"error":{"code":2,"msg":"Invalid symbol BTCUSDT"},"id":1}"#;
    let coinbase_refusal = r#"{"type":"error","message":"Failed to subscribe","reason":"BTC-USD is delisted"}"#;
    refused(binance, "binance", binance_refusal);
    refused(coinbase, "coinbase", coinbase_refusal);
}

fn refused(source: fn(&mut Config, &TcpListener), name: &str, refusal: &str) {
    let (exchange, gateway, mut client) = gateway_on(source);
    let addr = gateway.local_addr();
    let start = Instant::now();
    let mut kept = Vec::new();
    for _ in 0..3 {
        let mut ws = exchange_accept(&exchange);
        ws.send(Message::text(refusal)).unwrap();
        // Kept open: the gateway is the one that ends the session.
        kept.push(ws);
    }
    assert!(start.elapsed() >= Duration::from_millis(60), "waits between attempts: {:?}", start.elapsed());
    eventually("three refusals counted", || {
        metric(addr, &format!("tickgate_source_subscription_errors_total{{source=\"{name}\"}}")) == Some(3.0)
    });
    let health = source_health(addr);
    assert_eq!((health["up"].as_bool(), health["ok"].as_bool()), (Some(false), Some(false)), "{health}");
    assert_eq!(statuses(&messages_within(&mut client, Duration::from_millis(300))), Vec::<String>::new());
    for mut ws in kept {
        ws.get_mut().set_read_timeout(Some(PATIENCE)).unwrap();
        loop {
            match ws.read() {
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

#[test]
fn a_half_open_exchange_fails_the_handshake_within_the_bound_and_is_retried() {
    let (exchange, gateway, mut client) = gateway_on(binance);
    let addr = gateway.local_addr();
    // The first attempt began as the gateway started: the second one is timed.
    trickle_until_dropped(&exchange);
    let gave_up = trickle_until_dropped(&exchange);
    assert!(gave_up >= Duration::from_millis(250), "{gave_up:?}");
    assert!(gave_up < Duration::from_secs(5), "{gave_up:?}");
    let (_second, _) = exchange.accept().unwrap();
    eventually("counted as a failed connect", || {
        metric(addr, "tickgate_source_connect_failures_total{source=\"binance\"}").is_some_and(|n| n >= 1.0)
    });
    assert_eq!(statuses(&messages_within(&mut client, Duration::from_millis(200))), Vec::<String>::new());
}

/// Accepts a connection and plays an exchange that never finishes the handshake and never
/// closes: it trickles a byte of an endless header now and then, so that the socket's read
/// timeout alone would never fire. Returns how long the gateway took to give up.
fn trickle_until_dropped(exchange: &TcpListener) -> Duration {
    let (mut held, _) = exchange.accept().unwrap();
    let accepted = Instant::now();
    held.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
    let mut trickle = b"HTTP/1.1 101 Switching Protocols\r\nX-Pad: ".iter().copied().chain(std::iter::repeat(b'a'));
    let mut buf = [0u8; 4096];
    loop {
        match held.read(&mut buf) {
            Ok(0) => return accepted.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if held.write_all(&[trickle.next().unwrap()]).is_err() {
                    return accepted.elapsed();
                }
            }
            Err(_) => return accepted.elapsed(),
        }
        assert!(accepted.elapsed() < PATIENCE, "the gateway never gave up the handshake");
    }
}

fn tcp_listen(c: &mut Config) -> SocketAddr {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    c.feed.source = "tcp".into();
    c.feed.tcp_listen = Some(port);
    port
}

fn connect_upstream(addr: SocketAddr) -> TcpStream {
    let start = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(e) => assert!(start.elapsed() < PATIENCE, "cannot connect to the listen port: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gateway listening for its upstream (long silence bound), a subscribed client, and an
/// upstream that connected and delivered: the client saw "up" and its first trade.
fn listening_gateway_with_an_upstream() -> (Gateway, TestClient, SocketAddr, TcpStream) {
    let mut listen = None;
    let gateway = start_gateway(|c| {
        short_liveness(c);
        c.feed.upstream_silence_ms = 20_000;
        listen = Some(tcp_listen(c));
    });
    let listen = listen.unwrap();
    let mut client = client_once_down(gateway.local_addr());
    client.subscribe(&["AAPL"]);
    let mut upstream = connect_upstream(listen);
    upstream.write_all(trade_line("AAPL", 1, "10.00", "100").as_bytes()).unwrap();
    assert_eq!(client.recv_type("status")["feed"], "up");
    assert_eq!(client.recv_type("trade")["price"], "10.00");
    (gateway, client, listen, upstream)
}

#[test]
fn in_listen_mode_a_newer_upstream_that_sends_replaces_a_half_open_one_without_a_status_change() {
    let (gateway, mut client, listen, mut first) = listening_gateway_with_an_upstream();
    let addr = gateway.local_addr();
    // The first upstream now hangs (half-open, as after a crash of its host); the restarted one
    // connects and is taken at its first byte, long before the silence bound.
    let mut second = connect_upstream(listen);
    second.write_all(trade_line("AAPL", 2, "20.00", "100").as_bytes()).unwrap();
    let m = client.recv();
    assert_eq!((m["type"].as_str(), m["price"].as_str()), (Some("trade"), Some("20.00")), "no status between");
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    assert!(matches!(first.read(&mut [0u8; 16]), Ok(0) | Err(_)), "the replaced connection is closed");
    // A line the first one sends now goes nowhere; the second goes on.
    let _ = first.write_all(trade_line("AAPL", 3, "30.00", "100").as_bytes());
    second.write_all(trade_line("AAPL", 4, "40.00", "100").as_bytes()).unwrap();
    assert_eq!(client.recv_type("trade")["price"], "40.00");
    eventually("counted", || source_health(addr)["replaced"] == 1);
}

#[test]
fn tcp_probes_in_listen_mode_change_nothing_for_clients() {
    let (gateway, mut client, listen, mut feed) = listening_gateway_with_an_upstream();
    let addr = gateway.local_addr();
    for _ in 0..30 {
        drop(connect_upstream(listen));
    }
    eventually("every probe counted", || metric(addr, "tickgate_source_probes_total{source=\"tcp\"}") == Some(30.0));
    feed.write_all(trade_line("AAPL", 2, "11.00", "100").as_bytes()).unwrap();
    let messages = messages_within(&mut client, Duration::from_millis(500));
    assert_eq!(statuses(&messages), Vec::<String>::new(), "no status: {messages:?}");
    assert!(messages.iter().any(|m| m["price"] == "11.00"), "the upstream goes on: {messages:?}");
    assert_eq!(source_health(addr)["up"], true);
}

#[test]
fn in_listen_mode_connections_held_open_without_a_byte_cannot_lock_a_restarted_upstream_out() {
    let (gateway, mut client, listen, first) = listening_gateway_with_an_upstream();
    let addr = gateway.local_addr();
    // More silent connections than may wait, held open (the silence bound is 20 s).
    let silent: Vec<TcpStream> = (0..tickgate_feed::tcp::MAX_WAITING + 4).map(|_| connect_upstream(listen)).collect();
    eventually("the silent ones accepted", || {
        metric(addr, "tickgate_source_probes_total{source=\"tcp\"}") >= Some(4.0)
    });
    // The upstream restarts: its old connection ends, the new one sends at once.
    drop(first);
    assert_eq!(client.recv_type("status")["feed"], "down");
    let mut restarted = connect_upstream(listen);
    restarted.write_all(trade_line("AAPL", 1, "12.00", "100").as_bytes()).unwrap();
    assert_eq!(client.recv_type("status")["feed"], "up", "the restarted upstream got in");
    assert_eq!(client.recv_type("trade")["price"], "12.00");
    drop(silent);
}

#[test]
fn an_exchange_that_never_answers_the_subscription_but_answers_pings_is_reconnected() {
    let (exchange, gateway, mut client) = gateway_on(binance);
    let addr = gateway.local_addr();
    let mut ws = exchange_accept(&exchange);
    // Neither an acknowledgement nor a tick: only the WebSocket layer lives (reading answers
    // the gateway's pings), so the connection is never silent.
    ws.get_mut().set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let accepted = Instant::now();
    let closed = loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                break accepted.elapsed();
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break accepted.elapsed(),
            Ok(_) => {}
        }
        assert!(accepted.elapsed() < PATIENCE, "the gateway kept an unanswered subscription open");
    };
    assert!(closed >= Duration::from_millis(250), "given the silence bound: {closed:?}");
    let _again = exchange_accept(&exchange);
    eventually("counted", || {
        metric(addr, "tickgate_source_subscription_errors_total{source=\"binance\"}") == Some(1.0)
    });
    assert_eq!(statuses(&messages_within(&mut client, Duration::from_millis(200))), Vec::<String>::new(), "never up");
}

#[test]
fn in_listen_mode_a_takeover_in_the_middle_of_a_line_counts_the_cut_line_and_mixes_nothing() {
    let (gateway, mut client, listen, mut first) = listening_gateway_with_an_upstream();
    let addr = gateway.local_addr();
    // Half a line whose other half never comes; the reader has it before the takeover.
    let line = trade_line("AAPL", 2, "20.00", "100");
    first.write_all(&line.as_bytes()[..line.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut second = connect_upstream(listen);
    // The second upstream's bytes are never glued onto the first one's half line.
    second.write_all(trade_line("AAPL", 3, "30.00", "100").as_bytes()).unwrap();
    // Its numbering carries on the first one's: the cut line's seq 2 is announced missing.
    let gap = client.recv();
    assert_eq!((gap["type"].as_str(), gap["missed"].as_u64()), (Some("upstream_gap"), Some(1)), "{gap}");
    let m = client.recv();
    assert_eq!((m["type"].as_str(), m["price"].as_str()), (Some("trade"), Some("30.00")), "no status between");
    eventually("the cut line counted", || {
        metric(addr, "tickgate_ticks_rejected_total{reason=\"malformed\",source=\"tcp\"}") == Some(1.0)
    });
    let after = messages_within(&mut client, Duration::from_millis(300));
    assert!(after.iter().all(|m| m["type"] != "status" && m["price"] != "20.00"), "{after:?}");
}
