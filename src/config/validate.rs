//! Raw → typed: every semantic check, every error collected with its place.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use supervisor::backoff::RestartPolicy;
use supervisor::{AppSpec, HealthSpec, LogSpec, ReadyCheck};
use toml::Spanned;

use super::defaults::*;
use super::error::Reporter;
use super::raw::{RawAdmin, RawApp, RawBalancer, RawConfig, RawInstances};
use super::{AdminConfig, BalancerConfig, Config, SupervisorConfig};
use balancer::NewSessions;

/// Check `raw` and build the typed configuration; `None` when any error was reported.
pub fn validate(raw: RawConfig, file: &Path, rep: &mut Reporter<'_>) -> Option<Config> {
    let base = file.parent().unwrap_or(Path::new("."));
    let supervisor = supervisor_section(&raw, base, rep);
    if raw.app.is_empty() {
        rep.at(None, "app", "at least one [[app]] is required");
    }
    let mut names = HashSet::new();
    let apps: Vec<Option<AppSpec>> = raw
        .app
        .iter()
        .enumerate()
        .map(|(i, app)| {
            if !names.insert(app.name.get_ref().clone()) {
                rep.at(
                    Some(app.name.span()),
                    format!("app[{i}].name"),
                    format!("duplicate app name {:?}", app.name.get_ref()),
                );
            }
            app_section(i, app, base, rep)
        })
        .collect();
    let apps: Vec<AppSpec> = apps.into_iter().flatten().collect();
    check_port_overlaps(&raw.app, &apps, rep);
    // Checked against every app named in the file, valid or not, so one mistake is reported once.
    let app_names: Vec<&str> = raw.app.iter().map(|a| a.name.get_ref().as_str()).collect();
    let balancer = raw
        .balancer
        .as_ref()
        .and_then(|b| balancer_section(b, &app_names, rep));
    let admin = admin_section(raw.admin.as_ref(), rep);
    if let (Some(b), Some(a)) = (&balancer, &admin)
        && b.listen.port() == a.listen.port()
        && b.listen.port() != 0
    {
        rep.at(
            None,
            "admin.listen",
            format!("port {} is also the balancer's", a.listen.port()),
        );
    }
    if !rep.errors.is_empty() {
        return None;
    }
    Some(Config {
        file: file.to_path_buf(),
        supervisor: supervisor?,
        apps,
        balancer,
        admin: admin?,
    })
}

fn supervisor_section(
    raw: &RawConfig,
    base: &Path,
    rep: &mut Reporter<'_>,
) -> Option<SupervisorConfig> {
    let s = &raw.supervisor;
    let control_socket = s
        .control_socket
        .as_ref()
        .map_or_else(default_control_socket, |p| base.join(p.get_ref()));
    let log_dir = s
        .log_dir
        .as_ref()
        .map_or_else(default_log_dir, |p| base.join(p.get_ref()));
    let max_size = size(
        s.log_max_size.as_ref(),
        DEFAULT_LOG_MAX_SIZE,
        "supervisor.log_max_size",
        rep,
    )?;
    Some(SupervisorConfig {
        control_socket,
        logs: LogSpec {
            dir: log_dir,
            max_size,
            keep: s.log_keep.unwrap_or(DEFAULT_LOG_KEEP),
        },
    })
}

