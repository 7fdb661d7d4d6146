//! Unix signals of the daemon: SIGTERM/SIGINT stop everything gracefully; SIGHUP is a rolling
//! reload (`systemctl reload rtsup` sends it).

use std::sync::Arc;

use crate::control::server::ControlHooks;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::notify::Notifier;

/// Wait for signals and act on them until a stop has been carried out.
pub async fn handle(reloader: Arc<dyn ControlHooks>, notifier: Notifier) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                info!("SIGHUP: rolling reload");
                let reloader = reloader.clone();
                // In its own task: a second SIGHUP or a SIGTERM must not wait for it.
                tokio::spawn(async move {
                    if let Err(e) = reloader.reload().await {
                        warn!(error = %e, "reload failed");
                    }
                });
            }
        }
    }
    notifier.stopping();
    reloader.stop().await;
    Ok(())
}
