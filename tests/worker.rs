//! The reference worker (`rtsup worker`, socketioxide) behind the balancer, with the official
//! socket.io client: rooms, private messages and room counts cross workers through the
//! embedded hub and through Redis; the webhook checks its token.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{PrivateRedis, Rtsup, ports, reference_app, require_local_redis, run_node};

fn cluster(env: &str) -> (Rtsup, u16) {
    let base = ports::block(5).base;
    let r = Rtsup::start(&reference_app(2, base, base + 4, env));
    r.wait_all_ready();
    (r, base + 4)
}

fn assert_crossed(s: &Value) {
    let w = s["workers"].as_array().expect("workers");
    assert_ne!(w[0], w[1], "clients landed on the same worker: {s}");
    assert_eq!(s["roomCount"], 2, "{s}");
    assert_eq!(s["chat"]["text"], "hi from alice", "{s}");
    assert_eq!(s["dm"], "psst", "{s}");
    assert_eq!(s["emitStatus"], 202, "{s}");
    assert_eq!(s["notification"]["n"], 1, "{s}");
}

/// Two clients on two workers of a cluster with `env`: room message, dm, room count, webhook.
fn chat_crosses_workers(env: &str) {
    let (_r, port) = cluster(env);
    let url = format!("http://127.0.0.1:{port}");
    assert_crossed(&run_node("chat.js", &[&url, "--emit-token", "test-token"]));
}

#[test]
fn rooms_cross_workers_on_the_embedded_hub() {
    chat_crosses_workers("");
}

#[test]
fn rooms_cross_workers_on_redis() {
    require_local_redis();
    chat_crosses_workers(", REDIS_URL = \"redis://127.0.0.1:6379\"");
}

fn post(port: u16, headers: &str, body: &str) -> (u16, String) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        c,
        "POST /emit HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, resp)
}

#[test]
fn the_webhook_rejects_bad_tokens_and_bad_bodies_with_clear_json() {
    let (_r, port) = cluster("");
    let ok = r#"{"room":"r","event":"notification","data":{}}"#;
    let (status, resp) = post(port, "", ok);
    assert_eq!(status, 401, "{resp}");
    assert!(resp.contains("missing Authorization"), "{resp}");
    let (status, resp) = post(port, "Authorization: Bearer wrong\r\n", ok);
    assert_eq!(status, 401, "{resp}");
    assert!(resp.contains("invalid token"), "{resp}");
    let auth = "Authorization: Bearer test-token\r\n";
    let (status, resp) = post(port, auth, "{not json");
    assert_eq!(status, 400, "{resp}");
    assert!(resp.contains("expected JSON"), "{resp}");
    let (status, _) = post(port, auth, r#"{"room":"r","event":"disconnect"}"#);
    assert_eq!(status, 422);
    let (status, _) = post(port, auth, r#"{"room":"","event":"x"}"#);
    assert_eq!(status, 422);
    let (status, resp) = post(port, auth, ok);
    assert_eq!(status, 202, "{resp}");
}

#[test]
fn broadcasts_resume_within_5s_after_redis_restarts() {
    use std::io::BufRead;
    use std::sync::mpsc;
    use std::time::Instant;

    let redis_port = ports::block(1).base;
    let mut redis = PrivateRedis::start(redis_port);
    let (r, port) = cluster(&format!(", REDIS_URL = \"redis://127.0.0.1:{redis_port}\""));
    let mut node = std::process::Command::new("node")
        .arg(crate::harness::interop_dir().join("resume.js"))
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--duration-ms", "40000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node resume.js");
    let stdout = node.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<(Instant, Value)>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send((Instant::now(), v));
            }
        }
    });
    let next_seq = |rx: &mpsc::Receiver<(Instant, Value)>, within: Duration| -> Option<Instant> {
        let deadline = Instant::now() + within;
        while let Ok((at, v)) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            assert!(v.get("error").is_none(), "client failed: {v}");
            if v.get("seq").is_some() {
                return Some(at);
            }
        }
        None
    };
    next_seq(&rx, Duration::from_secs(15)).expect("messages flow before the restart");
    // Kill Redis hard, keep it down a moment, bring it back empty on the same port.
    redis.kill();
    std::thread::sleep(Duration::from_millis(500));
    while rx.try_recv().is_ok() {}
    redis = PrivateRedis::start(redis_port);
    let back = Instant::now();
    while rx.try_recv().is_ok() {}
    let resumed = next_seq(&rx, Duration::from_secs(5));
    let _ = node.kill();
    let _ = node.wait();
    let resumed = resumed.expect("broadcasts did not resume within 5 s of Redis coming back");
    eprintln!(
        "broadcasts resumed {:?} after Redis came back",
        resumed - back
    );
    // And nothing crashed.
    for w in r.workers() {
        assert_eq!(
            w["restarts"],
            0,
            "a worker restarted: {w}\n{}",
            r.worker_err_logs()
        );
    }
    drop(redis);
}

