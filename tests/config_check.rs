//! `rtsup check`: errors name file, line and key; every layer reports at once (syntax, types,
//! semantics, this machine); every shipped config passes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{ports, rtsup_bin};

/// What `rtsup check -c FILE` printed.
struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: Vec<String>,
}

/// Write `body` to a temp `rtsup.toml` and run `rtsup check -c` on it.
fn check(body: &str) -> (tempfile::TempDir, PathBuf, Checked) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rtsup.toml");
    fs::write(&file, body).expect("write");
    let out = Command::new(rtsup_bin())
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .expect("run");
    let checked = Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(str::to_string)
            .collect(),
    };
    (dir, file, checked)
}

/// `expected` lines with `{f}` replaced by the file name.
fn lines(file: &Path, expected: &[&str]) -> Vec<String> {
    let f = file.display().to_string();
    expected.iter().map(|l| l.replace("{f}", &f)).collect()
}

#[test]
fn check_reports_every_error_of_every_section_at_once() {
    let (_dir, file, out) = check(
        "[[app]]\nname = \"chat\"\ncommand = \"sh\"\nport = \"5001\"\nkill_timeout = \"forever\"\n\n\
         [[app]]\nname = \"web\"\ncommand = \"sh\"\nport = 0\nready = \"udp\"\nenv = { A = 1 }\n\n\
         [[app]]\ncommand = \"sh\"\nport = 6001\n\n\
         [balancer]\napp = \"web\"\ncookie = 7\nnew_sessions = \"random\"\n",
    );
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        lines(
            &file,
            &[
                "{f}:4:8: app[0].port: invalid type: string \"5001\", expected i64",
                "{f}:5:16: app[0].kill_timeout: \"forever\" is not a duration like \"100ms\", \"5s\" or \"1m\": expected number at 0",
                "{f}:10:8: app[1].port: must leave room for 2×1 ports (port+i and its reload twin) within 1..65535",
                "{f}:11:9: app[1].ready: must be \"tcp\" or \"http:/path\", not \"udp\"",
                "{f}:12:13: app[1].env: invalid type: integer `1`, expected a string",
                "{f}:14:1: app[2].name: missing field `name`",
                "{f}:20:10: balancer.cookie: invalid type: integer `7`, expected a string",
                "{f}:21:16: balancer.new_sessions: must be \"least-conn\", \"ip-hash\" or \"round-robin\", not \"random\"",
            ]
        )
    );
}

#[test]
fn check_reports_every_syntax_error_with_line_and_column() {
    let (_dir, file, out) =
        check("[[app]]\nname = \"chat\ncommand = \"sh\"\nport = 5001\n[balancer\nlisten = \"x\"\n");
    assert_eq!(out.code, Some(1));
    let f = file.display().to_string();
    assert_eq!(out.stderr.len(), 2, "{:?}", out.stderr);
    assert!(
        out.stderr[0].starts_with(&format!("{f}:2:13: app[0].name: ")),
        "{:?}",
        out.stderr
    );
    assert!(
        out.stderr[1].starts_with(&format!("{f}:5:10: balancer: ")),
        "{:?}",
        out.stderr
    );
}

#[test]
fn check_finds_commands_that_cannot_run() {
    let (dir, file, out) = check(
        "[[app]]\nname = \"a\"\ncommand = \"nodee\"\nport = 5001\n\n\
         [[app]]\nname = \"b\"\ncommand = \"./serve.sh\"\ncwd = \".\"\nport = 5011\n\n\
         [[app]]\nname = \"c\"\ncommand = \"sh\"\nenv = { PATH = \"/nonexistent\" }\nport = 5021\n\n\
         [[app]]\nname = \"d\"\ncommand = \"/bin/sh\"\nport = 5031\n",
    );
    // serve.sh exists but is not executable: still an error.
    fs::write(dir.path().join("serve.sh"), "#!/bin/sh\n").expect("write");
    let again = Command::new(rtsup_bin())
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .expect("run");
    let expected = lines(
        &file,
        &[
            "{f}:3:11: app[0].command: \"nodee\" not found on PATH",
            &format!(
                "{{f}}:8:11: app[1].command: \"./serve.sh\" is not an executable file ({}/serve.sh)",
                dir.path().display()
            ),
            "{f}:14:11: app[2].command: \"sh\" not found on PATH",
        ],
    );
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr, expected);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&again.stderr)
            .lines()
            .collect::<Vec<_>>(),
        expected
    );
}

