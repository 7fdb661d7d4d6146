//! The supervisor actor: the one task that owns every slot.
//!
//! Child wait tasks, readiness probes, timers, drain watchers and the memory sampler send it
//! messages; it feeds them to the pure [`Slot`] state machine and executes the returned
//! [`Action`]s. Every message from a worker carries the worker's generation, so a late event
//! from a replaced worker is routed to the slot's outgoing worker or dropped, never confused
//! with its successor. After each message the actor publishes a fresh [`Fleet`] snapshot.
//!
//! Rolling reloads run here too: slots are replaced one at a time (the next starts once the
//! previous replacement is ready), a failed replacement rolls its slot back and ends the reload.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{info, warn};

use crate::fleet::{AppSnapshot, Fleet, WorkerSnapshot, WorkerState};
use crate::memory::{Sampler, Usage};
use crate::output::{self, RotatingFile, SharedLog, Stream};
use crate::process;
use crate::readiness;
use crate::slot::{Action, OutgoingPhase, Slot, SlotEvent, SlotState};
use crate::spec::{AppSpec, LogSpec, SupervisorSpec};

/// How often the memory sampler measures every worker (PM2 polls every 30 s).
pub const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How often a draining worker's session count is checked.
pub const DRAIN_POLL: Duration = Duration::from_millis(200);

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
    /// The actor has already stopped, or is stopping.
    #[error("the supervisor is stopping")]
    Gone,
    /// A log file could not be opened.
    #[error("cannot open log file {path}: {source}")]
    Log {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A reload cannot apply this configuration.
    #[error("reload: {0}")]
    Reload(String),
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Workers replaced.
    pub replaced: usize,
    /// Why the reload stopped early, if it did (the failing slot was rolled back).
    pub failed: Option<String>,
}

/// Asks the balancer side how many sessions a worker still holds, so a draining worker is
/// stopped as soon as it is idle. The supervisor never learns what a session is.
pub trait DrainGate: Send + Sync + 'static {
    /// Live sessions of worker `generation` of `app`'s slot `slot`; `None` when nobody routes
    /// to it (then draining ends at once).
    fn sessions(&self, app: &str, slot: u16, generation: u64) -> Option<u64>;
}

/// A gate for apps without a balancer: nothing is ever pinned.
pub struct NoGate;

impl DrainGate for NoGate {
    fn sessions(&self, _: &str, _: u16, _: u64) -> Option<u64> {
        None
    }
}

/// Address of one slot: (app index, slot index).
type Key = (usize, u16);

