//! Supervision: workers start on consecutive ports, crashes are replaced, crash loops end
//! `errored`, memory hogs are restarted, stop leaves nothing behind.

use std::fs;
use std::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::{self, Rtsup, fixture_app, http_get, ports, running, wait_until};

fn pid(w: &Value) -> u32 {
    w["pid"].as_u64().expect("pid") as u32
}

#[test]
fn three_workers_reach_ready_on_consecutive_ports() {
    let base = ports::block(6).base;
    let r = Rtsup::start(&fixture_app("web", 3, base, "ready = \"http:/health\""));
    let workers = r.wait_all_ready();
    assert_eq!(workers.len(), 3);
    for (i, w) in workers.iter().enumerate() {
        let port = base + i as u16;
        assert_eq!(w["port"], port);
        assert_eq!(w["restarts"], 0);
        assert_eq!(w["generation"], 1);
        let body: Value = serde_json::from_str(&http_get(port, "/").expect("GET /")).expect("json");
        assert_eq!(body["instance"], i.to_string());
        assert_eq!(body["nodeAppInstance"], i.to_string());
        assert_eq!(body["pid"].as_u64(), w["pid"].as_u64());
    }
    // Output lands in per-slot, timestamped log files.
    let out = r.log_dir.join("web-2.out.log");
    let text = wait_until("worker 2's stdout in its log", || {
        let t = fs::read_to_string(&out).map_err(|e| e.to_string())?;
        if t.contains("fixture worker instance=2") {
            Ok(t)
        } else {
            Err(t)
        }
    });
    assert!(text.starts_with("20"), "no timestamp: {text}");
    let err = fs::read_to_string(r.log_dir.join("web-0.err.log")).expect("err log");
    assert!(err.contains("fixture stderr instance=0"), "{err}");
    // The human table has a row per worker.
    let table = String::from_utf8_lossy(&r.cli(&["status"]).stdout).into_owned();
    assert_eq!(
        table.lines().filter(|l| l.starts_with("web ")).count(),
        3,
        "{table}"
    );
    // `rtsup logs` reads the files without the daemon's help.
    let logs = std::process::Command::new(harness::rtsup_bin())
        .args(["logs", "-n", "5", "-c"])
        .arg(&r.config)
        .arg("web:1")
        .output()
        .expect("logs");
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("fixture worker instance=1"), "{logs}");
    assert!(logs.contains("fixture stderr instance=1"), "{logs}");
}

#[test]
fn kill_9_is_replaced_with_a_new_ready_worker() {
    let base = ports::block(4).base;
    let r = Rtsup::start(&fixture_app("web", 2, base, ""));
    let before = r.wait_all_ready();
    let victim = pid(&before[1]);
    let killed_at = Instant::now();
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("kill -9");
    let after = wait_until("slot 1 replaced and ready", || {
        let ws = r.workers();
        let w = &ws[1];
        if w["state"] == "ready" && w["pid"].as_u64() != Some(u64::from(victim)) {
            Ok(ws)
        } else {
            Err(w.to_string())
        }
    });
    eprintln!("crash-to-ready: {:?}", killed_at.elapsed());
    assert_eq!(after[1]["restarts"], 1);
    let last = after[1]["last_exit"].as_str().unwrap_or_default();
    assert!(last.starts_with("signal 9 (SIGKILL)"), "{last}");
    assert!(http_get(base + 1, "/health").is_ok());
    // The other slot was not touched.
    assert_eq!(after[0]["pid"], before[0]["pid"]);
    assert_eq!(after[0]["restarts"], 0);
}

