//! Bad input never takes the proxy down: oversized headers, garbage request lines, invalid
//! bytes and slowloris clients get 4xx or a closed connection, and everyone else is served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{
    self, Rtsup, exchange, field, fixture_cluster, handshake_from, http_get, metric, status_of,
    wait_until,
};

fn cluster() -> (Rtsup, u16) {
    fixture_cluster("", "", None)
}

#[test]
fn malformed_requests_get_4xx_and_the_proxy_keeps_serving() {
    let (_r, lb) = cluster();
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage request line", b"HELLO THERE\r\n\r\n".to_vec()),
        ("binary noise", (0..=255u8).cycle().take(4096).collect()),
        ("oversized header", huge.into_bytes()),
        ("bad header name", b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n".to_vec()),
        ("invalid header bytes", b"GET / HTTP/1.1\r\nHost: x\r\nX: \x00\x01\xff\r\n\r\n".to_vec()),
        ("bad content-length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".to_vec()),
        ("garbage sid", b"GET /socket.io/?EIO=4&transport=polling&sid=%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%% HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("forged cookie", b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nCookie: rtsup=zz.zz; rtsup=..\r\n\r\n".to_vec()),
    ];
    for (what, bytes) in cases {
        let status = exchange(lb, &bytes);
        match what {
            // The forged cookie is ignored: a normal handshake answered by a worker.
            "forged cookie" => assert_eq!(status, 200, "{what}"),
            _ => assert!(
                status == 0 || (400..500).contains(&status),
                "{what}: got {status}"
            ),
        }
        assert!(
            http_get(lb, "/").is_ok(),
            "the proxy stopped serving after: {what}"
        );
    }
}

#[test]
fn slowloris_clients_do_not_starve_others() {
    let (_r, lb) = cluster();
    // 300 connections that send a header a byte at a time and never finish.
    let mut slow: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", lb)).ok())
        .collect();
    assert!(slow.len() >= 250, "could not open the slow connections");
    for round in 0..5 {
        for c in &mut slow {
            let _ = c.write_all(if round == 0 {
                b"GET / HTTP/1.1\r\n"
            } else {
                b"X-a: b\r\n"
            });
        }
        for _ in 0..20 {
            assert!(
                http_get(lb, "/").is_ok(),
                "a normal request failed while slow clients hang"
            );
        }
    }
    drop(slow);
    assert!(http_get(lb, "/").is_ok());
}

#[test]
fn a_session_flood_from_one_address_gets_429_and_others_are_served() {
    let (r, lb) = fixture_cluster("session_rate = 2\nsession_burst = 5\n", "", None);
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..30 {
        let (status, after) = handshake_from([127, 0, 0, 1], lb);
        statuses.push(status);
        retry = retry.or(after);
    }
    let served = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert!(
        (5..=8).contains(&served),
        "the burst, and a token or two: {statuses:?}"
    );
    assert_eq!(served + limited, 30, "{statuses:?}");
    assert_eq!(retry.as_deref(), Some("1"), "429 says when to come back");
    // Another address is not held back by the flood.
    assert_eq!(handshake_from([127, 0, 0, 2], lb).0, 200);
    // Requests of existing sessions are never limited.
    assert!(http_get(lb, "/anything").is_ok());
    drop(r);
}

#[test]
fn clients_that_hang_up_mid_body_are_counted_not_logged_as_errors() {
    let (r, lb) = cluster();
    for _ in 0..20 {
        let mut c = TcpStream::connect(("127.0.0.1", lb)).expect("connect");
        let _ = c.write_all(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nonly a little",
        );
        std::thread::sleep(Duration::from_millis(20));
        drop(c);
    }
    assert!(http_get(lb, "/").is_ok(), "still serving");
    wait_until("the failures counted", || {
        let n = metric(&r, "rtsup_balancer_client_errors_total")?;
        if n >= 10 {
            Ok(())
        } else {
            Err(format!("client_errors {n}"))
        }
    });
    let errors = r
        .daemon_log()
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .count();
    assert_eq!(errors, 0, "{}", r.daemon_log());
}

/// Held and abandoned `/hold` requests, summed over the cluster's two fixture workers (ports
/// `lb - 4` and `lb - 3`), asked directly.
fn held_requests(lb: u16) -> Result<(u64, u64), String> {
    let mut open = 0;
    let mut abandoned = 0;
    for port in [lb - 4, lb - 3] {
        let body = http_get(port, "/held")?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        open += v["open"].as_u64().ok_or("no open count")?;
        abandoned += v["abandoned"].as_u64().ok_or("no abandoned count")?;
    }
    Ok((open, abandoned))
}

