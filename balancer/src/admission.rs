//! The proxy's door: every accepted connection passes [`Connections::admit`] before pingora
//! reads a byte of it. A connection over a cap gets a short answer (503 when the proxy is
//! full, 429 when its address holds its share) and is closed at once; an admitted one holds
//! its [`Ticket`](crate::connections::Ticket) until pingora is done with it, keep-alive
//! requests and WebSocket included.
//!
//! Refusals are counted in the metrics and warned about at most once per
//! [`WARN_EVERY`], with how many there were since: a flood must not fill the log.
//!
//! An admitted connection's task also keeps what its requests share: the
//! `X-Forwarded-For` value of a request that came without one ([`peer_forwarded_for`]).
//!
//! With several proxy threads, each accept loop takes its share of the connections only
//! ([`crate::spread`]).

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::HeaderValue;
use pingora::apps::{AcceptRule, AcceptToken, HandshakeToken, ServerApp, take_accept_token};
use pingora::protocols::ALPN;
use pingora::protocols::Stream;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::server::ShutdownWatch;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::AsyncWriteExt;
use tracing::warn;

use crate::connections::{Connections, Refusal, Ticket};
use crate::metrics::BalancerMetrics;
use crate::spread::{Spread, ThreadLoads};

/// Least time between two warnings about refused connections.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Requests an HTTP/2 connection may have in flight at once (each has an upstream
/// connection of its own while it runs).
pub const H2_STREAMS: u32 = 8;

/// Places under the connection caps an HTTP/2 connection holds: its descriptor and one per
/// stream, at the two descriptors a place stands for (see [`crate::connections::budget`]).
const H2_PLACES: usize = (1 + H2_STREAMS as usize).div_ceil(2);

/// Time a refused client gets to take its answer.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";
const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";

/// A pingora app behind the connection caps.
pub struct Admission<A> {
    inner: Arc<A>,
    connections: Arc<Connections>,
    metrics: BalancerMetrics,
    warned: Arc<WarnThrottle>,
    handshake_timeout: Duration,
    /// This proxy thread's place among the others (none with one thread).
    spread: Option<Spread>,
}

impl<A> Admission<A> {
    /// `inner` behind `connections`' caps, warning through `warned` (shared by every proxy
    /// thread, so the warning is once per period for the whole proxy).
    pub fn new(
        inner: A,
        connections: Arc<Connections>,
        metrics: BalancerMetrics,
        warned: Arc<WarnThrottle>,
    ) -> Self {
        Self {
            inner: Arc::new(inner),
            connections,
            metrics,
            warned,
            handshake_timeout: Duration::from_secs(60),
            spread: None,
        }
    }

    /// Serve as proxy thread `thread` of those counted in `loads`: accept only while this
    /// thread holds no more than its share of their connections.
    pub(crate) fn on_thread(mut self, loads: Arc<ThreadLoads>, thread: usize) -> Self {
        self.spread = Some(Spread::new(loads, thread));
        self
    }

    /// Give a TLS handshake at most `timeout` (the header timeout: nginx bounds the handshake
    /// with `client_header_timeout` too).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Count a refusal and warn about it at most once per period.
    fn refused(&self, refusal: Refusal) {
        self.metrics.refused(refusal);
        if let Some(since) = self.warned.due(Instant::now()) {
            let caps = self.connections.caps();
            warn!(
                refused = since,
                total_cap = caps.total,
                per_address_cap = caps.per_address,
                last = ?refusal,
                "balancer: refusing client connections over the caps \
                 ([balancer] max_connections, max_connections_per_address)"
            );
        }
    }
}

/// The client address of a socket, when it has one.
fn peer_ip(addr: Option<&SocketAddr>) -> Option<IpAddr> {
    addr.and_then(|a| a.as_inet()).map(|a| a.ip())
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Admission<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| peer_ip(d.peer_addr()));
        // An HTTP/2 connection proxies up to H2_STREAMS requests at once, each on its own
        // upstream connection: it holds as many places under the caps as its descriptors need.
        let places = if stream.selected_alpn_proto() == Some(ALPN::H2) {
            H2_PLACES
        } else {
            1
        };
        let mut tickets = Vec::with_capacity(places);
        for _ in 0..places {
            match self.connections.admit(peer) {
                Ok(t) => tickets.push(t),
                Err(refusal) if !tickets.is_empty() => {
                    // Past the handshake of an h2 connection: no HTTP/1 answer can reach it.
                    self.refused(refusal);
                    return None;
                }
                Err(refusal) => return self.refuse(stream, refusal).await,
            }
        }
        // The tickets live as long as pingora serves the connection (every keep-alive request
        // runs inside this call) or, for a WebSocket, as long as its tunnel: the tunnel takes
        // them with [`take_hold`].
        let hold = Hold {
            _tickets: tickets,
            _open: OpenGauge::new(self.metrics.connections.clone()),
            _thread: take_accept_token(),
        };
        let connection = Connection {
            hold: RefCell::new(Some(hold)),
            forwarded_for: RefCell::new(None),
        };
        CONNECTION
            .scope(connection, self.inner.process_new(stream, shutdown))
            .await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }

    /// A connection still in its TLS handshake holds a place under the caps like any other
    /// (refused ones are closed at once: no answer can reach them before TLS).
    fn admit_handshake(&self, peer: Option<&SocketAddr>) -> Option<HandshakeToken> {
        match self.connections.admit(peer_ip(peer)) {
            Ok(ticket) => Some(HandshakeToken(Some(Box::new(ticket)))),
            Err(refusal) => {
                self.refused(refusal);
                None
            }
        }
    }

    fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    fn accept_rule(&self) -> Option<Box<dyn AcceptRule>> {
        Some(Box::new(self.spread.as_ref()?.gate()))
    }

    /// The connection counts on this thread until it closes (its tunnel's end, for a
    /// WebSocket).
    fn accept_token(&self) -> AcceptToken {
        AcceptToken(self.spread.as_ref().map(|s| Box::new(s.enter()) as _))
    }
}

