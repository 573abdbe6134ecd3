//! The gateway's configuration: every setting, its default, and its validation.
//!
//! config/default.toml lists the same settings with the same defaults and a comment each; a
//! test keeps the two in step.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use tickgate_core::{AssetClass, Budget, Policy, SymbolInfo, SymbolTable};
use tickgate_feed::resolve::UnknownSymbols;
use tickgate_feed::sim::SimConfig;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub sim: SimConfig,
    pub universe: UniverseConfig,
    pub feed: FeedConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    /// `[bus]`: a cluster on NATS JetStream (off by default).
    pub bus: tickgate_bus::BusConfig,
}

/// `[feed]`: where ticks come from, and whether to record them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// "sim" (the built-in simulated market), "replay" (a recording) or "tcp" (JSON lines over
    /// TCP).
    pub source: String,
    /// With "tcp": connect to this upstream address (reconnecting when it goes away)...
    pub tcp_connect: Option<SocketAddr>,
    /// ...or listen here for the upstream to connect.
    pub tcp_listen: Option<SocketAddr>,
    /// Upstream messages whose exchange time is further than this from now are rejected, in ms.
    pub max_skew_ms: u64,
    /// The largest forward jump of an upstream's `seq` announced as an upstream gap; a larger
    /// one (or a step back of more than this) restarts the numbering with an upstream reset.
    pub max_seq_jump: u64,
    /// With "binance" or "coinbase": the exchange's WebSocket URL, `wss://` (TLS) or `ws://`.
    pub exchange_url: Option<String>,
    /// A PEM file of CA certificates trusted for `wss://`, besides the built-in webpki roots
    /// (a private relay's CA, a test exchange's).
    pub exchange_ca_file: Option<std::path::PathBuf>,
    /// With "binance" or "coinbase": the exchange's names to subscribe to (BTCUSDT, BTC-USD).
    pub exchange_symbols: Vec<String>,
    /// Upstream name -> universe name, e.g. { BTCUSDT = "BTC-USD" }.
    pub aliases: std::collections::HashMap<String, String>,
    /// The recording to replay (JSON lines, `.gz` for gzip), in the sim universe's symbols.
    pub replay_path: Option<std::path::PathBuf>,
    /// 1.0 plays at the recorded pace, 10.0 ten times faster, 0 as fast as possible.
    pub replay_speed: f64,
    /// Start over at the end of the recording.
    pub replay_loop: bool,
    /// Write every published tick to this file (replayable; `.gz` for gzip).
    pub record_path: Option<std::path::PathBuf>,
    /// Several named sources at once (`[[feed.sources]]`), in place of the single source the
    /// keys above describe.
    pub sources: Vec<SourceConfig>,
    /// Network sources: nothing heard from the upstream for this long ends the session (the
    /// source is down, clients are told, and it reconnects), in ms.
    pub upstream_silence_ms: u64,
    /// Network sources: the first wait before reconnecting; it doubles (with jitter) up to
    /// `reconnect_max_ms`, in ms.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// A session that delivered and lasted this long was healthy: the wait starts over, in ms.
    pub healthy_session_ms: u64,
    /// After telling clients a source is down, "up" is not told sooner than this, in ms; also the
    /// least wait before reconnecting after a session that delivered.
    pub status_hold_ms: u64,
}

/// The ranges of the network sources' liveness keys (`feed.*_ms`), inclusive.
pub const UPSTREAM_SILENCE_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;
pub const RECONNECT_MIN_MS: std::ops::RangeInclusive<u64> = 1..=60_000;
pub const RECONNECT_MAX_MS: u64 = 3_600_000;
pub const HEALTHY_SESSION_MS: std::ops::RangeInclusive<u64> = 0..=3_600_000;
pub const STATUS_HOLD_MS: std::ops::RangeInclusive<u64> = 0..=60_000;

/// One of several sources (`[[feed.sources]]`): a name, and the keys of a single source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// How metrics, /readyz, logs and status messages name the source: 1-32 of a-z, 0-9, '-', '_'.
    pub name: String,
    /// "sim", "replay", "tcp", "binance" or "coinbase".
    pub source: String,
    #[serde(default)]
    pub tcp_connect: Option<SocketAddr>,
    #[serde(default)]
    pub tcp_listen: Option<SocketAddr>,
    #[serde(default)]
    pub exchange_url: Option<String>,
    #[serde(default)]
    pub exchange_symbols: Vec<String>,
    /// This source's names -> the universe's, on top of `feed.aliases`.
    #[serde(default)]
    pub aliases: std::collections::HashMap<String, String>,
    #[serde(default)]
    pub replay_path: Option<std::path::PathBuf>,
    #[serde(default = "one")]
    pub replay_speed: f64,
    #[serde(default)]
    pub replay_loop: bool,
}

fn one() -> f64 {
    1.0
}

/// The kinds of source, as configured.
pub const SOURCE_KINDS: [&str; 5] = ["sim", "replay", "tcp", "binance", "coinbase"];

impl FeedConfig {
    /// The sources to run: `[[feed.sources]]`, or the single source of the `[feed]` keys (named
    /// after its kind). Aliases are `feed.aliases` plus each source's own.
    pub fn sources(&self) -> Vec<SourceConfig> {
        if self.sources.is_empty() {
            return vec![SourceConfig {
                name: self.source.clone(),
                source: self.source.clone(),
                tcp_connect: self.tcp_connect,
                tcp_listen: self.tcp_listen,
                exchange_url: self.exchange_url.clone(),
                exchange_symbols: self.exchange_symbols.clone(),
                aliases: self.aliases.clone(),
                replay_path: self.replay_path.clone(),
                replay_speed: self.replay_speed,
                replay_loop: self.replay_loop,
            }];
        }
        self.sources
            .iter()
            .map(|s| {
                let mut aliases = self.aliases.clone();
                aliases.extend(s.aliases.clone());
                SourceConfig { aliases, ..s.clone() }
            })
            .collect()
    }

