//! What operators see: the status report (supervisor facts plus the balancer's sessions) and
//! the Prometheus metrics, shared by the control socket and the admin server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::control::proto::{BalancerSummary, StatusReport};
use balancer::loads::Loads;
use balancer::metrics::BalancerMetrics;
use balancer::sid_table::SidTable;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use supervisor::SupervisorHandle;

use crate::wiring::backend_id;

/// The balancer's live state, as observability reads it.
pub struct BalancerView {
    /// The apps it serves.
    pub apps: Vec<String>,
    /// Sessions per backend id.
    pub sessions: Arc<Loads>,
    /// The sid table.
    pub sids: Arc<SidTable>,
    /// Request and routing counters.
    pub metrics: BalancerMetrics,
}

/// Status and metrics of the whole daemon.
pub struct Observability {
    /// The supervisor.
    pub supervisor: SupervisorHandle,
    /// Set once the balancer runs (none without `[balancer]`).
    pub balancer: std::sync::OnceLock<BalancerView>,
    /// This host's cluster (with the apps it publishes), when it is in one.
    pub cluster: std::sync::OnceLock<(Arc<crate::cluster::Cluster>, Vec<String>)>,
    /// `metrics_path` per app (app → path); a reload sets it again.
    pub worker_metrics: std::sync::RwLock<std::collections::BTreeMap<String, String>>,
}

type Labels = Vec<(String, String)>;

impl Observability {
    /// The full status report.
    pub fn status(&self) -> StatusReport {
        let mut report = StatusReport::from_fleet(&self.supervisor.fleet(), SystemTime::now());
        self.annotate(&mut report);
        report
    }

    /// Add sessions and WebSockets per worker and the balancer totals.
    pub fn annotate(&self, report: &mut StatusReport) {
        let Some(b) = self.balancer.get() else { return };
        let mut websockets = 0;
        for app in report.apps.iter_mut().filter(|a| b.apps.contains(&a.name)) {
            for w in &mut app.workers {
                let id = backend_id(&app.name, w.slot, w.generation);
                let ws = b.metrics.websockets.get(&id).max(0) as u64;
                w.sessions = Some(b.sessions.get(&id).max(0) as u64);
                w.websockets = Some(ws);
                w.requests = Some(b.metrics.worker_requests.get(&id).max(0) as u64);
                websockets += ws;
            }
        }
        if let Some((cluster, apps)) = self.cluster.get() {
            report.cluster = Some(cluster.summary(&self.supervisor.fleet(), apps));
        }
        report.balancer = Some(BalancerSummary {
            sessions: b.sids.len() as u64,
            websockets,
            sid_unknown: b.metrics.sid_unknown_total.load(Ordering::Relaxed),
        });
    }

    /// Every metric: rtsup's own, then the workers' own (apps with `metrics_path`, each
    /// ready worker scraped now), in one OpenMetrics exposition.
    pub async fn metrics_with_workers(&self) -> String {
        let targets = self.worker_metrics_targets();
        let own = self.metrics();
        if targets.is_empty() {
            return own;
        }
        let (workers, failed, dropped) = crate::worker_metrics::scrape(targets).await;
        let body = own.strip_suffix("# EOF\n").unwrap_or(&own);
        format!(
            "{body}# HELP rtsup_worker_metrics_failed Workers whose metrics_path gave nothing usable this scrape (no answer in time, an error, or no valid sample).\n\
             # TYPE rtsup_worker_metrics_failed gauge\nrtsup_worker_metrics_failed {failed}\n\
             # HELP rtsup_worker_metrics_dropped Worker samples left out of this scrape (malformed, named rtsup_*, or clashing with another worker's type or names).\n\
             # TYPE rtsup_worker_metrics_dropped gauge\nrtsup_worker_metrics_dropped {dropped}\n{workers}# EOF\n"
        )
    }

    /// Ready workers of apps with a `metrics_path`.
    fn worker_metrics_targets(&self) -> Vec<crate::worker_metrics::Target> {
        let paths = match self.worker_metrics.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if paths.is_empty() {
            return Vec::new();
        }
        let fleet = self.supervisor.fleet();
        fleet
            .apps
            .iter()
            .filter_map(|a| paths.get(&a.name).map(|p| (a, p)))
            .flat_map(|(a, path)| {
                a.workers
                    .iter()
                    .filter(|w| w.state == supervisor::WorkerState::Ready)
                    .map(|w| crate::worker_metrics::Target {
                        app: a.name.clone(),
                        slot: w.slot,
                        port: w.port,
                        path: path.clone(),
                    })
            })
            .collect()
    }

