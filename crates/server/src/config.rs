//! The gateway's configuration: every setting, its default, and its validation.
//!
//! config/default.toml lists the same settings with the same defaults and a comment each; a
//! test keeps the two in step.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tickgate_core::{AssetClass, Budget, Policy, SymbolInfo, SymbolTable};
use tickgate_feed::resolve::{AddedScales, ScaleRule, UnknownSymbols};
use tickgate_feed::sim::SimConfig;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub sim: SimConfig,
    pub universe: UniverseConfig,
    pub feed: FeedConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub tls: TlsConfig,
    pub history: HistoryConfig,
    /// `[bus]`: a cluster on NATS JetStream (off by default).
    pub bus: tickgate_bus::BusConfig,
}

/// `[tls]`: serve `wss://` and `https://` on `server.listen` (both files set), and on the admin
/// port too with `admin`. SIGHUP reads the files again (see docs/OPERATIONS.md).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM: the server certificate first, then its intermediates.
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<std::path::PathBuf>,
    /// The admin listener (`server.admin_listen`) speaks TLS too.
    pub admin: bool,
}

impl TlsConfig {
    /// The certificate's files, when TLS is on.
    pub fn paths(&self) -> Option<crate::tls::CertPaths> {
        match (&self.cert_file, &self.key_file) {
            (Some(chain), Some(key)) => Some(crate::tls::CertPaths { chain: chain.clone(), key: key.clone() }),
            _ => None,
        }
    }

    fn validate(&self, admin_listen: Option<SocketAddr>) -> Result<(), ConfigError> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(invalid("tls.cert_file", "and tls.key_file come together (both, or neither)"));
        }
        if self.admin && (self.cert_file.is_none() || admin_listen.is_none()) {
            return Err(invalid("tls.admin", "needs tls.cert_file, tls.key_file and server.admin_listen"));
        }
        Ok(())
    }
}

/// `[feed]`: where ticks come from, and whether to record them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// Whether the feed is ready only while this source flows (see [`Self::is_required`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

fn one() -> f64 {
    1.0
}

/// The keys of `[feed]` that describe its single source, unused with `[[feed.sources]]`.
const SINGLE_SOURCE_KEYS: [&str; 8] = [
    "source",
    "tcp_connect",
    "tcp_listen",
    "exchange_url",
    "exchange_symbols",
    "replay_path",
    "replay_speed",
    "replay_loop",
];

/// The kinds of source, as configured.
pub const SOURCE_KINDS: [&str; 5] = ["sim", "replay", "tcp", "binance", "coinbase"];

impl FeedConfig {
    /// The sources to run: `[[feed.sources]]`, or the single source of the `[feed]` keys (named
    /// after its kind). Aliases are `feed.aliases` plus each source's own; `required` is set:
    /// a single source is required, one of several is unless it says otherwise or is a `tcp`
    /// source with `tcp_listen`.
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
                required: Some(true),
            }];
        }
        self.sources
            .iter()
            .map(|s| {
                let mut aliases = self.aliases.clone();
                aliases.extend(s.aliases.clone());
                let required = s.required.or(Some(!(s.source == "tcp" && s.tcp_listen.is_some())));
                SourceConfig { aliases, required, ..s.clone() }
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

    /// The first single-source key set away from its default, with its value (they and
    /// `[[feed.sources]]` exclude each other).
    fn single_source_key(&self) -> Option<(&'static str, String)> {
        let d = Self::default();
        let shown = |value: &dyn std::fmt::Debug| format!("{value:?}");
        [
            ("feed.source", self.source != d.source, shown(&self.source)),
            ("feed.tcp_connect", self.tcp_connect.is_some(), shown(&self.tcp_connect)),
            ("feed.tcp_listen", self.tcp_listen.is_some(), shown(&self.tcp_listen)),
            ("feed.exchange_url", self.exchange_url.is_some(), shown(&self.exchange_url)),
            ("feed.exchange_symbols", !self.exchange_symbols.is_empty(), shown(&self.exchange_symbols)),
            ("feed.replay_path", self.replay_path.is_some(), shown(&self.replay_path)),
            ("feed.replay_speed", self.replay_speed != d.replay_speed, shown(&self.replay_speed)),
            ("feed.replay_loop", self.replay_loop, shown(&self.replay_loop)),
        ]
        .into_iter()
        .find(|(_, set, _)| *set)
        .map(|(key, _, value)| (key, value))
    }

    /// Whether a sim or replay source runs (the universe then holds the simulated market's
    /// symbols, see [`UniverseConfig::sim_symbols`]).
    pub fn runs_sim_or_replay(&self) -> bool {
        self.sources().iter().any(|s| matches!(s.source.as_str(), "sim" | "replay"))
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
            required: None,
        }
    }

    /// Whether /readyz needs this source up: `required` (as [`FeedConfig::sources`] sets it;
    /// unset, yes).
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(true)
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UniverseConfig {
    /// Whether the simulated market's symbols (`[sim] symbols`) are in the universe, ahead of
    /// the configured ones: "auto" (when a sim or replay source runs, or no symbol is
    /// configured), "always" or "never".
    pub sim_symbols: String,
    /// Symbols of the universe besides the simulated market's, with their scales.
    pub symbols: Vec<SymbolConfig>,
    /// A file of more symbols, one `NAME,PRICE_SCALE,SIZE_SCALE` per line (`#` comments).
    pub symbols_file: Option<std::path::PathBuf>,
    /// An upstream symbol the universe does not have: "reject" it (counted), or "add" it.
    pub unknown_symbols: String,
    /// Scales of added symbols by name pattern; the first match wins.
    pub added_scales: Vec<ScaleRuleConfig>,
    /// Decimal places of prices and sizes of added symbols no rule of `added_scales` matches:
    /// values with more are rejected.
    pub added_price_scale: u8,
    pub added_size_scale: u8,
    /// Most symbols "add" may add; past it, their messages are rejected as universe_full.
    pub max_added_symbols: usize,
}

impl Default for UniverseConfig {
    fn default() -> Self {
        Self {
            sim_symbols: "auto".into(),
            symbols: Vec::new(),
            symbols_file: None,
            unknown_symbols: "reject".into(),
            added_scales: Vec::new(),
            added_price_scale: 8,
            added_size_scale: 8,
            max_added_symbols: 10_000,
        }
    }
}

/// One symbol of `[universe] symbols`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolConfig {
    pub name: String,
    /// Decimal places of prices: a price with more is rejected, never rounded.
    pub price_scale: u8,
    /// Decimal places of sizes.
    pub size_scale: u8,
}

