//! What one host publishes about itself (a [`HostRecord`]), and the other hosts' workers as
//! the balancer's remote backends. Pure: tested bare.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use balancer::{Backend, BackendState};
use serde::{Deserialize, Serialize};
use supervisor::{Fleet, WorkerState};

use crate::wiring::backend_id;

/// One host: its address and its workers, as it published them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Its `advertise` address (its name in the cluster).
    pub host: SocketAddr,
    /// Random per rtsup process: tells two processes that advertise the same address apart.
    #[serde(default)]
    pub instance: String,
    /// Its workers of the apps its balancer serves.
    pub workers: Vec<WorkerRecord>,
}

/// One worker of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Its app.
    pub app: String,
    /// Its slot.
    pub slot: u16,
    /// Its generation (its sessions die with it).
    pub generation: u64,
    /// `ready`, `draining`, `starting` or `gone`.
    pub state: String,
}

/// The other hosts, by address.
pub type View = BTreeMap<SocketAddr, HostRecord>;

/// This host's record: every worker of `apps` in `fleet`.
pub fn local_record(
    host: SocketAddr,
    instance: &str,
    fleet: &Fleet,
    apps: &[String],
) -> HostRecord {
    HostRecord {
        host,
        instance: instance.to_string(),
        workers: fleet
            .apps
            .iter()
            .filter(|a| apps.contains(&a.name))
            .flat_map(|a| {
                a.workers
                    .iter()
                    .filter(|w| w.generation > 0)
                    .map(|w| WorkerRecord {
                        app: a.name.clone(),
                        slot: w.slot,
                        generation: w.generation,
                        state: match w.state {
                            WorkerState::Ready => "ready",
                            WorkerState::Draining | WorkerState::Stopping => "draining",
                            WorkerState::Starting => "starting",
                            WorkerState::Waiting | WorkerState::Stopped | WorkerState::Errored => {
                                "gone"
                            }
                        }
                        .to_string(),
                    })
            })
            .collect(),
    }
}

/// The workers of `app` on the hosts of `view`, as remote backends reached through their
/// host's rtsup.
pub fn remote_backends(view: &View, app: &str) -> Vec<Backend> {
    view.values()
        .flat_map(|h| {
            h.workers.iter().filter(|w| w.app == app).map(|w| Backend {
                id: Arc::from(format!(
                    "{}/{}",
                    h.host,
                    backend_id(&w.app, w.slot, w.generation)
                )),
                key: Arc::from(format!("{}/{}:{}", h.host, w.app, w.slot)),
                addr: h.host,
                state: match w.state.as_str() {
                    "ready" => BackendState::Ready,
                    "draining" => BackendState::Draining,
                    "starting" => BackendState::Starting,
                    _ => BackendState::Gone,
                },
                remote: true,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wiring::tests::worker as w;
    use supervisor::fleet::AppSnapshot;

    fn fleet() -> Fleet {
        Fleet {
            reloading: false,
            apps: vec![
                AppSnapshot {
                    name: "chat".into(),
                    workers: vec![
                        w(0, 2, WorkerState::Ready),
                        w(1, 1, WorkerState::Draining),
                        w(2, 0, WorkerState::Stopped),
                    ],
                },
                AppSnapshot {
                    name: "jobs".into(),
                    workers: vec![w(0, 1, WorkerState::Ready)],
                },
            ],
        }
    }

    #[test]
    fn a_hosts_record_becomes_remote_backends_with_global_names() {
        let host: SocketAddr = "10.0.0.12:8080".parse().expect("addr");
        let record = local_record(host, "i1", &fleet(), &["chat".to_string()]);
        assert_eq!(record.workers.len(), 2, "{record:?}");
        // Through JSON, as it travels.
        let json = serde_json::to_string(&record).expect("json");
        let back: HostRecord = serde_json::from_str(&json).expect("parse");
        let view: View = [(host, back)].into();
        let backends = remote_backends(&view, "chat");
        assert_eq!(&*backends[0].id, "10.0.0.12:8080/chat:0#2");
        assert_eq!(&*backends[0].key, "10.0.0.12:8080/chat:0");
        assert_eq!(backends[0].addr, host);
        assert_eq!(backends[0].state, BackendState::Ready);
        assert_eq!(backends[1].state, BackendState::Draining);
        assert!(backends.iter().all(|b| b.remote));
        assert!(remote_backends(&view, "jobs").is_empty());
    }
}
