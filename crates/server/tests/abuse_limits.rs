//! Each abuse case gets its answer, and a healthy client on the same reactor keeps receiving
//! with no gap.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use tickgate_server::Gateway;
use tickgate_testkit::{RawClient, TestClient, eventually, http_request, start_gateway};

/// A client subscribed to AAPL whose stream must stay contiguous.
struct Healthy {
    client: TestClient,
    next: u64,
}

impl Healthy {
    fn new(gateway: &Gateway) -> Self {
        let mut client = TestClient::connect(gateway.local_addr());
        let (_, snaps) = client.subscribe(&["AAPL"]);
        Healthy { client, next: snaps[0]["seq"].as_u64().unwrap() + 1 }
    }

    /// Reads events for `dur`; checks contiguity; returns the worst gw_ts-to-receipt delay.
    fn keeps_receiving(&mut self, dur: Duration) -> Duration {
        let end = Instant::now() + dur;
        let mut worst = Duration::ZERO;
        let mut events = 0;
        while Instant::now() < end {
            let msg = self.client.recv();
            if msg["type"] == "trade" || msg["type"] == "quote" {
                assert_eq!(msg["seq"].as_u64().unwrap(), self.next, "no gap for the healthy client");
                self.next += 1;
                events += 1;
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
                worst = worst.max(Duration::from_nanos(now.saturating_sub(msg["gw_ts"].as_u64().unwrap())));
            }
        }
        assert!(events > 10, "the healthy client kept receiving ({events} events)");
        worst
    }
}

fn one_reactor(c: &mut tickgate_server::Config) {
    c.server.reactors = 1;
    c.sim.symbols = 10;
    c.sim.rate = 2_000.0;
}

#[test]
fn a_thousand_half_open_handshakes_do_not_delay_a_healthy_client() {
    let gateway = start_gateway(|c| {
        one_reactor(c);
        c.limits.handshake_timeout_ms = 1_000;
    });
    let mut healthy = Healthy::new(&gateway);
    let half_open: Vec<TcpStream> = (0..1000)
        .map(|i| {
            let mut s = TcpStream::connect(gateway.local_addr()).unwrap();
            // Half of them start a request head and never finish it.
            if i % 2 == 0 {
                s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
            }
            s
        })
        .collect();
    let worst = healthy.keeps_receiving(Duration::from_millis(1500));
    assert!(worst < Duration::from_millis(500), "ticks not delayed: worst {worst:?}");
    // They were all answered 408 and closed.
    let mut answered = 0;
    for mut s in half_open.into_iter().take(20) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut response = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut response);
        if response.starts_with("HTTP/1.1 408") {
            answered += 1;
        }
    }
    assert_eq!(answered, 20);
    healthy.keeps_receiving(Duration::from_millis(200));
}

#[test]
fn a_command_flood_is_rate_limited_then_closed() {
    let gateway = start_gateway(|c| {
        one_reactor(c);
        c.limits.messages_per_second = 20.0;
        c.limits.message_burst = 10;
    });
    let mut healthy = Healthy::new(&gateway);
    let mut flooder = TestClient::connect(gateway.local_addr());
    for _ in 0..15 {
        flooder.send_json(json!({"op":"list_subscriptions"}));
    }
    let err = flooder.recv_type("error");
    assert_eq!(err["code"], "rate_limited", "{err}");
    for _ in 0..50 {
        flooder.send_json(json!({"op":"subscribe","symbols":["AAPL"]}));
    }
    let close = flooder.recv_close().expect("closed for the flood");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason, "rate limit exceeded");
    healthy.keeps_receiving(Duration::from_millis(300));
}

#[test]
fn subscriptions_past_the_maximum_are_refused_by_name() {
    let gateway = start_gateway(|c| {
        one_reactor(c);
        c.limits.max_subscriptions = 3;
    });
    let names: Vec<String> = gateway.symbols().iter().take(5).map(|(_, s)| s.name.to_string()).collect();
    let mut client = TestClient::connect(gateway.local_addr());
    client.send_json(json!({"op":"subscribe","symbols":names,"id":1}));
    let reply = client.recv_type("subscribed");
    assert_eq!(reply["symbols"], json!(names[..3]));
    let err = client.recv_type("error");
    assert_eq!(err["code"], "too_many_subscriptions");
    assert_eq!(err["symbols"], json!(names[3..]));
    assert_eq!(err["id"], 1);
}

