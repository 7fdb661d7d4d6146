//! The Socket.IO application: what the source projects built on top of Socket.IO.
//!
//! Client events (each counted against the socket's rate limit; excess ones are answered with
//! an `error` event `{code:"rate_limited"}` and the connection stays):
//! - `join` room (ack `{room, worker}`), `leave` room: membership, announced to the room as a
//!   `system` event;
//! - `chat` `{room, text}` → `chat` `{room, text, from, worker, t}` to every member, on every
//!   worker;
//! - `dm` `{to, text}` → `dm` to room `user:<to>` (every socket of that user, any worker);
//! - `typing` `{room, typing}` → `typing` to the other members;
//! - `whoami` (ack `{slot, pid, port, sid, user, transport}`);
//! - `room_count` room (ack `{room, count}`, counted across every worker).
//!
//! Server events: `hello` on connect, `system` (joins, leaves), `notification` (through the
//! `POST /emit` webhook or any server code).

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use tracing::warn;

use crate::auth::{AuthError, User, authenticate_with_leeway};
use crate::rate_limit::TokenBucket;

/// What every handler may need to know about this worker.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Slot index.
    pub slot: u16,
    /// Process id.
    pub pid: u32,
    /// Listen port.
    pub port: u16,
    /// Client events per second per socket.
    pub rate_limit: u32,
    /// JWT secret.
    pub jwt_secret: Option<String>,
    /// Whether guests may connect.
    pub allow_guests: bool,
    /// Seconds of clock skew tolerated on a token's `exp`.
    pub jwt_leeway: u64,
}

/// Shared handle to the worker info (socketioxide state).
pub type Info = Arc<WorkerInfo>;

type Bucket = Arc<Mutex<TokenBucket>>;

/// Longest room name, chat text and user id accepted from a client.
const MAX_ROOM: usize = 128;
const MAX_TEXT: usize = 4096;

/// Connect middleware: authenticate, remember the user on the socket.
pub async fn authenticate_socket<A: Adapter>(
    s: SocketRef<A>,
    TryData(auth): TryData<Value>,
    State(info): State<Info>,
) -> Result<(), AuthError> {
    let auth = auth.ok();
    let user = authenticate_with_leeway(
        auth.as_ref(),
        info.jwt_secret.as_deref(),
        info.allow_guests,
        &s.id.to_string(),
        info.jwt_leeway,
    )?;
    s.extensions.insert(user);
    Ok(())
}

/// Connect handler of the `/` namespace.
pub async fn on_connect<A: Adapter>(s: SocketRef<A>, State(info): State<Info>) {
    let Some(user) = s.extensions.get::<User>() else {
        let _ = s.disconnect();
        return;
    };
    s.extensions
        .insert::<Bucket>(Arc::new(Mutex::new(TokenBucket::new(
            info.rate_limit,
            Instant::now(),
        ))));
    s.join(format!("user:{}", user.id));
    let _ = s.emit(
        "hello",
        &json!({"slot": info.slot, "pid": info.pid, "port": info.port, "user": user, "sid": s.id.to_string()}),
    );
    s.on("join", on_join::<A>);
    s.on("leave", on_leave::<A>);
    s.on("chat", on_chat::<A>);
    s.on("dm", on_dm::<A>);
    s.on("typing", on_typing::<A>);
    s.on("whoami", on_whoami::<A>);
    s.on("room_count", on_room_count::<A>);
}

/// Take a token for `event`; on refusal tell the client and drop the event.
fn allowed<A: Adapter>(s: &SocketRef<A>, event: &str) -> bool {
    let Some(bucket) = s.extensions.get::<Bucket>() else {
        return true;
    };
    let verdict = bucket
        .lock()
        .map(|mut b| (b.try_take(Instant::now()), b.retry_after(), b.exhausted()));
    match verdict {
        Ok((true, _, _)) | Err(_) => true,
        Ok((false, _, true)) => {
            tracing::warn!(socket = %s.id, "disconnecting a client that keeps ignoring its rate limit");
            let _ = s.emit(
                "error",
                &json!({"code": "rate_limited", "event": event, "disconnect": true}),
            );
            let _ = s.clone().disconnect();
            false
        }
        Ok((false, retry, false)) => {
            let _ = s.emit(
                "error",
                &json!({"code": "rate_limited", "event": event, "retry_after_ms": retry.as_millis() as u64}),
            );
            false
        }
    }
}

fn user_of<A: Adapter>(s: &SocketRef<A>) -> Option<User> {
    s.extensions.get::<User>()
}

