//! One slot and the workers it holds: a pure state machine, no I/O, no clock reads.
//!
//! A slot is the stable position `i` of an app. It owns the identity of its workers: the
//! `current` one (the worker the slot serves with) and the `leaving` ones (replaced or retired,
//! still serving their sessions until drained and stopped), each with its generation, port, pid,
//! spec revision and phase. Worker events (ready, exited, unresponsive) and deadlines change it
//! here and return the [`Effect`]s the actor must carry out; *what* the slot should run next is
//! decided by the reconciler ([`crate::reconcile`]), which reads slots and never mutates them.
//!
//! ```text
//! current:  (launch) Starting --ready--> Ready --exit--> crash: backoff or errored
//!           Starting --not ready / deadline--> Stopping(not ready) --exit--> start failed
//!           Ready --stop--> Stopping(halt) --exit--> none
//! launch beside a Ready worker: the old one leaves as Serving; when the new one is Ready it
//!           drains; if the new one fails first, the old one is current again (rollback).
//! leaving:  Serving --new ready--> Draining --idle or drain deadline--> [Releasing] --> Stopping
//!           Stopping --kill deadline--> SIGKILL --give-up deadline--> forgotten
//! ```
//! Every phase that waits carries its deadline; [`Slot::tick`] turns an expired one into the
//! next step, so nothing waits for ever.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::memory::Usage;
use crate::spec::AppSpec;

/// How long a worker that did not exit after SIGKILL is waited for before it is forgotten.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(5);
/// Slack on top of `listen_timeout` before the slot itself declares a start failed (the probe
/// normally reports first).
pub(crate) const PROBE_GRACE: Duration = Duration::from_secs(1);

/// One worker process of a slot.
#[derive(Debug, Clone)]
pub(crate) struct Worker {
    /// Incremented on every spawn in this slot; tells successive workers apart.
    pub generation: u64,
    /// Process id, also its process group id.
    pub pid: u32,
    /// Port it listens on.
    pub port: u16,
    /// Revision of the spec it runs.
    pub rev: u64,
    /// The spec it runs.
    pub spec: Arc<AppSpec>,
    /// When it was spawned (monotonic, for uptimes and deadlines).
    pub started: Instant,
    /// When it was spawned (wall clock, for display).
    pub started_at: SystemTime,
    /// Where it is in its life.
    pub phase: Phase,
    /// Its latest resource sample.
    pub usage: Usage,
    /// Went over its app's `max_memory`: takes no new sessions, is being replaced.
    pub over_memory: bool,
    /// When `usage` was sampled.
    pub sampled_at: Option<Instant>,
}

/// The phase of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Spawned; the readiness probe runs until `ready_by`.
    Starting {
        /// Past this, the start has failed.
        ready_by: Instant,
    },
    /// Passed its probe; takes traffic.
    Ready,
    /// Leaving: still takes new sessions while its replacement starts.
    Serving,
    /// Leaving: keeps its sessions, takes no new ones, until idle or `until`.
    Draining {
        /// End of `drain_timeout`.
        until: Instant,
    },
    /// Leaving: the proxy closes its remaining connections spread over a window ending `until`.
    Releasing {
        /// End of the window; then SIGTERM.
        until: Instant,
    },
    /// SIGTERM sent; SIGKILL at `kill_at`, forgotten at `kill_at + KILL_GRACE`.
    Stopping {
        /// When SIGKILL is due.
        kill_at: Instant,
        /// SIGKILL already sent.
        killed: bool,
        /// What its exit means.
        why: StopWhy,
    },
}

/// Why a worker is being stopped, which decides what its exit means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopWhy {
    /// Stopped on purpose (operator stop, retirement, end of drain, forced restart).
    Halt,
    /// Never became ready: its exit is a failed start with this reason.
    NotReady(String),
}

/// A request to the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// SIGTERM to the process group (the kill deadline is tracked by the slot).
    Terminate {
        /// Process group.
        pid: u32,
    },
    /// SIGKILL to the process group.
    Kill {
        /// Process group.
        pid: u32,
    },
    /// Ask the proxy to close the worker's remaining connections spread over `window`.
    Release {
        /// The worker.
        generation: u64,
        /// Spread of the closes.
        window: Duration,
    },
    /// The worker became ready: start its liveness checks.
    Watch {
        /// The worker.
        generation: u64,
    },
    /// The worker is gone (exited or forgotten): cancel its probes, reap its process group.
    Forget {
        /// The worker.
        generation: u64,
        /// Its process group.
        pid: u32,
    },
}

/// Failed attempts to start a worker at one spec revision in a slot (a failed reload of this
/// slot, or a new slot that cannot start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tries {
    /// The revision tried.
    pub rev: u64,
    /// Failed attempts at it.
    pub failed: u32,
    /// Why the last one failed.
    pub reason: String,
    /// Generation of the last worker that failed (a request only counts failures after it
    /// was made).
    pub generation: u64,
}

