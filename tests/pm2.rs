//! Coming from PM2: a real Express + socket.io app with a real ecosystem file, imported and
//! started; the daemon in the background (`start -d`), a one-off `start SCRIPT`, `startup`,
//! `monit` in tmux, and the workers' own metrics.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::harness::{self, Rtsup, http_get, ports, wait_until};
use serde_json::Value;

/// The PM2 fixture app (tests/interop/pm2app).
fn pm2app() -> PathBuf {
    harness::interop_dir().join("pm2app")
}

fn rtsup(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    Command::new(harness::rtsup_bin())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run rtsup")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `rtsup import` of the fixture's ecosystem.config.js with its PORT at `port` (workers from
/// `port + 1`), the balancer moved to `lb`: the TOML, and what went to stderr.
fn import(port: u16, lb: u16) -> (String, String) {
    let out = rtsup(
        &["import", "ecosystem.config.js"],
        &[("PM2APP_PORT", &port.to_string())],
        &pm2app(),
    );
    assert!(out.status.success(), "import: {}", text(&out.stderr));
    // The app's env.PORT (PM2's public port) became the balancer's; the test moves it.
    let toml = text(&out.stdout).replace(&format!("0.0.0.0:{port}"), &format!("127.0.0.1:{lb}"));
    (toml, text(&out.stderr))
}

fn env_of(port: u16) -> Value {
    let body = http_get(port, "/env").expect("GET /env");
    let json = body.split("\r\n\r\n").nth(1).unwrap_or(&body);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn an_imported_ecosystem_runs_as_under_pm2() {
    let block = ports::block(12);
    let (base, lb) = (block.base, block.base + 10);
    drop(block);
    let (toml, stderr) = import(base, lb);
    // Every key without a counterpart is named, with its reason.
    for key in [
        "out_file",
        "error_file",
        "merge_logs",
        "log_date_format",
        "time",
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("apps[0].{key}: ")) && l.len() > key.len() + 20),
            "{key} not listed with a reason:\n{stderr}"
        );
    }
    for line in [
        "wait_ready = true",
        "kill_signal = \"SIGINT\"",
        "max_memory = \"300MiB\"",
        "cron_restart = \"0 3 * * *\"",
        "[app.env_production]",
    ] {
        assert!(toml.contains(line), "{line} missing:\n{toml}");
    }
    // Replaced workers drain for 1 s at most (not the default 30 s) before their signal.
    let toml = toml.replace(
        "kill_signal = \"SIGINT\"",
        "kill_signal = \"SIGINT\"\ndrain_timeout = \"1s\"\nclose_window = \"100ms\"",
    );
    let r = Rtsup::start_args(&toml, &["--env", "production"]);
    let workers = r.wait_all_ready();
    assert_eq!(workers.len(), 4, "{workers:?}");

    // The profile's variables, increment_var per slot, PORT per slot.
    for w in &workers {
        let port = w["port"].as_u64().expect("port") as u16;
        let slot = w["slot"].as_u64().expect("slot");
        let env = env_of(port);
        assert_eq!(env["NODE_ENV"], "production", "{env}");
        assert_eq!(env["GREETING"], "hello from production", "{env}");
        assert_eq!(env["WORKER_ID"], (100 + slot).to_string(), "{env}");
        assert_eq!(env["PORT"], port.to_string(), "{env}");
    }

    // The official socket.io client, through the balancer: every client stays on its worker.
    let result = harness::run_node(
        "pm2app/client.js",
        &[&format!("http://127.0.0.1:{lb}"), "20"],
    );
    assert_eq!(result["connected"], 20, "{result}");
    assert_eq!(result["answered"], 60, "{result}");
    assert_eq!(result["moved"], 0, "{result}");
    assert_eq!(
        result["errors"].as_array().map(Vec::len),
        Some(0),
        "{result}"
    );

    // SIGINT (PM2's signal) reaches the app first.
    let out = r.cli(&["restart", "api:0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = r.log_dir.join("api-0.out.log");
    wait_until("the old worker's SIGINT line", || {
        let l = fs::read_to_string(&log).unwrap_or_default();
        if l.contains("got SIGINT") && !l.contains("got SIGTERM") {
            Ok(())
        } else {
            Err(l)
        }
    });

    // A change under watch (not under ignore_watch) rolls every worker.
    // The newest generation of each slot (a replaced worker is listed while it leaves).
    let gens = |r: &Rtsup| -> std::collections::BTreeMap<u64, u64> {
        let mut newest = std::collections::BTreeMap::new();
        for w in r.workers() {
            let slot = w["slot"].as_u64().unwrap_or(0);
            let generation = w["generation"].as_u64().unwrap_or(0);
            let e = newest.entry(slot).or_insert(0);
            *e = generation.max(*e);
        }
        newest
    };
    // After the restart of api:0 above has settled.
    wait_until("api:0's replacement alone in its slot", || {
        let ws = r.workers();
        if ws.len() == 4 && ws.iter().all(|w| w["state"] == "ready") {
            Ok(())
        } else {
            Err(format!("{ws:?}"))
        }
    });
    let before = gens(&r);
    let touched = pm2app().join(format!("watched/{}.touch", std::process::id()));
    fs::write(&touched, "changed").expect("write the watched file");
    let rolled = wait_until("every worker replaced after the change", || {
        let ws = r.workers();
        let now = gens(&r);
        // Only the four new workers, each newer than its slot's before, all ready.
        if ws.len() == 4
            && ws.iter().all(|w| w["state"] == "ready")
            && before
                .iter()
                .all(|(slot, g)| now.get(slot).is_some_and(|n| n > g))
        {
            Ok(now)
        } else {
            Err(format!("{before:?} → {now:?} {ws:?}"))
        }
    });
    let _ = fs::remove_file(&touched);
    assert_eq!(rolled.len(), 4);
}

#[test]
fn a_worker_that_never_says_ready_is_not_ready_though_it_listens() {
    let block = ports::block(12);
    let (base, lb) = (block.base, block.base + 10);
    drop(block);
    let (toml, _) = import(base, lb);
    // Slot 3 listens but never calls process.send('ready').
    let toml = toml.replace("listen_timeout = \"8000ms\"", "listen_timeout = \"60s\"");
    let r = Rtsup::start_with(&toml, &[("NEVER_READY_INSTANCE", "3")]);
    let workers = wait_until("slots 0-2 ready and slot 3 listening", || {
        let ws = r.workers();
        let ready = ws.iter().filter(|w| w["state"] == "ready").count();
        let listens = http_get(base + 4, "/health").is_ok();
        if ready == 3 && listens {
            Ok(ws)
        } else {
            Err(format!("{ws:?} slot 3 listens: {listens}"))
        }
    });
    let slot3 = workers.iter().find(|w| w["slot"] == 3).expect("slot 3");
    assert_eq!(slot3["state"], "starting", "{slot3}");
    assert!(
        fs::read_to_string(r.log_dir.join("api-3.out.log"))
            .unwrap_or_default()
            .contains("will never say ready")
    );
}

#[test]
fn import_reports_bad_files_and_keeps_an_existing_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A file that prints, holds a function and leaves a child holding its output open.
    let noisy = dir.path().join("noisy.config.js");
    fs::write(
        &noisy,
        "console.log('loading config…');\n\
         require('child_process').spawn('sleep', ['30'], { stdio: 'inherit', detached: true }).unref();\n\
         module.exports = { apps: [{ name: 'n', script: 'n.js', env: { TOKEN: () => 'x', A: 'b' } }] };\n",
    )
    .expect("write");
    fs::write(dir.path().join("n.js"), "").expect("write");
    let started = std::time::Instant::now();
    let out = rtsup(&["import", "noisy.config.js"], &[], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        text(&out.stdout).contains("A = \"b\""),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("apps[0].env.TOKEN: is a function"),
        "{}",
        text(&out.stderr)
    );
    let broken = dir.path().join("ecosystem.config.js");
    fs::write(&broken, "module.exports = { apps: [ {name: 'a' ").expect("write");
    let out = rtsup(&["import", "ecosystem.config.js"], &[], dir.path());
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("node could not evaluate"),
        "{}",
        text(&out.stderr)
    );
    let out = rtsup(&["import", "missing.yaml"], &[], dir.path());
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("missing.yaml"),
        "{}",
        text(&out.stderr)
    );

    let yaml = dir.path().join("eco.yaml");
    fs::write(
        &yaml,
        "apps:\n  - name: api\n    script: app.js\n    instances: max\n    pmx: true\n",
    )
    .expect("write");
    fs::write(dir.path().join("keep.toml"), "mine\n").expect("write");
    let out = rtsup(&["import", "eco.yaml", "-o", "keep.toml"], &[], dir.path());
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("keep.toml")).expect("read"),
        "mine\n"
    );
    let out = rtsup(&["import", "eco.yaml", "-o", "new.toml"], &[], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("apps[0].pmx: "),
        "{}",
        text(&out.stderr)
    );
    let (ok, msg) = harness::check_config(&dir.path().join("new.toml"));
    assert!(ok, "{msg}");
}