#[test]
fn the_demo_page_connects_in_headless_chromium() {
    let (_r, port) = cluster("");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    let shot = dir.join("demo-page.png");
    let s = run_node(
        "browser.js",
        &[
            &format!("http://127.0.0.1:{port}/"),
            &shot.display().to_string(),
        ],
    );
    assert_eq!(s["status"], "connected", "{s}");
    assert!(
        s["worker"].as_str().is_some_and(|w| w.starts_with("slot ")),
        "{s}"
    );
    assert!(
        s["log"]
            .as_str()
            .is_some_and(|l| l.contains("hello from chromium")),
        "{s}"
    );
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "no screenshot"
    );
}

#[test]
fn jwt_auth_and_the_per_socket_rate_limit() {
    let (_r, port) = cluster(", RTSUP_JWT_SECRET = \"s3cret\", RTSUP_RATE_LIMIT = \"20\"");
    let s = run_node("auth.js", &[&format!("http://127.0.0.1:{port}"), "s3cret"]);
    assert_eq!(s["good"]["ok"], true, "{s}");
    assert_eq!(s["good"]["user"]["name"], "Ada", "{s}");
    assert_eq!(s["forged"]["ok"], false, "{s}");
    assert!(
        s["forged"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid token")),
        "{s}"
    );
    assert_eq!(
        s["forever"]["ok"], false,
        "a token without exp is refused: {s}"
    );
    assert_eq!(
        s["forever"]["error"], "invalid token",
        "no library internals reach the client: {s}"
    );
    assert_eq!(s["anonymous"]["ok"], false, "{s}");
    assert!(
        s["anonymous"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("authentication required")),
        "{s}"
    );
    // The bucket (20 at once, 20/s) refills while the burst is under way: on a loaded machine
    // the burst takes longer, and more pass. At most 20 + 20/s over the burst (plus a second
    // of slack) may pass; without a limit all 200 would.
    assert_eq!(s["markerSeen"], true, "the watcher saw the burst end: {s}");
    let passed = s["passed"].as_f64().unwrap_or(f64::MAX);
    let burst_s = s["burstMs"].as_f64().unwrap_or(0.0) / 1000.0;
    let may_pass = 20.0 + 20.0 * (burst_s + 1.0);
    assert!(
        (19.0..=may_pass).contains(&passed),
        "200 events at 20/s: the 19 left after the join pass, at most {may_pass:.0} over {burst_s:.1} s: {s}"
    );
    assert!(
        s["rateLimited"].as_u64().unwrap_or(0) > 0,
        "the refused events are answered: {s}"
    );
    assert_eq!(s["stillConnected"], true, "{s}");
    assert_eq!(
        s["flooderDisconnected"], true,
        "a client that keeps ignoring its limit is disconnected: {s}"
    );
}

#[test]
fn rtsup_start_without_a_config_runs_the_embedded_demo() {
    // The README's first command, for real: fixed demo ports (8080, 3001-3002), so it runs once.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(crate::harness::rtsup_bin())
        .arg("start")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("err")).expect("err file"))
        .spawn()
        .expect("rtsup start");
    let page = crate::harness::wait_until("the demo page through the balancer", || {
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(Err(format!(
                "exited {status}: {}",
                std::fs::read_to_string(dir.path().join("err")).unwrap_or_default()
            )));
        }
        crate::harness::http_get(8080, "/").map(Ok)
    });
    let page = page.unwrap_or_else(|e| panic!("{e}"));
    assert!(page.contains("rtsup demo"), "{page}");
    let s = run_node(
        "chat.js",
        &["http://127.0.0.1:8080", "--emit-token", "demo-token"],
    );
    assert_crossed(&s);
    let err = std::fs::read_to_string(dir.path().join("err")).unwrap_or_default();
    assert!(err.contains("open http://127.0.0.1:8080/"), "{err}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("term");
    let status = crate::harness::wait_until("demo exit", || {
        child
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or("running".to_string())
    });
    assert!(status.success(), "{status}");
}

#[test]
fn sigterm_under_load_exits_cleanly_with_no_orphans() {
    let (mut r, port) = cluster("");
    let pids: Vec<u32> = r
        .workers()
        .iter()
        .filter_map(|w| w["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    let url = format!("http://127.0.0.1:{port}");
    let mut swarm = std::process::Command::new("node")
        .arg(crate::harness::interop_dir().join("clients.js"))
        .args([
            url.as_str(),
            "--clients",
            "100",
            "--app",
            "reference",
            "--hold-ms",
            "30000",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("swarm");
    let mut lines = std::io::BufReader::new(swarm.stdout.take().expect("stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut lines, &mut first).expect("progress line");
    assert!(first.contains("\"connected\":100"), "{first}");
    // Requests in flight while the signal lands.
    let load = std::thread::spawn(move || {
        for _ in 0..200 {
            let _ = crate::harness::http_get(port, "/health");
        }
    });
    r.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(r.wait_exit(), Some(0));
    let _ = load.join();
    for p in pids {
        crate::harness::wait_until("worker gone", || {
            if crate::harness::running(p) {
                Err(format!("{p} alive"))
            } else {
                Ok(())
            }
        });
    }
    let _ = swarm.kill();
    let _ = swarm.wait();
}
