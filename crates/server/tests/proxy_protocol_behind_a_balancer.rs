//! Behind a PROXY-protocol balancer (`server.proxy_protocol`): the header's client address is
//! the connection's (the per-address limit counts it, not the balancer's), v1 and v2, before
//! plain HTTP or TLS; a missing or malformed header is refused and counted, never guessed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

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
