//! The seam between the supervisor and the balancer: the supervisor's `Fleet` (slots,
//! generations, states) mapped into the balancer's `BackendSet` (ids, keys, addresses).
//!
//! A worker's id names its generation (`chat:1#3`), so its sessions die with it; its key names
//! its slot (`chat:1`), so the affinity cookie survives a restart.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use balancer::{Backend, BackendSet, BackendState};
use supervisor::{Fleet, WorkerState};
use tokio::sync::watch;

/// The backends of `app` in `fleet`.
pub fn backend_set(fleet: &Fleet, app: &str) -> BackendSet {
    let Some(a) = fleet.apps.iter().find(|a| a.name == app) else {
        return BackendSet::default();
    };
    BackendSet {
        backends: a
            .workers
            .iter()
            .filter(|w| w.generation > 0)
            .map(|w| Backend {
                id: Arc::from(backend_id(app, w.slot, w.generation)),
                key: Arc::from(format!("{app}:{}", w.slot)),
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, w.port)),
                state: match w.state {
                    WorkerState::Starting => BackendState::Starting,
                    WorkerState::Ready => BackendState::Ready,
                    // A stopping worker closes its sessions gracefully (engine.io close
                    // packets): its sessions still reach it, new ones do not.
                    WorkerState::Draining | WorkerState::Stopping => BackendState::Draining,
                    WorkerState::Waiting | WorkerState::Stopped | WorkerState::Errored => {
                        BackendState::Gone
                    }
                },
                remote: false,
            })
            .collect(),
    }
}

/// Publish `app`'s backend set on every fleet change (only when it actually changed: memory
/// samples alone do not rebuild the balancer's routes), with the other hosts' workers of
/// `app` when this host is in a cluster (`remote`). Ends when the fleet sender is gone.
pub async fn follow(
    mut fleet: watch::Receiver<Fleet>,
    mut remote: Option<watch::Receiver<crate::cluster::View>>,
    app: String,
    out: watch::Sender<BackendSet>,
) {
    loop {
        let mut set = backend_set(&fleet.borrow_and_update(), &app);
        if let Some(view) = remote.as_mut() {
            set.backends.extend(crate::cluster::view::remote_backends(
                &view.borrow_and_update(),
                &app,
            ));
        }
        out.send_if_modified(|old| {
            let changed = *old != set;
            *old = set;
            changed
        });
        let view_changed = async {
            match remote.as_mut() {
                Some(v) => v.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            f = fleet.changed() => if f.is_err() { return },
            alive = view_changed => if !alive { remote = None },
        }
    }
}

/// The supervisor's `DrainGate`, answered from the balancer's live session counts; releasing
/// a worker closes its remaining WebSockets through the proxy, spread over the window.
pub struct BalancerGate {
    /// The apps the balancer serves (other apps have no sessions to wait for).
    pub apps: Vec<String>,
    /// Session counts per backend id, set once the balancer runs.
    pub loads: std::sync::OnceLock<Arc<balancer::loads::Loads>>,
    /// Open WebSockets per backend id, set once the balancer runs.
    pub upgrades: std::sync::OnceLock<Arc<balancer::release::Upgrades>>,
}

impl supervisor::DrainGate for BalancerGate {
    fn sessions(&self, app: &str, slot: u16, generation: u64) -> Option<u64> {
        if !self.apps.iter().any(|a| a == app) {
            return None;
        }
        let loads = self.loads.get()?;
        let id = backend_id(app, slot, generation);
        let sessions = loads.get(&id).max(0) as u64;
        // WebSockets that are not engine.io sessions (a plain `ws` server) count too, so a
        // drain waits for them and then releases them.
        let websockets = self.upgrades.get().map_or(0, |u| u.open(&id) as u64);
        Some(sessions.max(websockets))
    }

    fn release(&self, app: &str, slot: u16, generation: u64, window: std::time::Duration) {
        if !self.apps.iter().any(|a| a == app) {
            return;
        }
        if let Some(upgrades) = self.upgrades.get() {
            let n = upgrades.release(&backend_id(app, slot, generation), window);
            tracing::info!(
                app,
                slot,
                generation,
                websockets = n,
                ?window,
                "releasing the remaining WebSockets"
            );
        }
    }
}

/// The balancer id of a worker: `app:slot#generation`.
pub fn backend_id(app: &str, slot: u16, generation: u64) -> String {
    format!("{app}:{slot}#{generation}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use supervisor::WorkerSnapshot;
    use supervisor::fleet::AppSnapshot;

    /// A live worker of `slot` (the cluster's tests use it too).
    pub(crate) fn worker(slot: u16, generation: u64, state: WorkerState) -> WorkerSnapshot {
        WorkerSnapshot {
            slot,
            generation,
            pid: Some(100),
            port: 5000 + slot,
            state,
            restarts: 0,
            started_at: None,
            memory_bytes: 0,
            cpu_percent: 0.0,
            last_exit: None,
            over_memory: false,
        }
    }

    #[test]
    fn maps_states_ids_and_keys() {
        let fleet = Fleet {
            reloading: false,
            apps: vec![AppSnapshot {
                name: "chat".into(),
                workers: vec![
                    worker(0, 1, WorkerState::Ready),
                    worker(1, 3, WorkerState::Waiting),
                    worker(2, 0, WorkerState::Stopped),
                ],
            }],
        };
        let set = backend_set(&fleet, "chat");
        assert_eq!(set.backends.len(), 2);
        assert_eq!(&*set.backends[0].id, "chat:0#1");
        assert_eq!(&*set.backends[0].key, "chat:0");
        assert_eq!(set.backends[0].state, BackendState::Ready);
        assert_eq!(set.backends[1].state, BackendState::Gone);
        assert_eq!(set.backends[1].addr.port(), 5001);
        assert!(backend_set(&fleet, "other").backends.is_empty());
    }
}