/// One slot: its workers, its spec in force and its counters.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// Slot index within the app (`PORT` base + index, `RTSUP_INSTANCE`).
    pub index: u16,
    /// The spec in force: what its last ready worker ran (crash restarts use it).
    pub spec: Arc<AppSpec>,
    /// Revision of `spec`.
    pub rev: u64,
    /// The worker the slot serves with.
    pub current: Option<Worker>,
    /// Replaced or retired workers, until they have exited.
    pub leaving: Vec<Worker>,
    /// Crashed: the next worker may start at this instant.
    pub backoff_until: Option<Instant>,
    /// Crashed more than `max_restarts` times in a row; left down until revived.
    pub errored: bool,
    /// Restarts so far (crash, memory, liveness and operator), as `pm2 list` counts them.
    pub restarts: u32,
    /// Crashes in a row without a stable run in between.
    pub crashes: u32,
    /// How the last worker ended, or why it was replaced.
    pub last_exit: Option<String>,
    /// Failed attempts at a newer revision (a failed reload of this slot).
    pub tries: Option<Tries>,
    /// A replacement asked for by a health check (memory, liveness), with its reason.
    pub replace: Option<String>,
    /// Generation of the last worker spawned here.
    pub generation: u64,
    /// Port of the last worker spawned here (shown while the slot has no worker).
    pub port: u16,
}

impl Slot {
    /// A slot with no worker yet that will run `spec` at `rev`.
    pub(crate) fn new(index: u16, spec: Arc<AppSpec>, rev: u64) -> Self {
        let port = spec.slot_port(index);
        Self {
            index,
            spec,
            rev,
            current: None,
            leaving: Vec::new(),
            backoff_until: None,
            errored: false,
            restarts: 0,
            crashes: 0,
            last_exit: None,
            tries: None,
            replace: None,
            generation: 0,
            port,
        }
    }

    /// No process at all: nothing current, nothing leaving.
    pub(crate) fn is_down(&self) -> bool {
        self.current.is_none() && self.leaving.is_empty()
    }

    /// A replacement is under way: the new worker starts while the old one still serves.
    pub(crate) fn is_replacing(&self) -> bool {
        self.leaving.iter().any(|w| w.phase == Phase::Serving)
    }

