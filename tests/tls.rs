//! HTTPS and WSS at the edge: the official socket.io client over TLS (a test CA made here,
//! trusted through `NODE_EXTRA_CA_CERTS`), a certificate renewed under open connections, a bad
//! certificate refused with the old one kept, and the plain-HTTP redirect with its ACME
//! exception.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SerialNumber,
    date_time_ymd,
};
use serde_json::Value;

use crate::harness::{
    Rtsup, exchange, interop_dir, ports, require_local_redis, socketio_app, wait_until,
};

/// A certificate authority made for one test, and the directory its files go to.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl TestCa {
    fn new(dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rtsup test CA");
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca");
        std::fs::write(dir.join("ca.pem"), issuer.pem()).expect("write ca");
        Self {
            issuer,
            dir: dir.to_path_buf(),
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issue a leaf for localhost and 127.0.0.1 with `serial`, valid from..to (years), and
    /// write it to `cert.pem`/`key.pem` (replacing what is there, as certbot does).
    fn issue(&self, serial: u64, years: (i32, i32)) {
        self.issue_to(&self.dir, &["localhost", "127.0.0.1"], serial, years);
    }

    /// Issue a leaf for `names` into `dir`'s `cert.pem`/`key.pem`.
    fn issue_to(&self, dir: &Path, names: &[&str], serial: u64, years: (i32, i32)) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = date_time_ymd(years.0, 1, 1);
        params.not_after = date_time_ymd(years.1, 1, 1);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
    }

    /// The `[balancer]` lines serving the issued leaf.
    fn balancer_keys(&self) -> String {
        format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            self.dir.join("cert.pem").display().to_string(),
            self.dir.join("key.pem").display().to_string()
        )
    }
}

/// Node prints a serial as upper-case hex without leading zero bytes.
fn node_serial(serial: u64) -> String {
    format!("{serial:X}")
}

