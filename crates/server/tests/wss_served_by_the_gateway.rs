//! `wss://` served by the gateway itself, through real TLS sockets, with a certificate from a CA
//! made at test time: subscribe and stream over TLS 1.3 and 1.2; plain HTTP on the TLS port and
//! a ClientHello on a plain port get defined answers and are counted; garbage and stalled
//! handshakes are cut off without disturbing healthy clients; a certificate reload takes a good
//! pair for new handshakes, keeps open connections, and refuses a mismatched or expired pair.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tickgate_server::Gateway;
use tickgate_server::tls::CertError;
use tickgate_testkit::{PATIENCE, TestClient, eventually, http_request, start_gateway};
use tungstenite::{Message, WebSocket};

type Wss = WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

/// A CA made at test time, and the files the gateway reads its certificate from.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    chain: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(test: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "tickgate test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = std::env::temp_dir().join(format!("tickgate-wss-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Self { ca, chain: dir.join("chain.pem"), key: dir.join("key.pem") };
        pki.issue(|_| {});
        pki
    }

    /// Writes a new certificate for localhost (adjusted by `tweak`) and its key; returns its DER.
    fn issue(&self, tweak: impl FnOnce(&mut CertificateParams)) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        tweak(&mut params);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::write(&self.chain, format!("{}{}", cert.pem(), self.ca.pem())).unwrap();
        std::fs::write(&self.key, key.serialize_pem()).unwrap();
        cert.der().clone()
    }

    fn client_config(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

fn tls_gateway(pki: &Pki, tweak: impl FnOnce(&mut tickgate_server::Config)) -> Gateway {
    start_gateway(|c| {
        c.tls.cert_file = Some(pki.chain.clone());
        c.tls.key_file = Some(pki.key.clone());
        // Metrics on a plain admin port, so the test reads them with plain HTTP.
        c.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        tweak(c);
    })
}

/// A TLS session to `addr`, the handshake completed.
fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    let session = rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut stream = rustls::StreamOwned::new(session, sock);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).expect("TLS handshake");
    }
    stream
}

