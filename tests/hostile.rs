//! Hostile clients, one attack a test: each checks what the proxy does to the attacker, that a
//! legitimate client is served during the attack, and that the daemon is back to normal after
//! it (memory, CPU, control socket). Timeouts are configured short so the suite stays quick.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{
    Rtsup, connect_from, cpu_share, exchange, fixture_cluster, handshake_from, http_get, metric,
    rss_kb, status_of, wait_until, websocket_upgrade,
};

/// Where the legitimate client connects from; attackers use 127.0.0.1.
const LEGIT: [u8; 4] = [127, 0, 0, 9];

/// Bound on a legitimate handshake's p99 during an attack (generous: CI machines are slow).
const LEGIT_P99: Duration = Duration::from_secs(2);

/// A fixture cluster of 2 workers behind the balancer with `balancer_extra` settings.
fn cluster(balancer_extra: &str) -> (Rtsup, u16) {
    fixture_cluster(balancer_extra, "", None)
}

/// `n` handshakes from [`LEGIT`], one after another; all must succeed; returns their p99.
fn legit_handshakes(lb: u16, n: usize) -> Duration {
    let mut took: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            let (status, _) = handshake_from(LEGIT, lb);
            assert_eq!(status, 200, "legitimate handshake {i} during the attack");
            t.elapsed()
        })
        .collect();
    took.sort();
    took[(n * 99 / 100).min(n - 1)]
}

/// How long until the proxy closes `c`, writing `drip` every 200 ms meanwhile (None: idle);
/// `None` if it is still open after `limit`.
fn closed_after(mut c: TcpStream, drip: Option<&[u8]>, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    while t.elapsed() < limit {
        if let Some(d) = drip
            && c.write_all(d).is_err()
        {
            return Some(t.elapsed());
        }
        match c.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(t.elapsed()),
        }
    }
    None
}

/// A connection to `lb` kept alive after one `GET /` (with the fields `extra`) answered 200.
fn after_one_request(lb: u16, extra: &str) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", lb)).expect("connect");
    c.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes())
        .expect("write");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).expect("the first answer");
    assert_eq!(status_of(&buf[..n]), 200);
    c
}

/// After an attack: the control socket answers and the daemon idles.
fn back_to_normal(r: &Rtsup) {
    wait_until("the control socket answers", || r.try_status().map(|_| ()));
    wait_until("the daemon idles again", || {
        let share = cpu_share(r.pid(), Duration::from_millis(500));
        if share < 0.25 {
            Ok(())
        } else {
            Err(format!("{:.0} % of a core", share * 100.0))
        }
    });
}

#[test]
fn long_request_lines_and_large_headers_are_answered_by_the_proxy_without_forwarding() {
    // The fixture worker (Node, 16 KiB header limit) would answer all of these 200: a 414 or
    // 431 can only come from the proxy.
    let (r, lb) = cluster("max_request_line = \"2KiB\"\nmax_header = \"4KiB\"\n");
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(3000));
    assert_eq!(exchange(lb, long_line.as_bytes()), 414);
    // Blank lines before the request line do not hide it from the limit.
    let after_blank = format!(
        "\r\n\r\nGET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(3000)
    );
    assert_eq!(exchange(lb, after_blank.as_bytes()), 414);
    // The limit is the line without its ending, whichever ending the client uses.
    let line = |len: usize, ending: &str| {
        let target = "a".repeat(len - "GET / HTTP/1.1".len());
        format!("GET /{target} HTTP/1.1{ending}Host: x{ending}Connection: close{ending}{ending}")
    };
    for ending in ["\r\n", "\n"] {
        assert_eq!(
            exchange(lb, line(2048, ending).as_bytes()),
            200,
            "{ending:?}"
        );
        assert_eq!(
            exchange(lb, line(2049, ending).as_bytes()),
            414,
            "{ending:?}"
        );
    }
    let large = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-Pad: 0123456789012345678901234567890123456789\r\n".repeat(120)
    );
    assert_eq!(exchange(lb, large.as_bytes()), 431);
    // Under the limits, the same requests go through.
    let fits = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(1500)
    );
    assert_eq!(exchange(lb, fits.as_bytes()), 200);
    // A megabyte of header that never ends is cut off at the limit, not read to the end.
    let t = Instant::now();
    let endless = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}",
        "a".repeat(1 << 20)
    );
    let status = exchange(lb, endless.as_bytes());
    assert!(status == 431 || status == 0, "got {status}");
    assert!(t.elapsed() < Duration::from_secs(5));
    wait_until("counted", || {
        let long = metric(
            &r,
            "rtsup_balancer_header_errors_total{kind=\"line_too_long\"}",
        )?;
        let large = metric(&r, "rtsup_balancer_header_errors_total{kind=\"too_large\"}")?;
        if long >= 1 && large >= 2 {
            Ok(())
        } else {
            Err(format!("line_too_long {long}, too_large {large}"))
        }
    });
    assert!(legit_handshakes(lb, 20) < LEGIT_P99);
    back_to_normal(&r);
}

