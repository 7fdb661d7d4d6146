//! Raw → typed: every semantic check, every error collected with its place; and, for
//! `rtsup check` only, what this machine says about the file ([`environment`]: commands that
//! cannot be run are errors, ports in use right now are warnings).

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use supervisor::backoff::RestartPolicy;
use supervisor::{AppSpec, HealthSpec, LogSpec, ReadyCheck};
use toml::Spanned;

use super::defaults::*;
use super::error::Reporter;
use super::raw::{RawAdmin, RawApp, RawBalancer, RawConfig, RawInstances, RawRoute, Section};
use super::{
    AccessLogConfig, AdminConfig, BalancerConfig, ClientBounds, Config, RedirectConfig,
    RouteConfig, SupervisorConfig, TlsConfig,
};
use balancer::NewSessions;
use balancer::access_log::Format;
use balancer::router::{HostMatch, Sticky};

/// Longest path a Unix socket address holds (`sun_path` is 108 bytes with its final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What validation produced: the configuration when the whole file is valid, and the parts
/// that are valid on their own, which [`environment`] checks against this machine.
#[derive(Debug)]
pub struct Validated {
    /// The configuration, when no error was reported.
    pub config: Option<Config>,
    /// Every app that passed its own checks, with its index in the file.
    pub apps: Vec<(usize, AppSpec)>,
    /// rtsup's own listeners that parsed: the balancer's and the admin server's.
    pub listeners: Vec<Listener>,
    /// The directory relative paths are resolved against.
    pub base: PathBuf,
}

/// One of rtsup's own listening addresses.
#[derive(Debug, Clone)]
pub struct Listener {
    /// `balancer.listen` or `admin.listen`.
    pub key: &'static str,
    /// Where it is written; `None` for a default.
    pub span: Option<Range<usize>>,
    /// The address.
    pub addr: SocketAddr,
}

impl Listener {
    /// Whose port it is, for messages.
    fn role(&self) -> &'static str {
        match self.key {
            "balancer.listen" => "the balancer's",
            "balancer.redirect_listen" => "the redirect listener's",
            _ => "the admin server's",
        }
    }
}

/// Check `raw` and build the typed configuration (`config` is `None` when any error was
/// reported).
pub fn validate(raw: &RawConfig, file: &Path, rep: &mut Reporter<'_>) -> Validated {
    let base = super::base_dir(file);
    let supervisor = supervisor_section(&raw.supervisor, &base, rep);
    let log_dir = supervisor.as_ref().map(|s| s.logs.dir.clone());
    if raw.app.is_empty() && !raw.app_unreadable {
        rep.at(None, "app", "at least one [[app]] is required");
    }
    if let Some(p) = &raw.profile
        && !raw
            .app
            .iter()
            .flatten()
            .any(|a| a.value.env_profiles.contains_key(p))
    {
        rep.at(
            None,
            format!("env_{p}"),
            format!("--env {p}: no [[app]] has an env_{p} table ([app.env_{p}])"),
        );
    }
    let mut names = HashSet::new();
    let mut apps = Vec::new();
    for (i, app) in raw.app.iter().enumerate() {
        let Some(app) = app else { continue };
        if let Some(name) = &app.value.name
            && !names.insert(name.get_ref().clone())
        {
            rep.at(
                Some(name.span()),
                format!("app[{i}].name"),
                format!("duplicate app name {:?}", name.get_ref()),
            );
        }
        if let Some(spec) = app_section(i, app, &base, raw.profile.as_deref(), rep) {
            apps.push((i, spec));
        }
    }
    check_port_overlaps(raw, &apps, rep);
    // Checked against every app named in the file, valid or not, so one mistake is reported once.
    let app_names: Vec<&str> = raw
        .app
        .iter()
        .flatten()
        .filter_map(|a| a.value.name.as_ref())
        .map(|n| n.get_ref().as_str())
        .collect();
    let balancer = raw
        .balancer
        .as_ref()
        .and_then(|b| balancer_section(b, &app_names, &base, log_dir.as_deref(), rep));
    let admin = admin_section(raw.admin.as_ref(), rep);
    let listeners = own_listeners(raw);
    for (i, a) in listeners.iter().enumerate() {
        if let Some(b) = listeners[..i]
            .iter()
            .find(|b| b.addr.port() == a.addr.port() && a.addr.port() != 0)
        {
            rep.at(
                a.span.clone(),
                a.key,
                format!("port {} is also {}", a.addr.port(), b.role()),
            );
        }
    }
    check_listeners_outside_apps(&listeners, &apps, rep);
    let cron_restarts = cron_restarts(raw, rep);
    let watches = super::watch::watches(raw, &base, rep);
    let worker_metrics = worker_metrics(raw, rep);
    let cluster = raw.cluster.as_ref().and_then(|c| {
        let b = raw.balancer.as_ref().map(|b| {
            let shared = b.value.cookie_secret.is_some() || b.value.cookie_secret_file.is_some();
            (&b.value, shared)
        });
        super::cluster::cluster_section(c, b, rep)
    });
    let config = match (supervisor, admin) {
        (Some(supervisor), Some(admin)) if rep.errors.is_empty() => Some(Config {
            file: file.to_path_buf(),
            supervisor,
            apps: apps.iter().map(|(_, a)| a.clone()).collect(),
            balancer,
            admin,
            profile: raw.profile.clone(),
            cron_restarts,
            watches,
            worker_metrics,
            cluster,
        }),
        _ => None,
    };
    Validated {
        config,
        apps,
        listeners,
        base,
    }
}

