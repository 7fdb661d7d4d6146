//! Zero-downtime reload: rolling replacement under load, rollback of a failing replacement,
//! invalid configurations, scaling, and systemd's notify sequence.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::{
    Rtsup, fixture_app, interop_dir, ports, require_local_redis, socketio_app, wait_until,
    websocket_upgrade,
};

fn pids(ws: &[Value]) -> Vec<u64> {
    ws.iter().filter_map(|w| w["pid"].as_u64()).collect()
}

/// GET /anything through the balancer in a loop until `stop`; returns (ok, failed).
fn http_loop(
    port: u16,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut errors = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let result = (|| -> Result<(), String> {
                let mut c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                c.set_read_timeout(Some(Duration::from_secs(10)))
                    .map_err(|e| e.to_string())?;
                c.write_all(b"GET /anything HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .map_err(|e| e.to_string())?;
                let mut resp = String::new();
                c.read_to_string(&mut resp).map_err(|e| e.to_string())?;
                if resp.starts_with("HTTP/1.1 200") && resp.contains("worker ") {
                    Ok(())
                } else {
                    Err(resp.lines().next().unwrap_or("empty response").to_string())
                }
            })();
            match result {
                Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    if errors.len() < 5 {
                        errors.push(e);
                    }
                    failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            std::thread::sleep(Duration::from_millis(5));
        }
        errors
    })
}

/// Start a client swarm; returns the child and a receiver of its JSON lines.
fn swarm(url: &str, args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<Value>) {
    let mut child = std::process::Command::new("node")
        .arg(interop_dir().join("clients.js"))
        .arg(url)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node clients.js");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    (child, rx)
}

fn next_line(rx: &std::sync::mpsc::Receiver<Value>, within: Duration) -> Value {
    rx.recv_timeout(within).expect("swarm output")
}