/// The environment a daemon started outside the harness needs (its socket and logs in `dir`).
fn daemon_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "RTSUP_CONTROL_SOCKET",
            dir.join("rtsup.sock").display().to_string(),
        ),
        ("RTSUP_LOG_DIR", dir.join("logs").display().to_string()),
        ("RTSUP_LOG", "info".to_string()),
    ]
}

/// `rtsup ARGS` in `dir`, for a daemon whose socket and logs are in `dir` ([`daemon_env`]).
fn rtsup_in(dir: &Path, args: &[&str]) -> Output {
    let env = daemon_env(dir);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    rtsup(args, &env, dir)
}

/// `rtsup stop` of the background daemon of `dir`, once `pid` is gone.
fn stop_background(dir: &Path, pid: u32) -> Output {
    let out = rtsup_in(dir, &["stop"]);
    wait_until("the background daemon gone", || {
        if harness::running(pid) {
            Err(format!("pid {pid} still runs"))
        } else {
            Ok(())
        }
    });
    out
}

fn pid_of(stdout: &str) -> u32 {
    stdout
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stdout}"))
}

#[test]
fn a_one_off_script_runs_in_the_background_and_is_written_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let block = ports::block(6);
    let (base, lb) = (block.base, block.base + 5);
    drop(block);
    let fixture = harness::fixture().display().to_string();
    let port = base.to_string();
    let listen = format!("127.0.0.1:{lb}");
    let out = rtsup_in(
        dir.path(),
        &[
            "start", &fixture, "-i", "2", "--name", "api", "--port", &port, "--listen", &listen,
            "-d",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    // Returned settled, with the table.
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("api ") && l.contains(" ready "))
            .count(),
        2,
        "{stdout}"
    );
    let pid = pid_of(&stdout);
    assert!(harness::alive(pid));
    let written = fs::read_to_string(dir.path().join("rtsup.toml")).expect("./rtsup.toml");
    assert!(written.contains("name = \"api\""), "{written}");
    assert!(http_get(lb, "/").is_ok_and(|b| b.contains("\"pid\"")));

    // A second -d finds it running.
    let again = rtsup_in(dir.path(), &["start", "-d"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already answers"),
        "{}",
        text(&again.stderr)
    );

    // A file the user wrote is never replaced by a one-off.
    fs::write(dir.path().join("rtsup.toml"), format!("# mine\n{written}")).expect("write");
    let refused = rtsup_in(dir.path(), &["start", &fixture, "--name", "other"]);
    assert!(!refused.status.success());
    assert!(
        fs::read_to_string(dir.path().join("rtsup.toml"))
            .expect("read")
            .starts_with("# mine")
    );

    let stop = stop_background(dir.path(), pid);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
}