#[test]
fn a_crash_loop_ends_errored_after_max_restarts() {
    let base = ports::block(2).base;
    let r = Rtsup::start(&fixture_app(
        "crashy",
        1,
        base,
        "env = { FIXTURE_MODE = \"crash\" }\nrestart_delay = \"10ms\"\nmax_restarts = 3\nmin_uptime = \"5s\"",
    ));
    let w = wait_until("the slot to be errored", || {
        let ws = r.workers();
        if ws[0]["state"] == "errored" {
            Ok(ws[0].clone())
        } else {
            Err(ws[0].to_string())
        }
    });
    assert_eq!(w["restarts"], 3, "{w}");
    let last = w["last_exit"].as_str().unwrap_or_default();
    assert!(
        last.starts_with("exit code 1; stderr: fixture stderr"),
        "the exit and the worker's last stderr line: {last}"
    );
    assert!(w["pid"].is_null());
    // The table says why and how to recover; the daemon's log said it when it happened.
    let table = String::from_utf8_lossy(&r.cli(&["status"]).stdout).into_owned();
    assert!(
        table.contains(
            "crashy:0 is errored after 3 restart(s): exit code 1; stderr: fixture stderr"
        ) && table.contains("rtsup restart crashy:0"),
        "{table}"
    );
    assert!(
        r.daemon_log().contains("slot errored"),
        "{}",
        r.daemon_log()
    );
    // An operator restart gives it a fresh chance; it crashes again, and says so.
    let out = r.cli(&["restart", "crashy:0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("crashy:0  failed     exit code 1") && err.contains("restart: 1 failed"),
        "{err}"
    );
    wait_until("restarted after errored", || {
        let w = r.workers()[0].clone();
        if w["restarts"].as_u64() > Some(3) {
            Ok(())
        } else {
            Err(w.to_string())
        }
    });
}

#[test]
fn a_worker_that_never_listens_is_restarted_after_listen_timeout() {
    let base = ports::block(2).base;
    let r = Rtsup::start(&fixture_app(
        "mute",
        1,
        base,
        "env = { FIXTURE_MODE = \"never-ready\" }\nlisten_timeout = \"300ms\"\nkill_timeout = \"1s\"",
    ));
    let w = wait_until("a readiness failure", || {
        let w = r.workers()[0].clone();
        let reason = w["last_exit"].as_str().unwrap_or_default().to_string();
        if reason.starts_with("not ready within 300ms") {
            Ok(w)
        } else {
            Err(w.to_string())
        }
    });
    assert!(w["restarts"].as_u64() <= Some(1), "{w}");
}

#[test]
fn a_worker_over_max_memory_is_restarted() {
    let base = ports::block(2).base;
    let r = Rtsup::start(&fixture_app(
        "hog",
        1,
        base,
        "env = { FIXTURE_LEAK_MB = \"20\" }\nmax_memory = \"200MB\"",
    ));
    let first = pid(&r.wait_all_ready()[0]);
    let w = wait_until("a memory restart", || {
        let w = r.workers()[0].clone();
        let reason = w["last_exit"].as_str().unwrap_or_default();
        if reason.starts_with("replaced: memory") && w["pid"].as_u64() != Some(u64::from(first)) {
            Ok(w)
        } else {
            Err(w.to_string())
        }
    });
    assert!(w["restarts"].as_u64() >= Some(1), "{w}");
    wait_until("the old hog gone", || {
        if running(first) {
            Err(format!("{first} alive"))
        } else {
            Ok(())
        }
    });
}

#[test]
fn restart_replaces_only_the_named_slot() {
    let base = ports::block(4).base;
    let r = Rtsup::start(&fixture_app("web", 2, base, ""));
    let before = r.wait_all_ready();
    let out = r.cli(&["restart", "web:1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("slot 1 restarted", || {
        let ws = r.workers();
        if ws[1]["state"] == "ready" && ws[1]["pid"] != before[1]["pid"] {
            Ok(())
        } else {
            Err(ws[1].to_string())
        }
    });
    let after = r.workers();
    assert_eq!(after[0]["pid"], before[0]["pid"]);
    assert_eq!(after[1]["restarts"], 1);
    // Bad targets are clear errors.
    let out = r.cli(&["restart", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no app named \"nope\""));
    let out = r.cli(&["restart", "web:9"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no slot 9"));
}

/// Pids of every worker and of the child each fixture spawned (from its stdout log).
fn worker_tree(r: &Rtsup, instances: u16) -> Vec<u32> {
    let mut pids: Vec<u32> = r.wait_all_ready().iter().map(pid).collect();
    for slot in 0..instances {
        let log = r.log_dir.join(format!("tree-{slot}.out.log"));
        let child: u32 = wait_until("the fixture's child pid", || {
            let t = fs::read_to_string(&log).map_err(|e| e.to_string())?;
            t.lines()
                .find_map(|l| l.split("child pid=").nth(1))
                .and_then(|p| p.trim().parse().ok())
                .ok_or(t)
        });
        pids.push(child);
    }
    pids
}

#[test]
fn stop_leaves_no_process_of_any_group_alive() {
    let base = ports::block(4).base;
    let mut r = Rtsup::start(&fixture_app(
        "tree",
        2,
        base,
        "env = { FIXTURE_CHILD = \"1\" }",
    ));
    let pids = worker_tree(&r, 2);
    assert!(pids.iter().all(|&p| running(p)));
    let out = r.cli(&["stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r.wait_exit(), Some(0));
    for p in pids {
        wait_until("process gone", || {
            if running(p) {
                Err(format!("{p} alive"))
            } else {
                Ok(())
            }
        });
    }
    assert!(!r.socket.exists(), "control socket left behind");
}

#[test]
fn sigterm_stops_workers_and_exits_zero() {
    let base = ports::block(4).base;
    let mut r = Rtsup::start(&fixture_app(
        "tree",
        2,
        base,
        "env = { FIXTURE_CHILD = \"1\" }",
    ));
    let pids = worker_tree(&r, 2);
    r.signal(Signal::SIGTERM);
    assert_eq!(r.wait_exit(), Some(0));
    for p in pids {
        wait_until("process gone", || {
            if running(p) {
                Err(format!("{p} alive"))
            } else {
                Ok(())
            }
        });
    }
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    let base = ports::block(2).base;
    let r = Rtsup::start(&fixture_app("web", 1, base, ""));
    r.wait_all_ready();
    let out = std::process::Command::new(harness::rtsup_bin())
        .args(["start", "-c"])
        .arg(&r.config)
        .output()
        .expect("second start");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another rtsup daemon"));
    // The first one is unharmed.
    assert_eq!(r.workers()[0]["state"], "ready");
}

#[test]
fn a_hung_worker_is_detected_and_replaced() {
    // Accepts connections but stops answering half a second after it starts listening.
    let base = ports::block(4).base;
    let r = Rtsup::start(&fixture_app(
        "hang",
        1,
        base,
        "env = { FIXTURE_HANG_AFTER_MS = \"500\" }\nready = \"http:/health\"\nhealth_interval = \"200ms\"\nhealth_timeout = \"200ms\"\nhealth_failures = 2\ndrain_timeout = \"1s\"",
    ));
    let first = pid(&r.wait_all_ready()[0]);
    let w = wait_until("the hung worker replaced", || {
        let w = r.workers()[0].clone();
        let reason = w["last_exit"].as_str().unwrap_or_default();
        if reason.starts_with("replaced: unresponsive")
            && w["pid"].as_u64() != Some(u64::from(first))
        {
            Ok(w)
        } else {
            Err(w.to_string())
        }
    });
    assert!(w["restarts"].as_u64() >= Some(1), "{w}");
    wait_until("the hung worker gone", || {
        if running(first) {
            Err(format!("{first} alive"))
        } else {
            Ok(())
        }
    });
}

/// One GET through the proxy on a fresh connection: `Ok(true)` served 200, `Ok(false)` never
/// served (connection refused, or closed before a byte: not accepted), `Err` a failed answer.
fn one_request(port: u16) -> Result<bool, String> {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return Ok(false);
    };
    let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    if c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return Ok(false);
    }
    let mut resp = Vec::new();
    let _ = c.read_to_end(&mut resp);
    if resp.is_empty() {
        return Ok(false);
    }
    let text = String::from_utf8_lossy(&resp);
    if text.starts_with("HTTP/1.1 200") && text.contains("\"pid\"") {
        Ok(true)
    } else {
        Err(text.lines().next().unwrap_or_default().to_string())
    }
}

#[test]
fn stopping_under_load_fails_no_request_the_proxy_accepted() {
    let block = ports::block(5);
    let (base, lb) = (block.base, block.base + 4);
    drop(block);
    let mut r = Rtsup::start(&format!(
        "{}\n[balancer]\nlisten = \"127.0.0.1:{lb}\"\nthreads = 1\n",
        fixture_app("web", 2, base, "")
    ));
    r.wait_all_ready();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut served, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match one_request(lb) {
                        Ok(true) => served += 1,
                        Ok(false) => std::thread::sleep(std::time::Duration::from_millis(5)),
                        Err(e) => failed.push(e),
                    }
                }
                (served, failed)
            })
        })
        .collect();
    wait_until("requests flowing", || {
        one_request(lb).and_then(|ok| if ok { Ok(()) } else { Err("not yet".into()) })
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    r.signal(Signal::SIGTERM);
    assert_eq!(r.wait_exit(), Some(0));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut served, mut failed) = (0, Vec::new());
    for l in loops {
        let (s, f) = l.join().expect("load thread");
        served += s;
        failed.extend(f);
    }
    eprintln!("served {served}, failed {}", failed.len());
    assert!(served > 20, "the load ran: {served}");
    assert!(
        failed.is_empty(),
        "requests the proxy accepted must be answered: {} failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

#[test]
fn a_request_its_worker_refuses_is_served_by_another_with_one_forwarded_for() {
    // A worker that is alive but refuses connections (its listener closed): the supervisor
    // still has it ready (no passive ejection), so each proxy thread's round-robin aims some
    // of these requests at it; each is retried on the other worker, and the retry forwards
    // the client's address once, not once per attempt.
    let (r, lb) = harness::fixture_cluster("", "", None);
    let base = lb - 4;
    assert!(http_get(base, "/unlisten").is_ok());
    wait_until(
        "worker 0 refusing connections",
        || match std::net::TcpStream::connect(("127.0.0.1", base)) {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".into()),
        },
    );
    for i in 0..6 {
        let answer = harness::roundtrip(
            lb,
            "GET /headers HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n\
             Connection: close\r\n\r\n",
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {answer}");
        assert!(
            format!("\r\n{}\r\n", head.to_ascii_lowercase())
                .contains("\r\nx-fixture-instance: 1\r\n"),
            "request {i} not served by worker 1: {head}"
        );
        let headers: Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("request {i}: {e}: {body}"));
        assert_eq!(
            headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1",
            "request {i}"
        );
    }
    // The supervisor has not replaced it (its health checks need 3 failures 5 s apart): the
    // requests above met a live worker that refused them.
    assert_eq!(r.workers()[0]["restarts"], 0);
}

/// Peak resident memory (VmHWM, bytes) of a live process.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn a_worker_leaking_100mb_per_second_never_passes_its_ceiling() {
    let base = ports::block(2).base;
    // 10 MB every 100 ms; max_memory 300 MB, so the default ceiling is 450 MB. Workers take
    // 4 s to boot, so the leaking one keeps serving (and growing) while its replacement
    // starts: the ceiling, not the replacement, must end it.
    let r = Rtsup::start(&fixture_app(
        "leak",
        1,
        base,
        "env = { FIXTURE_LEAK_MB = \"10\", FIXTURE_LISTEN_DELAY_MS = \"4000\" }\nmax_memory = \"300MB\"\nlisten_timeout = \"10s\"",
    ));
    let first = pid(&r.wait_all_ready()[0]);
    let mut peak = 0u64;
    let mut over_limit_seen_draining = false;
    wait_until("the leaking worker stopped", || {
        if let Some(p) = peak_rss(first) {
            peak = peak.max(p);
        }
        let ws = r.workers();
        over_limit_seen_draining |= ws
            .iter()
            .any(|w| w["pid"].as_u64() == Some(u64::from(first)) && w["state"] == "draining");
        if running(first) {
            Err(format!("peak so far {peak}: {}", Value::from(ws)))
        } else {
            Ok(())
        }
    });
    eprintln!(
        "peak RSS of the leaking worker: {:.1} MB",
        peak as f64 / 1e6
    );
    assert!(
        peak <= 450_000_000,
        "peak {:.1} MB past the 450 MB ceiling; daemon log:\n{}",
        peak as f64 / 1e6,
        r.daemon_log()
    );
    assert!(
        over_limit_seen_draining,
        "over max_memory, the worker takes no new sessions (draining) at once"
    );
    let log = r.daemon_log();
    assert!(
        log.contains("ceiling 450.0MB"),
        "the reason names the ceiling:\n{log}"
    );
}

#[test]
fn a_stranger_on_the_port_is_avoided_and_never_taken_for_the_worker() {
    let block = ports::block(4);
    let base = block.base;
    drop(block);
    // Before the spawn: a program already listens on the slot's port (on another loopback
    // address, so only the wildcard check sees it): the worker goes elsewhere, and says why.
    let stranger = std::net::TcpListener::bind(("127.0.0.2", base)).expect("stranger");
    let r = Rtsup::start(&fixture_app("web", 1, base, "listen_timeout = \"3s\""));
    let ws = r.wait_all_ready();
    assert_ne!(ws[0]["port"], u64::from(base), "{ws:?}");
    let why = ws[0]["last_exit"].as_str().unwrap_or_default().to_string();
    assert!(
        why.starts_with(&format!("port {base} in use by pid {}", std::process::id())),
        "{why}"
    );
    drop(stranger);
    drop(r);

    // A stranger on IPv6 only: a Node worker's listen(PORT) binds `::` and would clash.
    let base = ports::block(4).base;
    let v6 = std::net::TcpListener::bind(("::1", base));
    if let Ok(_v6) = v6 {
        let r = Rtsup::start(&fixture_app("web6", 1, base, ""));
        let ws = r.wait_all_ready();
        assert_ne!(ws[0]["port"], u64::from(base), "{ws:?}");
    }

    // After the spawn: a worker that never listens, and a stranger who takes its port while
    // it boots; the probe reaches the stranger, who must not pass for the worker.
    let base = ports::block(4).base;
    let r = Rtsup::start(&fixture_app(
        "mute",
        1,
        base,
        "env = { FIXTURE_MODE = \"never-ready\" }\nlisten_timeout = \"3s\"",
    ));
    let port = wait_until("the worker starting", || {
        let ws = r.workers();
        match ws.first() {
            Some(w) if w["state"] == "starting" => Ok(w["port"].as_u64().unwrap_or(0) as u16),
            _ => Err(Value::from(ws).to_string()),
        }
    });
    let _stranger = std::net::TcpListener::bind(("127.0.0.1", port)).expect("take the port");
    let w = wait_until("the stranger named", || {
        let w = r.workers()[0].clone();
        let last = w["last_exit"].as_str().unwrap_or_default();
        if last.contains("not by this worker") {
            Ok(w)
        } else {
            Err(w.to_string())
        }
    });
    assert!(
        w["last_exit"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("held by pid {}", std::process::id()))),
        "{w}"
    );
    assert!(!r.daemon_log().contains("\"to\":\"ready\""), "never ready");
}

