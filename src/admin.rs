//! The admin HTTP server (default 127.0.0.1:9090): `GET /status` (the `rtsup status --json`
//! report), `GET /metrics` (Prometheus), `GET /` (a live dashboard).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

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

/// Bind the admin address (errors name it).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on admin address {addr}: {e}"))
}

/// Serve until the task is aborted.
pub async fn serve(listener: TcpListener, obs: Arc<Observability>) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin listening (/status, /metrics, /)");
    }
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
        let obs = obs.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let obs = obs.clone();
                async move { Ok::<_, Infallible>(route(&obs, &req)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn route(obs: &Observability, req: &Request<Incoming>) -> Response<Full<Bytes>> {
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
            obs.metrics(),
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
