//! `rtsup start`: wire configuration → supervisor → control socket and signals, run until
//! stopped.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use supervisor::{AppSpec, Supervisor, SupervisorSpec};
use tracing::{info, warn};

use crate::config::Config;
use crate::control::server::{self, ControlHooks};
use crate::notify::Notifier;
use crate::observe::{BalancerView, Observability};
use crate::reload::DaemonReloader;
use crate::{admin, leftovers, signals, wiring};

/// Longest wait for control connections still answering when the daemon exits (a `stop`
/// client is waiting for its answer).
const CONTROL_DRAIN: Duration = Duration::from_secs(2);

/// The hub socket of the daemon whose control socket is `control`: `<control>.hub`.
pub fn hub_socket_path(control: &std::path::Path) -> std::path::PathBuf {
    let mut name = control.as_os_str().to_owned();
    name.push(".hub");
    name.into()
}

/// The apps of `config` as the supervisor runs them: every worker learns the embedded
/// adapter's hub socket (`RTSUP_HUB`) unless the app sets its own, and carries which daemon
/// runs it ([`SUPERVISOR_ENV`]), so a later start reaps only its own leftovers.
pub fn worker_specs(config: &Config, hub: &std::path::Path) -> Vec<AppSpec> {
    let mut apps = config.apps.clone();
    for app in &mut apps {
        app.env
            .entry("RTSUP_HUB".into())
            .or_insert_with(|| hub.display().to_string());
        app.env
            .insert(SUPERVISOR_ENV.into(), hub.display().to_string());
    }
    apps
}

/// Environment variable naming the daemon (by its hub socket, unique per control socket) in
/// every worker and its children.
pub const SUPERVISOR_ENV: &str = "RTSUP_SUPERVISOR";

/// Raise the soft limit on open files to the hard one: a proxy needs two descriptors per
/// client, and the default soft limit (often 1024) runs out long before the machine does.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= hard {
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => info!(from = soft, to = hard, "raised the open files limit"),
        Err(e) => warn!(soft, hard, error = %e, "cannot raise the open files limit"),
    }
}

/// The balancer's bounds on clients from its config, with the connection cap no higher than
/// the open-files limit allows (see [`balancer::connections::budget`]).
fn client_limits(b: &crate::config::BalancerConfig) -> balancer::server::ClientLimits {
    use nix::sys::resource::{Resource, getrlimit};
    let l = &b.limits;
    let nofile = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    // Each proxy thread adds a runtime (epoll, eventfd: ~5 descriptors, measured) and keeps at
    // least one idle upstream connection.
    let threads = b.threads as u64;
    let open_now = std::fs::read_dir("/proc/self/fd").map_or(64, |d| d.count() as u64);
    let budget = balancer::connections::budget(
        nofile,
        open_now + 6 * threads,
        balancer::server::UPSTREAM_POOL * b.threads.max(1),
    );
    let (pool, budget) = (budget.pool, budget.connections);
    let memory = physical_memory();
    let total = match l.max_connections {
        Some(n) if n > budget => {
            warn!(
                max_connections = n,
                budget,
                open_files_limit = nofile,
                "balancer.max_connections is more than the open files limit allows; using {budget}"
            );
            budget
        }
        Some(n) => n,
        // Also within a quarter of the memory, at a full header each (a flood of partial
        // headers is the most clients can make the proxy hold).
        None => memory.map_or(budget, |m| {
            budget.min(balancer::connections::memory_cap(m, l.max_header as u64))
        }),
    };
    info!(
        max_connections = total,
        per_address = l.max_connections_per_address,
        "balancer connection caps"
    );
    balancer::server::ClientLimits {
        upstream_pool: pool,
        request: balancer::server::RequestLimits {
            max_request_line: l.max_request_line,
            max_header: l.max_header,
            header_timeout: l.header_timeout,
            keepalive_timeout: l.keepalive_timeout,
        },
        caps: balancer::connections::ConnectionCaps {
            total,
            per_address: l.max_connections_per_address,
            exempt: b.trusted_proxies.clone(),
        },
    }
}