/// rtsup's own listeners whose addresses parse (the balancer's when there is a `[balancer]`,
/// then the admin server's), even when their sections have other errors, so port clashes
/// are reported together with those.
fn own_listeners(raw: &RawConfig) -> Vec<Listener> {
    let balancer = raw.balancer.as_ref().map(|b| {
        (
            "balancer.listen",
            b.value.listen.as_ref(),
            DEFAULT_BALANCER_LISTEN,
        )
    });
    let redirect = raw
        .balancer
        .as_ref()
        .and_then(|b| b.value.redirect_listen.as_ref())
        .map(|l| ("balancer.redirect_listen", Some(l), ""));
    let admin = (
        "admin.listen",
        raw.admin.as_ref().and_then(|a| a.value.listen.as_ref()),
        DEFAULT_ADMIN_LISTEN,
    );
    balancer
        .into_iter()
        .chain(redirect)
        .chain([admin])
        .filter_map(|(key, written, default)| {
            let text = written.map_or(default, |w| w.get_ref().as_str());
            Some(Listener {
                key,
                span: written.map(Spanned::span),
                addr: SocketAddr::from_str(text).ok()?,
            })
        })
        .collect()
}

fn supervisor_section(
    s: &Section<super::raw::RawSupervisor>,
    base: &Path,
    rep: &mut Reporter<'_>,
) -> Option<SupervisorConfig> {
    let s = &s.value;
    let control_socket = s
        .control_socket
        .as_ref()
        .map_or_else(default_control_socket, |p| base.join(p.get_ref()));
    if let Some(p) = &s.control_socket
        && control_socket.as_os_str().len() > MAX_SOCKET_PATH
    {
        rep.at(
            Some(p.span()),
            "supervisor.control_socket",
            format!(
                "{} is longer than a Unix socket path may be ({MAX_SOCKET_PATH} bytes)",
                control_socket.display()
            ),
        );
    }
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

/// Report a required key of `[[app]]` number `i` that is missing (unless it was present and
/// already reported).
fn missing(i: usize, sec: &Section<RawApp>, field: &str, rep: &mut Reporter<'_>) {
    if !sec.dropped(field) {
        rep.at(
            Some(sec.span.clone()),
            format!("app[{i}].{field}"),
            format!("missing field `{field}`"),
        );
    }
}

fn app_section(
    i: usize,
    sec: &Section<RawApp>,
    base: &Path,
    profile: Option<&str>,
    rep: &mut Reporter<'_>,
) -> Option<AppSpec> {
    let app = &sec.value;
    let key = |k: &str| format!("app[{i}].{k}");
    let errors_before = rep.errors.len();
    match &app.name {
        None => missing(i, sec, "name", rep),
        Some(name)
            if name.get_ref().is_empty()
                || name.get_ref().len() > MAX_APP_NAME
                || !name
                    .get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            rep.at(
                Some(name.span()),
                key("name"),
                format!(
                    "must be 1 to {MAX_APP_NAME} letters, digits, '-' or '_' (it names log files)"
                ),
            );
        }
        Some(_) => {}
    }
    match &app.command {
        None => missing(i, sec, "command", rep),
        Some(c) if c.get_ref().trim().is_empty() => {
            rep.at(Some(c.span()), key("command"), "must not be empty");
        }
        Some(_) => {}
    }
    let instances = match app.instances.as_ref().map(|s| (s.get_ref(), s.span())) {
        None => 1,
        // PM2's -1: every CPU but one (at least one worker).
        Some((RawInstances::Count(n), _)) if *n < 0 && *n >= -i64::from(MAX_INSTANCES) => cpus()
            .saturating_sub(u16::try_from(-*n).unwrap_or(0))
            .max(1),
        Some((RawInstances::Count(n), span)) => match u16::try_from(*n) {
            Ok(n) if (1..=MAX_INSTANCES).contains(&n) => n,
            _ => {
                rep.at(
                    Some(span),
                    key("instances"),
                    format!(r#"must be 1 to {MAX_INSTANCES}, "max", or -N for every CPU but N"#),
                );
                1
            }
        },
        Some((RawInstances::Word(w), _)) if w == "max" => cpus(),
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
    let port = match &app.port {
        None => {
            missing(i, sec, "port", rep);
            1
        }
        Some(port) => match u16::try_from(*port.get_ref()) {
            Ok(p) if p > 0 && u32::from(p) + 2 * u32::from(instances) - 1 <= 65535 => p,
            _ => {
                rep.at(
                    Some(port.span()),
                    key("port"),
                    format!("must leave room for 2×{instances} ports (port+i and its reload twin) within 1..65535"),
                );
                1
            }
        },
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
    // PM2's wait_ready: the worker says when it is ready (process.send('ready')).
    let ready = match (&app.wait_ready, &app.ready) {
        (Some(w), Some(_)) if *w.get_ref() => {
            rep.at(
                Some(w.span()),
                key("wait_ready"),
                "not with `ready`: a wait_ready worker is ready once it sends 'ready' and its port accepts",
            );
            ready
        }
        (Some(w), None) if *w.get_ref() => ReadyCheck::Message,
        _ => ready,
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
    let kill_signal = kill_signal(app.kill_signal.as_ref(), &key("kill_signal"), rep);
    let env = app_env(app, base, &key("env_file"), rep).map(|mut env| {
        // The profile's variables win over `env` (PM2: `env_production` over `env`).
        if let Some(vars) = profile.and_then(|p| app.env_profiles.get(p)) {
            env.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        env
    });
    let env = env.filter(|env| env_is_valid(env, &key("env"), rep));
    let increment_var = increment_var(
        app.increment_var.as_ref(),
        env.as_ref(),
        &key("increment_var"),
        rep,
    );
    let env = env?;
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
    let memory_ceiling = match &app.memory_ceiling {
        None => None,
        Some(c) => {
            let v = size(Some(c), "0", &key("memory_ceiling"), rep);
            match (v, max_memory) {
                (Some(ceiling), Some(limit)) if ceiling < limit => {
                    rep.at(
                        Some(c.span()),
                        key("memory_ceiling"),
                        "must be at least max_memory",
                    );
                }
                (Some(_), None) if app.max_memory.is_none() => {
                    rep.at(
                        Some(c.span()),
                        key("memory_ceiling"),
                        "needs max_memory (the ceiling applies while an over-limit worker is replaced)",
                    );
                }
                _ => {}
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
        name: app.name.as_ref()?.get_ref().clone(),
        command: app.command.as_ref()?.get_ref().clone(),
        args: app.args.clone(),
        cwd,
        env,
        increment_var,
        instances,
        port,
        ready,
        listen_timeout: listen_timeout?,
        max_memory,
        memory_ceiling,
        restart: RestartPolicy {
            restart_delay: restart_delay?,
            min_uptime: min_uptime?,
            max_restarts: app.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS),
        },
        kill_signal: kill_signal?,
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

/// The part of `port .. port+2×instances` that `p` is: `slot 1's port` or `slot 0's reload twin`.
fn port_role(app: &AppSpec, p: u16) -> String {
    let offset = p.saturating_sub(app.port);
    if offset < app.instances {
        format!("slot {offset}'s port")
    } else {
        format!("slot {}'s reload twin", offset - app.instances)
    }
}

/// The ports an app may hold: `port+i` for its slots and `port+N+i` for their reload twins.
fn app_range(app: &AppSpec) -> Range<u32> {
    let lo = u32::from(app.port);
    lo..lo + 2 * u32::from(app.instances)
}

/// Apps may not share ports, counting each app's reload twins.
fn check_port_overlaps(raw: &RawConfig, apps: &[(usize, AppSpec)], rep: &mut Reporter<'_>) {
    // Port → position in `apps` of the app holding it.
    let mut taken: BTreeMap<u32, usize> = BTreeMap::new();
    for (n, (i, app)) in apps.iter().enumerate() {
        let range = app_range(app);
        if let Some((&p, &other)) = taken.range(range.clone()).next() {
            let other = &apps[other].1;
            let p = u16::try_from(p).unwrap_or(u16::MAX);
            let span = port_span(raw, *i);
            rep.at(
                span,
                format!("app[{i}].port"),
                format!(
                    "ports {}..{} overlap those of app {:?} (port {p}: {} here, {} of {:?})",
                    range.start,
                    range.end,
                    other.name,
                    port_role(app, p),
                    port_role(other, p),
                    other.name
                ),
            );
        }
        for p in range {
            taken.insert(p, n);
        }
    }
}

/// rtsup's own listeners may not take a port of any app's range (its slots and their reload
/// twins).
fn check_listeners_outside_apps(
    listeners: &[Listener],
    apps: &[(usize, AppSpec)],
    rep: &mut Reporter<'_>,
) {
    for l in listeners {
        let p = l.addr.port();
        if p == 0 {
            continue;
        }
        for (_, app) in apps {
            let range = app_range(app);
            if range.contains(&u32::from(p)) {
                rep.at(
                    l.span.clone(),
                    l.key,
                    format!(
                        "port {p} is {} of app {:?} (its ports are {}..{})",
                        port_role(app, p),
                        app.name,
                        range.start,
                        range.end
                    ),
                );
            }
        }
    }
}

fn balancer_section(
    b: &Section<RawBalancer>,
    apps: &[&str],
    base: &Path,
    log_dir: Option<&Path>,
    rep: &mut Reporter<'_>,
) -> Option<BalancerConfig> {
    let span = b.span.clone();
    let b = &b.value;
    let errors_before = rep.errors.len();
    let cookie_secret = super::cluster::cookie_secret(b, base, rep);
    let listen = addr(
        b.listen.as_ref(),
        DEFAULT_BALANCER_LISTEN,
        "balancer.listen",
        rep,
    );
    // [balancer]'s own sticky settings: those of a single app, the defaults of each route.
    let defaults = sticky(
        b.engineio_path.as_ref(),
        b.new_sessions.as_ref(),
        b.cookie.as_ref(),
        None,
        "balancer",
        rep,
    );
    let routes = if b.route.is_empty() {
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
                    Some(span.clone()),
                    "balancer.app",
                    "required when there is more than one [[app]] (or give [[balancer.route]]s)",
                );
                String::new()
            }
        };
        vec![RouteConfig {
            host: String::new(),
            path: "/".into(),
            app,
            sticky: defaults.clone(),
        }]
    } else {
        if let Some(a) = &b.app {
            rep.at(
                Some(a.span()),
                "balancer.app",
                "not with [[balancer.route]]: each route names its app",
            );
        }
        routes(&b.route, apps, &defaults, rep)
    };
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
    let limits = client_bounds(b, rep);
    let tls = tls_section(b, base, span, rep);
    let access_log = access_log(b, base, log_dir, rep);
    if rep.errors.len() > errors_before {
        return None;
    }
    Some(BalancerConfig {
        listen: listen?,
        routes,
        trusted_proxies,
        threads,
        session_rate: b.session_rate.unwrap_or(DEFAULT_SESSION_RATE),
        session_burst: b.session_burst.unwrap_or(DEFAULT_SESSION_BURST),
        limits: limits?,
        unsticky: b.test_unsticky.unwrap_or(false),
        tls,
        access_log: access_log?,
        cookie_secret: cookie_secret.ok()?,
        preserve_header_case: b.preserve_header_case.unwrap_or(false),
    })
}

/// `access_log` (a path, or "off"; default `log_dir/access.log`) and `access_log_format`.
/// `None` when either is wrong; `Some(None)` when the log is off.
fn access_log(
    b: &RawBalancer,
    base: &Path,
    log_dir: Option<&Path>,
    rep: &mut Reporter<'_>,
) -> Option<Option<AccessLogConfig>> {
    let format = match b.access_log_format.as_ref() {
        None => Format::Combined,
        Some(f) => match f.get_ref().as_str() {
            "combined" => Format::Combined,
            "json" => Format::Json,
            other => {
                rep.at(
                    Some(f.span()),
                    "balancer.access_log_format",
                    format!(r#"must be "combined" or "json", not {other:?}"#),
                );
                return None;
            }
        },
    };
    let path = match b.access_log.as_ref().map(|p| p.get_ref().as_str()) {
        Some("off") => return Some(None),
        Some("") => {
            let s = b.access_log.as_ref().map(Spanned::span);
            rep.at(s, "balancer.access_log", r#"must be a file path or "off""#);
            return None;
        }
        Some(p) => base.join(p),
        // The supervisor section was reported: no default to give.
        None => log_dir?.join("access.log"),
    };
    Some(Some(AccessLogConfig { path, format }))
}

/// The sticky settings at `prefix` (`balancer` or `balancer.route[i]`), each key defaulting
/// to `inherit`'s (or the documented default at the top level).
fn sticky(
    path_written: Option<&Spanned<String>>,
    new_sessions: Option<&Spanned<String>>,
    cookie: Option<&Spanned<String>>,
    inherit: Option<&Sticky>,
    prefix: &str,
    rep: &mut Reporter<'_>,
) -> Sticky {
    let engineio_path = path_written.map_or_else(
        || {
            inherit.map_or(DEFAULT_ENGINEIO_PATH.to_string(), |i| {
                i.engineio_path.clone()
            })
        },
        |p| p.get_ref().clone(),
    );
    if !engineio_path.starts_with('/') || !engineio_path.ends_with('/') {
        rep.at(
            path_written.map(Spanned::span),
            format!("{prefix}.engineio_path"),
            "must start and end with '/' (e.g. \"/socket.io/\")",
        );
    }
    let new_sessions = match new_sessions {
        None => inherit.map_or(NewSessions::LeastConn, |i| i.new_sessions),
        Some(v) => match v.get_ref().as_str() {
            "least-conn" => NewSessions::LeastConn,
            "ip-hash" => NewSessions::IpHash,
            "round-robin" => NewSessions::RoundRobin,
            other => {
                rep.at(
                    Some(v.span()),
                    format!("{prefix}.new_sessions"),
                    format!(r#"must be "least-conn", "ip-hash" or "round-robin", not {other:?}"#),
                );
                NewSessions::LeastConn
            }
        },
    };
    let name = cookie.map_or_else(
        || inherit.map_or(DEFAULT_COOKIE.to_string(), |i| i.cookie.clone()),
        |c| c.get_ref().clone(),
    );
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        rep.at(
            cookie.map(Spanned::span),
            format!("{prefix}.cookie"),
            "must be a non-empty cookie name (letters, digits, '-', '_', '.')",
        );
    }
    Sticky {
        engineio_path,
        new_sessions,
        cookie: name,
    }
}

/// Each `[[balancer.route]]`: an app that exists, a host name (`*.` for subdomains) or none,
/// a path prefix starting with `/`, its sticky settings; two routes taking the same host and
/// path are an error (the second could never be reached).
fn routes(
    raw: &[Spanned<RawRoute>],
    apps: &[&str],
    defaults: &Sticky,
    rep: &mut Reporter<'_>,
) -> Vec<RouteConfig> {
    let mut out: Vec<RouteConfig> = Vec::new();
    let mut seen: Vec<(HostMatch, String, usize)> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let prefix = format!("balancer.route[{i}]");
        let span = r.span();
        let r = r.get_ref();
        if !apps.contains(&r.app.get_ref().as_str()) {
            rep.at(
                Some(r.app.span()),
                format!("{prefix}.app"),
                format!("no [[app]] is named {:?}", r.app.get_ref()),
            );
        }
        let host = r.host.as_ref().map_or("", |h| h.get_ref().as_str());
        let name = host.strip_prefix("*.").unwrap_or(host);
        let valid_host = host.is_empty()
            || (!name.is_empty()
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                }));
        if !valid_host {
            rep.at(
                r.host.as_ref().map(Spanned::span),
                format!("{prefix}.host"),
                format!(
                    "{host:?} is not a host name (\"chat.example.com\", or \"*.example.com\" for its subdomains)"
                ),
            );
        }
        let path = r.path.as_ref().map_or("/", |p| p.get_ref().as_str());
        if !path.starts_with('/') {
            rep.at(
                r.path.as_ref().map(Spanned::span),
                format!("{prefix}.path"),
                "must start with '/' (a path prefix, e.g. \"/api/\")",
            );
        }
        let matcher = HostMatch::parse(host);
        if let Some((_, _, first)) = seen.iter().find(|(h, p, _)| *h == matcher && p == path) {
            rep.at(
                Some(span.clone()),
                prefix.clone(),
                format!(
                    "unreachable: balancer.route[{first}] takes the same host and path ({}{path})",
                    if host.is_empty() { "any host" } else { host }
                ),
            );
        }
        seen.push((matcher, path.to_string(), i));
        // Under a path prefix, engine.io is mounted under it too (`/chat/` →
        // `/chat/socket.io/`) unless the route says otherwise.
        let inherited = Sticky {
            engineio_path: match path.trim_end_matches('/') {
                "" => defaults.engineio_path.clone(),
                prefix => format!("{prefix}{}", defaults.engineio_path),
            },
            ..defaults.clone()
        };
        let sticky = sticky(
            r.engineio_path.as_ref(),
            r.new_sessions.as_ref(),
            r.cookie.as_ref(),
            Some(&inherited),
            &prefix,
            rep,
        );
        if path.starts_with('/') && !sticky.engineio_path.starts_with(path) {
            rep.at(
                r.engineio_path.as_ref().map(Spanned::span).or(Some(span.clone())),
                format!("{prefix}.engineio_path"),
                format!(
                    "{:?} is outside the route's path {path:?}: its engine.io requests would never reach it",
                    sticky.engineio_path
                ),
            );
        }
        out.push(RouteConfig {
            host: host.to_ascii_lowercase(),
            path: path.to_string(),
            app: r.app.get_ref().clone(),
            sticky,
        });
    }
    out
}

/// `tls_cert`/`tls_key` then each `[[balancer.certificate]]`'s `cert`/`key`, as written.
fn cert_pairs(b: &RawBalancer) -> impl Iterator<Item = (&Spanned<String>, &Spanned<String>)> {
    b.tls_cert
        .as_ref()
        .zip(b.tls_key.as_ref())
        .into_iter()
        .chain(
            b.certificate
                .iter()
                .map(|c| (&c.get_ref().cert, &c.get_ref().key)),
        )
}

/// The key naming pair `i`'s `which` file (`cert` or `key`): `balancer.tls_cert` for the
/// first, `balancer.certificate[i-1].cert` for the others.
fn cert_key_name(i: usize, which: &str) -> String {
    match i {
        0 => format!("balancer.tls_{which}"),
        _ => format!("balancer.certificate[{}].{which}", i - 1),
    }
}

/// `[balancer]` TLS: `tls_cert` and `tls_key` together, each `[[balancer.certificate]]`,
/// every pair loaded and checked now (readable, a certificate and its own key, valid today),
/// so `rtsup check` and a reload refuse a bad certificate with its key named; the redirect
/// listener only beside TLS.
fn tls_section(
    b: &RawBalancer,
    base: &Path,
    section: Range<usize>,
    rep: &mut Reporter<'_>,
) -> Option<TlsConfig> {
    let pair = match (&b.tls_cert, &b.tls_key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(c), None) => {
            rep.at(Some(c.span()), "balancer.tls_key", "required with tls_cert");
            return None;
        }
        (None, Some(k)) => {
            rep.at(Some(k.span()), "balancer.tls_cert", "required with tls_key");
            return None;
        }
    };
    if pair.is_none() {
        if !b.certificate.is_empty() || b.redirect_listen.is_some() || b.http2.is_some() {
            let span = b
                .redirect_listen
                .as_ref()
                .map(Spanned::span)
                .or(b.certificate.first().map(Spanned::span))
                .unwrap_or(section);
            rep.at(
                Some(span),
                "balancer.tls_cert",
                "required by [[balancer.certificate]], redirect_listen and http2 (they are HTTPS settings)",
            );
        }
        return None;
    }
    let errors_before = rep.errors.len();
    let mut certs = Vec::new();
    for (i, (cert, key)) in cert_pairs(b).enumerate() {
        let files = balancer::tls::CertFiles {
            cert: base.join(cert.get_ref()),
            key: base.join(key.get_ref()),
        };
        // Validity is not checked here: a start serves an expired certificate with a warning
        // (so the site and its ACME renewal keep working), `rtsup check` warns, and a reload
        // refuses one (see `environment` and the daemon).
        match balancer::tls::Certificates::load(std::slice::from_ref(&files), None) {
            Ok(_) => certs.push(files),
            Err(e) => {
                let (span, key_name) = match e {
                    balancer::tls::CertError::BadKey { .. } => {
                        (key.span(), cert_key_name(i, "key"))
                    }
                    _ => (cert.span(), cert_key_name(i, "cert")),
                };
                rep.at(Some(span), key_name, e.to_string());
            }
        }
    }
    let redirect = b.redirect_listen.as_ref().and_then(|l| {
        let listen = addr(Some(l), "", "balancer.redirect_listen", rep)?;
        let except = b
            .redirect_except
            .as_ref()
            .map_or(DEFAULT_REDIRECT_EXCEPT.to_string(), |e| e.get_ref().clone());
        if !except.is_empty() && !except.starts_with('/') {
            let s = b.redirect_except.as_ref().map(Spanned::span);
            rep.at(
                s,
                "balancer.redirect_except",
                "must start with '/' (or be \"\" to redirect everything)",
            );
        }
        Some(RedirectConfig { listen, except })
    });
    if rep.errors.len() > errors_before {
        return None;
    }
    Some(TlsConfig {
        certs,
        http2: b.http2.unwrap_or(true),
        redirect,
    })
}

/// The `[balancer]` bounds on clients: the header within 1 MiB, the request line within 64 KiB
/// (the longest URI the HTTP stack takes) and the header, timeouts from 100 ms to 1 day, caps
/// of at least 1.
fn client_bounds(b: &RawBalancer, rep: &mut Reporter<'_>) -> Option<ClientBounds> {
    let bounded_size =
        |v: Option<&Spanned<String>>, default, key, max: u64, rep: &mut Reporter<'_>| {
            let n = size(v, default, key, rep)?;
            if (1024..=max).contains(&n) {
                usize::try_from(n).ok()
            } else {
                let max = bytesize::ByteSize::b(max).display().iec();
                rep.at(span_of(v), key, format!("must be 1KiB to {max}"));
                None
            }
        };
    let timeout = |v: Option<&Spanned<String>>, default, key, rep: &mut Reporter<'_>| {
        let d = duration(v, default, key, rep)?;
        if d < Duration::from_millis(100) || d > Duration::from_secs(24 * 3600) {
            rep.at(span_of(v), key, "must be 100ms to 1d");
            return None;
        }
        Some(d)
    };
    let count = |v: Option<&Spanned<i64>>, key, zero_ok: bool, rep: &mut Reporter<'_>| {
        let v = v?;
        match usize::try_from(*v.get_ref()) {
            Ok(n) if n > 0 || zero_ok => Some(n),
            _ => {
                let least = if zero_ok { "0 (no cap)" } else { "1" };
                rep.at(Some(v.span()), key, format!("must be {least} or more"));
                None
            }
        }
    };
    let line = bounded_size(
        b.max_request_line.as_ref(),
        DEFAULT_MAX_REQUEST_LINE,
        "balancer.max_request_line",
        MAX_MAX_REQUEST_LINE,
        rep,
    );
    let header = bounded_size(
        b.max_header.as_ref(),
        DEFAULT_MAX_HEADER,
        "balancer.max_header",
        MAX_MAX_HEADER,
        rep,
    );
    if let (Some(l), Some(h)) = (line, header)
        && l > h
    {
        rep.at(
            span_of(b.max_request_line.as_ref()),
            "balancer.max_request_line",
            format!("must not exceed max_header ({h} bytes)"),
        );
    }
    let [
        header_timeout,
        body_timeout,
        send_timeout,
        connect_timeout,
        keepalive_timeout,
        upstream_keepalive_timeout,
    ] = [
        (
            &b.header_timeout,
            DEFAULT_HEADER_TIMEOUT,
            "balancer.header_timeout",
        ),
        (
            &b.body_timeout,
            DEFAULT_BODY_TIMEOUT,
            "balancer.body_timeout",
        ),
        (
            &b.send_timeout,
            DEFAULT_SEND_TIMEOUT,
            "balancer.send_timeout",
        ),
        (
            &b.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
            "balancer.connect_timeout",
        ),
        (
            &b.keepalive_timeout,
            DEFAULT_KEEPALIVE_TIMEOUT,
            "balancer.keepalive_timeout",
        ),
        (
            &b.upstream_keepalive_timeout,
            DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT,
            "balancer.upstream_keepalive_timeout",
        ),
    ]
    .map(|(v, default, key)| timeout(v.as_ref(), default, key, rep));
    let max_connections = count(
        b.max_connections.as_ref(),
        "balancer.max_connections",
        false,
        rep,
    );
    let per_address = count(
        b.max_connections_per_address.as_ref(),
        "balancer.max_connections_per_address",
        true,
        rep,
    );
    Some(ClientBounds {
        max_request_line: line?,
        max_header: header?,
        header_timeout: header_timeout?,
        body_timeout: body_timeout?,
        send_timeout: send_timeout?,
        connect_timeout: connect_timeout?,
        keepalive_timeout: keepalive_timeout?,
        upstream_keepalive_timeout: upstream_keepalive_timeout?,
        max_connections,
        max_connections_per_address: per_address.unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
    })
}

