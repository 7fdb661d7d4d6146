//! The balancer's counters (prometheus-client): requests by status, routing decisions by kind,
//! upstream errors, request latency, and open WebSockets per backend. The admin server
//! registers them into the registry it encodes on every scrape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::connections::Refusal;
use crate::loads::Loads;

/// Why a request went where it went, or why it was answered by the balancer itself.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RouteLabel {
    /// The sid table knew the session's worker.
    sid_hit,
    /// The affinity cookie named a ready worker.
    cookie,
    /// A new session placed by `new_sessions`.
    new_session,
    /// A non-engine.io request without affinity.
    round_robin,
    /// A sid nobody knows (answered 400 by the balancer).
    sid_unknown,
    /// A sid whose worker is dead (answered 400 by the balancer at once).
    dead_worker,
    /// No worker ready (503).
    no_backend,
    /// Malformed engine.io query (400).
    bad_request,
    /// A handshake over its client address's new-session rate (429).
    rate_limited,
    /// Plain HTTP redirected to HTTPS (301).
    redirect,
    /// No route takes the request's host and path (404).
    no_route,
}

impl RouteLabel {
    /// How the access log names it.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteLabel::sid_hit => "sid",
            RouteLabel::cookie => "cookie",
            RouteLabel::new_session => "new-session",
            RouteLabel::round_robin => "round-robin",
            RouteLabel::sid_unknown => "sid-unknown",
            RouteLabel::dead_worker => "dead-worker",
            RouteLabel::no_backend => "no-worker",
            RouteLabel::bad_request => "bad-request",
            RouteLabel::rate_limited => "rate-limited",
            RouteLabel::redirect => "redirect",
            RouteLabel::no_route => "no-route",
        }
    }
}

/// Label set of the routing counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The decision.
    pub kind: RouteLabel,
}

/// Why a connection was refused at the door.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RefusalLabel {
    /// The proxy held its whole connection budget (503).
    total,
    /// The client's address held its share (429).
    per_address,
}

/// Label set of the refused-connections counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Which cap.
    pub cap: RefusalLabel,
}

/// What went wrong reading a request header.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum HeaderErrorLabel {
    /// Not whole within the header timeout (closed).
    timeout,
    /// Malformed (400).
    malformed,
    /// Request line too long (414).
    line_too_long,
    /// Header too large (431).
    too_large,
    /// A transfer coding the proxy does not implement (501).
    unsupported_coding,
    /// The client closed or broke the connection mid-header.
    closed,
}

/// Label set of the header-errors counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeaderErrorLabels {
    /// What went wrong.
    pub kind: HeaderErrorLabel,
}

/// Label set of the per-thread connections gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThreadLabels {
    /// The proxy thread (0 to `threads` − 1).
    pub thread: u32,
}

/// Label set of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// HTTP status sent to the client.
    pub status: u16,
}

/// Every balancer metric; cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub struct BalancerMetrics {
    /// Requests by response status.
    pub requests: Family<StatusLabels, Counter>,
    /// The counters of `requests` for statuses 100–599, each resolved on its first use (no map
    /// lookup and lock per request after that).
    status_counters: Arc<[OnceLock<Counter>; STATUS_SLOTS]>,
    /// Requests that ended before any response was sent (the client went away, or the
    /// connection failed while the request was read).
    pub unanswered: Counter,
    /// Routing decisions by kind.
    pub routes: Family<RouteLabels, Counter>,
    /// The counters of `routes`, one per kind, resolved once (no map lookup per request).
    route_counters: Arc<[Counter; ROUTE_KINDS.len()]>,
    /// Requests that failed on the client's side (gone mid-request, invalid), logged at debug.
    pub client_errors: Counter,
    /// Failures to connect to or talk with a worker.
    pub upstream_errors: Counter,
    /// Request duration, seconds (upgraded WebSockets count their whole life; not observed).
    pub latency: Histogram,
    /// Open WebSocket connections per backend id.
    pub websockets: Arc<Loads>,
    /// Requests proxied per backend id, since it started (`rtsup status`, `rtsup monit`).
    pub worker_requests: Arc<Loads>,
    /// Balancer-answered "Session ID unknown" (both kinds), for `rtsup status`.
    pub sid_unknown_total: Arc<AtomicU64>,
    /// Connections refused by a cap.
    pub refused: Family<RefusalLabels, Counter>,
    /// Client connections open now.
    pub connections: Gauge,
    /// Client connections open now, by proxy thread.
    pub thread_connections: Family<ThreadLabels, Gauge>,
    /// Request headers that could not be read, by what went wrong.
    pub header_errors: Family<HeaderErrorLabels, Counter>,
}

/// The first status with a resolved counter, and how many follow it (100–599).
const FIRST_STATUS: u16 = 100;
const STATUS_SLOTS: usize = 500;