enum Msg {
    Restart {
        app: String,
        slot: Option<u16>,
        reply: oneshot::Sender<Result<Vec<String>, SupervisorError>>,
    },
    Reload {
        apps: Option<Vec<AppSpec>>,
        reply: oneshot::Sender<Result<ReloadReport, SupervisorError>>,
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
        pid: u32,
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

    /// Replace every worker of `app`, or only `slot`, without downtime. Returns the `app:slot`
    /// names restarted.
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

    /// Rolling reload of every worker, with new app specs when given (same app names; the
    /// instance counts may change). Answers once every slot is replaced, or the first failed
    /// replacement was rolled back.
    pub async fn reload(
        &self,
        apps: Option<Vec<AppSpec>>,
    ) -> Result<ReloadReport, SupervisorError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Reload { apps, reply })
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

/// The outgoing worker of a slot, as the actor tracks it.
struct OutgoingRt {
    generation: u64,
    port: u16,
    started_at: Option<SystemTime>,
    usage: Usage,
    drain: Option<AbortHandle>,
}

/// Per-slot runtime data the pure state machine does not hold.
struct SlotRt {
    slot: Slot,
    generation: u64,
    port: u16,
    started_at: Option<SystemTime>,
    probe: Option<AbortHandle>,
    /// Liveness checks of the ready worker.
    liveness: Option<AbortHandle>,
    usage: Usage,
    outgoing: Option<OutgoingRt>,
    /// Removed from the configuration by a reload: stopped, then dropped.
    retired: bool,
    out: SharedLog,
    err: SharedLog,
}

struct AppRt {
    spec: AppSpec,
    slots: Vec<SlotRt>,
}

/// Tries a reload gives one slot before it rolls back and stops: a new worker that fails once
/// (a dependency blinking during its start-up) gets a second chance.
pub const RELOAD_ATTEMPTS: u32 = 2;

/// A rolling reload in progress.
#[derive(Default)]
struct ReloadRun {
    queue: VecDeque<Key>,
    current: Option<Key>,
    /// Failed replacement attempts per slot.
    failures: HashMap<Key, u32>,
    replaced: usize,
    waiters: Vec<oneshot::Sender<Result<ReloadReport, SupervisorError>>>,
}

/// Entry point: starts the actor and the memory sampler.
pub struct Supervisor;

impl Supervisor {
    /// Start supervising `spec`: every slot is started at once. `gate` tells when a draining
    /// worker is idle. Returns the handle and the actor's join handle (it ends after
    /// [`SupervisorHandle::stop`]).
    pub fn spawn(
        spec: SupervisorSpec,
        gate: Arc<dyn DrainGate>,
    ) -> Result<(SupervisorHandle, JoinHandle<()>), SupervisorError> {
        let mut apps = Vec::with_capacity(spec.apps.len());
        for app in spec.apps {
            let slots = (0..app.instances)
                .map(|i| slot_rt(&app, i, &spec.logs))
                .collect::<Result<_, _>>()?;
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
            logs: spec.logs,
            gate,
            tx: tx.downgrade(),
            fleet: fleet_tx,
            stop_waiters: Vec::new(),
            stopping: false,
            reload: None,
        };
        let join = tokio::spawn(async move {
            // The actor holds only a weak sender, so it can notice when every handle is gone.
            drop(tx);
            actor.run(rx).await;
        });
        Ok((handle, join))
    }
}

fn slot_rt(app: &AppSpec, i: u16, logs: &LogSpec) -> Result<SlotRt, SupervisorError> {
    let open = |stream| {
        let path = output::log_path(&logs.dir, &app.name, i, stream);
        RotatingFile::open(path.clone(), logs)
            .map(|f| Arc::new(Mutex::new(f)))
            .map_err(|source| SupervisorError::Log {
                path: path.display().to_string(),
                source,
            })
    };
    Ok(SlotRt {
        slot: Slot::new(app.restart),
        generation: 0,
        port: app.slot_port(i),
        started_at: None,
        probe: None,
        liveness: None,
        usage: Usage::default(),
        outgoing: None,
        retired: false,
        out: open(Stream::Out)?,
        err: open(Stream::Err)?,
    })
}

struct Actor {
    apps: Vec<AppRt>,
    logs: LogSpec,
    gate: Arc<dyn DrainGate>,
    tx: mpsc::WeakSender<Msg>,
    fleet: watch::Sender<Fleet>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    stopping: bool,
    reload: Option<ReloadRun>,
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
            self.drop_retired();
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
            .flat_map(|(a, app)| (0..app.slots.len() as u16).map(move |s| (a, s)))
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
            Msg::Reload { apps, reply } => self.begin_reload(apps, reply),
            Msg::Stop { reply } => {
                self.stop_waiters.push(reply);
                self.begin_stop();
            }
            Msg::Event {
                key,
                generation,
                event,
            } => {
                if usize::from(key.1) >= self.apps[key.0].slots.len() {
                    return;
                }
                let rt = self.rt(key);
                if rt.generation == generation {
                    if let SlotEvent::Exited { status } = &event {
                        self.on_exit(key, status, false);
                    }
                    self.feed(key, event);
                } else if rt
                    .outgoing
                    .as_ref()
                    .is_some_and(|o| o.generation == generation)
                {
                    // The outgoing worker: only its exit and its drain matter.
                    match event {
                        SlotEvent::Exited { status } => {
                            self.on_exit(key, &status, true);
                            self.feed(key, SlotEvent::OutgoingExited { status });
                        }
                        SlotEvent::OutgoingDrained => self.feed(key, SlotEvent::OutgoingDrained),
                        _ => {}
                    }
                }
            }
            Msg::KillTimer { key, pid } => {
                if usize::from(key.1) >= self.apps[key.0].slots.len() {
                    return;
                }
                let name = self.apps[key.0].spec.name.clone();
                let slot = &self.rt(key).slot;
                let primary = matches!(slot.state, SlotState::Stopping { pid: p, .. } if p == pid);
                let outgoing = slot
                    .outgoing
                    .as_ref()
                    .is_some_and(|o| o.pid == pid && o.phase == OutgoingPhase::Stopping);
                if primary || outgoing {
                    warn!(app = %name, slot = key.1, pid, "kill_timeout passed; sending SIGKILL");
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
                SlotEvent::Replace {
                    reason: "operator restart".into(),
                },
            );
        }
        Ok(slots.iter().map(|s| format!("{app}:{s}")).collect())
    }