impl<A> Admission<A> {
    /// Answer a refused connection (503 when the proxy is full, 429 when its address holds
    /// its share) and close it.
    async fn refuse(&self, mut stream: Stream, refusal: Refusal) -> Option<Stream> {
        self.refused(refusal);
        let answer = match refusal {
            Refusal::Total => FULL,
            Refusal::PerAddress => TOO_MANY,
        };
        let _ = tokio::time::timeout(REFUSAL_WRITE, async {
            stream.write_all(answer).await?;
            stream.shutdown().await
        })
        .await;
        None
    }
}

tokio::task_local! {
    /// The connection being served on this task.
    static CONNECTION: Connection;
}

/// What the task serving an admitted connection keeps while it runs.
struct Connection {
    /// What the connection holds until it closes (taken by a WebSocket's tunnel).
    hold: RefCell<Option<Hold>>,
    /// The `X-Forwarded-For` value of its requests that come without one: its peer's
    /// address, the same for every request on the connection.
    forwarded_for: RefCell<Option<HeaderValue>>,
}

/// What an admitted connection holds while it is open: its places under the caps, its
/// count in the open-connections gauge and on its proxy thread. Released when dropped.
pub(crate) struct Hold {
    _tickets: Vec<Ticket>,
    _open: OpenGauge,
    _thread: AcceptToken,
}

/// Take the current connection's [`Hold`] out of its task, for a WebSocket leaving pingora as
/// a tunnel on a task of its own (`None` outside a connection admitted here).
pub(crate) fn take_hold() -> Option<Hold> {
    CONNECTION
        .try_with(|c| c.hold.borrow_mut().take())
        .ok()
        .flatten()
}

/// The `X-Forwarded-For` value of a request that came without one on the current
/// connection: made by `make` on the first such request and kept for the next ones (made
/// every time outside a connection admitted here, e.g. on an HTTP/2 stream's own task).
/// Spares every kept-alive request the formatting of its peer's address and the copy and
/// check of the value.
pub(crate) fn peer_forwarded_for<E>(
    make: impl FnOnce() -> Result<HeaderValue, E>,
) -> Result<HeaderValue, E> {
    let Ok(kept) = CONNECTION.try_with(|c| c.forwarded_for.borrow().clone()) else {
        return make();
    };
    if let Some(value) = kept {
        return Ok(value);
    }
    let value = make()?;
    let _ = CONNECTION.try_with(|c| *c.forwarded_for.borrow_mut() = Some(value.clone()));
    Ok(value)
}

/// Counts one open connection in the metrics while it lives (also when the connection's task
/// is dropped at shutdown).
struct OpenGauge(Gauge);

impl OpenGauge {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// At most one warning per period, reporting how many events it stands for.
#[derive(Debug)]
pub struct WarnThrottle {
    start: Instant,
    period_ms: u64,
    /// Milliseconds after `start` of the last warning, plus one (0: never warned).
    last: AtomicU64,
    pending: AtomicU64,
}

impl WarnThrottle {
    /// At most one warning per `period`.
    pub fn new(period: Duration) -> Self {
        Self {
            start: Instant::now(),
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
            last: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Record one event at `now`; `Some(n)` when a warning is due, `n` events since the last.
    pub(crate) fn due(&self, now: Instant) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let at = u64::try_from(now.saturating_duration_since(self.start).as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && at.saturating_sub(last) < self.period_ms {
            return None;
        }
        self.last
            .compare_exchange(last, at, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        Some(self.pending.swap(0, Ordering::AcqRel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_warning_is_due_once_per_period_and_counts_what_it_stood_for() {
        let t = WarnThrottle::new(Duration::from_secs(10));
        let t0 = t.start;
        assert_eq!(t.due(t0), Some(1), "the first event warns");
        for s in 1..10 {
            assert_eq!(t.due(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(t.due(t0 + Duration::from_secs(10)), Some(10));
        assert_eq!(t.due(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.due(t0 + Duration::from_secs(25)), Some(2));
    }
}
