//! `rtsup reload` and SIGHUP: re-read the configuration (an invalid one keeps the running one
//! and reports its errors), then a rolling reload of every worker.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use std::sync::Arc;

use supervisor::{Report, SupervisorHandle};

use crate::control::proto::StatusReport;
use crate::control::server::ControlHooks;
use tracing::{info, warn};

use crate::config::Config;
use crate::notify::Notifier;

/// Reloads the daemon's configuration and workers.
pub struct DaemonReloader {
    /// The configuration file, or `None` for the embedded demo (reload replaces the workers
    /// with the running configuration's apps).
    pub file: Option<PathBuf>,
    /// The supervisor.
    pub supervisor: SupervisorHandle,
    /// systemd notifications.
    pub notifier: Notifier,
    /// The configuration in force, to tell which changes a reload cannot apply.
    pub running: Config,
    /// Status annotations (sessions per worker).
    pub obs: Arc<crate::observe::Observability>,
    /// The embedded adapter's hub socket, given to every worker.
    pub hub: PathBuf,
    /// The proxy, stopped before the workers on `stop`.
    pub proxy: Arc<std::sync::Mutex<Option<balancer::server::ProxyHandle>>>,
}

impl DaemonReloader {
    async fn run(&self) -> Result<Report, String> {
        self.notifier.reloading();
        let result = self.reload_inner().await;
        self.notifier.ready(match &result {
            Ok(r) if r.ok() => "reloaded",
            _ => "reload incomplete: failed slots kept their previous workers",
        });
        result
    }

    async fn reload_inner(&self) -> Result<Report, String> {
        let specs = match &self.file {
            None => crate::daemon::worker_specs(&self.running, &self.hub),
            Some(file) => {
                let fresh = Config::load(file).map_err(|e| {
                    warn!(errors = %e, "reload: invalid configuration; still running the previous one");
                    format!("invalid configuration, nothing changed:\n{e}")
                })?;
                for (section, same) in [
                    (
                        "[supervisor]",
                        format!("{:?}", fresh.supervisor)
                            == format!("{:?}", self.running.supervisor),
                    ),
                    (
                        "[balancer]",
                        format!("{:?}", fresh.balancer) == format!("{:?}", self.running.balancer),
                    ),
                    (
                        "[admin]",
                        format!("{:?}", fresh.admin) == format!("{:?}", self.running.admin),
                    ),
                ] {
                    if !same {
                        warn!(
                            section,
                            "reload applies [[app]] changes only; restart rtsup for this section"
                        );
                    }
                }
                crate::daemon::worker_specs(&fresh, &self.hub)
            }
        };
        info!("rolling reload requested");
        let report = self
            .supervisor
            .reload(specs)
            .await
            .map_err(|e| e.to_string())?;
        if report.ok() {
            info!(slots = report.slots.len(), "reload done");
        } else {
            warn!(?report, "reload done with failures");
        }
        Ok(report)
    }
}

impl ControlHooks for DaemonReloader {
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<Report, String>> + Send + '_>> {
        Box::pin(self.run())
    }

    fn annotate(&self, report: &mut StatusReport) {
        self.obs.annotate(report);
    }

    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {
            // The proxy first: it stops accepting and finishes what it accepted while the
            // workers still serve; then the workers.
            crate::daemon::stop_proxy(&self.proxy).await;
            self.supervisor.stop().await;
        })
    }
}