/// Physical memory in bytes (`MemTotal` of /proc/meminfo).
fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Open the access log (rotated like the worker logs) and start its writer.
fn open_access_log(
    a: &crate::config::AccessLogConfig,
    logs: &supervisor::LogSpec,
) -> anyhow::Result<balancer::access_log::AccessLog> {
    if let Some(dir) = a.path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the access log's directory {}", dir.display()))?;
    }
    let mut file = supervisor::RotatingFile::open(a.path.clone(), logs)
        .with_context(|| format!("opening the access log {}", a.path.display()))?;
    // Moved away (logrotate) or deleted: written again at its path within a second.
    let mut checked = std::time::Instant::now();
    balancer::access_log::AccessLog::spawn(a.format, move |line| {
        if checked.elapsed() >= Duration::from_secs(1) {
            checked = std::time::Instant::now();
            file.reopen_if_moved()?;
        }
        file.write_raw(line)
    })
    .context("starting the access log writer")
}

/// Log what certificates the balancer serves (`what`: serving, reloaded).
pub fn log_certificates(what: &str, certs: &balancer::tls::Certificates) {
    for c in &certs.summaries {
        info!(
            file = %c.file.display(),
            names = ?c.names,
            serial = %c.serial,
            not_after = c.not_after,
            "{what} certificate"
        );
    }
}

/// Stop the proxy (it stops accepting, gives the requests it accepted its grace period, then
/// closes), once; later calls do nothing.
pub async fn stop_proxy(proxy: &std::sync::Mutex<Option<balancer::server::ProxyHandle>>) {
    let taken = proxy.lock().ok().and_then(|mut p| p.take());
    if let Some(p) = taken {
        info!("balancer: no new connections; finishing the requests in flight");
        let _ = tokio::task::spawn_blocking(move || p.stop()).await;
    }
}

