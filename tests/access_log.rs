//! The balancer's access log: one line per request and per WebSocket when it closes, in
//! nginx's combined format (default) or JSON, naming the worker and why; never a whole sid;
//! `rtsup logs --access`; `access_log = "off"`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Rtsup, ports, reference_app, roundtrip, wait_until};

/// A handshake, a POST of the session, a WebSocket-first session opened and closed, a plain
/// GET and a request with an unknown sid; returns the sid.
fn traffic(lb: u16) -> String {
    let open = roundtrip(
        lb,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nUser-Agent: test-agent\r\nConnection: close\r\n\r\n",
    );
    let sid = open
        .split("\"sid\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no sid in {open}"))
        .to_string();
    let post = roundtrip(
        lb,
        &format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n40"
        ),
    );
    assert!(post.starts_with("HTTP/1.1 200"), "{post}");
    let mut ws = TcpStream::connect(("127.0.0.1", lb)).expect("connect");
    ws.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    ws.write_all(
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("upgrade");
    let mut buf = [0u8; 512];
    let n = ws.read(&mut buf).expect("101");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(ws);
    let health = roundtrip(
        lb,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let unknown = roundtrip(
        lb,
        "GET /socket.io/?EIO=4&transport=polling&sid=NoSuchSessionAtAll00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(unknown.starts_with("HTTP/1.1 400"), "{unknown}");
    sid
}

/// The access log's lines once it holds `n`.
fn lines(r: &Rtsup, n: usize) -> Vec<String> {
    let path = r.log_dir.join("access.log");
    wait_until(&format!("{n} access log lines"), || {
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            Ok(lines)
        } else {
            Err(text)
        }
    })
}

#[test]
fn json_lines_name_worker_and_route_and_never_a_whole_sid() {
    let base = ports::block(6).base;
    let lb = base + 5;
    let r = Rtsup::start(&format!(
        "{}access_log_format = \"json\"\n",
        reference_app(2, base, lb, "")
    ));
    r.wait_all_ready();
    let sid = traffic(lb);
    let lines = lines(&r, 5);
    let entries: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for l in &lines {
        assert!(!l.contains(&sid), "a whole sid in the access log: {l}");
    }
    let find = |pred: &dyn Fn(&Value) -> bool| -> &Value {
        entries
            .iter()
            .find(|e| pred(e))
            .unwrap_or_else(|| panic!("no such line in {lines:#?}"))
    };
    let open = find(&|e| e["target"] == "/socket.io/?EIO=4&transport=polling");
    assert_eq!(open["route"], "new-session", "{open}");
    assert_eq!(open["status"], 200, "{open}");
    assert_eq!(open["client"], "127.0.0.1", "{open}");
    assert_eq!(open["user_agent"], "test-agent", "{open}");
    let post = find(&|e| e["method"] == "POST");
    assert_eq!(post["route"], "sid", "{post}");
    assert_eq!(
        post["worker"], open["worker"],
        "the session stayed on its worker: {post}"
    );
    assert_eq!(
        post["target"],
        format!("/socket.io/?EIO=4&transport=polling&sid={}…", &sid[..4]),
        "{post}"
    );
    let ws = find(&|e| e["websocket"] == true);
    assert_eq!(ws["status"], 101, "{ws}");
    assert_eq!(ws["route"], "new-session", "{ws}");
    assert!(
        ws["worker"].as_str().is_some_and(|w| w.starts_with("ref:")),
        "{ws}"
    );
    assert!(ws["duration_ms"].as_f64().is_some(), "{ws}");
    let health = find(&|e| e["target"] == "/health");
    assert_eq!(health["route"], "round-robin", "{health}");
    let unknown = find(&|e| e["status"] == 400);
    assert_eq!(unknown["route"], "sid-unknown", "{unknown}");
    assert!(unknown["worker"].is_null(), "{unknown}");
}

#[test]
fn combined_lines_by_default_and_rtsup_logs_access() {
    let base = ports::block(6).base;
    let lb = base + 5;
    let r = Rtsup::start(&reference_app(2, base, lb, ""));
    r.wait_all_ready();
    let sid = traffic(lb);
    let lines = lines(&r, 5);
    for l in &lines {
        assert!(!l.contains(&sid), "{l}");
        // 127.0.0.1 - - [01/Dec/2026:17:50:00 +0000] "GET /x HTTP/1.1" 200 12 "-" "-" rt=0.001 worker=ref:0#1 route=sid
        let (client, rest) = l.split_once(" - - [").unwrap_or_else(|| panic!("{l}"));
        assert_eq!(client, "127.0.0.1", "{l}");
        let (time, rest) = rest.split_once("] \"").unwrap_or_else(|| panic!("{l}"));
        assert!(time.len() == 26 && time.ends_with(" +0000"), "{l}");
        let (request, rest) = rest.split_once("\" ").unwrap_or_else(|| panic!("{l}"));
        assert_eq!(request.split(' ').count(), 3, "{l}");
        let mut f = rest.split(' ');
        let status: u16 = f
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{l}"));
        assert!((100..600).contains(&status), "{l}");
        assert!(
            f.next().and_then(|b| b.parse::<u64>().ok()).is_some(),
            "{l}"
        );
        assert!(
            l.contains(" rt=") && l.contains(" worker=") && l.contains(" route="),
            "{l}"
        );
    }
    let out = r.cli(&["logs", "--access", "-n", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let printed: Vec<&str> = text.lines().collect();
    assert_eq!(printed, lines[lines.len() - 2..], "{text}");
}

#[test]
fn access_log_off_writes_nothing() {
    let base = ports::block(6).base;
    let lb = base + 5;
    let r = Rtsup::start(&format!(
        "{}access_log = \"off\"\n",
        reference_app(2, base, lb, "")
    ));
    r.wait_all_ready();
    traffic(lb);
    assert!(!r.log_dir.join("access.log").exists());
}