    /// The current worker is ready.
    pub(crate) fn is_ready(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|w| w.phase == Phase::Ready)
    }

    /// Every port a worker of this slot holds (until it has exited).
    pub(crate) fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.current.iter().chain(&self.leaving).map(|w| w.port)
    }

    /// Every worker of the slot, current first.
    pub(crate) fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.current.iter().chain(&self.leaving)
    }

    /// The next generation number to spawn.
    pub(crate) fn next_generation(&self) -> u64 {
        self.generation + 1
    }

    /// A worker was spawned for this slot. If a ready worker holds the slot, it keeps serving
    /// beside the new one until that one is ready (a replacement); a stopping one is left to
    /// finish. Counts a restart unless this is the slot's first worker.
    pub(crate) fn launched(&mut self, worker: Worker) {
        let why = self
            .replace
            .take()
            .or_else(|| (worker.rev > self.rev).then(|| format!("new revision {}", worker.rev)));
        if let Some(mut old) = self.current.take() {
            if old.phase == Phase::Ready {
                old.phase = Phase::Serving;
                if let Some(why) = why {
                    self.last_exit = Some(format!("replaced: {why}"));
                }
            }
            self.leaving.push(old);
        }
        if self.generation > 0 {
            self.restarts += 1;
        }
        self.generation = worker.generation;
        self.port = worker.port;
        self.backoff_until = None;
        self.current = Some(worker);
    }

    /// Spawning a worker at `rev` failed before it had a pid. Counts as a restart like any
    /// other attempt after the first.
    pub(crate) fn spawn_failed(&mut self, rev: u64, error: String, now: Instant) {
        if self.generation > 0 {
            self.restarts += 1;
        }
        self.generation += 1;
        self.start_failed(rev, error, now);
    }

    /// The current worker `generation` passed its readiness probe.
    pub(crate) fn ready(&mut self, generation: u64, now: Instant) -> Vec<Effect> {
        let Some(w) = self.current.as_mut().filter(|w| w.generation == generation) else {
            return vec![];
        };
        if !matches!(w.phase, Phase::Starting { .. }) {
            return vec![];
        }
        w.phase = Phase::Ready;
        if w.rev != self.rev || !Arc::ptr_eq(&w.spec, &self.spec) {
            self.spec = w.spec.clone();
            self.rev = w.rev;
        }
        if self.tries.as_ref().is_some_and(|t| t.rev <= w.rev) {
            self.tries = None;
        }
        let drain = w.spec.drain_timeout;
        for old in &mut self.leaving {
            if old.phase == Phase::Serving {
                old.phase = Phase::Draining { until: now + drain };
            }
        }
        vec![Effect::Watch { generation }]
    }

    /// The readiness probe of worker `generation` gave up.
    pub(crate) fn not_ready(
        &mut self,
        generation: u64,
        reason: String,
        now: Instant,
    ) -> Vec<Effect> {
        let Some(w) = self.current.as_mut().filter(|w| w.generation == generation) else {
            return vec![];
        };
        if !matches!(w.phase, Phase::Starting { .. }) {
            return vec![];
        }
        w.phase = Phase::Stopping {
            kill_at: now + w.spec.kill_timeout,
            killed: false,
            why: StopWhy::NotReady(reason),
        };
        vec![Effect::Terminate { pid: w.pid }]
    }

    /// Worker `generation` exited with `status`.
    pub(crate) fn exited(&mut self, generation: u64, status: &str, now: Instant) -> Vec<Effect> {
        if let Some(i) = self.leaving.iter().position(|w| w.generation == generation) {
            let w = self.leaving.remove(i);
            if !matches!(w.phase, Phase::Stopping { .. }) {
                self.last_exit = Some(format!("previous worker exited early: {status}"));
            }
            return vec![Effect::Forget {
                generation,
                pid: w.pid,
            }];
        }
        let Some(w) = self.current.take_if(|w| w.generation == generation) else {
            return vec![];
        };
        let forget = Effect::Forget {
            generation,
            pid: w.pid,
        };
        match &w.phase {
            Phase::Starting { .. } => self.start_failed(w.rev, status.to_string(), now),
            Phase::Stopping {
                why: StopWhy::NotReady(reason),
                ..
            } => self.start_failed(w.rev, format!("{reason} ({status})"), now),
            Phase::Stopping {
                why: StopWhy::Halt, ..
            } => self.last_exit = Some(format!("stopped ({status})")),
            _ => {
                let uptime = now.saturating_duration_since(w.started);
                self.crashed(status.to_string(), uptime, now);
            }
        }
        vec![forget]
    }

    /// The new worker never became ready: give the slot back to the worker it was replacing,
    /// or count a crash when there is none.
    fn start_failed(&mut self, rev: u64, reason: String, now: Instant) {
        let failed = match &self.tries {
            Some(t) if t.rev == rev => t.failed + 1,
            _ => 1,
        };
        self.tries = Some(Tries {
            rev,
            failed,
            reason: reason.clone(),
            generation: self.generation,
        });
        let kept = format!("replacement failed: {reason}; kept the previous worker");
        if self.is_ready() {
            // Spawning the replacement failed: the ready worker never stopped serving.
            self.last_exit = Some(kept);
            return;
        }
        if let Some(i) = self.leaving.iter().position(|w| w.phase == Phase::Serving) {
            let mut old = self.leaving.remove(i);
            old.phase = Phase::Ready;
            self.last_exit = Some(kept);
            self.current = Some(old);
            return;
        }
        self.crashed(reason, Duration::ZERO, now);
    }

    /// The current worker ended on its own after `uptime`: back off or give up.
    fn crashed(&mut self, status: String, uptime: Duration, now: Instant) {
        self.last_exit = Some(status);
        let policy = self.spec.restart;
        self.crashes = if uptime >= policy.min_uptime {
            1
        } else {
            self.crashes.saturating_add(1)
        };
        if policy.gives_up(self.crashes) {
            self.errored = true;
            self.backoff_until = None;
        } else {
            self.backoff_until = Some(now + policy.delay(self.crashes));
        }
    }

    /// Stop every worker of the slot at once (operator stop, daemon stop). Backoff and errored
    /// states are cleared.
    pub(crate) fn stop(&mut self, now: Instant) -> Vec<Effect> {
        self.backoff_until = None;
        self.errored = false;
        let mut effects = Vec::new();
        for w in self.current.iter_mut().chain(self.leaving.iter_mut()) {
            if let Phase::Stopping { why, .. } = &mut w.phase {
                // Already signalled: its exit now means "stopped", not a failed start.
                *why = StopWhy::Halt;
            }
            effects.extend(begin_stop(w, now, StopWhy::Halt));
        }
        effects
    }

    /// Stop the current worker at once and let the reconciler start a new one beside it
    /// (forced restart, memory ceiling).
    pub(crate) fn abandon_current(&mut self, why: String, now: Instant) -> Vec<Effect> {
        let Some(mut w) = self.current.take() else {
            return vec![];
        };
        self.last_exit = Some(format!("restarted: {why}"));
        let effects = begin_stop(&mut w, now, StopWhy::Halt);
        self.leaving.push(w);
        effects
    }

    /// Take the slot out of service without dropping sessions: the current worker drains
    /// (or stops, if it never became ready); no new one is wanted.
    pub(crate) fn retire(&mut self, now: Instant) -> Vec<Effect> {
        self.backoff_until = None;
        self.errored = false;
        let mut effects = Vec::new();
        if let Some(mut w) = self.current.take() {
            match w.phase {
                Phase::Ready => {
                    w.phase = Phase::Draining {
                        until: now + w.spec.drain_timeout,
                    }
                }
                Phase::Stopping { .. } => {}
                _ => effects.extend(begin_stop(&mut w, now, StopWhy::Halt)),
            }
            self.leaving.push(w);
        }
        for w in &mut self.leaving {
            if w.phase == Phase::Serving {
                w.phase = Phase::Draining {
                    until: now + w.spec.drain_timeout,
                };
            }
        }
        effects
    }

    /// A fresh chance asked by the operator (start, restart, reload): an errored slot comes
    /// back, the crash count and any backoff are cleared.
    pub(crate) fn revive(&mut self) {
        self.errored = false;
        self.crashes = 0;
        self.backoff_until = None;
    }

    /// A leaving draining worker has no sessions left: stop it now.
    pub(crate) fn drained(&mut self, generation: u64, now: Instant) -> Vec<Effect> {
        match self.leaving.iter_mut().find(|w| w.generation == generation) {
            Some(w) if matches!(w.phase, Phase::Draining { .. }) => {
                begin_stop(w, now, StopWhy::Halt)
            }
            _ => vec![],
        }
    }

    /// The drain deadline of a worker passed with sessions still open: release them spread
    /// over `window` (zero: stop at once).
    fn drain_expired(w: &mut Worker, now: Instant, window: Duration) -> Vec<Effect> {
        if window.is_zero() {
            return begin_stop(w, now, StopWhy::Halt);
        }
        w.phase = Phase::Releasing {
            until: now + window,
        };
        vec![Effect::Release {
            generation: w.generation,
            window,
        }]
    }

    /// Apply every deadline that has passed at `now`. `busy(generation)` tells whether a
    /// draining worker still holds sessions (then it is released over its app's close window
    /// rather than stopped at once).
    pub(crate) fn tick(&mut self, now: Instant, busy: impl Fn(u64) -> bool) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut not_ready = None;
        if let Some(w) = self.current.as_mut() {
            match &mut w.phase {
                Phase::Starting { ready_by } if now >= *ready_by => {
                    not_ready = Some((
                        w.generation,
                        format!(
                            "not ready within {}",
                            humantime::format_duration(w.spec.listen_timeout)
                        ),
                    ));
                }
                Phase::Stopping { .. } => effects.extend(stop_deadlines(w, now)),
                _ => {}
            }
        }
        if let Some((generation, reason)) = not_ready {
            effects.extend(self.not_ready(generation, reason, now));
        }
        let mut gone = Vec::new();
        for w in &mut self.leaving {
            match w.phase {
                Phase::Draining { until } if now >= until => {
                    let window = if busy(w.generation) {
                        w.spec.close_window
                    } else {
                        Duration::ZERO
                    };
                    effects.extend(Self::drain_expired(w, now, window));
                }
                Phase::Releasing { until } if now >= until => {
                    effects.extend(begin_stop(w, now, StopWhy::Halt));
                }
                Phase::Stopping { .. } => {
                    let more = stop_deadlines(w, now);
                    if more.is_empty() && past_grace(w, now) {
                        gone.push(w.generation);
                    }
                    effects.extend(more);
                }
                _ => {}
            }
        }
        if let Some(w) = &self.current
            && matches!(w.phase, Phase::Stopping { .. })
            && past_grace(w, now)
        {
            gone.push(w.generation);
        }
        for generation in gone {
            effects.extend(self.exited(generation, "did not exit after SIGKILL; given up on", now));
        }
        effects
    }

    /// The earliest instant at which [`Slot::tick`] has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.backoff_until;
        for w in self.workers() {
            let at = match w.phase {
                Phase::Starting { ready_by } => Some(ready_by),
                Phase::Draining { until } | Phase::Releasing { until } => Some(until),
                Phase::Stopping {
                    kill_at, killed, ..
                } => Some(if killed {
                    kill_at + KILL_GRACE
                } else {
                    kill_at
                }),
                Phase::Ready | Phase::Serving => None,
            };
            next = match (next, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        next
    }

    /// Record a resource sample of worker `generation`. Over its app's `max_memory`, a ready
    /// worker is marked (it takes no new sessions from then on) and its replacement is asked
    /// for; past the hard ceiling (`memory_ceiling`, default 1.5 × `max_memory`) any worker
    /// of the slot is stopped at once. Returns what happened, for the log, and the effects.
    ///
    /// `horizon` is the time to the next sample: a worker whose growth since the previous
    /// sample would take it past the ceiling before then is stopped now, so the ceiling holds
    /// as a peak, not only as a trigger.
    pub(crate) fn usage(
        &mut self,
        generation: u64,
        usage: Usage,
        now: Instant,
        horizons: Horizons,
    ) -> Option<(String, Vec<Effect>)> {
        let replacing = self.is_replacing();
        let is_current = self
            .current
            .as_ref()
            .is_some_and(|w| w.generation == generation);
        let w = self.workers_mut().find(|w| w.generation == generation)?;
        let (before, before_at) = (w.usage.rss_bytes, w.sampled_at.replace(now));
        w.usage = usage;
        let limit = w.spec.max_memory?;
        let ceiling = w.spec.memory_ceiling();
        let rss = usage.rss_bytes;
        if let Phase::Stopping { killed, .. } = &mut w.phase {
            // Still growing while it stops (it ignores SIGTERM, or takes its time): past the
            // ceiling it does not get the rest of its kill_timeout.
            if rss > ceiling && !*killed {
                *killed = true;
                let reason = format!(
                    "memory {} > ceiling {} while stopping",
                    megabytes(rss),
                    megabytes(ceiling)
                );
                return Some((reason, vec![Effect::Kill { pid: w.pid }]));
            }
            return None;
        }
        // The next sample comes sooner once the worker is over its limit.
        let horizon = if w.over_memory || rss > limit {
            horizons.hurry
        } else {
            horizons.normal
        };
        let next = match before_at {
            Some(at) if rss > before && now > at => {
                let rate = (rss - before) as f64 / (now - at).as_secs_f64();
                rss.saturating_add((rate * horizon.as_secs_f64()) as u64)
            }
            _ => rss,
        };
        if next > ceiling {
            let reason = if rss > ceiling {
                format!("memory {} > ceiling {}", megabytes(rss), megabytes(ceiling))
            } else {
                format!(
                    "memory {} would pass ceiling {} before the next sample",
                    megabytes(rss),
                    megabytes(ceiling)
                )
            };
            if is_current {
                return Some((reason.clone(), self.abandon_current(reason, now)));
            }
            let effects = begin_stop(w, now, StopWhy::Halt);
            self.last_exit = Some(format!("stopped: {reason}"));
            return Some((reason, effects));
        }
        if usage.rss_bytes <= limit || w.over_memory {
            return None;
        }
        w.over_memory = true;
        let reason = format!(
            "memory {} > max_memory {}",
            megabytes(usage.rss_bytes),
            megabytes(limit)
        );
        if is_current && w.phase == Phase::Ready && self.replace.is_none() && !replacing {
            self.replace = Some(reason.clone());
        }
        Some((reason, vec![]))
    }

    fn workers_mut(&mut self) -> impl Iterator<Item = &mut Worker> {
        self.current.iter_mut().chain(self.leaving.iter_mut())
    }
}

