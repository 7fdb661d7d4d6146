//! The actor's hands: spawning workers, signalling them, probing them. A trait, so the actor
//! runs in tests with a fake one and tokio's paused clock.
//!
//! [`Processes`] is the real implementation: each worker is spawned in its own process group
//! ([`crate::process`]), its stdout/stderr pumped into the slot's rotating log files, its exit
//! and readiness reported to the actor as [`WorkerEvent`]s through a [`Reporter`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::sleep;
use tracing::{debug, warn};

use crate::memory::Usage;
use crate::output::{self, RotatingFile, SharedLog, Stream, Tail};
use crate::process;
use crate::readiness;
use crate::sockets;
use crate::spec::{AppSpec, LogSpec};

/// How long an exit report waits for the worker's last stderr lines to be read.
const TAIL_WAIT: Duration = Duration::from_millis(300);

/// Something a worker did, reported to the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkerEvent {
    /// Its readiness probe passed.
    Ready,
    /// Its readiness probe gave up.
    NotReady(String),
    /// It exited (status, and its last stderr lines when it wrote any).
    Exited(String),
    /// Its liveness checks failed too often.
    Unresponsive(String),
}

/// A message to the actor from outside its loop.
pub(crate) enum Inbox {
    /// A worker event.
    Worker {
        /// App name.
        app: Arc<str>,
        /// Slot index.
        slot: u16,
        /// Worker generation.
        generation: u64,
        /// What happened.
        event: WorkerEvent,
    },
    /// Resource samples: (app, slot, generation, usage).
    Usage(Vec<(Arc<str>, u16, u64, Usage)>),
    /// A command from a [`crate::handle::SupervisorHandle`].
    Command(crate::handle::Command),
}

/// Sends worker events to the actor; cheap to clone.
#[derive(Clone)]
pub(crate) struct Reporter(pub(crate) mpsc::Sender<Inbox>);

impl Reporter {
    /// Report `event` of worker `generation` of `app`'s slot `slot`.
    pub(crate) async fn report(
        &self,
        app: Arc<str>,
        slot: u16,
        generation: u64,
        event: WorkerEvent,
    ) {
        let _ = self
            .0
            .send(Inbox::Worker {
                app,
                slot,
                generation,
                event,
            })
            .await;
    }
}

/// One worker to start.
pub(crate) struct Order<'a> {
    /// App name.
    pub app: &'a Arc<str>,
    /// Slot index.
    pub slot: u16,
    /// Generation of the new worker.
    pub generation: u64,
    /// Port it listens on.
    pub port: u16,
    /// What it runs.
    pub spec: &'a AppSpec,
}

/// What the actor does to the outside world.
pub(crate) trait Effects: Send + 'static {
    /// Spawn the worker and start its readiness probe; its exit and readiness are reported
    /// through `reporter`. Returns its pid, or why it could not be spawned.
    fn spawn(&mut self, order: &Order<'_>, reporter: &Reporter) -> Result<u32, String>;
    /// `Ok` when nothing listens on `port` now; else who does (another program may hold a
    /// port rtsup would hand out).
    fn check_port(&mut self, port: u16) -> Result<(), String>;
    /// Send `signal` to the process group `pid`.
    fn signal(&mut self, pid: u32, signal: Signal);
    /// The worker is ready: start its liveness checks.
    fn watch(&mut self, order: &Order<'_>, reporter: &Reporter);
    /// The worker is gone: cancel its probe and checks.
    fn forget(&mut self, app: &str, slot: u16, generation: u64);
    /// Record one of the supervisor's own events for `app` (read back by `rtsup logs`).
    fn event(&mut self, app: &str, line: &str);
}

type WorkerKey = (Arc<str>, u16, u64);

/// Real processes.
pub(crate) struct Processes {
    logs: LogSpec,
    files: HashMap<(Arc<str>, u16), (SharedLog, SharedLog)>,
    events: HashMap<String, RotatingFile>,
    tasks: HashMap<WorkerKey, Vec<AbortHandle>>,
}

impl Processes {
    /// Workers' output goes under `logs`.
    pub(crate) fn new(logs: LogSpec) -> Self {
        Self {
            logs,
            files: HashMap::new(),
            events: HashMap::new(),
            tasks: HashMap::new(),
        }
    }

    fn files(&mut self, app: &Arc<str>, slot: u16) -> Result<(SharedLog, SharedLog), String> {
        if let Some(f) = self.files.get(&(app.clone(), slot)) {
            return Ok(f.clone());
        }
        let open = |stream| {
            let path = output::log_path(&self.logs.dir, app, slot, stream);
            RotatingFile::open(path.clone(), &self.logs)
                .map(|f| Arc::new(Mutex::new(f)))
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))
        };
        let pair = (open(Stream::Out)?, open(Stream::Err)?);
        self.files.insert((app.clone(), slot), pair.clone());
        Ok(pair)
    }
}