#[test]
fn a_rolling_reload_under_load_fails_no_request_and_no_session() {
    require_local_redis();
    let base = ports::block(9).base;
    let lb = base + 8;
    let r = Rtsup::start(&socketio_app(4, base, lb, "").replace(
        "[balancer]",
        "drain_timeout = \"2s\"\nkill_timeout = \"5s\"\n\n[balancer]",
    ));
    let before = r.wait_all_ready();
    let url = format!("http://127.0.0.1:{lb}");
    let (mut ws_swarm, ws_rx) = swarm(
        &url,
        &[
            "--clients",
            "200",
            "--transports",
            "default",
            "--hold-ms",
            "15000",
            "--broadcasts",
            "2",
            "--room",
            "ws",
        ],
    );
    let (mut poll_swarm, poll_rx) = swarm(
        &url,
        &[
            "--clients",
            "100",
            "--transports",
            "polling",
            "--hold-ms",
            "15000",
            "--broadcasts",
            "2",
            "--room",
            "polling",
        ],
    );
    assert_eq!(next_line(&ws_rx, Duration::from_secs(30))["connected"], 200);
    assert_eq!(
        next_line(&poll_rx, Duration::from_secs(30))["connected"],
        100
    );
    let (stop, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let http = http_loop(lb, stop.clone(), ok.clone(), failed.clone());

    let t0 = Instant::now();
    let out = r.cli(&["reload"]);
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.worker_err_logs()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("reload: 4 replaced"), "{stdout}");
    eprintln!("reload of 4 workers took {took:?}");

    // Every worker replaced: new pids, new generations, the old ones gone after draining.
    let after = wait_until("only new workers left", || {
        let ws = r.workers();
        if ws.len() == 4
            && ws
                .iter()
                .all(|w| w["state"] == "ready" && w["generation"] == 2)
        {
            Ok(ws)
        } else {
            Err(Value::from(ws).to_string())
        }
    });
    for p in pids(&before) {
        assert!(!pids(&after).contains(&p), "pid {p} survived the reload");
        wait_until("old worker gone", || {
            if crate::harness::running(p as u32) {
                Err(format!("{p} alive"))
            } else {
                Ok(())
            }
        });
    }
    let ws = next_line(&ws_rx, Duration::from_secs(60));
    let poll = next_line(&poll_rx, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let http_errors = http.join().expect("http loop");
    let _ = ws_swarm.wait();
    let _ = poll_swarm.wait();
    eprintln!(
        "http ok={} failed={} errors={http_errors:?}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    eprintln!("websocket swarm: {ws}\npolling swarm: {poll}");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "HTTP requests failed during the reload: {http_errors:?}"
    );
    assert!(ok.load(Ordering::Relaxed) > 50);
    assert!(
        !r.daemon_log().contains("failed to acquire reusable stream"),
        "pingora's pool-race noise is silenced"
    );
    for (s, n) in [(&ws, 200), (&poll, 100)] {
        assert_eq!(s["sessionUnknown"], 0, "{s}");
        assert_eq!(s["connectErrors"], 0, "{s}");
        assert_eq!(s["connectedAtEnd"], n, "{s}");
        assert_eq!(
            s["delivered"], s["expected"],
            "a client missed the final broadcast: {s}"
        );
    }
}

#[test]
fn a_replacement_that_crashes_rolls_back_to_the_old_worker() {
    let base = ports::block(4).base;
    let r = Rtsup::start(&fixture_app("web", 2, base, ""));
    let before = r.wait_all_ready();
    r.rewrite(&fixture_app(
        "web",
        2,
        base,
        "env = { FIXTURE_MODE = \"crash\" }",
    ));
    let out = r.cli(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // Slot 0 failed twice (one retry), the rollout stopped there, slot 1 was not touched.
    assert!(
        err.contains("web:0  failed     exit code 1; stderr: fixture stderr instance=0")
            && err.contains("web:1  skipped")
            && err.contains("reload: 1 failed, 1 skipped"),
        "{err}"
    );
    let after = r.wait_all_ready();
    assert_eq!(
        pids(&after),
        pids(&before),
        "the old workers must keep serving"
    );
    assert!(
        after[0]["last_exit"]
            .as_str()
            .is_some_and(|e| e.starts_with("replacement failed")),
        "{after:?}"
    );
    assert_eq!(
        after[1]["last_exit"],
        Value::Null,
        "slot 1 was not touched: {after:?}"
    );
    assert!(crate::harness::http_get(base, "/health").is_ok());
}

#[test]
fn an_invalid_configuration_on_reload_changes_nothing() {
    let base = ports::block(2).base;
    let r = Rtsup::start(&fixture_app("web", 1, base, ""));
    let before = r.wait_all_ready();
    r.rewrite("[[app]]\nname = \"web\"\ncommand = \"node\"\nport = 0\n");
    let out = r.cli(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid configuration") && err.contains("app[0].port"),
        "{err}"
    );
    assert_eq!(pids(&r.wait_all_ready()), pids(&before));
    // SIGHUP with the same bad file: still running, same worker.
    r.signal(Signal::SIGHUP);
    wait_until("reload failure logged", || {
        if r.daemon_log().contains("invalid configuration") {
            Ok(())
        } else {
            Err(r.daemon_log())
        }
    });
    assert_eq!(pids(&r.wait_all_ready()), pids(&before));
}

#[test]
fn reload_scales_instances_up_and_down() {
    let base = ports::block(8).base;
    let r = Rtsup::start(&fixture_app("web", 2, base, ""));
    r.wait_all_ready();
    r.rewrite(&fixture_app("web", 3, base, ""));
    let out = r.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ws = wait_until("3 ready workers", || {
        let ws = r.workers();
        if ws.len() == 3 && ws.iter().all(|w| w["state"] == "ready") {
            Ok(ws)
        } else {
            Err(Value::from(ws).to_string())
        }
    });
    assert_eq!(
        ws.iter().map(|w| w["slot"].as_u64()).collect::<Vec<_>>(),
        vec![Some(0), Some(1), Some(2)]
    );
    r.rewrite(&fixture_app("web", 1, base, ""));
    assert!(r.cli(&["reload"]).status.success());
    wait_until("1 ready worker", || {
        let ws = r.workers();
        if ws.len() == 1 && ws[0]["state"] == "ready" {
            Ok(())
        } else {
            Err(Value::from(ws).to_string())
        }
    });
}

#[test]
fn systemd_hears_ready_reloading_ready_stopping_and_watchdog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let base = ports::block(4).base;
    let mut r = Rtsup::start_with(
        &fixture_app("web", 2, base, ""),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().expect("utf8")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen: Vec<String> = Vec::new();
    let read_until = |what: &str, seen: &mut Vec<String>| {
        wait_until(what, || {
            let mut buf = [0u8; 4096];
            if let Ok(n) = sock.recv(&mut buf) {
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    seen.push(line.to_string());
                }
            }
            if seen.iter().any(|l| l == what) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        });
        seen.iter().position(|l| l == what).unwrap_or_default()
    };
    let ready = read_until("READY=1", &mut seen);
    // READY=1 only once the workers are ready.
    assert!(r.workers().iter().all(|w| w["state"] == "ready"));
    read_until("WATCHDOG=1", &mut seen);
    r.signal(Signal::SIGHUP);
    let reloading = read_until("RELOADING=1", &mut seen);
    assert!(reloading > ready);
    assert!(
        seen.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{seen:?}"
    );
    wait_until("READY=1 after the reload", || {
        let mut buf = [0u8; 4096];
        if let Ok(n) = sock.recv(&mut buf) {
            seen.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_string),
            );
        }
        if seen[reloading..].iter().any(|l| l == "READY=1") {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    r.signal(Signal::SIGTERM);
    read_until("STOPPING=1", &mut seen);
    assert_eq!(r.wait_exit(), Some(0));
}

/// Three raw WebSockets to `target` through `lb`, then `end` (a drain, a stop): each ends with
/// the 1001 close frame.
fn websockets_end_with_a_going_away_close_frame(
    r: &mut Rtsup,
    lb: u16,
    target: &str,
    end: impl FnOnce(&mut Rtsup),
) {
    // Upgraded before `end`: each 101 is in.
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (mut c, mut all) = websocket_upgrade(lb, target);
            std::thread::spawn(move || {
                let _ = c.read_to_end(&mut all);
                all
            })
        })
        .collect();
    wait_until("3 WebSockets open", || {
        match crate::harness::metric(r, "rtsup_balancer_connections")? {
            3 => Ok(()),
            n => Err(format!("{n} open")),
        }
    });
    end(r);
    for reader in readers {
        let all = reader.join().expect("reader");
        let text = String::from_utf8_lossy(&all);
        assert!(
            all.ends_with(&[0x88, 0x02, 0x03, 0xE9]),
            "no 1001 close frame at the end: {text:?}"
        );
    }
}

