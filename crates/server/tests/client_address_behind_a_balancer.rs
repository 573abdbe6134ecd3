//! The client's address behind a balancer. Through a PROXY-protocol balancer
//! (`server.proxy_protocol`): the header's client address is the connection's (the per-address
//! limit counts it, not the balancer's), v1 and v2; a missing or malformed header is refused and
//! counted, never guessed. From a trusted HTTP proxy (`server.trusted_proxies`): the rightmost
//! untrusted `X-Forwarded-For` hop is the client; from anyone else the header is ignored.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;

use tickgate_server::Gateway;
use tickgate_server::proxy_protocol::V2_SIGNATURE;
use tickgate_testkit::{PATIENCE, eventually, metric, start_gateway};

fn balancer_gateway() -> Gateway {
    start_gateway(|c| {
        c.server.proxy_protocol = true;
        c.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        c.limits.max_connections_per_ip = 1;
    })
}

fn v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 10.0.0.1 40000 443\r\n").into_bytes()
}

fn v2(client: [u8; 4]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[10, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb]);
    h
}

/// A WebSocket through the "balancer": `header`, then the upgrade on the same connection.
fn connect(addr: SocketAddr, header: &[u8]) -> Result<tungstenite::WebSocket<TcpStream>, u16> {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    sock.write_all(header).unwrap();
    match tungstenite::client(format!("ws://{addr}/ws"), sock) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("unexpected {e}"),
    }
}

fn total(gateway: &Gateway, name: &str) -> f64 {
    let admin = gateway.admin_addr().unwrap();
    (0..2).filter_map(|r| metric(admin, &format!("{name}{{reactor=\"{r}\"}}"))).sum()
}

#[test]
fn the_headers_client_address_is_the_one_limited() {
    let gateway = balancer_gateway();
    let addr = gateway.local_addr();
    // Every connection comes from 127.0.0.1, the "balancer"; the limit is one per client.
    let _a = connect(addr, &v1("203.0.113.7")).expect("first client of 203.0.113.7");
    let _b = connect(addr, &v2([203, 0, 113, 8])).expect("another client, v2");
    assert_eq!(connect(addr, &v1("203.0.113.7")).err(), Some(429), "203.0.113.7's second connection");
    assert_eq!(connect(addr, &v2([203, 0, 113, 8])).err(), Some(429), "203.0.113.8's second, by v2");
    // The balancer's own health check (v2 LOCAL) counts as the balancer's address.
    let mut local = V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let _c = connect(addr, &local).expect("LOCAL: the balancer itself");
    eventually("headers counted", || total(&gateway, "tickgate_proxy_headers_total") == 5.0);
}

#[test]
fn a_missing_or_malformed_header_is_refused_and_counted() {
    let gateway = balancer_gateway();
    let addr = gateway.local_addr();
    for start in [&b"GET /healthz HTTP/1.1\r\n\r\n"[..], b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", b"PROXY TCP9 x\r\n"]
    {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(PATIENCE)).unwrap();
        sock.write_all(start).unwrap();
        let mut answer = Vec::new();
        let _ = sock.read_to_end(&mut answer);
        assert!(answer.is_empty(), "refused without an answer: {}", String::from_utf8_lossy(&answer));
    }
    eventually("refusals counted", || total(&gateway, "tickgate_proxy_headers_refused_total") == 3.0);
    let closed =
        metric(gateway.admin_addr().unwrap(), "tickgate_connections_closed_total{reason=\"proxy_header_refused\"}");
    assert_eq!(closed, Some(3.0));
    // A proper client still gets in.
    connect(addr, &v1("198.51.100.1")).expect("a client with a header");
}

/// A WebSocket upgrade with `X-Forwarded-For: xff`; the status of a refusal.
fn upgrade_forwarded_for(addr: SocketAddr, xff: &str) -> Result<tungstenite::WebSocket<TcpStream>, u16> {
    use tungstenite::client::IntoClientRequest;
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert("X-Forwarded-For", xff.parse().unwrap());
    match tungstenite::client(request, sock) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("unexpected {e}"),
    }
}

#[test]
fn forwarded_for_from_a_trusted_proxy_names_the_client_and_is_ignored_from_others() {
    // 127.0.0.1 is the trusted proxy: its X-Forwarded-For names the client that is limited.
    let trusting = start_gateway(|c| {
        c.server.trusted_proxies = vec!["127.0.0.0/8".into()];
        c.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        c.limits.max_connections_per_ip = 1;
    });
    let addr = trusting.local_addr();
    // Connections from the proxy that have not upgraded yet are not held to its address's limit.
    let waiting: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let _a = upgrade_forwarded_for(addr, "203.0.113.7").expect("first client");
    // What the client itself put in front is not believed: the rightmost untrusted hop counts.
    let _b = upgrade_forwarded_for(addr, "203.0.113.7, 203.0.113.8").expect("203.0.113.8");
    assert_eq!(upgrade_forwarded_for(addr, "198.51.100.9, 203.0.113.7").err(), Some(429));
    eventually("counted", || total(&trusting, "tickgate_forwarded_addresses_total") == 3.0);
    drop(waiting);

    // Nobody trusted: the header is ignored, the peer (127.0.0.1) is the one limited.
    let wary = start_gateway(|c| {
        c.server.trusted_proxies = vec!["10.0.0.0/8".into()];
        c.limits.max_connections_per_ip = 1;
    });
    let _c = upgrade_forwarded_for(wary.local_addr(), "203.0.113.7").expect("first");
    assert_eq!(upgrade_forwarded_for(wary.local_addr(), "203.0.113.8").err(), Some(429), "spoofed header ignored");
}

#[test]
fn connections_waiting_for_their_header_count_against_max_connections() {
    let gateway = start_gateway(|c| {
        c.server.proxy_protocol = true;
        c.limits.max_connections = 2;
        c.limits.handshake_timeout_ms = 60_000;
    });
    let addr = gateway.local_addr();
    // Two connections from the balancer that have not sent their header yet fill the gateway.
    let mut waiting: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let open = || gateway.stats().reactors.iter().map(|r| r.connections.load(Ordering::Relaxed)).sum::<u64>();
    eventually("both accepted", || open() == 2);
    assert_eq!(connect(addr, &v1("203.0.113.7")).err(), Some(503), "a third, even with a header");
    // One of them goes away: its place is free again.
    drop(waiting.pop());
    eventually("one counted out", || open() == 1);
    let _client = connect(addr, &v1("203.0.113.7")).expect("a client with a header");
    // The one still waiting sends its header: it keeps its place, under its client's address.
    waiting[0].write_all(&v1("203.0.113.9")).unwrap();
    assert_eq!(connect(addr, &v1("203.0.113.8")).err(), Some(503), "still full");
}