fn valid_room(room: &str) -> bool {
    !room.is_empty() && room.len() <= MAX_ROOM && !room.starts_with("user:")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn reject<A: Adapter>(s: &SocketRef<A>, event: &str, why: &str) {
    let _ = s.emit(
        "error",
        &json!({"code": "bad_request", "event": event, "message": why}),
    );
}

/// Emit to a room on every worker; if the adapter cannot reach the others (Redis down), still
/// deliver to this worker's own sockets rather than to nobody.
pub async fn emit_to_room<A: Adapter>(io: &SocketIo<A>, room: String, event: &str, data: &Value) {
    if let Err(e) = io.to(room.clone()).emit(event, data).await {
        warn!(error = %e, room, event, "cross-worker emit failed; delivering locally only");
        let _ = io.local().to(room).emit(event, data).await;
    }
}

async fn on_join<A: Adapter>(
    s: SocketRef<A>,
    io: SocketIo<A>,
    State(info): State<Info>,
    TryData(room): TryData<String>,
    ack: AckSender<A>,
) {
    if !allowed(&s, "join") {
        return;
    }
    let Ok(room) = room.map(|r| r.trim().to_string()) else {
        return reject(&s, "join", "room must be a string");
    };
    if !valid_room(&room) {
        return reject(&s, "join", "invalid room name");
    }
    s.join(room.clone());
    let _ = ack.send(&json!({"room": room, "worker": info.slot}));
    if let Some(user) = user_of(&s) {
        let notice = json!({"type": "joined", "room": room, "user": user.name, "t": now_ms()});
        emit_to_room(&io, room, "system", &notice).await;
    }
}

async fn on_leave<A: Adapter>(s: SocketRef<A>, io: SocketIo<A>, TryData(room): TryData<String>) {
    if !allowed(&s, "leave") {
        return;
    }
    let Ok(room) = room else {
        return reject(&s, "leave", "room must be a string");
    };
    s.leave(room.clone());
    if let Some(user) = user_of(&s) {
        let notice = json!({"type": "left", "room": room, "user": user.name, "t": now_ms()});
        emit_to_room(&io, room, "system", &notice).await;
    }
}

#[derive(Deserialize)]
struct Chat {
    room: String,
    text: String,
}

async fn on_chat<A: Adapter>(
    s: SocketRef<A>,
    io: SocketIo<A>,
    State(info): State<Info>,
    TryData(msg): TryData<Chat>,
) {
    if !allowed(&s, "chat") {
        return;
    }
    let Ok(msg) = msg else {
        return reject(&s, "chat", "expected {room, text}");
    };
    if !valid_room(&msg.room) || msg.text.len() > MAX_TEXT {
        return reject(&s, "chat", "invalid room or text too long");
    }
    let Some(user) = user_of(&s) else { return };
    let out = json!({"room": msg.room, "text": msg.text, "from": user.name, "from_id": user.id, "worker": info.slot, "t": now_ms()});
    emit_to_room(&io, msg.room, "chat", &out).await;
}

#[derive(Deserialize)]
struct Dm {
    to: String,
    text: String,
}

async fn on_dm<A: Adapter>(s: SocketRef<A>, io: SocketIo<A>, TryData(msg): TryData<Dm>) {
    if !allowed(&s, "dm") {
        return;
    }
    let Ok(msg) = msg else {
        return reject(&s, "dm", "expected {to, text}");
    };
    if msg.to.is_empty() || msg.to.len() > MAX_ROOM || msg.text.len() > MAX_TEXT {
        return reject(&s, "dm", "invalid recipient or text too long");
    }
    let Some(user) = user_of(&s) else { return };
    let out = json!({"from": user.name, "from_id": user.id, "text": msg.text, "t": now_ms()});
    emit_to_room(&io, format!("user:{}", msg.to), "dm", &out).await;
}

#[derive(Deserialize)]
struct Typing {
    room: String,
    typing: bool,
}

async fn on_typing<A: Adapter>(s: SocketRef<A>, TryData(msg): TryData<Typing>) {
    if !allowed(&s, "typing") {
        return;
    }
    let (Ok(msg), Some(user)) = (msg, user_of(&s)) else {
        return;
    };
    if !valid_room(&msg.room) {
        return;
    }
    let out = json!({"room": msg.room, "user": user.name, "typing": msg.typing});
    if let Err(e) = s.to(msg.room).emit("typing", &out).await {
        warn!(error = %e, "typing broadcast failed");
    }
}

async fn on_whoami<A: Adapter>(s: SocketRef<A>, State(info): State<Info>, ack: AckSender<A>) {
    if !allowed(&s, "whoami") {
        return;
    }
    let transport = format!("{:?}", s.transport_type()).to_lowercase();
    let _ = ack.send(&json!({
        "slot": info.slot, "pid": info.pid, "port": info.port,
        "sid": s.id.to_string(), "user": user_of(&s), "transport": transport,
    }));
}

async fn on_room_count<A: Adapter>(
    s: SocketRef<A>,
    io: SocketIo<A>,
    TryData(room): TryData<String>,
    ack: AckSender<A>,
) {
    if !allowed(&s, "room_count") {
        return;
    }
    let Ok(room) = room else {
        return reject(&s, "room_count", "room must be a string");
    };
    match io.to(room.clone()).fetch_sockets().await {
        Ok(sockets) => {
            let _ = ack.send(&json!({"room": room, "count": sockets.len()}));
        }
        Err(e) => {
            warn!(error = %e, "room_count failed");
            let _ = ack
                .send(&json!({"room": room, "count": Value::Null, "error": "adapter unavailable"}));
        }
    }
}