/// One rule of `[universe] added_scales`: the scales of added symbols whose name matches
/// `pattern` (a name, `PREFIX*`, `*SUFFIX` or `*`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRuleConfig {
    pub pattern: String,
    pub price_scale: u8,
    pub size_scale: u8,
}

/// Largest `universe.max_added_symbols`.
pub const MAX_ADDED_SYMBOLS: usize = 1_000_000;

/// Lines of a recording read to learn its symbols (`--check-config` and the start).
pub const RECORDING_LINES_SCANNED: usize = 100_000;

impl UniverseConfig {
    /// Builds the universe: the simulated market's symbols when `with_sim` (they come first:
    /// the simulated market numbers them from 0), then the configured ones, with room for the
    /// symbols "add" may add.
    pub fn build(&self, sim: &SimConfig, with_sim: bool) -> Result<SymbolTable, ConfigError> {
        let mut table = if with_sim { tickgate_feed::sim::universe(sim) } else { SymbolTable::new() };
        for (i, s) in self.symbols.iter().enumerate() {
            insert_configured(&mut table, &s.name, s.price_scale, s.size_scale, &format!("universe.symbols[{i}]"))?;
        }
        if let Some(path) = &self.symbols_file {
            let key = "universe.symbols_file";
            let text = std::fs::read_to_string(path).map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let at = format!("{key} {}:{}:", path.display(), n + 1);
                let fields: Vec<&str> = line.split(',').map(str::trim).collect();
                let [name, price_scale, size_scale] = fields[..] else {
                    return Err(invalid(at, format!("expected NAME,PRICE_SCALE,SIZE_SCALE, got {line:?}")));
                };
                let scale =
                    |text: &str| text.parse::<u8>().map_err(|_| invalid(&at, format!("{text:?} is not a scale")));
                insert_configured(&mut table, name, scale(price_scale)?, scale(size_scale)?, &at)?;
            }
        }
        if table.is_empty() {
            return Err(invalid(
                "universe.symbols",
                format!("lists no symbol (and universe.sim_symbols = {:?} adds none)", self.sim_symbols),
            ));
        }
        if self.unknown() != UnknownSymbols::Reject {
            table.reserve_additions(self.max_added_symbols);
        }
        Ok(table)
    }

    /// Whether the universe holds the simulated market's symbols, given whether a sim or
    /// replay source runs.
    fn with_sim(&self, sim_or_replay_runs: bool) -> bool {
        match self.sim_symbols.as_str() {
            "always" => true,
            "never" => false,
            _ => sim_or_replay_runs || (self.symbols.is_empty() && self.symbols_file.is_none()),
        }
    }

    /// What sources do with symbols the universe does not have.
    pub fn unknown(&self) -> UnknownSymbols {
        match self.unknown_symbols.as_str() {
            "add" => UnknownSymbols::Add(AddedScales {
                rules: self
                    .added_scales
                    .iter()
                    .map(|r| ScaleRule {
                        pattern: r.pattern.as_str().into(),
                        price_scale: r.price_scale,
                        size_scale: r.size_scale,
                    })
                    .collect(),
                price_scale: self.added_price_scale,
                size_scale: self.added_size_scale,
            }),
            _ => UnknownSymbols::Reject,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let choice = |key: &str, value: &str, allowed: &[&str]| {
            if allowed.contains(&value) {
                return Ok(());
            }
            let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            Err(invalid(key, format!("must be {}, got {value:?}", allowed.join(" or "))))
        };
        choice("universe.unknown_symbols", &self.unknown_symbols, &["reject", "add"])?;
        choice("universe.sim_symbols", &self.sim_symbols, &["auto", "always", "never"])?;
        let max = tickgate_core::decimal::MAX_SCALE;
        let mut scales = vec![
            ("universe.added_price_scale".to_string(), self.added_price_scale),
            ("universe.added_size_scale".to_string(), self.added_size_scale),
        ];
        for (i, rule) in self.added_scales.iter().enumerate() {
            let key = format!("universe.added_scales[{i}]");
            let stars = rule.pattern.matches('*').count();
            let well_formed = match stars {
                0 => !rule.pattern.is_empty(),
                1 => rule.pattern.starts_with('*') || rule.pattern.ends_with('*'),
                _ => false,
            };
            if !well_formed {
                return Err(invalid(
                    format!("{key}.pattern"),
                    format!("must be a name, PREFIX*, *SUFFIX or *, got {:?}", rule.pattern),
                ));
            }
            scales.push((format!("{key}.price_scale"), rule.price_scale));
            scales.push((format!("{key}.size_scale"), rule.size_scale));
        }
        for (key, scale) in scales {
            if scale > max {
                return Err(invalid(key, format!("must be at most {max}, got {scale}")));
            }
        }
        if self.max_added_symbols > MAX_ADDED_SYMBOLS {
            return Err(invalid(
                "universe.max_added_symbols",
                format!("must be at most {MAX_ADDED_SYMBOLS}, got {}", self.max_added_symbols),
            ));
        }
        Ok(())
    }
}

