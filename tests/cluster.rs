//! Several hosts: three rtsup "hosts" on 127.0.0.2, 127.0.0.3 and 127.0.0.4 (all of 127/8
//! is loopback on Linux), each with two reference workers, sharing sessions and rooms through
//! one private Redis; clients send each request to a random host, as behind a load balancer
//! that is not sticky.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::{PrivateRedis, Rtsup, ports, run_node, wait_until};

/// One three-host cluster at a time: each is nine processes and a Redis, and the rest of the
/// suite runs beside them on two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One host: its daemon and where its balancer listens.
struct Host {
    rtsup: Rtsup,
    addr: SocketAddr,
}

/// Start host `n` (127.0.0.n) of cluster `name` on `redis_port`; its workers from `port`,
/// its balancer on `lb`.
fn host(n: u8, name: &str, redis_port: u16, port: u16, lb: u16) -> Host {
    let redis = format!("redis://127.0.0.1:{redis_port}");
    let app = format!(
        "[[app]]\nname = \"chat\"\ncommand = {:?}\nargs = [\"worker\"]\ninstances = 2\nport = {port}\n\
         ready = \"http:/health\"\ndrain_timeout = \"1s\"\nclose_window = \"100ms\"\n\
         env = {{ REDIS_URL = {redis:?}, RTSUP_ADAPTER_PREFIX = \"{name}\" }}\n",
        crate::harness::rtsup_bin()
    );
    host_with(n, name, redis_port, &app, lb)
}

/// Host `n` running `app` (an `[[app]]` named "chat").
fn host_with(n: u8, name: &str, redis_port: u16, app: &str, lb: u16) -> Host {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)), lb);
    let redis = format!("redis://127.0.0.1:{redis_port}");
    let body = format!(
        "{app}\n[balancer]\nlisten = \"{addr}\"\nthreads = 2\ncookie_secret = \"a secret shared by every host\"\n\n\
         [cluster]\nname = \"{name}\"\nredis = {redis:?}\nadvertise = \"{addr}\"\n"
    );
    let rtsup = Rtsup::start(&body);
    rtsup.wait_all_ready();
    Host { rtsup, addr }
}

/// Three hosts sharing a private Redis; returns them once each sees the other two with every
/// worker ready.
fn three_hosts(redis_port: u16) -> Vec<Host> {
    let name = format!("t{}-{redis_port}", std::process::id());
    let block = ports::block(12);
    let base = block.base;
    let lb = ports::block(1).base;
    drop(block);
    let hosts: Vec<Host> = (0..3u8)
        .map(|i| host(2 + i, &name, redis_port, base + u16::from(i) * 4, lb))
        .collect();
    for h in &hosts {
        wait_until("every host sees 6 ready workers", || {
            let text = cluster_status(&h.rtsup);
            if text.matches(" ready").count() == 6 && text.contains("3 host(s)") {
                Ok(())
            } else {
                Err(text)
            }
        });
    }
    hosts
}

/// `rtsup status --cluster` of `r`, as printed.
fn cluster_status(r: &Rtsup) -> String {
    String::from_utf8_lossy(&r.cli(&["status", "--cluster"]).stdout).into_owned()
}

/// Wait until `r`'s `status --cluster` says `needle`.
fn wait_cluster(r: &Rtsup, what: &str, needle: &str) {
    wait_until(what, || {
        let text = cluster_status(r);
        if text.contains(needle) {
            Ok(())
        } else {
            Err(text)
        }
    });
}

/// One HTTP/1.1 request on a connection of its own; status and body.
fn request(to: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
        return (0, "connect failed".into());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, "write failed".into());
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

const EIO: &str = "/socket.io/?EIO=4&transport=polling";

/// A polling handshake at `to`: the sid.
fn handshake(to: SocketAddr) -> String {
    let (status, body) = request(to, "GET", EIO, "");
    assert_eq!(status, 200, "handshake at {to}: {body}");
    body.split("\"sid\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no sid in {body}"))
        .to_string()
}

/// A cheap random pick (no rand crate in the tests).
fn pick(seed: &mut u64, n: usize) -> usize {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed % n as u64) as usize
}

