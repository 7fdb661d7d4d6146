//! Running the proxy: pingora's `Server` on a thread of its own, beside the caller's tokio
//! runtime (pingora cannot run inside another runtime, and `run_forever` would exit the
//! process). rtsup owns the signals: pingora gets a channel-fed `ShutdownSignalWatch`, with a
//! zero grace period instead of pingora's default 300 s.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::ListenerConfig;
use pingora::listeners::tls::TlsSettings;
pub use pingora::protocols::http::v1::server::RequestLimits;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use tokio::sync::{oneshot, watch};
use tracing::info;

use crate::BackendSet;
use crate::access_log::AccessLog;
use crate::admission::{Admission, WARN_EVERY, WarnThrottle};
use crate::affinity::CookieSigner;
use crate::connections::{ConnectionCaps, Connections};
use crate::loads::Loads;
use crate::metrics::BalancerMetrics;
use crate::release::Upgrades;
use crate::routes::RouteTable;
use crate::service::{Balancer, RoutingConfig};
use crate::sid_table::SidTable;
use crate::spread::ThreadLoads;
use crate::tls::CertResolver;

/// Seconds the requests in flight get to finish once the proxy stops accepting.
pub const STOP_GRACE_SECONDS: u64 = 1;

/// Longest wait, when the proxy stops, for its released WebSockets to send their close frames.
pub const RELEASE_ON_STOP: Duration = Duration::from_secs(1);

/// How often silent sessions are swept from the sid table.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Most idle upstream connections each proxy thread keeps for reuse (each holds a descriptor;
/// see [`crate::connections::budget`]), as nginx's `keepalive` is per worker. Shared out
/// among the threads, 128 in all, a thread given more than its half of the clients (before
/// `crate::spread`, whichever accept loop ran first could take them all) ran out of room: each release
/// closed the longest-idle connection, and the next request to that worker connected again,
/// over a thousand times a second under `wrk -c64` (docs/BENCHMARKS.md).
pub const UPSTREAM_POOL: usize = 128;

/// The bounds on clients: header limits and timeouts, body and send timeouts, connection caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Request line and header size, header and keep-alive timeouts.
    pub request: RequestLimits,
    /// Connection caps, total and per address.
    pub caps: ConnectionCaps,
    /// Idle upstream connections kept for reuse, all proxy threads together.
    pub upstream_pool: usize,
}

impl Default for ClientLimits {
    /// nginx's header limits and timeouts, 10,000 connections, no per-address cap.
    fn default() -> Self {
        Self {
            request: RequestLimits::default(),
            caps: ConnectionCaps {
                total: 10_000,
                per_address: 0,
                exempt: Vec::new(),
            },
            upstream_pool: UPSTREAM_POOL,
        }
    }
}

/// HTTPS on the balancer's address.
#[derive(Debug, Clone)]
pub struct TlsListen {
    /// The certificates served (a reload swaps them through this).
    pub certs: Arc<CertResolver>,
    /// Offer HTTP/2 (ALPN `h2`) beside HTTP/1.1.
    pub http2: bool,
    /// A plain-HTTP listener redirected to HTTPS (see [`crate::service::Redirect`]).
    pub redirect_listen: Option<SocketAddr>,
}

/// Everything needed to run the proxy.
#[derive(Debug, Clone)]
pub struct BalancerSettings {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// HTTPS on `listen` (else plain HTTP).
    pub tls: Option<TlsListen>,
    /// Where finished requests are logged, when they are.
    pub access_log: Option<AccessLog>,
    /// Proxy worker threads.
    pub threads: usize,
    /// Routing settings.
    pub routing: RoutingConfig,
    /// Hard bound of the sid table.
    pub max_sessions: usize,
    /// The bounds on clients.
    pub limits: ClientLimits,
    /// HTTP/1.x field names passed on in the case they came in; else spelled by the proxy
    /// (a dozen common names titled, the rest lowercase), which spares a second map per header.
    pub preserve_header_case: bool,
}

/// A running proxy.
pub struct ProxyHandle {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// The live sid table (for status and metrics).
    pub sids: Arc<SidTable>,
    /// Live session counts per backend id.
    pub loads: Arc<Loads>,
    /// Request and routing counters.
    pub metrics: BalancerMetrics,
    /// The open WebSockets per backend, to release a draining one gradually (shareable:
    /// clone the `Arc` to call [`Upgrades::release`] from elsewhere).
    pub upgrades: Arc<Upgrades>,
    /// The open client connections (for status and metrics).
    pub connections: Arc<Connections>,
}