    fn begin_reload(
        &mut self,
        apps: Option<Vec<AppSpec>>,
        reply: oneshot::Sender<Result<ReloadReport, SupervisorError>>,
    ) {
        if self.stopping {
            let _ = reply.send(Err(SupervisorError::Gone));
            return;
        }
        if let Some(run) = self.reload.as_mut() {
            // One reload at a time: the caller learns how the running one ends.
            info!("reload already in progress; waiting for it");
            run.waiters.push(reply);
            return;
        }
        if let Some(specs) = apps
            && let Err(e) = self.apply_specs(specs)
        {
            let _ = reply.send(Err(e));
            return;
        }
        let queue = self
            .keys()
            .filter(|&(a, s)| !self.apps[a].slots[usize::from(s)].retired)
            .collect();
        info!("rolling reload started");
        self.reload = Some(ReloadRun {
            queue,
            waiters: vec![reply],
            ..ReloadRun::default()
        });
        self.reload_step();
    }

    /// Take new specs: same apps; more slots are started, fewer are retired.
    fn apply_specs(&mut self, specs: Vec<AppSpec>) -> Result<(), SupervisorError> {
        let names: Vec<&str> = self.apps.iter().map(|a| a.spec.name.as_str()).collect();
        let new_names: Vec<&str> = specs.iter().map(|a| a.name.as_str()).collect();
        if names != new_names {
            return Err(SupervisorError::Reload(format!(
                "apps changed from {names:?} to {new_names:?}; adding or removing apps needs a restart of rtsup"
            )));
        }
        for (a, spec) in specs.into_iter().enumerate() {
            let old = self.apps[a].slots.len() as u16;
            let new = spec.instances;
            self.apps[a].spec = spec;
            for i in old..new {
                let rt = slot_rt(&self.apps[a].spec, i, &self.logs)?;
                self.apps[a].slots.push(rt);
                info!(app = %self.apps[a].spec.name, slot = i, "scaling up");
                self.feed((a, i), SlotEvent::Start);
            }
            for i in new..old {
                info!(app = %self.apps[a].spec.name, slot = i, "scaling down");
                self.rt((a, i)).retired = true;
                self.feed((a, i), SlotEvent::Stop);
            }
        }
        Ok(())
    }

    /// Start the next slot's replacement, or finish the reload.
    fn reload_step(&mut self) {
        loop {
            let Some(run) = self.reload.as_mut() else {
                return;
            };
            if run.current.is_some() {
                return;
            }
            let Some(key) = run.queue.pop_front() else {
                let run = self.reload.take().unwrap_or_default();
                info!(replaced = run.replaced, "rolling reload finished");
                for w in run.waiters {
                    let _ = w.send(Ok(ReloadReport {
                        replaced: run.replaced,
                        failed: None,
                    }));
                }
                return;
            };
            if usize::from(key.1) >= self.apps[key.0].slots.len() || self.rt(key).retired {
                continue;
            }
            self.feed(
                key,
                SlotEvent::Replace {
                    reason: "reload".into(),
                },
            );
            if self.rt(key).slot.is_replacing() {
                if let Some(run) = self.reload.as_mut() {
                    run.current = Some(key);
                }
                return;
            }
            // Not running (crashed, errored): it was restarted plainly; go on.
        }
    }

