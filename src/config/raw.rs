//! The configuration file as written: serde structs that mirror the TOML, with spans.
//!
//! Only `validate` reads these; the rest of the program sees the typed `Config`. Fields that
//! semantic checks inspect are wrapped in `Spanned` so every error can name its line.
//!
//! [`read`] reads section by section and key by key, so one mistake does not hide the others:
//! every syntax error is reported (the TOML reader recovers), then each section (`[supervisor]`,
//! each `[[app]]`, `[balancer]`, `[admin]`) is read on its own, and a key whose value has the
//! wrong type is reported and left out so the rest of its section is still read and checked.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::error::Reporter;

/// The whole file: every section that could be read (the others were reported).
#[derive(Debug, Default)]
pub struct RawConfig {
    /// `[supervisor]` (defaults when absent).
    pub supervisor: Section<RawSupervisor>,
    /// Every `[[app]]` in order; `None` for an entry that is not a table at all (reported).
    pub app: Vec<Option<Section<RawApp>>>,
    /// The file has an `app` key that is not an array of tables (already reported).
    pub app_unreadable: bool,
    /// `[balancer]`.
    pub balancer: Option<Section<RawBalancer>>,
    /// `[admin]`.
    pub admin: Option<Section<RawAdmin>>,
    /// `[cluster]`.
    pub cluster: Option<Section<RawCluster>>,
    /// The environment profile asked for (`rtsup start --env NAME`), if any.
    pub profile: Option<String>,
}

/// One section as read, with its place and the keys left out because their values were
/// already reported (so a missing required key is not reported a second time).
#[derive(Debug, Default)]
pub struct Section<T> {
    /// The keys that could be read.
    pub value: T,
    /// Where the section is in the source.
    pub span: Range<usize>,
    /// Keys present in the file whose values were reported and left out.
    pub dropped: Vec<String>,
}

impl<T> Section<T> {
    /// Whether `key` was present but left out after an error.
    pub fn dropped(&self, key: &str) -> bool {
        self.dropped.iter().any(|k| k == key)
    }
}

/// Read `src` section by section; `None` when it is not TOML at all (every syntax error is
/// reported). Errors of single sections and keys are reported and the rest is read.
pub fn read(src: &str, rep: &mut Reporter<'_>) -> Option<RawConfig> {
    let (root, errors) = DeTable::parse_recoverable(src);
    if !errors.is_empty() {
        for e in &errors {
            rep.toml(e);
        }
        return None;
    }
    let mut entries: Vec<_> = root.into_inner().into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut raw = RawConfig::default();
    for (key, value) in entries {
        let name = key.get_ref().as_ref();
        match name {
            "supervisor" => {
                if let Some(s) = section(value, name, rep) {
                    raw.supervisor = s;
                }
            }
            "app" => {
                let span = value.span();
                match value.into_inner() {
                    DeValue::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let (item, profiles) = env_profiles(item.clone(), i, rep);
                            let mut app = section::<RawApp>(item, &format!("app[{i}]"), rep);
                            if let Some(a) = app.as_mut() {
                                a.value.env_profiles = profiles;
                            }
                            raw.app.push(app);
                        }
                    }
                    DeValue::Table(_) => {
                        raw.app_unreadable = true;
                        rep.at(
                            Some(key.span()),
                            "app",
                            "must be an array of tables: write [[app]], not [app]",
                        );
                    }
                    other => {
                        raw.app_unreadable = true;
                        rep.at(
                            Some(span),
                            "app",
                            format!(
                                "must be an array of tables ([[app]]), not {}",
                                other.type_str()
                            ),
                        );
                    }
                }
            }
            "balancer" => raw.balancer = section(value, name, rep),
            "admin" => raw.admin = section(value, name, rep),
            "cluster" => raw.cluster = section(value, name, rep),
            other => rep.at(
                Some(key.span()),
                other,
                format!(
                    "unknown field `{other}`, expected one of `supervisor`, `app`, `balancer`, `admin`, `cluster`"
                ),
            ),
        }
    }
    Some(raw)
}

/// Take the `env_<profile>` tables out of an `[[app]]` (their names are the user's, so
/// the app's own keys cannot list them); each must map names to strings.
fn env_profiles<'a>(
    item: Spanned<DeValue<'a>>,
    i: usize,
    rep: &mut Reporter<'_>,
) -> (
    Spanned<DeValue<'a>>,
    BTreeMap<String, BTreeMap<String, String>>,
) {
    let span = item.span();
    let mut table = match item.into_inner() {
        DeValue::Table(t) => t,
        // Not a table: reported when the app is read.
        other => return (Spanned::new(span, other), BTreeMap::new()),
    };
    let mut profiles = BTreeMap::new();
    let names: Vec<_> = table
        .keys()
        .filter(|k| k.get_ref().starts_with("env_") && k.get_ref().as_ref() != "env_file")
        .cloned()
        .collect();
    for key in names {
        let Some(value) = table.remove(&key) else {
            continue;
        };
        let name = key.get_ref().trim_start_matches("env_").to_string();
        match BTreeMap::<String, String>::deserialize(ValueDeserializer::from(value)) {
            Ok(vars) => {
                profiles.insert(name, vars);
            }
            Err(e) => rep.at(
                Some(key.span()),
                format!("app[{i}].{}", key.get_ref()),
                format!("must be a table of strings ({})", e.message().trim()),
            ),
        }
    }
    (Spanned::new(span, DeValue::Table(table)), profiles)
}

