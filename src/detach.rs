//! `rtsup start -d` (as `pm2 start`): the daemon runs in the background, in a process group of
//! its own, its log appended to `log_dir/rtsup.log`; the command returns once every worker
//! slot has settled (ready, or errored after its retries) and prints the status table.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use supervisor::WorkerState;

use crate::config::Config;
use crate::control::proto::{Request, Response, StatusReport};
use crate::control_client;

/// How often the new daemon is asked whether it has settled.
const POLL: Duration = Duration::from_millis(100);

/// Lines of the daemon's log shown when it exits before settling.
const LOG_TAIL: usize = 30;

/// Start the daemon for `config` (read from `file`, `None` for the embedded demo) in the
/// background, wait up to `wait` for it to settle, print the status table.
pub fn run(
    config: &Config,
    file: Option<&Path>,
    profile: Option<&str>,
    wait: Duration,
) -> anyhow::Result<ExitCode> {
    let socket = config.supervisor.control_socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if rt
        .block_on(control_client::call(&socket, Request::Status))
        .is_ok()
    {
        bail!(
            "an rtsup daemon already answers on {} (`rtsup status`; `rtsup reload` applies a changed configuration)",
            socket.display()
        );
    }
    let log_dir = &config.supervisor.logs.dir;
    std::fs::create_dir_all(log_dir)
        .with_context(|| format!("cannot create the log directory {}", log_dir.display()))?;
    let log_path = log_dir.join("rtsup.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let start_at = std::fs::metadata(&log_path).map_or(0, |m| m.len());
    let exe = std::env::current_exe().context("finding the rtsup binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("start");
    if let Some(f) = file {
        cmd.arg("-c").arg(f);
    }
    if let Some(p) = profile {
        cmd.arg("--env").arg(p);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log)
        // Its own process group: a Ctrl-C or a hang-up of this terminal does not reach it.
        .process_group(0)
        // It is not the service systemd may be running this command for.
        .env_remove("NOTIFY_SOCKET")
        .env("RTSUP_LOG_FORMAT", "text")
        .spawn()
        .context("starting the daemon")?;
    let pid = child.id();
    let deadline = Instant::now() + wait;
    let report = loop {
        if let Some(status) = child.try_wait()? {
            eprintln!("{}", tail(&log_path, start_at));
            bail!(
                "the daemon exited before its workers settled ({status}); its log is above and in {}",
                log_path.display()
            );
        }
        if let Ok(Response::Status(report)) =
            rt.block_on(control_client::call(&socket, Request::Status))
            && settled(&report)
        {
            break report;
        }
        if Instant::now() > deadline {
            return still_settling(&rt, &socket, &mut child, wait);
        }
        std::thread::sleep(POLL);
    };
    crate::out(&crate::status_table::render(&report))?;
    let errored = errored(&report);
    crate::out(&format!(
        "rtsup: running in the background (pid {pid}); daemon log {}; `rtsup logs -f`, `rtsup stop`\n",
        log_path.display()
    ))?;
    if errored > 0 {
        eprintln!("rtsup: {errored} worker slot(s) errored; `rtsup status` says why");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Every slot of every app is ready, errored or stopped (nothing starting or waiting).
fn settled(report: &StatusReport) -> bool {
    !report.apps.is_empty()
        && report.apps.iter().all(|a| {
            a.workers.iter().all(|w| {
                matches!(
                    w.state,
                    WorkerState::Ready | WorkerState::Errored | WorkerState::Stopped
                )
            })
        })
}

fn errored(report: &StatusReport) -> usize {
    report
        .apps
        .iter()
        .flat_map(|a| &a.workers)
        .filter(|w| w.state == WorkerState::Errored)
        .count()
}

/// The wait is over but some slot is still starting: show where it is; the daemon keeps
/// running.
fn still_settling(
    rt: &tokio::runtime::Runtime,
    socket: &Path,
    child: &mut Child,
    wait: Duration,
) -> anyhow::Result<ExitCode> {
    if let Ok(Response::Status(report)) = rt.block_on(control_client::call(socket, Request::Status))
    {
        crate::out(&crate::status_table::render(&report))?;
    }
    eprintln!(
        "rtsup: the daemon (pid {}) runs, but not every worker settled within {} (--wait)",
        child.id(),
        humantime::format_duration(wait)
    );
    Ok(ExitCode::FAILURE)
}

/// The last lines the daemon wrote to `path` after byte `from`.
fn tail(path: &Path, from: u64) -> String {
    let Ok(f) = std::fs::File::open(path) else {
        return String::new();
    };
    let mut reader = BufReader::new(f);
    let _ = std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(from));
    let lines: Vec<String> = reader.lines().map_while(Result::ok).collect();
    let skip = lines.len().saturating_sub(LOG_TAIL);
    lines[skip..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{AppStatus, WorkerStatus};

    fn report(states: &[WorkerState]) -> StatusReport {
        StatusReport {
            apps: vec![AppStatus {
                name: "api".into(),
                workers: states
                    .iter()
                    .enumerate()
                    .map(|(i, s)| WorkerStatus {
                        slot: u16::try_from(i).expect("test fixture"),
                        generation: 1,
                        pid: None,
                        port: 3000,
                        state: *s,
                        restarts: 0,
                        uptime_s: 0,
                        memory_bytes: 0,
                        cpu_percent: 0.0,
                        last_exit: None,
                        sessions: None,
                        websockets: None,
                        requests: None,
                    })
                    .collect(),
            }],
            reloading: false,
            balancer: None,
            cluster: None,
        }
    }

    #[test]
    fn settled_means_nothing_is_still_on_its_way() {
        use WorkerState::*;
        for (states, want) in [
            (vec![Ready, Ready], true),
            (vec![Ready, Errored], true),
            (vec![Ready, Starting], false),
            (vec![Ready, Waiting], false),
            (vec![Stopping], false),
            (vec![], true),
        ] {
            assert_eq!(settled(&report(&states)), want, "{states:?}");
        }
        assert!(!settled(&StatusReport {
            apps: vec![],
            reloading: false,
            balancer: None,
            cluster: None,
        }));
    }
}
