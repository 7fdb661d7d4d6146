//! `impl ProxyHttp for Balancer`: the only module that touches pingora's proxy types.
//!
//! Phases used: `request_filter` parses the engine.io facts, routes (pure [`policy::route`]),
//! answers 400/503 itself and adds `X-Forwarded-For`; `upstream_peer` hands pingora the chosen
//! address; `upstream_request_filter` strips `Accept-Encoding` from handshakes;
//! `response_filter` sets the affinity cookie and registers upgraded connections for release;
//! `response_body_filter` sniffs the open packet into the sid table; `logging` settles session
//! counts. A WebSocket leaves pingora once its 101 is through (`tunnel_upgraded`,
//! `upgrade_taken`, `tunnel`): its two connections are copied by a [`crate::tunnel::Pump`] on a
//! task of its own, which ends a released WebSocket with a close frame and settles its counts
//! when it ends.
//!
//! Every WebSocket registers its tunnel's [`ReleaseSignal`] in [`Upgrades`] when its 101 passes,
//! so [`Upgrades::release`] can end it from outside (see [`crate::release`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ipnet::IpNet;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session, Tunnel};
use pingora::{Error, ErrorSource, ErrorType, Result};
use tracing::debug;

use crate::access_log::{AccessLog, Entry};
use crate::affinity::{self, CookieSigner};
use crate::engineio::{self, OpenPacketSniffer};
use crate::loads::Loads;
use crate::metrics::{BalancerMetrics, HeaderErrorLabel, RouteLabel};
use crate::policy::{self, Decision, RequestFacts, RouteKind};
use crate::redirect::Redirect;
use crate::release::{Close, ReleaseSignal, Upgrades};
use crate::router::Router;
use crate::routes::{RouteTable, Snapshot};
use crate::session_rate::SessionRate;
use crate::sid_table::SidTable;
use crate::tunnel::Pump;

/// engine.io's own answer for an unknown session, in Node's form (numeric code).
pub const SESSION_UNKNOWN_BODY: &str = r#"{"code":1,"message":"Session ID unknown"}"#;
/// The field rtsup writes on every proxied request, named once (a lookup or an insert by
/// `&str` parses the name each time).
const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
/// The field rtsup writes on every proxied request behind TLS, named once likewise.
const X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
/// Cloudflare's client address field, read on handshakes, named once likewise.
const CF_CONNECTING_IP: http::HeaderName = http::HeaderName::from_static("cf-connecting-ip");
/// Longest silence accepted from another host of the cluster.
const PEER_SILENCE: Duration = Duration::from_secs(60);
/// Longest wait for another host of the cluster to take a connection.
const PEER_CONNECT: Duration = Duration::from_secs(2);
/// Body of the 429 sent to a client over its new-session rate.
const RATE_LIMITED_BODY: &str = r#"{"code":5,"message":"Too many new sessions"}"#;
const BAD_REQUEST_BODY: &str = r#"{"code":3,"message":"Bad request"}"#;
const NO_BACKEND_BODY: &str = r#"{"code":503,"message":"No worker is ready"}"#;
const NO_ROUTE_BODY: &str = r#"{"code":404,"message":"No app serves this host and path"}"#;

/// Settings of the balancer's request handling: routing, new-session rate, client timeouts.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// Which app each request goes to, with that route's sticky settings.
    pub router: Router,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Test-only: route every request round-robin, ignoring sids and cookies, to show what
    /// happens without stickiness.
    pub unsticky: bool,
    /// New sessions per second per client address (0: no limit).
    pub session_rate: u32,
    /// New sessions a client address may open at once.
    pub session_burst: u32,
    /// Body and send timeouts towards the client, connect timeout towards a worker.
    pub timeouts: ProxyTimeouts,
    /// Plain HTTP redirected to HTTPS, when the balancer terminates TLS.
    pub redirect: Option<Redirect>,
    /// The balancer terminates TLS: workers are told each request's scheme
    /// (`X-Forwarded-Proto`) and the affinity cookie is `Secure` over HTTPS.
    pub tls: bool,
    /// The affinity cookie's secret (shared by every host of a cluster, and kept across
    /// restarts); random per process when absent.
    pub cookie_secret: Option<[u8; 32]>,
    /// This host's place in a cluster of rtsup hosts sharing sessions.
    pub cluster: Option<crate::cluster::ClusterLink>,
}

