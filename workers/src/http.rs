//! The worker's plain HTTP routes, beside socket.io's `/socket.io/`:
//! `GET /health`, `POST /emit` (webhook), `GET /` (demo page), `GET /socket.io.min.js`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;

use crate::app::{Info, emit_to_room};

/// Largest webhook body accepted.
pub const MAX_EMIT_BODY: usize = 1 << 20;

const DEMO_PAGE: &str = include_str!("../assets/demo.html");
const CLIENT_JS: &str = include_str!("../assets/socket.io.min.js");

/// Events a webhook may not emit: socket.io reserves them.
const RESERVED: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The routes, as a hyper service socket.io falls back to for non-socket.io paths.
pub struct Routes<A: Adapter> {
    /// Filled right after the socket.io builder returns it.
    pub io: Arc<OnceLock<SocketIo<A>>>,
    /// Worker identity for `/health`.
    pub info: Info,
    /// Bearer token of `/emit`; `None` disables the webhook.
    pub emit_token: Option<Arc<str>>,
}

impl<A: Adapter> Clone for Routes<A> {
    fn clone(&self) -> Self {
        Self {
            io: self.io.clone(),
            info: self.info.clone(),
            emit_token: self.emit_token.clone(),
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({"error": message}))
}

fn static_response(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitRequest {
    room: String,
    event: String,
    #[serde(default)]
    data: Value,
}

/// Constant-time comparison of the bearer token.
fn token_matches(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

impl<A: Adapter> Routes<A> {
    async fn route(self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/health") => json_response(
                StatusCode::OK,
                &json!({"status": "ok", "slot": self.info.slot, "pid": self.info.pid, "port": self.info.port}),
            ),
            (&Method::GET, "/") => static_response("text/html; charset=utf-8", DEMO_PAGE),
            (&Method::GET, "/socket.io.min.js") => {
                static_response("application/javascript", CLIENT_JS)
            }
            (_, "/emit") if req.method() != Method::POST => {
                error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
            }
            (_, "/emit") => self.emit(req).await,
            _ => error(StatusCode::NOT_FOUND, "not found"),
        }
    }

    async fn emit(self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(expected) = self.emit_token.as_deref() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "webhook disabled: set RTSUP_EMIT_TOKEN",
            );
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "missing Authorization: Bearer <token>",
                );
            }
            Some(t) if !token_matches(t, expected) => {
                return error(StatusCode::UNAUTHORIZED, "invalid token");
            }
            Some(_) => {}
        }
        let body = match Limited::new(req.into_body(), MAX_EMIT_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return error(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 1 MiB");
            }
            Err(_) => return error(StatusCode::BAD_REQUEST, "could not read the body"),
        };
        let emit: EmitRequest = match serde_json::from_slice(&body) {
            Ok(e) => e,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("expected JSON {{room, event, data}}: {e}"),
                );
            }
        };
        if emit.room.is_empty() || emit.event.is_empty() {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "room and event must not be empty",
            );
        }
        if RESERVED.contains(&emit.event.as_str()) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "event name is reserved by socket.io",
            );
        }
        let Some(io) = self.io.get() else {
            return error(StatusCode::SERVICE_UNAVAILABLE, "starting up");
        };
        emit_to_room(io, emit.room.clone(), &emit.event, &emit.data).await;
        json_response(
            StatusCode::ACCEPTED,
            &json!({"room": emit.room, "event": emit.event}),
        )
    }
}

impl<A: Adapter> hyper::service::Service<Request<Incoming>> for Routes<A> {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.route(req).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
    }
}
