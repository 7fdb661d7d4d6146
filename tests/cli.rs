//! Client commands (`status`, `reload`, `stop`, `logs`) need only the control socket: they
//! reach the daemon from any directory, whatever else is wrong in the configuration files
//! around them.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::harness::{fixture_app, ports, rtsup_bin, wait_until};

/// `rtsup start` run from `dir` with no `-c` (so it reads `dir/rtsup.toml`); stopped on drop.
struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
}

impl Daemon {
    fn start_in(dir: &Path) -> Self {
        let child = Command::new(rtsup_bin())
            .arg("start")
            .current_dir(dir)
            .env("RTSUP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("rtsup.out")).expect("out"))
            .stderr(fs::File::create(dir.join("rtsup.err")).expect("err"))
            .spawn()
            .expect("spawn rtsup");
        Self {
            child: Some(child),
            dir: dir.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("rtsup.err")).unwrap_or_default()
    }

    /// Wait (within patience) for the daemon to exit on its own.
    fn wait_exit(&mut self) {
        let mut child = self.child.take().expect("daemon still owned");
        wait_until("the daemon to exit", || match child.try_wait() {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("still running".into()),
            Err(e) => Err(e.to_string()),
        });
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::harness::stop_daemon(child);
        }
    }
}

/// Run `rtsup ARGS` from `dir`.
fn rtsup_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(rtsup_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run rtsup")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `rtsup status --json ARGS` from `dir`, parsed.
fn status_in(dir: &Path, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    let out = rtsup_in(dir, &all);
    if !out.status.success() {
        return Err(stderr(&out));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// A `[supervisor]` with a control socket and log directory relative to the file's directory.
const SUPERVISOR: &str = "[supervisor]\ncontrol_socket = \"rtsup.sock\"\nlog_dir = \"logs\"\n\n";
/// Tests run in parallel: the admin server takes any free port.
const ADMIN: &str = "\n[admin]\nlisten = \"127.0.0.1:0\"\n";

#[test]
fn client_commands_reach_the_daemon_from_another_directory_despite_broken_configs() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("c"),
    );
    for d in [&a, &b, &c] {
        fs::create_dir(d).expect("mkdir");
    }
    let port = ports::block(2).base;
    let a_config = a.join("rtsup.toml");
    fs::write(
        &a_config,
        format!("{SUPERVISOR}{}{ADMIN}", fixture_app("web", 1, port, "")),
    )
    .expect("write a");
    let mut daemon = Daemon::start_in(&a);
    let socket = a.join("rtsup.sock");
    let socket_arg = socket.display().to_string();
    let a_arg = a_config.display().to_string();
    wait_until("the worker ready", || {
        let s = status_in(&a, &[]).map_err(|e| format!("{e}\ndaemon log:\n{}", daemon.log()))?;
        if s["apps"][0]["workers"][0]["state"] == "ready" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });

    // B holds a file that is not TOML at all.
    fs::write(b.join("rtsup.toml"), "this is {{ not toml\n").expect("write b");
    let s = status_in(&b, &["--socket", &socket_arg]).expect("status --socket from B");
    assert_eq!(s["apps"][0]["name"], "web", "{s}");

    // A's configuration is broken on purpose while the daemon runs: its [supervisor] is all a
    // client needs.
    fs::write(
        &a_config,
        format!(
            "{SUPERVISOR}[[app]]\nname = \"web\"\ncommand = \"node\"\nport = \"oops\"\ninstances = 0\nbogus = true\n{ADMIN}"
        ),
    )
    .expect("break a");
    let s = status_in(&b, &["-c", &a_arg]).expect("status -c A/rtsup.toml from B");
    assert_eq!(s["apps"][0]["name"], "web", "{s}");

    // C's own rtsup.toml names the daemon's socket; the rest of it is wrong.
    fs::write(
        c.join("rtsup.toml"),
        format!(
            "[supervisor]\ncontrol_socket = {socket_arg:?}\nlog_max_size = 12\n\n[[app]]\nname = 5\n\n[balancer]\nlisten = 8080\n"
        ),
    )
    .expect("write c");
    let s = status_in(&c, &[]).expect("status from C");
    assert_eq!(s["apps"][0]["name"], "web", "{s}");

    // Reload reaches the daemon, which validates its own (broken) file and refuses.
    for args in [
        ["reload", "--socket", &socket_arg],
        ["reload", "-c", &a_arg],
    ] {
        let out = rtsup_in(&b, &args);
        assert!(!out.status.success(), "{args:?} must fail");
        let err = stderr(&out);
        assert!(
            err.contains("invalid configuration, nothing changed")
                && err.contains(&format!("{}:8:8: app[0].port:", a_config.display()))
                && err.contains("app[0].instances"),
            "{args:?}: {err}"
        );
    }
    // The workers kept running.
    let s = status_in(&b, &["--socket", &socket_arg]).expect("status");
    assert_eq!(s["apps"][0]["workers"][0]["state"], "ready", "{s}");

    // Logs: the daemon says where its logs are.
    let out = rtsup_in(&b, &["logs", "--socket", &socket_arg, "-n", "50", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fixture worker instance=0"),
        "logs --socket from B: {text}"
    );

    // Stop through A's broken file, from B.
    let out = rtsup_in(&b, &["stop", "-c", &a_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "stopped\n");
    daemon.wait_exit();

    // No daemon any more: logs falls back to A's log_dir, read leniently from the broken file.
    let out = rtsup_in(&b, &["logs", "-c", &a_arg, "-n", "50", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fixture worker instance=0"),
        "logs -c from B: {text}"
    );
    // With --socket naming no daemon, it says so and uses the configuration.
    let out = rtsup_in(
        &b,
        &[
            "logs",
            "--socket",
            &socket_arg,
            "-c",
            &a_arg,
            "-n",
            "1",
            "web",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("no daemon answers at {socket_arg}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_file_that_is_not_toml_leaves_the_default_socket_with_one_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("rtsup.toml"), "<html>not toml</html>\n").expect("write");
    // Point the default somewhere empty where the daemon override is honoured; either way no
    // daemon answers at the default path in a test run.
    let out = Command::new(rtsup_bin())
        .arg("status")
        .current_dir(dir.path())
        .env("RTSUP_CONTROL_SOCKET", dir.path().join("none.sock"))
        .output()
        .expect("run");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("rtsup: warning: rtsup.toml:1:")
            && lines[0].contains("not valid TOML"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("rtsup: cannot reach the rtsup daemon at "),
        "{err}"
    );
    assert!(!out.status.success());
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let base = ports::block(2).base;
    let r = crate::harness::Rtsup::start(&fixture_app("web", 1, base, ""));
    r.wait_all_ready();
    let socket = r.socket.display().to_string();
    for args in [
        vec!["status", "--socket", &socket],
        vec!["status", "--json", "--socket", &socket],
        vec!["logs", "-n", "50", "--socket", &socket],
    ] {
        // `rtsup status | head -0`: the reader is gone before rtsup writes.
        let mut child = Command::new(rtsup_bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
}
