//! The supervisor actor: the one task that owns every slot.
//!
//! Child wait tasks, readiness probes, timers and the memory sampler send it messages; it feeds
//! them to the pure [`Slot`] state machine and executes the returned [`Action`]s. Every message
//! from a worker carries the worker's generation, so a late event from a replaced worker is
//! dropped instead of confusing its successor. After each message the actor publishes a fresh
//! [`Fleet`] snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, sleep_until};
use tracing::{info, warn};

use crate::fleet::{AppSnapshot, Fleet, WorkerSnapshot, WorkerState};
use crate::memory::{Sampler, Usage};
use crate::output::{self, RotatingFile, SharedLog, Stream};
use crate::process;
use crate::readiness;
use crate::slot::{Action, Slot, SlotEvent, SlotState};
use crate::spec::{AppSpec, SupervisorSpec};

/// How often the memory sampler measures every worker (PM2 polls every 30 s).
pub const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Errors the supervisor reports to its callers.
#[derive(Debug, Error)]
pub enum SupervisorError {
    /// No app has this name.
    #[error("no app named {0:?}")]
    UnknownApp(String),
    /// The app has fewer slots.
    #[error("app {app:?} has no slot {slot} (it has {instances})")]
    UnknownSlot {
        /// App name.
        app: String,
        /// Slot asked for.
        slot: u16,
        /// Slots the app has.
        instances: u16,
    },
    /// The actor has already stopped.
    #[error("the supervisor has stopped")]
    Gone,
    /// A log file could not be opened.
    #[error("cannot open log file {path}: {source}")]
    Log {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Address of one slot: (app index, slot index).
type Key = (usize, u16);

enum Msg {
    Restart {
        app: String,
        slot: Option<u16>,
        reply: oneshot::Sender<Result<Vec<String>, SupervisorError>>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
    Event {
        key: Key,
        generation: u64,
        event: SlotEvent,
    },
    KillTimer {
        key: Key,
        generation: u64,
    },
    Usage(Vec<(Key, u64, Usage)>),
}

/// A cheap clonable handle to the supervisor actor (systemctl-like verbs).
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: mpsc::Sender<Msg>,
    fleet: watch::Receiver<Fleet>,
}

impl SupervisorHandle {
    /// The latest fleet snapshot.
    pub fn fleet(&self) -> Fleet {
        self.fleet.borrow().clone()
    }

    /// A receiver of every new fleet snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Fleet> {
        self.fleet.clone()
    }

    /// Restart every slot of `app`, or only `slot`. Returns the `app:slot` names restarted.
    pub async fn restart(
        &self,
        app: &str,
        slot: Option<u16>,
    ) -> Result<Vec<String>, SupervisorError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Restart {
                app: app.to_string(),
                slot,
                reply,
            })
            .await
            .map_err(|_| SupervisorError::Gone)?;
        rx.await.map_err(|_| SupervisorError::Gone)?
    }

    /// Stop every worker (SIGTERM, SIGKILL after `kill_timeout`) and wait until all are gone.
    /// The actor ends afterwards.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Per-slot runtime data the pure state machine does not hold.
struct SlotRt {
    slot: Slot,
    generation: u64,
    started_at: Option<SystemTime>,
    probe: Option<AbortHandle>,
    usage: Usage,
    out: SharedLog,
    err: SharedLog,
}

struct AppRt {
    spec: AppSpec,
    slots: Vec<SlotRt>,
}

/// Entry point: starts the actor and the memory sampler.
pub struct Supervisor;

impl Supervisor {
    /// Start supervising `spec`: every slot is started at once. Returns the handle and the
    /// actor's join handle (it ends after [`SupervisorHandle::stop`]).
    pub fn spawn(
        spec: SupervisorSpec,
    ) -> Result<(SupervisorHandle, JoinHandle<()>), SupervisorError> {
        let mut apps = Vec::with_capacity(spec.apps.len());
        for app in spec.apps {
            let mut slots = Vec::with_capacity(usize::from(app.instances));
            for i in 0..app.instances {
                let open = |stream| {
                    let path = output::log_path(&spec.logs.dir, &app.name, i, stream);
                    RotatingFile::open(path.clone(), &spec.logs)
                        .map(|f| Arc::new(Mutex::new(f)))
                        .map_err(|source| SupervisorError::Log {
                            path: path.display().to_string(),
                            source,
                        })
                };
                slots.push(SlotRt {
                    slot: Slot::new(app.restart),
                    generation: 0,
                    started_at: None,
                    probe: None,
                    usage: Usage::default(),
                    out: open(Stream::Out)?,
                    err: open(Stream::Err)?,
                });
            }
            apps.push(AppRt { spec: app, slots });
        }
        let (tx, rx) = mpsc::channel(1024);
        let (fleet_tx, fleet_rx) = watch::channel(Fleet::default());
        let handle = SupervisorHandle {
            tx: tx.clone(),
            fleet: fleet_rx.clone(),
        };
        tokio::spawn(sample_memory(tx.downgrade(), fleet_rx));
        let mut actor = Actor {
            apps,
            tx: tx.downgrade(),
            fleet: fleet_tx,
            stop_waiters: Vec::new(),
            stopping: false,
        };
        let join = tokio::spawn(async move {
            // The actor holds only a weak sender, so it can notice when every handle is gone.
            drop(tx);
            actor.run(rx).await;
        });
        Ok((handle, join))
    }
}