    /// How the network sources judge and retry their upstreams.
    pub fn liveness(&self) -> tickgate_feed::upstream::Liveness {
        tickgate_feed::upstream::Liveness {
            silence: std::time::Duration::from_millis(self.upstream_silence_ms),
            reconnect_min: std::time::Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: std::time::Duration::from_millis(self.reconnect_max_ms),
            healthy_after: std::time::Duration::from_millis(self.healthy_session_ms),
            status_hold: std::time::Duration::from_millis(self.status_hold_ms),
        }
    }

    fn validate_liveness(&self) -> Result<(), ConfigError> {
        let ranges = [
            ("feed.upstream_silence_ms", self.upstream_silence_ms, UPSTREAM_SILENCE_MS),
            ("feed.reconnect_min_ms", self.reconnect_min_ms, RECONNECT_MIN_MS),
            ("feed.reconnect_max_ms", self.reconnect_max_ms, self.reconnect_min_ms..=RECONNECT_MAX_MS),
            ("feed.healthy_session_ms", self.healthy_session_ms, HEALTHY_SESSION_MS),
            ("feed.status_hold_ms", self.status_hold_ms, STATUS_HOLD_MS),
        ];
        for (key, value, range) in ranges {
            if !range.contains(&value) {
                return Err(invalid(key, format!("must be from {} to {}, got {value}", range.start(), range.end())));
            }
        }
        Ok(())
    }

    /// Whether any single-source key differs from its default (they and `[[feed.sources]]`
    /// exclude each other).
    fn single_source_configured(&self) -> bool {
        let d = Self::default();
        self.source != d.source
            || self.tcp_connect.is_some()
            || self.tcp_listen.is_some()
            || self.exchange_url.is_some()
            || !self.exchange_symbols.is_empty()
            || self.replay_path.is_some()
            || self.replay_speed != d.replay_speed
            || self.replay_loop
    }
}

impl SourceConfig {
    /// A source named `name` of kind `source`, every other key at its default.
    pub fn new(name: &str, source: &str) -> Self {
        Self {
            name: name.into(),
            source: source.into(),
            tcp_connect: None,
            tcp_listen: None,
            exchange_url: None,
            exchange_symbols: Vec::new(),
            aliases: Default::default(),
            replay_path: None,
            replay_speed: one(),
            replay_loop: false,
        }
    }

    /// Checks the keys of one source; `prefix` is how errors name it (`feed.` or
    /// `feed.sources[2].`).
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}{k}");
        match self.source.as_str() {
            "sim" => {}
            "replay" => match &self.replay_path {
                Some(path) if path.is_file() => {}
                Some(path) => {
                    return Err(invalid(key("replay_path"), format!("{} is not a readable file", path.display())));
                }
                None => return Err(invalid(key("replay_path"), "is required with source = \"replay\"")),
            },
            "tcp" => {
                if self.tcp_connect.is_some() == self.tcp_listen.is_some() {
                    return Err(invalid(
                        key("tcp_connect"),
                        format!("or {prefix}tcp_listen (exactly one) is required with source = \"tcp\""),
                    ));
                }
            }
            "binance" | "coinbase" => {
                if self.exchange_url.is_none() || self.exchange_symbols.is_empty() {
                    return Err(invalid(
                        key("exchange_url"),
                        format!("and {prefix}exchange_symbols are required with an exchange source"),
                    ));
                }
                if let Some(url) = &self.exchange_url {
                    let ok = url.parse::<http::Uri>().is_ok_and(|uri| {
                        matches!(uri.scheme_str(), Some("ws" | "wss")) && uri.host().is_some_and(|h| !h.is_empty())
                    });
                    if !ok {
                        return Err(invalid(
                            key("exchange_url"),
                            format!("must be a ws:// or wss:// URL with a host, got {url:?}"),
                        ));
                    }
                }
            }
            other => {
                return Err(invalid(
                    key("source"),
                    format!("must be \"sim\", \"replay\", \"tcp\", \"binance\" or \"coinbase\", got {other:?}"),
                ));
            }
        }
        if !(self.replay_speed.is_finite() && self.replay_speed >= 0.0) {
            return Err(invalid(
                key("replay_speed"),
                format!("must be 0 or a positive number, got {}", self.replay_speed),
            ));
        }
        Ok(())
    }
}

/// An hour and a day in ms: the longest timeouts, so a deadline from now never overflows.
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
/// Largest `feed.max_skew_ms` (ten years): its value in ns fits in a u64.
pub const MAX_SKEW_MS: u64 = 10 * 365 * DAY_MS;
/// Largest `feed.max_seq_jump`.
pub const MAX_SEQ_JUMP: u64 = 1_000_000_000_000;

/// Refuses an alias named like a symbol of the universe (but for one naming itself): it would
/// silently reroute that symbol's messages for every source.
fn refuse_shadowing_aliases(
    aliases: &std::collections::HashMap<String, String>,
    key: &str,
    universe: &SymbolTable,
) -> Result<(), ConfigError> {
    let mut shadowing: Vec<&String> = aliases
        .iter()
        .filter(|(name, to)| name != to && universe.lookup(name).is_some())
        .map(|(name, _)| name)
        .collect();
    shadowing.sort();
    match shadowing.first() {
        Some(name) => Err(invalid(
            format!("{key}.{name}"),
            format!("is a symbol of the universe: an alias may not take its name (it maps to {:?})", aliases[*name]),
        )),
        None => Ok(()),
    }
}

