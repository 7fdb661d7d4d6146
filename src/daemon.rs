//! `rtsup start`: wire configuration → supervisor → control socket and signals, run until
//! stopped.

use std::time::Duration;

use anyhow::Context;
use supervisor::Supervisor;
use supervisor::control::server;
use tracing::{info, warn};

use crate::config::Config;
use crate::{signals, wiring};

/// Longest wait for control connections still answering when the daemon exits (a `stop`
/// client is waiting for its answer).
const CONTROL_DRAIN: Duration = Duration::from_secs(2);

/// Run the daemon in the foreground until SIGTERM/SIGINT or `rtsup stop`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let logs = &config.supervisor.logs.dir;
    std::fs::create_dir_all(logs)
        .with_context(|| format!("creating log_dir {}", logs.display()))?;
    let socket = config.supervisor.control_socket.clone();
    let listener = server::bind(&socket)
        .await
        .with_context(|| format!("binding control socket {}", socket.display()))?;
    let (handle, supervisor) =
        Supervisor::spawn(config.supervisor_spec()).context("starting the supervisor")?;
    info!(
        config = %config.file.display(),
        socket = %socket.display(),
        apps = config.apps.len(),
        "rtsup started"
    );
    let proxy = match &config.balancer {
        Some(b) => {
            let (tx, rx) = tokio::sync::watch::channel(balancer::BackendSet::default());
            tokio::spawn(wiring::follow(handle.subscribe(), b.app.clone(), tx));
            let settings = balancer::BalancerSettings {
                listen: b.listen,
                threads: b.threads,
                routing: balancer::service::RoutingConfig {
                    engineio_path: b.engineio_path.clone(),
                    new_sessions: b.new_sessions,
                    cookie: b.cookie.clone(),
                    trusted_proxies: b.trusted_proxies.clone(),
                    unsticky: b.unsticky,
                },
                max_sessions: balancer::sid_table::DEFAULT_MAX_SESSIONS,
            };
            match balancer::server::spawn(settings, rx) {
                Ok(p) => Some(p),
                Err(e) => {
                    handle.stop().await;
                    return Err(e).context("starting the balancer");
                }
            }
        }
        None => None,
    };
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let control = tokio::spawn(server::serve(
        listener,
        handle.clone(),
        async {
            let _ = stopped_rx.await;
        },
        CONTROL_DRAIN,
    ));
    let signals = tokio::spawn(signals::handle(handle.clone()));
    drop(handle);
    supervisor.await.context("supervisor task failed")?;
    signals.abort();
    if let Some(proxy) = proxy {
        let _ = tokio::task::spawn_blocking(move || proxy.stop()).await;
    }
    // Let the `stop` caller read its answer before the runtime goes away.
    let _ = stopped_tx.send(());
    let _ = control.await;
    if let Err(e) = std::fs::remove_file(&socket) {
        warn!(error = %e, socket = %socket.display(), "cannot remove control socket");
    }
    info!("rtsup stopped");
    Ok(())
}
