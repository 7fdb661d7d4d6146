//! Test harness: run the real `rtsup` binary on a temp config, on free ports, and poll its
//! state with a deadline (never sleep-and-hope).

#![allow(dead_code)]

pub mod ports;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

/// The binary under test.
pub fn rtsup_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rtsup")
}

/// The fixture worker script (plain Node `http`, no npm packages).
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/worker.js")
}

/// Deadline multiplier for slow machines: `RTSUP_TEST_PATIENCE_MS` is the base (default 20 s).
pub fn patience() -> Duration {
    let ms = std::env::var("RTSUP_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    Duration::from_millis(ms)
}

/// Poll `check` every 50 ms until it returns `Some`, or panic after [`patience`] naming `what`
/// and the last thing observed.
pub fn wait_until<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + patience();
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A running `rtsup start` with its own temp directory.
pub struct Rtsup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log_dir: PathBuf,
    child: Option<Child>,
}

impl Rtsup {
    /// Write `[supervisor]` (socket and logs in a temp dir) plus `body` to a config file and
    /// start the daemon on it.
    pub fn start(body: &str) -> Self {
        Self::start_with(body, &[])
    }

    /// [`Rtsup::start`] with extra environment variables for the daemon.
    pub fn start_with(body: &str, env: &[(&str, &str)]) -> Self {
        Self::start_full(body, env, None)
    }

    /// [`Rtsup::start`] with more arguments for `rtsup start` (e.g. `--env production`).
    pub fn start_args(body: &str, args: &[&str]) -> Self {
        Self::start_inner(body, &[], None, args, &[])
    }

    /// [`Rtsup::start`] run through `wrapper` (e.g. `ip netns exec NAME`), which must exec
    /// rtsup in its own process (signals reach the daemon).
    pub fn start_wrapped(body: &str, wrapper: &[&str]) -> Self {
        Self::start_inner(body, &[], None, &[], wrapper)
    }

    /// [`Rtsup::start_with`] under `ulimit ARGS` when given (e.g. `-n 96`, `-Sn 256`).
    pub fn start_full(body: &str, env: &[(&str, &str)], ulimit: Option<&str>) -> Self {
        Self::start_inner(body, env, ulimit, &[], &[])
    }

