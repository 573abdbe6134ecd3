//! The exchange source over `wss://`: a local exchange serves TLS with a certificate from a CA
//! made at test time; the gateway trusts that CA through `feed.exchange_ca_file` and passes the
//! exchange's ticks on exactly. A server whose certificate it does not trust is refused, counted
//! and retried, and nothing comes from it.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tickgate_testkit::{TestClient, eventually, http_request, metric, start_gateway};
use tungstenite::Message;

type TlsWs = tungstenite::WebSocket<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>;

/// A CA, made at test time.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// Writes the CA certificate as PEM to a fresh file.
    fn pem_file(&self, name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("tickgate-test-{}-{name}.pem", std::process::id()));
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }

    /// A server configuration presenting a certificate for `host` signed by this CA.
    fn server_config(&self, host: &str) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![host.to_string()]).unwrap().signed_by(&key, &self.issuer).unwrap();
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone(), self.issuer.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }
}

/// Accepts one connection and runs the TLS and WebSocket handshakes as the exchange.
fn accept_tls(listener: &TcpListener, config: &Arc<rustls::ServerConfig>) -> tungstenite::Result<TlsWs> {
    let (stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let connection = rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
    tungstenite::accept(rustls::StreamOwned::new(connection, stream)).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
    })
}

/// Every log line of this test binary (the gateway logs from its own threads, so the subscriber
/// is the global one).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        logs
    })
}

/// The log lines that mention `needle`.
fn log_lines_with(needle: &str) -> Vec<String> {
    let logs = logs().0.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&logs).lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn trade(price: &str, qty: &str) -> String {
    format!(
        r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{t},"s":"BTCUSDT","t":1,"p":"{price}","q":"{qty}","T":{t},"m":true,"M":true}}}}"#,
        t = now_ms()
    )
}

