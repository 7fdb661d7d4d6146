//! Documented defaults of every optional configuration key.

/// Engine.io path the balancer treats as sticky traffic.
pub const DEFAULT_ENGINEIO_PATH: &str = "/socket.io/";
/// Name of the affinity cookie.
pub const DEFAULT_COOKIE: &str = "rtsup";
/// Balancer listen address.
pub const DEFAULT_BALANCER_LISTEN: &str = "0.0.0.0:8080";
/// Admin listen address: loopback only unless configured.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Time a worker has to pass its readiness probe (PM2 uses 3 s; Node apps with a Redis
/// connection often need more).
pub const DEFAULT_LISTEN_TIMEOUT: &str = "10s";
/// Delay before the first restart after a crash; grows ×1.5 per consecutive crash up to 15 s.
pub const DEFAULT_RESTART_DELAY: &str = "100ms";
/// Consecutive crashes before a slot is `errored` (PM2's default).
pub const DEFAULT_MAX_RESTARTS: u32 = 16;
/// A run at least this long resets the crash count (PM2's default).
pub const DEFAULT_MIN_UPTIME: &str = "1s";
/// Grace between SIGTERM and SIGKILL (PM2 uses 1.6 s, too short for draining sockets).
pub const DEFAULT_KILL_TIMEOUT: &str = "5s";
/// How long a draining worker keeps its sessions during a reload.
pub const DEFAULT_DRAIN_TIMEOUT: &str = "30s";
/// When a drained worker's time is up, its remaining WebSockets are closed spread over this
/// window, so their clients do not all reconnect in the same millisecond.
pub const DEFAULT_CLOSE_WINDOW: &str = "5s";
/// A worker log file is rotated before it grows past this size.
pub const DEFAULT_LOG_MAX_SIZE: &str = "10MB";
/// Rotated worker log files kept per stream.
pub const DEFAULT_LOG_KEEP: u32 = 5;
/// Control socket when running as root (systemd's RuntimeDirectory=rtsup).
pub const DEFAULT_ROOT_CONTROL_SOCKET: &str = "/run/rtsup/rtsup.sock";
/// Worker log directory when running as root.
pub const DEFAULT_ROOT_LOG_DIR: &str = "/var/log/rtsup";
/// Most instances one app may ask for.
pub const MAX_INSTANCES: u16 = supervisor::spec::MAX_INSTANCES;
/// Liveness check period of ready workers ("0s" disables).
pub const DEFAULT_HEALTH_INTERVAL: &str = "5s";
/// How long one liveness check may take.
pub const DEFAULT_HEALTH_TIMEOUT: &str = "2s";
/// Failed liveness checks in a row before a worker is replaced.
pub const DEFAULT_HEALTH_FAILURES: u32 = 3;
/// Longest app name: it names log files (`<app>-<slot>.out.log.<n>` must stay a valid file
/// name) and appears in metrics labels.
pub const MAX_APP_NAME: usize = 64;
/// New engine.io sessions per second one client address may open, sustained (a browser opens
/// one; a NAT of hundreds reconnecting after a deploy stays well below), answered 429 beyond.
pub const DEFAULT_SESSION_RATE: u32 = 100;
/// New sessions one client address may open at once before the rate applies.
pub const DEFAULT_SESSION_BURST: u32 = 500;
/// Longest request line (nginx `large_client_header_buffers` 8k), answered 414 beyond.
pub const DEFAULT_MAX_REQUEST_LINE: &str = "8KiB";
/// Largest request header (nginx: 4 buffers of 8k), answered 431 beyond.
pub const DEFAULT_MAX_HEADER: &str = "32KiB";
/// Largest `max_header` accepted (pingora's own bound).
pub const MAX_MAX_HEADER: u64 = 1024 * 1024;
/// Longest `max_request_line` accepted (the `http` crate refuses longer URIs).
pub const MAX_MAX_REQUEST_LINE: u64 = 63 * 1024;
/// Time for a whole request header (nginx `client_header_timeout`).
pub const DEFAULT_HEADER_TIMEOUT: &str = "60s";
/// Longest wait for the next piece of a body (nginx `client_body_timeout`).
pub const DEFAULT_BODY_TIMEOUT: &str = "60s";
/// Longest wait for a client to take response bytes (nginx `send_timeout`).
pub const DEFAULT_SEND_TIMEOUT: &str = "60s";
/// Longest wait for a worker to take a connection (another host of a cluster: 2 s). nginx's
/// `proxy_connect_timeout` is 60 s; a worker's accept queue overflows in a reconnect stampede
/// (Node's backlog is 511) and the kernel retries a dropped SYN after 1, 3 and 7 s, so 10 s
/// rides that out while a worker that never answers still fails over in time.
pub const DEFAULT_CONNECT_TIMEOUT: &str = "10s";
/// Idle time of a kept-alive connection (nginx `keepalive_timeout`).
pub const DEFAULT_KEEPALIVE_TIMEOUT: &str = "75s";
/// Idle time of a kept-alive connection to a worker (nginx upstream `keepalive_timeout`,
/// 60 s there): below Node's `server.keepAliveTimeout` (5 s), so the proxy lets an idle
/// connection go before the worker can close it under a request it is sending (a POST, which
/// is never retried, would get a 502).
pub const DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT: &str = "4s";
/// Open connections per client address: far above a browser's handful, and room for an
/// office behind one NAT; a host running a connection flood from one address stops here.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 1000;

/// Path prefix a plain-HTTP redirect listener proxies instead of redirecting (ACME http-01).
pub const DEFAULT_REDIRECT_EXCEPT: &str = "/.well-known/acme-challenge/";
