//! Test helpers shared by the unit tests of the pure modules and the actor.

use std::sync::Arc;
use std::time::Duration;

use crate::backoff::RestartPolicy;
use crate::spec::{AppSpec, HealthSpec, ReadyCheck};

/// An app spec with short, round timings: listen 1 s, kill 1 s, drain 2 s, close window 1 s,
/// restart delay 100 ms ×1.5, min uptime 1 s, 3 restarts, no liveness checks.
pub(crate) fn spec(name: &str, instances: u16, port: u16) -> AppSpec {
    AppSpec {
        name: name.into(),
        command: "worker".into(),
        args: vec![],
        cwd: None,
        env: Default::default(),
        instances,
        port,
        ready: ReadyCheck::Tcp,
        listen_timeout: Duration::from_secs(1),
        max_memory: None,
        memory_ceiling: None,
        restart: RestartPolicy {
            restart_delay: Duration::from_millis(100),
            min_uptime: Duration::from_secs(1),
            max_restarts: 3,
        },
        kill_signal: nix::sys::signal::Signal::SIGTERM,
        increment_var: None,
        kill_timeout: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(2),
        close_window: Duration::from_secs(1),
        health: HealthSpec {
            interval: Duration::ZERO,
            ..HealthSpec::default()
        },
    }
}

/// [`spec`] behind an `Arc`.
pub(crate) fn arc(name: &str, instances: u16, port: u16) -> Arc<AppSpec> {
    Arc::new(spec(name, instances, port))
}