    fn reload_slot_done(&mut self, key: Key, failure: Option<String>) {
        let Some(run) = self.reload.as_mut() else {
            return;
        };
        if run.current != Some(key) {
            return;
        }
        run.current = None;
        let Some(why) = failure else {
            run.replaced += 1;
            self.reload_step();
            return;
        };
        let tries = run.failures.entry(key).or_insert(0);
        *tries += 1;
        if *tries < RELOAD_ATTEMPTS {
            warn!(reason = %why, "replacement failed; trying this slot once more");
            run.queue.push_front(key);
            self.reload_step();
            return;
        }
        let Some(run) = self.reload.take() else {
            return;
        };
        warn!(reason = %why, "rolling reload stopped; the failed slot kept its previous worker");
        for w in run.waiters {
            let _ = w.send(Ok(ReloadReport {
                replaced: run.replaced,
                failed: Some(why.clone()),
            }));
        }
    }

    fn begin_stop(&mut self) {
        if !self.stopping {
            info!("stopping all workers");
        }
        self.stopping = true;
        if let Some(run) = self.reload.take() {
            for w in run.waiters {
                let _ = w.send(Err(SupervisorError::Gone));
            }
        }
        let keys: Vec<Key> = self.keys().collect();
        for key in keys {
            self.feed(key, SlotEvent::Stop);
        }
    }

    /// Drop retired slots at the end of the list once they are down.
    fn drop_retired(&mut self) {
        for app in &mut self.apps {
            while app
                .slots
                .last()
                .is_some_and(|s| s.retired && s.slot.is_down())
            {
                app.slots.pop();
            }
        }
    }

    /// Bookkeeping when a worker process has exited, before the state machine sees it.
    fn on_exit(&mut self, key: Key, status: &str, outgoing: bool) {
        let name = self.apps[key.0].spec.name.clone();
        let rt = self.rt(key);
        let pid = if outgoing {
            let o = rt.outgoing.take();
            if let Some(d) = o.as_ref().and_then(|o| o.drain.as_ref()) {
                d.abort();
            }
            rt.slot.outgoing.as_ref().map(|o| o.pid)
        } else {
            if let Some(probe) = rt.probe.take() {
                probe.abort();
            }
            if let Some(l) = rt.liveness.take() {
                l.abort();
            }
            rt.usage = Usage::default();
            rt.started_at = None;
            rt.slot.pid()
        };
        let Some(pid) = pid else { return };
        // The leader is gone; take down anything it left in its group (no orphans keep the
        // port or the memory).
        process::signal_group(pid, Signal::SIGKILL);
        let expected = outgoing || matches!(rt.slot.state, SlotState::Stopping { .. });
        if expected {
            info!(app = %name, slot = key.1, pid, %status, "worker exited");
        } else {
            warn!(app = %name, slot = key.1, pid, %status, "worker exited unexpectedly");
        }
    }