#[test]
fn start_d_fails_when_a_worker_cannot_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = ports::block(2).base;
    let config = dir.path().join("crash.toml");
    fs::write(
        &config,
        format!(
            "{}\n",
            harness::fixture_app(
                "crashy",
                1,
                port,
                "max_restarts = 1\nrestart_delay = \"10ms\"\nenv = { FIXTURE_MODE = \"crash\" }"
            )
        ),
    )
    .expect("write");
    let out = rtsup_in(dir.path(), &["start", "-c", "crash.toml", "-d"]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("errored"), "{stdout}");
    assert!(
        text(&out.stderr).contains("errored"),
        "{}",
        text(&out.stderr)
    );
    stop_background(dir.path(), pid_of(&stdout));
}

#[test]
fn startup_installs_enables_and_starts_the_unit() {
    // Not under /tmp, which the unit makes private (startup refuses a config there): the
    // build's own temp dir, or the home directory when the checkout itself is under /tmp.
    let target_tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let base = if target_tmp.starts_with("/tmp") {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_dir() && !h.starts_with("/tmp"))
            .expect("a home directory outside /tmp")
    } else {
        target_tmp
    };
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    // A systemctl that records what it is asked.
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).expect("mkdir");
    let calls = dir.path().join("calls");
    let fake = bin.join("systemctl");
    fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", calls.display()),
    )
    .expect("write");
    Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let user = text(&Command::new("id").arg("-un").output().expect("id").stdout)
        .trim()
        .to_string();
    let config = dir.path().join("rtsup.toml");
    fs::write(
        &config,
        harness::fixture_app("api", 1, ports::block(2).base, ""),
    )
    .expect("write");
    let units = dir.path().join("units");
    let units_arg = units.display().to_string();
    let args = ["startup", "--user", &user, "--unit-dir", &units_arg];

    let dry = rtsup(
        &[&args[..], &["--dry-run"]].concat(),
        &[("PATH", &path)],
        dir.path(),
    );
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(
        !units.exists() && !calls.exists(),
        "a dry run changed something"
    );

    let out = rtsup(&args, &[("PATH", &path)], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let unit = fs::read_to_string(units.join("rtsup.service")).expect("the unit");
    let config = fs::canonicalize(&config).expect("canonical");
    assert!(
        unit.contains(&format!(
            "ExecStart={} start -c {}\n",
            harness::rtsup_bin(),
            config.display()
        )),
        "{unit}"
    );
    assert!(unit.contains(&format!("\nUser={user}\n")), "{unit}");
    assert_eq!(
        fs::read_to_string(&calls).expect("systemctl calls"),
        "daemon-reload\nenable --now rtsup.service\n"
    );
    let printed = text(&out.stdout);
    assert!(
        printed.contains("systemctl enable --now rtsup.service"),
        "{printed}"
    );

    // A configuration under /tmp (private to the service) is refused, nothing written.
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::copy(&config, tmp.path().join("rtsup.toml")).expect("copy");
    let _ = fs::remove_file(units.join("rtsup.service"));
    let refused = rtsup(&args, &[("PATH", &path)], tmp.path());
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("PrivateTmp"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!units.join("rtsup.service").exists());

    // A configuration rtsup refuses is never installed.
    fs::write(dir.path().join("rtsup.toml"), "[[app]]\nname = 1\n").expect("write");
    let _ = fs::remove_file(units.join("rtsup.service"));
    let bad = rtsup(&args, &[("PATH", &path)], dir.path());
    assert!(!bad.status.success());
    assert!(!units.join("rtsup.service").exists());
}