/// Adds a configured symbol; one the simulated market has already is fine with the same scales.
fn insert_configured(
    table: &mut SymbolTable,
    name: &str,
    price_scale: u8,
    size_scale: u8,
    key: &str,
) -> Result<(), ConfigError> {
    if let Some(id) = table.lookup(name) {
        let known = table.get(id);
        if (known.price_scale, known.size_scale) == (price_scale, size_scale) {
            return Ok(());
        }
        return Err(invalid(
            key,
            format!(
                "{name:?} (price_scale {price_scale}, size_scale {size_scale}) is already in the universe with price_scale \
                 {} and size_scale {}: give it the same scales, or set universe.sim_symbols = \"never\"",
                known.price_scale, known.size_scale
            ),
        ));
    }
    let info = SymbolInfo { name: name.into(), class: AssetClass::Equity, price_scale, size_scale };
    table.insert(info).map_err(|e| invalid(key, format!("{name:?}: {e}")))?;
    Ok(())
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub key: String,
    pub user: String,
    /// Symbol patterns the key is entitled to: "AAPL", "BTC-*", "*".
    pub symbols: Vec<String>,
    pub max_connections: Option<usize>,
    /// The key's bandwidth cap in bytes per second, in place of `limits.max_bytes_per_second`.
    pub max_bytes_per_second: Option<u64>,
}

/// `[server]`: where to listen and how many reactors.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// Every connection to `listen` starts with a PROXY protocol header (v1 or v2) from a load
    /// balancer, whose client address then stands for the connection (limits, logs); one without
    /// a valid header is closed. Only for a port nothing but the balancer can reach.
    pub proxy_protocol: bool,
    /// Addresses (CIDRs) of the balancers allowed to send that header; a connection from
    /// anywhere else is closed unanswered. Required with `proxy_protocol`.
    pub proxy_protocol_peers: Vec<String>,
    /// Addresses (CIDRs) of HTTP proxies whose `Forwarded` / `X-Forwarded-For` headers name the
    /// client of an upgrade (limits, logs); from anyone else those headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// The one forwarding header the trusted proxies maintain, the only one read from them:
    /// `"x-forwarded-for"` or `"forwarded"` (RFC 7239).
    pub forwarded_header: crate::forwarded::ForwardingHeader,
    /// Agree to permessage-deflate (RFC 7692) when a client offers it: ticks are compressed
    /// once each and shared by every such client, other frames per connection. Off: offers are
    /// ignored and every frame goes uncompressed.
    pub permessage_deflate: bool,
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
            proxy_protocol: false,
            proxy_protocol_peers: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarded_header: crate::forwarded::ForwardingHeader::default(),
            permessage_deflate: true,
        }
    }
}

/// `[limits]`: per-connection resources.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// IPv6 addresses count as one for `max_connections_per_ip` when they share this many
    /// leading bits (a host usually holds a whole /64).
    pub ipv6_prefix_len: u8,
    /// The same for IPv4 (32: each address on its own).
    pub ipv4_prefix_len: u8,
    /// Messages a client may send per second on average (token bucket).
    pub messages_per_second: f64,
    /// Messages a client may send in a burst.
    pub message_burst: u32,
    /// WebSocket frames of every kind (pings, pongs, continuations, empty ones too) a client may
    /// send within one second; one more closes it with 1008.
    pub max_frames_per_second: u32,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Most updates per second per subscription, whatever the client asks (quotes above it are
    /// conflated; trades all arrive); 0 for no cap.
    pub max_update_rate: u16,
    /// Most bytes per second written to one connection (a token's `max_bytes_per_second` claim
    /// replaces it for its user); past it the connection's slow-consumer policy applies. 0 for
    /// no cap.
    pub max_bytes_per_second: u64,
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
            ipv6_prefix_len: 64,
            ipv4_prefix_len: 32,
            messages_per_second: 20.0,
            message_burst: 50,
            max_frames_per_second: 200,
            max_subscriptions: 1024,
            max_update_rate: 0,
            max_bytes_per_second: 0,
            ping_interval_ms: 30_000,
            idle_timeout_ms: 75_000,
            allowed_origins: Vec::new(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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

/// `[history]`: the recent events each reactor keeps per symbol, for clients that resume after a
/// reconnect (docs/PROTOCOL.md, "Resuming after a reconnect"). Every bound is per reactor; 0 in
/// any keeps no history (a resume then gets a gap and a snapshot).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Most events kept per symbol.
    pub max_events_per_symbol: usize,
    /// Most bytes (frames and bookkeeping) kept per symbol.
    pub max_bytes_per_symbol: usize,
    /// Most events kept in all.
    pub max_events: usize,
    /// Most bytes kept in all.
    pub max_bytes: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self { max_events_per_symbol: 1024, max_bytes_per_symbol: 1 << 20, max_events: 1 << 20, max_bytes: 256 << 20 }
    }
}