/// How far ahead the memory check looks: the time to the next sample while a worker is over
/// its limit (`hurry`) or not (`normal`), with margin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Horizons {
    /// Over the limit: samples come fast.
    pub hurry: Duration,
    /// Under the limit: the regular sampling period.
    pub normal: Duration,
}

/// SIGTERM a worker unless it is already stopping.
fn begin_stop(w: &mut Worker, now: Instant, why: StopWhy) -> Vec<Effect> {
    if matches!(w.phase, Phase::Stopping { .. }) {
        return vec![];
    }
    w.phase = Phase::Stopping {
        kill_at: now + w.spec.kill_timeout,
        killed: false,
        why,
    };
    vec![Effect::Terminate { pid: w.pid }]
}

/// SIGKILL a stopping worker whose `kill_timeout` has passed.
fn stop_deadlines(w: &mut Worker, now: Instant) -> Vec<Effect> {
    match &mut w.phase {
        Phase::Stopping {
            kill_at, killed, ..
        } if !*killed && now >= *kill_at => {
            *killed = true;
            vec![Effect::Kill { pid: w.pid }]
        }
        _ => vec![],
    }
}

/// A killed worker that still has not exited after [`KILL_GRACE`].
fn past_grace(w: &Worker, now: Instant) -> bool {
    matches!(w.phase, Phase::Stopping { kill_at, killed: true, .. } if now >= kill_at + KILL_GRACE)
}