/// The control socket when the configuration names none: `$RTSUP_CONTROL_SOCKET` if set (the
/// systemd unit sets `/run/rtsup/rtsup.sock`, its `RuntimeDirectory=`), else
/// `/run/rtsup/rtsup.sock` for root, else under `$XDG_RUNTIME_DIR` or `/tmp/rtsup-<uid>`.
pub fn default_control_socket() -> PathBuf {
    if let Some(path) = std::env::var_os("RTSUP_CONTROL_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let uid = nix::unistd::Uid::current();
    if uid.is_root() {
        return PathBuf::from(DEFAULT_ROOT_CONTROL_SOCKET);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join("rtsup/rtsup.sock"),
        None => PathBuf::from(format!("/tmp/rtsup-{uid}/rtsup.sock")),
    }
}

/// The log directory when the configuration names none: `$RTSUP_LOG_DIR` if set (the systemd
/// unit sets `/var/log/rtsup`, its `LogsDirectory=`), else `/var/log/rtsup` for root, else
/// `~/.rtsup/logs` (where PM2 users look: `~/.pm2/logs`).
pub fn default_log_dir() -> PathBuf {
    if let Some(path) = std::env::var_os("RTSUP_LOG_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    if nix::unistd::Uid::current().is_root() {
        return PathBuf::from(DEFAULT_ROOT_LOG_DIR);
    }
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
        .join(".rtsup/logs")
}

fn app_section(i: usize, app: &RawApp, base: &Path, rep: &mut Reporter<'_>) -> Option<AppSpec> {
    let key = |k: &str| format!("app[{i}].{k}");
    let errors_before = rep.errors.len();
    let name = app.name.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        rep.at(
            Some(app.name.span()),
            key("name"),
            "must be non-empty and use only letters, digits, '-' and '_' (it names log files)",
        );
    }
    if app.command.get_ref().trim().is_empty() {
        rep.at(
            Some(app.command.span()),
            key("command"),
            "must not be empty",
        );
    }
    let instances = match app.instances.as_ref().map(|s| (s.get_ref(), s.span())) {
        None => 1,
        Some((RawInstances::Count(n), span)) => match u16::try_from(*n) {
            Ok(n) if (1..=MAX_INSTANCES).contains(&n) => n,
            _ => {
                rep.at(
                    Some(span),
                    key("instances"),
                    format!(r#"must be 1 to {MAX_INSTANCES} or "max""#),
                );
                1
            }
        },
        Some((RawInstances::Word(w), _)) if w == "max" => std::thread::available_parallelism()
            .map_or(1, |n| {
                u16::try_from(n.get())
                    .unwrap_or(MAX_INSTANCES)
                    .min(MAX_INSTANCES)
            }),
        Some((RawInstances::Word(w), span)) => {
            rep.at(
                Some(span),
                key("instances"),
                format!(r#"must be a number or "max", not {w:?}"#),
            );
            1
        }
    };
    // Slot i uses port+i, and port+N+i while a reload replaces it.
    let port = match u16::try_from(*app.port.get_ref()) {
        Ok(p) if p > 0 && u32::from(p) + 2 * u32::from(instances) - 1 <= 65535 => p,
        _ => {
            rep.at(
                Some(app.port.span()),
                key("port"),
                format!("must leave room for 2×{instances} ports (port+i and its reload twin) within 1..65535"),
            );
            1
        }
    };
    let ready = match app.ready.as_ref() {
        None => ReadyCheck::Tcp,
        Some(r) => match r.get_ref().as_str() {
            "tcp" => ReadyCheck::Tcp,
            s if s.starts_with("http:/") => ReadyCheck::Http {
                path: s["http:".len()..].to_string(),
            },
            other => {
                rep.at(
                    Some(r.span()),
                    key("ready"),
                    format!(r#"must be "tcp" or "http:/path", not {other:?}"#),
                );
                ReadyCheck::Tcp
            }
        },
    };
    let listen_timeout = duration(
        app.listen_timeout.as_ref(),
        DEFAULT_LISTEN_TIMEOUT,
        &key("listen_timeout"),
        rep,
    );
    let restart_delay = duration(
        app.restart_delay.as_ref(),
        DEFAULT_RESTART_DELAY,
        &key("restart_delay"),
        rep,
    );
    let min_uptime = duration(
        app.min_uptime.as_ref(),
        DEFAULT_MIN_UPTIME,
        &key("min_uptime"),
        rep,
    );
    let kill_timeout = duration(
        app.kill_timeout.as_ref(),
        DEFAULT_KILL_TIMEOUT,
        &key("kill_timeout"),
        rep,
    );
    let drain_timeout = duration(
        app.drain_timeout.as_ref(),
        DEFAULT_DRAIN_TIMEOUT,
        &key("drain_timeout"),
        rep,
    );
    let close_window = duration(
        app.close_window.as_ref(),
        DEFAULT_CLOSE_WINDOW,
        &key("close_window"),
        rep,
    );
    let health_interval = duration(
        app.health_interval.as_ref(),
        DEFAULT_HEALTH_INTERVAL,
        &key("health_interval"),
        rep,
    );
    let health_timeout = duration(
        app.health_timeout.as_ref(),
        DEFAULT_HEALTH_TIMEOUT,
        &key("health_timeout"),
        rep,
    );
    let max_memory = match &app.max_memory {
        None => None,
        Some(m) => {
            let v = size(Some(m), "0", &key("max_memory"), rep);
            if v == Some(0) {
                rep.at(Some(m.span()), key("max_memory"), "must be more than 0");
            }
            v
        }
    };
    let cwd = app.cwd.as_ref().map(|c| base.join(c.get_ref()));
    if let (Some(dir), Some(raw)) = (&cwd, &app.cwd)
        && !dir.is_dir()
    {
        rep.at(
            Some(raw.span()),
            key("cwd"),
            format!("{} is not a directory", dir.display()),
        );
    }
    if rep.errors.len() > errors_before {
        return None;
    }
    Some(AppSpec {
        name: name.clone(),
        command: app.command.get_ref().clone(),
        args: app.args.clone(),
        cwd,
        env: app.env.clone(),
        instances,
        port,
        ready,
        listen_timeout: listen_timeout?,
        max_memory,
        restart: RestartPolicy {
            restart_delay: restart_delay?,
            min_uptime: min_uptime?,
            max_restarts: app.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS),
        },
        kill_timeout: kill_timeout?,
        drain_timeout: drain_timeout?,
        close_window: close_window?,
        health: HealthSpec {
            interval: health_interval?,
            timeout: health_timeout?,
            failures: app
                .health_failures
                .unwrap_or(DEFAULT_HEALTH_FAILURES)
                .max(1),
        },
    })
}

/// Apps may not share ports, counting each app's reload twins.
fn check_port_overlaps(raw: &[RawApp], apps: &[AppSpec], rep: &mut Reporter<'_>) {
    let mut taken: BTreeMap<u32, String> = BTreeMap::new();
    for app in apps {
        let Some((i, r)) = raw
            .iter()
            .enumerate()
            .find(|(_, r)| r.name.get_ref() == &app.name)
        else {
            continue;
        };
        let lo = u32::from(app.port);
        let hi = lo + 2 * u32::from(app.instances);
        if let Some((_, other)) = taken.range(lo..hi).next() {
            rep.at(
                Some(r.port.span()),
                format!("app[{i}].port"),
                format!("ports {lo}..{hi} overlap those of app {other:?}"),
            );
        }
        for p in lo..hi {
            taken.insert(p, app.name.clone());
        }
    }
}

fn balancer_section(
    b: &Spanned<RawBalancer>,
    apps: &[&str],
    rep: &mut Reporter<'_>,
) -> Option<BalancerConfig> {
    let span = b.span();
    let b = b.get_ref();
    let errors_before = rep.errors.len();
    let listen = addr(
        b.listen.as_ref(),
        DEFAULT_BALANCER_LISTEN,
        "balancer.listen",
        rep,
    );
    let app = match &b.app {
        Some(a) => {
            if !apps.contains(&a.get_ref().as_str()) {
                rep.at(
                    Some(a.span()),
                    "balancer.app",
                    format!("no [[app]] is named {:?}", a.get_ref()),
                );
            }
            a.get_ref().clone()
        }
        None if apps.len() == 1 => apps[0].to_string(),
        None => {
            rep.at(
                Some(span),
                "balancer.app",
                "required when there is more than one [[app]]",
            );
            String::new()
        }
    };
    let engineio_path = b
        .engineio_path
        .as_ref()
        .map_or(DEFAULT_ENGINEIO_PATH.to_string(), |p| p.get_ref().clone());
    if !engineio_path.starts_with('/') || !engineio_path.ends_with('/') {
        let s = b.engineio_path.as_ref().map(Spanned::span);
        rep.at(
            s,
            "balancer.engineio_path",
            "must start and end with '/' (e.g. \"/socket.io/\")",
        );
    }
    let new_sessions = match b.new_sessions.as_ref() {
        None => NewSessions::LeastConn,
        Some(v) => match v.get_ref().as_str() {
            "least-conn" => NewSessions::LeastConn,
            "ip-hash" => NewSessions::IpHash,
            "round-robin" => NewSessions::RoundRobin,
            other => {
                rep.at(
                    Some(v.span()),
                    "balancer.new_sessions",
                    format!(r#"must be "least-conn", "ip-hash" or "round-robin", not {other:?}"#),
                );
                NewSessions::LeastConn
            }
        },
    };
    let cookie = b
        .cookie
        .as_ref()
        .map_or(DEFAULT_COOKIE.to_string(), |c| c.get_ref().clone());
    if cookie.is_empty()
        || !cookie
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        let s = b.cookie.as_ref().map(Spanned::span);
        rep.at(
            s,
            "balancer.cookie",
            "must be a non-empty cookie name (letters, digits, '-', '_', '.')",
        );
    }
    let mut trusted_proxies = Vec::new();
    for (i, p) in b.trusted_proxies.iter().enumerate() {
        let text = p.get_ref();
        let parsed =
            IpNet::from_str(text).or_else(|_| std::net::IpAddr::from_str(text).map(IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => rep.at(
                Some(p.span()),
                format!("balancer.trusted_proxies[{i}]"),
                format!("{text:?} is not an IP address or CIDR block"),
            ),
        }
    }
    let threads = match b.threads.as_ref() {
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(t) => match usize::try_from(*t.get_ref()) {
            Ok(n) if (1..=256).contains(&n) => n,
            _ => {
                rep.at(Some(t.span()), "balancer.threads", "must be 1 to 256");
                1
            }
        },
    };
    if rep.errors.len() > errors_before {
        return None;
    }
    Some(BalancerConfig {
        listen: listen?,
        app,
        engineio_path,
        new_sessions,
        cookie,
        trusted_proxies,
        threads,
        unsticky: b.test_unsticky.unwrap_or(false),
    })
}

fn admin_section(a: Option<&RawAdmin>, rep: &mut Reporter<'_>) -> Option<AdminConfig> {
    let listen = addr(
        a.and_then(|a| a.listen.as_ref()),
        DEFAULT_ADMIN_LISTEN,
        "admin.listen",
        rep,
    )?;
    Some(AdminConfig { listen })
}

fn span_of<T>(v: Option<&Spanned<T>>) -> Option<Range<usize>> {
    v.map(Spanned::span)
}

fn duration(
    v: Option<&Spanned<String>>,
    default: &str,
    key: &str,
    rep: &mut Reporter<'_>,
) -> Option<Duration> {
    let text = v.map_or(default, |s| s.get_ref().as_str());
    match humantime::parse_duration(text) {
        Ok(d) => Some(d),
        Err(e) => {
            rep.at(
                span_of(v),
                key,
                format!("{text:?} is not a duration like \"100ms\", \"5s\" or \"1m\": {e}"),
            );
            None
        }
    }
}

fn size(
    v: Option<&Spanned<String>>,
    default: &str,
    key: &str,
    rep: &mut Reporter<'_>,
) -> Option<u64> {
    let text = v.map_or(default, |s| s.get_ref().as_str());
    match bytesize::ByteSize::from_str(text) {
        Ok(b) => Some(b.as_u64()),
        Err(e) => {
            rep.at(
                span_of(v),
                key,
                format!("{text:?} is not a size like \"500MB\" or \"1GiB\": {e}"),
            );
            None
        }
    }
}

fn addr(
    v: Option<&Spanned<String>>,
    default: &str,
    key: &str,
    rep: &mut Reporter<'_>,
) -> Option<SocketAddr> {
    let text = v.map_or(default, |s| s.get_ref().as_str());
    match SocketAddr::from_str(text) {
        Ok(a) => Some(a),
        Err(_) => {
            rep.at(
                span_of(v),
                key,
                format!("{text:?} is not an address like \"127.0.0.1:8080\""),
            );
            None
        }
    }
}
