//! `wss://`: the server's TLS configuration, its certificate (reloadable), and the per-connection
//! TLS layer the reactor drives by readiness.
//!
//! One `rustls::ServerConnection` per socket sits between the socket and the WebSocket bytes
//! (see [`crate::connection::ConnIo`]); rustls runs on the ring provider, TLS 1.3 and 1.2, ALPN
//! `http/1.1`. The certificate is chosen per handshake by [`ReloadingCert`], so a reload
//! (SIGHUP) changes what new handshakes present and leaves every open connection alone. A
//! certificate that does not load, whose key does not match, or that is expired or not yet
//! valid is refused: the old one stays.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The first byte of a TLS handshake record (a ClientHello starts with it).
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// A fatal `handshake_failure` alert record, in the clear: what a TLS client that reached a
/// plain port gets (it reports "alert handshake failure" instead of a garbled HTTP answer).
pub const HANDSHAKE_FAILURE_ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28];

/// Why a certificate was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read the certificate chain {path}: {reason}")]
    Chain { path: PathBuf, reason: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot read the private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the private key {key} does not belong to the certificate {cert}: {reason}")]
    KeyMismatch { cert: PathBuf, key: PathBuf, reason: String },
    #[error(
        "certificate {position} of the chain {path} (1: the server's own) is not a readable X.509 certificate: {reason}"
    )]
    Malformed { path: PathBuf, position: usize, reason: &'static str },
    #[error(
        "certificate {position} of the chain {path} (1: the server's own) expired (not after {not_after} s since 1970)"
    )]
    Expired { path: PathBuf, position: usize, not_after: i64 },
    #[error(
        "certificate {position} of the chain {path} (1: the server's own) is not valid yet (not before {not_before} s since 1970)"
    )]
    NotYetValid { path: PathBuf, position: usize, not_before: i64 },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// PEM: the server certificate first, then its intermediates.
    pub chain: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Loads and checks a certificate chain and its key: the key matches the certificate, which is
/// valid at `now_secs` (seconds since 1970).
pub fn load_certificate(
    paths: &CertPaths,
    provider: &CryptoProvider,
    now_secs: i64,
) -> Result<Arc<CertifiedKey>, CertError> {
    let chain_err = |reason: String| CertError::Chain { path: paths.chain.clone(), reason };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.chain)
        .map_err(|e| chain_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| chain_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate { path: paths.chain.clone() });
    }
    // Every certificate of the chain, intermediates too: clients refuse a chain with any one
    // of them out of its validity.
    for (i, certificate) in chain.iter().enumerate() {
        let (path, position) = (paths.chain.clone(), i + 1);
        let (not_before, not_after) =
            validity(certificate).map_err(|reason| CertError::Malformed { path: path.clone(), position, reason })?;
        if now_secs > not_after {
            return Err(CertError::Expired { path, position, not_after });
        }
        if now_secs < not_before {
            return Err(CertError::NotYetValid { path, position, not_before });
        }
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .map_err(|e| CertError::Key { path: paths.key.clone(), reason: e.to_string() })?;
    let mismatch = |e: rustls::Error| CertError::KeyMismatch {
        cert: paths.chain.clone(),
        key: paths.key.clone(),
        reason: e.to_string(),
    };
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(mismatch)?;
    Ok(Arc::new(certified))
}

/// The certificate new handshakes present; replaced whole by a reload.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    fn get(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set(&self, certified: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = certified;
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// The gateway's TLS: one configuration shared by every reactor, and its reloads.
#[derive(Debug)]
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
    cert: Arc<ReloadingCert>,
    paths: CertPaths,
    provider: Arc<CryptoProvider>,
    /// Whether the admin listener speaks TLS too.
    pub admin: bool,
    /// Reloads that took the new certificate, and those that kept the old one.
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Seconds since 1970 after which the chain served now expires (its earliest certificate).
    pub not_after: AtomicU64,
}