/// Whether `name` may name a source: it appears in metric labels and client messages.
fn is_valid_source_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `[universe]`: the symbols clients can subscribe to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UniverseConfig {
    /// The symbols and their scales. With none here and no `symbols_file`, the universe is the
    /// simulated market's (`[sim] symbols`).
    pub symbols: Vec<SymbolConfig>,
    /// A file of more symbols, one `NAME,PRICE_SCALE,SIZE_SCALE` per line (`#` comments).
    pub symbols_file: Option<std::path::PathBuf>,
    /// An upstream symbol the universe does not have: "reject" it (counted), or "add" it.
    pub unknown_symbols: String,
    /// Decimal places of prices and sizes of added symbols: values with more are rejected.
    pub added_price_scale: u8,
    pub added_size_scale: u8,
    /// Most symbols "add" may add; past it, their messages are rejected as universe_full.
    pub max_added_symbols: usize,
}

impl Default for UniverseConfig {
    fn default() -> Self {
        Self {
            symbols: Vec::new(),
            symbols_file: None,
            unknown_symbols: "reject".into(),
            added_price_scale: 8,
            added_size_scale: 8,
            max_added_symbols: 10_000,
        }
    }
}

/// One symbol of `[universe] symbols`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolConfig {
    pub name: String,
    /// Decimal places of prices: a price with more is rejected, never rounded.
    pub price_scale: u8,
    /// Decimal places of sizes.
    pub size_scale: u8,
}

/// Largest `universe.max_added_symbols`.
pub const MAX_ADDED_SYMBOLS: usize = 1_000_000;

impl UniverseConfig {
    /// Builds the universe: the configured symbols (or the simulated market's), with room for
    /// the symbols "add" may add.
    pub fn build(&self, sim: &SimConfig) -> Result<SymbolTable, ConfigError> {
        let mut table = if self.symbols.is_empty() && self.symbols_file.is_none() {
            tickgate_feed::sim::universe(sim)
        } else {
            let mut table = SymbolTable::new();
            let entry = |name: &str, price_scale, size_scale| SymbolInfo {
                name: name.into(),
                class: AssetClass::Equity,
                price_scale,
                size_scale,
            };
            for s in &self.symbols {
                table
                    .insert(entry(&s.name, s.price_scale, s.size_scale))
                    .map_err(|e| invalid("universe.symbols", e.to_string()))?;
            }
            if let Some(path) = &self.symbols_file {
                let key = "universe.symbols_file";
                let text =
                    std::fs::read_to_string(path).map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
                for (n, line) in text.lines().enumerate() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if line.is_empty() {
                        continue;
                    }
                    let at = |reason: String| invalid(key, format!("{}:{}: {reason}", path.display(), n + 1));
                    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
                    let [name, price_scale, size_scale] = fields[..] else {
                        return Err(at(format!("expected NAME,PRICE_SCALE,SIZE_SCALE, got {line:?}")));
                    };
                    let scale = |text: &str| text.parse::<u8>().map_err(|_| at(format!("{text:?} is not a scale")));
                    table
                        .insert(entry(name, scale(price_scale)?, scale(size_scale)?))
                        .map_err(|e| at(e.to_string()))?;
                }
            }
            if table.is_empty() {
                return Err(invalid("universe.symbols", "lists no symbol"));
            }
            table
        };
        if self.unknown() != UnknownSymbols::Reject {
            table.reserve_additions(self.max_added_symbols);
        }
        Ok(table)
    }

    /// What sources do with symbols the universe does not have.
    pub fn unknown(&self) -> UnknownSymbols {
        match self.unknown_symbols.as_str() {
            "add" => UnknownSymbols::Add { price_scale: self.added_price_scale, size_scale: self.added_size_scale },
            _ => UnknownSymbols::Reject,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.unknown_symbols.as_str(), "reject" | "add") {
            return Err(invalid(
                "universe.unknown_symbols",
                format!("must be \"reject\" or \"add\", got {:?}", self.unknown_symbols),
            ));
        }
        let max = tickgate_core::decimal::MAX_SCALE;
        if self.added_price_scale > max || self.added_size_scale > max {
            return Err(invalid("universe.added_price_scale", format!("and added_size_scale must be at most {max}")));
        }
        if self.max_added_symbols > MAX_ADDED_SYMBOLS {
            return Err(invalid("universe.max_added_symbols", format!("must be at most {MAX_ADDED_SYMBOLS}")));
        }
        Ok(())
    }
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            source: "sim".into(),
            tcp_connect: None,
            tcp_listen: None,
            max_skew_ms: 60_000,
            max_seq_jump: tickgate_feed::upstream_seq::DEFAULT_MAX_SEQ_JUMP,
            exchange_url: None,
            exchange_ca_file: None,
            exchange_symbols: Vec::new(),
            aliases: std::collections::HashMap::new(),
            replay_path: None,
            replay_speed: 1.0,
            replay_loop: false,
            record_path: None,
            sources: Vec::new(),
            upstream_silence_ms: 20_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 10_000,
            healthy_session_ms: 10_000,
            status_hold_ms: 1_000,
        }
    }
}

/// `[auth]`: who may connect and which symbols each user may receive.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require a token from every client.
    pub enabled: bool,
    /// "HS256" (with `jwt_secret`), "RS256" or "ES256" (with `jwt_public_key_file`), or "" for
    /// API keys only.
    pub jwt_algorithm: String,
    /// The HS256 shared secret (at least 32 bytes).
    pub jwt_secret: String,
    /// PEM public key for RS256 or ES256.
    pub jwt_public_key_file: Option<std::path::PathBuf>,
    /// Static API keys, for simple deployments.
    pub api_keys: Vec<ApiKey>,
    /// How long a client that brought no token at the handshake has to send
    /// `{"op":"auth","token":..}`, in ms.
    pub auth_timeout_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            jwt_algorithm: String::new(),
            jwt_secret: String::new(),
            jwt_public_key_file: None,
            api_keys: Vec::new(),
            auth_timeout_ms: 5_000,
        }
    }
}

