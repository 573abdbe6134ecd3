//! `[bus]`: whether this process is part of a cluster, and how it reaches NATS.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What this process is in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BusRole {
    /// No bus: one process, its own sources (the default).
    #[default]
    Off,
    /// Runs the sources, sequences, publishes every tick, and serves clients too.
    Publisher,
    /// No sources: its ticks come from the stream; serves clients.
    Edge,
}

/// `[bus]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub role: BusRole,
    /// NATS server URL(s), comma-separated: `nats://host:4222`, `tls://host:4222`.
    pub url: String,
    /// The JetStream stream (created if missing, with the retention below).
    pub stream: String,
    /// Ticks go to `<subject_prefix>.<SYMBOL>` (a `.` in a symbol name written `~`).
    pub subject_prefix: String,
    /// The stream keeps ticks this long (seconds)...
    pub max_age_s: u64,
    /// ...and at most this many bytes (oldest dropped first).
    pub max_bytes: u64,
    /// User and password, or a token, or a creds file (NATS 2 decentralized auth).
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub creds_file: Option<PathBuf>,
    /// TLS to NATS: required, extra CA file, client certificate and key.
    pub tls_required: bool,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// A publisher's queue of ticks waiting to be published; a tick that finds it full is not
    /// published (counted; edges see a `gap`).
    pub publish_queue: usize,
    /// How long connecting at start may take, in ms.
    pub connect_timeout_ms: u64,
    /// Edge: at start, read this many seconds of the stream's past into the resume history
    /// (0: only each symbol's last tick), so a client that saw them on another edge resumes here.
    pub replay_s: u64,
    /// Edge: a resume older than the resume history is read from the stream, at most this many
    /// events per symbol (0: never; the client gets a `gap` and a snapshot).
    pub resume_fetch_max_events: usize,
    /// Edge: resumes being read from the stream at once per reactor; more are answered with a
    /// `gap` and a snapshot (counted).
    pub resume_fetches_per_reactor: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            role: BusRole::Off,
            url: "nats://127.0.0.1:4222".into(),
            stream: "TICKGATE".into(),
            subject_prefix: "tickgate.ticks".into(),
            // An hour of ticks, at most 1 GiB: room for an edge to catch up after a restart or
            // a short outage on a box like this one (see OPERATIONS.md, "Sizing and retention").
            max_age_s: 3600,
            max_bytes: 1 << 30,
            user: None,
            password: None,
            token: None,
            creds_file: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            publish_queue: 65_536,
            connect_timeout_ms: 5000,
            // A minute of a busy market is read in a few seconds at start (see OPERATIONS.md,
            // "Resume on any edge").
            replay_s: 60,
            resume_fetch_max_events: 4096,
            resume_fetches_per_reactor: 16,
        }
    }
}

/// What is wrong with a `[bus]` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bus.{key}: {reason}")]
pub struct BusConfigError {
    pub key: &'static str,
    pub reason: String,
}

impl BusConfig {
    pub fn enabled(&self) -> bool {
        self.role != BusRole::Off
    }

    pub fn validate(&self) -> Result<(), BusConfigError> {
        let err = |key, reason: &str| Err(BusConfigError { key, reason: reason.into() });
        let token_ok =
            |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>'));
        if self.stream.is_empty() || !self.stream.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return err("stream", "must be letters, digits, '-' or '_'");
        }
        if !self.subject_prefix.split('.').all(token_ok) {
            return err("subject_prefix", "must be dot-separated tokens without spaces, '*' or '>'");
        }
        if self.url.trim().is_empty() {
            return err("url", "is empty");
        }
        if self.max_age_s == 0 || self.max_bytes == 0 {
            return err("max_age_s", "max_age_s and max_bytes must be above 0");
        }
        if i64::try_from(self.max_bytes).is_err() {
            return err("max_bytes", "must fit in i64");
        }
        if self.replay_s > self.max_age_s {
            return err("replay_s", "must be at most max_age_s (the stream keeps nothing older)");
        }
        if self.publish_queue == 0 {
            return err("publish_queue", "must be above 0");
        }
        let auths = [self.user.is_some(), self.token.is_some(), self.creds_file.is_some()];
        if auths.iter().filter(|&&a| a).count() > 1 {
            return err("user", "set one of user/password, token or creds_file");
        }
        if self.user.is_some() != self.password.is_some() {
            return err("password", "user and password go together");
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return err("tls_cert_file", "tls_cert_file and tls_key_file go together");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_off() {
        let config = BusConfig::default();
        assert!(!config.enabled());
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn bad_names_and_half_credentials_are_refused() {
        let bad = [
            BusConfig { stream: "a.b".into(), ..Default::default() },
            BusConfig { subject_prefix: "ticks.>".into(), ..Default::default() },
            BusConfig { subject_prefix: "ticks..x".into(), ..Default::default() },
            BusConfig { user: Some("u".into()), ..Default::default() },
            BusConfig {
                user: Some("u".into()),
                password: Some("p".into()),
                token: Some("t".into()),
                ..Default::default()
            },
            BusConfig { tls_cert_file: Some("c.pem".into()), ..Default::default() },
            BusConfig { max_bytes: u64::MAX, ..Default::default() },
            BusConfig { replay_s: 7200, ..Default::default() },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
