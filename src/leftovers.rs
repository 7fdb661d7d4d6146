//! Workers left behind by a previous run: the daemon records its workers' process groups in a
//! state file beside its control socket (`<control_socket>.pids`), and the next `rtsup start`
//! stops any group still alive from it and says so.
//!
//! The kernel's parent-death signal (see the supervisor's `process` module) already stops each
//! worker when rtsup dies; this catches what it cannot: a worker's own children, and a worker
//! that ignores SIGTERM. A process counts as ours only if its environment carries this
//! daemon's marker (`RTSUP_SUPERVISOR=<its hub socket>`), which every worker and its children
//! inherit: a recycled pid, another daemon's worker or a forged entry in the file is never hit.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use supervisor::Fleet;
use tokio::sync::watch;
use tracing::{debug, warn};

/// How long leftovers get between SIGTERM and SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// The state file of the daemon whose control socket is `socket`.
pub fn state_file(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".pids");
    name.into()
}

/// Stop every process group recorded in `file` that still has processes carrying `marker`
/// (`NAME=value` in their environment); returns how many groups were stopped. Removes the
/// file.
pub fn reap(file: &Path, marker: &str) -> usize {
    let Ok(text) = fs::read_to_string(file) else {
        return 0;
    };
    let groups: Vec<u32> = text
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|&g| g > 1)
        .collect();
    let ours_alive = |g: u32| group_alive_with(g, marker.as_bytes());
    let alive: Vec<u32> = groups.into_iter().filter(|&g| ours_alive(g)).collect();
    for &g in &alive {
        signal_group(g, Signal::SIGTERM);
    }
    let deadline = Instant::now() + LEFTOVER_GRACE;
    while Instant::now() < deadline && alive.iter().any(|&g| ours_alive(g)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &g in alive.iter().filter(|&&g| ours_alive(g)) {
        signal_group(g, Signal::SIGKILL);
    }
    let _ = fs::remove_file(file);
    alive.len()
}

/// Keep `file` listing the process group of every live worker; ends with the fleet.
pub async fn record(mut fleet: watch::Receiver<Fleet>, file: PathBuf) {
    let mut written: Option<BTreeSet<u32>> = None;
    loop {
        let groups: BTreeSet<u32> = fleet
            .borrow_and_update()
            .apps
            .iter()
            .flat_map(|a| a.workers.iter().filter_map(|w| w.pid))
            .collect();
        if written.as_ref() != Some(&groups) {
            let text: String = groups.iter().map(|g| format!("{g}\n")).collect();
            let tmp = file.with_extension("pids.tmp");
            match fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, &file)) {
                Ok(()) => written = Some(groups),
                Err(e) => debug!(error = %e, file = %file.display(), "cannot record worker groups"),
            }
        }
        if fleet.changed().await.is_err() {
            return;
        }
    }
}

/// Whether process group `pgid` has a live process whose environment holds `marker`.
fn group_alive_with(pgid: u32, marker: &[u8]) -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|entry| {
        let path = entry.path();
        let in_group = fs::read_to_string(path.join("stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    // State, ppid, pgrp: a zombie is not alive.
                    Some(f.first()? != &"Z" && f.get(2)?.parse::<u32>().ok()? == pgid)
                })
                .unwrap_or(false)
        });
        in_group
            && fs::read(path.join("environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == marker))
    })
}

fn signal_group(pgid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pgid)
        && let Err(e) = killpg(Pid::from_raw(raw), signal)
    {
        warn!(pgid, error = %e, "cannot signal a leftover worker group");
    }
}