#[test]
fn kill_9_of_rtsup_leaves_no_worker_and_the_next_start_stops_what_remains() {
    let base = ports::block(4).base;
    let mut r = Rtsup::start(&fixture_app(
        "orphan",
        2,
        base,
        "env = { FIXTURE_CHILD = \"1\" }",
    ));
    let leaders: Vec<u32> = r.wait_all_ready().iter().map(pid).collect();
    // Each worker forked a `sleep` of its own (same process group), as a Node cluster would.
    let children: Vec<u32> = wait_until("the workers' children", || {
        let mut found = Vec::new();
        for slot in 0..2 {
            let out = fs::read_to_string(r.log_dir.join(format!("orphan-{slot}.out.log")))
                .unwrap_or_default();
            if let Some(p) = out
                .lines()
                .find_map(|l| l.split("child pid=").nth(1))
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                found.push(p);
            }
        }
        if found.len() == 2 {
            Ok(found)
        } else {
            Err(format!("{found:?}"))
        }
    });
    r.signal(Signal::SIGKILL);
    assert_eq!(r.wait_exit(), None, "killed by a signal");
    // The kernel's parent-death signal stops the workers themselves.
    for &p in &leaders {
        wait_until("a worker gone after its supervisor died", || {
            if running(p) {
                Err(format!("{p} alive"))
            } else {
                Ok(())
            }
        });
    }
    // Their own children are beyond its reach; the next start stops them and says so.
    assert!(
        children.iter().all(|&c| running(c)),
        "the children outlive it"
    );
    // ...and only them: another daemon's worker listed in the file (by mistake or on
    // purpose) is not touched.
    let other = Rtsup::start(&fixture_app("other", 1, ports::block(2).base, ""));
    let stranger = pid(&other.wait_all_ready()[0]);
    let mut state = r.socket.as_os_str().to_owned();
    state.push(".pids");
    let listed = fs::read_to_string(&state).unwrap_or_default();
    fs::write(&state, format!("{listed}{stranger}\n")).expect("state file");
    r.start_again();
    for &c in &children {
        wait_until("a leftover child stopped", || {
            if running(c) {
                Err(format!("{c} alive"))
            } else {
                Ok(())
            }
        });
    }
    assert!(
        r.daemon_log().contains("left by a previous rtsup run"),
        "{}",
        r.daemon_log()
    );
    let ws = r.wait_all_ready();
    assert_eq!(
        ws[0]["port"],
        u64::from(base),
        "its port is free again: {ws:?}"
    );
    assert!(running(stranger), "another daemon's worker survives");
    assert_eq!(other.workers()[0]["pid"], u64::from(stranger));
}

