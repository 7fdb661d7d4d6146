//! The access log: one line per request, and one per WebSocket when it closes (its duration
//! and bytes), in nginx's combined format or as JSON, with the worker each went to and why.
//!
//! Lines are formatted on the proxy thread and handed to a writer thread through a bounded
//! queue, so a slow disk never stalls a request: when the queue is full the line is dropped
//! and counted. The engine.io `sid` is a session credential: only its first characters are
//! written.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

/// Lines waiting for the writer at most.
const QUEUE: usize = 16_384;

/// Characters of a sid kept in the log, enough to tell sessions apart in one incident.
const SID_SHOWN: usize = 4;

/// How the access log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// nginx's `combined`, then `rt=` (seconds), `worker=`, `route=` and `ws=1` for a WebSocket.
    Combined,
    /// One JSON object per line.
    Json,
}

/// One finished request (or WebSocket).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// When it ended.
    pub at: SystemTime,
    /// The client's address (as resolved through trusted proxies).
    pub client: Option<IpAddr>,
    /// Request method.
    pub method: &'a str,
    /// Path and query as the client sent them (the sid is cut when written).
    pub target: &'a str,
    /// HTTP version, e.g. `HTTP/1.1`.
    pub version: &'a str,
    /// Status sent (0: none).
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: usize,
    /// From the request's arrival to its end (a WebSocket's whole life).
    pub duration: Duration,
    /// The worker it went to.
    pub worker: Option<&'a str>,
    /// Why: `sid`, `cookie`, `new-session`, `round-robin`, `dead-worker`, ...
    pub route: &'a str,
    /// It was a WebSocket.
    pub websocket: bool,
    /// `Referer` header.
    pub referer: Option<&'a str>,
    /// `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// `Host` header (or the HTTP/2 authority).
    pub host: Option<&'a str>,
}

/// The sending side of the access log (cheap to clone, one per proxy thread).
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: SyncSender<String>,
    format: Format,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Start the writer thread; `sink` appends one line (with its newline) and may rotate.
    /// Write errors are reported once per burst through `tracing`.
    pub fn spawn(
        format: Format,
        sink: impl FnMut(&[u8]) -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("rtsup-access-log".into())
            .spawn(move || write_lines(rx, sink))?;
        Ok(Self {
            tx,
            format,
            dropped: Arc::default(),
        })
    }

    /// Log `e` (dropped, and counted, when the writer is that far behind).
    pub fn log(&self, e: &Entry<'_>) {
        let line = match self.format {
            Format::Combined => combined(e),
            Format::Json => json(e),
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped so far because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn write_lines(rx: Receiver<String>, mut sink: impl FnMut(&[u8]) -> std::io::Result<()>) {
    let mut failing = false;
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match sink(line.as_bytes()) {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot write the access log");
            }
            Err(_) => {}
        }
    }
}

/// `target` with the value of its `sid` query parameter cut to its first characters.
pub fn redact_sid(target: &str) -> std::borrow::Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return target.into();
    };
    if !query.split('&').any(|p| p.starts_with("sid=")) {
        return target.into();
    }
    let mut out = String::with_capacity(target.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.strip_prefix("sid=") {
            Some(sid) => {
                out.push_str("sid=");
                out.extend(sid.chars().take(SID_SHOWN));
                out.push('…');
            }
            None => out.push_str(pair),
        }
    }
    out.into()
}

/// `"`, `\`, control and non-ASCII bytes escaped as nginx does (`\xHH`).
fn escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c if !c.is_ascii() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

fn combined(e: &Entry<'_>) -> String {
    let mut out = String::with_capacity(256);
    match e.client {
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push('-'),
    }
    let _ = write!(out, " - - [{}] \"", clf_time(e.at));
    escaped(&mut out, e.method);
    out.push(' ');
    escaped(&mut out, &redact_sid(e.target));
    out.push(' ');
    escaped(&mut out, e.version);
    let _ = write!(out, "\" {} {} \"", e.status, e.bytes);
    escaped(&mut out, e.referer.unwrap_or("-"));
    out.push_str("\" \"");
    escaped(&mut out, e.user_agent.unwrap_or("-"));
    let _ = write!(
        out,
        "\" rt={:.3} worker={} route={} host=",
        e.duration.as_secs_f64(),
        e.worker.unwrap_or("-"),
        e.route
    );
    escaped(
        &mut out,
        e.host.unwrap_or("-").split(' ').next().unwrap_or("-"),
    );
    if e.websocket {
        out.push_str(" ws=1");
    }
    out.push('\n');
    out
}

