//! `[cluster]` (rtsup hosts sharing sessions through Redis) and the affinity cookie's shared
//! secret (`[balancer] cookie_secret` / `cookie_secret_file`), checked.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::error::Reporter;
use super::raw::{RawBalancer, RawCluster, Section};

/// Shortest secret accepted (it signs every affinity cookie).
const MIN_SECRET_CHARS: usize = 16;

/// Default cluster name (the prefix of its Redis keys).
const DEFAULT_NAME: &str = "rtsup";

/// Default lifetime of a published session in Redis.
const DEFAULT_SESSION_TTL: &str = "1h";

/// Bounds of `session_ttl`.
const MIN_SESSION_TTL: Duration = Duration::from_secs(10);
const MAX_SESSION_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Why `advertise` cannot be how the other hosts reach this balancer: another port, another
/// address than a specific `listen`, or a TLS-only listener (peers speak plain HTTP).
fn advertise_problem(advertise: SocketAddr, balancer: Option<&RawBalancer>) -> Option<String> {
    let b = balancer?;
    if b.tls_cert.is_some() {
        return Some(
            "the balancer terminates TLS on its only listener, and the other hosts speak plain HTTP to `advertise`: terminate TLS in front of the hosts (or run a cluster on a private plain-HTTP listener)".into(),
        );
    }
    let listen: SocketAddr = b
        .listen
        .as_ref()
        .map_or(super::defaults::DEFAULT_BALANCER_LISTEN, |l| {
            l.get_ref().as_str()
        })
        .parse()
        .ok()?;
    if listen.port() != advertise.port() {
        return Some(format!(
            "port {} is not the balancer's ({listen}): the other hosts would not reach this rtsup",
            advertise.port()
        ));
    }
    if !listen.ip().is_unspecified() && listen.ip() != advertise.ip() {
        return Some(format!(
            "{} is not the address the balancer listens on ({listen})",
            advertise.ip()
        ));
    }
    None
}

/// The cookie secret as a key: SHA-256 of the text, so any length works the same.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CookieSecret(pub [u8; 32]);

impl std::fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSecret(..)")
    }
}

/// `[cluster]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The cluster's name: its Redis keys start with `rtsup:{name}:`.
    pub name: String,
    /// `redis://…` or `redis-cluster://…`.
    pub redis: String,
    /// How the other hosts reach this rtsup (plain HTTP): this host's name in the cluster.
    pub advertise: SocketAddr,
    /// How long a published session stays findable by hosts that have not seen it.
    pub session_ttl: Duration,
}