#[test]
fn a_client_that_leaves_a_held_request_releases_it_at_the_worker() {
    let (_r, lb) = cluster();
    // A request the worker holds without answering, as an engine.io long poll is held.
    let mut c = TcpStream::connect(("127.0.0.1", lb)).expect("connect");
    c.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    wait_until("the worker holds the request", || {
        match held_requests(lb)? {
            (1, 0) => Ok(()),
            other => Err(format!("open, abandoned: {other:?}")),
        }
    });
    // The client leaves: the proxy gives up the upstream request at once (not after its read
    // timeout), so the worker sees its connection close.
    drop(c);
    wait_until(
        "the worker sees the request abandoned",
        || match held_requests(lb)? {
            (0, 1) => Ok(()),
            other => Err(format!("open, abandoned: {other:?}")),
        },
    );
    assert!(http_get(lb, "/").is_ok(), "still serving");
}

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    let (_r, lb) = cluster();
    let mut c = TcpStream::connect(("127.0.0.1", lb)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // Three requests in one write; the last one closes the connection.
    c.write_all(
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\nGET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("write");
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    let answers = resp.matches("HTTP/1.1 200").count();
    assert_eq!(answers, 3, "every pipelined request is answered:\n{resp}");
}

/// Send `request` on a new connection; what came back, and whether the proxy closed the
/// connection within 5 s.
fn answer_then_close(lb: u16, request: &[u8]) -> (String, bool) {
    harness::answer_then_close(lb, request, Duration::from_secs(5))
}

#[test]
fn framing_an_upstream_or_client_would_misread_is_refused_or_rewritten_as_nginx_does() {
    let (r, lb) = cluster();

    // A Content-Length list of one value goes on as that value: Node refuses the list itself.
    let (resp, _) = answer_then_close(
        lb,
        b"POST /headers HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(status_of(resp.as_bytes()), 200, "{resp}");
    assert!(resp.contains(r#""content-length":"5""#), "{resp}");

    // Transfer codings other than chunked are not implemented (the proxy would drop them).
    for te in [
        "gzip, chunked",
        "chunked, chunked",
        "chunked\r\nTransfer-Encoding: chunked",
    ] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let (resp, closed) = answer_then_close(lb, request.as_bytes());
        assert_eq!(status_of(resp.as_bytes()), 501, "{te}: {resp}");
        assert!(closed, "{te}: the connection stayed open");
    }
    let (resp, _) = answer_then_close(
        lb,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(status_of(resp.as_bytes()), 200, "plain chunked: {resp}");

    // An HTTP/1.0 client gets a chunked upstream body de-chunked, ended by the close.
    let (resp, closed) = answer_then_close(
        lb,
        b"GET /chunked HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    );
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    assert_eq!(status_of(head.as_bytes()), 200, "{resp}");
    assert_eq!(field(head, "transfer-encoding"), None, "{resp}");
    assert_eq!(field(head, "connection"), Some("close"), "{resp}");
    assert_eq!(body, "hello chunked");
    assert!(closed, "the HTTP/1.0 connection stayed open");
    // An HTTP/1.1 client still gets it chunked, kept alive.
    let (resp, _) = answer_then_close(
        lb,
        b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(field(&resp, "transfer-encoding"), Some("chunked"), "{resp}");

    // An HTTP/1.0 client never gets a 1xx (Node answers Expect with a 100 Continue).
    let (resp, _) = answer_then_close(
        lb,
        b"POST / HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(status_of(resp.as_bytes()), 200, "{resp}");

    // A 101 that upgrades nothing is the upstream's fault: 502, closed. To a request that
    // asked for no upgrade, and in an HTTP/1.0 status line to one that did.
    let websocket = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13";
    for request in [
        "GET /switch HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        format!("GET /tunnel10 HTTP/1.1\r\nHost: x\r\n{websocket}\r\n\r\n"),
    ] {
        let (resp, closed) = answer_then_close(lb, request.as_bytes());
        assert_eq!(status_of(resp.as_bytes()), 502, "{request}: {resp}");
        assert!(
            closed,
            "{request}: the connection stayed open after the 502"
        );
    }
    assert_eq!(
        metric(
            &r,
            "rtsup_balancer_header_errors_total{kind=\"unsupported_coding\"}"
        ),
        Ok(3),
        "the 501s are counted"
    );

    assert!(http_get(lb, "/").is_ok(), "the proxy stopped serving");
}
