//! Observability: the admin server's `/metrics` counters move as a scripted load runs,
//! `/status` and `rtsup status` show sessions, and the dashboard renders in headless Chromium.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Rtsup, fixture_app, ports, reference_app, run_node, wait_until};

fn get(port: u16, path: &str) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    c.read_to_string(&mut resp).expect("read");
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of the first sample line starting with `prefix` (a metric name with labels).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn handshake(port: u16) -> String {
    let body = get(port, "/socket.io/?EIO=4&transport=polling");
    body.split("\"sid\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("sid")
        .to_string()
}

fn cluster() -> (Rtsup, u16, u16) {
    let base = ports::block(6).base;
    let (lb, admin) = (base + 4, base + 5);
    let body = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
        reference_app(2, base, lb, "")
    );
    let r = Rtsup::start(&body);
    r.wait_all_ready();
    (r, lb, admin)
}

#[test]
fn metrics_and_status_follow_a_scripted_load() {
    let (r, lb, admin) = cluster();
    let sids: Vec<String> = (0..3).map(|_| handshake(lb)).collect();
    let _ = get(
        lb,
        "/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA",
    );
    let _ = get(lb, "/socket.io/?EIO=4&transport=polling&sid=");
    assert!(get(lb, "/health").contains("\"status\":\"ok\""));

    let m = wait_until("the load in /metrics", || {
        let m = get(admin, "/metrics");
        if metric(&m, "rtsup_balancer_requests_total{status=\"200\"}") >= 4.0 {
            Ok(m)
        } else {
            Err(m)
        }
    });
    assert_eq!(
        metric(&m, "rtsup_balancer_routes_total{kind=\"new_session\"}"),
        3.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "rtsup_balancer_routes_total{kind=\"sid_unknown\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "rtsup_balancer_routes_total{kind=\"bad_request\"}"),
        1.0,
        "{m}"
    );
    assert!(
        metric(&m, "rtsup_balancer_routes_total{kind=\"round_robin\"}") >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "rtsup_balancer_requests_total{status=\"400\"}"),
        2.0,
        "{m}"
    );
    assert!(
        metric(&m, "rtsup_balancer_request_duration_seconds_count") >= 6.0,
        "{m}"
    );
    assert_eq!(metric(&m, "rtsup_worker_sessions{"), 3.0, "{m}");
    assert_eq!(metric(&m, "rtsup_worker_up{"), 2.0, "{m}");
    assert_eq!(metric(&m, "rtsup_balancer_sid_table_entries"), 3.0, "{m}");
    assert!(
        metric(&m, "rtsup_worker_memory_bytes{") > 0.0 || m.contains("rtsup_worker_memory_bytes"),
        "{m}"
    );

    // /status is `rtsup status --json` plus the balancer's view.
    let status: Value = serde_json::from_str(&get(admin, "/status")).expect("status json");
    let sessions: u64 = status["apps"][0]["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["sessions"].as_u64())
        .sum();
    assert_eq!(sessions, 3, "{status}");
    assert_eq!(status["balancer"]["sid_unknown"], 1, "{status}");
    let table = String::from_utf8_lossy(&r.cli(&["status"]).stdout).into_owned();
    assert!(table.contains("balancer: 3 sessions"), "{table}");

    // A worker dies: its restarts count, and its sessions are answered as a dead worker's.
    let ws = r.workers();
    let victim = ws[0]["pid"].as_u64().expect("pid") as i32;
    let gen0 = ws[0]["generation"].clone();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    wait_until("slot 0 replaced", || {
        let w = r.workers()[0].clone();
        if w["generation"] != gen0 && w["state"] == "ready" {
            Ok(())
        } else {
            Err(w.to_string())
        }
    });
    for sid in &sids {
        let _ = get(
            lb,
            &format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
        );
    }
    let m = get(admin, "/metrics");
    assert!(
        metric(&m, "rtsup_balancer_routes_total{kind=\"dead_worker\"}") >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "rtsup_worker_restarts{app=\"ref\",slot=\"0\"}"),
        1.0,
        "{m}"
    );
}

#[test]
fn the_dashboard_shows_the_workers_in_chromium() {
    let (_r, lb, admin) = cluster();
    let _ = handshake(lb);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    let shot = dir.join("dashboard.png");
    let s = run_node(
        "dashboard.js",
        &[
            &format!("http://127.0.0.1:{admin}/"),
            "2",
            &shot.display().to_string(),
        ],
    );
    assert!(s.get("error").is_none(), "{s}");
    assert_eq!(s["rows"], 2, "{s}");
    assert_eq!(s["ready"], "2/2", "{s}");
    assert!(s["lines"].as_u64() >= Some(2), "{s}");
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 1000)
            .unwrap_or(false)
    );
}

#[test]
fn the_admin_server_answers_only_get_on_known_paths() {
    let (_r, _lb, admin) = cluster();
    assert!(get(admin, "/nope").contains("not found"));
    let mut c = TcpStream::connect(("127.0.0.1", admin)).expect("connect");
    write!(
        c,
        "POST /metrics HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    c.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
}

/// Status line and body of `GET path` on `port` with extra request headers.
fn raw_get(port: u16, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp)
}