/// Timeouts of a proxied request. Towards its client once its header is in (nginx
/// `client_body_timeout` and `send_timeout`): each bounds one wait for the client to send
/// or to take data, on every request of a connection; an upgraded connection drops the read
/// one once the worker answered 101. Towards its worker: the wait for a connection (nginx
/// `proxy_connect_timeout`) and how long an idle connection is kept for reuse (nginx's
/// upstream `keepalive_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyTimeouts {
    /// Longest wait for the next piece of a request body.
    pub body: Duration,
    /// Longest wait for the client to take response bytes.
    pub send: Duration,
    /// Longest wait for a worker to take a connection (another host: `PEER_CONNECT`).
    pub connect: Duration,
    /// Longest idle time of a pooled connection to a worker (or another host).
    pub upstream_keepalive: Duration,
}

impl Default for ProxyTimeouts {
    /// nginx's defaults for the client (60 s each); 10 s to connect and 4 s idle in the pool
    /// (see the config's `connect_timeout` and `upstream_keepalive_timeout`).
    fn default() -> Self {
        Self {
            body: Duration::from_secs(60),
            send: Duration::from_secs(60),
            connect: Duration::from_secs(10),
            upstream_keepalive: Duration::from_secs(4),
        }
    }
}

/// The proxy application (one per proxy thread).
pub struct Balancer {
    /// What every proxy thread and every WebSocket tunnel shares.
    shared: Arc<Shared>,
    /// This thread's round-robin turn.
    turn: AtomicUsize,
    access: Option<AccessLog>,
}

/// The balancer's tables, counters and settings, shared by its proxy threads and held by each
/// WebSocket tunnel until it ends.
pub struct Shared {
    /// The live backends of each app (indexed like [`Route::app`]).
    apps: Arc<[Arc<RouteTable>]>,
    sids: Arc<SidTable>,
    loads: Arc<Loads>,
    upgrades: Arc<Upgrades>,
    session_rate: Arc<SessionRate>,
    signer: CookieSigner,
    config: RoutingConfig,
    metrics: BalancerMetrics,
}

impl std::ops::Deref for Balancer {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// Per-request state.
pub struct RequestCtx {
    start: std::time::Instant,
    /// The response is a WebSocket (counted while open).
    websocket: bool,
    snap: Option<Arc<Snapshot>>,
    backend: Option<usize>,
    backend_id: Option<Arc<str>>,
    engineio: bool,
    sid: Option<String>,
    /// A load unit taken for a handshake until its sid is learned (or it fails).
    provisional: bool,
    /// A load unit taken for a WebSocket-first connection, for its whole life.
    ws_first: bool,
    /// The WebSocket of an existing session was counted open in the sid table.
    ws_of_sid: bool,
    sniffer: Option<OpenPacketSniffer>,
    tried: Vec<usize>,
    /// An upgrade request's id in [`Upgrades`] and the release signal of its WebSocket.
    release: Option<(u64, Arc<ReleaseSignal>)>,
    /// Registered in [`Upgrades`] (after the 101).
    registered: bool,
    /// Why it went where it went (metrics and the access log).
    route: Option<RouteLabel>,
    /// Index of its route in the router (none matched: answered 404).
    rule: Option<usize>,
    /// It came over TLS.
    https: bool,
    /// A WebSocket's access-log line, taken from its request when it left for a tunnel.
    upgrade_line: Option<Box<OwnedLine>>,
}

/// The request's side of an access-log line.
struct RequestLine<'a> {
    client: Option<IpAddr>,
    method: &'a str,
    target: &'a str,
    version: &'static str,
    referer: Option<&'a str>,
    user_agent: Option<&'a str>,
    host: Option<&'a str>,
}

/// A [`RequestLine`] kept past its request, for a WebSocket logged when its tunnel ends.
struct OwnedLine {
    client: Option<IpAddr>,
    method: Box<str>,
    target: Box<str>,
    version: &'static str,
    referer: Option<Box<str>>,
    user_agent: Option<Box<str>>,
    host: Option<Box<str>>,
}

impl OwnedLine {
    fn new(line: &RequestLine<'_>) -> Self {
        Self {
            client: line.client,
            method: line.method.into(),
            target: line.target.into(),
            version: line.version,
            referer: line.referer.map(Into::into),
            user_agent: line.user_agent.map(Into::into),
            host: line.host.map(Into::into),
        }
    }

    fn line(&self) -> RequestLine<'_> {
        RequestLine {
            client: self.client,
            method: &self.method,
            target: &self.target,
            version: self.version,
            referer: self.referer.as_deref(),
            user_agent: self.user_agent.as_deref(),
            host: self.host.as_deref(),
        }
    }
}