#[test]
fn logs_merge_workers_and_supervisor_events_by_time_without_colours_or_double_stamps() {
    let base = ports::block(4).base;
    let r = Rtsup::start(&fixture_app(
        "web",
        2,
        base,
        "env = { FIXTURE_FANCY = \"1\" }",
    ));
    let ws = r.wait_all_ready();
    wait_until("the fancy lines written", || {
        let t = fs::read_to_string(r.log_dir.join("web-1.out.log")).unwrap_or_default();
        if t.contains("fancy line instance=1") {
            Ok(())
        } else {
            Err(t)
        }
    });
    // Stored as read: one timestamp (rtsup's), no escape sequences.
    let stored = fs::read_to_string(r.log_dir.join("web-0.out.log")).expect("log");
    let fancy = stored
        .lines()
        .find(|l| l.contains("fancy line"))
        .expect("fancy line");
    assert!(!stored.contains('\u{1b}'), "{stored:?}");
    let after_stamp = fancy
        .split_once(' ')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    assert_eq!(after_stamp, "info: fancy line instance=0", "{fancy}");
    // `rtsup logs web`: every worker's lines and the supervisor's events, merged by time.
    let out = r.cli(&["logs", "-n", "200", "web"]);
    let logs = String::from_utf8_lossy(&out.stdout).into_owned();
    let spawned = format!("slot 1: worker 1 spawned: pid {}", ws[1]["pid"]);
    let lines: Vec<&str> = logs.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} missing from:\n{logs}"))
    };
    let (event, ready, output) = (
        at(&spawned),
        at("slot 1: worker 1 ready"),
        at("fancy line instance=1"),
    );
    assert!(
        lines[event].starts_with("web rtsup | 20"),
        "{}",
        lines[event]
    );
    assert!(
        lines[output].starts_with("web:1 out | 20"),
        "{}",
        lines[output]
    );
    assert!(event < output && event < ready, "merged by time:\n{logs}");
    let stamps: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split(" | ").nth(1))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort();
    assert_eq!(stamps, sorted, "in time order:\n{logs}");
    // One slot: its own events only.
    let one = r.cli(&["logs", "-n", "200", "web:0"]);
    let one = String::from_utf8_lossy(&one.stdout).into_owned();
    assert!(one.contains("slot 0: worker 1 ready"), "{one}");
    assert!(!one.contains("slot 1:"), "{one}");
}