#[test]
fn a_drained_workers_engineio_websockets_end_with_a_going_away_close_frame() {
    let base = ports::block(4).base;
    let lb = base + 3;
    let toml = crate::harness::reference_app(1, base, lb, "").replace(
        "ready = \"http:/health\"\n",
        "ready = \"http:/health\"\ndrain_timeout = \"1s\"\nclose_window = \"100ms\"\n",
    );
    let mut r = Rtsup::start(&toml);
    r.wait_all_ready();
    // Raw engine.io WebSockets (no socket.io client to hide how they end).
    websockets_end_with_a_going_away_close_frame(
        &mut r,
        lb,
        "/socket.io/?EIO=4&transport=websocket",
        |r| restart_slot_0(r, "ref"),
    );
    // And when the daemon stops, the WebSockets still open are closed the same way.
    websockets_end_with_a_going_away_close_frame(
        &mut r,
        lb,
        "/socket.io/?EIO=4&transport=websocket",
        |r| {
            r.signal(Signal::SIGTERM);
            assert_eq!(r.wait_exit(), Some(0));
        },
    );
}

fn restart_slot_0(r: &mut Rtsup, app: &str) {
    let out = r.cli(&["restart", &format!("{app}:0")]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_drained_workers_plain_websockets_are_released_too() {
    // WebSockets that are no engine.io session (a plain `ws` server): the drain waits for them
    // as for sessions, then releases them.
    let base = ports::block(4).base;
    let lb = base + 3;
    let mut r = Rtsup::start(&format!(
        "{}\n[balancer]\nlisten = \"127.0.0.1:{lb}\"\n",
        fixture_app(
            "web",
            1,
            base,
            "drain_timeout = \"1s\"\nclose_window = \"100ms\"\nkill_timeout = \"10s\"\nenv = { FIXTURE_TERM_DELAY_MS = \"5000\" }",
        )
    ));
    r.wait_all_ready();
    websockets_end_with_a_going_away_close_frame(&mut r, lb, "/tunnel", |r| {
        restart_slot_0(r, "web")
    });
}
