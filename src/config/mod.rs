//! Configuration: TOML file → raw serde structs ([`raw`]) → checked, typed [`Config`].
//!
//! ```text
//! rtsup.toml --toml+serde--> RawConfig --validate--> Config --> supervisor::SupervisorSpec
//!                                                          \--> balancer settings, admin
//! ```
//! Every error names the file, line, column and key (`rtsup.toml:14:13: app[0].instances: …`);
//! semantic checks report all problems at once. Relative paths are resolved against the
//! directory of the file. Defaults are documented in [`defaults`].

pub mod defaults;
pub mod error;
pub mod raw;
pub mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use balancer::NewSessions;
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
    /// The app whose workers serve the traffic.
    pub app: String,
    /// Path prefix of engine.io traffic, with leading and trailing `/`.
    pub engineio_path: String,
    /// Placement of new sessions.
    pub new_sessions: NewSessions,
    /// Name of the affinity cookie.
    pub cookie: String,
    /// Peers whose `X-Forwarded-For` / `CF-Connecting-IP` are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Proxy worker threads.
    pub threads: usize,
    /// Test-only (`test_unsticky = true`): no session pinning at all, to prove it matters.
    pub unsticky: bool,
}

/// `[admin]`, checked.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Admin HTTP address (loopback by default).
    pub listen: SocketAddr,
}

impl Config {
    /// Read and check `file`. Errors name the file, line and key.
    pub fn load(file: &Path) -> Result<Self, ConfigErrors> {
        let src = std::fs::read_to_string(file).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.to_path_buf(),
                line: 0,
                col: 0,
                key: "(file)".into(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse(file, &src)
    }

    /// Check `src` as if read from `file`.
    pub fn parse(file: &Path, src: &str) -> Result<Self, ConfigErrors> {
        let mut rep = error::Reporter::new(file, src);
        let raw: raw::RawConfig = match toml::from_str(src) {
            Ok(raw) => raw,
            Err(e) => {
                rep.toml(&e);
                return Err(ConfigErrors(rep.errors));
            }
        };
        match validate::validate(raw, file, &mut rep) {
            Some(cfg) if rep.errors.is_empty() => Ok(cfg),
            _ => Err(ConfigErrors(rep.errors)),
        }
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
        assert_eq!(b.app, "chat");
        assert_eq!(b.new_sessions, NewSessions::LeastConn);
        assert_eq!(b.engineio_path, "/socket.io/");
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let c = parse(&format!("[supervisor]\nlog_dir = \"logs\"\n{MINIMAL}")).expect("valid");
        assert_eq!(c.supervisor.logs.dir, PathBuf::from("/etc/logs"));
    }
}
