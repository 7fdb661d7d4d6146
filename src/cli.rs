//! The command line: `rtsup start | status | reload | restart | stop | scale | logs | check`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Process supervisor and sticky Socket.IO balancer in one binary (PM2 + nginx, done right).
#[derive(Debug, Parser)]
#[command(name = "rtsup", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where to find the daemon: `--socket`, else `control_socket` of the configuration (read
/// leniently: only `[supervisor]` matters to a client), else the default socket path, which
/// does not depend on the current directory.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Configuration file whose `control_socket` names the daemon (default: ./rtsup.toml);
    /// errors elsewhere in the file are ignored.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Control socket of the daemon (default: `control_socket` from the configuration, else
    /// the default path).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor (and balancer) in the foreground; SIGTERM/SIGINT stop it gracefully.
    /// With APP: start that app in the running daemon.
    Start {
        /// Configuration file (default: ./rtsup.toml).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Control socket of the daemon (with APP).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// An app of the running daemon to start (stopped or errored).
        #[arg(value_name = "APP")]
        app: Option<String>,
        /// Environment profile: each app's `[app.env_NAME]` on top of its `env` (PM2's
        /// `--env production`); reloads keep it.
        #[arg(long = "env", value_name = "NAME", conflicts_with = "app")]
        env: Option<String>,
    },
    /// Show every worker: pid, port, state, uptime, restarts, cpu, memory.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop every worker and the daemon; with APP, only that app's workers.
    Stop {
        #[command(flatten)]
        target: Target,
        /// Stop only this app; the daemon and the other apps keep running.
        #[arg(value_name = "APP")]
        app: Option<String>,
    },
    /// Run N workers of APP: new slots on free ports, surplus ones drained before they stop
    /// (until the next reload, which takes `instances` from the configuration again).
    Scale {
        #[command(flatten)]
        target: Target,
        /// The app.
        #[arg(value_name = "APP")]
        app: String,
        /// Workers wanted.
        #[arg(value_name = "N")]
        instances: u16,
    },
    /// Rolling zero-downtime reload: re-read the configuration and the certificates, replace
    /// every worker (same as SIGHUP to the daemon, or `systemctl reload rtsup`).
    Reload {
        #[command(flatten)]
        target: Target,
        /// Only read the certificate files again (a renewal): no worker is replaced, no
        /// connection is touched.
        #[arg(long)]
        certs: bool,
    },
    /// Print a systemd unit for this configuration (like `pm2 startup`).
    Systemd {
        /// Configuration file (default: ./rtsup.toml).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Replace the workers of APP one at a time without downtime, or one slot with APP:SLOT;
    /// `--force` replaces them all at once.
    Restart {
        #[command(flatten)]
        target: Target,
        /// Stop every worker now and start new ones at once (not rolling).
        #[arg(long)]
        force: bool,
        /// `APP` or `APP:SLOT`.
        #[arg(value_name = "APP[:SLOT]")]
        which: String,
    },
    /// Print (and with -f follow) worker logs: from the `log_dir` of the daemon when one
    /// answers, else of the configuration; works without a running daemon.
    Logs {
        #[command(flatten)]
        target: Target,
        /// Keep printing new lines as they are written.
        #[arg(short, long)]
        follow: bool,
        /// Lines to print from the end of each file.
        #[arg(short = 'n', long = "lines", default_value_t = 20)]
        lines: usize,
        /// `APP` or `APP:SLOT`; all workers when absent.
        #[arg(value_name = "APP[:SLOT]", conflicts_with = "access")]
        which: Option<String>,
        /// The balancer's access log (`log_dir/access.log`) instead of the workers' logs.
        #[arg(long)]
        access: bool,
    },
    /// Run the reference Socket.IO worker (configured by its environment: PORT, REDIS_URL or
    /// RTSUP_HUB, …); this is what the embedded demo supervises.
    Worker,
    /// Check a configuration file: every error at once, each with file, line, column and key;
    /// also commands not found on PATH (errors) and ports in use right now (warnings).
    Check {
        /// Configuration file (default: ./rtsup.toml).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Check it with this environment profile (as `rtsup start --env NAME`).
        #[arg(long = "env", value_name = "NAME")]
        env: Option<String>,
    },
}

/// Split `APP` or `APP:SLOT`.
pub fn parse_which(which: &str) -> anyhow::Result<(String, Option<u16>)> {
    match which.split_once(':') {
        None => Ok((which.to_string(), None)),
        Some((app, slot)) => {
            let slot = slot
                .parse()
                .map_err(|_| anyhow::anyhow!("{which:?}: slot must be a number (APP:SLOT)"))?;
            Ok((app.to_string(), Some(slot)))
        }
    }
}
