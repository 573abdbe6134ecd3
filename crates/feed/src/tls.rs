//! TLS for the exchange client (`wss://`): rustls with the ring crypto provider, trusting the
//! webpki roots (Mozilla's CA list, compiled in) plus, optionally, every certificate of a PEM
//! file (`feed.exchange_ca_file`), for a private relay or a test exchange.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why the TLS client configuration cannot be built; each reads as one line.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a PEM file: {source}")]
    Pem { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("{path} holds no certificate (no `-----BEGIN CERTIFICATE-----` block)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: certificate {index} cannot be a trust anchor: {source}")]
    Anchor { path: PathBuf, index: usize, source: rustls::Error },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reads every certificate of a PEM file (other blocks, such as keys, are ignored); at least one
/// is required.
pub fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem = std::fs::read(path).map_err(|source| TlsConfigError::Read { path: path.into(), source })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsConfigError::Pem { path: path.into(), source })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// The client configuration every `wss://` connection of the exchange source uses: TLS 1.2 and
/// 1.3 with the ring provider, the webpki roots, and the certificates of `ca_file` if given.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for (i, cert) in ca_certificates(path)?.into_iter().enumerate() {
            roots.add(cert).map_err(|source| TlsConfigError::Anchor { path: path.into(), index: i + 1, source })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("tickgate-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn the_webpki_roots_alone_need_no_file() {
        assert!(client_config(None).is_ok());
    }

    #[test]
    fn a_bad_ca_file_is_refused_on_one_line() {
        let empty = temp_file("empty.pem", "no PEM here\n");
        let garbage = temp_file(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        );
        let cases = [
            (Path::new("/nonexistent/tickgate-ca.pem"), "cannot read /nonexistent/tickgate-ca.pem"),
            (empty.as_path(), "holds no certificate"),
            (garbage.as_path(), "certificate 1 cannot be a trust anchor"),
        ];
        for (path, needle) in cases {
            let err = client_config(Some(path)).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        let _ = std::fs::remove_file(empty);
        let _ = std::fs::remove_file(garbage);
    }
}
