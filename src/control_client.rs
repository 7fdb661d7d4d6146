//! The client side of the control socket: send one request, read one response.

use std::path::Path;
use std::time::Duration;

use crate::control::proto::{
    MAX_MESSAGE, PROTOCOL_VERSION, Request, RequestEnvelope, Response, ResponseEnvelope,
};
use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Longest wait for a daemon to answer a question that needs no work (`status`, `log_dir`):
/// a daemon that cannot accept (out of file descriptors, stuck) is reported, not waited on.
const QUICK_ANSWER: Duration = Duration::from_secs(10);

/// Ask the daemon at `socket` and return its answer; a daemon-side error becomes an `Err`.
/// Questions are bounded by [`QUICK_ANSWER`]; requests that change workers are answered once
/// their slots have settled, which the daemon bounds by its own deadlines.
pub async fn call(socket: &Path, request: Request) -> anyhow::Result<Response> {
    if matches!(request, Request::Status | Request::LogDir) {
        return tokio::time::timeout(QUICK_ANSWER, exchange(socket, request))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the rtsup daemon at {} did not answer within {}s",
                    socket.display(),
                    QUICK_ANSWER.as_secs()
                )
            })?;
    }
    exchange(socket, request).await
}

async fn exchange(socket: &Path, request: Request) -> anyhow::Result<Response> {
    let stream = UnixStream::connect(socket).await.with_context(|| {
        format!(
            "cannot reach the rtsup daemon at {} (is `rtsup start` running?)",
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(&RequestEnvelope {
        version: PROTOCOL_VERSION,
        request,
    })?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut reply = Vec::new();
    BufReader::new(read)
        .take(MAX_MESSAGE as u64)
        .read_until(b'\n', &mut reply)
        .await
        .context("reading the daemon's answer")?;
    if reply.is_empty() {
        bail!("the daemon closed the connection without answering");
    }
    let env: ResponseEnvelope =
        serde_json::from_slice(&reply).context("the daemon's answer is not valid")?;
    match env.response {
        Response::Error { message } => bail!("{message}"),
        other => Ok(other),
    }
}
