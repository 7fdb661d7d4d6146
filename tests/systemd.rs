//! Under systemd: the notify protocol as a `Type=notify` service manager hears it (READY=1
//! once every slot settled, even with an errored app; STATUS= naming every app; RELOADING=1 …
//! READY=1; WATCHDOG=1 while the supervisor answers; STOPPING=1), and the unit file (what
//! `rtsup systemd` prints, the shipped one, `systemd-analyze verify`, the directories it
//! passes to the daemon).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::{Rtsup, fixture_app, ports, rtsup_bin, wait_until};

/// The notify socket a test listens on, as systemd's would, and every message heard so far
/// (one entry per datagram).
struct Systemd {
    sock: UnixDatagram,
    heard: Vec<String>,
}

impl Systemd {
    fn bind(path: &Path) -> Self {
        let sock = UnixDatagram::bind(path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        Self {
            sock,
            heard: Vec::new(),
        }
    }

    /// Read what arrived (waiting at most the read timeout).
    fn listen(&mut self) {
        let mut buf = [0u8; 8192];
        while let Ok(n) = self.sock.recv(&mut buf) {
            self.heard
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            self.sock
                .set_nonblocking(true)
                .expect("nonblocking for the rest");
        }
        self.sock.set_nonblocking(false).expect("blocking again");
    }

    /// Wait for a message heard at index `from` or later that `pred` accepts; its index.
    fn wait_for(&mut self, what: &str, from: usize, pred: impl Fn(&str) -> bool) -> usize {
        wait_until(what, || {
            self.listen();
            self.heard
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, m)| pred(m))
                .map(|(i, _)| i)
                .ok_or_else(|| format!("{:?}", self.heard))
        })
    }

    /// The value of `KEY=` in message `i`.
    fn field(&self, i: usize, key: &str) -> Option<String> {
        self.heard[i]
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(str::to_string)
    }
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

/// The state of every worker of `app`, from `status --json`.
fn states(r: &Rtsup, app: &str) -> Vec<String> {
    let s = r.try_status().expect("status");
    s["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["name"] == app)
        .flat_map(|a| a["workers"].as_array().cloned().unwrap_or_default())
        .map(|w| w["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn systemd_hears_ready_once_a_crash_looping_app_is_errored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let mut systemd = Systemd::bind(&sock_path);
    let base = ports::block(8).base;
    let config = format!(
        "{}{}",
        fixture_app("web", 2, base, ""),
        fixture_app(
            "crashy",
            1,
            base + 4,
            "env = { FIXTURE_MODE = \"crash\" }\nrestart_delay = \"10ms\"\nmax_restarts = 2"
        )
    );
    let mut r = Rtsup::start_with(
        &config,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().expect("utf8")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );

    // READY=1 although one app never becomes ready: it comes once that app is errored.
    let ready = systemd.wait_for("READY=1", 0, |m| has_line(m, "READY=1"));
    assert_eq!(states(&r, "web"), ["ready", "ready"]);
    assert_eq!(states(&r, "crashy"), ["errored"]);
    let status = systemd
        .field(ready, "STATUS")
        .expect("STATUS= with READY=1");
    assert_eq!(
        status, "web 2/2 ready; crashy 0/1 ready, 1 errored: exit code 1",
        "{:?}",
        systemd.heard
    );

    // WATCHDOG=1 keeps coming while the supervisor's actor answers (period 400 ms).
    let mut at = ready;
    for _ in 0..3 {
        at = systemd.wait_for("WATCHDOG=1", at + 1, |m| has_line(m, "WATCHDOG=1"));
    }

    // STATUS= follows the fleet: one app stopped, then started again.
    let out = r.cli(&["stop", "web"]);
    assert!(out.status.success(), "{out:?}");
    systemd.wait_for("STATUS= with web stopped", ready + 1, |m| {
        has_line(
            m,
            "STATUS=web 0/2 ready, 2 stopped; crashy 0/1 ready, 1 errored: exit code 1",
        )
    });
    let out = r.cli(&["start", "web"]);
    assert!(out.status.success(), "{out:?}");
    let back = systemd.wait_for("STATUS= with web ready again", ready + 1, |m| {
        has_line(
            m,
            "STATUS=web 2/2 ready; crashy 0/1 ready, 1 errored: exit code 1",
        )
    });
    assert!(
        !systemd.heard[ready + 1..=back]
            .iter()
            .any(|m| has_line(m, "READY=1")),
        "READY=1 is sent once at start: {:?}",
        systemd.heard
    );

    // A reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 with a STATUS= naming both apps.
    r.signal(Signal::SIGHUP);
    let reloading = systemd.wait_for("RELOADING=1", back, |m| has_line(m, "RELOADING=1"));
    let usec = systemd
        .field(reloading, "MONOTONIC_USEC")
        .expect("MONOTONIC_USEC with RELOADING=1");
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{usec}");
    let reloaded = systemd.wait_for("READY=1 after the reload", reloading + 1, |m| {
        has_line(m, "READY=1")
    });
    let status = systemd.field(reloaded, "STATUS").expect("STATUS=");
    assert!(
        status.contains("web 2/2 ready") && status.contains("crashy 0/1 ready"),
        "{status}"
    );

    r.signal(Signal::SIGTERM);
    let stopping = systemd.wait_for("STOPPING=1", reloaded, |m| has_line(m, "STOPPING=1"));
    assert_eq!(r.wait_exit(), Some(0));
    systemd.listen();
    assert!(
        !systemd.heard[stopping..]
            .iter()
            .any(|m| has_line(m, "READY=1")),
        "no READY=1 after STOPPING=1: {:?}",
        systemd.heard
    );
}

/// The shipped unit file.
fn shipped() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/rtsup.service"))
        .expect("systemd/rtsup.service")
}

#[test]
fn systemd_unit_runs_as_its_own_user_with_its_own_directories() {
    let unit = shipped();
    let lines: Vec<&str> = unit.lines().collect();
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        "User=rtsup",
        "Group=rtsup",
        "ExecStart=/usr/bin/rtsup start -c /etc/rtsup/rtsup.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Environment=PATH=/usr/local/bin:/usr/bin:/bin",
        "Environment=RTSUP_CONTROL_SOCKET=/run/rtsup/rtsup.sock",
        "Environment=RTSUP_LOG_DIR=/var/log/rtsup",
        "RuntimeDirectory=rtsup",
        "LogsDirectory=rtsup",
        "KillMode=mixed",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "LimitNOFILE=1048576",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ReadWritePaths=/run/rtsup /var/log/rtsup",
        "ProtectHome=read-only",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{unit}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("TimeoutStartSec=")),
        "{unit}"
    );
}

