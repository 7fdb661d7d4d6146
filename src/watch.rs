//! `watch` (PM2's): a rolling, drained restart of an app once the files it watches have
//! changed and then stayed quiet for `watch_delay`.
//!
//! inotify events (the notify crate, debounced by notify-debouncer-full) are filtered by the
//! app's ignore patterns and become a one-slot signal: changes that arrive while a restart is
//! under way cause exactly one more restart after it, never a queue of them.

use std::path::PathBuf;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use supervisor::{SupervisorHandle, WorkerState};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::watch::WatchConfig;

/// Watch `w` and restart its app after each settled change, until the supervisor is gone.
/// The watcher lives as long as this task. Changes under `log_dir` (rtsup's own writes, when
/// it lies under a watched path) never count.
pub async fn run(handle: SupervisorHandle, w: WatchConfig, log_dir: PathBuf) {
    let (tx, mut rx) = mpsc::channel::<String>(1);
    let filter = w.clone();
    let debouncer = new_debouncer(w.delay, None, move |result: DebounceEventResult| {
        let Ok(events) = result else { return };
        let changed = events
            .iter()
            .flat_map(|e| e.paths.iter())
            .find(|p| !p.starts_with(&log_dir) && filter.wants(p));
        if let Some(path) = changed {
            // Full: a restart is already due, which will see this change too.
            let _ = tx.try_send(path.display().to_string());
        }
    });
    let mut debouncer = match debouncer {
        Ok(d) => d,
        Err(e) => {
            warn!(app = w.app, error = %e, "watch: cannot watch files; not watching");
            return;
        }
    };
    for path in &w.paths {
        if let Err(e) = debouncer.watch(path, RecursiveMode::Recursive) {
            warn!(app = w.app, path = %path.display(), error = %e, "watch: cannot watch this path");
        }
    }
    info!(app = w.app, paths = ?w.paths, delay = ?w.delay, "watching for changes");
    while let Some(path) = rx.recv().await {
        let fleet = handle.fleet();
        let running = fleet
            .apps
            .iter()
            .find(|a| a.name == w.app)
            .is_some_and(|a| {
                a.workers
                    .iter()
                    .any(|w| matches!(w.state, WorkerState::Ready | WorkerState::Starting))
            });
        if !running {
            info!(
                app = w.app,
                path, "watch: change ignored, the app is not running"
            );
            continue;
        }
        info!(app = w.app, path, "watch: files changed; rolling restart");
        match handle.restart(&w.app, None, false).await {
            Ok(report) if report.ok() => info!(app = w.app, "watch: restart done"),
            Ok(report) => warn!(app = w.app, ?report, "watch: restart done with failures"),
            Err(e) => {
                info!(app = w.app, error = %e, "watch: stopped");
                return;
            }
        }
    }
    drop(debouncer);
}