/// Run a node script of `tests/interop` trusting `ca`, and parse its last JSON line.
fn node_with_ca(ca: &Path, script: &str, args: &[&str]) -> Value {
    let out = Command::new("node")
        .arg(interop_dir().join(script))
        .args(args)
        .env("NODE_EXTRA_CA_CERTS", ca)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// 4 official socket.io workers behind an HTTPS balancer; returns the daemon, the CA and the
/// balancer's port.
fn https_cluster(extra: &str) -> (Rtsup, TestCa, u16, tempfile::TempDir) {
    require_local_redis();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(tmp.path());
    ca.issue(0x1001, (2020, 2090));
    let base = ports::block(10).base;
    let lb = base + 8;
    let r = Rtsup::start(&socketio_app(
        4,
        base,
        lb,
        &format!("{}{extra}", ca.balancer_keys()),
    ));
    r.wait_all_ready();
    (r, ca, lb, tmp)
}

/// One fixture worker behind an HTTPS balancer (1 proxy thread) with `extra` `[balancer]`
/// lines; returns the daemon, the CA and the balancer's port.
fn https_fixture(extra: &str) -> (Rtsup, TestCa, u16, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(tmp.path());
    ca.issue(0x1001, (2020, 2090));
    let base = ports::block(4).base;
    let lb = base + 3;
    let r = Rtsup::start(&format!(
        "{}\n[balancer]\nlisten = \"127.0.0.1:{lb}\"\nthreads = 1\n{}{extra}",
        crate::harness::fixture_app("a", 1, base, ""),
        ca.balancer_keys(),
    ));
    r.wait_all_ready();
    (r, ca, lb, tmp)
}

fn assert_clean(s: &Value, clients: u64) {
    assert_eq!(s["connected"], clients, "{s}");
    assert_eq!(s["connectErrors"], 0, "{s}");
    assert_eq!(s["sessionUnknown"], 0, "{s}");
    assert_eq!(s["disconnects"], 0, "{s}");
    assert_eq!(s["delivered"], s["expected"], "{s}");
    assert!(s["errors"].as_array().is_some_and(|e| e.is_empty()), "{s}");
}

#[test]
fn https_polling_and_wss_clients_stay_pinned() {
    let (_r, ca, lb, _tmp) = https_cluster("");
    let url = format!("https://localhost:{lb}");
    for transports in ["polling", "default"] {
        let s = node_with_ca(
            &ca.ca_file(),
            "clients.js",
            &[&url, "--clients", "150", "--transports", transports],
        );
        eprintln!("{transports} over TLS: {s}");
        assert_clean(&s, 150);
    }
}

#[test]
fn a_renewed_certificate_reaches_new_handshakes_and_drops_nobody() {
    let (r, ca, lb, _tmp) = https_cluster("");
    let mut clients = Command::new("node")
        .arg(interop_dir().join("tls_swap.js"))
        .arg(format!("https://localhost:{lb}"))
        .env("NODE_EXTRA_CA_CERTS", ca.ca_file())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tls_swap.js");
    let mut stdin = clients.stdin.take().expect("stdin");
    let mut lines = BufReader::new(clients.stdout.take().expect("stdout")).lines();
    let mut next = || -> Value {
        let line = lines.next().expect("a line").expect("read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let first = next();
    assert_eq!(first["roundTrip"], true, "{first}");
    assert_eq!(first["serial"], node_serial(0x1001), "{first}");

    let pids = |r: &Rtsup| -> Vec<Value> { r.workers().iter().map(|w| w["pid"].clone()).collect() };
    let before = pids(&r);
    let mut check = |serial: u64, what: &str| {
        writeln!(stdin, "check").expect("check");
        let now = next();
        assert_eq!(now["serial"], node_serial(serial), "{what}: {now}");
        assert_eq!(now["roundTrip"], true, "{what}: {now}");
        for t in ["websocket", "polling"] {
            assert_eq!(now["state"][t]["disconnects"], 0, "{what}: {now}");
            assert_eq!(
                now["state"][t]["id"], first["state"][t]["id"],
                "{what}: {now}"
            );
            assert_eq!(now["transports"][t], t, "{what}: {now}");
        }
    };

    // Renewed (same paths, new contents, as certbot does): `rtsup reload --certs` serves it
    // to new handshakes and touches nothing else: same workers, same sessions.
    ca.issue(0x2002, (2020, 2090));
    let out = r.cli(&["reload", "--certs"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("cert.pem  localhost  serial 20:02  valid until 2090-01-01"),
        "{out:?}"
    );
    check(0x2002, "after reload --certs");
    assert_eq!(pids(&r), before, "reload --certs replaced workers");

    // A full `rtsup reload` reads them too (and rolls the workers, whose sessions stay up
    // through the proxy while they drain).
    ca.issue(0x3003, (2020, 2090));
    let out = r.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    check(0x3003, "after reload");

    // Expired, or not a certificate at all: refused by both, the one in force stays.
    let refused = |args: &[&str], want: &str| {
        let out = r.cli(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{args:?}: {text}");
        assert!(text.contains(want), "{args:?}: {text}");
    };
    ca.issue(0x4004, (2000, 2001));
    refused(&["reload", "--certs"], "cert.pem: the certificate expired");
    refused(&["reload"], "cert.pem: the certificate expired");
    std::fs::write(ca.dir.join("cert.pem"), "garbage").expect("garbage");
    refused(&["reload", "--certs"], "no PEM certificate");
    refused(&["reload"], "balancer.tls_cert");
    check(0x3003, "after the refusals");
    drop(stdin);
    let _ = clients.wait();
}

#[test]
fn plain_http_redirects_to_https_except_acme_challenges() {
    let base = ports::block(6).base;
    let (r, _ca, lb, _tmp) =
        https_cluster(&format!("redirect_listen = \"127.0.0.1:{}\"\n", base + 1));
    let plain = base + 1;
    let raw = |req: &str| -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", plain)).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(req.as_bytes()).expect("write");
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let resp =
        raw("GET /chat/room?x=1&y=2 HTTP/1.1\r\nHost: localhost:80\r\nConnection: close\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 301"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains(&format!(
            "location: https://localhost:{lb}/chat/room?x=1&y=2\r\n"
        )),
        "{resp}"
    );
    // The ACME exception is proxied to the app (the test workers answer every path).
    let resp = raw(
        "GET /.well-known/acme-challenge/token123 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("worker "), "{resp}");
    // No usable Host: 400, and the listener goes on serving.
    assert_eq!(exchange(plain, b"GET / HTTP/1.0\r\n\r\n"), 400);
    assert_eq!(exchange(plain, b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
    wait_until("the redirect counted", || {
        crate::harness::metric(&r, "rtsup_balancer_routes_total{kind=\"redirect\"}")
            .and_then(|n| if n >= 1 { Ok(()) } else { Err(format!("{n}")) })
    });
}

#[test]
fn bad_tls_settings_are_refused_at_start_with_file_line_and_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(tmp.path());
    ca.issue(0x42, (2000, 2001));
    let base = ports::block(4).base;
    let conf = tmp.path().join("rtsup.toml");
    std::fs::write(
        &conf,
        format!(
            "[[app]]\nname = \"a\"\ncommand = \"node\"\nport = {base}\n[balancer]\nlisten = \"127.0.0.1:{}\"\n{}redirect_listen = \"127.0.0.1:{}\"\n",
            base + 2,
            ca.balancer_keys(),
            base + 2
        ),
    )
    .expect("config");
    let (ok, text) = crate::harness::check_config(&conf);
    assert!(!ok, "{text}");
    let f = conf.display();
    assert!(
        text.contains(&format!("{f}:7:12: balancer.tls_cert: "))
            && text.contains("cert.pem: the certificate expired"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{f}:9:19: balancer.redirect_listen: port {} is also the balancer's",
            base + 2
        )),
        "{text}"
    );
}

/// The serial a TLS client asking for `servername` (none: no SNI) gets from 127.0.0.1:`port`.
fn served_serial(ca: &Path, port: u16, servername: Option<&str>) -> String {
    let script = format!(
        "const c = require('tls').connect({{host: '127.0.0.1', port: {port}, {}rejectUnauthorized: false}}, \
         () => {{ console.log(c.getPeerCertificate().serialNumber); c.end(); }}); \
         c.on('error', (e) => {{ console.log('error ' + e.message); }});",
        servername.map_or(String::new(), |s| format!("servername: '{s}', "))
    );
    let out = Command::new("node")
        .args(["-e", &script])
        .env("NODE_EXTRA_CA_CERTS", ca)
        .output()
        .expect("node");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sni_picks_the_certificate_h2_is_offered_and_garbage_is_not_logged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(tmp.path());
    ca.issue(0x1001, (2020, 2090));
    // A second certificate for other names, in its own files.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("dir");
    ca.issue_to(&other, &["*.chat.test", "api.test"], 0x6006, (2020, 2090));

    let base = ports::block(4).base;
    let lb = base + 3;
    let r = Rtsup::start(&format!(
        "{}\n[balancer]\nlisten = \"127.0.0.1:{lb}\"\nthreads = 2\n{}\
         [[balancer.certificate]]\ncert = {:?}\nkey = {:?}\n",
        crate::harness::fixture_app("a", 1, base, ""),
        ca.balancer_keys(),
        other.join("cert.pem").display().to_string(),
        other.join("key.pem").display().to_string(),
    ));
    r.wait_all_ready();
    let ca_file = ca.ca_file();
    assert_eq!(
        served_serial(&ca_file, lb, Some("localhost")),
        node_serial(0x1001)
    );
    assert_eq!(
        served_serial(&ca_file, lb, Some("eu.chat.test")),
        node_serial(0x6006)
    );
    assert_eq!(
        served_serial(&ca_file, lb, Some("api.test")),
        node_serial(0x6006)
    );
    assert_eq!(
        served_serial(&ca_file, lb, Some("unknown.test")),
        node_serial(0x1001)
    );
    assert_eq!(served_serial(&ca_file, lb, None), node_serial(0x1001));

    // ALPN: HTTP/2 when the client offers it, HTTP/1.1 otherwise, both proxied.
    for (flag, want) in [("--http2", "2 200"), ("--http1.1", "1.1 200")] {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
                flag,
            ])
            .arg("--cacert")
            .arg(&ca_file)
            .arg(format!("https://localhost:{lb}/"))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{out:?}");
    }

    // Plain HTTP and garbage on the TLS port: refused, logged at debug only, the port serves on.
    for _ in 0..50 {
        let _ = exchange(lb, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    assert_eq!(
        served_serial(&ca_file, lb, Some("localhost")),
        node_serial(0x1001)
    );
    let noisy = crate::harness::loud_lines(&r);
    assert!(noisy.is_empty(), "failed handshakes logged: {noisy:#?}");
}

#[test]
fn silent_tls_clients_hold_places_under_the_caps_and_time_out() {
    let (r, ca, lb, _tmp) =
        https_fixture("max_connections_per_address = 20\nheader_timeout = \"1s\"\n");
    // 30 connections that never start their TLS handshake: 20 are held (their places taken),
    // the rest closed at once; none outlives the 1 s handshake bound.
    let held: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(("127.0.0.1", lb)).expect("connect"))
        .collect();
    wait_until("10 refused at once", || {
        let n = crate::harness::metric(
            &r,
            "rtsup_balancer_connections_refused_total{cap=\"per_address\"}",
        )?;
        if n >= 10 {
            Ok(())
        } else {
            Err(format!("{n} refused"))
        }
    });
    let t0 = std::time::Instant::now();
    for mut c in held {
        c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        // Closed by the proxy: end of stream (or a reset), never a timeout.
        match std::io::Read::read(&mut c, &mut buf) {
            Ok(0) => {}
            Err(e)
                if e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut => {}
            other => panic!("a silent TLS client was kept: {other:?}"),
        }
    }
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        t0.elapsed()
    );
    // Places are given back: a real client gets through, and its worker learns the scheme.
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(ca.ca_file())
        .args(["-H", "X-Forwarded-Proto: http"])
        .arg(format!("https://localhost:{lb}/headers"))
        .output()
        .expect("curl");
    let headers: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(headers["x-forwarded-proto"], "https", "{headers}");
}

#[test]
fn an_http2_connection_holds_places_for_its_streams_and_closes_when_idle() {
    let (r, ca, lb, _tmp) =
        https_fixture("max_connections_per_address = 10\nkeepalive_timeout = \"1s\"\n");
    // Three h2 connections held open at once, one request each: 5 places each, so the third
    // does not fit under a cap of 10 (an HTTP/1.1 client would get 3 connections in 3 places).
    let script = format!(
        "const http2 = require('http2'); const results = []; const sessions = [];
         const one = (i) => new Promise((resolve) => {{
           const s = http2.connect('https://localhost:{lb}'); sessions.push(s);
           s.on('error', (e) => resolve('error ' + e.code));
           const req = s.request({{ ':path': '/' }});
           req.on('response', (h) => {{ req.resume(); req.on('end', () => resolve(h[':status'])); }});
           req.on('error', (e) => resolve('error ' + e.code));
           req.end();
         }});
         (async () => {{ for (let i = 0; i < 3; i++) results.push(await one(i));
           console.log(JSON.stringify(results)); sessions.forEach((s) => s.destroy()); }})();"
    );
    let out = Command::new("node")
        .args(["-e", &script])
        .env("NODE_EXTRA_CA_CERTS", ca.ca_file())
        .output()
        .expect("node");
    let results: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(results[0], 200, "{results}");
    assert_eq!(results[1], 200, "{results}");
    assert!(
        results[2].as_str().is_some_and(|e| e.starts_with("error")),
        "the third h2 connection was let in: {results}"
    );
    let refused = crate::harness::metric(
        &r,
        "rtsup_balancer_connections_refused_total{cap=\"per_address\"}",
    )
    .expect("metric");
    assert!(refused >= 1, "{refused}");

    // An idle h2 connection is closed after keepalive_timeout (1 s here), as HTTP/1.1 is.
    let script = format!(
        "const http2 = require('http2'); const t0 = Date.now();
         const s = http2.connect('https://localhost:{lb}');
         const req = s.request({{ ':path': '/' }});
         req.on('response', () => {{ req.resume(); }});
         req.end();
         s.on('close', () => {{ console.log(JSON.stringify({{ closedAfterMs: Date.now() - t0 }})); process.exit(0); }});
         s.on('error', () => {{}});
         setTimeout(() => {{ console.log(JSON.stringify({{ closedAfterMs: null }})); process.exit(0); }}, 10000);"
    );
    let out = Command::new("node")
        .args(["-e", &script])
        .env("NODE_EXTRA_CA_CERTS", ca.ca_file())
        .output()
        .expect("node");
    let closed: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let ms = closed["closedAfterMs"].as_u64();
    assert!(
        ms.is_some_and(|ms| ms < 5000),
        "idle h2 connection kept: {closed}"
    );
}
