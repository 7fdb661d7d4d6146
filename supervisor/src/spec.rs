//! What the supervisor is asked to run: validated, typed specifications.
//!
//! The `rtsup` binary builds these from its TOML configuration; this crate never sees the raw
//! file. Every value here has already been checked (ports fit, durations parsed, sizes parsed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::backoff::RestartPolicy;

/// Most slots one app may have (config validation and `rtsup scale` both enforce it).
pub const MAX_INSTANCES: u16 = 512;

/// Everything the supervisor runs: the apps and where their logs go.
#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    /// The apps, in configuration order.
    pub apps: Vec<AppSpec>,
    /// Where worker output goes and how it is rotated.
    pub logs: LogSpec,
    /// Ports rtsup's own listeners hold (balancer, admin): never given to a worker.
    pub reserved_ports: Vec<u16>,
}

/// One app: `instances` slots of the same command on consecutive ports.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    /// Unique app name (used in log file names and `rtsup restart APP`).
    pub name: String,
    /// Program to run (looked up in `PATH` when it has no slash).
    pub command: String,
    /// Arguments passed to `command`.
    pub args: Vec<String>,
    /// Working directory of the workers; `None` keeps the supervisor's.
    pub cwd: Option<PathBuf>,
    /// Extra environment for the workers, on top of the supervisor's own.
    pub env: BTreeMap<String, String>,
    /// A variable of `env` holding a number that slot `i` gets plus `i` (PM2's
    /// `increment_var`).
    pub increment_var: Option<String>,
    /// Number of slots.
    pub instances: u16,
    /// Slot `i` listens on `port + i` (`PORT` is set for it).
    pub port: u16,
    /// How the supervisor decides a worker is ready to take traffic.
    pub ready: ReadyCheck,
    /// How long a worker may take to become ready before it counts as failed.
    pub listen_timeout: Duration,
    /// Resident memory of the worker's process tree above which it is restarted.
    pub max_memory: Option<u64>,
    /// Hard ceiling while an over-limit worker is replaced: past it the worker is stopped at
    /// once; `None` means 1.5 × `max_memory`.
    pub memory_ceiling: Option<u64>,
    /// Crash restart policy (delay, growth, `min_uptime`, `max_restarts`).
    pub restart: RestartPolicy,
    /// The signal that asks a worker to stop (SIGTERM; PM2 sends SIGINT).
    pub kill_signal: nix::sys::signal::Signal,
    /// Grace between the kill signal and SIGKILL when stopping a worker.
    pub kill_timeout: Duration,
    /// How long a draining worker may keep its sessions (used by reloads).
    pub drain_timeout: Duration,
    /// When a draining worker's time is up, the proxy closes its remaining connections spread
    /// over this window (no reconnect stampede); zero closes them at once.
    pub close_window: Duration,
    /// Liveness checks of ready workers (a hung worker is replaced).
    pub health: HealthSpec,
}

/// Liveness checking of ready workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSpec {
    /// Time between checks; zero disables them.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Consecutive failed checks before the worker is replaced.
    pub failures: u32,
}

impl Default for HealthSpec {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            failures: 3,
        }
    }
}

impl AppSpec {
    /// The hard memory ceiling (only meaningful with `max_memory`).
    pub fn memory_ceiling(&self) -> u64 {
        self.memory_ceiling.unwrap_or_else(|| {
            let limit = self.max_memory.unwrap_or(u64::MAX);
            limit.saturating_add(limit / 2)
        })
    }

    /// The port slot `slot` listens on.
    pub fn slot_port(&self, slot: u16) -> u16 {
        self.port + slot
    }
}

/// The readiness probe of a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyCheck {
    /// Ready once `127.0.0.1:PORT` accepts a TCP connection.
    Tcp,
    /// Ready once `GET <path>` on `127.0.0.1:PORT` answers 2xx.
    Http {
        /// Request path, starting with `/`.
        path: String,
    },
    /// PM2's `wait_ready`: ready once the worker sends `ready` over the Node IPC channel
    /// rtsup opens for it (`process.send('ready')`, `NODE_CHANNEL_FD`), and its port accepts.
    Message,
}

/// Where worker stdout/stderr go and how they are rotated.
#[derive(Debug, Clone)]
pub struct LogSpec {
    /// Directory of `<app>-<slot>.out.log` / `<app>-<slot>.err.log`.
    pub dir: PathBuf,
    /// A file is rotated before it would grow past this many bytes.
    pub max_size: u64,
    /// Rotated files kept (`.1` newest … `.N` oldest).
    pub keep: u32,
}
