//! The fleet snapshot: what every worker is doing, published by the actor on a `watch` channel.
//!
//! Readers (the control socket, the balancer wiring, the memory sampler) get an immutable copy
//! and never block the actor. The vocabulary is the supervisor's own (slots, workers,
//! generations); the balancer gets its `BackendSet` from a mapper in the binary.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// All apps and their workers at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fleet {
    /// Apps in configuration order.
    pub apps: Vec<AppSnapshot>,
    /// A rolling reload is in progress.
    pub reloading: bool,
}

/// One app's slots.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSnapshot {
    /// App name.
    pub name: String,
    /// One entry per slot, in slot order; a slot being replaced also lists its outgoing worker
    /// right after its new one.
    pub workers: Vec<WorkerSnapshot>,
}

/// The worker currently holding one slot.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSnapshot {
    /// Slot index within the app.
    pub slot: u16,
    /// Incremented on every spawn in this slot; tells successive workers apart.
    pub generation: u64,
    /// Process id (and process group id) of the live worker.
    pub pid: Option<u32>,
    /// Port the slot's worker listens on.
    pub port: u16,
    /// Lifecycle state.
    pub state: WorkerState,
    /// Restarts of this slot so far.
    pub restarts: u32,
    /// When the live worker was spawned.
    pub started_at: Option<SystemTime>,
    /// Resident memory of the worker's process tree at the last sample.
    pub memory_bytes: u64,
    /// CPU use of the worker's process tree at the last sample (100 = one core).
    pub cpu_percent: f32,
    /// How the previous worker ended, or why it was replaced.
    pub last_exit: Option<String>,
    /// Over its app's `max_memory`: takes no new sessions while it is replaced (memory is
    /// then sampled more often, to stop it at the ceiling in time).
    pub over_memory: bool,
}

/// A worker's lifecycle state as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Spawned, readiness probe not passed yet.
    Starting,
    /// Passed its readiness probe; takes traffic.
    Ready,
    /// Still serving its sessions but takes no new ones (reloads).
    Draining,
    /// Signalled to stop, not exited yet.
    Stopping,
    /// Crashed; waiting for its restart delay.
    Waiting,
    /// Not running and not wanted.
    Stopped,
    /// Gave up after `max_restarts` consecutive crashes.
    Errored,
}

impl WorkerState {
    /// The lowercase name used in `rtsup status` and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Stopping => "stopping",
            Self::Waiting => "waiting",
            Self::Stopped => "stopped",
            Self::Errored => "errored",
        }
    }
}
