//! Configuration: TOML file → raw serde structs ([`raw`]) → checked, typed [`Config`].
//!
//! ```text
//! rtsup.toml --toml+serde--> RawConfig --validate--> Config --> supervisor::SupervisorSpec
//!                                                          \--> balancer settings, admin
//! ```
//! Every error names the file, line, column and key (`rtsup.toml:14:13: app[0].instances: …`);
//! every layer reports all its problems at once: every syntax error; then every key of the
//! wrong type or unknown (the rest of its section is still read); then every semantic
//! problem of what could be read. `rtsup check` adds what this machine says
//! ([`Config::check`]). Relative paths are resolved against the directory of the file.
//! Defaults are documented in [`defaults`].
//!
//! Client commands need only `[supervisor]`: [`ClientSettings`] reads it leniently, so a file
//! with errors elsewhere never stops `rtsup status`, `stop`, `logs` or `reload`.

pub mod cluster;
pub mod defaults;
pub mod error;
pub mod raw;
pub mod validate;
pub mod watch;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use supervisor::{AppSpec, LogSpec};

pub use error::{ConfigError, ConfigErrors};

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages and `reload`).
    pub file: PathBuf,
    /// `[supervisor]`.
    pub supervisor: SupervisorConfig,
    /// Every `[[app]]`.
    pub apps: Vec<AppSpec>,
    /// `[balancer]`, when the sticky proxy is wanted.
    pub balancer: Option<BalancerConfig>,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `cron_restart` of each app that has one: (app, pattern), checked.
    pub cron_restarts: Vec<(String, String)>,
    /// `metrics_path` of each app that has one: app → path (the workers' own metrics,
    /// served with rtsup's).
    pub worker_metrics: BTreeMap<String, String>,
    /// `[cluster]`: hosts sharing sessions through Redis.
    pub cluster: Option<cluster::ClusterConfig>,
    /// `watch` of each app that has one, checked.
    pub watches: Vec<watch::WatchConfig>,
    /// The environment profile it was read with (`rtsup start --env NAME`): each app's
    /// `[app.env_NAME]` on top of its `env`. A reload reads the file with the same one.
    pub profile: Option<String>,
}

/// `[supervisor]`, checked.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Unix socket of the daemon (mode 0600).
    pub control_socket: PathBuf,
    /// Worker log files.
    pub logs: LogSpec,
}

/// `[balancer]`, checked.
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Which app serves which host and path, each with its sticky settings; one route to
    /// the only app (or `[balancer] app`) when the file gives none.
    pub routes: Vec<RouteConfig>,
    /// Peers whose `X-Forwarded-For` / `CF-Connecting-IP` are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Proxy worker threads.
    pub threads: usize,
    /// New engine.io sessions per second per client address (0: no limit).
    pub session_rate: u32,
    /// New sessions one client address may open at once.
    pub session_burst: u32,
    /// Bounds on clients (header size and timeouts, body and send timeouts, connection caps).
    pub limits: ClientBounds,
    /// Test-only (`test_unsticky = true`): no session pinning at all, to prove it matters.
    pub unsticky: bool,
    /// HTTPS on `listen`, when `tls_cert` is set.
    pub tls: Option<TlsConfig>,
    /// The access log, unless `access_log = "off"`.
    pub access_log: Option<AccessLogConfig>,
    /// The affinity cookie's secret, when configured (else random per start).
    pub cookie_secret: Option<cluster::CookieSecret>,
    /// HTTP/1.x header names passed on in the case they came in (nginx), instead of as the
    /// proxy spells them (a dozen common names titled, the rest lowercase; the default,
    /// cheaper).
    pub preserve_header_case: bool,
}

/// One `[[balancer.route]]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Host name, `*.example.com` for its subdomains, empty for any host.
    pub host: String,
    /// Path prefix (`/` for every path).
    pub path: String,
    /// The app that serves it.
    pub app: String,
    /// How its engine.io sessions stay on their worker.
    pub sticky: balancer::router::Sticky,
}

impl BalancerConfig {
    /// The apps the routes name, each once, in order (the balancer follows their workers).
    pub fn apps(&self) -> Vec<String> {
        let mut apps: Vec<String> = Vec::new();
        for r in &self.routes {
            if !apps.contains(&r.app) {
                apps.push(r.app.clone());
            }
        }
        apps
    }