#[test]
fn the_admin_server_is_off_unless_configured_and_checks_host_and_token() {
    let base = ports::block(3).base;
    let admin = base + 2;
    // No [admin] section (the comment keeps the harness from adding one): no admin server.
    let r = Rtsup::start(&format!(
        "# no [admin] section\n{}",
        fixture_app("web", 1, base, "")
    ));
    r.wait_all_ready();
    assert!(
        !r.daemon_log().contains("admin listening"),
        "{}",
        r.daemon_log()
    );
    drop(r);

    let r = Rtsup::start(&format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"a-long-admin-token\"\n",
        fixture_app("web", 1, base, "")
    ));
    r.wait_all_ready();
    let host = format!("Host: 127.0.0.1:{admin}\r\n");
    let bearer = "Authorization: Bearer a-long-admin-token\r\n";
    assert_eq!(raw_get(admin, "/status", &host).0, 401, "no token");
    assert_eq!(
        raw_get(
            admin,
            "/status",
            &format!("{host}Authorization: Bearer wrong-admin-token!\r\n")
        )
        .0,
        401
    );
    assert_eq!(raw_get(admin, "/status", &format!("{host}{bearer}")).0, 200);
    assert_eq!(raw_get(admin, "/?token=a-long-admin-token", &host).0, 200);
    // DNS rebinding: a page of evil.example that resolves to 127.0.0.1.
    let (status, _) = raw_get(
        admin,
        "/status",
        &format!("Host: evil.example:{admin}\r\n{bearer}"),
    );
    assert_eq!(status, 421);
}

/// Client connections open on each of the two proxy threads (`balancer_thread_connections`).
fn per_thread(r: &Rtsup) -> Result<[u64; 2], String> {
    let on = |t| {
        crate::harness::metric(
            r,
            &format!("rtsup_balancer_thread_connections{{thread=\"{t}\"}}"),
        )
    };
    Ok([on(0)?, on(1)?])
}

/// Wait until the two proxy threads count `total` connections between them; their split.
fn counted(r: &Rtsup, total: u64) -> [u64; 2] {
    wait_until(
        &format!("{total} connections counted on the threads"),
        || {
            let split = per_thread(r)?;
            if split.iter().sum::<u64>() == total {
                Ok(split)
            } else {
                Err(format!("{split:?}"))
            }
        },
    )
}

#[test]
fn connections_opened_at_once_are_spread_over_the_proxy_threads_and_tunnels_stay_counted() {
    let (r, lb) = crate::harness::fixture_cluster("max_connections_per_address = 0\n", "", None);
    // Forty connections at once: every accept loop is woken for each, and without the
    // spread whichever thread ran first took them all.
    let mut held: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(("127.0.0.1", lb)).expect("connect"))
        .collect();
    let split = counted(&r, 40);
    assert!(split.iter().all(|&n| n >= 15), "uneven: {split:?}");
    // Each is served where it was counted.
    for c in &mut held {
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
    }
    for c in &mut held {
        c.set_read_timeout(Some(crate::harness::patience()))
            .expect("timeout");
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).expect("answer");
        assert_eq!(&buf, b"HTTP/1.1 200");
    }
    drop(held);
    counted(&r, 0);
    // A WebSocket counts on its thread while its tunnel lives (after the request's task).
    let sockets: Vec<TcpStream> = (0..4)
        .map(|_| crate::harness::websocket_upgrade(lb, "/tunnel").0)
        .collect();
    let split = counted(&r, 4);
    assert!(split.iter().all(|&n| n >= 1), "uneven: {split:?}");
    drop(sockets);
    counted(&r, 0);
}

/// Open a connection to `lb`, one at a time, and keep it in `on` under the thread that counts
/// it (`on` holds every connection open to the proxy).
fn open_one(r: &Rtsup, lb: u16, on: &mut [Vec<TcpStream>; 2]) {
    let before = on[0].len();
    let c = TcpStream::connect(("127.0.0.1", lb)).expect("connect");
    let split = counted(r, (on[0].len() + on[1].len() + 1) as u64);
    let thread = usize::from(split[0] as usize == before);
    on[thread].push(c);
}

/// Close the connections counted on thread 1, and wait until they are no longer counted.
fn close_second(r: &Rtsup, on: &mut [Vec<TcpStream>; 2]) {
    on[1].clear();
    counted(r, on[0].len() as u64);
}

