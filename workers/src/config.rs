//! Worker settings, read from the environment the supervisor gives it.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `PORT` | listen port (127.0.0.1) | required |
//! | `RTSUP_INSTANCE` | slot index, reported by `whoami` | 0 |
//! | `REDIS_URL` | Redis adapter (`redis://`, `rediss://`, `redis-cluster://`) | none |
//! | `RTSUP_HUB` | rtsup hub socket (embedded adapter) when no `REDIS_URL` | none |
//! | `RTSUP_ADAPTER_PREFIX` | channel prefix shared by the workers of one app | `rtsup` |
//! | `RTSUP_EMIT_TOKEN` | bearer token of `POST /emit`; unset disables the webhook | none |
//! | `RTSUP_JWT_SECRET` | HS256 secret for `auth.token` | none |
//! | `RTSUP_ALLOW_GUESTS` | accept connections without a token | true without a secret |
//! | `RTSUP_JWT_LEEWAY` | clock skew tolerated on a token's `exp` (which is required), seconds | 60 |
//! | `RTSUP_RATE_LIMIT` | client events per second per socket (burst the same) | 20 |
//! | `RTSUP_LISTEN_HOST` | listen address | 127.0.0.1 |
//! | `RTSUP_MAX_BUFFER` | packets queued per socket before socketioxide drops it | 4096 |

use std::net::IpAddr;
use std::path::PathBuf;

/// Everything the worker reads from its environment.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Listen address.
    pub host: IpAddr,
    /// Listen port.
    pub port: u16,
    /// Slot index.
    pub instance: u16,
    /// Redis URL, when the Redis adapter is wanted.
    pub redis_url: Option<String>,
    /// Hub socket, when the embedded adapter is wanted.
    pub hub: Option<PathBuf>,
    /// Adapter channel prefix.
    pub prefix: String,
    /// Webhook token.
    pub emit_token: Option<String>,
    /// JWT secret.
    pub jwt_secret: Option<String>,
    /// Whether connections without a token are accepted.
    pub allow_guests: bool,
    /// Seconds of clock skew tolerated on `exp`.
    pub jwt_leeway: u64,
    /// Client events per second per socket.
    pub rate_limit: u32,
    /// Packets queued per socket before it is dropped. socketioxide's default (128) drops
    /// polling clients of a busy room: 1,000 clients joining at once means 1,000 `system`
    /// notices to each of them.
    pub max_buffer: usize,
}

/// A variable with a value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?}: {reason}")]
pub struct ConfigError {
    var: &'static str,
    value: String,
    reason: &'static str,
}

impl WorkerConfig {
    /// Read from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Read through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        fn parse<T: std::str::FromStr>(
            var: &'static str,
            v: Option<String>,
            reason: &'static str,
        ) -> Result<Option<T>, ConfigError> {
            v.map(|value| {
                value
                    .parse()
                    .map_err(|_| ConfigError { var, value, reason })
            })
            .transpose()
        }
        let port = parse("PORT", get("PORT"), "must be a port number")?.ok_or(ConfigError {
            var: "PORT",
            value: String::new(),
            reason: "is required",
        })?;
        let jwt_secret = get("RTSUP_JWT_SECRET");
        let allow_guests = match get("RTSUP_ALLOW_GUESTS").as_deref() {
            None => jwt_secret.is_none(),
            Some("1" | "true" | "yes") => true,
            Some("0" | "false" | "no") => false,
            Some(other) => {
                return Err(ConfigError {
                    var: "RTSUP_ALLOW_GUESTS",
                    value: other.into(),
                    reason: "must be true or false",
                });
            }
        };
        Ok(Self {
            host: parse(
                "RTSUP_LISTEN_HOST",
                get("RTSUP_LISTEN_HOST"),
                "must be an IP address",
            )?
            .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            port,
            instance: parse("RTSUP_INSTANCE", get("RTSUP_INSTANCE"), "must be a number")?
                .unwrap_or(0),
            redis_url: get("REDIS_URL"),
            hub: get("RTSUP_HUB").map(PathBuf::from),
            prefix: get("RTSUP_ADAPTER_PREFIX").unwrap_or_else(|| "rtsup".into()),
            emit_token: get("RTSUP_EMIT_TOKEN"),
            jwt_secret,
            allow_guests,
            jwt_leeway: parse(
                "RTSUP_JWT_LEEWAY",
                get("RTSUP_JWT_LEEWAY"),
                "must be a number of seconds",
            )?
            .unwrap_or(crate::auth::DEFAULT_JWT_LEEWAY_SECS),
            rate_limit: parse(
                "RTSUP_RATE_LIMIT",
                get("RTSUP_RATE_LIMIT"),
                "must be a number of events per second",
            )?
            .unwrap_or(20),
            max_buffer: parse(
                "RTSUP_MAX_BUFFER",
                get("RTSUP_MAX_BUFFER"),
                "must be a number of packets",
            )?
            .unwrap_or(4096),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<WorkerConfig, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WorkerConfig::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_and_errors() {
        let c = cfg(&[("PORT", "3001")]).expect("ok");
        assert_eq!(
            (c.port, c.instance, c.allow_guests, c.rate_limit),
            (3001, 0, true, 20)
        );
        let c = cfg(&[("PORT", "3001"), ("RTSUP_JWT_SECRET", "s")]).expect("ok");
        assert!(!c.allow_guests);
        assert!(cfg(&[]).is_err());
        let e = cfg(&[("PORT", "x")]).expect_err("bad port").to_string();
        assert_eq!(e, r#"PORT="x": must be a port number"#);
    }
}