    /// The routes as the balancer matches them, each pointing into [`BalancerConfig::apps`].
    pub fn router(&self) -> balancer::router::Router {
        let apps = self.apps();
        balancer::router::Router::new(
            self.routes
                .iter()
                .map(|r| balancer::router::Route {
                    host: balancer::router::HostMatch::parse(&r.host),
                    path: r.path.clone(),
                    app: apps.iter().position(|a| *a == r.app).unwrap_or(0),
                    app_name: r.app.clone(),
                    sticky: r.sticky.clone(),
                })
                .collect(),
        )
    }
}

/// `[balancer] access_log` and `access_log_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// The file (default `log_dir/access.log`), rotated like the worker logs.
    pub path: PathBuf,
    /// Line format.
    pub format: balancer::access_log::Format,
}

/// `[balancer]` TLS termination, checked (the certificate files were loaded and checked too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `tls_cert`/`tls_key` first (the default certificate), then every
    /// `[[balancer.certificate]]`; the client's SNI picks among them.
    pub certs: Vec<balancer::tls::CertFiles>,
    /// Offer HTTP/2 (ALPN `h2`) beside HTTP/1.1.
    pub http2: bool,
    /// A plain-HTTP listener that redirects to HTTPS.
    pub redirect: Option<RedirectConfig>,
}

/// `[balancer] redirect_listen`: plain HTTP answered with a 301 to the same URL over HTTPS,
/// except under one path prefix (ACME http-01 challenges), which is proxied as usual.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectConfig {
    /// Where plain-HTTP clients connect.
    pub listen: SocketAddr,
    /// Path prefix proxied instead of redirected (empty: redirect everything).
    pub except: String,
}

/// `[balancer]` bounds on clients and the wait for workers, checked (nginx's defaults unless
/// said otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientBounds {
    /// Longest request line, bytes (414 beyond).
    pub max_request_line: usize,
    /// Largest request header, bytes (431 beyond).
    pub max_header: usize,
    /// Time for a whole request header.
    pub header_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// Longest wait for a client to take response bytes.
    pub send_timeout: Duration,
    /// Longest wait for a worker to take a connection.
    pub connect_timeout: Duration,
    /// Longest idle wait of a kept-alive connection for its next request.
    pub keepalive_timeout: Duration,
    /// Longest idle time of a kept-alive connection to a worker before the proxy closes it.
    pub upstream_keepalive_timeout: Duration,
    /// Open client connections at most (`None`: what the open-files limit allows).
    pub max_connections: Option<usize>,
    /// Open client connections at most per client address (0: no cap).
    pub max_connections_per_address: usize,
}

/// `[admin]`, checked.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Whether the admin server runs: only when the file has an `[admin]` section.
    pub enabled: bool,
    /// Admin HTTP address (loopback by default).
    pub listen: SocketAddr,
    /// Bearer token every request must carry (`Authorization: Bearer …`, or `?token=` for the
    /// dashboard page), when set.
    pub token: Option<String>,
}

/// What `rtsup check` found in one file.
#[derive(Debug)]
pub struct CheckReport {
    /// The configuration, when the file is valid.
    pub config: Option<Config>,
    /// Every error, sorted by place; empty when the file is valid.
    pub errors: ConfigErrors,
    /// Things that do not make the file invalid but would trouble a start now (a port in use).
    pub warnings: Vec<ConfigError>,
}

impl Config {
    /// Read and check `file`. Errors name the file, line and key.
    pub fn load(file: &Path) -> Result<Self, ConfigErrors> {
        Self::load_profile(file, None)
    }

    /// [`Config::load`] with the environment profile `profile` (`[app.env_NAME]`).
    pub fn load_profile(file: &Path, profile: Option<&str>) -> Result<Self, ConfigErrors> {
        let src = read_source(file).map_err(|e| unreadable(file, &e))?;
        Self::parse_profile(file, &src, profile)
    }

    /// Check `src` as if read from `file`.
    pub fn parse(file: &Path, src: &str) -> Result<Self, ConfigErrors> {
        Self::parse_profile(file, src, None)
    }

    /// [`Config::parse`] with the environment profile `profile`.
    pub fn parse_profile(
        file: &Path,
        src: &str,
        profile: Option<&str>,
    ) -> Result<Self, ConfigErrors> {
        let mut rep = error::Reporter::new(file, src);
        let config = raw::read(src, &mut rep).and_then(|mut raw| {
            raw.profile = profile.map(str::to_string);
            validate::validate(&raw, file, &mut rep).config
        });
        match config {
            Some(cfg) if rep.errors.is_empty() => Ok(cfg),
            _ => Err(ConfigErrors::sorted(rep.errors)),
        }
    }