#[test]
fn connections_one_at_a_time_and_a_burst_after_a_quiet_spell_go_to_the_least_loaded_thread() {
    let (r, lb) = crate::harness::fixture_cluster("max_connections_per_address = 0\n", "", None);
    let quiet = || std::thread::sleep(Duration::from_millis(50));
    let mut on: [Vec<TcpStream>; 2] = Default::default();
    // One at a time with quiet spells longer than the rule's patience between them: whichever
    // thread the kernel runs first, one over its share leaves the connection to the other.
    for _ in 0..16 {
        open_one(&r, lb, &mut on);
        quiet();
    }
    let split = [on[0].len(), on[1].len()];
    assert!(split.iter().all(|&n| n >= 7), "uneven trickle: {split:?}");
    // The second thread's connections closed, the first is over its share: the next ones, one
    // at a time, go to the second until it has caught up (the rule used to let the first
    // compete again after any quiet spell of 20 ms: such a trickle split 17 to 3).
    close_second(&r, &mut on);
    let first = on[0].len();
    for _ in 0..8 {
        open_one(&r, lb, &mut on);
        quiet();
    }
    let split = [on[0].len(), on[1].len()];
    assert!(
        split[1] >= 7.min(first),
        "the second thread trails: {split:?}"
    );
    // A burst after a quiet spell, the first over its share again: the second takes the most.
    close_second(&r, &mut on);
    quiet();
    let burst: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", lb)).expect("connect"))
        .collect();
    let total = on[0].len() + burst.len();
    let split = counted(&r, total as u64);
    assert!(
        split[1] as usize >= total / 2 - 3,
        "uneven burst: {split:?}"
    );
    drop((on, burst));
    counted(&r, 0);
}

/// A thread of another process stopped by ptrace (`PTRACE_SEIZE`, `PTRACE_INTERRUPT`) while
/// the rest of its process runs, as a debugger or a descheduled core would leave it; resumed
/// when dropped (by the thread that froze it: a tracer is a thread).
struct Frozen(nix::unistd::Pid);

impl Frozen {
    fn new(tid: i32) -> Self {
        use nix::sys::ptrace;
        use nix::sys::wait::{WaitPidFlag, waitpid};
        let tid = nix::unistd::Pid::from_raw(tid);
        ptrace::seize(tid, ptrace::Options::empty()).expect("PTRACE_SEIZE");
        ptrace::interrupt(tid).expect("PTRACE_INTERRUPT");
        waitpid(tid, Some(WaitPidFlag::__WALL)).expect("the thread stops");
        Frozen(tid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = nix::sys::ptrace::detach(self.0, None);
    }
}

/// The proxy threads of rtsup `pid` (pingora names them after their service, "rtsup
/// balancer N", cut to 15 bytes).
fn proxy_threads(pid: u32) -> Vec<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    tasks
        .filter_map(|t| {
            let t = t.ok()?;
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let tid = t.file_name().to_str()?.parse().ok()?;
            comm.starts_with("rtsup balancer").then_some(tid)
        })
        .collect()
}

/// Send a GET on `c` and read its answer, a 200 (within [`crate::harness::patience`]); the
/// connection stays open.
fn served(c: &mut TcpStream) {
    c.set_read_timeout(Some(crate::harness::patience()))
        .expect("timeout");
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).expect("answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    match head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
    {
        Some(length) => {
            let mut body = vec![0u8; length];
            c.read_exact(&mut body).expect("body");
        }
        // Chunked (the fixture's): up to the last, empty chunk.
        None => {
            let mut body = Vec::new();
            while !body.ends_with(b"0\r\n\r\n") {
                c.read_exact(&mut byte).expect("body");
                body.push(byte[0]);
            }
        }
    }
}

#[test]
fn a_stalled_proxy_thread_delays_new_connections_but_never_holds_them() {
    let (r, lb) = crate::harness::fixture_cluster("max_connections_per_address = 0\n", "", None);
    let threads = proxy_threads(r.pid());
    assert_eq!(threads.len(), 2, "proxy threads {threads:?}");
    let connect = || TcpStream::connect(("127.0.0.1", lb)).expect("connect");
    for tid in threads {
        // The readiness checks' connections closed and no longer counted (else one could
        // stay counted on the stopped thread, which cannot see it close).
        counted(&r, 0);
        let frozen = Frozen::new(tid);
        // One at a time: the other thread takes them, past its share too (the first past it
        // once it has waited the rule's patience, the next ones after a pause each).
        let started = std::time::Instant::now();
        let mut held: Vec<TcpStream> = (0..6)
            .map(|_| {
                let mut c = connect();
                served(&mut c);
                c
            })
            .collect();
        // And a burst.
        let mut burst: Vec<TcpStream> = (0..6).map(|_| connect()).collect();
        for c in &mut burst {
            served(c);
        }
        eprintln!(
            "thread {tid} stopped: 12 connections served in {:?}",
            started.elapsed()
        );
        let split = counted(&r, 12);
        assert!(
            split.contains(&0),
            "the stopped thread took some: {split:?}"
        );
        drop(frozen);
        held.append(&mut burst);
        // Resumed: the other thread leaves each new connection waiting a pause for it (on a
        // loaded host it may not run in time for the first ones), and once it takes one it
        // takes the next until it has its share.
        let took = (0..20).any(|_| {
            let mut c = connect();
            served(&mut c);
            held.push(c);
            !per_thread(&r).expect("counts").contains(&0)
        });
        let split = per_thread(&r).expect("counts");
        assert!(took, "the resumed thread took none of 20: {split:?}");
        for c in &mut held {
            served(c);
        }
        drop(held);
        counted(&r, 0);
    }
}