#[test]
fn check_rejects_ports_shared_with_twins_and_listeners() {
    let (_dir, file, out) = check(
        "[[app]]\nname = \"a\"\ncommand = \"sh\"\nport = 5001\ninstances = 2\n\n\
         [[app]]\nname = \"b\"\ncommand = \"sh\"\nport = 5004\n\n\
         [balancer]\nlisten = \"0.0.0.0:5003\"\napp = \"a\"\n\n\
         [admin]\nlisten = \"127.0.0.1:5003\"\n",
    );
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        lines(
            &file,
            &[
                "{f}:10:8: app[1].port: ports 5004..5006 overlap those of app \"a\" (port 5004: slot 0's port here, slot 1's reload twin of \"a\")",
                "{f}:13:10: balancer.listen: port 5003 is slot 0's reload twin of app \"a\" (its ports are 5001..5005)",
                "{f}:17:10: admin.listen: port 5003 is also the balancer's",
                "{f}:17:10: admin.listen: port 5003 is slot 0's reload twin of app \"a\" (its ports are 5001..5005)",
            ]
        )
    );
}

#[test]
fn check_warns_about_ports_in_use_now() {
    // The block's listeners stay open (held by this test process) while rtsup checks.
    let held = ports::block(6);
    let base = held.base;
    let (_dir, file, out) = check(&format!(
        "[[app]]\nname = \"a\"\ncommand = \"sh\"\nport = {base}\ninstances = 2\n\n\
         [balancer]\nlisten = \"127.0.0.1:{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        base + 5
    ));
    let me = std::process::id();
    let name = fs::read_to_string("/proc/self/comm").expect("comm");
    let name = name.trim();
    assert_eq!(out.code, Some(0), "{:?}", out.stderr);
    assert_eq!(out.stdout, format!("{}: ok (1 app(s))\n", file.display()));
    assert_eq!(
        out.stderr,
        lines(
            &file,
            &[
                &format!(
                    "{{f}}:4:8: app[0].port: warning: port {base} is in use now by pid {me} ({name})"
                ),
                &format!(
                    "{{f}}:4:8: app[0].port: warning: port {} is in use now by pid {me} ({name})",
                    base + 1
                ),
                &format!(
                    "{{f}}:8:10: balancer.listen: warning: port {} is in use now by pid {me} ({name})",
                    base + 5
                ),
            ]
        )
    );
}

#[test]
fn check_reports_a_bad_key_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rtsup.toml");
    fs::write(
        &file,
        "[[app]]\nname = \"chat\"\ncommand = \"node\"\nport = 5001\ninstancs = 4\nkill_timeout = \"forever\"\n",
    )
    .expect("write");
    let out = Command::new(rtsup_bin())
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:5:1: app[0].instancs: unknown field `instancs`",
        file.display()
    );
    assert!(err.starts_with(&expected), "{err}");
    // The unknown key does not hide the rest of the app.
    assert!(
        err.contains(&format!("{}:6:16: app[0].kill_timeout:", file.display())),
        "{err}"
    );
}

#[test]
fn check_reports_every_semantic_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rtsup.toml");
    fs::write(
        &file,
        "[[app]]\nname = \"chat\"\ncommand = \"node\"\nport = 70000\nkill_timeout = \"forever\"\nready = \"udp\"\n",
    )
    .expect("write");
    let out = Command::new(rtsup_bin())
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    for needle in [
        format!("{f}:4:8: app[0].port:"),
        format!("{f}:5:16: app[0].kill_timeout:"),
        format!("{f}:6:9: app[0].ready:"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn check_reports_client_bounds_out_of_range() {
    let (_dir, file, out) = check(
        "[[app]]\nname = \"chat\"\ncommand = \"node\"\nport = 20001\n[balancer]\nmax_header = \"4KiB\"\nmax_request_line = \"8KiB\"\nheader_timeout = \"10ms\"\nkeepalive_timeout = \"soon\"\nbody_timeout = \"0s\"\nmax_connections = 0\nmax_connections_per_address = -1\nsend_timeout = \"100000d\"\nconnect_timeout = \"50ms\"\nupstream_keepalive_timeout = \"2d\"\n",
    );
    assert_eq!(out.code, Some(1));
    let f = file.display();
    for needle in [
        format!("{f}:7:20: balancer.max_request_line: must not exceed max_header (4096 bytes)"),
        format!("{f}:8:18: balancer.header_timeout: must be 100ms to 1d"),
        format!("{f}:9:21: balancer.keepalive_timeout:"),
        format!("{f}:10:16: balancer.body_timeout: must be 100ms to 1d"),
        format!("{f}:11:19: balancer.max_connections: must be 1 or more"),
        format!("{f}:12:31: balancer.max_connections_per_address: must be 0 (no cap) or more"),
        format!("{f}:13:16: balancer.send_timeout: must be 100ms to 1d"),
        format!("{f}:14:19: balancer.connect_timeout: must be 100ms to 1d"),
        format!("{f}:15:30: balancer.upstream_keepalive_timeout: must be 100ms to 1d"),
    ] {
        assert!(
            out.stderr.iter().any(|l| l.starts_with(&needle)),
            "missing {needle:?} in:\n{:#?}",
            out.stderr
        );
    }
}

#[test]
fn every_shipped_config_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).expect("configs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(rtsup_bin())
                .args(["check", "-c"])
                .arg(&path)
                .output()
                .expect("run");
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} configs found");
}

