//! The daemon side of the control socket: accept, read one request per line, answer.

use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use supervisor::{Report, SupervisorHandle};

use super::proto::{
    MAX_MESSAGE, PROTOCOL_VERSION, Request, RequestEnvelope, Response, ResponseEnvelope,
    StatusReport,
};

/// Pause after a failed accept (out of file descriptors): keep serving, never spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The daemon's worker log directory, the answer to [`Request::LogDir`]; set once at start.
static LOG_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Tell clients asking [`Request::LogDir`] that worker logs are in `dir` (absolute); the first
/// call wins (`log_dir` does not change while the daemon runs).
pub fn advertise_log_dir(dir: std::path::PathBuf) {
    let _ = LOG_DIR.set(dir);
}

/// Bind the control socket at `path` with mode 0600, replacing a stale socket file left by a
/// daemon that died. Fails if another daemon answers there.
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another rtsup daemon is listening on {}", path.display()),
            ));
        }
        fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// What the daemon adds to the control socket: `reload` re-reads its configuration and asks
/// the supervisor for a rolling reload; `status` gains what only the daemon knows (sessions).
pub trait ControlHooks: Send + Sync + 'static {
    /// Reload; the error is the text to show the operator.
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<Report, String>> + Send + '_>>;

    /// Read the certificate files again; the lines say what is served now.
    fn reload_certificates(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + '_>> {
        Box::pin(async { Err("this daemon serves no certificates (no tls_cert)".to_string()) })
    }

    /// Add daemon-level facts to a status report.
    fn annotate(&self, _report: &mut StatusReport) {}

    /// Stop the daemon in order (no new connections, in-flight requests finish, then the
    /// workers); resolves once every worker is gone.
    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Serve requests until `shutdown` resolves, then stop accepting and give the connections
/// still answering (a `stop` caller waiting for its answer) up to `drain` to finish.
pub async fn serve(
    listener: UnixListener,
    handle: SupervisorHandle,
    reloader: Arc<dyn ControlHooks>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let mut conns = JoinSet::new();
    let mut failing = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    failing = false;
                    let handle = handle.clone();
                    let reloader = reloader.clone();
                    conns.spawn(async move {
                        if let Err(e) = connection(stream, handle, reloader).await {
                            debug!(error = %e, "control connection ended");
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends pass: say so once per streak, back off, keep serving.
                    if !std::mem::replace(&mut failing, true) {
                        warn!(error = %e, "control socket accept failed; retrying");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
}

async fn connection(
    stream: UnixStream,
    handle: SupervisorHandle,
    reloader: Arc<dyn ControlHooks>,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = AsyncReadExt::take(&mut lines, MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let response = if line.len() > MAX_MESSAGE {
            Response::Error {
                message: format!("request longer than {MAX_MESSAGE} bytes"),
            }
        } else {
            match serde_json::from_slice::<RequestEnvelope>(&line) {
                Ok(env) if env.version != PROTOCOL_VERSION => Response::Error {
                    message: format!(
                        "protocol version {} not supported (daemon speaks {PROTOCOL_VERSION})",
                        env.version
                    ),
                },
                Ok(env) => dispatch(env.request, &handle, reloader.as_ref()).await,
                Err(e) => Response::Error {
                    message: format!("bad request: {e}"),
                },
            }
        };
        let mut out = serde_json::to_vec(&ResponseEnvelope {
            version: PROTOCOL_VERSION,
            response,
        })?;
        out.push(b'\n');
        write.write_all(&out).await?;
        if line.len() > MAX_MESSAGE {
            return Ok(()); // the rest of that line is garbage
        }
    }
}

async fn dispatch(
    request: Request,
    handle: &SupervisorHandle,
    reloader: &dyn ControlHooks,
) -> Response {
    match request {
        Request::Status => {
            let mut report = StatusReport::from_fleet(&handle.fleet(), SystemTime::now());
            reloader.annotate(&mut report);
            Response::Status(report)
        }
        Request::Restart { app, slot, force } => answer(handle.restart(&app, slot, force).await),
        Request::StartApp { app } => answer(handle.start_app(&app).await),
        Request::StopApp { app } => answer(handle.stop_app(&app).await),
        Request::Scale { app, instances } => answer(handle.scale(&app, instances).await),
        Request::Reload => match reloader.reload().await {
            Ok(r) => Response::Report(r),
            Err(message) => Response::Error { message },
        },
        Request::ReloadCertificates => match reloader.reload_certificates().await {
            Ok(served) => Response::Certificates { served },
            Err(message) => Response::Error { message },
        },
        Request::Stop => {
            reloader.stop().await;
            Response::Stopped
        }
        Request::LogDir => match LOG_DIR.get() {
            Some(path) => Response::LogDir { path: path.clone() },
            None => Response::Error {
                message: "this daemon did not say where its worker logs are".into(),
            },
        },
    }
}

fn answer(result: Result<Report, supervisor::SupervisorError>) -> Response {
    match result {
        Ok(r) => Response::Report(r),
        Err(e) => Response::Error {
            message: e.to_string(),
        },
    }
}