/// A WebSocket over TLS to `wss://localhost:port/ws`, the welcome read.
fn wss_connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> (Wss, Value) {
    let stream = tls_connect(addr, config);
    let url = format!("wss://localhost:{}/ws", addr.port());
    let (mut ws, _) = tungstenite::client(url, stream).expect("WebSocket handshake over TLS");
    let welcome = recv(&mut ws);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

fn recv(ws: &mut Wss) -> Value {
    loop {
        match ws.read().expect("a message") {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Subscribes to `symbol` and checks the reply, the snapshot and `ticks` contiguous events.
fn subscribe_and_stream(ws: &mut Wss, symbol: &str, ticks: usize) {
    ws.send(Message::text(json!({"op":"subscribe","symbols":[symbol],"id":1}).to_string())).unwrap();
    assert_eq!(recv(ws)["type"], "subscribed");
    let snapshot = recv(ws);
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    let first = snapshot["seq"].as_u64().unwrap() + 1;
    for next in first..first + ticks as u64 {
        let event = recv(ws);
        assert_eq!(event["symbol"], symbol, "{event}");
        assert_eq!(event["seq"].as_u64().unwrap(), next, "contiguous over TLS: {event}");
    }
}

/// The sum of a counter over its labels, from the admin port's /metrics.
fn total(gateway: &Gateway, name: &str) -> f64 {
    let addr = gateway.admin_addr().expect("an admin port");
    let text = http_request(addr, "GET /metrics HTTP/1.1\r\n\r\n");
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn series(gateway: &Gateway, series: &str) -> Option<f64> {
    tickgate_testkit::metric(gateway.admin_addr().expect("an admin port"), series)
}

fn first_symbol(gateway: &Gateway) -> String {
    gateway.symbols().iter().next().map(|(_, s)| s.name.to_string()).unwrap()
}

#[test]
fn wss_clients_subscribe_and_stream_over_tls_1_3_and_1_2() {
    let pki = Pki::new("stream");
    let gateway = tls_gateway(&pki, |_| {});
    let addr = gateway.local_addr();
    let symbol = first_symbol(&gateway);

    let (mut modern, _) = wss_connect(addr, pki.client_config(&[&rustls::version::TLS13]));
    {
        let conn = &modern.get_ref().conn;
        assert_eq!(conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]), "ALPN http/1.1");
    }
    let (mut older, _) = wss_connect(addr, pki.client_config(&[&rustls::version::TLS12]));
    assert_eq!(older.get_ref().conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    subscribe_and_stream(&mut modern, &symbol, 200);
    subscribe_and_stream(&mut older, &symbol, 200);
    eventually("both handshakes counted", || total(&gateway, "tickgate_tls_handshakes_total") >= 2.0);

    // Many frames per TLS record: the records written are fewer than the frames.
    let (calls, frames) =
        (total(&gateway, "tickgate_write_calls_total"), total(&gateway, "tickgate_frames_written_total"));
    assert!(calls > 0.0 && frames > calls, "frames {frames}, TLS writes {calls}");

    // The close handshake over TLS: the client's close is answered.
    modern.close(None).unwrap();
    loop {
        match modern.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("a clean close over TLS, got {e}"),
        }
    }
}

#[test]
fn plain_http_on_the_tls_port_is_answered_400_and_counted() {
    let pki = Pki::new("plain");
    let gateway = tls_gateway(&pki, |_| {});
    let response = http_request(gateway.local_addr(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("this port speaks TLS: connect with https:// or wss://"), "{response}");
    eventually("counted", || total(&gateway, "tickgate_tls_plain_http_total") == 1.0);
    assert_eq!(series(&gateway, "tickgate_connections_closed_total{reason=\"tls_failed\"}"), Some(1.0));
    // Nothing else disturbed.
    let (mut ws, _) = wss_connect(gateway.local_addr(), pki.client_config(&[&rustls::version::TLS13]));
    subscribe_and_stream(&mut ws, &first_symbol(&gateway), 10);
}

#[test]
fn a_client_hello_on_a_plain_port_gets_a_handshake_failure_alert() {
    let pki = Pki::new("plainport");
    let gateway = start_gateway(|_| {});
    let sock = TcpStream::connect(gateway.local_addr()).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    let session = rustls::ClientConnection::new(
        pki.client_config(&[&rustls::version::TLS13]),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut stream = rustls::StreamOwned::new(session, sock);
    let error = loop {
        match stream.conn.complete_io(&mut stream.sock) {
            Ok(_) if stream.conn.is_handshaking() => {}
            Ok(_) => panic!("a plain port completed a TLS handshake"),
            Err(e) => break e,
        }
    };
    assert!(error.to_string().contains("HandshakeFailure"), "{error}");
    let metrics = |name: &str| tickgate_testkit::metric(gateway.local_addr(), name);
    eventually("counted", || {
        let per_reactor: f64 =
            (0..2).filter_map(|r| metrics(&format!("tickgate_tls_on_plain_port_total{{reactor=\"{r}\"}}"))).sum();
        per_reactor == 1.0
    });
    TestClient::connect(gateway.local_addr());
}

/// The first flight of a real TLS 1.3 client.
fn client_hello(pki: &Pki) -> Vec<u8> {
    let mut session = rustls::ClientConnection::new(
        pki.client_config(&[&rustls::version::TLS13]),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    session.write_tls(&mut hello).unwrap();
    hello
}

/// Whether the server hung up on `sock` (EOF or reset) before `PATIENCE`; what it sent first
/// (an alert) is skipped.
fn hung_up(sock: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false;
            }
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn garbage_and_stalled_handshakes_are_cut_off_and_healthy_clients_stream_on() {
    let pki = Pki::new("garbage");
    let gateway = tls_gateway(&pki, |c| c.limits.handshake_timeout_ms = 1_000);
    let addr = gateway.local_addr();
    let config = pki.client_config(&[&rustls::version::TLS13]);
    let hello = client_hello(&pki);

    // Half-open handshakes: half a ClientHello each, then silence.
    let mut stalled: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut sock = TcpStream::connect(addr).unwrap();
            sock.set_read_timeout(Some(PATIENCE)).unwrap();
            sock.write_all(&hello[..hello.len() / 2]).unwrap();
            sock
        })
        .collect();
    // A healthy client meanwhile: handshake, subscribe, stream.
    let (mut healthy, _) = wss_connect(addr, config.clone());
    subscribe_and_stream(&mut healthy, &first_symbol(&gateway), 100);

    // A handshake record of garbage, and bytes neither TLS nor HTTP: refused at once.
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.set_read_timeout(Some(PATIENCE)).unwrap();
    garbage.write_all(&[0x16, 0x03, 0x01, 0x00, 0x08, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).unwrap();
    assert!(hung_up(&mut garbage), "a garbage ClientHello is cut off");
    let mut binary = TcpStream::connect(addr).unwrap();
    binary.set_read_timeout(Some(PATIENCE)).unwrap();
    binary.write_all(&[0x00, 0x01, 0x02, 0x03]).unwrap();
    assert!(hung_up(&mut binary), "bytes that are not TLS are cut off");
    // Half a ClientHello, then FIN: a failed handshake, not a client that merely vanished.
    let mut truncated = TcpStream::connect(addr).unwrap();
    truncated.set_read_timeout(Some(PATIENCE)).unwrap();
    truncated.write_all(&hello[..hello.len() / 2]).unwrap();
    truncated.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(hung_up(&mut truncated), "a ClientHello cut short by FIN is closed");
    eventually("the three refusals counted", || total(&gateway, "tickgate_tls_failures_total") == 3.0);
    assert_eq!(series(&gateway, "tickgate_connections_closed_total{reason=\"client_vanished\"}"), Some(0.0));

    // The stalled handshakes are cut off by the handshake deadline.
    for sock in &mut stalled {
        assert!(hung_up(sock), "a handshake stalled mid-ClientHello is cut off");
    }
    eventually("counted as handshake timeouts", || {
        series(&gateway, "tickgate_connections_closed_total{reason=\"handshake_timeout\"}") == Some(40.0)
    });
    // The healthy client streamed on throughout.
    for _ in 0..50 {
        assert_eq!(recv(&mut healthy)["symbol"], first_symbol(&gateway));
    }
}

#[test]
fn a_reload_takes_a_good_certificate_and_refuses_a_bad_one() {
    let pki = Pki::new("reload");
    let gateway = tls_gateway(&pki, |_| {});
    let addr = gateway.local_addr();
    let config = pki.client_config(&[&rustls::version::TLS13]);
    let symbol = first_symbol(&gateway);
    // A fresh client configuration each time: a resumed session would show the first certificate.
    let presented = || -> CertificateDer<'static> {
        let stream = tls_connect(addr, pki.client_config(&[&rustls::version::TLS13]));
        stream.conn.peer_certificates().expect("a certificate")[0].clone().into_owned()
    };
    let (mut open, _) = wss_connect(addr, config.clone());
    subscribe_and_stream(&mut open, &symbol, 20);

    // A good new pair: new handshakes present it; the open connection streams on.
    let second = pki.issue(|p| p.distinguished_name.push(DnType::CommonName, "second"));
    gateway.reload_tls().expect("TLS is on").expect("a good pair reloads");
    assert_eq!(presented(), second, "new handshakes present the new certificate");
    for _ in 0..20 {
        assert_eq!(recv(&mut open)["symbol"], symbol, "the open connection is untouched");
    }

    // A key that does not belong to the certificate: refused, the second pair stays.
    pki.issue(|_| {});
    let chain = std::fs::read(&pki.chain).unwrap();
    pki.issue(|_| {});
    std::fs::write(&pki.chain, chain).unwrap();
    let refused = gateway.reload_tls().expect("TLS is on");
    assert!(matches!(refused, Err(CertError::KeyMismatch { .. })), "{refused:?}");
    assert_eq!(presented(), second, "the old certificate is still served");

    // An expired certificate: refused too.
    pki.issue(|p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let refused = gateway.reload_tls().expect("TLS is on");
    assert!(matches!(refused, Err(CertError::Expired { position: 1, .. })), "{refused:?}");
    assert_eq!(presented(), second);

    // A good server certificate followed by an expired intermediate: refused too.
    pki.issue(|_| {});
    let mut expired = CertificateParams::new(vec!["old intermediate".to_string()]).unwrap();
    expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = expired.self_signed(&KeyPair::generate().unwrap()).unwrap();
    let mut chain = std::fs::read_to_string(&pki.chain).unwrap();
    chain.push_str(&expired.pem());
    std::fs::write(&pki.chain, chain).unwrap();
    let refused = gateway.reload_tls().expect("TLS is on");
    assert!(matches!(refused, Err(CertError::Expired { position: 3, .. })), "{refused:?}");
    assert_eq!(presented(), second);

    assert_eq!(series(&gateway, "tickgate_tls_reloads_total{result=\"ok\"}"), Some(1.0));
    assert_eq!(series(&gateway, "tickgate_tls_reloads_total{result=\"failed\"}"), Some(3.0));
    for _ in 0..20 {
        assert_eq!(recv(&mut open)["symbol"], symbol, "still streaming after the failed reloads");
    }
    let _ = std::fs::remove_dir_all(pki.chain.parent().unwrap());
}

#[test]
fn one_of_the_pair_alone_is_a_configuration_error() {
    let mut config = tickgate_testkit::test_config();
    config.tls.cert_file = Some("/nonexistent/chain.pem".into());
    let error = config.validate().expect_err("a certificate without a key is refused");
    assert!(error.to_string().contains("tls.cert_file"), "{error}");
    config.tls.key_file = Some("/nonexistent/key.pem".into());
    let error = Gateway::start(config).expect_err("unreadable files refuse the start");
    assert!(error.to_string().contains("/nonexistent/chain.pem"), "{error}");
}

#[test]
fn a_client_over_a_connection_limit_gets_its_answer_over_tls() {
    let pki = Pki::new("refused");
    let gateway = tls_gateway(&pki, |c| c.limits.max_connections_per_ip = 1);
    let config = pki.client_config(&[&rustls::version::TLS13]);
    let (_first, _) = wss_connect(gateway.local_addr(), config.clone());
    let stream = tls_connect(gateway.local_addr(), config);
    let url = format!("wss://localhost:{}/ws", gateway.local_addr().port());
    match tungstenite::client(url, stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 429, "the refusal, readable through TLS");
        }
        Err(e) => panic!("expected a 429 over TLS, got {e}"),
        Ok(_) => panic!("a second connection from one address was let in"),
    }
}

#[test]
fn a_proxy_header_goes_before_the_client_hello() {
    let pki = Pki::new("proxied");
    let gateway = tls_gateway(&pki, |c| {
        c.server.proxy_protocol = true;
        c.server.proxy_protocol_peers = vec!["127.0.0.1".into()];
        c.limits.max_connections_per_ip = 1;
    });
    let addr = gateway.local_addr();
    let through_balancer = |client: &str| {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(PATIENCE)).unwrap();
        sock.write_all(format!("PROXY TCP4 {client} 10.0.0.1 40000 443\r\n").as_bytes()).unwrap();
        let session = rustls::ClientConnection::new(
            pki.client_config(&[&rustls::version::TLS13]),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut stream = rustls::StreamOwned::new(session, sock);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).expect("TLS handshake after the PROXY header");
        }
        match tungstenite::client(format!("wss://localhost:{}/ws", addr.port()), stream) {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("unexpected {e}"),
        }
    };
    let mut ws = through_balancer("203.0.113.7").expect("a client through the balancer");
    assert_eq!(recv(&mut ws)["type"], "welcome");
    assert_eq!(through_balancer("203.0.113.7").err(), Some(429), "the client's address is the one limited");
    let mut other = through_balancer("203.0.113.8").expect("another client");
    assert_eq!(recv(&mut other)["type"], "welcome");
}

#[test]
fn a_bandwidth_cap_holds_over_tls_too() {
    const CAP: f64 = 8_192.0;
    let pki = Pki::new("bandwidth");
    let gateway = tls_gateway(&pki, |c| {
        c.sim.symbols = 4;
        c.sim.rate = 2_000.0;
        c.limits.max_bytes_per_second = CAP as u64;
    });
    let symbols: Vec<String> = gateway.symbols().iter().map(|(_, s)| s.name.to_string()).collect();
    let (mut ws, _) = wss_connect(gateway.local_addr(), pki.client_config(rustls::ALL_VERSIONS));
    ws.send(Message::text(json!({"op":"subscribe","symbols":symbols}).to_string())).unwrap();
    let started = Instant::now();
    let mut bytes = 0usize;
    while started.elapsed().as_secs() < 3 {
        bytes += recv(&mut ws).to_string().len();
    }
    let secs = started.elapsed().as_secs_f64();
    // The WebSocket bytes are capped (TLS records' overhead is not counted), their JSON text less.
    assert!((bytes as f64) < CAP * (secs + 0.5), "{bytes} bytes in {secs:.1} s at a cap of {CAP} B/s");
    assert!(bytes as f64 > CAP * secs * 0.5, "the cap is used: {bytes} bytes in {secs:.1} s");
}