#[test]
fn start_with_an_invalid_config_fails_before_spawning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rtsup.toml");
    fs::write(
        &file,
        "[[app]]\nname = \"x\"\ncommand = \"node\"\nport = 0\n",
    )
    .expect("write");
    let out = Command::new(rtsup_bin())
        .args(["start", "-c"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("app[0].port"), "{err}");
}

#[test]
fn check_refuses_what_is_not_a_small_regular_file_and_names_that_are_not_file_names() {
    // A device, a FIFO and a directory are refused at once (no endless read, no block).
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo.toml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
    );
    let big = dir.path().join("big.toml");
    fs::write(&big, "#".repeat(2 << 20)).expect("big");
    for path in [Path::new("/dev/zero"), &fifo, dir.path(), &big] {
        let out = crate::harness::wait_until("check answers", || {
            let mut child = Command::new(rtsup_bin())
                .args(["check", "-c"])
                .arg(path)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())?;
            let t0 = std::time::Instant::now();
            while t0.elapsed() < std::time::Duration::from_secs(5) {
                if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                    return child.wait_with_output().map_err(|e| e.to_string());
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            panic!(
                "rtsup check -c {} did not answer within 5 s",
                path.display()
            );
        });
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
        assert!(
            err.contains("not a regular file") || err.contains("larger than 1048576 bytes"),
            "{}: {err}",
            path.display()
        );
    }
    let long = "a".repeat(300);
    let (_dir, file, c) = check(&format!(
        "[[app]]\nname = \"{long}\"\ncommand = \"node\"\nport = 5000\n"
    ));
    assert_eq!(c.code, Some(1));
    assert_eq!(
        c.stderr,
        lines(
            &file,
            &[
                "{f}:2:8: app[0].name: must be 1 to 64 letters, digits, '-' or '_' (it names log files)"
            ]
        )
    );
}

#[test]
fn check_reports_cluster_and_cookie_secret_mistakes_with_their_lines() {
    let (_dir, file, out) = check(
        "[[app]]\nname = \"chat\"\ncommand = \"node\"\nport = 20001\n[balancer]\ncookie_secret = \"short\"\n\
         [cluster]\nname = \"bad name\"\nredis = \"http://10.0.0.5\"\nadvertise = \"0.0.0.0:8080\"\nsession_ttl = \"soon\"\n",
    );
    assert_eq!(out.code, Some(1));
    let f = file.display();
    for needle in [
        format!("{f}:6:17: balancer.cookie_secret: must be at least 16 characters"),
        format!("{f}:8:8: cluster.name:"),
        format!("{f}:9:9: cluster.redis: must start with redis://"),
        format!("{f}:10:13: cluster.advertise: must be an address the other hosts can connect to"),
        format!("{f}:11:15: cluster.session_ttl:"),
    ] {
        assert!(
            out.stderr.iter().any(|l| l.starts_with(&needle)),
            "missing {needle:?} in:\n{:#?}",
            out.stderr
        );
    }
    // A cluster without a shared secret, or without a balancer, is refused with the reason.
    let (_dir, _file, out) = check(
        "[[app]]\nname = \"chat\"\ncommand = \"node\"\nport = 20001\n[balancer]\n[cluster]\nredis = \"redis://127.0.0.1:6379\"\nadvertise = \"10.0.0.11:8080\"\n",
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("cluster: needs [balancer] cookie_secret")),
        "{:#?}",
        out.stderr
    );
    let (_dir, _file, out) = check(
        "[[app]]\nname = \"chat\"\ncommand = \"node\"\nport = 20001\n[cluster]\nredis = \"redis://127.0.0.1:6379\"\nadvertise = \"10.0.0.11:8080\"\n",
    );
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("cluster: needs a [balancer]")),
        "{:#?}",
        out.stderr
    );
}
