//! Reloads at their edges, on the real binary: kill -9 of the old worker mid-rollout, a command
//! that cannot start, a reload that arrives during another, scaling 4 → 2 → 4 while retired
//! workers still hold their ports, and per-app start/stop/scale/restart from the CLI.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::{Rtsup, fixture_app, http_get, ports, running, wait_until};

fn pid_of(w: &Value) -> u32 {
    w["pid"].as_u64().expect("pid") as u32
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run `rtsup reload` on its own thread (it answers only once the rollout settled).
fn reload_in_background(r: &Rtsup) -> std::thread::JoinHandle<std::process::Output> {
    let socket = r.socket.clone();
    std::thread::spawn(move || {
        std::process::Command::new(crate::harness::rtsup_bin())
            .args(["reload", "--socket"])
            .arg(socket)
            .output()
            .expect("rtsup reload")
    })
}

/// Wait for a worker of app 0 in state "starting"; returns the status.
fn wait_starting(r: &Rtsup) -> Vec<Value> {
    wait_until("a replacement starting", || {
        let ws = r.workers();
        if ws.iter().any(|w| w["state"] == "starting") {
            Ok(ws)
        } else {
            Err(Value::from(ws).to_string())
        }
    })
}

#[test]
fn kill_9_of_the_old_worker_while_its_replacement_starts_does_not_hang_the_reload() {
    let base = ports::block(4).base;
    let r = Rtsup::start(&fixture_app("web", 2, base, ""));
    let before = r.wait_all_ready();
    // The new workers boot slowly, so there is time to kill the old one in between.
    r.rewrite(&fixture_app(
        "web",
        2,
        base,
        "env = { FIXTURE_LISTEN_DELAY_MS = \"1500\" }",
    ));
    let reload = reload_in_background(&r);
    wait_starting(&r);
    kill(Pid::from_raw(pid_of(&before[0]) as i32), Signal::SIGKILL).expect("kill -9");
    let out = reload.join().expect("reload thread");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("reload: 2 replaced"), "{}", text(&out));
    let s = r.try_status().expect("status");
    assert_eq!(s["reloading"], false, "{s}");
    let after = r.wait_all_ready();
    assert!(after.iter().all(|w| w["generation"].as_u64() >= Some(2)));
    // And a second reload answers too.
    let again = r.cli(&["reload"]);
    assert!(again.status.success(), "{}", text(&again));
}

#[test]
fn a_reload_whose_command_cannot_start_fails_and_keeps_the_old_spec() {
    let base = ports::block(4).base;
    let r = Rtsup::start(&fixture_app("web", 2, base, ""));
    let before = r.wait_all_ready();
    let good = std::fs::read_to_string(&r.config).expect("config");
    std::fs::write(
        &r.config,
        good.replace("command = \"node\"", "command = \"nodee\""),
    )
    .expect("typo");
    let out = r.cli(&["reload"]);
    assert!(!out.status.success(), "a failed reload exits non-zero");
    let t = text(&out);
    assert!(
        t.contains("web:0  failed     spawn nodee: No such file or directory"),
        "{t}"
    );
    assert!(t.contains("web:1  skipped"), "{t}");
    let after = r.wait_all_ready();
    assert_eq!(
        after.iter().map(pid_of).collect::<Vec<_>>(),
        before.iter().map(pid_of).collect::<Vec<_>>(),
        "the old workers keep serving"
    );
    // The broken spec is not installed: a crash restart still runs `node`.
    kill(Pid::from_raw(pid_of(&before[1]) as i32), Signal::SIGKILL).expect("kill -9");
    wait_until("slot 1 restarted with the old spec", || {
        let ws = r.workers();
        if ws[1]["state"] == "ready" && ws[1]["pid"] != before[1]["pid"] {
            Ok(())
        } else {
            Err(Value::from(ws).to_string())
        }
    });
    assert!(http_get(base + 1, "/health").is_ok() || http_get(base + 3, "/health").is_ok());
}