/// tmux on a server of its own (`-L`), so tests never touch a user's sessions.
fn tmux(server: &str, args: &[&str]) -> Output {
    Command::new("tmux")
        .arg("-L")
        .arg(server)
        .args(args)
        .output()
        .expect("tmux (scripts/setup.sh installs it)")
}

#[test]
fn monit_shows_every_worker_and_follows_the_selection() {
    let (r, lb) = harness::fixture_cluster("", "", None);
    for _ in 0..10 {
        let _ = http_get(lb, "/");
    }
    let server = format!("rtsup-monit-{}", std::process::id());
    let cmd = format!(
        "{} monit --socket {}",
        harness::rtsup_bin(),
        r.socket.display()
    );
    let started = tmux(
        &server,
        &[
            "new-session",
            "-d",
            "-s",
            "m",
            "-x",
            "160",
            "-y",
            "40",
            &cmd,
        ],
    );
    assert!(started.status.success(), "{}", text(&started.stderr));
    let pane = || text(&tmux(&server, &["capture-pane", "-p", "-t", "m"]).stdout);
    wait_until("both workers on screen, the first selected", || {
        let p = pane();
        if p.contains("> web:0")
            && p.contains("web:1")
            && p.contains("ready")
            && p.contains("log web:0")
        {
            Ok(())
        } else {
            Err(p)
        }
    });
    // The selected worker's log tail is shown.
    wait_until("web:0's log lines", || {
        let p = pane();
        if p.contains("fixture worker instance=0") {
            Ok(())
        } else {
            Err(p)
        }
    });
    tmux(&server, &["send-keys", "-t", "m", "Down"]);
    wait_until("web:1 selected with its log", || {
        let p = pane();
        if p.contains("> web:1")
            && p.contains("log web:1")
            && p.contains("fixture worker instance=1")
        {
            Ok(())
        } else {
            Err(p)
        }
    });
    tmux(&server, &["send-keys", "-t", "m", "q"]);
    wait_until("monit quit on q", || {
        if tmux(&server, &["has-session", "-t", "m"]).status.success() {
            Err(pane())
        } else {
            Ok(())
        }
    });
    let _ = tmux(&server, &["kill-server"]);
}

#[test]
fn metrics_carry_each_workers_own_labelled_by_app_and_instance() {
    let (r, lb) = harness::fixture_cluster("", "metrics_path = \"/metrics\"", None);
    for _ in 0..6 {
        let _ = http_get(lb, "/");
    }
    let admin = harness::admin_port(&r).expect("admin port");
    let body = wait_until("the workers' metrics in /metrics", || {
        let b = http_get(admin, "/metrics")?;
        if b.contains("fixture_port{app=\"web\",instance=\"1\"}") {
            Ok(b)
        } else {
            Err(b)
        }
    });
    // One family header for both workers; rtsup's own still there; the exposition ends once.
    assert_eq!(
        body.matches("# TYPE fixture_served counter").count(),
        1,
        "{body}"
    );
    assert!(
        body.contains("fixture_served_total{app=\"web\",instance=\"0\",kind=\"any\"}"),
        "{body}"
    );
    assert!(body.contains("rtsup_worker_metrics_failed 0"), "{body}");
    assert!(body.contains("rtsup_worker_up{"), "{body}");
    assert_eq!(body.matches("# EOF").count(), 1, "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    // The balancer counted the requests per worker.
    let served: u64 = r
        .workers()
        .iter()
        .map(|w| w["requests"].as_u64().unwrap_or(0))
        .sum();
    assert!(served >= 6, "{:?}", r.workers());
}
