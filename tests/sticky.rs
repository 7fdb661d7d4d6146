//! The sticky balancer with real third-party software: the official Node `socket.io` server
//! (4 workers sharing rooms through `@socket.io/redis-adapter`) and the official
//! `socket.io-client`, several hundred clients from one IP through rtsup.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Rtsup, ports, require_local_redis, run_clients, socketio_app, wait_until};

/// Start 4 socket.io workers behind the balancer; returns the daemon and the balancer URL.
fn cluster(balancer_extra: &str) -> (Rtsup, String) {
    require_local_redis();
    let base = ports::block(9).base;
    let r = Rtsup::start(&socketio_app(4, base, base + 8, balancer_extra));
    r.wait_all_ready();
    (r, format!("http://127.0.0.1:{}", base + 8))
}

fn assert_clean(s: &Value, clients: u64) {
    assert_eq!(s["connected"], clients, "{s}");
    assert_eq!(s["connectErrors"], 0, "{s}");
    assert_eq!(s["sessionUnknown"], 0, "{s}");
    assert_eq!(s["disconnects"], 0, "{s}");
    let per = s["perWorker"].as_object().expect("perWorker");
    assert_eq!(per.len(), 4, "sessions not spread over all 4 workers: {s}");
    assert_eq!(
        s["delivered"], s["expected"],
        "a broadcast missed clients: {s}"
    );
    assert!(s["errors"].as_array().is_some_and(|e| e.is_empty()), "{s}");
}

#[test]
fn polling_only_clients_stay_pinned() {
    let (_r, url) = cluster("");
    let s = run_clients(&url, &["--clients", "300", "--transports", "polling"]);
    eprintln!("polling: {s}");
    assert_clean(&s, 300);
}

#[test]
fn default_transport_clients_upgrade_and_stay_pinned() {
    let (_r, url) = cluster("new_sessions = \"round-robin\"");
    let s = run_clients(&url, &["--clients", "300", "--transports", "default"]);
    eprintln!("default: {s}");
    assert_clean(&s, 300);
}

#[test]
fn ip_hash_pins_every_client_of_one_ip_to_one_worker() {
    // All clients share 127.0.0.1: ip-hash puts every new session on one worker, and sessions
    // still work (pinned by sid).
    let (_r, url) = cluster("new_sessions = \"ip-hash\"");
    let s = run_clients(
        &url,
        &[
            "--clients",
            "50",
            "--transports",
            "polling",
            "--broadcasts",
            "2",
        ],
    );
    assert_eq!(s["connected"], 50, "{s}");
    assert_eq!(s["sessionUnknown"], 0, "{s}");
    assert_eq!(s["perWorker"].as_object().map(|m| m.len()), Some(1), "{s}");
    assert_eq!(s["delivered"], s["expected"], "{s}");
}

#[test]
fn without_stickiness_the_same_clients_fail() {
    // Proves the swarm can fail: plain round-robin (test-only mode) breaks polling sessions.
    let (_r, url) = cluster("test_unsticky = true");
    let s = run_clients(
        &url,
        &[
            "--clients",
            "100",
            "--transports",
            "polling",
            "--timeout-ms",
            "15000",
            "--broadcasts",
            "1",
        ],
    );
    eprintln!(
        "unsticky: {}",
        &s.to_string()[..200.min(s.to_string().len())]
    );
    let unknown = s["sessionUnknown"].as_u64().unwrap_or(0);
    assert!(
        unknown > 0,
        "round-robin should produce Session ID unknown: {s}"
    );
}

#[test]
fn killing_a_worker_moves_only_its_clients_within_5s() {
    let (r, url) = cluster("");
    let s = run_clients(
        &url,
        &[
            "--clients",
            "200",
            "--transports",
            "default",
            "--kill-instance",
            "1",
        ],
    );
    eprintln!("kill: {}", s["kill"]);
    let k = &s["kill"];
    assert!(k["victims"].as_u64() > Some(0), "{s}");
    assert_eq!(k["reconnected"], k["victims"], "{s}");
    assert!(k["reconnectMsMax"].as_u64() < Some(5000), "{s}");
    assert_eq!(k["othersDisconnected"], 0, "{s}");
    assert_eq!(s["delivered"], s["expected"], "{s}");
    // The supervisor replaced the worker.
    wait_until("slot 1 back", || {
        let w = r.workers()[1].clone();
        if w["state"] == "ready" && w["restarts"] == 1 {
            Ok(())
        } else {
            Err(w.to_string())
        }
    });
}

