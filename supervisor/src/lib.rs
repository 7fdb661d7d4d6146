//! Process supervision for rtsup, PM2 semantics done right.
//!
//! This crate knows processes, ports, readiness and restart policies. It knows nothing about
//! HTTP or engine.io: the balancer consumes the [`Fleet`] snapshots it publishes through a mapper
//! that lives in the `rtsup` binary.
//!
//! One actor task ([`actor`]) owns every slot; everything else talks to it with messages through
//! a cheap clonable [`SupervisorHandle`]. The transitions of a slot (backoff, `min_uptime`,
//! `errored`) are a pure state machine in [`slot`], unit-tested with chosen instants.

pub mod actor;
pub mod backoff;
pub mod control;
pub mod fleet;
pub mod memory;
pub mod output;
pub mod process;
pub mod readiness;
pub mod slot;
pub mod spec;

pub use actor::{DrainGate, NoGate, ReloadReport, Supervisor, SupervisorError, SupervisorHandle};
pub use fleet::{Fleet, WorkerSnapshot, WorkerState};
pub use spec::{AppSpec, HealthSpec, LogSpec, ReadyCheck, SupervisorSpec};