    fn start_inner(
        body: &str,
        env: &[(&str, &str)],
        ulimit: Option<&str>,
        args: &[&str],
        wrapper: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("rtsup.sock");
        let log_dir = dir.path().join("logs");
        let config = dir.path().join("rtsup.toml");
        let text = format!(
            "[supervisor]\ncontrol_socket = {:?}\nlog_dir = {:?}\n\n{body}{}",
            socket.display().to_string(),
            log_dir.display().to_string(),
            // Tests run in parallel: the admin server takes any free port unless asked.
            if body.contains("[admin]") {
                ""
            } else {
                "\n[admin]\nlisten = \"127.0.0.1:0\"\n"
            }
        );
        fs::write(&config, text).expect("write config");
        let mut cmd = match ulimit {
            None if !wrapper.is_empty() => {
                let mut c = Command::new(wrapper[0]);
                c.args(&wrapper[1..])
                    .arg(rtsup_bin())
                    .args(["start", "-c"])
                    .arg(&config)
                    .args(args);
                c
            }
            None => {
                let mut c = Command::new(rtsup_bin());
                c.args(["start", "-c"]).arg(&config).args(args);
                c
            }
            Some(args) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit {args} && exec \"$0\" start -c \"$1\""))
                    .arg(rtsup_bin())
                    .arg(&config);
                c
            }
        };
        let child = cmd
            .env("RTSUP_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("rtsup.out")).expect("out"))
            .stderr(fs::File::create(dir.path().join("rtsup.err")).expect("err"))
            .spawn()
            .expect("spawn rtsup");
        let r = Self {
            dir,
            config,
            socket,
            log_dir,
            child: Some(child),
        };
        wait_until("the control socket", || {
            r.try_status()
                .map(|_| ())
                .map_err(|e| format!("{e}; daemon log:\n{}", r.daemon_log()))
        });
        r
    }

    /// Start a new daemon on the same configuration once the previous one is gone (its stderr
    /// goes to `rtsup.2.err`, read by [`Rtsup::daemon_log`] from then on).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the previous daemon is still owned");
        let err = self.dir.path().join("rtsup.err");
        let _ = fs::rename(&err, self.dir.path().join("rtsup.1.err"));
        let child = Command::new(rtsup_bin())
            .args(["start", "-c"])
            .arg(&self.config)
            .env("RTSUP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err).expect("err"))
            .spawn()
            .expect("spawn rtsup");
        self.child = Some(child);
        wait_until("the control socket again", || {
            self.try_status()
                .map(|_| ())
                .map_err(|e| format!("{e}; daemon log:\n{}", self.daemon_log()))
        });
    }

    /// Replace the configuration file's `body` (the `[supervisor]` part is kept), for reloads.
    pub fn rewrite(&self, body: &str) {
        let text = fs::read_to_string(&self.config).expect("config");
        let head = text.split("\n\n").next().unwrap_or_default();
        let admin = if body.contains("[admin]") {
            ""
        } else {
            "\n[admin]\nlisten = \"127.0.0.1:0\"\n"
        };
        fs::write(&self.config, format!("{head}\n\n{body}{admin}")).expect("rewrite config");
    }

    /// Run `rtsup ARGS --socket <ours>`-style client commands.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(rtsup_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .expect("run rtsup client")
    }

    /// `rtsup status --json`, parsed, or the error text.
    pub fn try_status(&self) -> Result<Value, String> {
        let out = self.cli(&["status", "--json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// The workers of app 0, from `status --json`.
    pub fn workers(&self) -> Vec<Value> {
        let s = self.try_status().expect("status");
        s["apps"][0]["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Wait until every worker of app 0 is ready; returns them.
    pub fn wait_all_ready(&self) -> Vec<Value> {
        wait_until("every worker ready", || {
            let s = self.try_status()?;
            let ws = s["apps"][0]["workers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !ws.is_empty() && ws.iter().all(|w| w["state"] == "ready") {
                Ok(ws)
            } else {
                Err(s.to_string())
            }
        })
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The daemon's own stderr so far.
    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("rtsup.err")).unwrap_or_default()
    }

    /// Send `sig` to the daemon.
    pub fn signal(&self, sig: Signal) {
        if let Some(c) = &self.child {
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Wait for the daemon to exit (within patience); returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("daemon still owned");
        let status = wait_until("the daemon to exit", || match child.try_wait() {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err("still running".into()),
            Err(e) => Err(e.to_string()),
        });
        status.code()
    }
}

impl Drop for Rtsup {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_daemon(child);
        }
    }
}

/// SIGTERM a daemon, wait up to 15 s for it, then SIGKILL it.
pub fn stop_daemon(mut child: Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether a process with this pid exists (zombies included).
pub fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Whether a process is alive and not a zombie.
pub fn running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGKILL a process group (test cleanup of a worker tree).
pub fn kill_group(pgid: u32) {
    let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
}

/// `GET http://127.0.0.1:port/path` with a plain socket; returns the body of a 200.
pub fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let (head, body) = resp.split_once("\r\n\r\n").ok_or("no header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.to_string());
    }
    Ok(body.to_string())
}

/// The admin server's port, as the daemon logged it (`[admin] listen` may ask for port 0).
pub fn admin_port(r: &Rtsup) -> Result<u16, String> {
    r.daemon_log()
        .lines()
        .find(|l| l.contains("admin listening"))
        .and_then(|l| l.split("127.0.0.1:").nth(1))
        .and_then(|p| p.split('"').next())
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| "the daemon has not logged its admin port".to_string())
}

/// The value of one sample of the admin server's `/metrics` (`name` with its labels, e.g.
/// `rtsup_balancer_header_errors_total{kind="timeout"}`); 0 when absent.
pub fn metric(r: &Rtsup, name: &str) -> Result<u64, String> {
    let text = http_get(admin_port(r)?, "/metrics")?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0))
}

/// Resident memory of a process, KiB.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system, in clock ticks) a process has used so far.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is [0], utime is [11], stime is [12].
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// Share of one core a process uses over `window` (0.0 to 1.0 per core).
pub fn cpu_share(pid: u32, window: Duration) -> f64 {
    let t0 = cpu_ticks(pid);
    let w0 = std::time::Instant::now();
    std::thread::sleep(window);
    let used = cpu_ticks(pid).saturating_sub(t0) as f64;
    used / (w0.elapsed().as_secs_f64() * 100.0) // USER_HZ = 100
}