impl HistoryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let keys = [
            ("history.max_events_per_symbol", self.max_events_per_symbol, 1 << 24, "events"),
            ("history.max_bytes_per_symbol", self.max_bytes_per_symbol, 1 << 32, "bytes"),
            ("history.max_events", self.max_events, 1 << 28, "events"),
            ("history.max_bytes", self.max_bytes, 1 << 36, "bytes"),
        ];
        for (key, value, max, unit) in keys {
            if value > max {
                return Err(invalid(key, format!("must be between 0 and {max} {unit}, got {value}")));
            }
        }
        Ok(())
    }

    /// The bounds, for [`tickgate_core::History`].
    pub fn limits(&self) -> tickgate_core::HistoryLimits {
        tickgate_core::HistoryLimits {
            events_per_symbol: self.max_events_per_symbol,
            bytes_per_symbol: self.max_bytes_per_symbol,
            events: self.max_events,
            bytes: self.max_bytes,
        }
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
    /// Reads and validates a TOML file. Relative paths in it are taken from the file's folder
    /// (and become absolute).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        let folder = path.parent().unwrap_or(Path::new(""));
        // `tickgate --config tickgate.toml` names the current folder as "".
        let folder = if folder.as_os_str().is_empty() { Path::new(".") } else { folder };
        let folder = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
        config.resolve_paths(&folder);
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates TOML text; `origin` names it in errors. Relative paths stay
    /// relative (to the working folder).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config = Self::parse(text, origin)?;
        config.validate()?;
        Ok(config)
    }

    /// Makes every relative path of the configuration relative to `folder` instead.
    pub fn resolve_paths(&mut self, folder: &Path) {
        let resolve = |path: &mut Option<std::path::PathBuf>| {
            if let Some(p) = path.as_mut() {
                if p.is_relative() {
                    *p = folder.join(&*p);
                }
            }
        };
        resolve(&mut self.universe.symbols_file);
        resolve(&mut self.feed.replay_path);
        resolve(&mut self.feed.record_path);
        resolve(&mut self.feed.exchange_ca_file);
        resolve(&mut self.auth.jwt_public_key_file);
        resolve(&mut self.tls.cert_file);
        resolve(&mut self.tls.key_file);
        resolve(&mut self.bus.creds_file);
        resolve(&mut self.bus.tls_ca_file);
        resolve(&mut self.bus.tls_cert_file);
        resolve(&mut self.bus.tls_key_file);
        for source in &mut self.feed.sources {
            resolve(&mut source.replay_path);
        }
    }

    /// Parses TOML text without validating it.
    fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let message = e.message().trim().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                    let line_end = text[line_start..].find('\n').map_or(text.len(), |i| line_start + i);
                    let snippet = text[line_start..line_end].trim().to_string();
                    let message = match snippet.as_str() {
                        "[[feed.source]]" => format!(
                            "{message}: feed.source is the kind of the single source (source = \"tcp\"); several \
                             sources are [[feed.sources]]"
                        ),
                        _ => message,
                    };
                    ConfigError::Parse {
                        path: origin.to_string(),
                        line,
                        column: span.start - line_start + 1,
                        message,
                        snippet,
                    }
                }
                None => ConfigError::ParseNoSpan { path: origin.to_string(), message },
            }
        })
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bus.validate().map_err(|e| invalid(format!("bus.{}", e.key), e.reason))?;
        let s = &self.server;
        self.tls.validate(s.admin_listen)?;
        crate::forwarded::TrustedProxies::parse(&s.trusted_proxies)
            .map_err(|reason| invalid("server.trusted_proxies", reason))?;
        let proxy_peers = crate::forwarded::TrustedProxies::parse(&s.proxy_protocol_peers)
            .map_err(|reason| invalid("server.proxy_protocol_peers", reason))?;
        if s.proxy_protocol && proxy_peers.is_empty() {
            return Err(invalid(
                "server.proxy_protocol_peers",
                "must list the balancers (CIDRs) allowed to send a PROXY header when server.proxy_protocol is on",
            ));
        }
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
        if !(u64::from(l.message_burst).max(10)..=100_000_000).contains(&u64::from(l.max_frames_per_second)) {
            return Err(invalid(
                "limits.max_frames_per_second",
                format!(
                    "must be between limits.message_burst ({}, and at least 10) and 100000000, got {}",
                    l.message_burst, l.max_frames_per_second
                ),
            ));
        }
        if !(16..=128).contains(&l.ipv6_prefix_len) {
            return Err(invalid(
                "limits.ipv6_prefix_len",
                format!("must be between 16 and 128 bits, got {}", l.ipv6_prefix_len),
            ));
        }
        if !(8..=32).contains(&l.ipv4_prefix_len) {
            return Err(invalid(
                "limits.ipv4_prefix_len",
                format!("must be between 8 and 32 bits, got {}", l.ipv4_prefix_len),
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
        // max_connections, max_subscriptions and handshake_timeout_ms of 0: check_ranges names them.
        if l.max_bytes_per_second != 0 {
            if let Err(e) = tickgate_core::bandwidth::check_cap(l.max_bytes_per_second) {
                return Err(invalid("limits.max_bytes_per_second", format!("{e} (0 for no cap)")));
            }
        }
        if Policy::parse(&l.slow_consumer_policy).is_none() {
            return Err(invalid(
                "limits.slow_consumer_policy",
                format!("must be \"conflate\", \"drop\" or \"disconnect\", got {:?}", l.slow_consumer_policy),
            ));
        }
        self.check_ranges()?;
        self.history.validate()?;
        self.sim.validate()?;
        self.universe.validate()?;
        let universe = self.symbol_table()?;
        let symbols = universe.capacity();
        let f = &self.feed;
        refuse_shadowing_aliases(&f.aliases, "feed.aliases", &universe)?;
        for (i, source) in f.sources.iter().enumerate() {
            refuse_shadowing_aliases(&source.aliases, &format!("feed.sources[{i}].aliases"), &universe)?;
        }
        if f.sources.is_empty() {
            f.sources()[0].validate("feed.")?;
        } else {
            if let Some((key, value)) = f.single_source_key() {
                return Err(invalid(
                    "feed.sources",
                    format!(
                        "replaces the single source of feed.source and its keys, but {key} = {value} is set too: \
                         set one or the other"
                    ),
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
            if !f.sources().iter().any(SourceConfig::is_required) {
                return Err(invalid(
                    "feed.sources",
                    "has no required source (every one has required = false, or is a tcp_listen source left unset): \
                     set required = true on at least one",
                ));
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
        self.sources_against_universe(&universe)?;
        Ok(())
    }

    /// The configuration as TOML that loads back to the same configuration, secrets replaced
    /// by `<redacted**...>` of their own length (so a length check still passes). With
    /// `[[feed.sources]]`, the single-source keys of `[feed]` (then unused) are left out.
    pub fn to_redacted_toml(&self) -> Result<String, ConfigError> {
        let redact = |secret: &mut String| {
            let len = secret.len();
            *secret = if len >= 10 { format!("<redacted{}>", "*".repeat(len - 10)) } else { "*".repeat(len) };
        };
        let mut shown = self.clone();
        redact(&mut shown.auth.jwt_secret);
        for key in &mut shown.auth.api_keys {
            redact(&mut key.key);
        }
        for secret in [&mut shown.bus.password, &mut shown.bus.token].into_iter().flatten() {
            redact(secret);
        }
        let mut table = toml::Table::try_from(&shown).map_err(|e| invalid("(the configuration)", e.to_string()))?;
        if !self.feed.sources.is_empty() {
            if let Some(toml::Value::Table(feed)) = table.get_mut("feed") {
                for key in SINGLE_SOURCE_KEYS {
                    feed.remove(key);
                }
            }
        }
        toml::to_string(&table).map_err(|e| invalid("(the configuration)", e.to_string()))
    }

    /// The universe this configuration starts with (see [`UniverseConfig::build`]).
    pub fn symbol_table(&self) -> Result<SymbolTable, ConfigError> {
        self.universe.build(&self.sim, self.universe.with_sim(self.feed.runs_sim_or_replay()))
    }

    /// What is probably wrong but may be meant: a replay or exchange source some of whose
    /// symbols are not in the universe (their messages will be rejected as unknown_symbol).
    /// One line each, naming the source's key and the symbols.
    pub fn warnings(&self) -> Vec<String> {
        match self.symbol_table() {
            Ok(universe) => self.source_symbols_missing(&universe).into_iter().map(|m| m.to_string()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Refuses a replay or exchange source none of whose symbols could be published (none in
    /// the universe, and unknown symbols rejected): certainly wrong.
    fn sources_against_universe(&self, universe: &SymbolTable) -> Result<(), ConfigError> {
        match self.source_symbols_missing(universe).into_iter().find(|m| m.all) {
            Some(missing) => Err(invalid(missing.key.clone(), missing.reason())),
            None => Ok(()),
        }
    }

    /// For each replay or exchange source, its symbols (a recording's from its first
    /// [`RECORDING_LINES_SCANNED`] lines) that the universe lacks, when unknown symbols are
    /// rejected.
    fn source_symbols_missing(&self, universe: &SymbolTable) -> Vec<MissingSymbols> {
        if self.universe.unknown() != UnknownSymbols::Reject {
            return Vec::new();
        }
        let single = self.feed.sources.is_empty();
        let mut found = Vec::new();
        for (i, source) in self.feed.sources().iter().enumerate() {
            let prefix = if single { "feed.".to_string() } else { format!("feed.sources[{i}].") };
            let (key, names) = match source.source.as_str() {
                "replay" => match source.replay_path.as_deref().map(recording_symbols) {
                    Some(Ok(names)) => (format!("{prefix}replay_path"), names),
                    _ => continue,
                },
                "binance" | "coinbase" => (format!("{prefix}exchange_symbols"), source.exchange_symbols.clone()),
                _ => continue,
            };
            let in_universe = |name: &String| {
                let ours = source.aliases.get(name).unwrap_or(name);
                universe.lookup(ours).is_some()
            };
            let missing: Vec<String> = names.iter().filter(|n| !in_universe(n)).cloned().collect();
            if !missing.is_empty() {
                let all = missing.len() == names.len();
                found.push(MissingSymbols { key, source: source.name.clone(), missing, of: names.len(), all });
            }
        }
        found
    }

    /// What starting with this configuration allocates before the first client, for a universe
    /// of `symbols` (its capacity, added symbols included).
    pub fn up_front(&self, symbols: usize) -> UpFront {
        let reactors = self.reactor_count() as u128;
        // A channel slot holds a message and crossbeam's stamp.
        let slot = (std::mem::size_of::<tickgate_feed::fanout::FanoutMsg>() + 8) as u128;
        // Each reactor, and the ingest thread, keep last values per symbol; each reactor also
        // an index entry and a history slot (its events grow later, within `[history]`).
        let per_symbol = (std::mem::size_of::<tickgate_core::LastValues>()
            + std::mem::size_of::<Vec<u32>>()
            + tickgate_core::history::SYMBOL_SLOT_BYTES) as u128;
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
            (
                "limits.max_update_rate",
                u64::from(l.max_update_rate),
                0,
                u64::from(tickgate_core::throttle::MAX_RATE),
                "updates per second",
            ),
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

    /// How source addresses are grouped for `limits.max_connections_per_ip`.
    pub fn address_groups(&self) -> crate::admission::AddressGroups {
        crate::admission::AddressGroups { v4: self.limits.ipv4_prefix_len, v6: self.limits.ipv6_prefix_len }
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

/// A source's symbols that the universe lacks.
#[derive(Debug)]
struct MissingSymbols {
    key: String,
    source: String,
    missing: Vec<String>,
    /// How many symbols the source has.
    of: usize,
    all: bool,
}

impl MissingSymbols {
    fn reason(&self) -> String {
        const SHOWN: usize = 10;
        let mut names = self.missing.iter().take(SHOWN).map(String::as_str).collect::<Vec<_>>().join(", ");
        if self.missing.len() > SHOWN {
            names.push_str(&format!(" and {} more", self.missing.len() - SHOWN));
        }
        format!(
            "(source {:?}): {} of its {} symbols are not in the universe and will be rejected as unknown_symbol: {names}; \
             add them to [universe] symbols, or set universe.unknown_symbols = \"add\"",
            self.source,
            self.missing.len(),
            self.of
        )
    }
}

impl std::fmt::Display for MissingSymbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.key, self.reason())
    }
}

/// The symbols a recording names, in order of first appearance, from its first
/// [`RECORDING_LINES_SCANNED`] lines.
pub fn recording_symbols(path: &Path) -> std::io::Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Line {
        symbol: Option<String>,
    }
    let reader = tickgate_feed::replay::open(path)?;
    let mut seen = std::collections::HashSet::new();
    let mut names = Vec::new();
    for line in std::io::BufRead::lines(reader).take(RECORDING_LINES_SCANNED) {
        let line = line?;
        if let Ok(Line { symbol: Some(name) }) = serde_json::from_str::<Line>(&line) {
            if seen.insert(name.clone()) {
                names.push(name);
            }
        }
    }
    Ok(names)
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
        let up = big.up_front(big.symbol_table().unwrap().capacity());
        let named =
            format!("allocate {} MiB up front (1024 reactors: channels {} MiB", up.total() >> 20, up.channels >> 20);
        assert!(err.contains(&named), "{err}");
        assert!(err.contains("more than the 4096 MiB allowed") && !err.contains('\n'), "{err}");
        assert!(refused("[limits]\nmax_connections = 10000000\n").contains("connection slots 5"));
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
            ("[limits]\nipv6_prefix_len = 8\n", "", "limits.ipv6_prefix_len must be between 16 and 128"),
            ("[limits]\nipv4_prefix_len = 33\n", "", "limits.ipv4_prefix_len must be between 8 and 32"),
            ("[limits]\nmax_frames_per_second = 20\n", "", "limits.max_frames_per_second must be between"),
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
            ("[[feed.source]]\nname = \"a\"\nsource = \"sim\"\n", "1:1", "several sources are [[feed.sources]]"),
            (
                "[auth]\nenabled = true\n",
                "",
                "auth.enabled is true but auth.jwt_algorithm is \"\" and auth.api_keys is empty",
            ),
            (
                "[auth]\nenabled = true\njwt_algorithm = \"HS256\"\njwt_secret = \"short\"\n",
                "",
                "auth.jwt_secret must be at least 32 bytes for HS256, got 5 bytes",
            ),
            (
                "[auth]\nenabled = true\napi_keys = [{ key = \"0123456789abcdef\", user = \"a\", symbols = [] }, { key = \"short\", user = \"b\", symbols = [] }]\n",
                "",
                "auth.api_keys[1].key must be at least 16 characters, got 5 (user \"b\")",
            ),
            ("[universe]\nadded_size_scale = 30\n", "", "universe.added_size_scale must be at most 18, got 30"),
            (
                "[universe]\nsim_symbols = \"yes\"\n",
                "",
                "universe.sim_symbols must be \"auto\" or \"always\" or \"never\", got \"yes\"",
            ),
            (
                "[universe]\nunknown_symbols = \"add\"\nadded_scales = [{ pattern = \"A*B*\", price_scale = 2, size_scale = 0 }]\n",
                "",
                "universe.added_scales[0].pattern must be a name, PREFIX*, *SUFFIX or *, got \"A*B*\"",
            ),
            (
                "[universe]\nunknown_symbols = \"add\"\nadded_scales = [{ pattern = \"**\", price_scale = 2, size_scale = 0 }]\n",
                "",
                "universe.added_scales[0].pattern must be a name, PREFIX*, *SUFFIX or *, got \"**\"",
            ),
            (
                "[feed]\nreplay_loop = true\n[[feed.sources]]\nname = \"a\"\nsource = \"sim\"\n",
                "",
                "but feed.replay_loop = true is set too",
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
            (
                "[limits]\nmax_subscriptions = 0\n",
                "",
                "limits.max_subscriptions must be between 1 and 1000000 subscriptions, got 0",
            ),
            ("[limits]\nmax_connections = 100000000\n", "", "limits.max_connections must be"),
            ("[limits]\nmax_connections_per_ip = 100000000\n", "", "limits.max_connections_per_ip must be"),
            ("[limits]\nmax_subscriptions = 100000000\n", "", "limits.max_subscriptions must be"),
            ("[limits]\nmax_update_rate = 1001\n", "", "limits.max_update_rate must be"),
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
            "[universe]\nsim_symbols = \"never\"\nsymbols = [{{ name = \"BTC-USD\", price_scale = 2, size_scale = 8 }}]\nsymbols_file = {:?}\nunknown_symbols = \"add\"\nmax_added_symbols = 5\n",
            file.display().to_string()
        );
        let config = Config::from_toml(&text, "test.toml").unwrap();
        let table = config.symbol_table().unwrap();
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
    fn redacted_toml_loads_back_to_the_same_configuration() {
        let text = "[server]\nlisten = \"127.0.0.1:9000\"\n[auth]\nenabled = true\njwt_algorithm = \"HS256\"\njwt_secret = \"0123456789abcdef0123456789abcdef\"\napi_keys = [{ key = \"k-1234567890abcdef\", user = \"u\", symbols = [\"*\"] }]\n[universe]\nsymbols = [{ name = \"DESK-A\", price_scale = 2, size_scale = 0 }]\nadded_scales = [{ pattern = \"*-USD\", price_scale = 2, size_scale = 8 }]\n[feed]\naliases = { XBT = \"BTC-USD\" }\n[[feed.sources]]\nname = \"sim\"\nsource = \"sim\"\n[[feed.sources]]\nname = \"desk\"\nsource = \"tcp\"\ntcp_listen = \"127.0.0.1:7000\"\nrequired = false\n";
        let config = Config::from_toml(text, "test.toml").unwrap();
        let shown = config.to_redacted_toml().unwrap();
        assert!(!shown.contains("0123456789abcdef") && !shown.contains("k-1234567890abcdef"), "{shown}");
        assert!(shown.contains("jwt_secret = \"<redacted**********************>\""), "{shown}");
        let feed = shown.parse::<toml::Table>().unwrap()["feed"].as_table().unwrap().clone();
        assert!(SINGLE_SOURCE_KEYS.iter().all(|key| !feed.contains_key(*key)), "no single-source keys: {feed:?}");
        let back = Config::from_toml(&shown, "shown.toml").unwrap();
        let mut expected = config.clone();
        expected.auth.jwt_secret = "<redacted**********************>".into();
        expected.auth.api_keys[0].key = "<redacted********>".into();
        assert_eq!(back, expected);
        let default = Config::default().to_redacted_toml().unwrap();
        assert_eq!(Config::from_toml(&default, "default.toml").unwrap(), Config::default());
    }

    #[test]
    fn sources_are_required_unless_optional_by_choice_or_a_listening_tcp_source_among_others() {
        let text = "[[feed.sources]]\nname = \"sim\"\nsource = \"sim\"\n[[feed.sources]]\nname = \"desk\"\nsource = \"tcp\"\ntcp_listen = \"127.0.0.1:7000\"\n[[feed.sources]]\nname = \"up\"\nsource = \"tcp\"\ntcp_connect = \"127.0.0.1:7001\"\nrequired = false\n";
        let config = Config::from_toml(text, "t.toml").unwrap();
        let required: Vec<bool> = config.feed.sources().iter().map(SourceConfig::is_required).collect();
        assert_eq!(required, [true, false, false]);
        let single =
            Config::from_toml("[feed]\nsource = \"tcp\"\ntcp_listen = \"127.0.0.1:7000\"\n", "t.toml").unwrap();
        assert!(single.feed.sources()[0].is_required(), "a single source is the feed");
        let none = "[[feed.sources]]\nname = \"desk\"\nsource = \"tcp\"\ntcp_listen = \"127.0.0.1:7000\"\n[[feed.sources]]\nname = \"sim\"\nsource = \"sim\"\nrequired = false\n";
        let err = Config::from_toml(none, "t.toml").unwrap_err().to_string();
        assert!(err.starts_with("feed.sources has no required source"), "{err}");
    }

    #[test]
    fn relative_paths_are_taken_from_the_configuration_files_folder() {
        let dir = std::env::temp_dir().join(format!("tickgate-paths-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tapes")).unwrap();
        std::fs::write(dir.join("symbols.csv"), "DESK-A,2,0\n").unwrap();
        std::fs::write(
            dir.join("tapes/t.jsonl"),
            "{\"type\":\"trade\",\"symbol\":\"DESK-A\",\"price\":\"1\",\"size\":\"1\",\"ts\":1}\n",
        )
        .unwrap();
        let file = dir.join("tickgate.toml");
        std::fs::write(&file, "[universe]\nsymbols_file = \"symbols.csv\"\n[feed]\nsource = \"replay\"\nreplay_path = \"tapes/t.jsonl\"\nrecord_path = \"out.jsonl\"\n").unwrap();
        let config = Config::from_file(&file).expect("paths resolve against the file's folder, not the working one");
        let dir = std::path::absolute(&dir).unwrap();
        assert_eq!(config.feed.replay_path.as_deref(), Some(dir.join("tapes/t.jsonl").as_path()));
        assert_eq!(config.feed.record_path.as_deref(), Some(dir.join("out.jsonl").as_path()));
        assert_eq!(config.universe.symbols_file.as_deref(), Some(dir.join("symbols.csv").as_path()));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_universe_combines_the_simulated_markets_symbols_and_the_configured_ones() {
        let tape = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/tapes/sim-3s.jsonl.gz");
        let own = "[universe]\nsymbols = [{ name = \"DESK-A\", price_scale = 2, size_scale = 0 }]\n";
        // A replay runs: the simulated market's symbols are in, the configured one after them.
        let text = format!(
            "{own}[[feed.sources]]\nname = \"tape\"\nsource = \"replay\"\nreplay_path = {tape:?}\n[[feed.sources]]\nname = \"desk\"\nsource = \"tcp\"\ntcp_listen = \"127.0.0.1:7000\"\n"
        );
        let config = Config::from_toml(&text, "t.toml").unwrap();
        let table = config.symbol_table().unwrap();
        assert_eq!(table.len(), config.sim.symbols + 1);
        assert_eq!(&*table.get(SymbolId(0)).name, "AAPL", "the simulated market's numbering is kept");
        assert!(table.lookup("DESK-A").is_some() && table.lookup("BTC-USD").is_some());
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
        // Only a TCP source: the configured symbols alone, as before.
        let tcp_only = format!("{own}[feed]\nsource = \"tcp\"\ntcp_listen = \"127.0.0.1:7000\"\n");
        assert_eq!(Config::from_toml(&tcp_only, "t.toml").unwrap().symbol_table().unwrap().len(), 1);
        // The tape with the simulated market's symbols left out: every one would be rejected.
        let never = text.replace("[universe]\n", "[universe]\nsim_symbols = \"never\"\n");
        let err = Config::from_toml(&never, "t.toml").unwrap_err().to_string();
        assert!(err.starts_with("feed.sources[0].replay_path (source \"tape\"): 50 of its 50 symbols"), "{err}");
        assert!(err.contains("unknown_symbol: ") && err.contains(" and 40 more"), "{err}");
        // Fewer simulated symbols than the tape uses: a warning, naming the missing ones.
        let small = format!("[sim]\nsymbols = 20\n{text}");
        let config = Config::from_toml(&small, "t.toml").unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("feed.sources[0].replay_path (source \"tape\"): 30 of its 50"), "{warnings:?}");
        // An exchange source's symbols through its aliases.
        let exchange = format!(
            "{own}[feed]\nsource = \"binance\"\nexchange_url = \"wss://x.example/ws\"\nexchange_symbols = [\"DESKA\", \"OTHER\"]\naliases = {{ DESKA = \"DESK-A\" }}\n"
        );
        let warnings = Config::from_toml(&exchange, "t.toml").unwrap().warnings();
        assert!(
            warnings[0].starts_with("feed.exchange_symbols (source \"binance\"): 1 of its 2 symbols")
                && warnings[0].contains(": OTHER;"),
            "{warnings:?}"
        );
        // A configured symbol the simulated market has with other scales is refused, named.
        let clash =
            "[universe]\nsim_symbols = \"always\"\nsymbols = [{ name = \"AAPL\", price_scale = 4, size_scale = 0 }]\n";
        let err = Config::from_toml(clash, "t.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("universe.symbols[0] \"AAPL\" (price_scale 4, size_scale 0) is already in the universe"),
            "{err}"
        );
        // Adding symbols: warnings are moot.
        let add = never.replace("[universe]\n", "[universe]\nunknown_symbols = \"add\"\n");
        assert!(Config::from_toml(&add, "t.toml").unwrap().warnings().is_empty());
    }

    #[test]
    fn the_shipped_default_file_is_the_built_in_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/default.toml");
        let config = Config::from_file(Path::new(path)).expect("config/default.toml is valid");
        assert_eq!(config, Config::default(), "config/default.toml and Config::default() must agree");
    }
}