struct Actor {
    apps: Vec<AppRt>,
    tx: mpsc::WeakSender<Msg>,
    fleet: watch::Sender<Fleet>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    stopping: bool,
}

impl Actor {
    async fn run(&mut self, mut rx: mpsc::Receiver<Msg>) {
        let keys: Vec<Key> = self.keys().collect();
        for key in keys {
            self.feed(key, SlotEvent::Start);
        }
        self.publish();
        while let Some(msg) = rx.recv().await {
            self.handle(msg);
            self.publish();
            if self.stopping && self.all_down() {
                info!("all workers stopped");
                for w in self.stop_waiters.drain(..) {
                    let _ = w.send(());
                }
                return;
            }
        }
        // Every handle dropped without a stop: do not leave workers behind.
        self.begin_stop();
    }

    fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.apps
            .iter()
            .enumerate()
            .flat_map(|(a, app)| (0..app.spec.instances).map(move |s| (a, s)))
    }

    fn rt(&mut self, (a, s): Key) -> &mut SlotRt {
        &mut self.apps[a].slots[usize::from(s)]
    }

    fn all_down(&self) -> bool {
        self.apps
            .iter()
            .all(|a| a.slots.iter().all(|s| s.slot.is_down()))
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Restart { app, slot, reply } => {
                let _ = reply.send(self.restart(&app, slot));
            }
            Msg::Stop { reply } => {
                self.stop_waiters.push(reply);
                self.begin_stop();
            }
            Msg::Event {
                key,
                generation,
                event,
            } => {
                if self.rt(key).generation != generation {
                    return; // from a replaced worker
                }
                if let SlotEvent::Exited { status } = &event {
                    self.on_exit(key, status);
                }
                self.feed(key, event);
            }
            Msg::KillTimer { key, generation } => {
                let rt = self.rt(key);
                if rt.generation == generation
                    && let SlotState::Stopping { pid, .. } = rt.slot.state
                {
                    warn!(app = %self.apps[key.0].spec.name, slot = key.1, pid, "kill_timeout passed; sending SIGKILL");
                    process::signal_group(pid, Signal::SIGKILL);
                }
            }
            Msg::Usage(samples) => {
                for (key, generation, usage) in samples {
                    self.on_usage(key, generation, usage);
                }
            }
        }
    }

    fn restart(&mut self, app: &str, slot: Option<u16>) -> Result<Vec<String>, SupervisorError> {
        if self.stopping {
            return Err(SupervisorError::Gone);
        }
        let a = self
            .apps
            .iter()
            .position(|x| x.spec.name == app)
            .ok_or_else(|| SupervisorError::UnknownApp(app.to_string()))?;
        let instances = self.apps[a].spec.instances;
        let slots: Vec<u16> = match slot {
            Some(s) if s >= instances => {
                return Err(SupervisorError::UnknownSlot {
                    app: app.to_string(),
                    slot: s,
                    instances,
                });
            }
            Some(s) => vec![s],
            None => (0..instances).collect(),
        };
        for &s in &slots {
            info!(app, slot = s, "restart requested");
            self.feed(
                (a, s),
                SlotEvent::Restart {
                    reason: "operator restart".into(),
                },
            );
        }
        Ok(slots.iter().map(|s| format!("{app}:{s}")).collect())
    }

    fn begin_stop(&mut self) {
        if !self.stopping {
            info!("stopping all workers");
        }
        self.stopping = true;
        let keys: Vec<Key> = self.keys().collect();
        for key in keys {
            self.feed(key, SlotEvent::Stop);
        }
    }

    /// Bookkeeping when a worker process has exited, before the state machine sees it.
    fn on_exit(&mut self, key: Key, status: &str) {
        let name = self.apps[key.0].spec.name.clone();
        let rt = self.rt(key);
        if let Some(probe) = rt.probe.take() {
            probe.abort();
        }
        rt.usage = Usage::default();
        rt.started_at = None;
        if let Some(pid) = rt.slot.pid() {
            // The leader is gone; take down anything it left in its group (no orphans keep
            // the port or the memory).
            process::signal_group(pid, Signal::SIGKILL);
            let expected = matches!(rt.slot.state, SlotState::Stopping { .. });
            if expected {
                info!(app = %name, slot = key.1, pid, %status, "worker exited");
            } else {
                warn!(app = %name, slot = key.1, pid, %status, "worker exited unexpectedly");
            }
        }
    }

    fn on_usage(&mut self, key: Key, generation: u64, usage: Usage) {
        let limit = self.apps[key.0].spec.max_memory;
        let rt = self.rt(key);
        if rt.generation != generation || rt.slot.pid().is_none() {
            return;
        }
        rt.usage = usage;
        let running = matches!(rt.slot.state, SlotState::Running { .. });
        if let Some(limit) = limit
            && running
            && usage.rss_bytes > limit
            && !self.stopping
        {
            let reason = format!(
                "memory {} over max_memory {}",
                bytes(usage.rss_bytes),
                bytes(limit)
            );
            warn!(app = %self.apps[key.0].spec.name, slot = key.1, %reason, "restarting worker");
            self.feed(key, SlotEvent::Restart { reason });
        }
    }

    /// Feed one event to a slot and execute the resulting actions (which may feed more).
    fn feed(&mut self, key: Key, event: SlotEvent) {
        let mut queue = vec![event];
        while let Some(event) = queue.pop() {
            let before = self.rt(key).slot.state.clone();
            let actions = self.rt(key).slot.on(event, Instant::now());
            let after = state_name(&self.rt(key).slot.state);
            if state_name(&before) != after {
                info!(app = %self.apps[key.0].spec.name, slot = key.1, from = state_name(&before), to = after, "slot state changed");
            }
            for action in actions {
                if let Some(next) = self.execute(key, action) {
                    queue.push(next);
                }
            }
        }
    }

    /// Execute one action; spawning reports its outcome as the next event.
    fn execute(&mut self, key: Key, action: Action) -> Option<SlotEvent> {
        let app = self.apps[key.0].spec.clone();
        let port = app.slot_port(key.1);
        match action {
            Action::Spawn => {
                let tx = self.tx.clone();
                let rt = self.rt(key);
                rt.generation += 1;
                let generation = rt.generation;
                match process::spawn(&app, key.1, port) {
                    Ok(mut child) => {
                        let Some(pid) = child.id() else {
                            return Some(SlotEvent::SpawnFailed {
                                error: "exited before it could be tracked".into(),
                            });
                        };
                        info!(app = %app.name, slot = key.1, pid, port, generation, "worker spawned");
                        let (out, err) = (rt.out.clone(), rt.err.clone());
                        rt.started_at = Some(SystemTime::now());
                        if let Some(stdout) = child.stdout.take() {
                            tokio::spawn(output::pump(stdout, out));
                        }
                        if let Some(stderr) = child.stderr.take() {
                            tokio::spawn(output::pump(stderr, err));
                        }
                        tokio::spawn(async move {
                            let status = match child.wait().await {
                                Ok(s) => process::describe_exit(s),
                                Err(e) => format!("wait failed: {e}"),
                            };
                            send(
                                &tx,
                                Msg::Event {
                                    key,
                                    generation,
                                    event: SlotEvent::Exited { status },
                                },
                            )
                            .await;
                        });
                        Some(SlotEvent::Spawned { pid })
                    }
                    Err(e) => {
                        warn!(app = %app.name, slot = key.1, command = %app.command, error = %e, "cannot spawn worker");
                        Some(SlotEvent::SpawnFailed {
                            error: format!("spawn {}: {e}", app.command),
                        })
                    }
                }
            }
            Action::Probe => {
                let tx = self.tx.clone();
                let rt = self.rt(key);
                let generation = rt.generation;
                let task = tokio::spawn(async move {
                    let event =
                        match readiness::wait_ready(&app.ready, port, app.listen_timeout).await {
                            Ok(()) => SlotEvent::Ready,
                            Err(reason) => SlotEvent::NotReady { reason },
                        };
                    send(
                        &tx,
                        Msg::Event {
                            key,
                            generation,
                            event,
                        },
                    )
                    .await;
                });
                rt.probe = Some(task.abort_handle());
                None
            }
            Action::Terminate { pid } => {
                let tx = self.tx.clone();
                let rt = self.rt(key);
                if let Some(probe) = rt.probe.take() {
                    probe.abort();
                }
                let generation = rt.generation;
                process::signal_group(pid, Signal::SIGTERM);
                let at = Instant::now() + app.kill_timeout;
                tokio::spawn(async move {
                    sleep_until(at).await;
                    send(&tx, Msg::KillTimer { key, generation }).await;
                });
                None
            }
            Action::WakeAt(at) => {
                let generation = self.rt(key).generation;
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    sleep_until(at).await;
                    send(
                        &tx,
                        Msg::Event {
                            key,
                            generation,
                            event: SlotEvent::Wake,
                        },
                    )
                    .await;
                });
                None
            }
        }
    }

    fn publish(&self) {
        let fleet = Fleet {
            apps: self
                .apps
                .iter()
                .map(|app| AppSnapshot {
                    name: app.spec.name.clone(),
                    workers: app
                        .slots
                        .iter()
                        .enumerate()
                        .map(|(i, rt)| snapshot(&app.spec, i as u16, rt))
                        .collect(),
                })
                .collect(),
        };
        self.fleet.send_if_modified(|old| {
            let changed = *old != fleet;
            *old = fleet;
            changed
        });
    }
}