/// Errors starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The proxy thread could not be started.
    #[error("cannot start the proxy thread: {0}")]
    Thread(std::io::Error),
    /// TLS could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

struct ChannelSignal(Mutex<Option<oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for ChannelSignal {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().ok().and_then(|mut g| g.take());
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Start the proxy on its own thread, following the backends of each app (`backends[i]` is
/// the app of the routes whose `app` is `i`). Must be called inside a tokio runtime: the route
/// followers, the sid sweeper and the gradual WebSocket releases run there.
pub fn spawn(
    settings: BalancerSettings,
    backends: Vec<watch::Receiver<BackendSet>>,
) -> Result<ProxyHandle, StartError> {
    // pingora binds inside its own runtime and cannot report a failure to us: check first so a
    // busy port is a clear error, not a dead proxy.
    let redirect_listen = settings.tls.as_ref().and_then(|t| t.redirect_listen);
    for addr in std::iter::once(settings.listen).chain(redirect_listen) {
        TcpListener::bind(addr).map_err(|source| StartError::Listen { addr, source })?;
    }
    let loads = Arc::new(Loads::default());
    let sids = Arc::new(SidTable::new(settings.max_sessions, loads.clone()));
    let apps: Arc<[Arc<RouteTable>]> = backends.iter().map(|_| Arc::default()).collect();
    let upgrades = Arc::new(Upgrades::new(tokio::runtime::Handle::current()));
    for (i, rx) in backends.into_iter().enumerate() {
        let apps = apps.clone();
        let loads = loads.clone();
        let upgrades = upgrades.clone();
        tokio::spawn(async move {
            apps[i]
                .follow(rx, |snap| {
                    // Counters of workers no app has any more are forgotten.
                    let known = |id: &str| {
                        snap.by_id(id).is_some()
                            || apps
                                .iter()
                                .enumerate()
                                .any(|(j, t)| j != i && t.load().by_id(id).is_some())
                    };
                    loads.retain(|id| known(id));
                    upgrades.retain(|id| known(id));
                })
                .await;
        });
    }
    let metrics = BalancerMetrics::default();
    let app = Balancer::new(
        apps,
        sids.clone(),
        loads.clone(),
        upgrades.clone(),
        settings
            .routing
            .cookie_secret
            .map_or_else(CookieSigner::random, CookieSigner::new),
        settings.routing.clone(),
        metrics.clone(),
    )
    .with_access_log(settings.access_log.clone());
    {
        let wanted = sids.sweep_wanted();
        let sids = Arc::downgrade(&sids);
        let rate = Arc::downgrade(&app.session_rate());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                // Every period, and at once when a full sid table asks (at most once a second).
                tokio::select! {
                    _ = tick.tick() => {}
                    () = wanted.notified() => {}
                }
                let (Some(sids), Some(rate)) = (sids.upgrade(), rate.upgrade()) else {
                    return;
                };
                sids.sweep();
                rate.sweep(std::time::Instant::now());
            }
        });
    }
    let threads = settings.threads.max(1);
    let conf = ServerConf {
        // One service per proxy thread, each a current-thread runtime with its own accept loop
        // on the one listening socket (pingora gives each a dup of it) and its own upstream
        // pool, so a request never changes thread (nginx's model; see docs/BENCHMARKS.md);
        // each loop accepts only while its thread holds no more than its share of the
        // connections (`crate::spread`).
        threads: 1,
        work_stealing: false,
        // After a stop, pingora stops accepting, then gives the requests it accepted this
        // long before it drops its runtimes (whole seconds; always waited in full).
        grace_period_seconds: Some(STOP_GRACE_SECONDS),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: (settings.limits.upstream_pool / threads).max(1),
        ..ServerConf::default()
    };
    // Nothing here reads how long a stream's reads waited: spare the two clock reads each
    // waiting read cost (vendored change 28; this process's streams are all the proxy's).
    pingora::protocols::l4::stream::time_read_waits_by_default(false);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let connections = Connections::new(settings.limits.caps.clone());
    let mut options = HttpServerOptions::default();
    options.h1_request_limits = Some(settings.limits.request);
    options.h1_discard_header_case = !settings.preserve_header_case;
    // An idle HTTP/2 connection (no stream in flight) closes like an idle HTTP/1.1 one.
    options.h2_idle_timeout = Some(settings.limits.request.keepalive_timeout);
    let warned = Arc::new(WarnThrottle::new(WARN_EVERY));
    let thread_loads = ThreadLoads::new(threads, &metrics.thread_connections);
    let mut apps: Vec<Balancer> = (1..threads).map(|i| app.for_another_thread(i)).collect();
    apps.push(app);
    for (i, app) in apps.into_iter().enumerate() {
        let mut proxy = HttpProxy::new(app, server.configuration.clone());
        proxy.server_options = Some(options.clone());
        // HTTP/2 (when offered over TLS): the header bound of HTTP/1, and few enough streams
        // at once that an h2 connection's upstream descriptors fit the places it holds.
        let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
        h2.max_concurrent_streams(crate::admission::H2_STREAMS);
        h2.max_header_list_size(
            u32::try_from(settings.limits.request.max_header).unwrap_or(u32::MAX),
        );
        proxy.h2_options = Some(h2);
        proxy.handle_init_modules();
        let mut svc = Service::new(
            format!("rtsup balancer {i}"),
            Admission::new(proxy, connections.clone(), metrics.clone(), warned.clone())
                .with_handshake_timeout(settings.limits.request.header_timeout)
                .on_thread(thread_loads.clone(), i),
        );
        // No read buffer in front of the client socket: pingora's default is 64 KiB per
        // connection (resident once touched), which an idle or half-sent connection would
        // hold; the header and body reads go straight into their own bounded buffers.
        let plain = |addr: SocketAddr| {
            ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::default().read(0))
        };
        match &settings.tls {
            None => svc.endpoints().add_listener(plain(settings.listen)),
            Some(tls) => {
                // The resolver picks the certificate per handshake (SNI), so a reload reaches
                // every new connection; the paths given here are never read.
                let mut t = TlsSettings::intermediate("", "")
                    .map_err(|e| StartError::Tls(e.to_string()))?;
                t.set_cert_resolver(tls.certs.clone());
                if tls.http2 {
                    t.enable_h2();
                }
                svc.endpoints().add_listener(plain(settings.listen).tls(t));
                if let Some(addr) = tls.redirect_listen {
                    svc.endpoints().add_listener(plain(addr));
                }
            }
        }
        server.add_service(svc);
    }
    let (tx, rx) = oneshot::channel();
    let signal = ChannelSignal(Mutex::new(Some(rx)));
    let listen = settings.listen;
    let thread = std::thread::Builder::new()
        .name("rtsup-proxy".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(signal),
            });
        })
        .map_err(StartError::Thread)?;
    info!(
        %listen,
        tls = settings.tls.is_some(),
        redirect = ?redirect_listen,
        threads = settings.threads,
        "balancer listening"
    );
    Ok(ProxyHandle {
        shutdown: Some(tx),
        thread: Some(thread),
        sids,
        loads,
        metrics,
        upgrades,
        connections,
    })
}

impl ProxyHandle {
    /// Close the open WebSockets to `backend_id` spread evenly over `window`, and any later
    /// one at once; returns how many it will close. Returns at once (see
    /// [`Upgrades::release`]); call it when a draining worker's time is up, `window` before
    /// stopping the worker.
    pub fn release(&self, backend_id: &str, window: Duration) -> usize {
        self.upgrades.release(backend_id, window)
    }

    /// Stop accepting, close connections, and wait for the proxy thread (blocking: call it
    /// from `spawn_blocking` inside a runtime). Open WebSockets are released first: each
    /// client gets the 1001 close frame ("going away") and reconnects elsewhere, and each
    /// WebSocket gets its access-log line; they are given [`RELEASE_ON_STOP`] to end.
    pub fn stop(mut self) {
        let released = self.upgrades.release_all();
        if released > 0 {
            let deadline = std::time::Instant::now() + RELEASE_ON_STOP;
            while self.upgrades.live() > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            tracing::info!(
                released,
                left = self.upgrades.live(),
                "balancer: WebSockets closed"
            );
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
