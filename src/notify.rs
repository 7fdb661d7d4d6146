//! systemd's notify protocol (`Type=notify`): READY=1 once every worker is ready,
//! RELOADING=1 … READY=1 around rolling reloads, STOPPING=1, and WATCHDOG=1 pings at half of
//! `WatchdogSec`. Silent when not started by systemd (no `NOTIFY_SOCKET`).
//!
//! READY=1 waits for the workers (not just the daemon) so `systemctl start` returns when the
//! app can actually serve, as sozu does for its workers.

use std::time::Duration;

use sd_notify::NotifyState;
use supervisor::{Fleet, WorkerState};
use tokio::sync::watch;
use tracing::{debug, info};

/// Sends notify messages to systemd, if it is listening.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// Enabled when `NOTIFY_SOCKET` is set.
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    fn send(&self, states: &[NotifyState]) {
        if self.enabled
            && let Err(e) = sd_notify::notify(states)
        {
            debug!(error = %e, "sd_notify failed");
        }
    }

    /// READY=1 with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// RELOADING=1 (with MONOTONIC_USEC, as `Type=notify-reload` requires).
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[
                NotifyState::Reloading,
                now,
                NotifyState::Status("reloading"),
            ]),
            Err(_) => self.send(&[NotifyState::Reloading, NotifyState::Status("reloading")]),
        }
    }

    /// STOPPING=1.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Ping the watchdog at half its period while the daemon runs (if systemd asked for it).
    pub fn spawn_watchdog(&self) -> Option<tokio::task::JoinHandle<()>> {
        let period = sd_notify::watchdog_enabled()?;
        let this = *self;
        info!(period = ?period, "systemd watchdog enabled");
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval((period / 2).max(Duration::from_millis(100)));
            loop {
                tick.tick().await;
                this.send(&[NotifyState::Watchdog]);
            }
        }))
    }

    /// Send READY=1 the first time every worker of every app is ready.
    pub async fn ready_when_all_ready(self, mut fleet: watch::Receiver<Fleet>) {
        loop {
            let (ready, total) = {
                let f = fleet.borrow_and_update();
                let workers = f.apps.iter().flat_map(|a| a.workers.iter());
                let total = workers.clone().count();
                (
                    workers.filter(|w| w.state == WorkerState::Ready).count(),
                    total,
                )
            };
            if total > 0 && ready == total {
                self.ready(&format!("{ready} workers ready"));
                return;
            }
            if fleet.changed().await.is_err() {
                return;
            }
        }
    }
}