impl Effects for Processes {
    fn spawn(&mut self, order: &Order<'_>, reporter: &Reporter) -> Result<u32, String> {
        let (out, err) = self.files(order.app, order.slot)?;
        let spec = order.spec;
        let (mut child, ipc) = process::spawn(spec, order.slot, order.port)
            .map_err(|e| format!("spawn {}: {e}", spec.command))?;
        let ipc = match ipc {
            Some(end) => end
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixStream::from_std(end))
                .map(|s| Some(tokio::io::BufReader::new(s)))
                .map_err(|e| format!("IPC channel of {}: {e}", spec.command))?,
            None => None,
        };
        let pid = child
            .id()
            .ok_or_else(|| "exited before it could be tracked".to_string())?;
        let tail = Tail::default();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(output::pump(stdout, out, None));
        }
        let stderr_done = child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(output::pump(stderr, err, Some(tail.clone()))));
        let (app, slot, generation) = (order.app.clone(), order.slot, order.generation);
        let exits = reporter.clone();
        tokio::spawn(async move {
            let mut status = match child.wait().await {
                Ok(s) => process::describe_exit(s),
                Err(e) => format!("wait failed: {e}"),
            };
            if let Some(done) = stderr_done {
                let _ = tokio::time::timeout(TAIL_WAIT, done).await;
            }
            let tail = tail.joined();
            if !tail.is_empty() {
                status = format!("{status}; stderr: {tail}");
            }
            exits
                .report(app, slot, generation, WorkerEvent::Exited(status))
                .await;
        });
        let probe_spec = spec.clone();
        let (app, port, probes) = (order.app.clone(), order.port, reporter.clone());
        let probe = tokio::spawn(async move {
            let mut ipc = ipc;
            let ready = match ipc.as_mut() {
                Some(channel) => {
                    readiness::wait_message(channel, port, probe_spec.listen_timeout).await
                }
                None => {
                    readiness::wait_ready(&probe_spec.ready, port, probe_spec.listen_timeout).await
                }
            };
            let event = match ready {
                // The probe may have reached a stranger who took the port first: ready
                // only when the listening socket belongs to the worker's process group.
                Ok(()) => match sockets::held_by_group(port, pid) {
                    Some(Err(stranger)) => WorkerEvent::NotReady(stranger),
                    Some(Ok(())) | None => WorkerEvent::Ready,
                },
                Err(reason) => WorkerEvent::NotReady(reason),
            };
            probes.report(app, slot, generation, event).await;
            // The IPC channel stays open for the worker's life (a Node worker may send more;
            // closing it would fail its `process.send`): drained until the worker closes it, or
            // this task is aborted when the worker is forgotten.
            if let Some(mut channel) = ipc {
                let _ = tokio::io::copy(&mut channel, &mut tokio::io::sink()).await;
            }
        });
        self.tasks
            .entry((order.app.clone(), slot, generation))
            .or_default()
            .push(probe.abort_handle());
        Ok(pid)
    }

    fn check_port(&mut self, port: u16) -> Result<(), String> {
        // The wildcard address conflicts with a listener on any address of the port (a worker
        // binding 0.0.0.0 would fail the same way); bound, never listened on, dropped at once.
        // And the IPv6 wildcard (dual-stack where the system allows it): a Node worker that
        // calls listen(PORT) binds `::`. A system without IPv6 says "not available", which is
        // not "in use".
        let busy =
            ["0.0.0.0", "::"].into_iter().find_map(|any| {
                match std::net::TcpListener::bind((any, port)) {
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Some(e),
                    _ => None,
                }
            });
        match busy {
            None => Ok(()),
            Some(e) => Err(match sockets::port_owner(port) {
                Some((pid, name)) => format!("port {port} in use by pid {pid} ({name})"),
                None => format!("port {port} in use ({e})"),
            }),
        }
    }

    fn signal(&mut self, pid: u32, signal: Signal) {
        process::signal_group(pid, signal);
    }

    fn watch(&mut self, order: &Order<'_>, reporter: &Reporter) {
        let health = order.spec.health;
        if health.interval.is_zero() {
            return;
        }
        let (app, slot, generation, port) =
            (order.app.clone(), order.slot, order.generation, order.port);
        let check = order.spec.ready.clone();
        let reporter = reporter.clone();
        let name = app.clone();
        let task = tokio::spawn(async move {
            let mut failed = 0;
            loop {
                sleep(health.interval).await;
                match readiness::alive(&check, port, health.timeout).await {
                    Ok(()) => failed = 0,
                    // rtsup itself is out of descriptors: the check proves nothing about the
                    // worker and must not condemn it.
                    Err(why) if short_of_descriptors() => {
                        debug!(app = %name, slot, port, %why, "liveness check inconclusive: rtsup is out of file descriptors");
                    }
                    Err(why) => {
                        failed += 1;
                        warn!(app = %name, slot, port, failed, %why, "liveness check failed");
                        if failed >= health.failures {
                            let reason = format!("unresponsive: {why}");
                            reporter
                                .report(app, slot, generation, WorkerEvent::Unresponsive(reason))
                                .await;
                            return;
                        }
                    }
                }
            }
        });
        self.tasks
            .entry((order.app.clone(), slot, generation))
            .or_default()
            .push(task.abort_handle());
    }

    fn event(&mut self, app: &str, line: &str) {
        if !self.events.contains_key(app) {
            let path = output::events_path(&self.logs.dir, app);
            match RotatingFile::open(path.clone(), &self.logs) {
                Ok(f) => {
                    self.events.insert(app.to_string(), f);
                }
                Err(e) => {
                    debug!(error = %e, path = %path.display(), "cannot open the event log");
                    return;
                }
            }
        }
        if let Some(f) = self.events.get_mut(app)
            && let Err(e) = f.write_line(line.as_bytes())
        {
            debug!(error = %e, "cannot write the event log");
        }
    }

    fn forget(&mut self, app: &str, slot: u16, generation: u64) {
        let key: WorkerKey = (Arc::from(app), slot, generation);
        for task in self.tasks.remove(&key).unwrap_or_default() {
            task.abort();
        }
    }
}

/// Whether this process cannot open one more file descriptor right now (EMFILE, ENFILE).
fn short_of_descriptors() -> bool {
    std::fs::File::open("/dev/null").is_err_and(|e| {
        matches!(
            e.raw_os_error(),
            Some(nix::libc::EMFILE | nix::libc::ENFILE)
        )
    })
}