impl Balancer {
    /// A balancer reading each app's backends in `apps`, recording sessions in `sids`,
    /// counting into `loads`, registering WebSockets in `upgrades`.
    pub(crate) fn new(
        apps: Arc<[Arc<RouteTable>]>,
        sids: Arc<SidTable>,
        loads: Arc<Loads>,
        upgrades: Arc<Upgrades>,
        signer: CookieSigner,
        config: RoutingConfig,
        metrics: BalancerMetrics,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                metrics,
                apps,
                sids,
                loads,
                upgrades,
                session_rate: Arc::new(SessionRate::new(config.session_rate, config.session_burst)),
                signer,
                config,
            }),
            access: None,
            turn: AtomicUsize::new(0),
        }
    }

    /// Log every finished request to `log`.
    pub(crate) fn with_access_log(mut self, log: Option<AccessLog>) -> Self {
        self.access = log;
        self
    }

    /// The same balancer for proxy thread `thread`: every table and counter shared, its own
    /// round-robin turn (no cache line bounced between threads per request), started at
    /// `thread` so simultaneous first requests on every thread do not all pick backend 0.
    pub(crate) fn for_another_thread(&self, thread: usize) -> Self {
        Self {
            shared: self.shared.clone(),
            turn: AtomicUsize::new(self.turn.load(Ordering::Relaxed).wrapping_add(thread)),
            access: self.access.clone(),
        }
    }

    /// Count a routing decision and remember it for the access log.
    fn route(&self, ctx: &mut RequestCtx, kind: RouteLabel) {
        ctx.route = Some(kind);
        self.metrics.route(kind);
    }

    /// Whether backend `id` is a worker of an app other than number `app`.
    fn of_another_app(&self, id: &str, app: usize) -> bool {
        self.apps.len() > 1
            && self
                .apps
                .iter()
                .enumerate()
                .any(|(j, t)| j != app && t.load().by_id(id).is_some())
    }

    /// The per-address limiter of new sessions (for the sweeper).
    pub(crate) fn session_rate(&self) -> Arc<SessionRate> {
        self.session_rate.clone()
    }

    fn client_ip(&self, session: &Session, snap: &Snapshot) -> Option<IpAddr> {
        let peer = session.client_addr()?.as_inet()?.ip();
        let h = &session.req_header().headers;
        let xff = crate::client_ip::joined_forwarded_for(
            h.get_all(&X_FORWARDED_FOR).iter().map(|v| v.as_bytes()),
        );
        let xff = xff.as_deref();
        // Another host of the cluster forwards its clients' requests: per-address limits see
        // the client it names, not the host.
        if snap
            .backends
            .iter()
            .any(|b| b.remote && b.addr.ip().to_canonical() == peer.to_canonical())
        {
            return Some(crate::client_ip::client_ip_via_peer(
                peer,
                &self.config.trusted_proxies,
                xff,
            ));
        }
        let cf = h.get(&CF_CONNECTING_IP).and_then(|v| v.to_str().ok());
        Some(crate::client_ip::client_ip(
            peer,
            &self.config.trusted_proxies,
            cf,
            xff,
        ))
    }

    fn cookie_key(&self, session: &Session, cookie: &str) -> Option<String> {
        session
            .req_header()
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| affinity::find_cookie(v, cookie))
            .and_then(|t| self.signer.verify(t))
            // In a cluster, cookies name workers globally: this host's become local keys.
            .map(|key| match &self.config.cluster {
                Some(c) => c.local(&key).map_or(key.clone(), str::to_string),
                None => key,
            })
    }

    /// The owner of `sid`, which this host does not know, as another host published it
    /// (then cached in the sid table); never asked for a request that came from a peer.
    async fn remote_owner(&self, session: &Session, sid: &str) -> Option<Arc<str>> {
        let cluster = self.config.cluster.as_ref()?;
        if session
            .req_header()
            .headers
            .contains_key(crate::cluster::PEER_HEADER)
        {
            return None;
        }
        let global = cluster.directory.lookup(sid).await?;
        // One of ours that this host no longer has: the session is gone.
        if cluster.local(&global).is_some() {
            return None;
        }
        let owner: Arc<str> = Arc::from(global);
        self.sids.insert(sid, owner.clone(), None);
        Some(owner)
    }

    /// Tells the worker who the client is: `X-Forwarded-For` with the TCP peer appended and,
    /// behind TLS, `X-Forwarded-Proto`. Written into the client's request once it is to be
    /// proxied, before pingora copies it for each attempt: the parsed request's maps keep room
    /// for these two fields (vendored change 15), where the copy's entries are full and would
    /// grow. The client address read later (access log) is the same: the appended peer is
    /// read only when it is trusted, and a trusted hop is skipped.
    fn forward_client(&self, session: &mut Session, ctx: &RequestCtx) -> Result<()> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header_mut();
        if self.config.tls {
            // What the client used, whatever it claimed (nginx: `X-Forwarded-Proto $scheme`).
            req.insert_header(&X_FORWARDED_PROTO, if ctx.https { "https" } else { "http" })?;
        }
        if let Some(peer) = peer {
            // The field looked up once, and set from what it held (vendored change 38).
            req.insert_header_from(&X_FORWARDED_FOR, |prev| {
                let mut prev = prev.peekable();
                if prev.peek().is_none() {
                    // The connection's peer alone: the same value for all its requests.
                    crate::admission::peer_forwarded_for(|| forwarded_for(None, peer))
                } else {
                    forwarded_for(prev, peer)
                }
            })?;
        }
        Ok(())
    }

    /// The request's side of its access-log line.
    fn request_line<'a>(&self, session: &'a Session, ctx: &RequestCtx) -> RequestLine<'a> {
        let req = session.req_header();
        // Any bytes a client sent (the log escapes what is not printable ASCII).
        let header = |name: http::HeaderName| {
            req.headers
                .get(name)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        };
        RequestLine {
            client: match ctx.snap.as_deref() {
                Some(snap) => self.client_ip(session, snap),
                None => self.client_ip(session, &Snapshot::default()),
            },
            method: req.method.as_str(),
            target: req.uri.path_and_query().map_or("/", |p| p.as_str()),
            version: match req.version {
                pingora::http::Version::HTTP_10 => "HTTP/1.0",
                pingora::http::Version::HTTP_2 => "HTTP/2.0",
                _ => "HTTP/1.1",
            },
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            host: header(http::header::HOST).or_else(|| req.uri.host()),
        }
    }
}