/// One raw HTTP/1.1 exchange on an open connection; returns (status, headers, body).
fn exchange(conn: &mut TcpStream, req: &str) -> (u16, String, String) {
    conn.write_all(req.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).expect("read");
        assert!(
            n > 0,
            "connection closed; got {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize =
                crate::harness::field(head, "content-length").map_or(0, |v| v.parse().unwrap_or(0));
            if body.len() >= len {
                let status = head[9..12].parse().expect("status");
                return (status, head.to_string(), body[..len].to_string());
            }
        }
    }
}

fn handshake(port: u16) -> (String, String) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (status, head, body) = exchange(
        &mut c,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        crate::harness::field(&head, "set-cookie").is_some_and(|c| c.starts_with("rtsup=")),
        "{head}"
    );
    assert!(head.contains("HttpOnly; SameSite=Lax"), "{head}");
    let sid = body
        .split("\"sid\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("sid")
        .to_string();
    let cookie = crate::harness::field(&head, "set-cookie")
        .and_then(|v| v.split(';').next())
        .expect("cookie")
        .to_string();
    (sid, cookie)
}

#[test]
fn routing_is_per_request_on_a_kept_alive_connection_and_bad_input_gets_4xx() {
    let (_r, url) = cluster("");
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    // Two sessions on two different workers (least-conn spreads them).
    let (sid1, _) = handshake(port);
    let (sid2, _) = handshake(port);
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    for sid in [&sid1, &sid2, &sid1, &sid2] {
        let (status, head, body) = exchange(
            &mut c,
            &format!(
                "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n40"
            ),
        );
        assert_eq!((status, body.as_str()), (200, "ok"), "{head}");
    }
    // A sid nobody issued: engine.io's own 400, in Node's numeric form, and the connection lives.
    let (status, _, body) = exchange(
        &mut c,
        "GET /socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"code":1,"message":"Session ID unknown"}"#)
    );
    // A malformed sid (empty, or given twice): 400 Bad request, engine.io's code 3.
    for q in ["sid=", "sid=aaaa&sid=bbbb"] {
        let req =
            format!("GET /socket.io/?EIO=4&transport=polling&{q} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (status, _, body) = exchange(&mut c, &req);
        assert_eq!(
            (status, body.as_str()),
            (400, r#"{"code":3,"message":"Bad request"}"#)
        );
    }
    // A forged cookie is ignored (the handshake is placed by policy, not refused).
    let (status, _, _) = exchange(
        &mut c,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nCookie: rtsup=6368617423.00000000000000000000000000000000\r\n\r\n",
    );
    assert_eq!(status, 200);
    // Non-engine.io paths are proxied too.
    let (status, _, body) = exchange(&mut c, "GET /anything HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    assert!(body.starts_with("worker "), "{body}");
}

#[test]
fn the_affinity_cookie_pins_handshakes_to_one_worker() {
    let (_r, url) = cluster("");
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let (_, cookie) = handshake(port);
    let mut workers = std::collections::HashSet::new();
    for _ in 0..8 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let (status, _, body) = exchange(
            &mut c,
            &format!("GET /whoami HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n"),
        );
        assert_eq!(status, 200);
        workers.insert(body);
    }
    assert_eq!(workers.len(), 1, "{workers:?}");
}

#[test]
fn idle_sessions_outlive_the_proxy_read_timeout() {
    // 70 s of silence between application messages: longer than pingora's 60 s downstream
    // read timeout, so only engine.io pings keep these sessions alive, as they must.
    let (mut r, url) = cluster("");
    let s = run_clients(
        &url,
        &[
            "--clients",
            "40",
            "--transports",
            "default",
            "--hold-ms",
            "70000",
            "--broadcasts",
            "2",
            "--timeout-ms",
            "120000",
        ],
    );
    eprintln!("idle: {s}");
    assert_clean(&s, 40);
    let polling = run_clients(
        &url,
        &[
            "--clients",
            "8",
            "--transports",
            "polling",
            "--broadcasts",
            "1",
        ],
    );
    assert_eq!(polling["sessionUnknown"], 0, "{polling}");
    // The proxy stops with the workers, without pingora's 300 s grace period.
    r.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(r.wait_exit(), Some(0));
}