#[test]
fn logs_read_on_into_rotated_files() {
    let base = ports::block(2).base;
    // Small files: 400 lines rotate through several of them.
    let r = Rtsup::start(&format!(
        "log_max_size = \"4KB\"\nlog_keep = 9\n# (in [supervisor])\n\n{}",
        fixture_app("web", 1, base, "env = { FIXTURE_LINES = \"400\" }")
    ));
    r.wait_all_ready();
    wait_until("400 lines written", || {
        let t = fs::read_to_string(r.log_dir.join("web-0.out.log")).unwrap_or_default();
        if t.contains("line 400") {
            Ok(())
        } else {
            Err(t)
        }
    });
    assert!(r.log_dir.join("web-0.out.log.1").exists(), "rotated");
    let out = r.cli(&["logs", "-n", "300", "web:0"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let numbers: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split("line ").nth(1))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let first = numbers.first().copied().unwrap_or(0);
    // (a few of the 300 are the supervisor's events, merged in by time)
    assert!(
        first <= 110,
        "300 lines back reach into the rotated files: {numbers:?}"
    );
    assert_eq!(
        numbers,
        (first..=400).collect::<Vec<_>>(),
        "contiguous, in order"
    );
}

#[test]
fn kill_signal_is_the_signal_that_stops_a_worker() {
    let base = ports::block(3).base;
    let r = Rtsup::start(&fixture_app("web", 1, base, "kill_signal = \"SIGINT\""));
    r.wait_all_ready();
    let out = r.cli(&["restart", "web", "--force"]);
    assert!(out.status.success(), "{out:?}");
    let log = wait_until("the old worker told to stop", || {
        let t = fs::read_to_string(r.log_dir.join("web-0.out.log")).unwrap_or_default();
        if t.contains("got ") { Ok(t) } else { Err(t) }
    });
    assert!(
        log.contains("got SIGINT") && !log.contains("got SIGTERM"),
        "{log}"
    );
    // A signal a worker cannot handle is refused, with its place.
    let (ok, text, conf) = crate::harness::check_body(
        "[[app]]\nname = \"a\"\ncommand = \"node\"\nport = 5001\nkill_signal = \"KILL\"\n",
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "{}:5:15: app[0].kill_signal: SIGKILL cannot be handled by a worker",
            conf.display()
        )),
        "{text}"
    );
}

