//! Serving: bind, build socket.io with the chosen adapter, accept HTTP/1 connections (with
//! upgrades, for WebSocket), and stop gracefully on SIGTERM: stop accepting, close every socket
//! so its client reconnects (to another worker, through the balancer), let requests finish.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use socketioxide::adapter::Adapter;
use socketioxide::handler::ConnectHandler;
use socketioxide::service::SocketIoService;
use socketioxide::{SocketIo, SocketIoBuilder};
use socketioxide_redis::{CustomRedisAdapter, FredAdapter};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::adapter;
use crate::app::{self, WorkerInfo};
use crate::config::WorkerConfig;
use crate::http::Routes;
use crate::hub::driver::HubDriver;

/// Longest wait for in-flight requests after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Entry point of `rtsup-worker` and `rtsup worker`: configure from the environment and run.
pub fn main_from_env() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let cfg = match WorkerConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rtsup-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rtsup-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtsup-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run the worker until SIGTERM/SIGINT.
pub async fn run(cfg: WorkerConfig) -> anyhow::Result<()> {
    let addr = SocketAddr::from((cfg.host, cfg.port));
    let info = Arc::new(WorkerInfo {
        slot: cfg.instance,
        pid: std::process::id(),
        port: cfg.port,
        rate_limit: cfg.rate_limit,
        jwt_secret: cfg.jwt_secret.clone(),
        allow_guests: cfg.allow_guests,
        jwt_leeway: cfg.jwt_leeway,
    });
    if let Some(url) = &cfg.redis_url {
        let ctr = adapter::redis(url, &cfg.prefix)
            .await
            .context("connecting to Redis")?;
        let (svc, io) = build(
            SocketIo::builder().with_adapter::<FredAdapter<_>>(ctr),
            &cfg,
            &info,
        );
        io.ns("/", app::on_connect.with(app::authenticate_socket))
            .await
            .context("registering the namespace on Redis")?;
        info!(%addr, adapter = "redis", "worker starting");
        accept(addr, svc, io).await
    } else if let Some(hub) = &cfg.hub {
        let ctr = adapter::hub(hub.clone(), &cfg.prefix).await?;
        let (svc, io) = build(
            SocketIo::builder().with_adapter::<CustomRedisAdapter<_, HubDriver>>(ctr),
            &cfg,
            &info,
        );
        io.ns("/", app::on_connect.with(app::authenticate_socket))
            .await
            .context("registering the namespace on the rtsup hub")?;
        info!(%addr, adapter = "rtsup hub", "worker starting");
        accept(addr, svc, io).await
    } else {
        let (svc, io) = build(SocketIo::builder(), &cfg, &info);
        io.ns("/", app::on_connect.with(app::authenticate_socket));
        warn!(%addr, "no REDIS_URL and no RTSUP_HUB: rooms are local to this worker");
        accept(addr, svc, io).await
    }
}

fn build<A: Adapter>(
    builder: SocketIoBuilder<A>,
    cfg: &WorkerConfig,
    info: &app::Info,
) -> (SocketIoService<Routes<A>, A>, SocketIo<A>) {
    let cell = Arc::new(OnceLock::new());
    let routes = Routes {
        io: cell.clone(),
        info: info.clone(),
        emit_token: cfg.emit_token.as_deref().map(Arc::from),
    };
    let (svc, io) = builder
        .with_state(info.clone())
        .build_with_inner_svc(routes);
    let _ = cell.set(io.clone());
    (svc, io)
}

async fn accept<A: Adapter>(
    addr: SocketAddr,
    svc: SocketIoService<Routes<A>, A>,
    io: SocketIo<A>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    // Every connection task watches this; on shutdown each asks hyper to finish gracefully
    // (current request answered, keep-alive off).
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    info!(%addr, "listening");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => { warn!(error = %e, "accept failed"); continue; }
                };
                let mut conn = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc.clone())
                    .with_upgrades();
                let mut stop = stop_rx.clone();
                conns.spawn(async move {
                    tokio::select! {
                        _ = &mut conn => {}
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                            std::pin::Pin::new(&mut conn).graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("stopping: closing sockets so clients reconnect elsewhere");
    drop(listener);
    io.close().await;
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("requests still running after {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    Ok(())
}
