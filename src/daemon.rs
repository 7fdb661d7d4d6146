//! `rtsup start`: wire configuration → supervisor → control socket and signals, run until
//! stopped.

use std::time::Duration;

use anyhow::Context;
use supervisor::Supervisor;
use supervisor::control::server;
use tracing::{info, warn};

use crate::config::Config;
use crate::signals;

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
    if config.balancer.is_some() {
        warn!("[balancer] is configured but the balancer is not part of this build yet");
    }
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
    // Let the `stop` caller read its answer before the runtime goes away.
    let _ = stopped_tx.send(());
    let _ = control.await;
    if let Err(e) = std::fs::remove_file(&socket) {
        warn!(error = %e, socket = %socket.display(), "cannot remove control socket");
    }
    info!("rtsup stopped");
    Ok(())
}
