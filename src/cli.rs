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
    /// Run the supervisor (and balancer) in the foreground (SIGTERM/SIGINT stop it
    /// gracefully), or with -d in the background. With APP: start that app in the running
    /// daemon. With SCRIPT (a file, or -i / --name given): run it as a one-off app, written to
    /// ./rtsup.toml (`rtsup start app.js -i 4 --name api`, as with PM2).
    Start {
        /// Configuration file (default: ./rtsup.toml).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Control socket of the daemon (with APP).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// An app of the running daemon to start (stopped or errored), or a script to run.
        #[arg(value_name = "APP|SCRIPT")]
        app: Option<String>,
        /// Environment profile: each app's `[app.env_NAME]` on top of its `env` (PM2's
        /// `--env production`); reloads keep it.
        #[arg(long = "env", value_name = "NAME")]
        env: Option<String>,
        /// Run the daemon in the background; return once every worker has settled, with the
        /// status table (its log goes to log_dir/rtsup.log).
        #[arg(short = 'd', long)]
        detach: bool,
        /// With -d: how long to wait for the workers to settle.
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
        /// SCRIPT: number of workers (a number, "max", or -N for every CPU but N).
        #[arg(
            short = 'i',
            long = "instances",
            value_name = "N",
            allow_hyphen_values = true
        )]
        instances: Option<String>,
        /// SCRIPT: the app's name (default: the script's file name).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// SCRIPT: the first worker's port (worker i gets port + i in $PORT).
        #[arg(long, value_name = "PORT", default_value_t = 3000)]
        port: u16,
        /// SCRIPT: where the balancer listens.
        #[arg(long, value_name = "ADDR", default_value = crate::config::defaults::DEFAULT_BALANCER_LISTEN)]
        listen: String,
        /// SCRIPT: arguments for the script (after --).
        #[arg(last = true, value_name = "ARGS")]
        script_args: Vec<String>,
    },
    /// A live terminal view of every worker (state, CPU, memory, restarts, sessions,
    /// requests/s) with the selected worker's log tail, like `pm2 monit`; ↑/↓ select, q quits.
    Monit {
        #[command(flatten)]
        target: Target,
    },
    /// Show every worker: pid, port, state, uptime, restarts, cpu, memory.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Every host of the cluster and its workers (as this host sees them).
        #[arg(long)]
        cluster: bool,
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
    /// Install and enable the systemd unit for this configuration (what `pm2 startup` and
    /// `pm2 save` do): checks the file, creates the system user `rtsup` when missing, writes
    /// /etc/systemd/system/rtsup.service, runs `systemctl daemon-reload` and
    /// `systemctl enable --now rtsup`, printing every step.
    Startup {
        /// Configuration file (default: ./rtsup.toml).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// The user the service runs as (the system user `rtsup` is created when missing).
        #[arg(long, value_name = "NAME", default_value = "rtsup")]
        user: String,
        /// Where the unit file goes.
        #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
        /// Enable it at boot only; do not start it now.
        #[arg(long)]
        no_start: bool,
        /// Print what would be done and do nothing.
        #[arg(long)]
        dry_run: bool,
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
    /// Translate a PM2 ecosystem file (.js, .json, .yaml) into an rtsup.toml: the TOML on
    /// stdout (or -o FILE), every key that could not be carried over on stderr with the reason.
    Import {
        /// The ecosystem file (evaluated with node when it is JavaScript, as PM2 does).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Write the TOML here instead of stdout (an existing file is kept unless --force).
        #[arg(short = 'o', long = "output", value_name = "PATH")]
        output: Option<PathBuf>,
        /// Overwrite the -o file if it exists.
        #[arg(long, requires = "output")]
        force: bool,
    },
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
