//! Requests and responses of the control socket, shared by the daemon and the CLI.
//!
//! Each message is one line of JSON. Requests are `{"version":2,"request":"status"}`,
//! `{"version":2,"request":"restart","app":"chat","slot":0}`, `{"version":2,"request":"stop"}`;
//! responses carry the same `version` and a `response` tag. Requests that change workers are
//! answered with a per-slot [`Report`] once every slot has settled.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use supervisor::{Fleet, Report, WorkerState};

/// Version of this protocol; a peer speaking another one gets an error, not a guess.
pub const PROTOCOL_VERSION: u32 = 2;

/// Longest line either side accepts, so a bad peer cannot make the other allocate without end.
pub const MAX_MESSAGE: usize = 1 << 20;

/// A request with its protocol version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestEnvelope {
    /// Must equal [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The request itself.
    #[serde(flatten)]
    pub request: Request,
}

/// What a client asks the daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// The status of every worker.
    Status,
    /// Restart every slot of `app`, or only `slot`: one at a time without downtime, or all at
    /// once with `force`.
    Restart {
        /// App name.
        app: String,
        /// One slot, or all when absent.
        #[serde(default)]
        slot: Option<u16>,
        /// All at once, not rolling.
        #[serde(default)]
        force: bool,
    },
    /// Rolling reload: re-read the configuration, replace every worker without downtime;
    /// answered when done.
    Reload,
    /// Read the balancer's certificate files again and serve them to new TLS handshakes;
    /// nothing else changes (no worker is replaced).
    ReloadCertificates,
    /// Start one app (stopped or errored) while the daemon runs.
    StartApp {
        /// App name.
        app: String,
    },
    /// Stop one app's workers; the daemon and the other apps keep running.
    StopApp {
        /// App name.
        app: String,
    },
    /// Run `instances` slots of `app` (surplus slots drain before they stop).
    Scale {
        /// App name.
        app: String,
        /// Slots wanted.
        instances: u16,
    },
    /// Stop every worker and exit the daemon; answered once the workers are gone.
    Stop,
    /// Where the daemon writes worker logs (`rtsup logs` from anywhere).
    LogDir,
}

/// A response with its protocol version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResponseEnvelope {
    /// The daemon's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The response itself.
    #[serde(flatten)]
    pub response: Response,
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(StatusReport),
    /// Answer to reload, restart, start/stop of an app, scale: what happened to each slot.
    Report(Report),
    /// Answer to [`Request::Stop`], sent once every worker has exited.
    Stopped,
    /// Answer to [`Request::ReloadCertificates`]: one line per certificate now served.
    Certificates {
        /// File, names, serial, end of validity.
        served: Vec<String>,
    },
    /// Answer to [`Request::LogDir`]: the daemon's `log_dir`, absolute.
    LogDir {
        /// The directory.
        path: std::path::PathBuf,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// The status of every app, as printed by `rtsup status --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    /// Apps in configuration order.
    pub apps: Vec<AppStatus>,
    /// A rolling reload is in progress.
    #[serde(default)]
    pub reloading: bool,
    /// Balancer totals, when a balancer runs.
    #[serde(default)]
    pub balancer: Option<BalancerSummary>,
    /// The cluster of rtsup hosts this one belongs to, when it does.
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterSummary>,
}

/// What the balancer adds to the status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BalancerSummary {
    /// Engine.io sessions in the sid table.
    pub sessions: u64,
    /// Open WebSocket connections.
    pub websockets: u64,
    /// "Session ID unknown" answers the balancer gave itself (unknown sid or dead worker).
    pub sid_unknown: u64,
}

/// One app's workers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppStatus {
    /// App name.
    pub name: String,
    /// One entry per slot, plus the outgoing (draining) worker of a slot being replaced.
    pub workers: Vec<WorkerStatus>,
}

/// One slot's worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerStatus {
    /// Slot index.
    pub slot: u16,
    /// Worker generation in this slot (1 for the first worker).
    pub generation: u64,
    /// Process id, when a worker is alive.
    pub pid: Option<u32>,
    /// Port the worker listens on.
    pub port: u16,
    /// Lifecycle state.
    pub state: WorkerState,
    /// Restarts so far.
    pub restarts: u32,
    /// Seconds since the live worker was spawned (0 when none).
    pub uptime_s: u64,
    /// Resident memory of the worker's process tree.
    pub memory_bytes: u64,
    /// CPU use of the worker's process tree (100 = one core).
    pub cpu_percent: f32,
    /// How the previous worker ended, or why it was replaced.
    pub last_exit: Option<String>,
    /// Live engine.io sessions pinned to this worker (with a balancer).
    #[serde(default)]
    pub sessions: Option<u64>,
    /// Open WebSocket connections to this worker through the balancer.
    #[serde(default)]
    pub websockets: Option<u64>,
    /// Requests the balancer has proxied to this worker (WebSockets count once, when they
    /// close).
    #[serde(default)]
    pub requests: Option<u64>,
}

impl StatusReport {
    /// The report for `fleet` as of `now`.
    pub fn from_fleet(fleet: &Fleet, now: SystemTime) -> Self {
        Self {
            apps: fleet
                .apps
                .iter()
                .map(|app| AppStatus {
                    name: app.name.clone(),
                    workers: app
                        .workers
                        .iter()
                        .map(|w| WorkerStatus {
                            slot: w.slot,
                            generation: w.generation,
                            pid: w.pid,
                            port: w.port,
                            state: w.state,
                            restarts: w.restarts,
                            uptime_s: w
                                .started_at
                                .and_then(|t| now.duration_since(t).ok())
                                .map_or(0, |d| d.as_secs()),
                            memory_bytes: w.memory_bytes,
                            cpu_percent: w.cpu_percent,
                            last_exit: w.last_exit.clone(),
                            sessions: None,
                            websockets: None,
                            requests: None,
                        })
                        .collect(),
                })
                .collect(),
            reloading: fleet.reloading,
            balancer: None,
            cluster: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let r = RequestEnvelope {
            version: 2,
            request: Request::Restart {
                app: "chat".into(),
                slot: Some(2),
                force: false,
            },
        };
        let text = serde_json::to_string(&r).expect("json");
        assert_eq!(
            text,
            r#"{"version":2,"request":"restart","app":"chat","slot":2,"force":false}"#
        );
        let back: RequestEnvelope =
            serde_json::from_str(r#"{"version":2,"request":"status"}"#).expect("parse");
        assert_eq!(back.request, Request::Status);
    }
}
