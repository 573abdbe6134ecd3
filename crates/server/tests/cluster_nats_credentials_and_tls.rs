//! A cluster reaches a real `nats-server` that requires credentials (user and password, a
//! token, a creds file) or TLS (with or without a client certificate), as `[bus]` configures
//! them: ticks flow from the publisher to an edge's client; a wrong secret, an untrusted
//! certificate or a missing one is one clear error at start.

use std::path::{Path, PathBuf};

use tickgate_bus::BusRole;
use tickgate_server::{Config, Gateway};
use tickgate_testkit::nats::NatsServer;
use tickgate_testkit::{TestClient, start_gateway};

const SYMBOL: &str = "AAPL";

/// A publisher and an edge on `url`, `auth` applied to both; a client of the edge gets events.
fn ticks_flow(url: &str, auth: impl Fn(&mut Config)) {
    let role = |role| {
        let auth = &auth;
        move |c: &mut Config| {
            c.server.reactors = 1;
            c.sim.symbols = 5;
            c.sim.rate = 1_000.0;
            c.bus.role = role;
            c.bus.url = url.to_string();
            c.bus.max_bytes = 64 << 20;
            auth(c);
        }
    };
    let _publisher = start_gateway(role(BusRole::Publisher));
    let edge = start_gateway(role(BusRole::Edge));
    let mut client = TestClient::connect(edge.local_addr());
    client.subscribe(&[SYMBOL]);
    let mut events = 0;
    while events < 10 {
        let msg = client.recv();
        if msg["symbol"] == SYMBOL && (msg["type"] == "trade" || msg["type"] == "quote") {
            events += 1;
        }
    }
}

/// Why an edge on `url` with `auth` cannot start.
fn start_error(url: &str, auth: impl FnOnce(&mut Config)) -> String {
    let mut config = tickgate_testkit::test_config();
    config.bus.role = BusRole::Edge;
    config.bus.url = url.to_string();
    config.bus.connect_timeout_ms = 2000;
    auth(&mut config);
    Gateway::start(config).expect_err("refused by NATS").to_string()
}

#[test]
fn user_and_password() {
    let nats = NatsServer::start_with(&["--user", "tickgate", "--pass", "s3cret"]);
    ticks_flow(&nats.url(), |c| {
        c.bus.user = Some("tickgate".into());
        c.bus.password = Some("s3cret".into());
    });
    let error = start_error(&nats.url(), |c| {
        c.bus.user = Some("tickgate".into());
        c.bus.password = Some("wrong".into());
    });
    assert!(error.contains("cannot reach NATS at") && error.contains("authorization"), "{error}");
    assert!(!error.contains("wrong"), "no password in the message: {error}");
    let error = start_error(&nats.url(), |_| {});
    assert!(error.contains("authorization"), "without credentials: {error}");
}

#[test]
fn token() {
    let nats = NatsServer::start_with(&["--auth", "t0ken-for-the-bus"]);
    ticks_flow(&nats.url(), |c| c.bus.token = Some("t0ken-for-the-bus".into()));
    let error = start_error(&nats.url(), |c| c.bus.token = Some("not-the-token".into()));
    assert!(error.contains("cannot reach NATS at") && error.contains("authorization"), "{error}");
    assert!(!error.contains("not-the-token"), "no token in the message: {error}");
}

#[test]
fn a_creds_file_that_cannot_be_read_is_one_clear_error() {
    let missing = std::env::temp_dir().join(format!("tickgate-missing-{}.creds", std::process::id()));
    let error = start_error("nats://127.0.0.1:1", |c| c.bus.creds_file = Some(missing.clone()));
    assert!(error.contains("NATS credentials file") && error.contains(missing.to_str().unwrap()), "{error}");
}

/// A test CA and a certificate for 127.0.0.1 it signs, made by scripts/make-test-cert.sh.
struct Certs(PathBuf);

impl Certs {
    /// In a folder of its own for the test `name`.
    fn make(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tickgate-nats-tls-{}-{name}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-test-cert.sh");
        let made = std::process::Command::new("bash").arg(script).arg(&dir).output().expect("bash runs");
        assert!(made.status.success(), "make-test-cert.sh: {}", String::from_utf8_lossy(&made.stderr));
        Self(dir)
    }