/// Reads the gateway's subscribe and plays `messages`.
fn play(ws: &mut TlsWs, messages: &[String]) {
    let subscribe = ws.read().unwrap().into_text().unwrap();
    assert_eq!(subscribe.as_str(), r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker"],"id":1}"#);
    ws.send(Message::text(r#"{"result":null,"id":1}"#)).unwrap();
    for m in messages {
        ws.send(Message::text(m.clone())).unwrap();
    }
}

fn binance_over(url: String, ca_file: PathBuf) -> tickgate_server::Gateway {
    start_gateway(|c| {
        c.server.reactors = 1;
        c.feed.source = "binance".into();
        c.feed.exchange_url = Some(url);
        c.feed.exchange_ca_file = Some(ca_file);
        c.feed.exchange_symbols = vec!["BTCUSDT".into()];
        c.feed.aliases = [("BTCUSDT".to_string(), "BTC-USD".to_string())].into();
    })
}

#[test]
fn ticks_arrive_exactly_over_wss_from_an_exchange_signed_by_the_configured_ca() {
    ticks_arrive_exactly_over_wss("127.0.0.1:0", "localhost", "localhost", "trusted-ca");
}

#[test]
fn an_ipv6_literal_host_is_checked_against_the_certificate_s_ip_address() {
    ticks_arrive_exactly_over_wss("[::1]:0", "[::1]", "::1", "trusted-ca-ipv6");
}

/// An exchange listening on `listen`, reached as `wss://{url_host}:PORT/stream`, presents a
/// certificate for `cert_host` signed by the CA the gateway is told to trust.
fn ticks_arrive_exactly_over_wss(listen: &str, url_host: &str, cert_host: &str, ca_name: &str) {
    let ca = Ca::new("tickgate test CA");
    let ca_file = ca.pem_file(ca_name);
    let exchange = TcpListener::bind(listen).unwrap();
    let port = exchange.local_addr().unwrap().port();
    let gateway = binance_over(format!("wss://{url_host}:{port}/stream"), ca_file.clone());
    let addr = gateway.local_addr();
    let mut client = TestClient::connect(addr);
    client.subscribe(&["BTC-USD"]);

    let mut ws = accept_tls(&exchange, &ca.server_config(cert_host)).expect("the gateway completes the handshake");
    let book = r#"{"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT","b":"64000.00000000","B":"1.50000000","a":"64000.50000000","A":"0.25000000"}}"#;
    play(&mut ws, &[trade("64000.01000000", "0.00100000"), book.to_string(), trade("63999.99000000", "2.50000000")]);
    let first = client.recv_type("trade");
    assert_eq!((first["price"].as_str(), first["size"].as_str()), (Some("64000.01"), Some("0.00100000")));
    let quote = client.recv_type("quote");
    assert_eq!(
        (quote["bid"].as_str(), quote["bid_size"].as_str(), quote["ask"].as_str(), quote["ask_size"].as_str()),
        (Some("64000.00"), Some("1.50000000"), Some("64000.50"), Some("0.25000000"))
    );
    let second = client.recv_type("trade");
    assert_eq!((second["price"].as_str(), second["size"].as_str()), (Some("63999.99"), Some("2.50000000")));
    assert_eq!(metric(addr, "tickgate_source_connect_failures_total{source=\"binance\"}"), Some(0.0));
    let ready = http_request(addr, "GET /readyz HTTP/1.1\r\n\r\n");
    assert!(ready.contains("\"connected\":true"), "{ready}");
    drop(ws);
    drop(gateway);
    let _ = std::fs::remove_file(ca_file);
}

#[test]
fn an_exchange_with_an_untrusted_certificate_is_refused_counted_and_retried() {
    let trusted = Ca::new("tickgate test CA");
    let ca_file = trusted.pem_file("only-trusted-ca");
    let impostor = Ca::new("someone else's CA");
    let exchange = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = exchange.local_addr().unwrap().port();
    logs();
    let gateway = binance_over(format!("wss://localhost:{port}/stream"), ca_file.clone());
    let addr = gateway.local_addr();

    // Twice, the exchange presents a certificate the gateway has no reason to trust: the
    // handshake fails (the gateway aborts it), and the gateway tries again after its backoff.
    let untrusted = impostor.server_config("localhost");
    for attempt in 1..=2 {
        assert!(accept_tls(&exchange, &untrusted).is_err(), "attempt {attempt}: the gateway refuses the certificate");
    }
    eventually("both refusals are counted", || {
        metric(addr, "tickgate_source_connect_failures_total{source=\"binance\"}").is_some_and(|n| n >= 2.0)
    });
    assert_eq!(metric(addr, "tickgate_ticks_ingested_total{source=\"binance\"}"), Some(0.0), "nothing came through");
    assert_eq!(metric(addr, "tickgate_source_reconnects_total{source=\"binance\"}"), Some(0.0), "never connected");
    assert_eq!(metric(addr, "tickgate_feed_up{source=\"binance\"}"), Some(0.0));
    let url = format!("url=wss://localhost:{port}/stream");
    eventually("the refusal is logged, saying why", || {
        log_lines_with(&url).iter().any(|l| {
            l.contains("WARN")
                && l.contains("exchange TLS handshake failed")
                && l.contains("TLS handshake with localhost failed: invalid peer certificate: UnknownIssuer")
        })
    });
    let ready = http_request(addr, "GET /readyz HTTP/1.1\r\n\r\n");
    assert!(ready.starts_with("HTTP/1.1 503") && ready.contains("\"connected\":false"), "{ready}");
    // The gateway is unharmed: a client connects, is told the feed is down, and subscribes.
    let mut client = TestClient::connect(addr);
    assert_eq!(client.welcome["feed"], "down", "{}", client.welcome);
    client.subscribe(&["BTC-USD"]);

    // A certificate for another name, from the trusted CA, is refused too.
    assert!(accept_tls(&exchange, &trusted.server_config("exchange.example")).is_err(), "wrong name refused");
    eventually("the third refusal is counted", || {
        metric(addr, "tickgate_source_connect_failures_total{source=\"binance\"}").is_some_and(|n| n >= 3.0)
    });
    eventually("the wrong name is logged", || {
        log_lines_with(&url).iter().any(|l| l.contains("certificate not valid for name \"localhost\""))
    });

    // Once the exchange presents a certificate from the trusted CA, the feed comes up.
    let mut ws = accept_tls(&exchange, &trusted.server_config("localhost")).expect("trusted certificate accepted");
    play(&mut ws, &[trade("64002.50000000", "0.01000000")]);
    assert_eq!(client.recv_type("status")["feed"], "up");
    let t = client.recv_type("trade");
    assert_eq!((t["price"].as_str(), t["size"].as_str()), (Some("64002.50"), Some("0.01000000")));
    drop(ws);
    drop(gateway);
    let _ = std::fs::remove_file(ca_file);
}

#[test]
fn a_bad_ca_file_stops_the_start_with_the_key_named() {
    let missing = std::env::temp_dir().join("tickgate-test-no-such-ca.pem");
    let mut config = tickgate_testkit::test_config();
    config.feed.exchange_ca_file = Some(missing.clone());
    let err = tickgate_server::Gateway::start(config).map(|_| ()).unwrap_err().to_string();
    assert!(err.starts_with("feed.exchange_ca_file cannot read"), "{err}");
    assert!(err.contains(&missing.display().to_string()) && !err.contains('\n'), "{err}");
}