    /// `rtsup check`: every problem of `file` ([`Config::parse`]), plus what this machine
    /// says about it: a `command` that cannot be run is an error, a port something listens on
    /// right now a warning.
    pub fn check(file: &Path, profile: Option<&str>) -> CheckReport {
        let src = match read_source(file) {
            Ok(src) => src,
            Err(e) => {
                return CheckReport {
                    config: None,
                    errors: unreadable(file, &e),
                    warnings: Vec::new(),
                };
            }
        };
        Self::check_text(file, &src, profile)
    }

    /// [`Config::check`] of `src` as if read from `file` (what `rtsup import` is about to
    /// write).
    pub fn check_text(file: &Path, src: &str, profile: Option<&str>) -> CheckReport {
        let mut rep = error::Reporter::new(file, src);
        let mut config = None;
        if let Some(mut raw) = raw::read(src, &mut rep) {
            raw.profile = profile.map(str::to_string);
            let validated = validate::validate(&raw, file, &mut rep);
            validate::environment(&raw, &validated, &mut rep);
            config = validated.config;
        }
        let errors = ConfigErrors::sorted(rep.errors);
        CheckReport {
            config: config.filter(|_| errors.0.is_empty()),
            errors,
            warnings: rep.warnings,
        }
    }
}

/// Largest configuration file read: a config is a few kilobytes; `-c /dev/zero` must not read
/// for ever.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The file's text: only a regular file (a FIFO would block, a device never end), at most
/// [`MAX_CONFIG_BYTES`]; a file that is not UTF-8 is read lossily (the TOML reader then says
/// where it is not TOML).
fn read_source(file: &Path) -> io::Result<String> {
    use std::io::Read;
    let meta = std::fs::metadata(file)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(file)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

fn unreadable(file: &Path, e: &io::Error) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: file.to_path_buf(),
        line: 0,
        col: 0,
        key: "(file)".into(),
        message: format!("cannot read: {e}"),
    }])
}

/// The directory relative paths of `file` are resolved against, made absolute (so a path
/// means the same to a client in another directory as to the daemon).
pub fn base_dir(file: &Path) -> PathBuf {
    std::path::absolute(file)
        .ok()
        .as_deref()
        .and_then(Path::parent)
        .or_else(|| file.parent())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// What client commands (`status`, `stop`, `logs`, `reload`, …) take from a configuration
/// file: only `[supervisor] control_socket` and `log_dir`, read leniently. Every other
/// problem of the file is the daemon's business (and `rtsup check`'s); a file that is not TOML
/// gives what can still be read of `[supervisor]` and a warning.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// `control_socket`, resolved against the file's directory, when it could be read.
    pub control_socket: Option<PathBuf>,
    /// `log_dir`, resolved the same way, when it could be read.
    pub log_dir: Option<PathBuf>,
    /// `[balancer] access_log`, resolved the same way, when it names a file.
    pub access_log: Option<PathBuf>,
    /// One line per problem met on the way (for stderr), e.g. that the file is not TOML.
    pub warnings: Vec<String>,
}

impl ClientSettings {
    /// Read `file` leniently; an error only when it cannot be read at all.
    pub fn read(file: &Path) -> io::Result<Self> {
        Ok(Self::parse(file, &read_source(file)?))
    }