    fn on_usage(&mut self, key: Key, generation: u64, usage: Usage) {
        if usize::from(key.1) >= self.apps[key.0].slots.len() {
            return;
        }
        let limit = self.apps[key.0].spec.max_memory;
        let rt = self.rt(key);
        if let Some(o) = rt.outgoing.as_mut().filter(|o| o.generation == generation) {
            o.usage = usage;
            return;
        }
        if rt.generation != generation || rt.slot.pid().is_none() {
            return;
        }
        rt.usage = usage;
        let running =
            matches!(rt.slot.state, SlotState::Running { .. }) && rt.slot.outgoing.is_none();
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
            warn!(app = %self.apps[key.0].spec.name, slot = key.1, %reason, "replacing worker");
            self.feed(key, SlotEvent::Replace { reason });
        }
    }

    /// Feed one event to a slot and execute the resulting actions (which may feed more).
    fn feed(&mut self, key: Key, event: SlotEvent) {
        let mut queue = vec![event];
        while let Some(event) = queue.pop() {
            let before = state_name(&self.rt(key).slot.state);
            let actions = self.rt(key).slot.on(event, Instant::now());
            let after = state_name(&self.rt(key).slot.state);
            if before != after {
                info!(app = %self.apps[key.0].spec.name, slot = key.1, from = before, to = after, "slot state changed");
            }
            for action in actions {
                if let Some(next) = self.execute(key, action) {
                    queue.push(next);
                }
            }
            // After the actions: a rollback restores the old worker's port and generation.
            if before != after && after == "ready" {
                self.watch_liveness(key);
            }
        }
    }

    /// Check a ready worker every `health.interval`; after `health.failures` failed checks in
    /// a row, replace it (a hung worker accepts connections but answers nothing).
    fn watch_liveness(&mut self, key: Key) {
        let app = self.apps[key.0].spec.clone();
        let health = app.health;
        let tx = self.tx.clone();
        let rt = self.rt(key);
        if let Some(l) = rt.liveness.take() {
            l.abort();
        }
        if health.interval.is_zero() {
            return;
        }
        let (generation, port) = (rt.generation, rt.port);
        let task = tokio::spawn(async move {
            let mut failed = 0;
            loop {
                sleep(health.interval).await;
                match readiness::alive(&app.ready, port, health.timeout).await {
                    Ok(()) => failed = 0,
                    Err(why) => {
                        failed += 1;
                        warn!(app = %app.name, slot = key.1, port, failed, %why, "liveness check failed");
                        if failed >= health.failures {
                            let reason = format!("unresponsive: {why}");
                            send_event(&tx, key, generation, SlotEvent::Replace { reason }).await;
                            return;
                        }
                    }
                }
            }
        });
        rt.liveness = Some(task.abort_handle());
    }

    /// The port for the next worker of a slot: its twin while an outgoing worker holds the
    /// current one (slot i alternates between `port+i` and `port+N+i`).
    fn spawn_port(&self, key: Key) -> u16 {
        let spec = &self.apps[key.0].spec;
        let rt = &self.apps[key.0].slots[usize::from(key.1)];
        let base = spec.slot_port(key.1);
        let twin = base.saturating_add(spec.instances);
        match &rt.outgoing {
            Some(o) if o.port == base => twin,
            Some(_) => base,
            // Keep the slot's port across plain restarts, but never a twin the config no longer
            // has (after a scale change).
            None if rt.port == twin => twin,
            None => base,
        }
    }

    /// Execute one action; spawning reports its outcome as the next event.
    fn execute(&mut self, key: Key, action: Action) -> Option<SlotEvent> {
        let app = self.apps[key.0].spec.clone();
        match action {
            Action::Spawn => {
                let tx = self.tx.clone();
                let replacing = self.rt(key).slot.is_replacing() && self.rt(key).outgoing.is_none();
                if replacing {
                    let rt = self.rt(key);
                    rt.outgoing = Some(OutgoingRt {
                        generation: rt.generation,
                        port: rt.port,
                        started_at: rt.started_at.take(),
                        usage: std::mem::take(&mut rt.usage),
                        drain: None,
                    });
                    rt.probe = None;
                    if let Some(l) = rt.liveness.take() {
                        l.abort();
                    }
                }
                let port = self.spawn_port(key);
                let rt = self.rt(key);
                rt.generation += 1;
                rt.port = port;
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
                            let event = SlotEvent::Exited { status };
                            send_event(&tx, key, generation, event).await;
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
                let (generation, port) = (rt.generation, rt.port);
                let task = tokio::spawn(async move {
                    let event =
                        match readiness::wait_ready(&app.ready, port, app.listen_timeout).await {
                            Ok(()) => SlotEvent::Ready,
                            Err(reason) => SlotEvent::NotReady { reason },
                        };
                    send_event(&tx, key, generation, event).await;
                });
                rt.probe = Some(task.abort_handle());
                None
            }
            Action::Terminate { pid } => {
                let tx = self.tx.clone();
                let rt = self.rt(key);
                if rt.slot.pid() == Some(pid)
                    && let Some(probe) = rt.probe.take()
                {
                    probe.abort();
                }
                process::signal_group(pid, Signal::SIGTERM);
                let at = Instant::now() + app.kill_timeout;
                tokio::spawn(async move {
                    sleep_until(at).await;
                    send(&tx, Msg::KillTimer { key, pid }).await;
                });
                None
            }
            Action::WakeAt(at) => {
                let generation = self.rt(key).generation;
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    sleep_until(at).await;
                    let event = SlotEvent::Wake;
                    send_event(&tx, key, generation, event).await;
                });
                None
            }
            Action::Drain { pid } => {
                let tx = self.tx.clone();
                let gate = self.gate.clone();
                let rt = self.rt(key);
                let o = rt.outgoing.as_mut()?;
                let generation = o.generation;
                info!(app = %app.name, slot = key.1, pid, "replacement ready; draining the previous worker");
                let deadline = Instant::now() + app.drain_timeout;
                let name = app.name.clone();
                let task = tokio::spawn(async move {
                    while Instant::now() < deadline {
                        match gate.sessions(&name, key.1, generation) {
                            None | Some(0) => break,
                            Some(_) => sleep(DRAIN_POLL).await,
                        }
                    }
                    let event = SlotEvent::OutgoingDrained;
                    send_event(&tx, key, generation, event).await;
                });
                o.drain = Some(task.abort_handle());
                self.reload_slot_done(key, None);
                None
            }
            Action::RolledBack { pid } => {
                let rt = self.rt(key);
                if let Some(o) = rt.outgoing.take() {
                    rt.generation = o.generation;
                    rt.port = o.port;
                    rt.started_at = o.started_at;
                    rt.usage = o.usage;
                }
                let why = rt.slot.last_exit.clone().unwrap_or_default();
                warn!(app = %app.name, slot = key.1, pid, %why, "replacement failed; rolled back");
                self.reload_slot_done(key, Some(format!("{}:{}: {why}", app.name, key.1)));
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
                        .flat_map(|(i, rt)| snapshots(i as u16, rt))
                        .collect(),
                })
                .collect(),
            reloading: self.reload.is_some(),
        };
        self.fleet.send_if_modified(|old| {
            let changed = *old != fleet;
            *old = fleet;
            changed
        });
    }
}