#[test]
fn env_file_and_increment_var_set_each_workers_environment() {
    let base = ports::block(5).base;
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("app.env");
    fs::write(
        &env_file,
        "# PM2-style dotenv\nFOO=from-file\nBAR=file\nCOUNTER=10\nQUOTED=\"a b\"\n",
    )
    .expect("env file");
    let r = Rtsup::start(&fixture_app(
        "web",
        2,
        base,
        &format!(
            "env_file = {:?}\nincrement_var = \"COUNTER\"\nenv = {{ BAR = \"from-env\" }}",
            env_file.display().to_string()
        ),
    ));
    let ws = r.wait_all_ready();
    for w in &ws {
        let slot = w["slot"].as_u64().expect("slot");
        let port = w["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("port");
        let env: Value =
            serde_json::from_str(&http_get(port, "/env").expect("GET /env")).expect("json");
        assert_eq!(env["FOO"], "from-file", "{env}");
        assert_eq!(env["BAR"], "from-env", "env wins over env_file: {env}");
        assert_eq!(env["QUOTED"], "a b", "{env}");
        assert_eq!(
            env["COUNTER"],
            (10 + slot).to_string(),
            "slot {slot}: {env}"
        );
    }
    // A missing file, and PORT as increment_var: refused with their places.
    let conf = dir.path().join("rtsup.toml");
    fs::write(
        &conf,
        "[[app]]\nname = \"a\"\ncommand = \"node\"\nport = 5001\nenv_file = \"missing.env\"\n\
         [[app]]\nname = \"b\"\ncommand = \"node\"\nport = 5101\nincrement_var = \"PORT\"\n\
         [[app]]\nname = \"c\"\ncommand = \"node\"\nport = 5201\nincrement_var = \"N\"\nenv = { N = \"9223372036854775807\" }\n",
    )
    .expect("config");
    let (ok, text) = crate::harness::check_config(&conf);
    assert!(!ok, "{text}");
    let f = conf.display();
    for want in [
        format!(
            "{f}:5:12: app[0].env_file: {}",
            dir.path().join("missing.env").display()
        ),
        format!("{f}:10:17: app[1].increment_var: rtsup sets PORT itself"),
        format!("{f}:15:17: app[2].increment_var: N must be set to a whole number"),
    ] {
        assert!(text.contains(&want), "missing {want:?} in {text}");
    }
}

#[test]
fn an_environment_profile_is_chosen_at_start_and_kept_by_reloads() {
    let base = ports::block(3).base;
    let body = fixture_app(
        "web",
        1,
        base,
        "env = { NODE_ENV = \"development\", KEEP = \"1\" }\n\
         [app.env_production]\nNODE_ENV = \"production\"\nDB = \"prod-db\"",
    );
    let r = Rtsup::start_args(&body, &["--env", "production"]);
    // The worker's environment, and its pid.
    let env_of = |r: &Rtsup| -> (Value, Value) {
        let ws = r.wait_all_ready();
        let port = ws[0]["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("port");
        let env = serde_json::from_str(&http_get(port, "/env").expect("GET /env")).expect("json");
        (env, ws[0]["pid"].clone())
    };
    let (env, pid) = env_of(&r);
    assert_eq!(env["NODE_ENV"], "production", "{env}");
    assert_eq!(env["DB"], "prod-db", "{env}");
    assert_eq!(env["KEEP"], "1", "{env}");
    let out = r.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let (env, new_pid) = env_of(&r);
    assert_ne!(new_pid, pid, "the reload replaced the worker");
    assert_eq!(env["NODE_ENV"], "production", "after a reload: {env}");
    // A profile no app has is a typo: refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("rtsup.toml");
    fs::write(&conf, &body).expect("config");
    let out = std::process::Command::new(harness::rtsup_bin())
        .args(["check", "--env", "prodution", "-c"])
        .arg(&conf)
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("--env prodution: no [[app]] has an env_prodution table"),
        "{text}"
    );
}

#[test]
fn wait_ready_waits_for_the_workers_ready_message() {
    let base = ports::block(6).base;
    let r = Rtsup::start(&format!(
        "{}{}",
        fixture_app("sends", 1, base, "wait_ready = true"),
        fixture_app(
            "silent",
            1,
            base + 3,
            "wait_ready = true\nlisten_timeout = \"1s\"\nenv = { FIXTURE_SEND_READY = \"0\" }"
        ),
    ));
    // The worker that calls process.send('ready') is ready (and serves); the one that
    // listens but never says so is not, and the supervisor says why.
    // Slot 0 of the app named `app`, from the status report.
    let worker = |app: &str| -> Value {
        let status = r.try_status().expect("status");
        status["apps"]
            .as_array()
            .and_then(|apps| apps.iter().find(|a| a["name"] == app))
            .map(|a| a["workers"][0].clone())
            .unwrap_or_default()
    };
    wait_until("sends:0 ready", || {
        let w = worker("sends");
        if w["state"] == "ready" {
            Ok(())
        } else {
            Err(w.to_string())
        }
    });
    assert!(http_get(base, "/health").is_ok());
    let why = wait_until("silent:0 refused as not ready", || {
        let status = r.try_status()?.to_string();
        if status.contains("process.send('ready')") {
            Ok(status)
        } else {
            Err(status)
        }
    });
    assert_ne!(worker("silent")["state"], "ready", "{why}");
}

#[test]
fn cron_restart_rolls_the_app_at_its_times() {
    let base = ports::block(3).base;
    // Every 2 seconds (6 fields: seconds first).
    let r = Rtsup::start(&fixture_app(
        "web",
        1,
        base,
        "cron_restart = \"*/2 * * * * *\"",
    ));
    r.wait_all_ready();
    let replaced = wait_until("a cron restart", || {
        let ws = r.workers();
        match ws.first() {
            Some(w) if w["generation"].as_u64() >= Some(2) && w["state"] == "ready" => {
                Ok(w.clone())
            }
            other => Err(format!("{other:?}")),
        }
    });
    // Replaced the rolling way (a new worker ready, the old one drained), not crashed.
    assert!(
        replaced["last_exit"]
            .as_str()
            .is_some_and(|e| e.starts_with("replaced")),
        "{replaced}"
    );
    // An app the operator stops stays stopped: later cron times skip it (watched over three
    // of them, every 2 s).
    let out = r.cli(&["stop", "web"]);
    assert!(out.status.success(), "{out:?}");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(6);
    while std::time::Instant::now() < until {
        let ws = r.workers();
        assert!(
            ws.iter()
                .all(|w| w["state"] == "stopped" || w["state"] == "stopping"),
            "a cron restart started a stopped app: {ws:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A pattern that is not cron: refused with its place.
    let (ok, text, conf) = crate::harness::check_body(
        "[[app]]\nname = \"a\"\ncommand = \"node\"\nport = 5001\ncron_restart = \"every day\"\n",
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "{}:5:16: app[0].cron_restart: \"every day\" is not a cron pattern",
            conf.display()
        )),
        "{text}"
    );
}