    /// Read `src` (from `file`) leniently: never fails.
    pub fn parse(file: &Path, src: &str) -> Self {
        use toml::de::{DeTable, DeValue};
        let (root, errors) = DeTable::parse_recoverable(src);
        let mut out = Self::default();
        if let Some(e) = errors.first() {
            let (line, col) = e.span().map_or((0, 0), |s| error::line_col(src, s.start));
            out.warnings.push(format!(
                "{}:{line}:{col}: not valid TOML ({}); [supervisor] read as far as it goes",
                file.display(),
                e.message().trim().replace('\n', " ")
            ));
        }
        let base = base_dir(file);
        let section = |name: &str| {
            root.get_ref()
                .iter()
                .find(|(k, _)| k.get_ref() == name)
                .map(|(_, v)| v.get_ref())
        };
        if let Some(DeValue::Table(b)) = section("balancer")
            && let Some((_, v)) = b.iter().find(|(k, _)| k.get_ref() == "access_log")
            && let DeValue::String(p) = v.get_ref()
            && p.as_ref() != "off"
        {
            out.access_log = Some(base.join(p.as_ref()));
        }
        let Some(DeValue::Table(supervisor)) = section("supervisor") else {
            return out;
        };
        let mut path = |key: &str| -> Option<PathBuf> {
            let (_, v) = supervisor.iter().find(|(k, _)| k.get_ref() == key)?;
            match v.get_ref() {
                DeValue::String(s) => Some(base.join(s.as_ref())),
                other => {
                    let (line, col) = error::line_col(src, v.span().start);
                    out.warnings.push(format!(
                        "{}:{line}:{col}: supervisor.{key}: must be a string, not {}; ignored",
                        file.display(),
                        other.type_str()
                    ));
                    None
                }
            }
        };
        let control_socket = path("control_socket");
        let log_dir = path("log_dir");
        out.control_socket = control_socket;
        out.log_dir = log_dir;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/rtsup.toml"), src).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = "[[app]]\nname = \"chat\"\ncommand = \"node\"\nport = 5001\n";

    #[test]
    fn minimal_gets_defaults() {
        let c = parse(MINIMAL).expect("valid");
        let app = &c.apps[0];
        assert_eq!(app.instances, 1);
        assert_eq!(app.restart.max_restarts, 16);
        assert_eq!(app.kill_timeout, std::time::Duration::from_secs(5));
        assert!(c.balancer.is_none());
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse(&format!("{MINIMAL}instancs = 4\n")).expect_err("bad key");
        assert!(
            err.starts_with("/etc/rtsup.toml:5:1: app[0].instancs: unknown field `instancs`"),
            "{err}"
        );
    }

    #[test]
    fn all_semantic_errors_are_reported() {
        let src = "[[app]]\nname = \"chat\"\ncommand = \"node\"\nport = 5001\ninstances = 0\nrestart_delay = \"soon\"\nmax_memory = \"lots\"\n[balancer]\nnew_sessions = \"random\"\n";
        let err = parse(src).expect_err("bad values");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 4, "{err}");
        assert!(
            lines[0].starts_with("/etc/rtsup.toml:5:13: app[0].instances: must be 1 to"),
            "{err}"
        );
        assert!(
            lines[1].starts_with("/etc/rtsup.toml:6:17: app[0].restart_delay:"),
            "{err}"
        );
        assert!(
            lines[2].starts_with("/etc/rtsup.toml:7:14: app[0].max_memory:"),
            "{err}"
        );
        assert!(
            lines[3].starts_with("/etc/rtsup.toml:9:16: balancer.new_sessions:"),
            "{err}"
        );
    }

    #[test]
    fn instances_max_and_sizes() {
        let c = parse(&format!(
            "{MINIMAL}instances = \"max\"\nmax_memory = \"500MB\"\n"
        ))
        .expect("valid");
        assert!(c.apps[0].instances >= 1);
        assert_eq!(c.apps[0].max_memory, Some(500_000_000));
    }

    #[test]
    fn overlapping_ports_are_rejected() {
        let src = format!(
            "{MINIMAL}instances = 2\n[[app]]\nname = \"b\"\ncommand = \"x\"\nport = 5003\n"
        );
        let err = parse(&src).expect_err("overlap");
        assert!(
            err.contains("app[1].port: ports 5003..5005 overlap those of app \"chat\""),
            "{err}"
        );
    }

    #[test]
    fn balancer_defaults_to_the_only_app() {
        let c = parse(&format!(
            "{MINIMAL}[balancer]\nlisten = \"127.0.0.1:8080\"\n"
        ))
        .expect("valid");
        let b = c.balancer.expect("balancer");
        assert_eq!(b.apps(), ["chat"]);
        let r = &b.routes[0];
        assert_eq!((r.host.as_str(), r.path.as_str()), ("", "/"));
        assert_eq!(r.sticky.new_sessions, balancer::NewSessions::LeastConn);
        assert_eq!(r.sticky.engineio_path, "/socket.io/");
    }