impl Shared {
    /// One access log line for the request (or WebSocket) that just ended.
    fn access_log(
        &self,
        log: &AccessLog,
        line: &RequestLine<'_>,
        status: u16,
        bytes: usize,
        ctx: &RequestCtx,
    ) {
        log.log(&Entry {
            at: std::time::SystemTime::now(),
            client: line.client,
            method: line.method,
            target: line.target,
            version: line.version,
            status,
            bytes,
            duration: ctx.start.elapsed(),
            worker: ctx.backend_id.as_deref(),
            route: ctx.route.map_or("-", RouteLabel::as_str),
            websocket: ctx.websocket,
            referer: line.referer,
            user_agent: line.user_agent,
            host: line.host,
        });
    }

    /// Settle the counts of a request (or WebSocket) that just ended with `status` (none
    /// written: `None`).
    fn settle(&self, ctx: &mut RequestCtx, status: Option<u16>) {
        match status {
            Some(status) => {
                self.metrics.request(status);
            }
            None => {
                self.metrics.unanswered.inc();
            }
        }
        if let Some(id) = &ctx.backend_id {
            self.metrics.worker_requests.add(id, 1);
        }
        if ctx.websocket {
            if let Some(id) = &ctx.backend_id {
                self.metrics.websockets.add(id, -1);
                if std::mem::take(&mut ctx.registered)
                    && let Some((conn, _)) = &ctx.release
                {
                    self.upgrades.closed(id, *conn);
                }
            }
        } else {
            self.metrics
                .latency
                .observe(ctx.start.elapsed().as_secs_f64());
        }
        if let Some(id) = &ctx.backend_id
            && (std::mem::take(&mut ctx.provisional) || std::mem::take(&mut ctx.ws_first))
        {
            self.loads.add(id, -1);
        }
        if ctx.ws_of_sid
            && let Some(sid) = &ctx.sid
        {
            if ctx.release.as_ref().is_some_and(|(_, r)| r.released()) {
                // Released: the worker saw its transport end, so the session is over and no
                // longer counts against the draining worker.
                self.sids.remove(sid);
            } else {
                self.sids.websocket_closed(sid);
            }
        }
    }
}

/// The `X-Forwarded-For` value for a request that came with the fields `prev`, from `peer`.
fn forwarded_for<'a>(
    prev: impl IntoIterator<Item = &'a http::HeaderValue>,
    peer: std::net::IpAddr,
) -> Result<http::HeaderValue> {
    let xff = crate::client_ip::forwarded_for(prev.into_iter().map(|v| v.as_bytes()), peer);
    http::HeaderValue::from_maybe_shared(Bytes::from(xff))
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "X-Forwarded-For", e))
}

/// Write a small JSON response and keep the connection alive.
async fn respond_json(session: &mut Session, status: u16, body: &'static str) -> Result<()> {
    respond_json_retry(session, status, body, None).await
}

/// [`respond_json`] with a `Retry-After` (seconds) when given.
async fn respond_json_retry(
    session: &mut Session,
    status: u16,
    body: &'static str,
    retry_after: Option<u64>,
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(4))?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    if let Some(seconds) = retry_after {
        h.insert_header("retry-after", seconds.to_string())?;
    }
    h.insert_header("cache-control", "no-store")?;
    session.write_response_header(Box::new(h), false).await?;
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await?;
    Ok(())
}

