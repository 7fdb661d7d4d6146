//! Process supervision for rtsup, PM2 semantics done right.
//!
//! This crate knows processes, ports, readiness and restart policies. It knows nothing about
//! HTTP or engine.io: the balancer consumes the [`Fleet`] snapshots it publishes through a mapper
//! that lives in the `rtsup` binary, and answers the [`DrainGate`] it is given.
//!
//! One actor task ([`actor`]) owns every slot; everything else talks to it through a cheap
//! clonable [`SupervisorHandle`], and every request is answered with a per-slot [`Report`].
//! The slot state machine ([`slot`]) and the rollout reconciler ([`reconcile`]) are pure and
//! tested bare; the actor runs in tests with a fake [`effects::Effects`] and a paused clock.

mod actor;
pub mod backoff;
mod effects;
pub mod fleet;
mod handle;
mod memory;
mod output;
mod ports;
mod process;
mod readiness;
mod reconcile;
mod slot;
pub mod sockets;
pub mod spec;
#[cfg(test)]
mod testing;

pub use actor::Supervisor;
pub use fleet::{AppSnapshot, Fleet, WorkerSnapshot, WorkerState};
pub use handle::{DrainGate, Report, SlotReport, SupervisorError, SupervisorHandle};
pub use output::RotatingFile;
pub use reconcile::Outcome;
pub use spec::{AppSpec, HealthSpec, LogSpec, ReadyCheck, SupervisorSpec};