#[test]
fn connection_limits_answer_503_and_429() {
    let gateway = start_gateway(|c| {
        one_reactor(c);
        c.limits.max_connections = 3;
    });
    let _held: Vec<TestClient> = (0..3).map(|_| TestClient::connect(gateway.local_addr())).collect();
    let refused = http_request(gateway.local_addr(), "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("max_connections"));

    let gateway = start_gateway(|c| {
        one_reactor(c);
        c.limits.max_connections_per_ip = 2;
    });
    let _held: Vec<TestClient> = (0..2).map(|_| TestClient::connect(gateway.local_addr())).collect();
    let refused = http_request(gateway.local_addr(), "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    drop(_held);
    eventually("the address may connect again once its connections are gone", || {
        http_request(gateway.local_addr(), "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 400")
    });
}

#[test]
fn refused_connections_past_a_small_budget_are_reset_unanswered() {
    // Refused connections linger (for their 503 to leave) up to close_linger_ms: a flood of
    // silent connects must not hold sockets without bound.
    let gateway = start_gateway(|c| {
        one_reactor(c);
        c.limits.max_connections = 1;
        c.limits.close_linger_ms = 60_000;
    });
    let addr = gateway.local_addr();
    let counters = &gateway.stats().reactors[0].counters;
    let _held = TestClient::connect(addr);
    // 64 refused connections are held while their answer goes out (they never close).
    let answered: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
    eventually("64 refused", || counters.connections_refused.load(Ordering::Relaxed) == 64);
    let mut first = answered[0].try_clone().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut status = [0u8; 12];
    first.read_exact(&mut status).unwrap();
    assert_eq!(&status, b"HTTP/1.1 503");
    // The next is reset at once, unanswered, well before the linger would end.
    let started = Instant::now();
    let mut over = TcpStream::connect(addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = Vec::new();
    let _ = over.read_to_end(&mut answer);
    assert!(answer.is_empty(), "unanswered: {:?}", String::from_utf8_lossy(&answer));
    assert!(started.elapsed() < Duration::from_secs(5), "closed at once");
    eventually("counted", || counters.connections_refused_unanswered.load(Ordering::Relaxed) == 1);
    assert_eq!(counters.connections_refused.load(Ordering::Relaxed), 65);
    // Once the answered ones go, the budget is back.
    drop(answered);
    drop(first);
    eventually("the budget comes back", || {
        http_request(addr, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 503")
    });
}

#[test]
fn a_disallowed_origin_gets_403() {
    let gateway = start_gateway(|c| {
        one_reactor(c);
        c.limits.allowed_origins = vec!["https://good.example".into()];
    });
    let upgrade = |origin: &str| {
        http_request(
            gateway.local_addr(),
            &format!(
                "GET /ws HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
        )
    };
    assert!(upgrade("https://evil.example").starts_with("HTTP/1.1 403"));
    let mut healthy = Healthy::new(&gateway);
    healthy.keeps_receiving(Duration::from_millis(200));
    let ok = TcpStream::connect(gateway.local_addr()).unwrap();
    let mut ok = ok;
    ok.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nOrigin: https://good.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut ok, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
}

#[test]
fn silent_clients_are_pinged_and_unresponsive_ones_closed() {
    let gateway = start_gateway(|c| {
        one_reactor(c);
        c.limits.ping_interval_ms = 300;
        c.limits.idle_timeout_ms = 1_200;
    });
    // A raw client never answers pings.
    let mut silent = RawClient::connect(gateway.local_addr());
    let mut saw_ping = false;
    let close = loop {
        match silent.read_frame() {
            Some((9, _)) => saw_ping = true,
            Some((8, payload)) => break u16::from_be_bytes([payload[0], payload[1]]),
            Some(_) => {}
            None => panic!("ended without a close frame"),
        }
    };
    assert!(saw_ping, "pinged before being closed");
    assert_eq!(close, 1008);
    // A client that answers pings (tungstenite does, while it reads) stays.
    let mut healthy = Healthy::new(&gateway);
    healthy.keeps_receiving(Duration::from_millis(2_000));
}