fn json(e: &Entry<'_>) -> String {
    let value = serde_json::json!({
        "time": rfc3339_millis(e.at),
        "client": e.client.map(|ip| ip.to_string()),
        "method": e.method,
        "target": redact_sid(e.target),
        "version": e.version,
        "status": e.status,
        "bytes": e.bytes,
        "duration_ms": (e.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "worker": e.worker,
        "route": e.route,
        "websocket": e.websocket,
        "referer": e.referer,
        "user_agent": e.user_agent,
        "host": e.host,
    });
    let mut line = value.to_string();
    line.push('\n');
    line
}

/// `01/Dec/2026:17:50:00 +0000` (the log is in UTC).
fn clf_time(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at)
        .format("%d/%b/%Y:%H:%M:%S +0000")
        .to_string()
}

/// `2026-12-01T17:50:00.123Z`.
fn rfc3339_millis(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn entry<'a>(target: &'a str) -> Entry<'a> {
        Entry {
            at: UNIX_EPOCH + Duration::from_millis(1_764_611_400_123),
            client: Some(IpAddr::from([10, 0, 0, 7])),
            method: "GET",
            target,
            version: "HTTP/1.1",
            status: 200,
            bytes: 42,
            duration: Duration::from_micros(1500),
            worker: Some("chat:1#3"),
            route: "sid",
            websocket: false,
            referer: None,
            user_agent: Some("curl/8 \"quoted\" café"),
            host: Some("chat.example.com"),
        }
    }

    #[test]
    fn sids_are_never_written_whole() {
        for (target, want) in [
            (
                "/socket.io/?EIO=4&transport=polling&sid=AbCdEfGhIjKlMnOpQrSt",
                "/socket.io/?EIO=4&transport=polling&sid=AbCd…",
            ),
            ("/socket.io/?sid=Ab&x=1", "/socket.io/?sid=Ab…&x=1"),
            (
                "/socket.io/?EIO=4&transport=polling",
                "/socket.io/?EIO=4&transport=polling",
            ),
            ("/plain", "/plain"),
            ("/?notsid=secret", "/?notsid=secret"),
        ] {
            assert_eq!(redact_sid(target), want);
        }
        let sid = "AbCdEfGhIjKlMnOpQrSt";
        let target = format!("/socket.io/?EIO=4&sid={sid}");
        for line in [combined(&entry(&target)), json(&entry(&target))] {
            assert!(!line.contains(sid) && !line.contains("EfGh"), "{line}");
        }
    }

    #[test]
    fn combined_is_nginx_combined_plus_fields() {
        let line = combined(&entry("/a?b=1"));
        assert_eq!(
            line,
            "10.0.0.7 - - [01/Dec/2025:17:50:00 +0000] \"GET /a?b=1 HTTP/1.1\" 200 42 \"-\" \
             \"curl/8 \\x22quoted\\x22 caf\\xC3\\xA9\" rt=0.002 worker=chat:1#3 route=sid host=chat.example.com\n"
        );
        let ws = Entry {
            websocket: true,
            worker: None,
            client: None,
            ..entry("/x\r\n")
        };
        assert!(
            combined(&ws).starts_with("- - - [")
                && combined(&ws).contains("\"GET /x\\x0D\\x0A HTTP/1.1\"")
                && combined(&ws).ends_with("worker=- route=sid host=chat.example.com ws=1\n"),
            "{}",
            combined(&ws)
        );
    }

    #[test]
    fn json_lines_parse() {
        let line = json(&entry("/a"));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["time"], "2025-12-01T17:50:00.123Z");
        assert_eq!(v["status"], 200);
        assert_eq!(v["worker"], "chat:1#3");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["user_agent"], "curl/8 \"quoted\" café");
        assert_eq!(v["host"], "chat.example.com");
    }

    #[test]
    fn dates_across_leap_days_and_the_epoch() {
        let day = |n: i64| {
            let secs = Duration::from_secs(n.unsigned_abs() * 86_400);
            if n >= 0 {
                UNIX_EPOCH + secs
            } else {
                UNIX_EPOCH - secs
            }
        };
        assert_eq!(clf_time(day(0)), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf_time(day(11_016)), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(clf_time(day(20_423)), "01/Dec/2025:00:00:00 +0000");
        assert_eq!(clf_time(day(-1)), "31/Dec/1969:00:00:00 +0000");
        assert_eq!(rfc3339_millis(day(11_016)), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (tx, _rx) = sync_channel(1);
        let log = AccessLog {
            tx,
            format: Format::Json,
            dropped: Arc::default(),
        };
        for _ in 0..3 {
            log.log(&entry("/"));
        }
        assert_eq!(log.dropped(), 2);
    }
}
