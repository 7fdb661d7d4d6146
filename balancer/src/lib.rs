//! The sticky engine.io balancer: a pingora proxy that pins every engine.io session to the
//! worker that issued it.
//!
//! This crate knows HTTP and engine.io, never processes: it consumes a [`BackendSet`] from a
//! `watch` channel (the `rtsup` binary maps the supervisor's fleet into it; static remote
//! backends would work the same). Pure parts ([`engineio`], [`affinity`], [`ring`],
//! [`client_ip`], [`policy`], [`sid_table`], [`websocket`]) do no I/O and are unit-tested
//! bare; [`service`] is the only module that touches pingora types, [`server`] runs pingora on
//! its own thread, and [`release`] closes a draining backend's WebSockets gradually.

use std::net::SocketAddr;
use std::sync::Arc;

#[cfg(feature = "proxy")]
pub mod access_log;
#[cfg(feature = "proxy")]
pub mod admission;
pub mod affinity;
pub mod client_ip;
pub mod cluster;
pub mod connections;
pub mod engineio;
pub mod loads;
#[cfg(feature = "proxy")]
pub mod metrics;
pub mod policy;
#[cfg(feature = "proxy")]
pub mod redirect;
#[cfg(feature = "proxy")]
pub mod release;
pub mod ring;
pub mod router;
pub mod routes;
#[cfg(feature = "proxy")]
pub mod server;
#[cfg(feature = "proxy")]
pub mod service;
pub mod session_rate;
pub mod sid_table;
#[cfg(feature = "proxy")]
mod spread;
#[cfg(feature = "proxy")]
pub mod tls;
#[cfg(feature = "proxy")]
mod tunnel;
pub mod websocket;

pub use policy::NewSessions;
#[cfg(feature = "proxy")]
pub use server::{BalancerSettings, ProxyHandle};

/// Every backend the balancer may route to, as published by its source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSet {
    /// The backends, in a stable order.
    pub backends: Vec<Backend>,
}

/// One upstream worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Unique per worker process (a replaced worker gets a new id): sessions belong to it.
    pub id: Arc<str>,
    /// Stable across replacements (e.g. the slot): what the affinity cookie names.
    pub key: Arc<str>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether it takes traffic.
    pub state: BackendState,
    /// Another host's worker (its `addr` is that host's rtsup): reached for its own sessions
    /// and cookies, never given new ones.
    pub remote: bool,
}

/// A backend's state as far as routing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// Not ready yet: no traffic.
    Starting,
    /// Takes new sessions and serves its own.
    Ready,
    /// Serves its own sessions, takes no new ones.
    Draining,
    /// Dead: its sessions are answered "Session ID unknown" at once.
    Gone,
}