#[test]
fn a_reload_during_a_reload_supersedes_it_and_both_are_answered() {
    let base = ports::block(6).base;
    let r = Rtsup::start(&fixture_app("web", 3, base, ""));
    r.wait_all_ready();
    r.rewrite(&fixture_app(
        "web",
        3,
        base,
        "env = { FIXTURE_TAG = \"v1\", FIXTURE_LISTEN_DELAY_MS = \"800\" }",
    ));
    let first = reload_in_background(&r);
    wait_starting(&r);
    r.rewrite(&fixture_app(
        "web",
        3,
        base,
        "env = { FIXTURE_TAG = \"v2\" }",
    ));
    r.signal(Signal::SIGHUP);
    let out = first.join().expect("reload thread");
    assert!(out.status.success(), "{}", text(&out));
    // The latest configuration wins: every worker ends on v2.
    wait_until("every worker on v2", || {
        let s = r.try_status()?;
        let ws = s["apps"][0]["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let tags: Vec<String> = ws
            .iter()
            .map(|w| {
                let port = w["port"].as_u64().unwrap_or_default() as u16;
                http_get(port, "/").unwrap_or_default()
            })
            .collect();
        if s["reloading"] == false
            && ws.len() == 3
            && ws.iter().all(|w| w["state"] == "ready")
            && tags.iter().all(|t| t.contains("\"tag\":\"v2\""))
        {
            Ok(())
        } else {
            Err(format!("{s} {tags:?}"))
        }
    });
    assert!(
        r.daemon_log().contains("SIGHUP"),
        "the signal went through the same reload path"
    );
}

#[test]
fn scaling_4_2_4_while_retired_workers_hold_their_ports_never_clashes() {
    // Retired workers still hold ports, so new ones may go past the app's own range.
    let base = ports::block(16).base;
    // Old workers linger 3 s after SIGTERM, keeping their ports busy.
    let linger = "env = { FIXTURE_TERM_DELAY_MS = \"3000\" }\nkill_timeout = \"5s\"";
    let r = Rtsup::start(&fixture_app("web", 4, base, linger));
    r.wait_all_ready();
    r.rewrite(&fixture_app("web", 2, base, linger));
    let down = r.cli(&["reload"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        text(&down).contains("reload: 2 removed, 2 replaced"),
        "{}",
        text(&down)
    );
    r.rewrite(&fixture_app("web", 4, base, linger));
    let up = r.cli(&["reload"]);
    assert!(up.status.success(), "{}", text(&up));
    // Slots 2 and 3 were retired (their old workers still drain): they come back as added.
    let t = text(&up);
    assert!(
        t.contains("web:2  added") && t.contains("web:3  added"),
        "{t}"
    );
    let ws = wait_until("4 ready workers, retired ones gone", || {
        let ws = r.workers();
        if ws.len() == 4 && ws.iter().all(|w| w["state"] == "ready") {
            Ok(ws)
        } else {
            Err(Value::from(ws).to_string())
        }
    });
    let mut ports: Vec<u64> = ws.iter().filter_map(|w| w["port"].as_u64()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4, "{ws:?}");
    for w in &ws {
        assert!(
            !w["last_exit"]
                .as_str()
                .unwrap_or_default()
                .contains("EADDRINUSE"),
            "{ws:?}"
        );
        let port = w["port"].as_u64().unwrap_or_default() as u16;
        assert!(http_get(port, "/health").is_ok(), "{w}");
    }
}

#[test]
fn one_app_starts_stops_scales_and_restarts_while_the_daemon_runs() {
    let base = ports::block(12).base;
    let r = Rtsup::start(&format!(
        "{}{}",
        fixture_app("web", 1, base, ""),
        fixture_app("api", 2, base + 4, "")
    ));
    r.wait_all_ready();
    let out = r.cli(&["stop", "api"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("stop: 2 stopped"), "{}", text(&out));
    let s = r.try_status().expect("status");
    assert_eq!(
        s["apps"][0]["workers"][0]["state"], "ready",
        "web untouched: {s}"
    );
    assert!(
        s["apps"][1]["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().all(|w| w["state"] == "stopped")),
        "{s}"
    );
    let out = r.cli(&["start", "api"]);
    assert!(text(&out).contains("start: 2 started"), "{}", text(&out));
    let out = r.cli(&["scale", "api", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 added"), "{}", text(&out));
    let before: Vec<u32> = r.try_status().expect("status")["apps"][1]["workers"]
        .as_array()
        .map(|ws| ws.iter().map(pid_of).collect())
        .unwrap_or_default();
    let out = r.cli(&["restart", "api"]);
    assert!(text(&out).contains("restart: 3 replaced"), "{}", text(&out));
    let out = r.cli(&["restart", "api", "--force"]);
    assert!(text(&out).contains("restart: 3 replaced"), "{}", text(&out));
    for p in before {
        wait_until("old api worker gone", || {
            if running(p) {
                Err(format!("{p}"))
            } else {
                Ok(())
            }
        });
    }
    let out = r.cli(&["restart", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no app named \"nope\""),
        "{}",
        text(&out)
    );
    let out = r.cli(&["scale", "api", "1"]);
    assert!(text(&out).contains("2 removed"), "{}", text(&out));
}

#[test]
fn apps_come_and_go_on_reload() {
    let base = ports::block(8).base;
    let r = Rtsup::start(&fixture_app("web", 1, base, ""));
    r.wait_all_ready();
    r.rewrite(&format!(
        "{}{}",
        fixture_app("web", 1, base, ""),
        fixture_app("api", 1, base + 4, "")
    ));
    let out = r.cli(&["reload"]);
    assert!(text(&out).contains("api:0  added"), "{}", text(&out));
    assert!(http_get(base + 4, "/health").is_ok());
    r.rewrite(&fixture_app("api", 1, base + 4, ""));
    let out = r.cli(&["reload"]);
    assert!(text(&out).contains("web:0  removed"), "{}", text(&out));
    wait_until("web gone", || {
        let s = r.try_status()?;
        let names: Vec<String> = s["apps"]
            .as_array()
            .map(|a| a.iter().map(|x| x["name"].to_string()).collect())
            .unwrap_or_default();
        if names == vec!["\"api\"".to_string()] {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
}

#[test]
fn status_shows_no_reload_and_every_request_is_answered_after_a_failed_one() {
    // A reload that fails does not leave the daemon "reloading".
    let base = ports::block(2).base;
    let r = Rtsup::start(&fixture_app("web", 1, base, "listen_timeout = \"1s\""));
    r.wait_all_ready();
    r.rewrite(&fixture_app(
        "web",
        1,
        base,
        "listen_timeout = \"1s\"\nenv = { FIXTURE_MODE = \"never-ready\" }",
    ));
    let out = r.cli(&["reload"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not ready within 1s"), "{}", text(&out));
    let s = r.try_status().expect("status");
    assert_eq!(s["reloading"], false, "{s}");
    let table = r.cli(&["status"]);
    assert!(
        !text(&table).contains("rolling reload in progress"),
        "{}",
        text(&table)
    );
}