fn admin_section(a: Option<&Section<RawAdmin>>, rep: &mut Reporter<'_>) -> Option<AdminConfig> {
    let listen = addr(
        a.and_then(|a| a.value.listen.as_ref()),
        DEFAULT_ADMIN_LISTEN,
        "admin.listen",
        rep,
    )?;
    let token = a
        .and_then(|a| a.value.token.as_ref())
        .map(|t| t.get_ref().clone());
    if let Some(t) = a.and_then(|a| a.value.token.as_ref())
        && t.get_ref().len() < 16
    {
        rep.at(
            Some(t.span()),
            "admin.token",
            "must be at least 16 characters",
        );
    }
    Some(AdminConfig {
        enabled: a.is_some(),
        listen,
        token,
    })
}

/// Where `app[i].port` is written, when it is.
fn port_span(raw: &RawConfig, i: usize) -> Option<Range<usize>> {
    raw.app
        .get(i)
        .and_then(Option::as_ref)
        .and_then(|s| s.value.port.as_ref())
        .map(Spanned::span)
}

/// The machine's CPUs, as a worker count.
fn cpus() -> u16 {
    std::thread::available_parallelism().map_or(1, |n| {
        u16::try_from(n.get())
            .unwrap_or(MAX_INSTANCES)
            .min(MAX_INSTANCES)
    })
}