    /// A client certificate signed by the same CA (for a server that verifies clients).
    fn with_client_certificate(self) -> Self {
        let script = "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=tickgate \
              -keyout client-key.pem -out client.csr 2>/dev/null \
            && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 \
              -out client.pem -extfile <(printf 'extendedKeyUsage=clientAuth\n') 2>/dev/null";
        let made = std::process::Command::new("bash").args(["-c", script]).current_dir(&self.0).output().unwrap();
        assert!(made.status.success(), "a client certificate: {}", String::from_utf8_lossy(&made.stderr));
        self
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("a UTF-8 temp path").to_string()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn tls_to_nats() {
    let certs = Certs::make("server");
    let nats =
        NatsServer::start_with(&["--tls", "--tlscert", &certs.file("chain.pem"), "--tlskey", &certs.file("key.pem")]);
    let url = format!("tls://{}", nats.addr());
    ticks_flow(&url, |c| {
        c.bus.tls_required = true;
        c.bus.tls_ca_file = Some(certs.file("ca.pem").into());
    });
    // The server's certificate is signed by a CA this edge was not told to trust.
    let error = start_error(&url, |c| c.bus.tls_required = true);
    assert!(error.contains("cannot reach NATS at tls://"), "{error}");
}

/// NATS decentralized auth, made here as `nsc` would: an operator, a system account, an account
/// with JetStream, and a user of it, as signed JWTs.
mod decentralized {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use nkeys::KeyPair;
    use serde_json::{Value, json};

    /// A JWT of `nats` claims about `subject`, signed by `issuer`.
    pub fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(json!({"typ": "JWT", "alg": "ed25519-nkey"}).to_string());
        let iat = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let jti = format!("{}{iat}", &subject[..24]);
        let claims =
            json!({"jti": jti, "iat": iat, "iss": issuer.public_key(), "name": name, "sub": subject, "nats": nats});
        let body = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = issuer.sign(body.as_bytes()).expect("an nkey signs");
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn account_limits(jetstream: bool) -> Value {
        let storage = if jetstream { -1 } else { 0 };
        json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
            "conn": -1, "leaf": -1, "mem_storage": storage, "disk_storage": storage, "streams": -1, "consumer": -1,
        })
    }

    /// The nats-server configuration and the user's creds file.
    pub fn make() -> (String, String) {
        let operator = KeyPair::new_operator();
        let (system, account, user) = (KeyPair::new_account(), KeyPair::new_account(), KeyPair::new_user());
        let operator_jwt =
            jwt(&operator, &operator.public_key(), "tickgate-test", json!({"type": "operator", "version": 2}));
        let account_jwt = |kp: &KeyPair, name, jetstream| {
            let nats = json!({"limits": account_limits(jetstream), "type": "account", "version": 2});
            jwt(&operator, &kp.public_key(), name, nats)
        };
        let user_nats =
            json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2});
        let user_jwt = jwt(&account, &user.public_key(), "tickgate", user_nats);
        let config = format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{\n  {sys}: \"{}\"\n  {acc}: \"{}\"\n}}\n",
            account_jwt(&system, "SYS", false),
            account_jwt(&account, "TICKGATE", true),
            sys = system.public_key(),
            acc = account.public_key(),
        );
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().expect("a seed")
        );
        (config, creds)
    }
}

#[test]
fn creds_file() {
    let (config, creds) = decentralized::make();
    let dir = std::env::temp_dir().join(format!("tickgate-nats-creds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (config_path, creds_path) = (dir.join("nats.conf"), dir.join("tickgate.creds"));
    std::fs::write(&config_path, config).unwrap();
    std::fs::write(&creds_path, creds).unwrap();
    let nats = NatsServer::start_with(&["-c", config_path.to_str().unwrap()]);
    ticks_flow(&nats.url(), |c| c.bus.creds_file = Some(creds_path.clone()));
    let error = start_error(&nats.url(), |_| {});
    assert!(error.contains("cannot reach NATS at"), "without the creds file: {error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_to_nats_with_a_client_certificate() {
    let certs = Certs::make("client").with_client_certificate();
    let nats = NatsServer::start_with(&[
        "--tlsverify",
        "--tlscert",
        &certs.file("chain.pem"),
        "--tlskey",
        &certs.file("key.pem"),
        "--tlscacert",
        &certs.file("ca.pem"),
    ]);
    let url = format!("tls://{}", nats.addr());
    let trust = |c: &mut Config| {
        c.bus.tls_required = true;
        c.bus.tls_ca_file = Some(certs.file("ca.pem").into());
    };
    ticks_flow(&url, |c| {
        trust(c);
        c.bus.tls_cert_file = Some(certs.file("client.pem").into());
        c.bus.tls_key_file = Some(certs.file("client-key.pem").into());
    });
    // Without a client certificate the server refuses the connection.
    let error = start_error(&url, trust);
    assert!(error.contains("cannot reach NATS at tls://"), "{error}");
}