/// Run the daemon in the foreground until SIGTERM/SIGINT or `rtsup stop`.
/// `file` is where `config` came from (`None` for the embedded demo); reloads re-read it.
pub async fn run(config: Config, file: Option<PathBuf>) -> anyhow::Result<()> {
    raise_fd_limit();
    // jemalloc's background threads purge freed pages on their own, so the memory a flood of
    // connections took is given back even when the proxy threads then sit idle.
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        warn!(error = %e, "cannot start the allocator's background threads");
    }
    let logs = &config.supervisor.logs.dir;
    std::fs::create_dir_all(logs)
        .with_context(|| format!("creating log_dir {}", logs.display()))?;
    let socket = config.supervisor.control_socket.clone();
    let listener = server::bind(&socket)
        .await
        .with_context(|| format!("binding control socket {}", socket.display()))?;
    // The control socket is ours, so no other daemon runs here: whatever a previous run left
    // behind is stopped before anything binds its ports.
    let groups_file = leftovers::state_file(&socket);
    let marker = format!("{SUPERVISOR_ENV}={}", hub_socket_path(&socket).display());
    let reaped = tokio::task::spawn_blocking({
        let f = groups_file.clone();
        move || leftovers::reap(&f, &marker)
    })
    .await
    .unwrap_or(0);
    if reaped > 0 {
        warn!(
            groups = reaped,
            "stopped {reaped} worker process group(s) left by a previous rtsup run"
        );
    }
    // The embedded adapter's hub, beside the control socket; every worker learns its path.
    let hub_path = hub_socket_path(&socket);
    let hub = rtsup_worker::hub::server::bind(&hub_path)
        .with_context(|| format!("binding the adapter hub {}", hub_path.display()))?;
    let hub_task = tokio::spawn(rtsup_worker::hub::server::Hub::default().serve(hub));
    let spec = SupervisorSpec {
        apps: worker_specs(&config, &hub_path),
        logs: config.supervisor.logs.clone(),
        reserved_ports: config
            .balancer
            .iter()
            .map(|b| b.listen.port())
            .chain(config.admin.enabled.then_some(config.admin.listen.port()))
            .filter(|&p| p != 0)
            .collect(),
    };
    let gate = Arc::new(wiring::BalancerGate {
        apps: config
            .balancer
            .as_ref()
            .map(|b| b.apps())
            .unwrap_or_default(),
        loads: OnceLock::new(),
        upgrades: OnceLock::new(),
    });
    let (handle, supervisor) = Supervisor::spawn(spec, gate.clone());
    let notifier = Notifier::from_env(handle.subscribe());
    let recorder = tokio::spawn(leftovers::record(handle.subscribe(), groups_file.clone()));
    // cron_restart schedules (read at start), each a rolling restart at its times.
    for (app, pattern) in &config.cron_restarts {
        match crate::cron::parse(pattern) {
            Ok(cron) => {
                info!(app, pattern, "cron_restart scheduled");
                tokio::spawn(crate::cron::run(handle.clone(), app.clone(), cron));
            }
            Err(e) => warn!(app, error = %e, "cron_restart not scheduled"),
        }
    }
    // watch (read at start): a rolling restart after files settle; rtsup's own files never
    // count.
    let own = vec![
        std::path::absolute(&config.supervisor.logs.dir)
            .unwrap_or_else(|_| config.supervisor.logs.dir.clone()),
        std::path::absolute(&socket).unwrap_or_else(|_| socket.clone()),
    ];
    for w in &config.watches {
        tokio::spawn(crate::watch::run(handle.clone(), w.clone(), own.clone()));
    }
    let obs = Arc::new(Observability {
        supervisor: handle.clone(),
        balancer: OnceLock::new(),
        worker_metrics: std::sync::RwLock::new(config.worker_metrics.clone()),
        cluster: OnceLock::new(),
    });
    info!(
        config = %config.file.display(),
        socket = %socket.display(),
        apps = config.apps.len(),
        "rtsup started"
    );
    // The certificates in force, swapped by a reload.
    let mut certificates = None;
    // Other rtsup hosts sharing sessions through Redis.
    let cluster = match &config.cluster {
        Some(c) => {
            let (cluster, view) = crate::cluster::Cluster::new(c).context("joining the cluster")?;
            info!(
                name = c.name,
                advertise = %c.advertise,
                "cluster: sharing sessions with the other hosts through Redis"
            );
            Some((cluster, view))
        }
        None => None,
    };
    let proxy = match &config.balancer {
        Some(b) => {
            // One backend set per app the routes name, in the order of `b.apps()`.
            let backends = b
                .apps()
                .into_iter()
                .map(|app| {
                    let (tx, rx) = tokio::sync::watch::channel(balancer::BackendSet::default());
                    let remote = cluster.as_ref().map(|(_, view)| view.clone());
                    tokio::spawn(wiring::follow(handle.subscribe(), remote, app, tx));
                    rx
                })
                .collect();
            let tls = match &b.tls {
                None => None,
                // Not refused when out of date: the site (and its ACME renewal through the
                // redirect listener) keeps working, with a warning; a reload refuses one.
                Some(t) => match balancer::tls::Certificates::load(&t.certs, None) {
                    Ok(certs) => {
                        log_certificates("serving", &certs);
                        for c in &certs.summaries {
                            if let Err(e) = c.valid_at(SystemTime::now()) {
                                warn!(error = %e, "serving a certificate outside its validity period: renew it, then `rtsup reload --certs`");
                            }
                        }
                        Some(balancer::server::TlsListen {
                            certs: Arc::new(balancer::tls::CertResolver::new(certs)),
                            http2: t.http2,
                            redirect_listen: t.redirect.as_ref().map(|r| r.listen),
                        })
                    }
                    Err(e) => {
                        handle.stop().await;
                        return Err(e).context("loading the balancer's certificates");
                    }
                },
            };
            let redirect = b.tls.as_ref().and_then(|t| t.redirect.as_ref()).map(|r| {
                balancer::redirect::Redirect {
                    plain_port: r.listen.port(),
                    https_port: b.listen.port(),
                    except: r.except.clone(),
                }
            });
            let certs = tls.as_ref().map(|t| t.certs.clone());
            let access_log = match &b.access_log {
                None => None,
                Some(a) => match open_access_log(a, &config.supervisor.logs) {
                    Ok(log) => Some(log),
                    Err(e) => {
                        handle.stop().await;
                        return Err(e);
                    }
                },
            };
            let settings = balancer::BalancerSettings {
                listen: b.listen,
                tls,
                access_log,
                threads: b.threads,
                routing: balancer::service::RoutingConfig {
                    router: b.router(),
                    trusted_proxies: b.trusted_proxies.clone(),
                    unsticky: b.unsticky,
                    session_rate: b.session_rate,
                    session_burst: b.session_burst,
                    timeouts: balancer::service::ProxyTimeouts {
                        body: b.limits.body_timeout,
                        send: b.limits.send_timeout,
                        connect: b.limits.connect_timeout,
                        upstream_keepalive: b.limits.upstream_keepalive_timeout,
                    },
                    redirect,
                    tls: b.tls.is_some(),
                    cookie_secret: b.cookie_secret.map(|s| s.0),
                    cluster: cluster
                        .as_ref()
                        .map(|(c, _)| balancer::cluster::ClusterLink {
                            me: Arc::from(c.me().to_string()),
                            directory: c.directory(),
                            // Only an address of this machine can be bound (not a NAT's).
                            bind: std::net::UdpSocket::bind((c.me().ip(), 0))
                                .is_ok()
                                .then_some(c.me().ip()),
                        }),
                },
                max_sessions: balancer::sid_table::DEFAULT_MAX_SESSIONS,
                limits: client_limits(b),
                preserve_header_case: b.preserve_header_case,
            };
            match balancer::server::spawn(settings, backends) {
                Ok(p) => {
                    certificates = certs;
                    let _ = gate.loads.set(p.loads.clone());
                    let _ = gate.upgrades.set(p.upgrades.clone());
                    let _ = obs.balancer.set(BalancerView {
                        apps: b.apps(),
                        sessions: p.loads.clone(),
                        sids: p.sids.clone(),
                        metrics: p.metrics.clone(),
                    });
                    if let Some((c, _)) = &cluster {
                        c.attach_sids(p.sids.clone());
                        tokio::spawn(c.clone().run(handle.subscribe(), b.apps()));
                        let _ = obs.cluster.set((c.clone(), b.apps()));
                    }
                    Some(p)
                }
                Err(e) => {
                    handle.stop().await;
                    return Err(e).context("starting the balancer");
                }
            }
        }
        None => None,
    };
    let proxy = Arc::new(std::sync::Mutex::new(proxy));
    // READY=1 once every slot is ready or errored, STATUS= as the fleet changes; WATCHDOG=1
    // only while the supervisor's actor answers.
    let status = notifier.spawn_status();
    let watchdog = notifier.spawn_watchdog(handle.clone());
    // The admin server is an aid, not a dependency: off unless configured, and a busy port
    // is reported, not fatal.
    let admin = if config.admin.enabled {
        if !config.admin.listen.ip().is_loopback() && config.admin.token.is_none() {
            warn!(
                listen = %config.admin.listen,
                "the admin server listens beyond loopback without [admin] token: anyone who reaches it reads the status and metrics"
            );
        }
        match admin::bind(config.admin.listen).await {
            Ok(listener) => Some(tokio::spawn(admin::serve(
                listener,
                obs.clone(),
                config.admin.token.clone(),
            ))),
            Err(e) => {
                warn!(error = %e, "admin server disabled");
                None
            }
        }
    } else {
        None
    };
    let reloader: Arc<dyn ControlHooks> = Arc::new(DaemonReloader {
        file,
        supervisor: handle.clone(),
        notifier: notifier.clone(),
        running: config.clone(),
        obs: obs.clone(),
        hub: hub_path.clone(),
        proxy: proxy.clone(),
        certificates,
        cert_files: std::sync::Mutex::new(
            config
                .balancer
                .as_ref()
                .and_then(|b| b.tls.as_ref())
                .map(|t| t.certs.clone())
                .unwrap_or_default(),
        ),
    });
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let control = tokio::spawn(server::serve(
        listener,
        handle.clone(),
        reloader.clone(),
        async {
            let _ = stopped_rx.await;
        },
        CONTROL_DRAIN,
    ));
    let signals = tokio::spawn(signals::handle(reloader, notifier.clone()));
    drop(handle);
    supervisor.await.context("supervisor task failed")?;
    notifier.stopping();
    signals.abort();
    status.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    if let Some(a) = admin {
        a.abort();
    }
    stop_proxy(&proxy).await;
    // Let the `stop` caller read its answer before the runtime goes away.
    let _ = stopped_tx.send(());
    let _ = control.await;
    hub_task.abort();
    recorder.abort();
    // Every worker has exited: nothing is left to record.
    let _ = std::fs::remove_file(&groups_file);
    let _ = std::fs::remove_file(&hub_path);
    if let Err(e) = std::fs::remove_file(&socket) {
        warn!(error = %e, socket = %socket.display(), "cannot remove control socket");
    }
    info!("rtsup stopped");
    Ok(())
}
