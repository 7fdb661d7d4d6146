//! Spawning and signalling worker processes: the only module that touches OS processes.
//!
//! Each worker is the leader of its own process group, so a signal reaches every process it
//! started (a `sh -c` wrapper, a Node cluster…) and nothing is orphaned. Each worker also gets
//! SIGTERM from the kernel if rtsup itself dies (`PR_SET_PDEATHSIG`), so a `kill -9` of rtsup
//! does not leave its workers holding their ports.

use std::io;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::spec::AppSpec;

/// Spawn slot `slot` of `app`, listening on `port`, with piped stdout/stderr.
///
/// The child gets `PORT`, `RTSUP_INSTANCE` and `NODE_APP_INSTANCE` (PM2 compatibility) on top of
/// the app's `env` and the supervisor's own environment.
pub fn spawn(app: &AppSpec, slot: u16, port: u16) -> io::Result<Child> {
    let mut cmd = Command::new(&app.command);
    cmd.args(&app.args)
        .envs(&app.env)
        .env("PORT", port.to_string())
        .env("RTSUP_INSTANCE", slot.to_string())
        .env("NODE_APP_INSTANCE", slot.to_string())
        .env("RTSUP_APP", &app.name)
        // systemd's notify protocol is the supervisor's, not the workers'.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(var) = &app.increment_var
        && let Some(base) = app.env.get(var).and_then(|v| v.trim().parse::<i64>().ok())
    {
        cmd.env(var, (base + i64::from(slot)).to_string());
    }
    if let Some(cwd) = &app.cwd {
        cmd.current_dir(cwd);
    }
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec. It only makes the
    // async-signal-safe system calls prctl(2) and getppid(2) and allocates nothing (the error
    // is a raw OS error code).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
                .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            // rtsup may have died before the line above took effect: then no signal comes.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Send `signal` to the process group led by `pgid`. Returns false when no process of the group
/// is left (or the id is out of range).
pub fn signal_group(pgid: u32, signal: Signal) -> bool {
    match i32::try_from(pgid) {
        Ok(raw) if raw > 1 => killpg(Pid::from_raw(raw), signal).is_ok(),
        _ => false,
    }
}

/// Human text for an exit status: `exit code 1`, `signal 9 (SIGKILL)`.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exit code {code}")
    } else if let Some(sig) = status.signal() {
        match Signal::try_from(sig) {
            Ok(s) => format!("signal {sig} ({})", s.as_str()),
            Err(_) => format!("signal {sig}"),
        }
    } else {
        status.to_string()
    }
}