#[test]
fn header_body_and_idle_timeouts_apply_to_every_request_of_a_connection() {
    let (r, lb) =
        cluster("header_timeout = \"1s\"\nbody_timeout = \"1s\"\nkeepalive_timeout = \"2s\"\n");
    let after_one_request = |extra: &str| after_one_request(lb, extra);
    let fresh = || TcpStream::connect(("127.0.0.1", lb)).expect("connect");
    let limit = Duration::from_secs(10);
    let cases: Vec<(&str, TcpStream, Option<&'static [u8]>, Duration)> = vec![
        (
            "a header dripped on a new connection",
            {
                let mut c = fresh();
                c.write_all(b"GET / HTTP/1.1\r\n").expect("write");
                c
            },
            Some(b"X-a: b\r\n"),
            Duration::from_secs(1),
        ),
        (
            "a header dripped after a first request",
            {
                let mut c = after_one_request("");
                c.write_all(b"GET / HTTP/1.1\r\n").expect("write");
                c
            },
            Some(b"X-a: b\r\n"),
            Duration::from_secs(1),
        ),
        (
            "half a request line after a first request",
            {
                let mut c = after_one_request("");
                c.write_all(b"GET /some").expect("write");
                c
            },
            None,
            Duration::from_secs(1),
        ),
        (
            "an idle kept-alive connection",
            after_one_request(""),
            None,
            Duration::from_secs(2),
        ),
        (
            "an idle connection after an upgrade the worker refused",
            after_one_request("Upgrade: websocket\r\nConnection: Upgrade\r\n"),
            None,
            Duration::from_secs(2),
        ),
        (
            "a new connection that never sends",
            fresh(),
            None,
            Duration::from_secs(1),
        ),
        (
            "a body that stops coming",
            {
                let mut c = fresh();
                c.write_all(
                    b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nsome",
                )
                .expect("write");
                c
            },
            None,
            Duration::from_secs(1),
        ),
    ];
    let waits: Vec<_> = cases
        .into_iter()
        .map(|(what, c, drip, timeout)| {
            std::thread::spawn(move || (what, timeout, closed_after(c, drip, limit)))
        })
        .collect();
    assert!(legit_handshakes(lb, 20) < LEGIT_P99);
    for w in waits {
        let (what, timeout, closed) = w.join().expect("join");
        let closed = closed.unwrap_or_else(|| panic!("{what}: still open after {limit:?}"));
        // Closed by the timeout: not before most of it, and not long after it.
        assert!(
            closed >= timeout.mul_f64(0.7) && closed <= timeout + Duration::from_secs(4),
            "{what}: closed after {closed:?}, timeout {timeout:?}"
        );
    }
    back_to_normal(&r);
}

