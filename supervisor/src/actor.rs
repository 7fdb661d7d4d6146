//! The supervisor actor: the one task that owns every slot.
//!
//! Its whole loop: take one message (a command, a worker event, a resource sample) or wake at
//! the earliest deadline; apply it to the pure slot state machines ([`crate::slot`]); ask the
//! reconciler ([`crate::reconcile`]) what to do next and do it until it has nothing more; settle
//! the requests waiting for an answer; publish a [`Fleet`] snapshot. It keeps no rollout
//! script: the wanted state and the slots' states are all there is.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tracing::{error, info, warn};

use crate::effects::{Effects, Inbox, Order, Processes, Reporter, WorkerEvent};
use crate::fleet::{AppSnapshot, Fleet, WorkerSnapshot, WorkerState};
use crate::handle::{Command, DrainGate, Report, SlotReport, SupervisorError, SupervisorHandle};
use crate::memory::{Sampler, Usage};
use crate::reconcile::{self, AppSlots, Decision, Expect, Outcome, Target, Wanted, WantedApp};
use crate::slot::{Effect, Horizons, PROBE_GRACE, Phase, Slot, Worker};
use crate::spec::{AppSpec, MAX_INSTANCES, SupervisorSpec};

/// How often the memory sampler measures every worker (PM2 polls every 30 s).
pub const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How often memory is sampled while a worker is over its `max_memory` (a 100 MB/s leak
/// overshoots its ceiling by at most ~10 MB before it is stopped).
pub const MEMORY_SAMPLE_HURRY: Duration = Duration::from_millis(100);
/// How often a draining worker's session count is checked.
pub(crate) const DRAIN_POLL: Duration = Duration::from_millis(200);
/// Reconciler passes per wake-up; each pass applies every decision it returned.
const MAX_PASSES: usize = 32;
/// How long a port found busy (held by a program that is not ours) is avoided.
const BUSY_PORT_AVOID: Duration = Duration::from_secs(30);

/// Entry point: starts the actor and the memory sampler.
pub struct Supervisor;

impl Supervisor {
    /// Start supervising `spec`: every slot is started at once. `gate` tells when a draining
    /// worker is idle. Returns the handle and the actor's join handle (it ends after
    /// [`SupervisorHandle::stop`]).
    pub fn spawn(
        spec: SupervisorSpec,
        gate: Arc<dyn DrainGate>,
    ) -> (SupervisorHandle, JoinHandle<()>) {
        let effects = Processes::new(spec.logs.clone());
        let (handle, join) = spawn_with(spec, gate, effects);
        tokio::spawn(sample_memory(handle.tx.downgrade(), handle.subscribe()));
        (handle, join)
    }
}

/// Start the actor with any [`Effects`] (tests use a fake one).
pub(crate) fn spawn_with<E: Effects>(
    spec: SupervisorSpec,
    gate: Arc<dyn DrainGate>,
    effects: E,
) -> (SupervisorHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1024);
    let (fleet_tx, fleet_rx) = watch::channel(Fleet::default());
    let handle = SupervisorHandle {
        tx: tx.clone(),
        fleet: fleet_rx,
    };
    let wanted = Wanted {
        apps: spec
            .apps
            .into_iter()
            .map(|a| WantedApp::new(Arc::new(a), 1))
            .collect(),
        stopping: false,
    };
    let mut actor = Actor {
        wanted,
        apps: Vec::new(),
        pending: Vec::new(),
        stop_waiters: Vec::new(),
        effects,
        gate,
        reserved: spec.reserved_ports,
        busy: BTreeMap::new(),
        rev: 1,
        reporter: Reporter(tx),
        fleet: fleet_tx,
    };
    let join = tokio::spawn(async move { actor.run(rx).await });
    (handle, join)
}

/// A request waiting for its report.
struct Pending {
    rev: u64,
    targets: Vec<Target>,
    reply: oneshot::Sender<Result<Report, SupervisorError>>,
}

struct Actor<E> {
    wanted: Wanted,
    apps: Vec<AppSlots>,
    pending: Vec<Pending>,
    stop_waiters: Vec<oneshot::Sender<Result<(), SupervisorError>>>,
    effects: E,
    gate: Arc<dyn DrainGate>,
    reserved: Vec<u16>,
    /// Ports another program was found listening on, avoided until the instant given.
    busy: BTreeMap<u16, Instant>,
    /// Latest spec revision handed out.
    rev: u64,
    reporter: Reporter,
    fleet: watch::Sender<Fleet>,
}