    /// Prometheus text exposition of every metric.
    pub fn metrics(&self) -> String {
        let report = self.status();
        let mut registry = Registry::with_prefix("rtsup");
        let up = Family::<Labels, Gauge>::default();
        let state = Family::<Labels, Gauge>::default();
        let restarts = Family::<Labels, Gauge>::default();
        let memory = Family::<Labels, Gauge>::default();
        let cpu = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let sessions = Family::<Labels, Gauge>::default();
        let websockets = Family::<Labels, Gauge>::default();
        let requests = Family::<Labels, Counter>::default();
        for app in &report.apps {
            for w in &app.workers {
                let labels = vec![
                    ("app".to_string(), app.name.clone()),
                    ("slot".to_string(), w.slot.to_string()),
                    ("generation".to_string(), w.generation.to_string()),
                ];
                up.get_or_create(&labels)
                    .set(i64::from(w.state == supervisor::WorkerState::Ready));
                let mut with_state = labels.clone();
                with_state.push(("state".into(), w.state.as_str().into()));
                state.get_or_create(&with_state).set(1);
                let slot_labels = labels[..2].to_vec();
                restarts
                    .get_or_create(&slot_labels)
                    .set(i64::from(w.restarts));
                memory.get_or_create(&labels).set(w.memory_bytes as i64);
                cpu.get_or_create(&labels).set(f64::from(w.cpu_percent));
                if let Some(n) = w.sessions {
                    sessions.get_or_create(&labels).set(n as i64);
                }
                if let Some(n) = w.websockets {
                    websockets.get_or_create(&labels).set(n as i64);
                }
                if let Some(n) = w.requests {
                    requests.get_or_create(&labels).inc_by(n);
                }
            }
        }
        registry.register("worker_up", "1 when the worker is ready", up);
        registry.register("worker_state", "The worker's state (label state)", state);
        registry.register("worker_restarts", "Restarts of the slot", restarts);
        registry.register(
            "worker_memory_bytes",
            "RSS of the worker's process tree",
            memory,
        );
        registry.register(
            "worker_cpu_percent",
            "CPU of the worker's process tree (100 = one core)",
            cpu,
        );
        registry.register(
            "worker_sessions",
            "Live engine.io sessions pinned to the worker",
            sessions,
        );
        registry.register(
            "worker_websockets",
            "Open WebSockets to the worker",
            websockets,
        );
        registry.register(
            "worker_requests",
            "Requests the balancer proxied to the worker",
            requests,
        );
        let reloading = Gauge::<i64>::default();
        reloading.set(i64::from(report.reloading));
        registry.register("reloading", "1 while a rolling reload runs", reloading);
        if let Some(b) = self.balancer.get() {
            let sid_table = Gauge::<i64>::default();
            sid_table.set(b.sids.len() as i64);
            registry.register(
                "balancer_sid_table_entries",
                "Sessions in the sid table",
                sid_table,
            );
            let refused = Counter::<u64>::default();
            refused.inc_by(b.sids.refused.load(std::sync::atomic::Ordering::Relaxed));
            registry.register(
                "balancer_sid_table_refused",
                "New sessions not recorded because the sid table was full (they rely on the cookie)",
                refused,
            );
            b.metrics.register(&mut registry);
        }
        if let Some((cluster, _)) = self.cluster.get() {
            let up = Gauge::<i64>::default();
            up.set(i64::from(cluster.redis_up()));
            registry.register(
                "cluster_redis_up",
                "1 while the cluster's Redis answers (0: this host routes its own sessions only)",
                up,
            );
            let hosts = Gauge::<i64>::default();
            hosts.set(report.cluster.as_ref().map_or(0, |c| c.hosts.len() as i64));
            registry.register(
                "cluster_hosts",
                "Hosts of the cluster, this one included",
                hosts,
            );
            let lookups = Family::<Labels, Counter>::default();
            let l = &cluster.lookups;
            for (result, n) in [
                ("hit", &l.hit),
                ("miss", &l.miss),
                ("error", &l.error),
                ("skipped", &l.skipped),
            ] {
                lookups
                    .get_or_create(&vec![("result".to_string(), result.to_string())])
                    .inc_by(n.load(Ordering::Relaxed));
            }
            registry.register(
                "cluster_sid_lookups",
                "Sids this host had not seen, asked of Redis, by result",
                lookups,
            );
            let dropped = Counter::<u64>::default();
            dropped.inc_by(l.dropped.load(Ordering::Relaxed));
            registry.register(
                "cluster_sessions_unpublished",
                "Sessions learned here that could not be queued for Redis (queue full)",
                dropped,
            );
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }
}