/// `123.4MB`-style text for reasons.
pub(crate) fn megabytes(n: u64) -> String {
    format!("{:.1}MB", n as f64 / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::arc;

    const SEC: Duration = Duration::from_secs(1);
    const HORIZON: Duration = Duration::from_millis(100);
    const HORIZONS: Horizons = Horizons {
        hurry: HORIZON,
        normal: Duration::from_secs(1),
    };

    fn worker(generation: u64, rev: u64, spec: &Arc<AppSpec>, now: Instant) -> Worker {
        Worker {
            generation,
            pid: 100 + generation as u32,
            port: 5000 + generation as u16,
            rev,
            spec: spec.clone(),
            started: now,
            started_at: SystemTime::UNIX_EPOCH,
            phase: Phase::Starting {
                ready_by: now + spec.listen_timeout + PROBE_GRACE,
            },
            usage: Usage::default(),
            over_memory: false,
            sampled_at: None,
        }
    }

    /// A slot whose first worker (generation 1, rev 1) is ready at `t0`.
    fn ready_slot(t0: Instant) -> Slot {
        let spec = arc("a", 1, 5000);
        let mut s = Slot::new(0, spec.clone(), 1);
        s.launched(worker(1, 1, &spec, t0));
        assert_eq!(s.ready(1, t0), vec![Effect::Watch { generation: 1 }]);
        s
    }

    fn phase_of(s: &Slot, generation: u64) -> Option<Phase> {
        s.workers()
            .find(|w| w.generation == generation)
            .map(|w| w.phase.clone())
    }

    #[test]
    fn first_worker_is_not_a_restart() {
        let s = ready_slot(Instant::now());
        assert_eq!(s.restarts, 0);
        assert!(s.is_ready());
    }

    #[test]
    fn crashes_back_off_growing_then_errored_and_revive_resets() {
        let t0 = Instant::now();
        let mut s = ready_slot(t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for g in 1..=4u64 {
            now += Duration::from_millis(10);
            s.exited(g, "exit code 1", now);
            match s.backoff_until {
                Some(until) => {
                    delays.push(until - now);
                    now = until;
                    s.launched(worker(g + 1, 1, &s.spec.clone(), now));
                }
                None => break,
            }
        }
        assert_eq!(
            delays,
            vec![
                Duration::from_millis(100),
                Duration::from_millis(150),
                Duration::from_millis(225)
            ]
        );
        assert!(s.errored);
        assert_eq!(s.restarts, 3);
        assert_eq!(s.last_exit.as_deref(), Some("exit code 1"));
        s.revive();
        assert!(!s.errored && s.crashes == 0);
    }

    #[test]
    fn a_stable_run_resets_the_crash_count() {
        let t0 = Instant::now();
        let mut s = ready_slot(t0);
        s.crashes = 3;
        s.exited(1, "exit code 1", t0 + 2 * SEC);
        assert_eq!(s.crashes, 1);
        assert_eq!(
            s.backoff_until,
            Some(t0 + 2 * SEC + Duration::from_millis(100))
        );
    }

    #[test]
    fn replacement_drains_the_old_worker_then_stops_it() {
        let t0 = Instant::now();
        let mut s = ready_slot(t0);
        let new_spec = arc("a", 1, 5000);
        s.launched(worker(2, 2, &new_spec, t0));
        assert!(s.is_replacing());
        assert_eq!(phase_of(&s, 1), Some(Phase::Serving));
        s.ready(2, t0);
        assert_eq!(s.rev, 2, "the new spec is in force once ready");
        assert!(Arc::ptr_eq(&s.spec, &new_spec));
        assert_eq!(
            phase_of(&s, 1),
            Some(Phase::Draining {
                until: t0 + 2 * SEC
            })
        );
        assert_eq!(s.restarts, 1);
        // Still busy at the deadline: released over the close window, then stopped.
        let effects = s.tick(t0 + 2 * SEC, |_| true);
        assert_eq!(
            effects,
            vec![Effect::Release {
                generation: 1,
                window: SEC
            }]
        );
        assert_eq!(
            s.tick(t0 + 3 * SEC, |_| true),
            vec![Effect::Terminate { pid: 101 }]
        );
        // kill_timeout (1 s) later: SIGKILL; it exits.
        assert_eq!(
            s.tick(t0 + 4 * SEC, |_| true),
            vec![Effect::Kill { pid: 101 }]
        );
        assert_eq!(
            s.exited(1, "signal 9 (SIGKILL)", t0 + 4 * SEC),
            vec![Effect::Forget {
                generation: 1,
                pid: 101
            }]
        );
        assert!(s.leaving.is_empty());
        assert_eq!(s.crashes, 0);
    }

    #[test]
    fn an_idle_draining_worker_stops_at_once() {
        let t0 = Instant::now();
        let mut s = ready_slot(t0);
        s.launched(worker(2, 2, &s.spec.clone(), t0));
        s.ready(2, t0);
        assert_eq!(s.drained(1, t0), vec![Effect::Terminate { pid: 101 }]);
        // Drain deadline with no sessions: straight to stopping, no release window.
        let mut s = ready_slot(t0);
        s.launched(worker(2, 2, &s.spec.clone(), t0));
        s.ready(2, t0);
        assert_eq!(
            s.tick(t0 + 2 * SEC, |_| false),
            vec![Effect::Terminate { pid: 101 }]
        );
    }

    #[test]
    fn a_failed_replacement_rolls_back_and_records_the_try() {
        let t0 = Instant::now();
        for how in ["exit", "not ready", "deadline", "spawn"] {
            let mut s = ready_slot(t0);
            let spec = s.spec.clone();
            if how == "spawn" {
                s.spawn_failed(2, "spawn nodee: No such file or directory".into(), t0);
            } else {
                s.launched(worker(2, 2, &spec, t0));
                match how {
                    "exit" => {
                        s.exited(2, "exit code 1; stderr: boom", t0);
                    }
                    "not ready" => {
                        assert_eq!(
                            s.not_ready(2, "not ready within 1s".into(), t0),
                            vec![Effect::Terminate { pid: 102 }]
                        );
                        s.exited(2, "signal 15 (SIGTERM)", t0);
                    }
                    _ => {
                        // The probe never answered: the slot's own deadline ends the start.
                        let eff = s.tick(t0 + 2 * SEC + PROBE_GRACE, |_| false);
                        assert_eq!(eff, vec![Effect::Terminate { pid: 102 }]);
                        s.exited(2, "signal 15 (SIGTERM)", t0 + 3 * SEC);
                    }
                }
            }
            assert_eq!(s.current.as_ref().map(|w| w.generation), Some(1), "{how}");
            assert!(s.is_ready(), "{how}");
            assert_eq!(s.rev, 1, "{how}: the old spec stays in force");
            let tries = s.tries.clone().expect("a try recorded");
            assert_eq!(
                (tries.rev, tries.failed, tries.generation),
                (2, 1, 2),
                "{how}"
            );
            assert_eq!(s.crashes, 0, "{how}: a failed replacement is not a crash");
        }
    }

    #[test]
    fn the_old_worker_dying_while_its_replacement_starts_leaves_the_new_one() {
        let t0 = Instant::now();
        let mut s = ready_slot(t0);
        s.launched(worker(2, 2, &s.spec.clone(), t0));
        s.exited(1, "signal 9 (SIGKILL)", t0);
        assert!(s.leaving.is_empty());
        assert!(
            s.last_exit
                .as_deref()
                .is_some_and(|e| e.contains("SIGKILL"))
        );
        s.ready(2, t0);
        assert!(s.is_ready());
        // And if the new one then fails too, it is a plain crash with backoff.
        let mut s = ready_slot(t0);
        s.launched(worker(2, 2, &s.spec.clone(), t0));
        s.exited(1, "signal 9 (SIGKILL)", t0);
        s.exited(2, "exit code 1", t0);
        assert!(s.current.is_none() && s.backoff_until.is_some());
        assert_eq!(s.tries.as_ref().map(|t| t.failed), Some(1));
    }

    #[test]
    fn stop_terminates_everything_and_a_stopped_exit_is_not_a_crash() {
        let t0 = Instant::now();
        let mut s = ready_slot(t0);
        s.launched(worker(2, 2, &s.spec.clone(), t0));
        let eff = s.stop(t0);
        assert_eq!(
            eff,
            vec![
                Effect::Terminate { pid: 102 },
                Effect::Terminate { pid: 101 }
            ]
        );
        assert_eq!(s.stop(t0), vec![], "already stopping");
        s.exited(2, "exit code 0", t0);
        s.exited(1, "exit code 0", t0);
        assert!(s.is_down());
        assert_eq!(s.crashes, 0);
        assert!(s.backoff_until.is_none());
        assert_eq!(s.last_exit.as_deref(), Some("stopped (exit code 0)"));
    }

    #[test]
    fn a_worker_that_ignores_sigkill_is_given_up_on() {
        let t0 = Instant::now();
        let mut s = ready_slot(t0);
        s.stop(t0);
        assert_eq!(s.next_deadline(), Some(t0 + SEC));
        assert_eq!(s.tick(t0 + SEC, |_| false), vec![Effect::Kill { pid: 101 }]);
        assert_eq!(s.next_deadline(), Some(t0 + SEC + KILL_GRACE));
        let eff = s.tick(t0 + SEC + KILL_GRACE, |_| false);
        assert_eq!(
            eff,
            vec![Effect::Forget {
                generation: 1,
                pid: 101
            }]
        );
        assert!(s.is_down());
    }

    #[test]
    fn retire_drains_a_ready_worker_and_stops_a_starting_one() {
        let t0 = Instant::now();
        let mut s = ready_slot(t0);
        assert_eq!(s.retire(t0), vec![]);
        assert!(s.current.is_none());
        assert_eq!(
            phase_of(&s, 1),
            Some(Phase::Draining {
                until: t0 + 2 * SEC
            })
        );
        let spec = arc("a", 1, 5000);
        let mut s = Slot::new(0, spec.clone(), 1);
        s.launched(worker(1, 1, &spec, t0));
        assert_eq!(s.retire(t0), vec![Effect::Terminate { pid: 101 }]);
    }

    #[test]
    fn abandon_stops_the_current_worker_and_frees_the_slot() {
        let t0 = Instant::now();
        let mut s = ready_slot(t0);
        assert_eq!(
            s.abandon_current("operator restart (forced)".into(), t0),
            vec![Effect::Terminate { pid: 101 }]
        );
        assert!(s.current.is_none() && s.backoff_until.is_none());
        assert_eq!(
            s.ports().collect::<Vec<_>>(),
            vec![5001],
            "its port is held until exit"
        );
    }

    #[test]
    fn memory_over_the_limit_asks_for_one_replacement_and_the_ceiling_stops_it() {
        let t0 = Instant::now();
        let mut spec = crate::testing::spec("a", 1, 5000);
        spec.max_memory = Some(300_000_000);
        let spec = Arc::new(spec);
        let mut s = Slot::new(0, spec.clone(), 1);
        s.launched(worker(1, 1, &spec, t0));
        let mb = |n: u64| Usage {
            rss_bytes: n * 1_000_000,
            cpu_percent: 0.0,
        };
        s.ready(1, t0);
        let (reason, effects) = s.usage(1, mb(312), t0, HORIZONS).expect("over the limit");
        assert_eq!(reason, "memory 312.0MB > max_memory 300.0MB");
        assert_eq!(effects, vec![]);
        assert!(s.current.as_ref().is_some_and(|w| w.over_memory));
        assert_eq!(s.replace.as_deref(), Some(reason.as_str()));
        assert_eq!(s.usage(1, mb(350), t0, HORIZONS), None, "asked once");
        // Its replacement starts; the old one keeps growing while it serves: past 1.5× it is
        // stopped at once.
        s.launched(worker(2, 1, &spec, t0));
        assert!(s.replace.is_none());
        let (reason, effects) = s.usage(1, mb(451), t0, HORIZONS).expect("past the ceiling");
        assert_eq!(reason, "memory 451.0MB > ceiling 450.0MB");
        assert_eq!(effects, vec![Effect::Terminate { pid: 101 }]);
        // Still growing while it stops (it ignores SIGTERM): SIGKILL at once, once.
        let (reason, effects) = s.usage(1, mb(500), t0, HORIZONS).expect("killed");
        assert_eq!(reason, "memory 500.0MB > ceiling 450.0MB while stopping");
        assert_eq!(effects, vec![Effect::Kill { pid: 101 }]);
        assert_eq!(s.usage(1, mb(600), t0, HORIZONS), None, "already killed");
        // A fast leak still under the limit would pass the ceiling before the next regular
        // sample (1 s away): stopped now.
        let mut s = Slot::new(0, spec.clone(), 1);
        s.launched(worker(1, 1, &spec, t0));
        s.ready(1, t0);
        s.usage(1, mb(100), t0, HORIZONS);
        let (reason, _) = s
            .usage(1, mb(290), t0 + SEC, HORIZONS)
            .expect("190 MB/s from 290 MB passes 450 MB within a second");
        assert!(reason.contains("would pass ceiling 450.0MB"), "{reason}");
        // Growing 10 MB per 100 ms at 441 MB: the next sample would be past 450 MB, so it is
        // stopped now.
        let mut s = Slot::new(0, spec.clone(), 1);
        s.launched(worker(1, 1, &spec, t0));
        s.ready(1, t0);
        s.usage(1, mb(431), t0, HORIZONS);
        let (reason, effects) = s
            .usage(1, mb(441), t0 + HORIZON, HORIZONS)
            .expect("predicted past the ceiling");
        assert_eq!(
            reason,
            "memory 441.0MB would pass ceiling 450.0MB before the next sample"
        );
        assert_eq!(effects, vec![Effect::Terminate { pid: 101 }]);
        // A current worker past the ceiling leaves the slot at once.
        let mut s = Slot::new(0, spec.clone(), 1);
        s.launched(worker(1, 1, &spec, t0));
        s.ready(1, t0);
        let (_, effects) = s.usage(1, mb(600), t0, HORIZONS).expect("past the ceiling");
        assert_eq!(effects, vec![Effect::Terminate { pid: 101 }]);
        assert!(s.current.is_none());
    }

    #[test]
    fn stale_events_change_nothing() {
        let t0 = Instant::now();
        let mut s = ready_slot(t0);
        assert_eq!(s.ready(7, t0), vec![]);
        assert_eq!(s.exited(7, "exit code 1", t0), vec![]);
        assert_eq!(s.not_ready(1, "late".into(), t0), vec![], "already ready");
        assert!(s.is_ready());
    }
}