/// A TCP connection to 127.0.0.1:`port` from local address `from` (any of 127/8, so a test
/// can be several clients).
pub fn connect_from(from: [u8; 4], port: u16) -> std::io::Result<std::net::TcpStream> {
    connect_between(
        from,
        std::net::SocketAddrV4::new([127, 0, 0, 1].into(), port),
    )
}

/// A TCP connection from local address `from` to `to`.
pub fn connect_between(
    from: [u8; 4],
    to: std::net::SocketAddrV4,
) -> std::io::Result<std::net::TcpStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    use std::os::fd::AsRawFd;
    let s = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )?;
    bind(
        s.as_raw_fd(),
        &SockaddrIn::new(from[0], from[1], from[2], from[3], 0),
    )?;
    connect(s.as_raw_fd(), &SockaddrIn::from(to))?;
    Ok(std::net::TcpStream::from(s))
}

/// A handshake (`GET /socket.io/?EIO=4&transport=polling`) from local address `from`; returns
/// the status and the `Retry-After` header.
pub fn handshake_from(from: [u8; 4], port: u16) -> (u16, Option<String>) {
    let mut c = connect_from(from, port).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    std::io::Write::write_all(
        &mut c,
        b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("write");
    let mut resp = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c, &mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let retry = field(&text, "retry-after").map(str::to_string);
    (status, retry)
}

/// The value of the first `name:` field in an answer's `head` (its text up to the blank
/// line), its name matched as HTTP matches names: whatever its case.
pub fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The status line's code of whatever a server answered, 0 when it closed without a word.
pub fn status_of(resp: &[u8]) -> u16 {
    String::from_utf8_lossy(resp)
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Send one raw request (it should say `Connection: close`) to 127.0.0.1:`port`; the whole
/// answer as text.
pub fn roundtrip(port: u16, request: &str) -> String {
    answer_then_close(port, request.as_bytes(), Duration::from_secs(10)).0
}

/// Send `request` on a new connection to 127.0.0.1:`port`; what came back, and whether the
/// server closed the connection (rather than leaving it open until a read waited `wait`).
pub fn answer_then_close(port: u16, request: &[u8], wait: Duration) -> (String, bool) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(wait)).expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let closed = s.read_to_end(&mut out).is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// The daemon's log lines at WARN or ERROR (clients must not be able to produce any).
pub fn loud_lines(r: &Rtsup) -> Vec<String> {
    r.daemon_log()
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("\"level\":\"WARN\""))
        .map(str::to_string)
        .collect()
}

/// `rtsup check` on `body` written to a temp `rtsup.toml`: whether it passed, everything it
/// printed, and the file's path (for expected `file:line:col` messages).
pub fn check_body(body: &str) -> (bool, String, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("rtsup.toml");
    fs::write(&conf, body).expect("config");
    let (ok, text) = check_config(&conf);
    (ok, text, conf)
}

/// `rtsup check -c FILE`: whether it passed, and everything it printed.
pub fn check_config(file: &Path) -> (bool, String) {
    let out = Command::new(rtsup_bin())
        .args(["check", "-c"])
        .arg(file)
        .output()
        .expect("rtsup check");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

/// Send raw `bytes` to 127.0.0.1:`port` and read the answer until the server closes; its
/// status code, 0 when it closed without a word.
pub fn exchange(port: u16, bytes: &[u8]) -> u16 {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = c.write_all(bytes);
    let mut resp = Vec::new();
    let _ = c.read_to_end(&mut resp);
    status_of(&resp)
}

/// Two fixture workers behind the balancer (2 proxy threads) with `balancer_extra` settings,
/// `app_extra` in their `[[app]]`, under `ulimit` when given; returns once the balancer
/// serves, with its port.
pub fn fixture_cluster(
    balancer_extra: &str,
    app_extra: &str,
    ulimit: Option<&str>,
) -> (Rtsup, u16) {
    let base = ports::block(5).base;
    let lb = base + 4;
    let r = Rtsup::start_full(
        &format!(
            "{}\n[balancer]\nlisten = \"127.0.0.1:{lb}\"\nthreads = 2\n{balancer_extra}\n",
            fixture_app("web", 2, base, app_extra)
        ),
        &[],
        ulimit,
    );
    r.wait_all_ready();
    wait_until("the balancer", || http_get(lb, "/").map(|_| ()));
    (r, lb)
}

/// A WebSocket upgrade of `target` through the proxy on `lb`, asserted answered 101; returns
/// the connection (reads bounded by [`patience`]) and the bytes that came after the 101's
/// header.
pub fn websocket_upgrade(lb: u16, target: &str) -> (TcpStream, Vec<u8>) {
    let mut c = TcpStream::connect(("127.0.0.1", lb)).expect("connect");
    c.set_read_timeout(Some(patience())).expect("timeout");
    write!(
        c,
        "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .expect("upgrade");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = c.read(&mut buf).expect("read the 101");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    (c, got[end..].to_vec())
}

/// An `[[app]]` section running the fixture worker.
pub fn fixture_app(name: &str, instances: u16, port: u16, extra: &str) -> String {
    format!(
        "[[app]]\nname = {name:?}\ncommand = \"node\"\nargs = [{:?}]\ninstances = {instances}\nport = {port}\n{extra}\n",
        fixture().display().to_string()
    )
}

/// The interop directory (official socket.io server and client scripts).
pub fn interop_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    assert!(
        dir.join("node_modules/socket.io").is_dir(),
        "npm packages of tests/interop are missing: run scripts/setup.sh"
    );
    dir
}

/// The local Redis the interop workers share rooms through (127.0.0.1:6379).
pub fn require_local_redis() {
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", 6379)).is_ok(),
        "these tests need Redis on 127.0.0.1:6379 (redis-server)"
    );
}

