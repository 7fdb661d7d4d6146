//! The configuration file as written: serde structs that mirror the TOML, with spans.
//!
//! Only `validate` reads these; the rest of the program sees the typed `Config`. Fields that
//! semantic checks inspect are wrapped in `Spanned` so every error can name its line.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub supervisor: RawSupervisor,
    #[serde(default)]
    pub app: Vec<RawApp>,
    pub balancer: Option<Spanned<RawBalancer>>,
    pub admin: Option<RawAdmin>,
}

/// `[supervisor]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSupervisor {
    pub control_socket: Option<Spanned<String>>,
    pub log_dir: Option<Spanned<String>>,
    pub log_max_size: Option<Spanned<String>>,
    pub log_keep: Option<u32>,
}

/// One `[[app]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub name: Spanned<String>,
    pub command: Spanned<String>,
    #[serde(default)]
    pub args: Vec<String>,
    pub cwd: Option<Spanned<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub instances: Option<Spanned<RawInstances>>,
    pub port: Spanned<i64>,
    pub ready: Option<Spanned<String>>,
    pub listen_timeout: Option<Spanned<String>>,
    pub max_memory: Option<Spanned<String>>,
    pub restart_delay: Option<Spanned<String>>,
    pub max_restarts: Option<u32>,
    pub min_uptime: Option<Spanned<String>>,
    pub kill_timeout: Option<Spanned<String>>,
    pub drain_timeout: Option<Spanned<String>>,
    pub close_window: Option<Spanned<String>>,
    pub health_interval: Option<Spanned<String>>,
    pub health_timeout: Option<Spanned<String>>,
    pub health_failures: Option<u32>,
}

/// `instances = 4` or `instances = "max"`, read without `untagged` so errors keep their span.
#[derive(Debug, Clone, PartialEq)]
pub enum RawInstances {
    Count(i64),
    Word(String),
}

impl<'de> Deserialize<'de> for RawInstances {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawInstances;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"a number of instances or "max""#)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawInstances, E> {
                Ok(RawInstances::Count(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawInstances, E> {
                Ok(RawInstances::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawInstances, E> {
                Ok(RawInstances::Word(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[balancer]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalancer {
    pub listen: Option<Spanned<String>>,
    pub app: Option<Spanned<String>>,
    pub engineio_path: Option<Spanned<String>>,
    pub new_sessions: Option<Spanned<String>>,
    pub cookie: Option<Spanned<String>>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    pub threads: Option<Spanned<i64>>,
    /// Test-only: disable session pinning (plain round-robin) to show what it prevents.
    pub test_unsticky: Option<bool>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Spanned<String>>,
}