/// One static API key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub key: String,
    pub user: String,
    /// Symbol patterns the key is entitled to: "AAPL", "BTC-*", "*".
    pub symbols: Vec<String>,
    pub max_connections: Option<usize>,
}

/// `[server]`: where to listen and how many reactors.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the WebSocket endpoint (`/ws`) and the HTTP routes.
    pub listen: SocketAddr,
    /// Separate address for /metrics, /readyz and /healthz, kept private; when set, the public
    /// address no longer serves /metrics and /readyz.
    pub admin_listen: Option<SocketAddr>,
    /// Reactor threads; 0 means one per available core.
    pub reactors: usize,
    /// Pin reactor i to core i (modulo the number of cores).
    pub pin_cores: bool,
    /// Capacity, in ticks, of each reactor's channel from the ingest thread.
    pub channel_capacity: usize,
    /// How long shutdown waits for clients to take their close frame, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// TCP_NODELAY on client sockets: each write leaves at once rather than waiting to be
    /// merged with the next (Nagle's algorithm).
    pub tcp_nodelay: bool,
    /// Serve `/echo`, a WebSocket endpoint that echoes every message through the real connection
    /// path, for protocol conformance tests. Off in production.
    pub echo_route: bool,
    /// SO_SNDBUF of client sockets in bytes; 0 keeps the kernel's autotuning. A cap bounds the
    /// kernel memory a stalled client can hold and makes the outbound budget bite sooner.
    pub socket_send_buffer: usize,
    /// Longest wait of a busy reactor before its next write pass, in microseconds; 0 (the
    /// default) never waits. After a pass (fan-out and writes) of T that wrote to at least half
    /// its connections, a reactor waits min(T, this) before the next, so each connection's
    /// frames leave in fewer, larger writes: less CPU per delivery for a little more latency
    /// (see `crate::hold` and docs/OPERATIONS.md).
    pub write_hold_max_us: u64,
    /// Let other processes of the same user listen on `listen` too (SO_REUSEPORT): the kernel
    /// then spreads new connections over every process. Off by default: the address is
    /// tickgate's alone, and a second process on it fails to start.
    pub share_port: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: None,
            reactors: 0,
            pin_cores: true,
            channel_capacity: 65_536,
            shutdown_grace_ms: 5_000,
            socket_send_buffer: 0,
            echo_route: false,
            tcp_nodelay: true,
            write_hold_max_us: 0,
            share_port: false,
        }
    }
}