/// A 301 to `location`, keeping the connection alive.
async fn respond_redirect(session: &mut Session, location: &str) -> Result<()> {
    let mut h = ResponseHeader::build(301, Some(3))?;
    h.insert_header("location", location)?;
    h.insert_header("content-length", "0")?;
    session.write_response_header(Box::new(h), true).await?;
    Ok(())
}

impl ProxyHttp for Balancer {
    type CTX = RequestCtx;

    /// No downstream modules: pingora's default adds a response-compression module, disabled,
    /// that still allocated and ran on every request (~850 instructions per request under
    /// callgrind); the proxy never compresses.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: std::time::Instant::now(),
            websocket: false,
            snap: None,
            backend: None,
            backend_id: None,
            engineio: false,
            sid: None,
            provisional: false,
            ws_first: false,
            ws_of_sid: false,
            sniffer: None,
            tried: Vec::new(),
            release: None,
            registered: false,
            route: None,
            rule: None,
            https: false,
            upgrade_line: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // Requests a client sends back to back on one connection (HTTP/1.1 pipelining) are
        // answered in order, each routed on its own; without this pingora answers the first
        // and drops the rest.
        session.set_pipelining_enabled(true);
        session.set_read_timeout(Some(self.config.timeouts.body));
        session.set_write_timeout(Some(self.config.timeouts.send));
        // The client address of a handshake (new sessions are limited and may be placed by it).
        let mut handshake_ip = None;
        ctx.https = self.config.tls && session.digest().is_some_and(|d| d.ssl_digest.is_some());
        if let Some(r) = &self.config.redirect {
            let port = session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port());
            let req = session.req_header();
            if r.applies(port, req.uri.path()) {
                let host = req
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok());
                let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
                match r.location(host, pq) {
                    Some(location) => respond_redirect(session, &location).await?,
                    None => respond_json(session, 400, BAD_REQUEST_BODY).await?,
                }
                self.route(ctx, RouteLabel::redirect);
                return Ok(true);
            }
        }
        let req = session.req_header();
        let host = || {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri.host())
        };
        let path = req.uri.path();
        let Some((rule, route)) = self.config.router.pick(host, path) else {
            self.route(ctx, RouteLabel::no_route);
            respond_json(session, 404, NO_ROUTE_BODY).await?;
            return Ok(true);
        };
        ctx.rule = Some(rule);
        let sticky = &route.sticky;
        ctx.engineio = path.starts_with(&sticky.engineio_path)
            || path == sticky.engineio_path.trim_end_matches('/');
        let Some(table) = self.apps.get(route.app) else {
            return Err(Error::explain(ErrorType::InternalError, "route to no app"));
        };
        let snap = table.load();
        if ctx.engineio {
            match engineio::parse_query(session.req_header().uri.query().unwrap_or("")) {
                Ok(q) => ctx.sid = q.sid,
                Err(e) => {
                    debug!(error = %e, "malformed engine.io query");
                    self.route(ctx, RouteLabel::bad_request);
                    respond_json(session, 400, BAD_REQUEST_BODY).await?;
                    return Ok(true);
                }
            }
            // A handshake opens a session: limited per client address.
            if ctx.sid.is_none() {
                handshake_ip = self.client_ip(session, &snap);
                if let Some(ip) = handshake_ip
                    && let Err(wait) = self.session_rate.take(ip, std::time::Instant::now())
                {
                    self.route(ctx, RouteLabel::rate_limited);
                    respond_json_retry(session, 429, RATE_LIMITED_BODY, Some(wait)).await?;
                    return Ok(true);
                }
            }
        }
        // The sid's owner: this host's table, else (in a cluster) the directory, asked once. A
        // sid of another app's worker is unknown here (and not this app's to forget).
        let owner = match ctx.sid.as_deref() {
            Some(sid) if !self.config.unsticky => match self.sids.lookup(sid) {
                Some(owner) => Some(owner),
                None => self.remote_owner(session, sid).await,
            },
            _ => None,
        }
        .filter(|id| !self.of_another_app(id, route.app));
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let decision = if self.config.unsticky {
            match snap.ready.len() {
                0 => Decision::NoBackend,
                n => Decision::Proxy {
                    backend: snap.ready[turn % n],
                    kind: RouteKind::RoundRobin,
                },
            }
        } else {
            // Only what the decision reads: a request of a known session needs no cookie
            // (HMAC), and only a handshake has a client address (read for ip-hash placement).
            let cookie = match (ctx.engineio, &owner) {
                (true, Some(_)) => None,
                _ => self.cookie_key(session, &sticky.cookie),
            };
            let facts = RequestFacts {
                engineio: ctx.engineio,
                sid: ctx.sid.as_deref(),
                sid_owner: owner.as_deref(),
                cookie_key: cookie.as_deref(),
                client_ip: handshake_ip.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            };
            policy::route(
                &snap,
                &facts,
                sticky.new_sessions,
                |i| self.loads.get(&snap.backends[i].id),
                turn,
            )
        };
        // A request another host proxied here is served by this host's workers or not at all:
        // it never travels on (two hosts that disagree could otherwise bounce it for ever).
        let decision = match decision {
            Decision::Proxy { backend, .. }
                if snap.backends[backend].remote
                    && session
                        .req_header()
                        .headers
                        .contains_key(crate::cluster::PEER_HEADER) =>
            {
                Decision::SessionUnknown { owner_gone: false }
            }
            other => other,
        };
        match decision {
            Decision::SessionUnknown { owner_gone } => {
                self.route(
                    ctx,
                    if owner_gone {
                        RouteLabel::dead_worker
                    } else {
                        RouteLabel::sid_unknown
                    },
                );
                debug!(sid = ?ctx.sid, owner_gone, "answering Session ID unknown");
                if owner_gone && let Some(sid) = &ctx.sid {
                    self.sids.remove(sid);
                }
                respond_json(session, 400, SESSION_UNKNOWN_BODY).await?;
                return Ok(true);
            }
            Decision::NoBackend => {
                self.route(ctx, RouteLabel::no_backend);
                respond_json(session, 503, NO_BACKEND_BODY).await?;
                return Ok(true);
            }
            Decision::Proxy { backend, kind } => {
                self.route(
                    ctx,
                    match kind {
                        RouteKind::SidHit => RouteLabel::sid_hit,
                        RouteKind::Cookie => RouteLabel::cookie,
                        RouteKind::NewSession => RouteLabel::new_session,
                        RouteKind::RoundRobin => RouteLabel::round_robin,
                    },
                );
                ctx.backend = Some(backend);
                ctx.backend_id = Some(snap.backends[backend].id.clone());
            }
        }
        ctx.snap = Some(snap);
        let upgrade = session.is_upgrade_req();
        if upgrade {
            ctx.release = Some((self.upgrades.next_id(), Arc::default()));
        }
        if ctx.engineio && !self.config.unsticky {
            if let Some(sid) = &ctx.sid {
                if upgrade {
                    self.sids.websocket_opened(sid);
                    ctx.ws_of_sid = true;
                }
            } else if let Some(id) = &ctx.backend_id {
                self.loads.add(id, 1);
                if upgrade {
                    ctx.ws_first = true;
                } else {
                    ctx.provisional = true;
                    ctx.sniffer = Some(OpenPacketSniffer::default());
                }
            }
        }
        self.forward_client(session, ctx)?;
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (Some(snap), Some(i)) = (&ctx.snap, ctx.backend) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no backend chosen",
            ));
        };
        let remote = snap.backends[i].remote;
        // Built in its box: `HttpPeer` is 672 bytes, copied once more by boxing it after.
        let mut peer = Box::new(HttpPeer::new(snap.backends[i].addr, false, String::new()));
        // Another host's listener queue is pingora's (65,535), never full like a Node
        // worker's; a host cut off answers no SYN, and its sessions' requests should fail fast.
        peer.options.connection_timeout = Some(if remote {
            PEER_CONNECT
        } else {
            self.config.timeouts.connect
        });
        // Let an idle connection go before the worker does: one it closes just as a request
        // goes out on it fails that request (a POST is never retried).
        peer.options.idle_timeout = Some(self.config.timeouts.upstream_keepalive);
        if remote {
            // Another host may hang (frozen, cut off) without closing: engine.io sends
            // something at least every pingInterval (25 s), so a minute of silence is a dead
            // peer, never a slow poll.
            peer.options.read_timeout = Some(PEER_SILENCE);
            peer.options.write_timeout = Some(PEER_SILENCE);
            // From this host's advertised address, so the peer knows it is a peer.
            if let Some(ip) = self.config.cluster.as_ref().and_then(|c| c.bind) {
                let mut bind = pingora::connectors::l4::BindTo::default();
                bind.addr = Some(std::net::SocketAddr::new(ip, 0));
                peer.options.bind_to = Some(bind);
            }
        }
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // A new session can go elsewhere; an existing one cannot (its state is in that worker).
        if ctx.sid.is_some() || ctx.tried.len() >= 3 {
            return e;
        }
        let Some(snap) = ctx.snap.clone() else {
            return e;
        };
        if let Some(failed) = ctx.backend {
            ctx.tried.push(failed);
        }
        let next = snap
            .ready
            .iter()
            .copied()
            .filter(|i| !ctx.tried.contains(i))
            .min_by_key(|&i| self.loads.get(&snap.backends[i].id));
        if let Some(next) = next {
            let id = snap.backends[next].id.clone();
            if ctx.provisional || ctx.ws_first {
                if let Some(old) = &ctx.backend_id {
                    self.loads.add(old, -1);
                }
                self.loads.add(&id, 1);
            }
            ctx.backend = Some(next);
            ctx.backend_id = Some(id);
            e.set_retry(true);
        }
        e
    }

    /// The filters add and remove fields (`X-Forwarded-For`, `X-Forwarded-Proto`,
    /// `Accept-Encoding`, the cluster's peer field) and never touch `Host`, the URI or the
    /// target, so pingora need not check again the authority it checked when it read the
    /// request (vendored change 27). A filter that rewrites any of them must say so here.
    fn filters_change_authority(&self) -> bool {
        false
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.sniffer.is_some() {
            // Node gzips bodies over 1 KB; the open packet must stay readable.
            upstream.remove_header(&http::header::ACCEPT_ENCODING);
        }
        if let (Some(c), Some(snap), Some(i)) = (&self.config.cluster, &ctx.snap, ctx.backend)
            && snap.backends[i].remote
        {
            // The peer routes it to its own worker and asks nobody else.
            upstream.insert_header(crate::cluster::PEER_HEADER, &*c.me)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        if status == 101
            && let Some(id) = &ctx.backend_id
        {
            // Upgraded for real: the connection now idles between engine.io pings, and its
            // liveness is the worker's business, not a proxy read timeout. A request that only
            // asked for an upgrade keeps the timeout (it would stick to a kept-alive connection).
            session.set_read_timeout(None);
            ctx.websocket = true;
            self.metrics.websockets.add(id, 1);
            if let Some((conn, release)) = &ctx.release {
                let weak = Arc::downgrade(release);
                self.upgrades
                    .opened(id, *conn, weak as std::sync::Weak<dyn Close>);
                ctx.registered = true;
            }
        }
        if status == 400 && ctx.sid.is_some() {
            debug!(
                sid = ?ctx.sid,
                backend = ?ctx.backend_id,
                method = %session.req_header().method,
                query = ?session.req_header().uri.query(),
                "worker rejected a session request"
            );
        }
        if ctx.sniffer.is_some() && status != 200 {
            ctx.sniffer = None;
        }
        let handshake = ctx.engineio && ctx.sid.is_none() && !self.config.unsticky;
        if handshake
            && (status == 200 || status == 101)
            && let (Some(snap), Some(i)) = (&ctx.snap, ctx.backend)
            // Another host's worker: its own rtsup sets the cookie.
            && !snap.backends[i].remote
            && let Some(route) = ctx.rule.and_then(|r| self.config.router.routes().get(r))
        {
            let key = &snap.backends[i].key;
            let token = match &self.config.cluster {
                Some(c) => self.signer.sign(&c.global(key)),
                None => self.signer.sign(key),
            };
            resp.append_header(
                http::header::SET_COOKIE,
                affinity::set_cookie_value(&route.sticky.cookie, &token, ctx.https),
            )?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let (Some(sniffer), Some(chunk)) = (ctx.sniffer.as_mut(), body.as_ref())
            && let Some(open) = sniffer.feed(chunk)
        {
            if let Some(id) = &ctx.backend_id {
                // Inserted before these bytes reach the client, so its next request (which
                // carries the sid) always finds the entry.
                if self.sids.insert(&open.sid, id.clone(), open.liveness) {
                    debug!(sid = %open.sid, backend = %id, "session learned");
                    if let Some(c) = &self.config.cluster
                        && !crate::cluster::is_remote(id)
                    {
                        c.directory.learned(&open.sid, &c.global(id));
                    }
                } else {
                    debug!(sid = %open.sid, "sid table full: the session relies on its cookie");
                }
                if std::mem::take(&mut ctx.provisional) {
                    self.loads.add(id, -1);
                }
            }
            ctx.sniffer = None;
        }
        Ok(None)
    }

    /// A request header that never came whole (the client closed, timed out, or sent garbage
    /// or too much): pingora answers and closes; it is counted, and logged at debug only.
    fn request_header_error(&self, e: &Error) {
        let kind = match e.etype() {
            ErrorType::ReadTimedout => HeaderErrorLabel::timeout,
            ErrorType::InvalidHTTPHeader => HeaderErrorLabel::malformed,
            ErrorType::CustomCode(_, 414) => HeaderErrorLabel::line_too_long,
            ErrorType::CustomCode(_, 431) => HeaderErrorLabel::too_large,
            ErrorType::CustomCode(_, 501) => HeaderErrorLabel::unsupported_coding,
            _ => HeaderErrorLabel::closed,
        };
        self.metrics.header_error(kind);
        debug!(error = %e, "request header not read");
    }

    /// A request that failed because of its client (gone mid-request, garbage) is counted, not
    /// logged at error level: a client must not be able to fill the daemon's log.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        let client = *e.esource() == ErrorSource::Downstream;
        if client {
            self.metrics.client_errors.inc();
            debug!(error = %e, "request failed on the client's side");
        }
        client
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let connect_failed = matches!(e.esource(), ErrorSource::Upstream)
            && matches!(
                e.etype(),
                ErrorType::ConnectRefused
                    | ErrorType::ConnectTimedout
                    | ErrorType::ConnectError
                    | ErrorType::ConnectNoRoute
            );
        if matches!(e.esource(), ErrorSource::Upstream) {
            self.metrics.upstream_errors.inc();
        }
        let code = if ctx.sid.is_some() && connect_failed {
            // Its worker is unreachable: tell the client its session is gone so it reconnects.
            ctx.route = Some(RouteLabel::dead_worker);
            if let Some(sid) = &ctx.sid {
                self.sids.remove(sid);
            }
            let _ = respond_json(session, 400, SESSION_UNKNOWN_BODY).await;
            400
        } else {
            let code = match e.etype() {
                ErrorType::HTTPStatus(c) => *c,
                _ => match e.esource() {
                    ErrorSource::Upstream => 502,
                    ErrorSource::Downstream => match e.etype() {
                        ErrorType::WriteError
                        | ErrorType::ReadError
                        | ErrorType::ConnectionClosed => 0,
                        _ => 400,
                    },
                    ErrorSource::Internal | ErrorSource::Unset => 500,
                },
            };
            if code > 0 {
                let _ = session.respond_error(code).await;
            }
            code
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        tracing::trace!(
            sid = ?ctx.sid,
            backend = ?ctx.backend_id,
            method = %session.req_header().method,
            query = ?session.req_header().uri.query(),
            status = ?session.response_written().map(|r| r.status.as_u16()),
            error = ?e.map(|e| e.to_string()),
            "request done"
        );
        let status = session.response_written().map(|r| r.status.as_u16());
        if let Some(log) = &self.access {
            let line = self.request_line(session, ctx);
            self.access_log(
                log,
                &line,
                status.unwrap_or(0),
                session.body_bytes_sent(),
                ctx,
            );
        }
        self.settle(ctx, status);
    }

    /// Every WebSocket to a worker leaves pingora once its 101 is through (see [`tunnel`]).
    fn tunnel_upgraded(&self, _session: &Session, ctx: &RequestCtx) -> bool {
        ctx.backend_id.is_some()
    }

    fn upgrade_taken(&self, session: &mut Session, ctx: &mut RequestCtx) {
        if self.access.is_some() {
            ctx.upgrade_line = Some(Box::new(OwnedLine::new(&self.request_line(session, ctx))));
        }
    }

    /// The WebSocket's own task: the tunnel, then its log line and counts. It keeps the
    /// connection's places under the caps, its context and the shared tables, nothing else.
    fn tunnel(&self, tunnel: Tunnel, mut ctx: RequestCtx) {
        let hold = crate::admission::take_hold();
        let release = ctx
            .release
            .as_ref()
            .map_or_else(Arc::default, |(_, r)| r.clone());
        // Another host's rtsup could freeze where the client cannot see it (as for its HTTP
        // requests, a limit on its silence).
        let peer = ctx
            .snap
            .as_ref()
            .zip(ctx.backend)
            .and_then(|(snap, i)| snap.backends.get(i))
            .is_some_and(|b| b.remote);
        let pump = Pump::new(
            tunnel.client,
            tunnel.client_preread,
            tunnel.upstream,
            tunnel.upstream_preread,
            release,
            self.config.timeouts.send,
            peer.then_some(PEER_SILENCE),
        );
        // What a WebSocket no longer needs.
        ctx.snap = None;
        ctx.tried = Vec::new();
        ctx.sniffer = None;
        let shared = self.shared.clone();
        // Its access-log line, when the log is on (see `upgrade_taken`).
        let logged = ctx.upgrade_line.take().zip(self.access.clone());
        tokio::spawn(async move {
            let outcome = pump.await;
            debug!(end = ?outcome.end, backend = ?ctx.backend_id, "websocket ended");
            if let Some((line, log)) = logged {
                let bytes = usize::try_from(outcome.to_client).unwrap_or(usize::MAX);
                shared.access_log(&log, &line.line(), 101, bytes, &ctx);
            }
            shared.settle(&mut ctx, Some(101));
            drop(hold);
        });
    }
}