#[test]
fn systemd_unit_printed_is_the_shipped_one_for_the_running_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("rtsup.toml");
    std::fs::write(&config, fixture_app("web", 1, 20_000, "")).expect("config");
    let out = Command::new(rtsup_bin())
        .args(["systemd", "-c"])
        .arg(&config)
        .output()
        .expect("rtsup systemd");
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).expect("utf8");
    let config = std::fs::canonicalize(&config).expect("canonical config");
    let expected = shipped()
        .replace("/usr/bin/rtsup", rtsup_bin())
        .replace("/etc/rtsup/rtsup.toml", &config.display().to_string());
    assert_eq!(printed, expected);
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        eprintln!("skipped: systemd-analyze is not installed (scripts/setup.sh installs it)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let unit = dir.path().join("rtsup.service");
    std::fs::write(&unit, shipped().replace("/usr/bin/rtsup", rtsup_bin())).expect("unit");
    let out = Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Unknown keys and bad values are only warnings (exit 0): none may name our unit.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("rtsup.service"))
        .collect();
    assert!(about_unit.is_empty(), "{stderr}");
}

/// A daemon started by hand (the harness always writes `control_socket` and `log_dir`).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        // No panic here (this may run while a failed test unwinds): SIGKILL after a deadline.
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn systemd_units_environment_places_the_control_socket_and_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run/rtsup");
    let socket = run.join("rtsup.sock");
    let logs = dir.path().join("log/rtsup");
    let config = dir.path().join("etc.toml");
    // No [supervisor] section: the unit's environment decides where the socket and logs go.
    std::fs::write(
        &config,
        format!(
            "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            fixture_app("web", 1, ports::block(2).base, "")
        ),
    )
    .expect("config");
    let elsewhere = tempfile::tempdir().expect("cwd without rtsup.toml");
    let _daemon = Daemon(
        Command::new(rtsup_bin())
            .args(["start", "-c"])
            .arg(&config)
            .env("RTSUP_CONTROL_SOCKET", &socket)
            .env("RTSUP_LOG_DIR", &logs)
            .current_dir(elsewhere.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("rtsup.err")).expect("err"))
            .spawn()
            .expect("spawn rtsup"),
    );
    // A client with the same environment and no configuration finds the daemon.
    wait_until(
        "a client to reach the daemon through RTSUP_CONTROL_SOCKET",
        || {
            let out = Command::new(rtsup_bin())
                .args(["status", "--json"])
                .env("RTSUP_CONTROL_SOCKET", &socket)
                .current_dir(elsewhere.path())
                .output()
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout);
            if out.status.success() && text.contains("\"ready\"") {
                Ok(())
            } else {
                Err(format!(
                    "{text} {} daemon: {}",
                    String::from_utf8_lossy(&out.stderr),
                    std::fs::read_to_string(dir.path().join("rtsup.err")).unwrap_or_default()
                ))
            }
        },
    );
    assert!(socket.exists(), "{}", socket.display());
    wait_until("the worker's log in RTSUP_LOG_DIR", || {
        let log = logs.join("web-0.out.log");
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("fixture worker"))
            .map(|_| ())
            .ok_or_else(|| format!("{} missing", log.display()))
    });
}