#[test]
fn a_thousand_sessions_spread_over_three_hosts_never_hear_session_id_unknown() {
    let _one = one_at_a_time();
    let redis_port = ports::block(1).base;
    let _redis = PrivateRedis::start(redis_port);
    let hosts = three_hosts(redis_port);
    let addrs: Vec<SocketAddr> = hosts.iter().map(|h| h.addr).collect();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15 ^ (t + 1);
                let mut failures = Vec::new();
                for _ in 0..250 {
                    let sid = handshake(addrs[pick(&mut seed, 3)]);
                    let path = format!("{EIO}&sid={sid}");
                    // Connect, read the connect answer, join a room: each at a random host.
                    for (method, body) in
                        [("POST", "40"), ("GET", ""), ("POST", r#"42["join","r"]"#)]
                    {
                        let (status, text) =
                            request(addrs[pick(&mut seed, 3)], method, &path, body);
                        if status != 200 {
                            failures.push(format!("{method} {status} {text}"));
                        }
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of 3,000 requests failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // A reconnecting client that carries host A's cookie lands on B: B forwards its handshake
    // to A from B's own address, and A sees the client, not B (a peer's X-Forwarded-For is
    // believed), so per-client limits stay per client.
    let mut s = TcpStream::connect(addrs[0]).expect("connect");
    write!(
        s,
        "GET {EIO} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let cookie = crate::harness::field(&resp, "set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no cookie in {resp}"))
        .to_string();
    let SocketAddr::V4(b) = addrs[1] else {
        unreachable!("the hosts are IPv4")
    };
    let mut s = crate::harness::connect_between([127, 0, 0, 50], b).expect("connect from .50");
    write!(
        s,
        "GET {EIO} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let access = hosts[0].rtsup.log_dir.join("access.log");
    wait_until("host A to log the client's own address", || {
        let log = std::fs::read_to_string(&access).unwrap_or_default();
        if log.lines().any(|l| l.starts_with("127.0.0.50 ")) {
            Ok(())
        } else {
            Err(log.lines().rev().take(3).collect::<Vec<_>>().join("\n"))
        }
    });
    // A sid nobody issued is still answered "unknown" (by every host).
    for a in &addrs {
        let (status, body) = request(*a, "GET", &format!("{EIO}&sid=nobody-issued-this"), "");
        assert_eq!(status, 400, "{body}");
    }
}

#[test]
fn a_room_broadcast_reaches_clients_on_every_host() {
    let _one = one_at_a_time();
    let redis_port = ports::block(1).base;
    let _redis = PrivateRedis::start(redis_port);
    let hosts = three_hosts(redis_port);
    let urls: Vec<String> = hosts.iter().map(|h| format!("http://{}", h.addr)).collect();
    let args: Vec<&str> = urls.iter().map(String::as_str).collect();
    let result = run_node("cluster_room.js", &args);
    assert_eq!(result["joined"], 3, "{result}");
    assert_eq!(
        result["received"].as_array().map(Vec::len),
        Some(3),
        "{result}"
    );
}

#[test]
fn stopping_a_host_moves_its_clients_elsewhere_within_5s() {
    let _one = one_at_a_time();
    let redis_port = ports::block(1).base;
    let _redis = PrivateRedis::start(redis_port);
    let mut hosts = three_hosts(redis_port);
    let (a, b) = (hosts[0].addr, hosts[1].addr);
    // Sessions of host A, reached through host B.
    let sids: Vec<String> = (0..10).map(|_| handshake(a)).collect();
    for sid in &sids {
        let (status, body) = request(b, "POST", &format!("{EIO}&sid={sid}"), "40");
        assert_eq!(status, 200, "{body}");
    }
    let stopped = Instant::now();
    let out = hosts[0].rtsup.cli(&["stop"]);
    assert!(out.status.success());
    hosts[0].rtsup.wait_exit();
    // B answers them "unknown" (so the clients reconnect), and takes their new sessions.
    for sid in &sids {
        wait_until("B to answer A's session unknown", || {
            match request(b, "POST", &format!("{EIO}&sid={sid}"), "40") {
                (400, body) if body.contains("Session ID unknown") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }
    let reconnected = handshake(b);
    let (status, body) = request(
        hosts[2].addr,
        "POST",
        &format!("{EIO}&sid={reconnected}"),
        "40",
    );
    assert_eq!(status, 200, "{body}");
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "clients moved after {took:?}"
    );
    let cluster = cluster_status(&hosts[1].rtsup);
    assert!(
        cluster.contains("2 host(s)") && !cluster.contains(&a.to_string()),
        "{cluster}"
    );
}

#[test]
fn redis_restarted_nothing_crashes_and_routing_across_hosts_recovers_within_5s() {
    let _one = one_at_a_time();
    let redis_port = ports::block(1).base;
    let mut redis = PrivateRedis::start(redis_port);
    let hosts = three_hosts(redis_port);
    let (a, b) = (hosts[0].addr, hosts[1].addr);
    redis.kill();
    // Each host keeps routing its own sessions, and says Redis is down.
    wait_cluster(
        &hosts[0].rtsup,
        "host A to notice Redis is down",
        "Redis DOWN",
    );
    let during = handshake(a);
    let (status, body) = request(a, "POST", &format!("{EIO}&sid={during}"), "40");
    assert_eq!(status, 200, "{body}");
    let restarted = Instant::now();
    let _redis = PrivateRedis::start(redis_port);
    // A session of A (one from the outage included) is routed from B again.
    wait_until("B to route A's sessions again", || {
        let fresh = handshake(a);
        let statuses: Vec<u16> = [&fresh, &during]
            .iter()
            .map(|sid| request(b, "POST", &format!("{EIO}&sid={sid}"), "40").0)
            .collect();
        if statuses == [200, 200] {
            Ok(())
        } else {
            Err(format!("{statuses:?}"))
        }
    });
    let took = restarted.elapsed();
    assert!(took < Duration::from_secs(5), "recovered after {took:?}");
    for h in &hosts {
        assert!(h.rtsup.try_status().is_ok(), "{}", h.rtsup.daemon_log());
    }
}

#[test]
fn a_configured_cookie_secret_keeps_affinity_across_restarts() {
    let block = ports::block(6);
    let (base, lb) = (block.base, block.base + 5);
    drop(block);
    let body = format!(
        "{}\n[balancer]\nlisten = \"127.0.0.1:{lb}\"\nnew_sessions = \"round-robin\"\ncookie_secret = \"kept across restarts, shared by hosts\"\n",
        crate::harness::fixture_app("web", 2, base, "")
    );
    let mut r = Rtsup::start(&body);
    r.wait_all_ready();
    let to: SocketAddr = ([127, 0, 0, 1], lb).into();
    // The cookie of a handshake, and the worker it named.
    let raw = |cookie: Option<&str>| -> String {
        let mut s = TcpStream::connect(to).expect("connect");
        let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
        write!(
            s,
            "GET {EIO} HTTP/1.1\r\nHost: x\r\n{cookie}Connection: close\r\n\r\n"
        )
        .expect("write");
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp
    };
    let first = wait_until("a handshake with a cookie", || {
        let resp = raw(None);
        crate::harness::field(&resp, "set-cookie")
            .and_then(|c| c.split(';').next())
            .map(str::to_string)
            .ok_or(resp)
    });
    let instance = |resp: &str| {
        resp.split("\"instance\":\"")
            .nth(1)
            .map(|s| s[..1].to_string())
    };
    let pinned = instance(&raw(Some(&first)));
    assert!(pinned.is_some());
    r.signal(nix::sys::signal::Signal::SIGTERM);
    r.wait_exit();
    r.start_again();
    r.wait_all_ready();
    // Round-robin would alternate; the cookie signed before the restart still pins.
    for _ in 0..6 {
        let resp = wait_until("the balancer after the restart", || {
            let resp = raw(Some(&first));
            if resp.starts_with("HTTP/1.1 200") {
                Ok(resp)
            } else {
                Err(resp)
            }
        });
        assert_eq!(instance(&resp), pinned, "{resp}");
    }
}

#[test]
fn a_host_cut_off_without_a_word_is_dropped_within_2s_and_taken_back() {
    use nix::sys::signal::Signal;
    let _one = one_at_a_time();
    let redis_port = ports::block(1).base;
    let _redis = PrivateRedis::start(redis_port);
    let hosts = three_hosts(redis_port);
    let (a, b) = (hosts[0].addr, hosts[1].addr);
    let sid = handshake(a);
    let path = format!("{EIO}&sid={sid}");
    assert_eq!(request(b, "POST", &path, "40").0, 200);
    // Frozen (as a host cut off from the network, or hung): it says nothing, its record
    // expires.
    hosts[0].rtsup.signal(Signal::SIGSTOP);
    let cut = Instant::now();
    wait_cluster(&hosts[1].rtsup, "B to drop the silent host", "2 host(s)");
    let took = cut.elapsed();
    // Its sessions are unknown at once (clients reconnect to the hosts that answer).
    let (status, body) = request(b, "POST", &path, "40");
    hosts[0].rtsup.signal(Signal::SIGCONT);
    assert_eq!(status, 400, "{body}");
    // 1.5 s record expiry + one 0.5 s read; the slack is for a loaded machine.
    assert!(took < Duration::from_secs(4), "dropped after {took:?}");
    // Back: it writes its record again and the others route to it again.
    wait_until("B to see A again", || {
        let fresh = handshake(a);
        match request(b, "POST", &format!("{EIO}&sid={fresh}"), "40") {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

#[test]
fn hosts_started_before_redis_join_and_an_emptied_redis_is_refilled() {
    let _one = one_at_a_time();
    let redis_port = ports::block(1).base;
    let block = ports::block(8);
    let (base, lb) = (block.base, ports::block(1).base);
    drop(block);
    let name = format!("early{}", std::process::id());
    // Reference workers on rtsup's embedded hub: they need no Redis of their own.
    let app = |port: u16| {
        format!(
            "[[app]]\nname = \"chat\"\ncommand = {:?}\nargs = [\"worker\"]\ninstances = 2\nport = {port}\nready = \"http:/health\"\n",
            crate::harness::rtsup_bin()
        )
    };
    let a = host_with(2, &name, redis_port, &app(base), lb);
    let b = host_with(3, &name, redis_port, &app(base + 4), lb);
    let mut redis = PrivateRedis::start(redis_port);
    for h in [&a, &b] {
        wait_cluster(
            &h.rtsup,
            "the hosts to find each other once Redis is up",
            "2 host(s); Redis answers",
        );
    }
    // A session of A that B never saw; then Redis comes back empty at once (no outage long
    // enough to notice): A writes its sessions again.
    let sid = handshake(a.addr);
    redis.kill();
    let _redis = PrivateRedis::start(redis_port);
    wait_until("B to find A's session again", || {
        match request(b.addr, "POST", &format!("{EIO}&sid={sid}"), "40") {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // A request a peer proxied is never proxied again: B asked as a peer for a session it
    // does not own answers "unknown" at once.
    let mut s = TcpStream::connect(b.addr).expect("connect");
    write!(
        s,
        "POST {EIO}&sid={sid} HTTP/1.1\r\nHost: x\r\nx-rtsup-peer: {}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n40",
        a.addr
    )
    .expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
}

/// A network namespace joined to this one by a veth pair: `outside` is 10.201.X.1 here,
/// `inside` 10.201.X.2 in the namespace; deleted on drop. `None` when this process may not
/// make one (not root, or a sandbox without the capability).
struct Netns {
    name: String,
    outer: String,
    outside: Ipv4Addr,
    inside: Ipv4Addr,
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    fn create() -> Option<Self> {
        if !nix::unistd::Uid::effective().is_root() {
            return None;
        }
        let id = std::process::id();
        let x = u8::try_from(id % 200 + 20).ok()?;
        let ns = Self {
            name: format!("rtsup{id}"),
            outer: format!("rt{id}o"),
            outside: Ipv4Addr::new(10, 201, x, 1),
            inside: Ipv4Addr::new(10, 201, x, 2),
        };
        let inner = format!("rt{id}i");
        let ok = ip(&["netns", "add", &ns.name])
            && ip(&[
                "link", "add", &ns.outer, "type", "veth", "peer", "name", &inner,
            ])
            && ip(&["link", "set", &inner, "netns", &ns.name])
            && ip(&[
                "addr",
                "add",
                &format!("{}/24", ns.outside),
                "dev",
                &ns.outer,
            ])
            && ip(&["link", "set", &ns.outer, "up"])
            && ip(&[
                "netns",
                "exec",
                &ns.name,
                "ip",
                "addr",
                "add",
                &format!("{}/24", ns.inside),
                "dev",
                &inner,
            ])
            && ip(&["netns", "exec", &ns.name, "ip", "link", "set", &inner, "up"])
            && ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        ok.then_some(ns)
    }

    /// Cut (`false`) or restore (`true`) the link.
    fn link(&self, up: bool) {
        assert!(ip(&[
            "link",
            "set",
            &self.outer,
            if up { "up" } else { "down" }
        ]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.outer]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_host_cut_off_by_the_network_is_dropped_and_rejoins() {
    let _one = one_at_a_time();
    let Some(ns) = Netns::create() else {
        eprintln!("skipped: making a network namespace needs root (and the capability)");
        return;
    };
    let redis_port = ports::block(1).base;
    let _redis = PrivateRedis::start_on(redis_port, &format!("127.0.0.1 {}", ns.outside));
    let block = ports::block(8);
    let (base, lb) = (block.base, ports::block(1).base);
    drop(block);
    let name = format!("netns{}", std::process::id());
    let redis = format!("redis://{}:{redis_port}", ns.outside);
    let body = |at: Ipv4Addr, port: u16| {
        let addr = SocketAddr::new(IpAddr::V4(at), lb);
        format!(
            "[[app]]\nname = \"chat\"\ncommand = {:?}\nargs = [\"worker\"]\ninstances = 2\nport = {port}\nready = \"http:/health\"\n\n\
             [balancer]\nlisten = \"{addr}\"\ncookie_secret = \"a secret shared by every host\"\n\n\
             [cluster]\nname = \"{name}\"\nredis = {redis:?}\nadvertise = \"{addr}\"\n",
            crate::harness::rtsup_bin()
        )
    };
    // A inside the namespace (reached only through the veth pair), B outside.
    let a = Rtsup::start_wrapped(&body(ns.inside, base), &["ip", "netns", "exec", &ns.name]);
    a.wait_all_ready();
    let b = Rtsup::start(&body(ns.outside, base + 4));
    b.wait_all_ready();
    let (a_addr, b_addr) = (
        SocketAddr::new(IpAddr::V4(ns.inside), lb),
        SocketAddr::new(IpAddr::V4(ns.outside), lb),
    );
    wait_cluster(&b, "B to see A", "2 host(s)");
    let sid = handshake(a_addr);
    let path = format!("{EIO}&sid={sid}");
    assert_eq!(request(b_addr, "POST", &path, "40").0, 200);
    ns.link(false);
    let cut = Instant::now();
    wait_cluster(&b, "B to drop the cut-off host", "1 host(s)");
    let took = cut.elapsed();
    let (status, body) = request(b_addr, "POST", &path, "40");
    assert_eq!(status, 400, "{body}");
    assert!(took < Duration::from_secs(4), "dropped after {took:?}");
    // A, alone, says Redis is down and keeps its own sessions.
    wait_cluster(&a, "A to see Redis down", "Redis DOWN");
    ns.link(true);
    wait_until("A to rejoin and B to route to it again", || {
        let fresh = handshake(a_addr);
        match request(b_addr, "POST", &format!("{EIO}&sid={fresh}"), "40") {
            (200, _) => Ok(()),
            other => Err(format!("{other:?} {}", cluster_status(&b))),
        }
    });
}

/// A request a host forwards to the session's host is attributed there to the client it came
/// from, whatever the client wrote: the receiving host believes the forwarding host's
/// X-Forwarded-For (every line of it, walked from the right), never a CF-Connecting-IP the
/// client sent along.
#[test]
fn a_forwarded_request_is_attributed_to_its_client_not_to_headers_the_client_wrote() {
    let _one = one_at_a_time();
    let redis_port = ports::block(1).base;
    let _redis = PrivateRedis::start(redis_port);
    let name = format!("xff{}-{redis_port}", std::process::id());
    let block = ports::block(8);
    let base = block.base;
    let lb = ports::block(1).base;
    drop(block);
    let a = host(2, &name, redis_port, base, lb);
    let b = host(3, &name, redis_port, base + 4, lb);
    for h in [&a, &b] {
        wait_cluster(&h.rtsup, "both hosts see each other", "2 host(s)");
    }
    let sid = handshake(a.addr);
    let SocketAddr::V4(to_b) = b.addr else {
        unreachable!("hosts listen on IPv4")
    };
    // From 127.0.0.9 to host B, for A's session, with made-up client addresses.
    let mut s = crate::harness::connect_between([127, 0, 0, 9], to_b).expect("connect to B");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "GET {EIO}&sid={sid}&t=attribution HTTP/1.1\r\nHost: {to_b}\r\nCF-Connecting-IP: 203.0.113.77\r\n\
         X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "poll through B: {resp}");
    // A's access log: the line of that request names the client's own address.
    let path = a.rtsup.log_dir.join("access.log");
    let line = wait_until("A logs the forwarded request", || {
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        text.lines()
            .find(|l| l.contains("t=attribution"))
            .map(str::to_string)
            .ok_or(text)
    });
    assert!(
        line.starts_with("127.0.0.9 "),
        "A attributes the request to the client that sent it: {line}"
    );
}