#[test]
fn connections_over_the_per_address_share_or_the_total_are_refused_and_others_served() {
    let (r, lb) = cluster("max_connections = 30\nmax_connections_per_address = 10\n");
    let hold = |from: [u8; 4], n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|_| connect_from(from, lb).expect("connect"))
            .collect()
    };
    let refused_with = |from: [u8; 4]| {
        let mut c = connect_from(from, lb).expect("connect");
        // A loaded machine (the whole suite in parallel) may take a while to answer.
        c.set_read_timeout(Some(crate::harness::patience()))
            .expect("timeout");
        let mut resp = Vec::new();
        let t = Instant::now();
        let read = c.read_to_end(&mut resp);
        // What the client saw, for a failure's message: an answer, a reset, or a wait.
        let seen = format!("{read:?} after {:?}", t.elapsed());
        (status_of(&resp), seen)
    };
    let open = |n: u64| {
        wait_until(&format!("{n} connections open"), || {
            match metric(&r, "rtsup_balancer_connections")? {
                m if m == n => Ok(()),
                m => Err(format!("{m} open")),
            }
        })
    };
    // The fixture's own readiness request from 127.0.0.1 may still be counted (until the proxy
    // reads its close): with it, the gauge could read 10 while the tenth held connection is
    // not yet admitted, and the eleventh, admitted in its place, would wait for a header.
    open(0);
    let first = hold([127, 0, 0, 1], 10);
    open(10);
    let (status, seen) = refused_with([127, 0, 0, 1]);
    assert_eq!(status, 429, "over its address's share ({seen})");
    assert!(
        legit_handshakes(lb, 10) < LEGIT_P99,
        "another address is served"
    );
    // The proxy counts a connection until it reads the client's close: the last legitimate
    // one may still be counted, and would take one of the 20 places below.
    open(10);
    let second = hold([127, 0, 0, 2], 10);
    let third = hold([127, 0, 0, 3], 10);
    open(30);
    let (status, seen) = refused_with([127, 0, 0, 4]);
    assert_eq!(status, 503, "over the total ({seen})");
    wait_until("both refusals counted", || {
        let per = metric(
            &r,
            "rtsup_balancer_connections_refused_total{cap=\"per_address\"}",
        )?;
        let total = metric(
            &r,
            "rtsup_balancer_connections_refused_total{cap=\"total\"}",
        )?;
        if per >= 1 && total >= 1 {
            Ok(())
        } else {
            Err(format!("per_address {per}, total {total}"))
        }
    });
    drop((first, second, third));
    wait_until("served again once they close", || {
        match handshake_from([127, 0, 0, 1], lb).0 {
            200 => Ok(()),
            s => Err(format!("status {s}")),
        }
    });
    let log = r.daemon_log();
    assert!(
        log.matches("refusing client connections").count() <= 1,
        "refusals are warned about once per period:\n{log}"
    );
    back_to_normal(&r);
}

#[test]
fn half_requests_that_would_use_up_descriptors_never_cost_the_supervisor() {
    // 256 descriptors: the proxy's share is a few dozen connections; 400 half requests from
    // one address would have taken every descriptor, failed the liveness checks and had
    // healthy workers replaced.
    let (r, lb) = fixture_cluster(
        "max_connections_per_address = 20\n",
        "health_interval = \"200ms\"\nhealth_timeout = \"1s\"\n",
        Some("-n 256"),
    );
    let pids: Vec<_> = r.workers().iter().map(|w| w["pid"].clone()).collect();
    let mut held = Vec::new();
    for _ in 0..400 {
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", lb)) {
            let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n");
            held.push(c);
        }
    }
    // Several liveness periods pass with the attack in place.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        assert!(
            r.try_status().is_ok(),
            "the control socket answers during the attack"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(legit_handshakes(lb, 10) < LEGIT_P99);
    let now: Vec<_> = r.workers().iter().map(|w| w["pid"].clone()).collect();
    assert_eq!(
        pids,
        now,
        "no healthy worker was replaced:\n{}",
        r.daemon_log()
    );
    drop(held);
    back_to_normal(&r);
    assert!(http_get(lb, "/").is_ok());
}

