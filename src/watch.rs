//! `watch` (PM2's): a rolling, drained restart of an app once the files it watches have
//! changed and then stayed quiet for `watch_delay`.
//!
//! inotify events (the notify crate) count only when they change something (created, written,
//! renamed, removed: not opened, read or closed, not attributes), pass the app's ignore
//! patterns and are not rtsup's own files (its log_dir, its control socket and the files named
//! after it). Each one moves a "last change" instant; the task waits until that instant is
//! `watch_delay` old, then restarts the app. Changes during a restart cause exactly one more,
//! once they settle too.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher};
use supervisor::SupervisorHandle;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::watch::WatchConfig;

/// Watch `w` and restart its app after each settled change, until the supervisor is gone.
/// Paths under `own` (rtsup's log_dir, its control socket and the files named after it)
/// never count.
pub async fn run(handle: SupervisorHandle, w: WatchConfig, own: Vec<PathBuf>) {
    let own: Vec<PathBuf> = own
        .into_iter()
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        .collect();
    let (tx, mut changes) = watch::channel::<Option<(Instant, PathBuf)>>(None);
    let filter = w.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !changes_something(&event.kind) {
            return;
        }
        if let Some(path) = event
            .paths
            .iter()
            .find(|p| !is_own(p, &own) && filter.wants(p))
        {
            tx.send_replace(Some((Instant::now(), path.clone())));
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            warn!(app = w.app, error = %e, "watch: cannot watch files; not watching");
            return;
        }
    };
    for path in &w.paths {
        if let Err(e) = watcher.watch(path, RecursiveMode::Recursive) {
            warn!(app = w.app, path = %path.display(), error = %e, "watch: cannot watch this path");
        }
    }
    info!(app = w.app, paths = ?w.paths, delay = ?w.delay, "watching for changes");
    while changes.changed().await.is_ok() {
        // Settle: wait until the last change is `delay` old.
        let path = loop {
            let Some((last, path)) = changes.borrow_and_update().clone() else {
                break None;
            };
            let quiet_at = last + w.delay;
            if Instant::now() >= quiet_at {
                break Some(path);
            }
            tokio::time::sleep_until(tokio::time::Instant::from_std(quiet_at)).await;
        };
        let Some(path) = path else { continue };
        let path = path.display().to_string();
        if !crate::cron::app_states(&handle, &w.app).is_some_and(|s| crate::cron::running(&s)) {
            info!(
                app = w.app,
                path, "watch: change ignored, the app is not running"
            );
            continue;
        }
        info!(
            app = w.app,
            path, "watch: files changed and settled; rolling restart"
        );
        match handle.restart(&w.app, None, false).await {
            Ok(report) if report.ok() => info!(app = w.app, "watch: restart done"),
            Ok(report) => warn!(app = w.app, ?report, "watch: restart done with failures"),
            Err(e) => {
                info!(app = w.app, error = %e, "watch: stopped");
                return;
            }
        }
    }
    drop(watcher);
}

/// Whether an event changed a file or directory (not an open, read, close or attribute change).
fn changes_something(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(m) => !matches!(m, ModifyKind::Metadata(_)),
        EventKind::Access(_) | EventKind::Other => false,
    }
}

/// Whether `path` is one of rtsup's own: one of `own`, under one, or a file named after one
/// (`rtsup.sock.pids` beside `rtsup.sock`): its text starts with one's.
fn is_own(path: &Path, own: &[PathBuf]) -> bool {
    own.iter().any(|o| {
        path.as_os_str()
            .as_bytes()
            .starts_with(o.as_os_str().as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, RemoveKind};

    #[test]
    fn only_changes_count_not_reads() {
        let cases = [
            (EventKind::Create(CreateKind::File), true),
            (EventKind::Remove(RemoveKind::Any), true),
            (
                EventKind::Modify(ModifyKind::Data(DataChange::Content)),
                true,
            ),
            (
                EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::Both)),
                true,
            ),
            (
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
                false,
            ),
            (EventKind::Access(AccessKind::Open(AccessMode::Read)), false),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                false,
            ),
        ];
        for (kind, want) in cases {
            assert_eq!(changes_something(&kind), want, "{kind:?}");
        }
    }

    #[test]
    fn rtsups_own_files_never_count() {
        let own = vec![
            PathBuf::from("/srv/app/logs"),
            PathBuf::from("/srv/app/s.sock"),
        ];
        assert!(is_own(Path::new("/srv/app/logs/web-0.out.log"), &own));
        assert!(is_own(Path::new("/srv/app/s.sock.pids"), &own));
        assert!(!is_own(Path::new("/srv/app/server.js"), &own));
    }
}
