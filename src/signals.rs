//! Unix signals of the daemon: SIGTERM/SIGINT stop everything gracefully.
//!
//! SIGHUP is caught so that it never kills the daemon by default; the rolling reload it will
//! trigger is not built yet, so for now it is logged and ignored.

use supervisor::SupervisorHandle;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// Wait for signals and act on them until a stop has been carried out.
pub async fn handle(supervisor: SupervisorHandle) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
            _ = hup.recv() => warn!("SIGHUP: rolling reload is not available in this version; ignored"),
        }
    }
    supervisor.stop().await;
    Ok(())
}