fn snapshot(spec: &AppSpec, slot: u16, rt: &SlotRt) -> WorkerSnapshot {
    let state = match rt.slot.state {
        SlotState::Stopped => WorkerState::Stopped,
        SlotState::Starting { .. } => WorkerState::Starting,
        SlotState::Running { .. } => WorkerState::Ready,
        SlotState::Stopping { .. } => WorkerState::Stopping,
        SlotState::Backoff { .. } => WorkerState::Waiting,
        SlotState::Errored => WorkerState::Errored,
    };
    WorkerSnapshot {
        slot,
        generation: rt.generation,
        pid: rt.slot.pid(),
        port: spec.slot_port(slot),
        state,
        restarts: rt.slot.restarts,
        started_at: rt.started_at,
        memory_bytes: rt.usage.rss_bytes,
        cpu_percent: rt.usage.cpu_percent,
        last_exit: rt.slot.last_exit.clone(),
    }
}

fn state_name(s: &SlotState) -> &'static str {
    match s {
        SlotState::Stopped => "stopped",
        SlotState::Starting { .. } => "starting",
        SlotState::Running { .. } => "ready",
        SlotState::Stopping { .. } => "stopping",
        SlotState::Backoff { .. } => "waiting",
        SlotState::Errored => "errored",
    }
}

