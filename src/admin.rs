//! The admin HTTP server (only with an `[admin]` section; default 127.0.0.1:9090): `GET /status`
//! (the `rtsup status --json` report), `GET /metrics` (Prometheus), `GET /` (a live dashboard).
//!
//! Requests must name it by an address it listens on (the `Host` header: a page on another
//! site cannot reach it through DNS rebinding), and carry the bearer token when one is
//! configured (`Authorization: Bearer …`, or `?token=…` for the dashboard, which passes it on).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::observe::Observability;

const DASHBOARD: &str = include_str!("assets/dashboard.html");

/// Admin connections served at once; more are closed at once (the admin port must never take
/// the descriptors the supervisor needs).
const MAX_CONNECTIONS: usize = 32;

/// Time for a request header, and for a whole admin connection.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Bind the admin address (errors name it).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on admin address {addr}: {e}"))
}

/// Serve until the task is aborted.
pub async fn serve(listener: TcpListener, obs: Arc<Observability>, token: Option<String>) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    info!(addr = %local, "admin listening (/status, /metrics, /)");
    let token: Arc<Option<String>> = Arc::new(token);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut failing = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                if std::mem::take(&mut failing) {
                    info!("admin accepting again");
                }
                stream
            }
            Err(e) => {
                // Out of file descriptors: say so once per streak, pause, keep serving.
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "admin accept failed; retrying");
                }
                tokio::time::sleep(crate::control::server::ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: close it now rather than hold a descriptor for it.
            drop(stream);
            continue;
        };
        let obs = obs.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req| {
                let obs = obs.clone();
                let token = token.clone();
                async move {
                    Ok::<_, Infallible>(match refuse(&req, local, token.as_deref()) {
                        Some(refusal) => refusal,
                        None => route(&obs, &req).await,
                    })
                }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Err(e)) => debug!(error = %e, "admin connection ended"),
                Ok(Ok(())) => {}
                Err(_) => debug!("admin connection closed after its lifetime"),
            }
        });
    }
}

/// Why `req` is refused, if it is: a `Host` that is not this server (421), or a missing or
/// wrong token (401).
fn refuse(
    req: &Request<Incoming>,
    local: SocketAddr,
    token: Option<&str>,
) -> Option<Response<Full<Bytes>>> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !host_is_local(host, local) {
        return Some(respond(
            StatusCode::MISDIRECTED_REQUEST,
            "text/plain",
            "unknown host\n".into(),
        ));
    }
    let expected = token?;
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let query = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    let given = bearer.or(query).unwrap_or_default();
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        None
    } else {
        Some(respond(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "token required\n".into(),
        ))
    }
}

/// Whether `host` (a `Host` header) names this server: its own address, or a loopback name
/// when it listens on loopback or on every address; with or without the port.
fn host_is_local(host: &str, local: SocketAddr) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        // [v6] or [v6]:port
        Some(rest) => match rest.split_once(']') {
            Some((name, tail)) => (name, tail.strip_prefix(':')),
            None => return false,
        },
        None => match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    if port.is_some_and(|p| p.parse::<u16>() != Ok(local.port())) {
        return false;
    }
    let ip = local.ip();
    if name.parse::<std::net::IpAddr>().is_ok_and(|n| n == ip) {
        return true;
    }
    (ip.is_loopback() || ip.is_unspecified()) && ["localhost", "127.0.0.1", "::1"].contains(&name)
}

/// Compare without an early exit, so the time taken does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn route(obs: &Observability, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/status" => match serde_json::to_string(&obs.status()) {
            Ok(json) => respond(StatusCode::OK, "application/json", json),
            Err(e) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
        "/metrics" => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            obs.metrics_with_workers().await,
        ),
        "/" => respond(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD.into()),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hosts_naming_this_server_pass() {
        let lo: SocketAddr = "127.0.0.1:9090".parse().expect("addr");
        for ok in [
            "127.0.0.1:9090",
            "localhost:9090",
            "localhost",
            "[::1]:9090",
            "127.0.0.1",
        ] {
            assert!(host_is_local(ok, lo), "{ok}");
        }
        for bad in [
            "evil.example:9090",
            "evil.example",
            "127.0.0.1:80",
            "",
            "10.0.0.1:9090",
        ] {
            assert!(!host_is_local(bad, lo), "{bad}");
        }
        let public: SocketAddr = "10.0.0.5:9090".parse().expect("addr");
        assert!(host_is_local("10.0.0.5:9090", public));
        assert!(!host_is_local("localhost:9090", public));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-124", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret", b"secret-token-123"));
    }
}
