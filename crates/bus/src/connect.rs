//! Connecting to NATS and finding (or creating) the stream, on the bus thread's runtime.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::{BusConfig, BusError, BusStats};

/// Starts a bus thread named `name`: a current-thread runtime of its own runs `work`, which first
/// sends what it started with, or why it could not start, through the sender it is given.
/// Returns that and the thread (which ends with `fallback` if no runtime could be built).
pub fn start_thread<S, R, F>(
    name: &str,
    fallback: R,
    work: impl FnOnce(SyncSender<Result<S, BusError>>) -> F + Send + 'static,
) -> Result<(S, JoinHandle<R>), BusError>
where
    S: Send + 'static,
    R: Send + 'static,
    F: Future<Output = R>,
{
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(work(started_tx)),
            Err(e) => {
                let _ = started_tx.send(Err(BusError::Thread(e)));
                fallback
            }
        })
        .map_err(BusError::Thread)?;
    match started_rx.recv() {
        Ok(Ok(started)) => Ok((started, thread)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BusError::Ended),
    }
}

/// Connects with the configured credentials and TLS; tracks the connection in `stats`.
pub async fn connect(config: &BusConfig, stats: Arc<BusStats>) -> Result<async_nats::Client, BusError> {
    let mut options = async_nats::ConnectOptions::new()
        .name("tickgate")
        .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
        .require_tls(config.tls_required);
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(path) = &config.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| BusError::Credentials { path: path.clone(), source })?;
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let events = stats.clone();
    options = options.event_callback(move |event| {
        let stats = events.clone();
        async move {
            match event {
                async_nats::Event::Connected => {
                    if !stats.connected.swap(true, Ordering::Relaxed) {
                        stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("NATS connection is back");
                    }
                }
                async_nats::Event::Disconnected => {
                    stats.connected.store(false, Ordering::Relaxed);
                    tracing::warn!("NATS connection lost; reconnecting");
                }
                other => tracing::info!(event = %other, "NATS"),
            }
        }
    });
    let connect_err = |reason: String| BusError::Connect { url: redacted(&config.url), reason };
    let client = tokio::time::timeout(
        Duration::from_millis(config.connect_timeout_ms.saturating_mul(2)),
        async_nats::connect_with_options(config.url.as_str(), options),
    )
    .await
    .map_err(|_| connect_err("timed out".into()))?
    .map_err(|e| connect_err(e.to_string()))?;
    stats.connected.store(true, Ordering::Relaxed);
    Ok(client)
}

/// The stream's configuration: every tick subject under the prefix, the configured retention.
pub fn stream_config(config: &BusConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        max_age: Duration::from_secs(config.max_age_s),
        // Validated to fit.
        max_bytes: i64::try_from(config.max_bytes).unwrap_or(i64::MAX),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

/// The stream, created with [`stream_config`] if it does not exist. The publisher also
/// `applies` its retention to a stream that exists; an edge takes it as it is.
pub async fn stream(js: &jetstream::Context, config: &BusConfig, apply: bool) -> Result<stream::Stream, BusError> {
    let err = |reason: String| BusError::Stream { stream: config.stream.clone(), reason };
    if apply {
        js.create_or_update_stream(stream_config(config)).await.map_err(|e| err(e.to_string()))?;
    }
    js.get_or_create_stream(stream_config(config)).await.map_err(|e| err(e.to_string()))
}

/// `url` without the password of any `user:password@` in it (for messages and logs).
pub fn redacted(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => match one[scheme + 3..at].split_once(':') {
                Some((user, _)) => format!("{}{user}:<redacted>{}", &one[..scheme + 3], &one[at..]),
                // A token alone.
                None => format!("{}<redacted>{}", &one[..scheme + 3], &one[at..]),
            },
            _ => one.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_url_never_reaches_a_message() {
        assert_eq!(redacted("nats://u:secret@h:4222,nats://h2:4222"), "nats://u:<redacted>@h:4222,nats://h2:4222");
        assert_eq!(redacted("tls://s3cret@h:4222"), "tls://<redacted>@h:4222");
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