/// `123.4 MB`-style text for logs and reasons.
fn bytes(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1_000_000.0)
}

async fn send(tx: &mpsc::WeakSender<Msg>, msg: Msg) {
    if let Some(tx) = tx.upgrade() {
        let _ = tx.send(msg).await;
    }
}

/// Sample every live worker's process tree once per [`MEMORY_SAMPLE_INTERVAL`] and report to
/// the actor. Ends when the actor is gone.
async fn sample_memory(tx: mpsc::WeakSender<Msg>, fleet: watch::Receiver<Fleet>) {
    let mut sampler = Some(Sampler::new());
    let mut tick = tokio::time::interval(MEMORY_SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let targets: Vec<(Key, u64, u32)> = {
            let fleet = fleet.borrow();
            fleet
                .apps
                .iter()
                .enumerate()
                .flat_map(|(a, app)| {
                    app.workers
                        .iter()
                        .filter_map(move |w| w.pid.map(|pid| ((a, w.slot), w.generation, pid)))
                })
                .collect()
        };
        let Some(mut s) = sampler.take() else { return };
        let roots: Vec<u32> = targets.iter().map(|t| t.2).collect();
        let Ok((s, usage)) = tokio::task::spawn_blocking(move || {
            let usage: HashMap<u32, Usage> = s.sample(&roots);
            (s, usage)
        })
        .await
        else {
            return;
        };
        sampler = Some(s);
        let samples = targets
            .into_iter()
            .filter_map(|(key, generation, pid)| usage.get(&pid).map(|u| (key, generation, *u)))
            .collect();
        let Some(tx) = tx.upgrade() else { return };
        if tx.send(Msg::Usage(samples)).await.is_err() {
            return;
        }
    }
}