#[test]
fn a_flood_of_endless_headers_costs_bounded_memory() {
    let (r, lb) = cluster("");
    let before = rss_kb(r.pid());
    let pid = r.pid();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    // 300 connections each sending a megabyte of header without its end: before the limits,
    // each cost the proxy about a megabyte.
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let chunk = vec![b'a'; 64 * 1024];
                let mut held = Vec::new();
                for _ in 0..75 {
                    let Ok(mut c) = TcpStream::connect(("127.0.0.1", lb)) else {
                        continue;
                    };
                    let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
                    let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ");
                    for _ in 0..16 {
                        if c.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    held.push(c);
                }
                held
            })
        })
        .collect();
    let held: Vec<TcpStream> = attackers
        .into_iter()
        .flat_map(|a| a.join().expect("join"))
        .collect();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    assert!(legit_handshakes(lb, 20) < LEGIT_P99);
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "300 endless headers grew the daemon by {grown} KiB (from {before} KiB)"
    );
    drop(held);
    back_to_normal(&r);
}

#[test]
fn clients_that_give_up_mid_header_are_counted_not_logged() {
    let (r, lb) = cluster("");
    for i in 0..200 {
        let mut c = TcpStream::connect(("127.0.0.1", lb)).expect("connect");
        let _ = c.write_all(format!("GET /{i} HTTP/1.1\r\nHost: x\r\nX-Half").as_bytes());
        drop(c);
    }
    assert!(legit_handshakes(lb, 10) < LEGIT_P99);
    wait_until("counted", || {
        let n = metric(&r, "rtsup_balancer_header_errors_total{kind=\"closed\"}")?;
        if n >= 150 {
            Ok(())
        } else {
            Err(format!("closed {n}"))
        }
    });
    let noisy = crate::harness::loud_lines(&r);
    assert!(noisy.is_empty(), "{noisy:#?}");
    back_to_normal(&r);
}

/// Read from `c` until `have` holds `want` exactly.
fn read_exactly(c: &mut TcpStream, mut have: Vec<u8>, want: &[u8]) {
    let mut buf = [0u8; 1024];
    while have.len() < want.len() {
        let n = c.read(&mut buf).expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&have));
        have.extend_from_slice(&buf[..n]);
    }
    assert_eq!(have, want);
}

#[test]
fn websockets_hold_their_places_under_the_caps_until_they_close_and_carry_bytes_both_ways() {
    let (r, lb) = cluster("max_connections = 4\nmax_connections_per_address = 0\n");
    let open = |n: u64| {
        wait_until(&format!("{n} connections open"), || {
            match metric(&r, "rtsup_balancer_connections")? {
                m if m == n => Ok(()),
                m => Err(format!("{m} open")),
            }
        })
    };
    let echo = |c: &mut TcpStream, what: &str| {
        c.write_all(what.as_bytes()).expect("write");
        read_exactly(c, Vec::new(), what.as_bytes());
    };
    let mut sockets: Vec<TcpStream> = (0..4)
        .map(|i| {
            // What the worker sends with its 101 reaches the client, then both ways flow.
            let (mut c, early) = websocket_upgrade(lb, &format!("/tunnel?hello=hi{i}"));
            read_exactly(&mut c, early, format!("hi{i}").as_bytes());
            echo(&mut c, &format!("ping {i}"));
            c
        })
        .collect();
    open(4);
    let mut fifth = TcpStream::connect(("127.0.0.1", lb)).expect("connect");
    fifth
        .set_read_timeout(Some(crate::harness::patience()))
        .expect("timeout");
    let mut resp = Vec::new();
    let _ = fifth.read_to_end(&mut resp);
    assert_eq!(status_of(&resp), 503, "four WebSockets fill the cap");
    sockets.truncate(2);
    open(2);
    assert!(
        http_get(lb, "/health").is_ok(),
        "places freed by the closed ones"
    );
    for (i, c) in sockets.iter_mut().enumerate() {
        echo(c, &format!("still there {i}"));
    }
    drop(sockets);
    open(0);
}

#[test]
fn a_websocket_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let (r, lb) = cluster("send_timeout = \"1s\"\n");
    // 64 MiB from the worker fill every socket buffer on the way; the client never reads.
    let (c, _) = websocket_upgrade(lb, "/tunnel?flood_kb=65536");
    wait_until("the stalled WebSocket is dropped", || {
        match metric(&r, "rtsup_balancer_connections")? {
            0 => Ok(()),
            m => Err(format!("{m} open")),
        }
    });
    drop(c);
    back_to_normal(&r);
}

