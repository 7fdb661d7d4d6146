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

use std::os::fd::AsRawFd;

use crate::spec::{AppSpec, ReadyCheck};

/// The descriptor a worker's Node IPC channel gets (`NODE_CHANNEL_FD`).
const IPC_FD: i32 = 3;

/// Spawn slot `slot` of `app`, listening on `port`, with piped stdout/stderr.
///
/// The child gets `PORT`, `RTSUP_INSTANCE` and `NODE_APP_INSTANCE` (PM2 compatibility) on top of
/// the app's `env` and the supervisor's own environment. With `ready = Message` it also gets a
/// Node IPC channel (`NODE_CHANNEL_FD`, JSON lines, as PM2 opens one), whose other end is
/// returned.
pub fn spawn(
    app: &AppSpec,
    slot: u16,
    port: u16,
) -> io::Result<(Child, Option<std::os::unix::net::UnixStream>)> {
    let ipc = match app.ready {
        ReadyCheck::Message => Some(std::os::unix::net::UnixStream::pair()?),
        _ => None,
    };
    let child_ipc = ipc.as_ref().map(|(_, child)| child.as_raw_fd());
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
        && let Some(value) = app
            .env
            .get(var)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .and_then(|base| base.checked_add(i64::from(slot)))
    {
        cmd.env(var, value.to_string());
    }
    if let Some(cwd) = &app.cwd {
        cmd.current_dir(cwd);
    }
    if child_ipc.is_some() {
        cmd.env("NODE_CHANNEL_FD", IPC_FD.to_string())
            .env("NODE_CHANNEL_SERIALIZATION_MODE", "json");
    }
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec. It only makes the
    // async-signal-safe system calls prctl(2), getppid(2), dup2(2) and fcntl(2) and allocates
    // nothing (the error is a raw OS error code).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
                .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            // rtsup may have died before the line above took effect: then no signal comes.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            // The IPC channel at IPC_FD, kept across exec (dup2 leaves close-on-exec off; a
            // descriptor already there keeps its flag, so clear it).
            if let Some(fd) = child_ipc {
                let r = if fd == IPC_FD {
                    nix::libc::fcntl(fd, nix::libc::F_SETFD, 0)
                } else {
                    nix::libc::dup2(fd, IPC_FD)
                };
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The child's end lives on in the child only.
    Ok((child, ipc.map(|(parent_end, _)| parent_end)))
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