fn span_of<T>(v: Option<&Spanned<T>>) -> Option<Range<usize>> {
    v.map(Spanned::span)
}

pub(super) fn duration(
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
        Err(_) => {
            // (bytesize's own message names its parser's internals, not the user's mistake.)
            rep.at(
                span_of(v),
                key,
                format!("{text:?} is not a size like \"500MB\" or \"1GiB\""),
            );
            None
        }
    }
}

/// The app's environment: `env_file` (dotenv syntax, relative to the configuration file)
/// under `env`, whose keys win. `None` when the file cannot be read or parsed (reported).
fn app_env(
    app: &RawApp,
    base: &Path,
    key: &str,
    rep: &mut Reporter<'_>,
) -> Option<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    if let Some(f) = &app.env_file {
        let path = base.join(f.get_ref());
        let read = dotenvy::from_path_iter(&path).and_then(|it| it.collect::<Result<Vec<_>, _>>());
        match read {
            Ok(pairs) => env.extend(pairs),
            Err(e) => {
                rep.at(Some(f.span()), key, format!("{}: {e}", path.display()));
                return None;
            }
        }
    }
    env.extend(app.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Some(env)
}

/// Whether every variable can be passed to a process: a name that is not empty and has no
/// `=` or NUL byte, a value without NUL bytes (each problem reported).
fn env_is_valid(env: &BTreeMap<String, String>, key: &str, rep: &mut Reporter<'_>) -> bool {
    let mut ok = true;
    for (name, value) in env {
        let problem = if name.is_empty() {
            Some("a variable name is empty".to_string())
        } else if name.contains('=') || name.contains('\0') {
            Some(format!("variable name {name:?} has '=' or a NUL byte"))
        } else if value.contains('\0') {
            Some(format!(
                "{name}'s value has a NUL byte (a process cannot receive it)"
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            rep.at(None, key, p);
            ok = false;
        }
    }
    ok
}

/// `increment_var`: a variable of the app's environment holding a whole number (slot `i`
/// gets it plus `i`); not `PORT`, which rtsup sets itself (`port` plus the slot).
fn increment_var(
    v: Option<&Spanned<String>>,
    env: Option<&BTreeMap<String, String>>,
    key: &str,
    rep: &mut Reporter<'_>,
) -> Option<String> {
    let v = v?;
    let name = v.get_ref();
    if name == "PORT" {
        rep.at(
            Some(v.span()),
            key,
            "rtsup sets PORT itself (port + slot); name another variable",
        );
        return None;
    }
    let env = env?;
    match env.get(name).map(|x| x.trim().parse::<i64>()) {
        // Room for every slot's increment.
        Some(Ok(n)) if n.checked_add(i64::from(u16::MAX)).is_some() => Some(name.clone()),
        _ => {
            rep.at(
                Some(v.span()),
                key,
                format!(
                    "{name} must be set to a whole number in env or env_file (below {})",
                    i64::MAX - i64::from(u16::MAX)
                ),
            );
            None
        }
    }
}

/// Each app's `metrics_path`: a path on the worker's port, starting with `/`.
fn worker_metrics(raw: &RawConfig, rep: &mut Reporter<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (i, app) in raw.app.iter().enumerate() {
        let Some(app) = app.as_ref().map(|a| &a.value) else {
            continue;
        };
        let (Some(name), Some(path)) = (&app.name, &app.metrics_path) else {
            continue;
        };
        let p = path.get_ref();
        if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            rep.at(
                Some(path.span()),
                format!("app[{i}].metrics_path"),
                format!("{p:?} must be a path like \"/metrics\""),
            );
            continue;
        }
        out.insert(name.get_ref().clone(), p.clone());
    }
    out
}

/// Each app's `cron_restart`, checked as a cron pattern (5 fields, or 6 with seconds).
fn cron_restarts(raw: &RawConfig, rep: &mut Reporter<'_>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, app) in raw.app.iter().enumerate() {
        let Some(app) = app.as_ref().map(|a| &a.value) else {
            continue;
        };
        let (Some(name), Some(pattern)) = (&app.name, &app.cron_restart) else {
            continue;
        };
        match crate::cron::parse(pattern.get_ref()) {
            Ok(_) => out.push((name.get_ref().clone(), pattern.get_ref().clone())),
            Err(e) => rep.at(Some(pattern.span()), format!("app[{i}].cron_restart"), e),
        }
    }
    out
}