impl<E: Effects> Actor<E> {
    async fn run(&mut self, mut rx: mpsc::Receiver<Inbox>) {
        loop {
            self.step(Instant::now());
            if self.wanted.stopping && self.apps.iter().all(|a| a.slots.iter().all(Slot::is_down)) {
                info!("all workers stopped");
                for w in self.stop_waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
                return;
            }
            let deadline = self.next_deadline();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg, Instant::now()),
                    // Unreachable while the actor holds its own reporter; stop cleanly anyway.
                    None => self.wanted.stopping = true,
                },
                () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {}
            }
        }
    }

    /// Deadlines, reconciliation, answers, snapshot.
    fn step(&mut self, now: Instant) {
        self.tick(now);
        self.busy.retain(|_, until| *until > now);
        for _ in 0..MAX_PASSES {
            let reserved: Vec<u16> = self
                .reserved
                .iter()
                .copied()
                .chain(self.busy.keys().copied())
                .collect();
            let decisions = reconcile::next(&self.wanted, &self.apps, &reserved, now);
            if decisions.is_empty() {
                break;
            }
            for d in decisions {
                self.apply(d, now);
            }
        }
        self.answer();
        self.publish();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut draining = false;
        for slot in self.apps.iter().flat_map(|a| &a.slots) {
            if let Some(t) = slot.next_deadline() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            draining |= slot
                .leaving
                .iter()
                .any(|w| matches!(w.phase, Phase::Draining { .. }));
        }
        if draining {
            let poll = Instant::now() + DRAIN_POLL;
            next = Some(next.map_or(poll, |n| n.min(poll)));
        }
        next
    }

    /// Apply every passed deadline, and end the drain of workers with no sessions left.
    fn tick(&mut self, now: Instant) {
        let gate = self.gate.clone();
        for a in 0..self.apps.len() {
            let name = self.apps[a].name.clone();
            for s in 0..self.apps[a].slots.len() {
                let slot = &mut self.apps[a].slots[s];
                let index = slot.index;
                let busy = |generation| {
                    gate.sessions(&name, index, generation)
                        .is_some_and(|n| n > 0)
                };
                let mut effects = slot.tick(now, busy);
                let idle: Vec<u64> = slot
                    .leaving
                    .iter()
                    .filter(|w| matches!(w.phase, Phase::Draining { .. }))
                    .filter(|w| !busy(w.generation))
                    .map(|w| w.generation)
                    .collect();
                for generation in idle {
                    effects.extend(slot.drained(generation, now));
                }
                self.run_effects(a, s, effects);
            }
        }
    }

    fn find(&self, app: &str, index: u16) -> Option<(usize, usize)> {
        let a = self.apps.iter().position(|x| &*x.name == app)?;
        let s = self.apps[a].slots.iter().position(|x| x.index == index)?;
        Some((a, s))
    }

    fn handle(&mut self, msg: Inbox, now: Instant) {
        match msg {
            Inbox::Worker {
                app,
                slot,
                generation,
                event,
            } => self.on_worker(&app, slot, generation, event, now),
            Inbox::Usage(samples) => {
                for (app, index, generation, usage) in samples {
                    self.on_usage(&app, index, generation, usage, now);
                }
            }
            Inbox::Command(cmd) => self.command(cmd, now),
        }
    }

    fn on_worker(
        &mut self,
        app: &str,
        index: u16,
        generation: u64,
        event: WorkerEvent,
        now: Instant,
    ) {
        let Some((a, s)) = self.find(app, index) else {
            return;
        };
        let slot = &mut self.apps[a].slots[s];
        let before = state_of(slot);
        let mut notes = Vec::new();
        let effects = match event {
            WorkerEvent::Ready => {
                if slot
                    .current
                    .as_ref()
                    .is_some_and(|w| w.generation == generation)
                {
                    notes.push(format!("slot {index}: worker {generation} ready"));
                }
                slot.ready(generation, now)
            }
            WorkerEvent::NotReady(reason) => {
                warn!(app, slot = index, generation, %reason, "worker not ready");
                notes.push(format!(
                    "slot {index}: worker {generation} not ready: {reason}"
                ));
                slot.not_ready(generation, reason, now)
            }
            WorkerEvent::Exited(status) => {
                let expected = slot
                    .workers()
                    .find(|w| w.generation == generation)
                    .is_some_and(|w| matches!(w.phase, Phase::Stopping { .. }));
                if expected {
                    info!(app, slot = index, generation, %status, "worker exited");
                    notes.push(format!(
                        "slot {index}: worker {generation} exited: {status}"
                    ));
                } else {
                    warn!(app, slot = index, generation, %status, "worker exited unexpectedly");
                    notes.push(format!(
                        "slot {index}: worker {generation} exited unexpectedly: {status}"
                    ));
                }
                slot.exited(generation, &status, now)
            }
            WorkerEvent::Unresponsive(reason) => {
                if slot
                    .current
                    .as_ref()
                    .is_some_and(|w| w.generation == generation)
                    && slot.replace.is_none()
                {
                    warn!(app, slot = index, generation, %reason, "replacing worker");
                    notes.push(format!(
                        "slot {index}: replacing worker {generation}: {reason}"
                    ));
                    slot.replace = Some(reason);
                }
                vec![]
            }
        };
        let after = state_of(slot);
        if before != after {
            info!(
                app,
                slot = index,
                from = before.as_str(),
                to = after.as_str(),
                "slot state changed"
            );
        }
        if after == WorkerState::Errored && before != after {
            let why = slot.last_exit.as_deref().unwrap_or("no exit recorded");
            error!(
                app,
                slot = index,
                restarts = slot.restarts,
                %why,
                "slot errored: crashed too often in a row; fix the cause, then `rtsup restart {app}:{index}` or `rtsup reload`"
            );
            notes.push(format!(
                "slot {index}: errored after {} restart(s): {why}; fix the cause, then `rtsup restart {app}:{index}`",
                slot.restarts
            ));
        }
        for note in notes {
            self.effects.event(app, &note);
        }
        self.run_effects(a, s, effects);
    }

    fn on_usage(&mut self, app: &str, index: u16, generation: u64, usage: Usage, now: Instant) {
        let Some((a, s)) = self.find(app, index) else {
            return;
        };
        // Sampling and the worker's own exit take time too: margins on both periods.
        let horizons = Horizons {
            hurry: MEMORY_SAMPLE_HURRY * 2,
            normal: MEMORY_SAMPLE_INTERVAL + MEMORY_SAMPLE_HURRY,
        };
        if let Some((reason, effects)) =
            self.apps[a].slots[s].usage(generation, usage, now, horizons)
        {
            if effects.is_empty() {
                warn!(app, slot = index, generation, %reason, "no new sessions; replacing worker");
                self.effects.event(
                    app,
                    &format!(
                        "slot {index}: worker {generation}: {reason}; no new sessions, replacing it"
                    ),
                );
            } else {
                warn!(app, slot = index, generation, %reason, "stopping worker now");
                self.effects.event(
                    app,
                    &format!("slot {index}: worker {generation}: {reason}; stopping it now"),
                );
            }
            self.run_effects(a, s, effects);
        }
    }

    /// Carry out what a slot asked for.
    fn run_effects(&mut self, a: usize, s: usize, effects: Vec<Effect>) {
        let name = self.apps[a].name.clone();
        let index = self.apps[a].slots[s].index;
        for effect in effects {
            match effect {
                Effect::Terminate { pid } => {
                    // The signal of the spec the worker runs (a reload may have changed it).
                    let signal = self.apps[a].slots[s]
                        .workers()
                        .find(|w| w.pid == pid)
                        .map_or(Signal::SIGTERM, |w| w.spec.kill_signal);
                    self.effects.signal(pid, signal)
                }
                Effect::Kill { pid } => {
                    warn!(app = %name, slot = index, pid, "kill_timeout passed; sending SIGKILL");
                    self.effects.event(
                        &name,
                        &format!(
                            "slot {index}: pid {pid} ignored its kill signal for kill_timeout; SIGKILL"
                        ),
                    );
                    self.effects.signal(pid, Signal::SIGKILL);
                }
                Effect::Release { generation, window } => {
                    info!(app = %name, slot = index, generation, ?window, "drain time up; closing remaining connections gradually");
                    self.effects.event(
                        &name,
                        &format!("slot {index}: worker {generation} drain time up; closing its connections over {}", humantime::format_duration(window)),
                    );
                    self.gate.release(&name, index, generation, window);
                }
                Effect::Watch { generation } => {
                    let slot = &self.apps[a].slots[s];
                    if let Some(w) = slot.current.as_ref().filter(|w| w.generation == generation) {
                        let order = Order {
                            app: &name,
                            slot: index,
                            generation,
                            port: w.port,
                            spec: &w.spec,
                        };
                        self.effects.watch(&order, &self.reporter);
                    }
                }
                Effect::Forget { generation, pid } => {
                    self.effects.forget(&name, index, generation);
                    // The leader is gone; take down anything it left in its group (no orphans
                    // keep the port or the memory).
                    self.effects.signal(pid, Signal::SIGKILL);
                }
            }
        }
    }

    fn apply(&mut self, d: Decision, now: Instant) {
        match d {
            Decision::AddApp { app } => {
                info!(app = %app, "app added");
                self.apps.push(AppSlots {
                    name: app,
                    slots: Vec::new(),
                });
            }
            Decision::AddSlot {
                app,
                index,
                rev,
                spec,
            } => {
                if let Some(a) = self.apps.iter_mut().find(|x| x.name == app) {
                    a.slots.push(Slot::new(index, spec, rev));
                    a.slots.sort_by_key(|s| s.index);
                }
            }
            Decision::Launch {
                app,
                index,
                port,
                rev,
                spec,
            } => self.launch(&app, index, port, rev, spec, now),
            Decision::NoPort { app, index, rev } => {
                if let Some((a, s)) = self.find(&app, index) {
                    warn!(app = %app, slot = index, "no free port for a new worker");
                    self.apps[a].slots[s].spawn_failed(rev, "no free port".into(), now);
                }
            }
            Decision::Retire { app, index } => {
                if let Some((a, s)) = self.find(&app, index) {
                    info!(app = %app, slot = index, "retiring slot (draining)");
                    self.effects.event(
                        &app,
                        &format!("slot {index}: retired (draining, then stopped)"),
                    );
                    let effects = self.apps[a].slots[s].retire(now);
                    self.run_effects(a, s, effects);
                }
            }
            Decision::Stop { app, index } => {
                if let Some((a, s)) = self.find(&app, index) {
                    let effects = self.apps[a].slots[s].stop(now);
                    self.run_effects(a, s, effects);
                }
            }
            Decision::RemoveSlot { app, index } => {
                if let Some((a, s)) = self.find(&app, index) {
                    info!(app = %app, slot = index, "slot removed");
                    self.apps[a].slots.remove(s);
                }
            }
            Decision::RemoveApp { app } => {
                info!(app = %app, "app removed");
                self.apps.retain(|x| x.name != app);
            }
        }
    }

    fn launch(
        &mut self,
        app: &Arc<str>,
        index: u16,
        port: u16,
        rev: u64,
        spec: Arc<AppSpec>,
        now: Instant,
    ) {
        let Some((a, s)) = self.find(app, index) else {
            return;
        };
        if let Err(busy) = self.effects.check_port(port) {
            warn!(app = %app, slot = index, port, %busy, "choosing another port");
            self.effects
                .event(app, &format!("slot {index}: {busy}; taking another port"));
            self.busy.insert(port, now + BUSY_PORT_AVOID);
            if let Some((a, s)) = self.find(app, index) {
                self.apps[a].slots[s].last_exit = Some(format!("{busy}; took another port"));
            }
            return;
        }
        let generation = self.apps[a].slots[s].next_generation();
        let order = Order {
            app,
            slot: index,
            generation,
            port,
            spec: &spec,
        };
        let result = self.effects.spawn(&order, &self.reporter);
        let slot = &mut self.apps[a].slots[s];
        match result {
            Ok(pid) => {
                info!(app = %app, slot = index, pid, port, generation, rev, "worker spawned");
                self.effects.event(
                    app,
                    &format!("slot {index}: worker {generation} spawned: pid {pid}, port {port}"),
                );
                let ready_by = now + spec.listen_timeout + PROBE_GRACE;
                slot.launched(Worker {
                    generation,
                    pid,
                    port,
                    rev,
                    spec,
                    started: now,
                    started_at: SystemTime::now(),
                    phase: Phase::Starting { ready_by },
                    usage: Usage::default(),
                    over_memory: false,
                    sampled_at: None,
                });
            }
            Err(error) => {
                warn!(app = %app, slot = index, command = %spec.command, %error, "cannot spawn worker");
                self.effects
                    .event(app, &format!("slot {index}: cannot spawn: {error}"));
                let slot = &mut self.apps[a].slots[s];
                slot.spawn_failed(rev, error, now);
            }
        }
    }

    fn command(&mut self, cmd: Command, now: Instant) {
        if self.wanted.stopping {
            match cmd {
                Command::Stop { reply } => self.stop_waiters.push(reply),
                Command::Ping { reply } => {
                    let _ = reply.send(Ok(()));
                }
                Command::Reload { reply, .. }
                | Command::Restart { reply, .. }
                | Command::StartApp { reply, .. }
                | Command::StopApp { reply, .. }
                | Command::Scale { reply, .. } => {
                    let _ = reply.send(Err(SupervisorError::Gone));
                }
            }
            return;
        }
        match cmd {
            Command::Ping { reply } => {
                let _ = reply.send(Ok(()));
            }
            Command::Stop { reply } => {
                info!("stopping all workers");
                self.wanted.stopping = true;
                self.stop_waiters.push(reply);
            }
            Command::Reload { apps, reply } => {
                let rev = self.next_rev();
                let targets = self.reload(apps, rev);
                self.wait(rev, targets, reply);
            }
            Command::Restart {
                app,
                slot,
                force,
                reply,
            } => {
                let result = self.restart(&app, slot, force, now);
                self.wait_or_refuse(result, reply);
            }
            Command::StartApp { app, reply } => {
                let result = self.start_app(&app);
                self.wait_or_refuse(result, reply);
            }
            Command::StopApp { app, reply } => {
                let result = self.stop_app(&app).map(|targets| (0, targets));
                self.wait_or_refuse(result, reply);
            }
            Command::Scale {
                app,
                instances,
                reply,
            } => {
                let result = self.scale(&app, instances);
                self.wait_or_refuse(result, reply);
            }
        }
    }

    fn next_rev(&mut self) -> u64 {
        self.rev += 1;
        self.rev
    }

    fn wait(
        &mut self,
        rev: u64,
        targets: Vec<Target>,
        reply: oneshot::Sender<Result<Report, SupervisorError>>,
    ) {
        self.pending.push(Pending {
            rev,
            targets,
            reply,
        });
    }

    /// Wait on an accepted request's targets, or answer a refused one at once.
    fn wait_or_refuse(
        &mut self,
        result: Result<(u64, Vec<Target>), SupervisorError>,
        reply: oneshot::Sender<Result<Report, SupervisorError>>,
    ) {
        match result {
            Ok((rev, targets)) => self.wait(rev, targets, reply),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Whether slot `index` of `app` is wanted now (not retiring, the app not removed).
    fn was_wanted(&self, app: &str, index: u16) -> bool {
        self.wanted
            .apps
            .iter()
            .any(|w| w.spec.name == app && index < w.instances)
    }

    /// The slot indexes `app` has now (none for an app not running yet).
    fn indexes(&self, app: &str) -> Vec<u16> {
        self.apps
            .iter()
            .find(|a| &*a.name == app)
            .map(|a| a.slots.iter().map(|s| s.index).collect())
            .unwrap_or_default()
    }

    /// Answer every request whose slots have all settled.
    fn answer(&mut self) {
        let (wanted, apps) = (&self.wanted, &self.apps);
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            if reconcile::settle(&mut p.targets, p.rev, wanted, apps) {
                let p = self.pending.swap_remove(i);
                let report = Report {
                    slots: p
                        .targets
                        .into_iter()
                        .map(|t| SlotReport {
                            app: t.app.to_string(),
                            slot: t.slot,
                            outcome: t.outcome.unwrap_or(Outcome::Unchanged {
                                reason: "unknown".into(),
                            }),
                        })
                        .collect(),
                };
                if report.ok() {
                    info!(slots = report.slots.len(), "request done");
                } else {
                    warn!(?report, "request done with failures");
                }
                for slot in &report.slots {
                    self.effects.event(
                        &slot.app,
                        &format!("slot {}: request done: {}", slot.slot, slot.outcome),
                    );
                }
                let _ = p.reply.send(Ok(report));
            } else {
                i += 1;
            }
        }
    }

    /// The slot `index` of `app` as it is now, as a target expecting `expect`.
    fn target(&self, app: &Arc<str>, index: u16, expect: Expect) -> Target {
        let since = self
            .find(app, index)
            .map_or(0, |(a, s)| self.apps[a].slots[s].generation);
        Target {
            app: app.clone(),
            slot: index,
            expect,
            since,
            outcome: None,
        }
    }

    fn slot_mut(&mut self, app: &str, index: u16) -> Option<&mut Slot> {
        let (a, s) = self.find(app, index)?;
        Some(&mut self.apps[a].slots[s])
    }

    fn reload(&mut self, specs: Vec<AppSpec>, rev: u64) -> Vec<Target> {
        info!(rev, apps = specs.len(), "reload: new wanted configuration");
        for spec in &specs {
            self.effects
                .event(&spec.name, &format!("reload: configuration revision {rev}"));
        }
        let mut targets = Vec::new();
        let mut wanted = Vec::with_capacity(specs.len());
        for spec in specs {
            let name: Arc<str> = Arc::from(spec.name.as_str());
            let enabled = self
                .wanted
                .apps
                .iter()
                .find(|w| w.spec.name == spec.name)
                .is_none_or(|w| w.enabled);
            let mut w = WantedApp::new(Arc::new(spec), rev);
            w.enabled = enabled;
            let existing = self.indexes(&name);
            for index in existing.iter().copied().filter(|&i| i >= w.instances) {
                targets.push(self.target(&name, index, Expect::Removed));
            }
            for index in 0..w.instances {
                if !enabled {
                    let mut t = self.target(&name, index, Expect::Replace);
                    t.outcome = Some(Outcome::Unchanged {
                        reason: "app stopped (rtsup start APP runs it)".into(),
                    });
                    targets.push(t);
                    continue;
                }
                if existing.contains(&index) && self.was_wanted(&name, index) {
                    targets.push(self.target(&name, index, Expect::Replace));
                    if let Some(slot) = self.slot_mut(&name, index) {
                        slot.revive();
                        slot.backoff_until = None;
                    }
                } else {
                    targets.push(self.target(&name, index, Expect::Add));
                }
            }
            wanted.push(w);
        }
        for app in &self.apps {
            if !wanted.iter().any(|w| *w.spec.name == *app.name) {
                for slot in &app.slots {
                    targets.push(self.target(&app.name, slot.index, Expect::Removed));
                }
            }
        }
        self.wanted.apps = wanted;
        targets
    }

    fn wanted_app(&mut self, app: &str) -> Result<usize, SupervisorError> {
        self.wanted
            .apps
            .iter()
            .position(|w| w.spec.name == app)
            .ok_or_else(|| SupervisorError::UnknownApp(app.to_string()))
    }

    fn restart(
        &mut self,
        app: &str,
        slot: Option<u16>,
        force: bool,
        now: Instant,
    ) -> Result<(u64, Vec<Target>), SupervisorError> {
        let w = self.wanted_app(app)?;
        let instances = self.wanted.apps[w].instances;
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
        let rev = self.next_rev();
        let want = &mut self.wanted.apps[w];
        want.enabled = true;
        // Per-slot revisions: a restart re-runs the spec in force (a configuration a reload
        // could not apply is not forced in by a restart).
        for &s in &slots {
            want.bumps.insert(s, rev);
        }
        let name: Arc<str> = Arc::from(app);
        info!(app, ?slot, force, "restart requested");
        self.effects.event(
            app,
            &format!(
                "restart requested ({}{})",
                slot.map_or("every slot".to_string(), |s| format!("slot {s}")),
                if force {
                    ", all at once"
                } else {
                    ", one at a time"
                }
            ),
        );
        let mut targets = Vec::new();
        for index in slots {
            targets.push(self.target(&name, index, Expect::Replace));
            if let Some((a, s)) = self.find(app, index) {
                let slot = &mut self.apps[a].slots[s];
                slot.revive();
                slot.backoff_until = None;
                if force {
                    let effects = slot.abandon_current("operator restart (forced)".into(), now);
                    self.run_effects(a, s, effects);
                }
            }
        }
        Ok((rev, targets))
    }

    fn start_app(&mut self, app: &str) -> Result<(u64, Vec<Target>), SupervisorError> {
        let w = self.wanted_app(app)?;
        self.wanted.apps[w].enabled = true;
        let (rev, instances) = (self.wanted.apps[w].rev, self.wanted.apps[w].instances);
        let name: Arc<str> = Arc::from(app);
        let mut targets = Vec::new();
        for index in 0..instances {
            let mut t = self.target(&name, index, Expect::Start);
            if let Some(slot) = self.slot_mut(app, index) {
                if slot
                    .current
                    .as_ref()
                    .is_some_and(|w| !matches!(w.phase, Phase::Stopping { .. }))
                {
                    t.outcome = Some(Outcome::Unchanged {
                        reason: "already running".into(),
                    });
                }
                slot.revive();
                slot.backoff_until = None;
            }
            targets.push(t);
        }
        info!(app, "app start requested");
        self.effects.event(app, "start requested");
        Ok((rev, targets))
    }

    fn stop_app(&mut self, app: &str) -> Result<Vec<Target>, SupervisorError> {
        let w = self.wanted_app(app)?;
        self.wanted.apps[w].enabled = false;
        let name: Arc<str> = Arc::from(app);
        let indexes = self.indexes(app);
        info!(app, "app stop requested");
        self.effects.event(app, "stop requested");
        Ok(indexes
            .into_iter()
            .map(|i| self.target(&name, i, Expect::Stopped))
            .collect())
    }

    fn scale(&mut self, app: &str, instances: u16) -> Result<(u64, Vec<Target>), SupervisorError> {
        if instances == 0 {
            return Err(SupervisorError::Invalid(
                "instances must be at least 1 (rtsup stop APP stops an app)".into(),
            ));
        }
        let w = self.wanted_app(app)?;
        let port = u32::from(self.wanted.apps[w].spec.port);
        if instances > MAX_INSTANCES || port + 2 * u32::from(instances) > 65_536 {
            return Err(SupervisorError::Invalid(format!(
                "instances must be 1 to {MAX_INSTANCES}, and ports {port} .. {port} + 2 × instances must stay below 65536"
            )));
        }
        let old = self.wanted.apps[w].instances;
        self.wanted.apps[w].instances = instances;
        let rev = self.wanted.apps[w].rev;
        let name: Arc<str> = Arc::from(app);
        info!(app, from = old, to = instances, "scale requested");
        self.effects
            .event(app, &format!("scale requested: {old} -> {instances}"));
        let existing = self.indexes(app);
        let mut targets = Vec::new();
        for index in 0..instances.max(old) {
            let t = if index >= instances {
                self.target(&name, index, Expect::Removed)
            } else if existing.contains(&index) && index < old {
                let mut t = self.target(&name, index, Expect::Replace);
                t.outcome = Some(Outcome::Unchanged {
                    reason: "kept".into(),
                });
                t
            } else {
                self.target(&name, index, Expect::Add)
            };
            targets.push(t);
        }
        for index in existing.into_iter().filter(|&i| i >= instances.max(old)) {
            targets.push(self.target(&name, index, Expect::Removed));
        }
        Ok((rev, targets))
    }

    fn publish(&self) {
        let fleet = Fleet {
            apps: self
                .apps
                .iter()
                .map(|app| AppSnapshot {
                    name: app.name.to_string(),
                    workers: app.slots.iter().flat_map(snapshots).collect(),
                })
                .collect(),
            reloading: !self.pending.is_empty(),
        };
        self.fleet.send_if_modified(|old| {
            let changed = *old != fleet;
            *old = fleet;
            changed
        });
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

/// The operator-facing state of a slot (its current worker, or why it has none).
fn state_of(slot: &Slot) -> WorkerState {
    match &slot.current {
        Some(w) => match w.phase {
            Phase::Starting { .. } => WorkerState::Starting,
            // Over max_memory: no new sessions from now on.
            Phase::Ready | Phase::Serving if w.over_memory => WorkerState::Draining,
            Phase::Ready | Phase::Serving => WorkerState::Ready,
            Phase::Draining { .. } | Phase::Releasing { .. } => WorkerState::Draining,
            Phase::Stopping { .. } => WorkerState::Stopping,
        },
        None if slot.errored => WorkerState::Errored,
        None if slot.backoff_until.is_some() => WorkerState::Waiting,
        None => WorkerState::Stopped,
    }
}

/// The slot's current worker (or its empty place), then its leaving workers.
fn snapshots(slot: &Slot) -> Vec<WorkerSnapshot> {
    let row = |w: Option<&Worker>, state: WorkerState, last_exit: Option<String>| WorkerSnapshot {
        slot: slot.index,
        generation: w.map_or(slot.generation, |w| w.generation),
        pid: w.map(|w| w.pid),
        port: w.map_or(slot.port, |w| w.port),
        state,
        restarts: slot.restarts,
        started_at: w.map(|w| w.started_at),
        memory_bytes: w.map_or(0, |w| w.usage.rss_bytes),
        cpu_percent: w.map_or(0.0, |w| w.usage.cpu_percent),
        last_exit,
        over_memory: w.is_some_and(|w| w.over_memory),
    };
    let mut out = Vec::with_capacity(1 + slot.leaving.len());
    if slot.current.is_some() || slot.leaving.is_empty() {
        out.push(row(
            slot.current.as_ref(),
            state_of(slot),
            slot.last_exit.clone(),
        ));
    }
    for w in &slot.leaving {
        let state = match w.phase {
            Phase::Serving | Phase::Ready if w.over_memory => WorkerState::Draining,
            Phase::Serving | Phase::Ready => WorkerState::Ready,
            Phase::Draining { .. } | Phase::Releasing { .. } => WorkerState::Draining,
            Phase::Starting { .. } | Phase::Stopping { .. } => WorkerState::Stopping,
        };
        let last_exit = if slot.current.is_none() {
            slot.last_exit.clone()
        } else {
            None
        };
        out.push(row(Some(w), state, last_exit));
    }
    out
}

/// Sample every live worker's process tree once per [`MEMORY_SAMPLE_INTERVAL`] and report to
/// the actor. Ends when the actor is gone.
async fn sample_memory(tx: mpsc::WeakSender<Inbox>, mut fleet: watch::Receiver<Fleet>) {
    let mut sampler = Some(Sampler::new());
    let mut last: Option<Instant> = None;
    loop {
        // A worker over its limit grows towards its ceiling: watch it closely. The fleet is
        // watched while waiting, so the first over-limit sample shortens the very next wait.
        while let Some(at) = last {
            let hurry = fleet
                .borrow_and_update()
                .apps
                .iter()
                .any(|a| a.workers.iter().any(|w| w.over_memory && w.pid.is_some()));
            let due = at
                + if hurry {
                    MEMORY_SAMPLE_HURRY
                } else {
                    MEMORY_SAMPLE_INTERVAL
                };
            tokio::select! {
                () = sleep_until(due) => break,
                changed = fleet.changed() => if changed.is_err() { return },
            }
        }
        last = Some(Instant::now());
        let targets: Vec<(Arc<str>, u16, u64, u32)> = {
            let fleet = fleet.borrow();
            fleet
                .apps
                .iter()
                .flat_map(|app| {
                    let name: Arc<str> = Arc::from(app.name.as_str());
                    app.workers.iter().filter_map(move |w| {
                        w.pid.map(|pid| (name.clone(), w.slot, w.generation, pid))
                    })
                })
                .collect()
        };
        let Some(mut s) = sampler.take() else { return };
        let roots: Vec<u32> = targets.iter().map(|t| t.3).collect();
        let Ok((s, usage)) = tokio::task::spawn_blocking(move || {
            let usage = s.sample(&roots);
            (s, usage)
        })
        .await
        else {
            return;
        };
        sampler = Some(s);
        let samples = targets
            .into_iter()
            .filter_map(|(app, slot, generation, pid)| {
                // A live process has some resident memory: nothing read (rtsup out of
                // descriptors, /proc unreadable) is no sample, not "0 bytes".
                usage
                    .get(&pid)
                    .filter(|u| u.rss_bytes > 0)
                    .map(|u| (app, slot, generation, *u))
            })
            .collect();
        let Some(tx) = tx.upgrade() else { return };
        if tx.send(Inbox::Usage(samples)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