/// `[limits]`: per-connection resources.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest client message (and frame), in bytes; larger ones are closed with 1009.
    pub max_message_size: usize,
    /// Bytes of the per-connection read buffer, allocated at the upgrade.
    pub read_buffer_size: usize,
    /// Largest HTTP request head, in bytes; larger ones get 431.
    pub max_request_head: usize,
    /// Bytes queued for one connection past which its slow-consumer policy applies.
    pub outbound_soft_limit: usize,
    /// Bytes queued for one connection past which it is closed with 1008 "slow consumer".
    pub outbound_hard_limit: usize,
    /// How long bytes may wait with none written before the connection is closed with 1008, in ms.
    pub write_deadline_ms: u64,
    /// Slow-consumer policy of connections that do not choose one: conflate, drop or disconnect.
    pub slow_consumer_policy: String,
    /// How long a closing connection may take to receive its close frame and hang up, in ms.
    pub close_linger_ms: u64,
    /// How long a client has to complete the HTTP upgrade, in ms; slower ones get 408.
    pub handshake_timeout_ms: u64,
    /// Open connections in the whole gateway past which new ones get 503.
    pub max_connections: usize,
    /// Open connections from one IP address past which new ones get 429; 0 = no limit.
    pub max_connections_per_ip: usize,
    /// Messages a client may send per second on average (token bucket).
    pub messages_per_second: f64,
    /// Messages a client may send in a burst.
    pub message_burst: u32,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// A connection silent this long gets a ping, in ms.
    pub ping_interval_ms: u64,
    /// A connection silent this long (no message, no pong) is closed, in ms.
    pub idle_timeout_ms: u64,
    /// Origins allowed to open WebSockets (e.g. "https://app.example.com"); empty = any.
    pub allowed_origins: Vec<String>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_size: 16 * 1024,
            read_buffer_size: 128,
            max_request_head: 8 * 1024,
            outbound_soft_limit: 256 * 1024,
            outbound_hard_limit: 1024 * 1024,
            write_deadline_ms: 10_000,
            slow_consumer_policy: "conflate".into(),
            close_linger_ms: 2_000,
            handshake_timeout_ms: 5_000,
            max_connections: 19_000,
            max_connections_per_ip: 0,
            messages_per_second: 20.0,
            message_burst: 50,
            max_subscriptions: 1024,
            ping_interval_ms: 30_000,
            idle_timeout_ms: 75_000,
            allowed_origins: Vec::new(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Default level (error, warn, info, debug, trace) or a tracing filter; RUST_LOG overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

/// A configuration that cannot be used, with the key and the reason on one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message} (at `{snippet}`)")]
    Parse { path: String, line: usize, column: usize, message: String, snippet: String },
    #[error("{path}: {message}")]
    ParseNoSpan { path: String, message: String },
    #[error("{key} {reason}")]
    Invalid { key: String, reason: String },
    #[error(transparent)]
    Sim(#[from] tickgate_feed::sim::SimConfigError),
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                    let line_end = text[line_start..].find('\n').map_or(text.len(), |i| line_start + i);
                    ConfigError::Parse {
                        path: origin.to_string(),
                        line,
                        column: span.start - line_start + 1,
                        message,
                        snippet: text[line_start..line_end].trim().to_string(),
                    }
                }
                None => ConfigError::ParseNoSpan { path: origin.to_string(), message },
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bus.validate().map_err(|e| invalid(format!("bus.{}", e.key), e.reason))?;
        let s = &self.server;
        if s.reactors > 1024 {
            return Err(invalid(
                "server.reactors",
                format!("must be at most 1024 (0 = one per core), got {}", s.reactors),
            ));
        }
        if !(16..=1 << 24).contains(&s.channel_capacity) {
            return Err(invalid(
                "server.channel_capacity",
                format!("must be between 16 and 16777216 ticks, got {}", s.channel_capacity),
            ));
        }
        if s.write_hold_max_us != 0 && !(100..=100_000).contains(&s.write_hold_max_us) {
            // Under 100 µs no pass would ever hold (crate::hold::MIN_HOLD): refused, not ignored.
            return Err(invalid(
                "server.write_hold_max_us",
                format!("must be 0 (no hold) or 100 to 100000 µs, got {}", s.write_hold_max_us),
            ));
        }
        let l = &self.limits;
        if !(128..=64 << 20).contains(&l.max_message_size) {
            return Err(invalid(
                "limits.max_message_size",
                format!("must be between 128 bytes and 64 MiB, got {}", l.max_message_size),
            ));
        }
        if !(64..=1 << 20).contains(&l.read_buffer_size) {
            return Err(invalid(
                "limits.read_buffer_size",
                format!("must be between 64 bytes and 1 MiB, got {}", l.read_buffer_size),
            ));
        }
        if !(512..=1 << 20).contains(&l.max_request_head) {
            return Err(invalid(
                "limits.max_request_head",
                format!("must be between 512 bytes and 1 MiB, got {}", l.max_request_head),
            ));
        }
        if l.outbound_soft_limit < 4 * 1024 {
            return Err(invalid(
                "limits.outbound_soft_limit",
                format!("must be at least 4096 bytes, got {}", l.outbound_soft_limit),
            ));
        }
        if l.outbound_hard_limit < 2 * l.outbound_soft_limit {
            return Err(invalid(
                "limits.outbound_hard_limit",
                format!(
                    "must be at least twice limits.outbound_soft_limit ({}), got {}",
                    l.outbound_soft_limit, l.outbound_hard_limit
                ),
            ));
        }
        if l.write_deadline_ms < 100 {
            return Err(invalid(
                "limits.write_deadline_ms",
                format!("must be at least 100 ms, got {}", l.write_deadline_ms),
            ));
        }
        if !(l.messages_per_second.is_finite() && l.messages_per_second > 0.0) || l.message_burst == 0 {
            return Err(invalid(
                "limits.messages_per_second",
                format!(
                    "and limits.message_burst must be positive, got {} and {}",
                    l.messages_per_second, l.message_burst
                ),
            ));
        }
        if l.idle_timeout_ms <= l.ping_interval_ms {
            return Err(invalid(
                "limits.idle_timeout_ms",
                format!(
                    "must be longer than limits.ping_interval_ms ({}), got {}",
                    l.ping_interval_ms, l.idle_timeout_ms
                ),
            ));
        }
        if l.max_connections == 0 || l.max_subscriptions == 0 || l.handshake_timeout_ms == 0 {
            return Err(invalid(
                "limits",
                "max_connections, max_subscriptions and handshake_timeout_ms must be positive".to_string(),
            ));
        }
        if Policy::parse(&l.slow_consumer_policy).is_none() {
            return Err(invalid(
                "limits.slow_consumer_policy",
                format!("must be \"conflate\", \"drop\" or \"disconnect\", got {:?}", l.slow_consumer_policy),
            ));
        }
        self.check_ranges()?;
        self.sim.validate()?;
        self.universe.validate()?;
        let universe = self.universe.build(&self.sim)?;
        let symbols = universe.capacity();
        let f = &self.feed;
        refuse_shadowing_aliases(&f.aliases, "feed.aliases", &universe)?;
        for (i, source) in f.sources.iter().enumerate() {
            refuse_shadowing_aliases(&source.aliases, &format!("feed.sources[{i}].aliases"), &universe)?;
        }
        if f.sources.is_empty() {
            f.sources()[0].validate("feed.")?;
        } else {
            if f.single_source_configured() {
                return Err(invalid(
                    "feed.sources",
                    "replaces the single source of feed.source and its keys: set one or the other",
                ));
            }
            for (i, source) in f.sources.iter().enumerate() {
                let prefix = format!("feed.sources[{i}].");
                if !is_valid_source_name(&source.name) {
                    return Err(invalid(
                        format!("{prefix}name"),
                        format!("must be 1-32 of a-z, 0-9, '-', '_', got {:?}", source.name),
                    ));
                }
                if f.sources[..i].iter().any(|other| other.name == source.name) {
                    return Err(invalid(format!("{prefix}name"), format!("{:?} names two sources", source.name)));
                }
                source.validate(&prefix)?;
            }
            if f.sources.iter().filter(|s| s.source == "sim").count() > 1 {
                return Err(invalid("feed.sources", "may hold one \"sim\" source at most (it is [sim])"));
            }
        }
        f.validate_liveness()?;
        if f.exchange_ca_file.is_some() {
            self.exchange_tls()?;
        }
        crate::auth::Authenticator::from_config(&self.auth)?;
        self.up_front(symbols).check()?;
        Ok(())
    }

    /// What starting with this configuration allocates before the first client, for a universe
    /// of `symbols` (its capacity, added symbols included).
    pub fn up_front(&self, symbols: usize) -> UpFront {
        let reactors = self.reactor_count() as u128;
        // A channel slot holds a message and crossbeam's stamp.
        let slot = (std::mem::size_of::<tickgate_feed::fanout::FanoutMsg>() + 8) as u128;
        // Each reactor, and the ingest thread, keep last values per symbol; each reactor also
        // an index entry.
        let per_symbol = (std::mem::size_of::<tickgate_core::LastValues>() + std::mem::size_of::<Vec<u32>>()) as u128;
        let per_connection = (std::mem::size_of::<crate::connection::Connection>() + 8) as u128;
        UpFront {
            reactors,
            channel_slot: slot,
            channels: reactors * self.server.channel_capacity as u128 * slot,
            symbol_state: (reactors + 1) * symbols as u128 * per_symbol,
            connection_slots: (self.limits.max_connections as u128 + 16 * reactors) * per_connection,
        }
    }

    /// Checks that every duration and count is within a range where no conversion (ms to ns,
    /// a deadline from now, a socket option) can wrap or panic.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        let (s, l, f) = (&self.server, &self.limits, &self.feed);
        let counts = [
            ("server.shutdown_grace_ms", s.shutdown_grace_ms, 0, HOUR_MS, "ms"),
            ("server.socket_send_buffer", s.socket_send_buffer as u64, 0, 1 << 30, "bytes"),
            ("limits.write_deadline_ms", l.write_deadline_ms, 100, HOUR_MS, "ms"),
            ("limits.close_linger_ms", l.close_linger_ms, 0, HOUR_MS, "ms"),
            ("limits.handshake_timeout_ms", l.handshake_timeout_ms, 1, HOUR_MS, "ms"),
            ("limits.ping_interval_ms", l.ping_interval_ms, 1, DAY_MS, "ms"),
            ("limits.idle_timeout_ms", l.idle_timeout_ms, 1, DAY_MS, "ms"),
            ("limits.max_connections", l.max_connections as u64, 1, 10_000_000, "connections"),
            ("limits.max_connections_per_ip", l.max_connections_per_ip as u64, 0, 10_000_000, "connections"),
            ("limits.max_subscriptions", l.max_subscriptions as u64, 1, 1_000_000, "subscriptions"),
            ("auth.auth_timeout_ms", self.auth.auth_timeout_ms, 1, HOUR_MS, "ms"),
            ("feed.max_skew_ms", f.max_skew_ms, 1, MAX_SKEW_MS, "ms"),
            ("feed.max_seq_jump", f.max_seq_jump, 0, MAX_SEQ_JUMP, "sequence numbers"),
        ];
        for (key, value, min, max, unit) in counts {
            if !(min..=max).contains(&value) {
                return Err(invalid(key, format!("must be between {min} and {max} {unit}, got {value}")));
            }
        }
        if l.messages_per_second > 1e9 {
            return Err(invalid(
                "limits.messages_per_second",
                format!("must be at most 1000000000, got {}", l.messages_per_second),
            ));
        }
        Ok(())
    }

    /// The TLS client configuration of the exchange source (`wss://`): the built-in webpki roots
    /// plus the certificates of `feed.exchange_ca_file`.
    pub fn exchange_tls(&self) -> Result<std::sync::Arc<tickgate_feed::tls::ClientConfig>, ConfigError> {
        tickgate_feed::tls::client_config(self.feed.exchange_ca_file.as_deref())
            .map_err(|e| invalid("feed.exchange_ca_file", e.to_string()))
    }

    /// The per-connection byte budget.
    pub fn budget(&self) -> Budget {
        Budget {
            soft: self.limits.outbound_soft_limit,
            hard: self.limits.outbound_hard_limit,
            write_deadline: std::time::Duration::from_millis(self.limits.write_deadline_ms),
        }
    }

    /// The slow-consumer policy of connections that do not choose one.
    pub fn default_policy(&self) -> Policy {
        Policy::parse(&self.limits.slow_consumer_policy).unwrap_or_default()
    }

    /// Reactor threads to run: the configured number, or one per available core.
    pub fn reactor_count(&self) -> usize {
        match self.server.reactors {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Most memory a configuration may allocate up front (see [`Config::up_front`]).
pub const MAX_UP_FRONT_BYTES: u128 = 4 << 30;

/// Memory allocated at start, before any client, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpFront {
    pub reactors: u128,
    /// Bytes of one slot of a reactor's channel.
    pub channel_slot: u128,
    /// Every reactor's channel from the ingest thread.
    pub channels: u128,
    /// Per-symbol state (last values, subscription index) of every reactor and the ingest thread.
    pub symbol_state: u128,
    /// Every reactor's connection table, sized for its share of `limits.max_connections`.
    pub connection_slots: u128,
}

impl UpFront {
    pub fn total(&self) -> u128 {
        self.channels + self.symbol_state + self.connection_slots
    }

    /// Refuses more than [`MAX_UP_FRONT_BYTES`], naming the keys that decide it.
    fn check(&self) -> Result<(), ConfigError> {
        if self.total() <= MAX_UP_FRONT_BYTES {
            return Ok(());
        }
        let mib = |bytes: u128| bytes >> 20;
        Err(invalid(
            "server.reactors, server.channel_capacity, limits.max_connections and the universe",
            format!(
                "would allocate {} MiB up front ({} reactors: channels {} MiB, {} bytes a slot; per-symbol state {} MiB; \
                 connection slots {} MiB), more than the {} MiB allowed",
                mib(self.total()),
                self.reactors,
                mib(self.channels),
                self.channel_slot,
                mib(self.symbol_state),
                mib(self.connection_slots),
                mib(MAX_UP_FRONT_BYTES),
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickgate_core::SymbolId;

    #[test]
    fn what_is_allocated_up_front_is_bounded_with_the_keys_and_the_total_named() {
        let refused = |text: &str| Config::from_toml(text, "test.toml").unwrap_err().to_string();
        let err = refused("[server]\nreactors = 1024\n");
        assert!(err.starts_with("server.reactors, server.channel_capacity, limits.max_connections"), "{err}");
        let mut big = Config::default();
        big.server.reactors = 1024;
        let up = big.up_front(Config::default().universe.build(&big.sim).unwrap().capacity());
        let named =
            format!("allocate {} MiB up front (1024 reactors: channels {} MiB", up.total() >> 20, up.channels >> 20);
        assert!(err.contains(&named), "{err}");
        assert!(err.contains("more than the 4096 MiB allowed") && !err.contains('\n'), "{err}");
        assert!(refused("[limits]\nmax_connections = 100000000\n").contains("connection slots 5"));
        assert!(refused("[server]\nreactors = 512\n[sim]\nsymbols = 100000\n").contains("per-symbol state"));
        // The same reactors with small channels fit; so does the default, by far.
        Config::from_toml("[server]\nreactors = 1024\nchannel_capacity = 1024\n", "test.toml").unwrap();
        let default = Config::default().up_front(500);
        assert!(default.total() < MAX_UP_FRONT_BYTES / 16, "{default:?}");
        assert_eq!(default.total(), default.channels + default.symbol_state + default.connection_slots);
    }

    #[test]
    fn errors_name_the_key_on_one_line() {
        let cases = [
            ("[server]\nreactors = \"two\"\n", "2:12", "reactors = \"two\""),
            ("[server]\nlisten = \"nowhere\"\n", "2:10", "listen"),
            ("[limits]\nmax_mesage_size = 10\n", "2:1", "unknown field `max_mesage_size`"),
            ("[server]\nreactors = 5000\n", "", "server.reactors must be at most 1024"),
            ("[server]\nwrite_hold_max_us = 200000\n", "", "server.write_hold_max_us must be 0 (no hold) or 100 to"),
            ("[server]\nwrite_hold_max_us = 50\n", "", "server.write_hold_max_us must be 0 (no hold) or 100 to"),
            ("[limits]\nmax_message_size = 10\n", "", "limits.max_message_size must be between"),
            ("[sim]\nrate = -1.0\n", "", "sim.rate"),
            ("[limits]\nslow_consumer_policy = \"pray\"\n", "", "limits.slow_consumer_policy must be"),
            ("[limits]\noutbound_hard_limit = 300000\n", "", "limits.outbound_hard_limit must be at least twice"),
            ("[universe]\nunknown_symbols = \"maybe\"\n", "", "universe.unknown_symbols must be"),
            ("[universe]\nsymbols = [{ name = \"a b\", price_scale = 2, size_scale = 0 }]\n", "", "universe.symbols"),
            ("[universe]\nsymbols = [{ name = \"X\", price_scale = 30, size_scale = 0 }]\n", "", "scale above 18"),
            ("[[feed.sources]]\nname = \"A B\"\nsource = \"sim\"\n", "", "feed.sources[0].name must be"),
            ("[[feed.sources]]\nname = \"a\"\nsource = \"tcp\"\n", "", "feed.sources[0].tcp_connect or"),
            (
                "[[feed.sources]]\nname = \"a\"\nsource = \"sim\"\n[[feed.sources]]\nname = \"a\"\nsource = \"sim\"\n",
                "",
                "\"a\" names two sources",
            ),
            (
                "[feed]\nsource = \"tcp\"\ntcp_listen = \"127.0.0.1:1\"\n[[feed.sources]]\nname = \"a\"\nsource = \"sim\"\n",
                "",
                "feed.sources replaces the single source",
            ),
            (
                "[feed]\nsource = \"binance\"\nexchange_url = \"https://example.com/ws\"\nexchange_symbols = [\"BTCUSDT\"]\n",
                "",
                "feed.exchange_url must be a ws:// or wss:// URL",
            ),
            (
                "[feed]\nexchange_ca_file = \"/nonexistent/ca.pem\"\n",
                "",
                "feed.exchange_ca_file cannot read /nonexistent/ca.pem",
            ),
        ];
        check_refusals(&cases);
    }

    fn check_refusals(cases: &[(&str, &str, &str)]) {
        for &(text, position, needle) in cases {
            let err = Config::from_toml(text, "test.toml").unwrap_err().to_string();
            assert!(!err.contains('\n'), "one line: {err}");
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
            assert!(err.contains(position), "{err:?} should contain {position:?}");
        }
    }

    #[test]
    fn liveness_keys_are_range_checked_and_named() {
        let cases = [
            ("upstream_silence_ms = 99", "feed.upstream_silence_ms must be from 100 to 3600000, got 99"),
            ("reconnect_min_ms = 0", "feed.reconnect_min_ms must be from 1"),
            ("reconnect_min_ms = 500\nreconnect_max_ms = 400", "feed.reconnect_max_ms must be from 500"),
            ("healthy_session_ms = 3600001", "feed.healthy_session_ms must be from 0 to 3600000"),
            ("status_hold_ms = 60001", "feed.status_hold_ms must be from 0 to 60000"),
        ];
        for (keys, needle) in cases {
            let err = Config::from_toml(&format!("[feed]\n{keys}\n"), "test.toml").unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
        let config = Config::from_toml("[feed]\nupstream_silence_ms = 300\nstatus_hold_ms = 0\n", "t.toml").unwrap();
        let liveness = config.feed.liveness();
        assert_eq!(
            (liveness.silence, liveness.status_hold),
            (std::time::Duration::from_millis(300), std::time::Duration::ZERO)
        );
    }

    #[test]
    fn every_duration_and_count_is_range_checked_naming_the_key() {
        let cases = [
            ("[feed]\nmax_skew_ms = 18446744073709\n", "", "feed.max_skew_ms must be between 1 and 315360000000 ms"),
            ("[feed]\nmax_skew_ms = 0\n", "", "feed.max_skew_ms must be between"),
            ("[feed]\nmax_seq_jump = 18446744073709551615\n", "", "feed.max_seq_jump must be between"),
            ("[server]\nshutdown_grace_ms = 18446744073709551615\n", "", "server.shutdown_grace_ms must be"),
            ("[server]\nsocket_send_buffer = 4294967296\n", "", "server.socket_send_buffer must be"),
            ("[limits]\nwrite_deadline_ms = 18446744073709551615\n", "", "limits.write_deadline_ms must be"),
            ("[limits]\nclose_linger_ms = 18446744073709551615\n", "", "limits.close_linger_ms must be"),
            ("[limits]\nhandshake_timeout_ms = 36000000\n", "", "limits.handshake_timeout_ms must be"),
            ("[limits]\nidle_timeout_ms = 18446744073709551615\n", "", "limits.idle_timeout_ms must be"),
            ("[limits]\nping_interval_ms = 0\n", "", "limits.ping_interval_ms must be"),
            ("[limits]\nmax_connections = 100000000\n", "", "limits.max_connections must be"),
            ("[limits]\nmax_connections_per_ip = 100000000\n", "", "limits.max_connections_per_ip must be"),
            ("[limits]\nmax_subscriptions = 100000000\n", "", "limits.max_subscriptions must be"),
            ("[limits]\nmessages_per_second = 1e300\n", "", "limits.messages_per_second must be at most"),
            ("[auth]\nauth_timeout_ms = 18446744073709551615\n", "", "auth.auth_timeout_ms must be"),
        ];
        check_refusals(&cases);
        let ok = "[feed]\nmax_skew_ms = 315360000000\nmax_seq_jump = 0\n";
        assert_eq!(Config::from_toml(ok, "test.toml").unwrap().feed.max_seq_jump, 0, "the bounds themselves are fine");
    }

    #[test]
    fn an_alias_named_like_a_universe_symbol_is_refused() {
        let universe = "[universe]\nsymbols = [{ name = \"AAPL\", price_scale = 2, size_scale = 0 }, { name = \"MSFT\", price_scale = 2, size_scale = 0 }]\n";
        let cases = [
            (
                format!("{universe}[feed]\naliases = {{ AAPL = \"MSFT\" }}\n"),
                "feed.aliases.AAPL is a symbol of the universe",
            ),
            (
                format!(
                    "{universe}[[feed.sources]]\nname = \"a\"\nsource = \"sim\"\naliases = {{ MSFT = \"AAPL\" }}\n"
                ),
                "feed.sources[0].aliases.MSFT is a symbol of the universe",
            ),
        ];
        for (text, needle) in &cases {
            let err = Config::from_toml(text, "test.toml").unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
        let fine = format!("{universe}[feed]\naliases = {{ AAPL = \"AAPL\", APPLE = \"AAPL\" }}\n");
        Config::from_toml(&fine, "test.toml").expect("an alias naming itself, or a new name, is fine");
    }

    #[test]
    fn a_configured_universe_with_room_for_additions() {
        let dir = std::env::temp_dir().join(format!("tickgate-universe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("symbols.csv");
        std::fs::write(&file, "# name,price_scale,size_scale\nETH-USD, 2, 8\n\nAAPL,2,0  # an equity\n").unwrap();
        let text = format!(
            "[universe]\nsymbols = [{{ name = \"BTC-USD\", price_scale = 2, size_scale = 8 }}]\nsymbols_file = {:?}\nunknown_symbols = \"add\"\nmax_added_symbols = 5\n",
            file.display().to_string()
        );
        let config = Config::from_toml(&text, "test.toml").unwrap();
        let table = config.universe.build(&config.sim).unwrap();
        let names: Vec<&str> = table.iter().map(|(_, s)| &*s.name).collect();
        assert_eq!(names, ["BTC-USD", "ETH-USD", "AAPL"]);
        assert_eq!((table.get(SymbolId(1)).price_scale, table.get(SymbolId(1)).size_scale), (2, 8));
        assert_eq!(table.capacity(), 3 + 5);

        std::fs::write(&file, "ETH-USD,2\n").unwrap();
        let err = Config::from_toml(&text, "test.toml").unwrap_err().to_string();
        assert!(err.contains("symbols.csv:1: expected NAME,PRICE_SCALE,SIZE_SCALE"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn several_sources_get_the_shared_aliases_and_their_own() {
        let text = "[feed]\naliases = { XBT = \"BTC-USD\" }\n[[feed.sources]]\nname = \"sim\"\nsource = \"sim\"\n[[feed.sources]]\nname = \"desk-1\"\nsource = \"tcp\"\ntcp_listen = \"127.0.0.1:7000\"\naliases = { ETHUSDT = \"ETH-USD\" }\n";
        let config = Config::from_toml(text, "test.toml").unwrap();
        let sources = config.feed.sources();
        assert_eq!(sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["sim", "desk-1"]);
        assert_eq!(sources[1].aliases.len(), 2);
        assert_eq!(sources[1].replay_speed, 1.0);
        let single = Config::default().feed.sources();
        assert_eq!((single.len(), single[0].name.as_str()), (1, "sim"));
    }

    #[test]
    fn the_shipped_default_file_is_the_built_in_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/default.toml");
        let config = Config::from_file(Path::new(path)).expect("config/default.toml is valid");
        assert_eq!(config, Config::default(), "config/default.toml and Config::default() must agree");
    }
}
