//! `tickgate-loadtest run --tls --ca` against the gateway serving `wss://` with a certificate
//! from a CA made at test time: every client upgrades over TLS, streams, drops and resumes over a
//! new TLS session, and the run passes; without the CA, no client gets in.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tickgate_loadtest::metrics::sum_of;
use tickgate_testkit::{http_request, start_gateway};

const BIN: &str = env!("CARGO_BIN_EXE_tickgate-loadtest");

/// A test CA, and a certificate for localhost it signs: (ca.pem, chain.pem, key.pem) in `dir`.
fn make_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "tickgate-loadtest test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("chain.pem"), dir.join("key.pem"));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, format!("{}{}", cert.pem(), ca.pem())).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[test]
fn a_run_over_wss_passes_with_the_test_ca_and_connects_no_one_without_it() {
    let dir = std::env::temp_dir().join(format!("tickgate-loadtest-wss-{}", std::process::id()));
    let (ca, chain, key) = make_pki(&dir);
    let gateway = start_gateway(|c| {
        c.sim.rate = 400.0;
        c.sim.activity = tickgate_feed::sim::Activity::Uniform;
        c.tls.cert_file = Some(chain);
        c.tls.key_file = Some(key);
        c.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let addr = gateway.local_addr().to_string();
    let admin = gateway.admin_addr().expect("an admin port");
    let run = |extra: &[&str]| {
        let output = Command::new(BIN)
            .args(["run", "--addr", &addr, "-n", "10", "-k", "5", "-s", "50", "--rate", "400", "--quiet"])
            .args(["--warmup", "1", "--duration", "2", "--drain", "3", "--p99-bound-ms", "5000", "--out"])
            .arg(dir.join("results"))
            .args(extra)
            .output()
            .expect("tickgate-loadtest runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        (output.status.code(), text)
    };

    let ca = ca.to_str().unwrap();
    let (code, text) =
        run(&["--ca", ca, "--server-name", "localhost", "--resume-share", "0.2", "--resume-every", "0.5"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("verdict: PASSED.") && text.contains(" reconnects resumed "), "{text}");
    let metrics = http_request(admin, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
    // Summed over reactors.
    let handshakes = sum_of(&metrics, "tickgate_tls_handshakes_total").unwrap_or(0);
    assert!(handshakes >= 10, "every client and every reconnect shook hands over TLS: {handshakes}");

    // Not trusting the test CA: every handshake fails, and the run cannot be made.
    let (code, text) = run(&["--tls", "--server-name", "localhost"]);
    assert_ne!(code, Some(0), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
    gateway.shutdown();
}