/// Read one table as `T`. A key whose value cannot be read is reported and left out, and the
/// rest is read again, until it reads or an error points at no key (then `None`).
fn section<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    name: &str,
    rep: &mut Reporter<'_>,
) -> Option<Section<T>> {
    let span = value.span();
    let mut table = match value.into_inner() {
        DeValue::Table(t) => t,
        other => {
            rep.at(
                Some(span),
                name,
                format!("must be a table, not {}", other.type_str()),
            );
            return None;
        }
    };
    let mut dropped = Vec::new();
    // Each round either reads the table or removes one key: at most len + 1 rounds.
    loop {
        let attempt = T::deserialize(ValueDeserializer::from(Spanned::new(
            span.clone(),
            DeValue::Table(table.clone()),
        )));
        let e = match attempt {
            Ok(value) => {
                return Some(Section {
                    value,
                    span,
                    dropped,
                });
            }
            Err(e) => e,
        };
        rep.toml_in(&e, name, Some(span.clone()));
        let at = e.span().map(|s| s.start)?;
        let culprit = table
            .iter()
            .find(|(k, v)| k.span().contains(&at) || v.span().contains(&at))
            .map(|(k, _)| k.get_ref().to_string())?;
        table.remove(culprit.as_str());
        dropped.push(culprit);
    }
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

/// One `[[app]]`. `name`, `command` and `port` are required; `validate` says when one is
/// missing (so that a missing key does not hide the other problems of the app).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub name: Option<Spanned<String>>,
    pub command: Option<Spanned<String>>,
    #[serde(default)]
    pub args: Vec<String>,
    pub cwd: Option<Spanned<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub env_file: Option<Spanned<String>>,
    /// `[app.env_<profile>]` tables (PM2's `env_production`), read apart from the rest.
    #[serde(skip)]
    pub env_profiles: BTreeMap<String, BTreeMap<String, String>>,
    pub increment_var: Option<Spanned<String>>,
    pub instances: Option<Spanned<RawInstances>>,
    pub port: Option<Spanned<i64>>,
    pub ready: Option<Spanned<String>>,
    pub wait_ready: Option<Spanned<bool>>,
    pub listen_timeout: Option<Spanned<String>>,
    pub max_memory: Option<Spanned<String>>,
    pub memory_ceiling: Option<Spanned<String>>,
    pub restart_delay: Option<Spanned<String>>,
    pub max_restarts: Option<u32>,
    pub min_uptime: Option<Spanned<String>>,
    pub kill_timeout: Option<Spanned<String>>,
    pub kill_signal: Option<Spanned<String>>,
    pub cron_restart: Option<Spanned<String>>,
    pub watch: Option<Spanned<RawWatch>>,
    pub metrics_path: Option<Spanned<String>>,
    pub ignore_watch: Option<Spanned<Vec<String>>>,
    pub watch_delay: Option<Spanned<String>>,
    pub drain_timeout: Option<Spanned<String>>,
    pub close_window: Option<Spanned<String>>,
    pub health_interval: Option<Spanned<String>>,
    pub health_timeout: Option<Spanned<String>>,
    pub health_failures: Option<u32>,
}

/// `instances = 4` or `instances = "max"`, read without `untagged` so errors keep their span.
#[derive(Debug, Clone, PartialEq)]
pub enum RawInstances {
    /// A number.
    Count(i64),
    /// A word (only `"max"` is valid).
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

/// `watch = true` (the app's `cwd`) or `watch = ["src", "config"]`.
#[derive(Debug, Clone, PartialEq)]
pub enum RawWatch {
    /// `true` / `false`.
    On(bool),
    /// Paths, relative to the app's `cwd`.
    Paths(Vec<String>),
}

impl<'de> Deserialize<'de> for RawWatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawWatch;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or a list of paths")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawWatch, E> {
                Ok(RawWatch::On(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawWatch, A::Error> {
                let mut paths = Vec::new();
                while let Some(p) = seq.next_element::<String>()? {
                    paths.push(p);
                }
                Ok(RawWatch::Paths(paths))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[balancer]`.
#[derive(Debug, Default, Deserialize)]
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
    pub session_rate: Option<u32>,
    pub session_burst: Option<u32>,
    pub max_request_line: Option<Spanned<String>>,
    pub max_header: Option<Spanned<String>>,
    pub header_timeout: Option<Spanned<String>>,
    pub body_timeout: Option<Spanned<String>>,
    pub send_timeout: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub keepalive_timeout: Option<Spanned<String>>,
    pub upstream_keepalive_timeout: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_connections_per_address: Option<Spanned<i64>>,
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
    /// Several apps behind the listener (`[[balancer.route]]`).
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    /// More certificates, chosen by SNI (`[[balancer.certificate]]`).
    #[serde(default)]
    pub certificate: Vec<Spanned<RawCertificate>>,
    pub http2: Option<bool>,
    pub preserve_header_case: Option<bool>,
    pub redirect_listen: Option<Spanned<String>>,
    pub redirect_except: Option<Spanned<String>>,
    pub access_log: Option<Spanned<String>>,
    pub access_log_format: Option<Spanned<String>>,
    pub cookie_secret: Option<Spanned<String>>,
    pub cookie_secret_file: Option<Spanned<String>>,
    /// Test-only: disable session pinning (plain round-robin) to show what it prevents.
    pub test_unsticky: Option<bool>,
}

/// One `[[balancer.route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub app: Spanned<String>,
    pub engineio_path: Option<Spanned<String>>,
    pub new_sessions: Option<Spanned<String>>,
    pub cookie: Option<Spanned<String>>,
}

/// One `[[balancer.certificate]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[cluster]`: rtsup hosts sharing sessions through Redis.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: Option<Spanned<String>>,
    pub redis: Option<Spanned<String>>,
    pub advertise: Option<Spanned<String>>,
    pub session_ttl: Option<Spanned<String>>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
}