    #[test]
    fn every_layer_reports_together() {
        // A type error, an unknown key and a semantic error in app 0; a type error in app 1's
        // args; app 2 without a name; and a bad balancer: all reported, in file order.
        let src = "[[app]]\nname = \"a\"\ncommand = \"sh\"\nport = \"5001\"\ninstancs = 4\nkill_timeout = \"forever\"\n\
                   [[app]]\nname = \"b\"\ncommand = \"sh\"\nport = 6001\nargs = [\"x\", 3]\n\
                   [[app]]\ncommand = \"sh\"\nport = 7001\n\
                   [balancer]\napp = \"b\"\nnew_sessions = \"random\"\n";
        let err = parse(src).expect_err("bad");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 6, "{err}");
        assert!(
            lines[0].starts_with("/etc/rtsup.toml:4:8: app[0].port: invalid type: string"),
            "{err}"
        );
        assert!(
            lines[1].starts_with("/etc/rtsup.toml:5:1: app[0].instancs: unknown field"),
            "{err}"
        );
        assert!(
            lines[2].starts_with("/etc/rtsup.toml:6:16: app[0].kill_timeout:"),
            "{err}"
        );
        assert!(
            lines[3].starts_with("/etc/rtsup.toml:11:14: app[1].args: invalid type: integer"),
            "{err}"
        );
        assert_eq!(
            lines[4],
            "/etc/rtsup.toml:12:1: app[2].name: missing field `name`"
        );
        assert!(
            lines[5].starts_with("/etc/rtsup.toml:17:16: balancer.new_sessions:"),
            "{err}"
        );
    }

    #[test]
    fn every_syntax_error_has_a_line_and_column() {
        let err = parse("[[app]]\nname = \"chat\nport = 1\n[x\n").expect_err("syntax");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(lines[0].starts_with("/etc/rtsup.toml:2:13: "), "{err}");
        assert!(lines[1].starts_with("/etc/rtsup.toml:4:3: "), "{err}");
    }

    #[test]
    fn app_written_as_a_single_table_says_how_to_fix_it() {
        let err = parse("[app]\nname = \"a\"\n").expect_err("[app]");
        assert_eq!(
            err,
            "/etc/rtsup.toml:1:2: app: must be an array of tables: write [[app]], not [app]"
        );
    }

    #[test]
    fn listeners_may_not_take_an_app_port_or_twin() {
        let src = format!(
            "{MINIMAL}instances = 2\n[balancer]\nlisten = \"0.0.0.0:5002\"\n[admin]\nlisten = \"127.0.0.1:5004\"\n"
        );
        let err = parse(&src).expect_err("clash");
        assert_eq!(
            err,
            "/etc/rtsup.toml:7:10: balancer.listen: port 5002 is slot 1's port of app \"chat\" (its ports are 5001..5005)\n\
             /etc/rtsup.toml:9:10: admin.listen: port 5004 is slot 1's reload twin of app \"chat\" (its ports are 5001..5005)"
        );
    }

    #[test]
    fn client_settings_read_only_the_supervisor_section_and_the_access_log() {
        let file = Path::new("/srv/a/rtsup.toml");
        let s = ClientSettings::parse(
            file,
            "[supervisor]\ncontrol_socket = \"run/s.sock\"\nlog_dir = \"/var/l\"\nbogus = 1\n[[app]]\nport = \"x\"\n\
             [balancer]\naccess_log = \"logs/a.log\"\n",
        );
        assert_eq!(
            s,
            ClientSettings {
                control_socket: Some(PathBuf::from("/srv/a/run/s.sock")),
                log_dir: Some(PathBuf::from("/var/l")),
                access_log: Some(PathBuf::from("/srv/a/logs/a.log")),
                warnings: vec![],
            }
        );
        // Not TOML at all: nothing read, one warning.
        let s = ClientSettings::parse(file, "<html>\n");
        assert_eq!((s.control_socket, s.log_dir), (None, None));
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings[0].starts_with("/srv/a/rtsup.toml:1:")
                && s.warnings[0].contains(": not valid TOML ("),
            "{:?}",
            s.warnings
        );
        // A syntax error elsewhere leaves [supervisor] readable; a wrong type is ignored.
        let s = ClientSettings::parse(
            file,
            "[supervisor]\ncontrol_socket = \"/run/x.sock\"\nlog_dir = 5\n[[app]\n",
        );
        assert_eq!(s.control_socket, Some(PathBuf::from("/run/x.sock")));
        assert_eq!(s.log_dir, None);
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let c = parse(&format!("[supervisor]\nlog_dir = \"logs\"\n{MINIMAL}")).expect("valid");
        assert_eq!(c.supervisor.logs.dir, PathBuf::from("/etc/logs"));
    }
}