/// Every route kind, in the order of [`RouteLabel`]'s discriminants.
const ROUTE_KINDS: [RouteLabel; 11] = [
    RouteLabel::sid_hit,
    RouteLabel::cookie,
    RouteLabel::new_session,
    RouteLabel::round_robin,
    RouteLabel::sid_unknown,
    RouteLabel::dead_worker,
    RouteLabel::no_backend,
    RouteLabel::bad_request,
    RouteLabel::rate_limited,
    RouteLabel::redirect,
    RouteLabel::no_route,
];

impl Default for BalancerMetrics {
    fn default() -> Self {
        let routes: Family<RouteLabels, Counter> = Family::default();
        let route_counters =
            Arc::new(ROUTE_KINDS.map(|kind| routes.get_or_create(&RouteLabels { kind }).clone()));
        Self {
            route_counters,
            requests: Family::default(),
            status_counters: Arc::new(std::array::from_fn(|_| OnceLock::new())),
            unanswered: Counter::default(),
            routes,
            client_errors: Counter::default(),
            upstream_errors: Counter::default(),
            // 0.5 ms … ~16 s.
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            websockets: Arc::new(Loads::default()),
            worker_requests: Arc::new(Loads::default()),
            sid_unknown_total: Arc::new(AtomicU64::new(0)),
            refused: Family::default(),
            connections: Gauge::default(),
            thread_connections: Family::default(),
            header_errors: Family::default(),
        }
    }
}

impl BalancerMetrics {
    /// Count one request answered with `status`.
    pub fn request(&self, status: u16) {
        let counter = |status| {
            self.requests
                .get_or_create(&StatusLabels { status })
                .clone()
        };
        match status
            .checked_sub(FIRST_STATUS)
            .and_then(|i| self.status_counters.get(usize::from(i)))
        {
            Some(slot) => slot.get_or_init(|| counter(status)).inc(),
            None => counter(status).inc(),
        };
    }

    /// Count one routing decision.
    pub fn route(&self, kind: RouteLabel) {
        self.route_counters[kind as usize].inc();
        if matches!(kind, RouteLabel::sid_unknown | RouteLabel::dead_worker) {
            self.sid_unknown_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count one refused connection.
    pub fn refused(&self, refusal: Refusal) {
        let cap = match refusal {
            Refusal::Total => RefusalLabel::total,
            Refusal::PerAddress => RefusalLabel::per_address,
        };
        self.refused.get_or_create(&RefusalLabels { cap }).inc();
    }

    /// Count one request header that could not be read.
    pub fn header_error(&self, kind: HeaderErrorLabel) {
        self.header_errors
            .get_or_create(&HeaderErrorLabels { kind })
            .inc();
    }

    /// Register every metric under the `balancer_` prefix (below the registry's own).
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("balancer");
        sub.register(
            "requests",
            "Requests by response status",
            self.requests.clone(),
        );
        sub.register(
            "requests_unanswered",
            "Requests that ended before a response was sent (client gone, connection failed)",
            self.unanswered.clone(),
        );
        sub.register("routes", "Routing decisions by kind", self.routes.clone());
        sub.register(
            "client_errors",
            "Requests that failed on the client's side (gone mid-request, invalid)",
            self.client_errors.clone(),
        );
        sub.register(
            "upstream_errors",
            "Failures reaching a worker",
            self.upstream_errors.clone(),
        );
        sub.register(
            "connections",
            "Client connections open now",
            self.connections.clone(),
        );
        sub.register(
            "thread_connections",
            "Client connections open now, by proxy thread (kept even by the accept loops)",
            self.thread_connections.clone(),
        );
        sub.register(
            "connections_refused",
            "Client connections refused by a cap, by cap",
            self.refused.clone(),
        );
        sub.register(
            "header_errors",
            "Request headers that could not be read (timeout, malformed, too long, closed)",
            self.header_errors.clone(),
        );
        sub.register(
            "request_duration_seconds",
            "Request duration (WebSockets excluded)",
            self.latency.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters() {
        let m = BalancerMetrics::default();
        m.route(RouteLabel::sid_hit);
        m.route(RouteLabel::dead_worker);
        m.request(200);
        m.request(200);
        m.request(999);
        let mut reg = Registry::with_prefix("rtsup");
        m.register(&mut reg);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
        assert!(
            text.contains("rtsup_balancer_routes_total{kind=\"sid_hit\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rtsup_balancer_requests_total{status=\"200\"} 2"),
            "{text}"
        );
        // A status outside 100–599 is counted too, through the map.
        assert!(
            text.contains("rtsup_balancer_requests_total{status=\"999\"} 1"),
            "{text}"
        );
        assert_eq!(m.sid_unknown_total.load(Ordering::Relaxed), 1);
        // Every kind is exported from the start, at its own count.
        for (i, kind) in ROUTE_KINDS.iter().enumerate() {
            assert_eq!(*kind as usize, i, "ROUTE_KINDS follows the enum's order");
        }
        assert!(
            text.contains("rtsup_balancer_routes_total{kind=\"rate_limited\"} 0"),
            "{text}"
        );
    }
}