/// The slot's worker, and its outgoing worker while one is retiring.
fn snapshots(slot: u16, rt: &SlotRt) -> Vec<WorkerSnapshot> {
    let state = match rt.slot.state {
        SlotState::Stopped => WorkerState::Stopped,
        SlotState::Starting { .. } => WorkerState::Starting,
        SlotState::Running { .. } => WorkerState::Ready,
        SlotState::Stopping { .. } => WorkerState::Stopping,
        SlotState::Backoff { .. } => WorkerState::Waiting,
        SlotState::Errored => WorkerState::Errored,
    };
    let mut out = vec![WorkerSnapshot {
        slot,
        generation: rt.generation,
        pid: rt.slot.pid(),
        port: rt.port,
        state,
        restarts: rt.slot.restarts,
        started_at: rt.started_at,
        memory_bytes: rt.usage.rss_bytes,
        cpu_percent: rt.usage.cpu_percent,
        last_exit: rt.slot.last_exit.clone(),
    }];
    if let (Some(o), Some(po)) = (&rt.outgoing, &rt.slot.outgoing) {
        out.push(WorkerSnapshot {
            slot,
            generation: o.generation,
            pid: Some(po.pid),
            port: o.port,
            state: match po.phase {
                OutgoingPhase::Serving => WorkerState::Ready,
                OutgoingPhase::Draining => WorkerState::Draining,
                OutgoingPhase::Stopping => WorkerState::Stopping,
            },
            restarts: rt.slot.restarts,
            started_at: o.started_at,
            memory_bytes: o.usage.rss_bytes,
            cpu_percent: o.usage.cpu_percent,
            last_exit: None,
        });
    }
    out
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

/// Report `event` of worker `generation` of slot `key` to the actor.
async fn send_event(tx: &mpsc::WeakSender<Msg>, key: Key, generation: u64, event: SlotEvent) {
    send(
        tx,
        Msg::Event {
            key,
            generation,
            event,
        },
    )
    .await;
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