/// `[[app]]` of `instances` official socket.io servers sharing rooms through the local Redis
/// under a key of their own, plus a `[balancer]` on `listen_port` with `balancer_extra`.
pub fn socketio_app(instances: u16, port: u16, listen_port: u16, balancer_extra: &str) -> String {
    let server = interop_dir().join("server.js");
    format!(
        "[[app]]\nname = \"io\"\ncommand = \"node\"\nargs = [{:?}]\ninstances = {instances}\nport = {port}\n\
         env = {{ ADAPTER_KEY = \"rtsup-test-{}-{port}\" }}\n\n[balancer]\nlisten = \"127.0.0.1:{listen_port}\"\nthreads = 2\n{balancer_extra}\n",
        server.display().to_string(),
        std::process::id()
    )
}

/// Run the socket.io client swarm (`tests/interop/clients.js`) and parse its JSON summary.
pub fn run_clients(url: &str, args: &[&str]) -> Value {
    let mut all = vec![url];
    all.extend_from_slice(args);
    run_node("clients.js", &all)
}

/// `[[app]]` of `instances` reference workers (`rtsup worker`) with extra `env` entries, and a
/// `[balancer]` on `listen_port`.
pub fn reference_app(instances: u16, port: u16, listen_port: u16, env: &str) -> String {
    format!(
        "[[app]]\nname = \"ref\"\ncommand = {:?}\nargs = [\"worker\"]\ninstances = {instances}\nport = {port}\nready = \"http:/health\"\n\
         env = {{ RTSUP_EMIT_TOKEN = \"test-token\", RTSUP_ADAPTER_PREFIX = \"rtsup-test-{}-{port}\"{env} }}\n\n\
         [balancer]\nlisten = \"127.0.0.1:{listen_port}\"\nthreads = 2\n",
        rtsup_bin(),
        std::process::id()
    )
}

/// Run a node script of `tests/interop` and parse the JSON of its last stdout line.
pub fn run_node(script: &str, args: &[&str]) -> Value {
    let out = Command::new("node")
        .arg(interop_dir().join(script))
        .args(args)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): stdout={stdout} stderr={}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

impl Rtsup {
    /// Every worker stderr log, for failure messages.
    pub fn worker_err_logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = fs::read_dir(&self.log_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains(".err.log") {
                    out.push_str(&format!(
                        "== {name}\n{}\n",
                        fs::read_to_string(e.path()).unwrap_or_default()
                    ));
                }
            }
        }
        out
    }
}

/// A private `redis-server` on `port` (no persistence), killed on drop.
pub struct PrivateRedis {
    child: std::process::Child,
}

impl PrivateRedis {
    pub fn start(port: u16) -> Self {
        Self::start_on(port, "127.0.0.1")
    }

    /// [`PrivateRedis::start`] listening on `bind` (addresses separated by spaces).
    pub fn start_on(port: u16, bind: &str) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                bind,
                // Beyond loopback (a test network namespace), without a password.
                "--protected-mode",
                if bind == "127.0.0.1" { "yes" } else { "no" },
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (install it: scripts/setup.sh)");
        wait_until("private redis up", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        Self { child }
    }
}

impl PrivateRedis {
    /// Kill it now (as a crash would) and wait until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