/// `kill_signal`: a signal name with or without `SIG` (`"SIGINT"`, `"INT"`), default
/// SIGTERM; never one a process cannot handle (SIGKILL, SIGSTOP).
fn kill_signal(
    v: Option<&Spanned<String>>,
    key: &str,
    rep: &mut Reporter<'_>,
) -> Option<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    let Some(v) = v else {
        return Some(Signal::SIGTERM);
    };
    let text = v.get_ref().trim().to_ascii_uppercase();
    let name = if text.starts_with("SIG") {
        text.clone()
    } else {
        format!("SIG{text}")
    };
    match Signal::from_str(&name) {
        Ok(Signal::SIGKILL | Signal::SIGSTOP) => {
            rep.at(
                Some(v.span()),
                key,
                format!("{name} cannot be handled by a worker; use SIGTERM or SIGINT (SIGKILL follows kill_timeout anyway)"),
            );
            None
        }
        Ok(s) => Some(s),
        Err(_) => {
            rep.at(
                Some(v.span()),
                key,
                format!(
                    "{:?} is not a signal name like \"SIGINT\" or \"SIGTERM\"",
                    v.get_ref()
                ),
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

/// What this machine says about the valid parts of a file, for `rtsup check` only (the daemon
/// does not refuse a file for them: a command may be installed, a port freed, before workers
/// start). Errors: a `command` that cannot be run (not on `PATH`, or, with a `/`, not an
/// executable file). Warnings: a slot port or listener that something listens on now.
pub fn environment(raw: &RawConfig, v: &Validated, rep: &mut Reporter<'_>) {
    // Commands of every app that names one, valid or not: the answer does not depend on the
    // rest of the app.
    for (i, sec) in raw.app.iter().enumerate() {
        let Some(app) = sec.as_ref().map(|s| &s.value) else {
            continue;
        };
        let Some(command) = &app.command else {
            continue;
        };
        let cwd = app.cwd.as_ref().map(|c| v.base.join(c.get_ref()));
        if let Some(problem) = command_problem(command.get_ref(), cwd.as_deref(), &app.env) {
            rep.at(Some(command.span()), format!("app[{i}].command"), problem);
        }
    }
    for (i, app) in &v.apps {
        let span = port_span(raw, *i);
        for p in app.port..app.port.saturating_add(app.instances) {
            if let Some(busy) = busy(SocketAddr::from(([127, 0, 0, 1], p))) {
                rep.warn(span.clone(), format!("app[{i}].port"), busy);
            }
        }
    }
    for l in &v.listeners {
        if l.addr.port() != 0
            && let Some(busy) = busy(l.addr)
        {
            rep.warn(l.span.clone(), l.key, busy);
        }
    }
    // Certificates outside their validity period (a start serves them, a reload refuses them).
    if let Some(b) = raw.balancer.as_ref().map(|b| &b.value) {
        for (i, (cert, key)) in cert_pairs(b).enumerate() {
            let files = balancer::tls::CertFiles {
                cert: v.base.join(cert.get_ref()),
                key: v.base.join(key.get_ref()),
            };
            let Ok(loaded) = balancer::tls::Certificates::load(&[files], None) else {
                continue;
            };
            for s in &loaded.summaries {
                if let Err(e) = s.valid_at(std::time::SystemTime::now()) {
                    rep.warn(Some(cert.span()), cert_key_name(i, "cert"), e.to_string());
                }
            }
        }
    }
}

/// Why `command` cannot be started the way the supervisor starts it, if it cannot: without a
/// `/` it is looked up on `PATH` (the app's own `env.PATH` if set), with one it names a file,
/// relative to the app's `cwd`.
fn command_problem(
    command: &str,
    cwd: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Option<String> {
    if command.trim().is_empty() {
        return None; // reported by `app_section`
    }
    if command.contains('/') {
        // Lexically tidied (`a/./b` → `a/b`) for the message; the meaning is the same.
        let path: PathBuf = cwd
            .map_or_else(|| PathBuf::from(command), |dir| dir.join(command))
            .components()
            .collect();
        if is_executable(&path) {
            return None;
        }
        return Some(if path.as_os_str() == command {
            format!("{command:?} is not an executable file")
        } else {
            format!("{command:?} is not an executable file ({})", path.display())
        });
    }
    let path = env
        .get("PATH")
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| is_executable(&dir.join(command)));
    (!found).then(|| format!("{command:?} not found on PATH"))
}

/// A regular file with an execute bit.
fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `Some(warning)` when `addr` cannot be bound because something listens there now, naming
/// the process when `/proc` tells (Linux, a process of this user or any process for root).
fn busy(addr: SocketAddr) -> Option<String> {
    match TcpListener::bind(addr) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let port = addr.port();
            Some(match supervisor::sockets::port_owner(port) {
                Some((pid, name)) => format!("port {port} is in use now by pid {pid} ({name})"),
                None => format!("port {port} is in use now"),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_this_process_holds_is_named() {
        // Below the ephemeral range: a port from there, once dropped, can be taken at once by
        // any outgoing connection of the tests running beside this one.
        let start = 20_000 + (std::process::id() % 10_000) as u16;
        let held = (start..32_000)
            .chain(20_000..start)
            .find_map(|port| TcpListener::bind(("127.0.0.1", port)).ok())
            .expect("a free port below 32000");
        let addr = held.local_addr().expect("addr");
        let warning = busy(addr).expect("busy");
        let me = std::process::id();
        assert!(
            warning.starts_with(&format!("port {} is in use now by pid {me} (", addr.port())),
            "{warning}"
        );
        drop(held);
        assert_eq!(busy(addr), None);
    }

    #[test]
    fn commands_are_found_like_the_supervisor_runs_them() {
        let env = BTreeMap::new();
        assert_eq!(command_problem("sh", None, &env), None);
        assert_eq!(
            command_problem("nodee-not-here", None, &env).as_deref(),
            Some("\"nodee-not-here\" not found on PATH")
        );
        let mut only_tmp = BTreeMap::new();
        only_tmp.insert("PATH".to_string(), "/nonexistent".to_string());
        assert!(command_problem("sh", None, &only_tmp).is_some());
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("run.sh");
        std::fs::write(&script, "#!/bin/sh\n").expect("write");
        assert_eq!(
            command_problem("./run.sh", Some(dir.path()), &env).as_deref(),
            Some(
                format!(
                    "\"./run.sh\" is not an executable file ({})",
                    dir.path().join("run.sh").display()
                )
                .as_str()
            )
        );
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(command_problem("./run.sh", Some(dir.path()), &env), None);
        assert_eq!(
            command_problem(&script.display().to_string(), None, &env),
            None
        );
    }
}
