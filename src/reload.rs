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
    /// The certificates the balancer serves, when it terminates TLS: a reload reads their
    /// files again (a renewed certificate keeps its path).
    pub certificates: Option<Arc<balancer::tls::CertResolver>>,
    /// The certificate files in force (the last reload's list), for `reload --certs`.
    pub cert_files: std::sync::Mutex<Vec<balancer::tls::CertFiles>>,
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
                let fresh = Config::load_profile(file, self.running.profile.as_deref()).map_err(|e| {
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
                        // The certificates are read again by every reload.
                        format!("{:?}", without_tls(&fresh))
                            == format!("{:?}", without_tls(&self.running)),
                    ),
                    (
                        "[admin]",
                        format!("{:?}", fresh.admin) == format!("{:?}", self.running.admin),
                    ),
                ] {
                    if !same {
                        warn!(
                            section,
                            "reload applies [[app]] changes and certificates only; restart rtsup for the rest of this section"
                        );
                    }
                }
                self.reload_certificates(&fresh)?;
                if let Ok(mut paths) = self.obs.worker_metrics.write() {
                    paths.clone_from(&fresh.worker_metrics);
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

/// `[balancer]` without its certificate list (for telling what a reload cannot apply).
fn without_tls(config: &Config) -> Option<crate::config::BalancerConfig> {
    config.balancer.clone().map(|mut b| {
        if let Some(t) = b.tls.as_mut() {
            t.certs.clear();
        }
        b
    })
}

impl DaemonReloader {
    /// Serve the certificates `fresh` names, read again from their files, to every new TLS
    /// handshake; established connections keep theirs. `fresh` was checked as it loaded, so
    /// an error here means a file changed in between: nothing changes and the reload fails.
    fn reload_certificates(&self, fresh: &Config) -> Result<(), String> {
        let (Some(resolver), Some(tls)) = (
            &self.certificates,
            fresh.balancer.as_ref().and_then(|b| b.tls.as_ref()),
        ) else {
            return Ok(());
        };
        self.swap_certificates(resolver, &tls.certs)?;
        Ok(())
    }

    /// Load `files` (refusing any not valid today) and serve them; the lines say what is
    /// served. On error nothing changes.
    fn swap_certificates(
        &self,
        resolver: &balancer::tls::CertResolver,
        files: &[balancer::tls::CertFiles],
    ) -> Result<Vec<String>, String> {
        let certs = balancer::tls::Certificates::load(files, Some(std::time::SystemTime::now()))
            .map_err(|e| {
                warn!(error = %e, "reload: certificate refused; still serving the previous ones");
                format!("certificate refused, nothing changed: {e}")
            })?;
        crate::daemon::log_certificates("reloaded", &certs);
        let served = certs
            .summaries
            .iter()
            .map(|c| {
                let until = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(c.not_after).unwrap_or(0));
                format!(
                    "{}  {}  serial {}  valid until {}",
                    c.file.display(),
                    c.names.join(","),
                    c.serial,
                    humantime::format_rfc3339_seconds(until)
                )
            })
            .collect();
        resolver.replace(certs);
        if let Ok(mut f) = self.cert_files.lock() {
            *f = files.to_vec();
        }
        Ok(served)
    }

    /// `rtsup reload --certs`: the files in force read again, nothing else touched.
    async fn certificates_only(&self) -> Result<Vec<String>, String> {
        let Some(resolver) = &self.certificates else {
            return Err("this daemon serves no certificates (no tls_cert)".into());
        };
        let files = self
            .cert_files
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default();
        self.swap_certificates(resolver, &files)
    }
}

impl ControlHooks for DaemonReloader {
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<Report, String>> + Send + '_>> {
        Box::pin(self.run())
    }

    fn reload_certificates(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + '_>> {
        Box::pin(self.certificates_only())
    }

    fn annotate(&self, report: &mut StatusReport) {
        self.obs.annotate(report);
    }

    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {
            // The other hosts first (they answer this host's sessions "unknown" at once, so
            // clients reconnect there); then the proxy: it stops accepting and finishes what it
            // accepted while the workers still serve; then the workers.
            if let Some((cluster, _)) = self.obs.cluster.get() {
                cluster.leave().await;
            }
            crate::daemon::stop_proxy(&self.proxy).await;
            self.supervisor.stop().await;
        })
    }
}