/// rtsup's connections to the workers' `ports` (from `/proc/net/tcp`), by TCP state:
/// `01` established, `08` close-wait (the worker closed, rtsup has not).
fn upstream_states(ports: &[u16]) -> Vec<String> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    tcp.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let remote = u16::from_str_radix(f.get(2)?.rsplit(':').next()?, 16).ok()?;
            ports
                .contains(&remote)
                .then(|| f.get(3).map(|s| s.to_string()))?
        })
        .collect()
}

/// The ports of `r`'s two workers.
fn worker_ports(r: &Rtsup) -> Vec<u16> {
    let workers: Vec<u16> = r
        .workers()
        .iter()
        .filter_map(|w| w["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
        .collect();
    assert_eq!(workers.len(), 2, "{workers:?}");
    workers
}

/// `n` requests through the balancer at `lb`, each answered by a worker: they leave
/// kept-alive connections to the workers.
fn requests(lb: u16, round: usize, n: usize) {
    for i in 0..n {
        let reply = http_get(lb, "/").unwrap_or_else(|e| panic!("round {round} #{i}: {e}"));
        assert!(reply.contains("instance"), "round {round} #{i}: {reply}");
    }
}

#[test]
fn upstream_connections_a_worker_closes_while_idle_are_dropped_and_never_reused() {
    let (r, lb) = fixture_cluster("", "env = { FIXTURE_KEEPALIVE_MS = \"300\" }\n", None);
    let workers = worker_ports(&r);
    for round in 0..3 {
        // Requests through the balancer leave kept-alive connections to the workers...
        requests(lb, round, 6);
        // ...which the workers close after 300 ms idle: rtsup drops its side too (no
        // connection left half-closed), and the next round is served on new ones.
        wait_until("the idle upstream connections closed on both sides", || {
            let states = upstream_states(&workers);
            if states.iter().any(|s| s == "01" || s == "08") {
                Err(format!("{states:?}"))
            } else {
                Ok(())
            }
        });
    }
}

#[test]
fn idle_upstream_connections_are_closed_by_the_proxy_before_the_worker_would() {
    // The workers keep an idle connection a minute; the proxy lets it go after 300 ms, so a
    // worker never closes one just as a request goes out on it.
    let (r, lb) = fixture_cluster(
        "upstream_keepalive_timeout = \"300ms\"\n",
        "env = { FIXTURE_KEEPALIVE_MS = \"60000\" }\n",
        None,
    );
    let workers = worker_ports(&r);
    for round in 0..2 {
        requests(lb, round, 4);
        // The proxy's sockets end in TIME_WAIT (`06`), which only the side that closes first
        // enters: it closed them, none is left open (`01`) or half-closed by a worker (`08`).
        wait_until("the proxy closing its idle upstream connections", || {
            let states = upstream_states(&workers);
            if states.iter().any(|s| s == "06") && !states.iter().any(|s| s == "01" || s == "08") {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        });
    }
}

#[test]
fn idle_kept_alive_connections_are_closed_as_soon_as_shutdown_begins() {
    // Closed at once, as a connection that never sent a request is: a client must not send
    // a request on a connection the stopping proxy would drop unanswered.
    let (r, lb) = cluster("keepalive_timeout = \"60s\"\n");
    let kept = after_one_request(lb, "");
    let fresh = TcpStream::connect(("127.0.0.1", lb)).expect("connect");
    // Both accepted and waiting before the signal.
    wait_until("both connections counted", || {
        match metric(&r, "rtsup_balancer_connections")? {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} open")),
        }
    });
    r.signal(nix::sys::signal::Signal::SIGTERM);
    let limit = Duration::from_secs(10);
    let fresh_closed = std::thread::spawn(move || closed_after(fresh, None, limit));
    let kept_closed = closed_after(kept, None, limit).expect("the kept-alive connection closed");
    let fresh_closed = fresh_closed
        .join()
        .expect("thread")
        .expect("the unused connection closed");
    assert!(
        kept_closed <= fresh_closed + Duration::from_millis(500),
        "kept-alive closed after {kept_closed:?}, an unused one after {fresh_closed:?}"
    );
}
