//! Who a client is and which symbols it may receive.
//!
//! A client proves itself with a token: a JWT (HS256 with a shared secret, or RS256/ES256 with
//! a public key) or a static API key from the configuration. The token comes in the
//! `Authorization: Bearer` header, as `?token=` in the URL (browsers cannot set headers on a
//! WebSocket), or in an `{"op":"auth","token":..}` first message. Its claims name the user, the
//! expiry, the symbol patterns the user is entitled to (`"AAPL"`, `"BTC-*"`, `"*"`) and the
//! user's connection limit. Without a `symbols` claim a user is entitled to nothing: licensed
//! data is opt-in.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;

use crate::config::{AuthConfig, ConfigError};

/// An authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    /// Symbol patterns: exact names, prefixes ending in `*`, or `*`.
    pub symbols: Vec<String>,
    /// Expiry in seconds since the Unix epoch (API keys do not expire).
    pub expires_at: Option<u64>,
    /// The user's connection limit, if any.
    pub max_connections: Option<usize>,
    /// The user's bandwidth cap per connection in bytes per second, in place of the gateway's
    /// (`limits.max_bytes_per_second`), if any.
    pub max_bytes_per_second: Option<u32>,
}

impl Principal {
    /// Whether the user may receive `symbol`.
    pub fn entitled(&self, symbol: &str) -> bool {
        self.symbols.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => symbol.starts_with(prefix),
            None => p == symbol,
        })
    }
}

/// Why a token was refused (said to the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    symbols: Vec<String>,
    #[serde(default)]
    max_connections: Option<usize>,
    /// Checked by [`bandwidth_claim`]: any JSON value, so that a bad one is refused with a
    /// message that names it.
    #[serde(default)]
    max_bytes_per_second: Option<serde_json::Value>,
}

/// The `max_bytes_per_second` claim: a whole number of bytes per second within
/// [`tickgate_core::bandwidth::check_cap`]'s range.
fn bandwidth_claim(claim: Option<&serde_json::Value>) -> Result<Option<u32>, AuthError> {
    use tickgate_core::bandwidth::{MAX_BYTES_PER_SECOND, MIN_BYTES_PER_SECOND, check_cap};
    let Some(value) = claim else { return Ok(None) };
    let refused = || {
        AuthError::Invalid(format!(
            "max_bytes_per_second must be a whole number of bytes per second from {MIN_BYTES_PER_SECOND} to \
             {MAX_BYTES_PER_SECOND}, got {value}"
        ))
    };
    let bytes = value.as_u64().ok_or_else(refused)?;
    check_cap(bytes).map(Some).map_err(|_| refused())
}

/// Checks tokens against the configured keys.
pub struct Authenticator {
    jwt: Option<(DecodingKey, Validation)>,
    api_keys: HashMap<String, Principal>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("jwt", &self.jwt.is_some())
            .field("api_keys", &self.api_keys.len())
            .finish()
    }
}

impl Authenticator {
    /// The authenticator of `config`, or None when authentication is off.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Self>, ConfigError> {
        if !config.enabled {
            return Ok(None);
        }
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid { key: key.into(), reason };
        let jwt = match config.jwt_algorithm.as_str() {
            "" => None,
            "HS256" => {
                if config.jwt_secret.len() < 32 {
                    return Err(invalid(
                        "auth.jwt_secret",
                        format!("must be at least 32 bytes for HS256, got {} bytes", config.jwt_secret.len()),
                    ));
                }
                Some((DecodingKey::from_secret(config.jwt_secret.as_bytes()), Validation::new(Algorithm::HS256)))
            }
            alg @ ("RS256" | "ES256") => {
                let path = config
                    .jwt_public_key_file
                    .as_ref()
                    .ok_or_else(|| invalid("auth.jwt_public_key_file", format!("is required for {alg}")))?;
                let pem = std::fs::read(path)
                    .map_err(|e| invalid("auth.jwt_public_key_file", format!("cannot read {}: {e}", path.display())))?;
                let (key, algorithm) = if alg == "RS256" {
                    (DecodingKey::from_rsa_pem(&pem), Algorithm::RS256)
                } else {
                    (DecodingKey::from_ec_pem(&pem), Algorithm::ES256)
                };
                let key =
                    key.map_err(|e| invalid("auth.jwt_public_key_file", format!("not a {alg} public key: {e}")))?;
                Some((key, Validation::new(algorithm)))
            }
            other => {
                return Err(invalid(
                    "auth.jwt_algorithm",
                    format!("must be HS256, RS256, ES256 or empty, got {other:?}"),
                ));
            }
        };
        let jwt = jwt.map(|(key, mut validation)| {
            validation.leeway = 0;
            validation.set_required_spec_claims(&["exp", "sub"]);
            (key, validation)
        });
        let mut api_keys = HashMap::new();
        for (i, k) in config.api_keys.iter().enumerate() {
            let max_bytes_per_second = match k.max_bytes_per_second {
                None => None,
                Some(bytes) => Some(tickgate_core::bandwidth::check_cap(bytes).map_err(|e| ConfigError::Invalid {
                    key: format!("auth.api_keys[{i}].max_bytes_per_second"),
                    reason: e.to_string(),
                })?),
            };
            let principal = Principal {
                user: k.user.clone(),
                symbols: k.symbols.clone(),
                expires_at: None,
                max_connections: k.max_connections,
                max_bytes_per_second,
            };
            api_keys.insert(k.key.clone(), principal);
        }
        if jwt.is_none() && api_keys.is_empty() {
            return Err(invalid(
                "auth.enabled",
                "is true but auth.jwt_algorithm is \"\" and auth.api_keys is empty: configure a JWT key or API keys"
                    .into(),
            ));
        }
        if let Some((i, short)) = config.api_keys.iter().enumerate().find(|(_, k)| k.key.len() < 16) {
            return Err(ConfigError::Invalid {
                key: format!("auth.api_keys[{i}].key"),
                reason: format!("must be at least 16 characters, got {} (user {:?})", short.key.len(), short.user),
            });
        }
        Ok(Some(Self { jwt, api_keys }))
    }

    /// Verifies a token.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(principal) = self.api_keys.get(token) {
            return Ok(principal.clone());
        }
        let Some((key, validation)) = &self.jwt else {
            return Err(AuthError::Invalid("unknown API key".into()));
        };
        match decode::<Claims>(token, key, validation) {
            Ok(data) => Ok(Principal {
                max_bytes_per_second: bandwidth_claim(data.claims.max_bytes_per_second.as_ref())?,
                user: data.claims.sub,
                symbols: data.claims.symbols,
                expires_at: Some(data.claims.exp),
                max_connections: data.claims.max_connections,
            }),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => Err(AuthError::Expired),
            Err(e) => Err(AuthError::Invalid(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_prefixes_and_everything() {
        let p = |patterns: &[&str]| Principal {
            user: "u".into(),
            symbols: patterns.iter().map(|s| s.to_string()).collect(),
            expires_at: None,
            max_connections: None,
            max_bytes_per_second: None,
        };
        assert!(p(&["AAPL"]).entitled("AAPL"));
        assert!(!p(&["AAPL"]).entitled("AAPLX"));
        assert!(p(&["BTC-*"]).entitled("BTC-USD"));
        assert!(!p(&["BTC-*"]).entitled("ETH-USD"));
        assert!(p(&["*"]).entitled("anything"));
        assert!(!p(&[]).entitled("AAPL"), "no claim, no data");
    }
}