/// `cookie_secret` or `cookie_secret_file` (relative to the configuration file); `None` when
/// neither is set, reported (and `Err`) when wrong.
pub fn cookie_secret(
    b: &RawBalancer,
    base: &Path,
    rep: &mut Reporter<'_>,
) -> Result<Option<CookieSecret>, ()> {
    let text = match (&b.cookie_secret, &b.cookie_secret_file) {
        (None, None) => return Ok(None),
        (Some(_), Some(f)) => {
            rep.at(
                Some(f.span()),
                "balancer.cookie_secret_file",
                "set cookie_secret or cookie_secret_file, not both",
            );
            return Err(());
        }
        (Some(s), None) => (s.get_ref().clone(), s.span(), "balancer.cookie_secret"),
        (None, Some(f)) => {
            let path = base.join(f.get_ref());
            match std::fs::read_to_string(&path) {
                Ok(t) => (
                    t.trim().to_string(),
                    f.span(),
                    "balancer.cookie_secret_file",
                ),
                Err(e) => {
                    rep.at(
                        Some(f.span()),
                        "balancer.cookie_secret_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return Err(());
                }
            }
        }
    };
    let (secret, span, key) = text;
    if secret.chars().count() < MIN_SECRET_CHARS {
        rep.at(
            Some(span),
            key,
            format!(
                "must be at least {MIN_SECRET_CHARS} characters (it signs the affinity cookies; e.g. `openssl rand -hex 32`)"
            ),
        );
        return Err(());
    }
    Ok(Some(CookieSecret(Sha256::digest(secret.as_bytes()).into())))
}

/// `[cluster]`: `redis` and `advertise` required, and a balancer with a shared cookie secret
/// (every host must sign and verify the same cookies).
pub fn cluster_section(
    c: &Section<RawCluster>,
    balancer: Option<(&RawBalancer, bool)>,
    rep: &mut Reporter<'_>,
) -> Option<ClusterConfig> {
    let span = c.span.clone();
    let c = &c.value;
    let errors_before = rep.errors.len();
    match balancer {
        None => rep.at(
            Some(span.clone()),
            "cluster",
            "needs a [balancer]: hosts share the sessions their balancers route",
        ),
        Some((_, false)) => rep.at(
            Some(span.clone()),
            "cluster",
            "needs [balancer] cookie_secret or cookie_secret_file, the same on every host (cookies name workers across hosts)",
        ),
        Some(_) => {}
    }
    let name = c
        .name
        .as_ref()
        .map_or(DEFAULT_NAME, |n| n.get_ref().as_str());
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        rep.at(
            c.name.as_ref().map(|n| n.span()),
            "cluster.name",
            "must be 1 to 64 letters, digits, '-' or '_' (it prefixes the Redis keys)",
        );
    }
    let redis = match &c.redis {
        None => {
            rep.at(
                Some(span.clone()),
                "cluster.redis",
                "missing: the Redis URL every host shares (redis://host:6379 or redis-cluster://host:6379)",
            );
            None
        }
        Some(r)
            if !(r.get_ref().starts_with("redis://")
                || r.get_ref().starts_with("rediss://")
                || r.get_ref().starts_with("redis-cluster://")) =>
        {
            rep.at(
                Some(r.span()),
                "cluster.redis",
                "must start with redis://, rediss:// or redis-cluster://",
            );
            None
        }
        Some(r) => match fred::prelude::Config::from_url(r.get_ref()) {
            Ok(_) => Some(r.get_ref().clone()),
            Err(e) => {
                rep.at(
                    Some(r.span()),
                    "cluster.redis",
                    format!("not a Redis URL: {e}"),
                );
                None
            }
        },
    };
    let advertise = match &c.advertise {
        None => {
            rep.at(
                Some(span),
                "cluster.advertise",
                "missing: how the other hosts reach this rtsup, e.g. \"10.0.0.11:8080\"",
            );
            None
        }
        Some(a) => match a.get_ref().parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_unspecified() || addr.port() == 0 => {
                rep.at(
                    Some(a.span()),
                    "cluster.advertise",
                    "must be an address the other hosts can connect to (not 0.0.0.0, not port 0)",
                );
                None
            }
            Ok(addr) => match advertise_problem(addr, balancer.map(|(b, _)| b)) {
                Some(problem) => {
                    rep.at(Some(a.span()), "cluster.advertise", problem);
                    None
                }
                None => Some(addr),
            },
            Err(_) => {
                rep.at(
                    Some(a.span()),
                    "cluster.advertise",
                    format!(
                        "{:?} is not an address like \"10.0.0.11:8080\"",
                        a.get_ref()
                    ),
                );
                None
            }
        },
    };
    let session_ttl = super::validate::duration(
        c.session_ttl.as_ref(),
        DEFAULT_SESSION_TTL,
        "cluster.session_ttl",
        rep,
    )
    .and_then(|d| {
        if (MIN_SESSION_TTL..=MAX_SESSION_TTL).contains(&d) {
            Some(d)
        } else {
            rep.at(
                c.session_ttl.as_ref().map(|s| s.span()),
                "cluster.session_ttl",
                "must be 10s to 30d (how long a session stays findable by hosts that never saw it)",
            );
            None
        }
    });
    if rep.errors.len() > errors_before {
        return None;
    }
    Some(ClusterConfig {
        name: name.to_string(),
        redis: redis?,
        advertise: advertise?,
        session_ttl: session_ttl?,
    })
}