impl Tls {
    /// Loads the certificate and builds the configuration (TLS 1.3 and 1.2, ALPN `http/1.1`).
    pub fn new(paths: CertPaths, admin: bool, now_secs: i64) -> Result<Self, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = load_certificate(&paths, &provider, now_secs)?;
        let not_after = not_after_of(&certified);
        let cert = Arc::new(ReloadingCert { current: RwLock::new(certified) });
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            cert,
            paths,
            provider,
            admin,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            not_after: AtomicU64::new(not_after),
        })
    }

    /// A TLS session for a newly accepted socket.
    pub fn accept(&self) -> Result<rustls::ServerConnection, rustls::Error> {
        rustls::ServerConnection::new(self.config.clone())
    }

    /// Reads the certificate and key again from their files; on success new handshakes present
    /// them, on failure the old ones stay. Open connections are not touched either way.
    pub fn reload(&self, now_secs: i64) -> Result<(), CertError> {
        match load_certificate(&self.paths, &self.provider, now_secs) {
            Ok(certified) => {
                self.not_after.store(not_after_of(&certified), Ordering::Relaxed);
                self.cert.set(certified);
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// When the chain served stops being valid: the earliest expiry of its certificates.
fn not_after_of(certified: &CertifiedKey) -> u64 {
    let expiries = certified.cert.iter().map(|c| validity(c).map_or(0, |(_, after)| after.max(0) as u64));
    expiries.min().unwrap_or(0)
}

/// What went wrong with a connection's TLS, kept by its layer for the reactor to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The first bytes look like a plain HTTP request: answered in plain HTTP with a 400.
    PlainHttp,
    /// Neither TLS nor HTTP.
    NotTls,
    /// rustls refused the handshake or a record (a TLS alert went out when it could).
    Protocol,
    /// The client hung up in the middle of its handshake (a truncated ClientHello, then FIN).
    Truncated,
}

/// One connection's TLS session.
#[derive(Debug)]
pub struct TlsLayer {
    pub session: rustls::ServerConnection,
    /// The first byte was looked at (a ClientHello, or plain HTTP on a TLS port).
    pub first_byte_seen: bool,
    pub failure: Option<TlsFailure>,
    /// The last read stopped at its cap with the socket perhaps not empty: read again next
    /// turn (edge-triggered readiness will not say so again).
    pub capped: bool,
}

impl TlsLayer {
    pub fn new(session: rustls::ServerConnection) -> Self {
        Self { session, first_byte_seen: false, failure: None, capped: false }
    }
}

/// What a connection's first byte says about a TLS port's client.
pub fn classify_first_byte(byte: u8) -> Option<TlsFailure> {
    match byte {
        HANDSHAKE_RECORD => None,
        b'A'..=b'Z' => Some(TlsFailure::PlainHttp),
        _ => Some(TlsFailure::NotTls),
    }
}

/// The certificate's validity (notBefore, notAfter) in seconds since 1970, read from its DER
/// (RFC 5280 §4.1: Certificate → TBSCertificate → [version], serial, signature, issuer, validity).
pub fn validity(der: &[u8]) -> Result<(i64, i64), &'static str> {
    let (certificate, _) = der_element(der, 0x30)?;
    let (mut tbs, _) = der_element(certificate, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs, 0xa0)?.1;
    }
    let tbs = der_element(tbs, 0x02)?.1; // serial
    let tbs = der_element(tbs, 0x30)?.1; // signature algorithm
    let tbs = der_element(tbs, 0x30)?.1; // issuer
    let (validity, _) = der_element(tbs, 0x30)?;
    let (not_before, rest) = der_time(validity)?;
    let (not_after, _) = der_time(rest)?;
    Ok((not_before, not_after))
}

/// One DER element with tag `tag` at the start of `input`: its content and what follows it.
fn der_element(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), &'static str> {
    let (&found, rest) = input.split_first().ok_or("truncated")?;
    if found != tag {
        return Err("unexpected element");
    }
    let (&first, mut rest) = rest.split_first().ok_or("truncated")?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return Err("bad length");
        }
        let len = rest[..octets].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[octets..];
        len
    };
    if rest.len() < len {
        return Err("truncated");
    }
    Ok(rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as seconds since 1970.
fn der_time(input: &[u8]) -> Result<(i64, &[u8]), &'static str> {
    let (tag, year_digits) = match input.first() {
        Some(0x17) => (0x17, 2),
        Some(0x18) => (0x18, 4),
        _ => return Err("unexpected time"),
    };
    let (text, rest) = der_element(input, tag)?;
    if text.len() != year_digits + 11 || text.last() != Some(&b'Z') {
        return Err("unexpected time format");
    }
    let number = |digits: &[u8]| -> Result<i64, &'static str> {
        digits.iter().try_fold(0i64, |acc, &d| match d {
            b'0'..=b'9' => Ok(acc * 10 + i64::from(d - b'0')),
            _ => Err("unexpected time digit"),
        })
    };
    let mut year = number(&text[..year_digits])?;
    if year_digits == 2 {
        year += if year >= 50 { 1900 } else { 2000 };
    }
    let fields = &text[year_digits..];
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|i| number(&fields[i..i + 2]).unwrap_or(i64::MAX));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err("time out of range");
    }
    Ok((days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second, rest))
}

/// Days from 1970-01-01 to the given date (proleptic Gregorian; Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Seconds since 1970, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The paths, for log lines.
pub fn describe(paths: &CertPaths) -> String {
    format!("{} (key {})", display(&paths.chain), display(&paths.key))
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 12, 7), 20_794);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn validity_reads_an_rcgen_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2024, 2, 29);
        params.not_after = rcgen::date_time_ymd(2051, 1, 2);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let (before, after) = validity(cert.der()).expect("validity");
        assert_eq!(before, days_from_civil(2024, 2, 29) * 86_400);
        assert_eq!(after, days_from_civil(2051, 1, 2) * 86_400, "GeneralizedTime past 2049");
    }

    #[test]
    fn validity_refuses_garbage_without_panicking() {
        for bad in [&[][..], &[0x30], &[0x30, 0x85, 1, 2, 3, 4, 5], &[0x30, 0x03, 0x30, 0x01], &[0x16, 0x03, 0x01]] {
            assert!(validity(bad).is_err(), "{bad:?}");
        }
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let der = params.self_signed(&rcgen::KeyPair::generate().expect("key")).expect("cert").der().to_vec();
        for cut in 0..der.len().min(300) {
            let _ = validity(&der[..cut]);
        }
    }

    #[test]
    fn the_first_byte_tells_tls_from_http() {
        assert_eq!(classify_first_byte(0x16), None);
        assert_eq!(classify_first_byte(b'G'), Some(TlsFailure::PlainHttp));
        assert_eq!(classify_first_byte(0x00), Some(TlsFailure::NotTls));
    }
}
