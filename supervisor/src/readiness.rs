//! Readiness probes: a worker takes traffic only once its port accepts (or its health path
//! answers 2xx).

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::spec::ReadyCheck;

/// Bytes of an IPC message line looked at (the rest of a long line is skipped).
const MESSAGE_PREFIX: usize = 64;

/// Pause between two probe attempts.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Longest a single attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Probe `127.0.0.1:port` until it is ready or `within` has passed.
pub async fn wait_ready(check: &ReadyCheck, port: u16, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let last = match timeout(ATTEMPT_TIMEOUT, attempt(check, port)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => "probe timed out".to_string(),
        };
        if Instant::now() + PROBE_INTERVAL >= deadline {
            return Err(format!(
                "not ready within {}: {last}",
                humantime::format_duration(within)
            ));
        }
        sleep(PROBE_INTERVAL).await;
    }
}

/// PM2's `wait_ready`: the worker's `ready` message on its Node IPC channel (JSON lines:
/// `process.send('ready')` writes `"ready"`) within `within`, then its port accepting in what
/// is left of it. Other messages are skipped.
pub async fn wait_message<R: AsyncBufRead + Unpin>(
    channel: &mut R,
    port: u16,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    // Only the start of each line is kept: `"ready"` is short, and a worker's other messages
    // (of any size) must not grow the supervisor's memory.
    let mut line = Vec::with_capacity(MESSAGE_PREFIX);
    loop {
        let chunk = match tokio::time::timeout_at(deadline, channel.fill_buf()).await {
            Err(_) => {
                return Err(format!(
                    "no 'ready' message within {} (wait_ready: the worker must call process.send('ready'))",
                    humantime::format_duration(within)
                ));
            }
            Ok(Err(e)) => return Err(format!("reading its IPC channel: {e}")),
            Ok(Ok([])) => {
                return Err("closed its IPC channel without sending 'ready' (wait_ready)".into());
            }
            Ok(Ok(chunk)) => chunk,
        };
        let (taken, end) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = MESSAGE_PREFIX.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..taken.min(room)]);
        channel.consume(taken);
        if end {
            if line.trim_ascii() == b"\"ready\"" {
                break;
            }
            line.clear();
        }
    }
    let rest = deadline
        .saturating_duration_since(Instant::now())
        .max(PROBE_INTERVAL * 4);
    wait_ready(&ReadyCheck::Tcp, port, rest).await
}

/// One liveness check of a ready worker within `within`: the readiness probe for
/// `ready = "http:/…"`; for `ready = "tcp"` an HTTP request that must get any answer at all
/// (the kernel accepts connections for a hung process, so a bare connect proves nothing).
pub async fn alive(check: &ReadyCheck, port: u16, within: Duration) -> Result<(), String> {
    let probe = async {
        match check {
            ReadyCheck::Http { .. } => attempt(check, port).await,
            // After its `ready`, a wait_ready worker is checked like a `tcp` one.
            ReadyCheck::Tcp | ReadyCheck::Message => {
                let mut stream = TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| format!("port {port}: {e}"))?;
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    .await
                    .map_err(|e| format!("port {port}: {e}"))?;
                let mut byte = [0u8; 1];
                match stream.read(&mut byte).await {
                    Ok(1) => Ok(()),
                    Ok(_) => Err(format!("port {port}: closed without answering")),
                    Err(e) => Err(format!("port {port}: {e}")),
                }
            }
        }
    };
    match timeout(within, probe).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(within)
        )),
    }
}

async fn attempt(check: &ReadyCheck, port: u16) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("port {port}: {e}"))?;
    let ReadyCheck::Http { path } = check else {
        return Ok(());
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    // Only the status line matters: "HTTP/1.1 200 OK".
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        let n = stream
            .read(&mut head[len..])
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let line = String::from_utf8_lossy(&head[..len]);
    match line.split(' ').nth(1) {
        Some(code) if code.starts_with('2') && code.len() == 3 => Ok(()),
        Some(code) => Err(format!("GET {path} answered {code}")),
        None => Err(format!("GET {path}: no HTTP status line")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn tcp_ready_when_port_accepts() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        wait_ready(&ReadyCheck::Tcp, port, Duration::from_secs(2))
            .await
            .expect("ready");
    }

    #[tokio::test]
    async fn a_listener_that_never_answers_is_not_alive() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        // Accepted by the kernel's backlog, never read or answered.
        let err = alive(&ReadyCheck::Tcp, port, Duration::from_millis(200))
            .await
            .expect_err("hung");
        assert!(err.starts_with("no answer within"), "{err}");
        drop(l);
    }

    #[tokio::test]
    async fn http_probe_rejects_non_2xx() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 503 Unavailable\r\n\r\n").await;
            }
        });
        let check = ReadyCheck::Http {
            path: "/health".into(),
        };
        let err = wait_ready(&check, port, Duration::from_millis(300))
            .await
            .expect_err("503 is not ready");
        assert!(err.contains("answered 503"), "{err}");
    }

    #[tokio::test]
    async fn wait_ready_skips_other_messages_of_any_length_and_needs_the_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut input = b"{\"cmd\":\"hello\"}\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 1 << 20));
        input.extend_from_slice(b"\n\"ready\"\n");
        let mut channel = tokio::io::BufReader::new(&input[..]);
        wait_message(&mut channel, port, Duration::from_secs(5))
            .await
            .expect("ready after a 1 MiB line");
        let mut closed = tokio::io::BufReader::new(&b"\"not ready\"\n"[..]);
        let e = wait_message(&mut closed, port, Duration::from_secs(5))
            .await
            .expect_err("closed without ready");
        assert!(e.contains("without sending 'ready'"), "{e}");
        drop(listener);
    }
}
