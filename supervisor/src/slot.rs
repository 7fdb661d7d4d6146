//! The state machine of one slot: a pure function from events to actions.
//!
//! A slot is the stable position `i` of an app; over time it holds a sequence of workers, one
//! per *generation*. `Slot::on(event, now)` changes state and returns what the actor must do
//! (spawn, signal, arm a timer). No I/O and no clock reads happen here, so every transition is
//! unit-tested with chosen instants.
//!
//! ```text
//! Stopped|Errored --Start--> (Spawn) --Spawned--> Starting --Ready--> Running
//! Starting --NotReady--> Stopping(crash)      Running|Starting --Exited--> crash
//! crash: uptime >= min_uptime resets the count; count > max_restarts => Errored,
//!        else Backoff(until = now + delay(count)) --Wake--> (Spawn)
//! Running|Starting --Restart--> Stopping(respawn) --Exited--> (Spawn)
//! any --Stop--> Stopping(halt) --Exited--> Stopped
//!
//! zero-downtime replacement (reload, restart, memory limit), the old worker kept as `outgoing`:
//! Running(old) --Replace--> (Spawn) Starting(new) + outgoing Serving
//!   --Ready--> Running(new) + outgoing Draining (Drain) --OutgoingDrained--> outgoing Stopping
//!   (Terminate old) --OutgoingExited--> no outgoing
//! new worker fails before Ready (spawn error, exit, not ready) --> Running(old) (RolledBack)
//! ```

use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::RestartPolicy;

/// Where a slot is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// No worker, none wanted (initial state, or after a stop).
    Stopped,
    /// Worker spawned, readiness probe running.
    Starting {
        /// Process id of the worker (also its process group id).
        pid: u32,
        /// When it was spawned.
        started: Instant,
    },
    /// Worker passed its readiness probe and takes traffic.
    Running {
        /// Process id of the worker.
        pid: u32,
        /// When it was spawned.
        started: Instant,
    },
    /// SIGTERM sent to the worker's group; waiting for it to exit.
    Stopping {
        /// Process id of the worker.
        pid: u32,
        /// When it was spawned.
        started: Instant,
        /// What to do once it has exited.
        then: AfterExit,
    },
    /// Crashed; waiting for the restart delay to pass.
    Backoff {
        /// When the replacement is spawned.
        until: Instant,
    },
    /// Crashed more than `max_restarts` times in a row; left down until restarted by hand.
    Errored,
}

/// The previous worker of a slot while its replacement takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its process id.
    pub pid: u32,
    /// When it was spawned.
    pub started: Instant,
    /// Where it is in its retirement.
    pub phase: OutgoingPhase,
}

/// Retirement of an outgoing worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingPhase {
    /// Still takes new sessions: its replacement is not ready yet.
    Serving,
    /// Keeps its sessions, takes no new ones, until idle or `drain_timeout`.
    Draining,
    /// SIGTERM sent; waiting for it to exit.
    Stopping,
}

/// What a stopping slot does once its worker has exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterExit {
    /// Spawn a replacement at once (manual or memory restart).
    Respawn,
    /// Treat the exit as a crash with this reason (e.g. readiness timeout).
    Crash(String),
    /// Stay stopped.
    Halt,
    /// A replacement failed (it was not ready): give the slot back to the outgoing worker.
    RollBack(String),
}

/// Something that happened to a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotEvent {
    /// Operator wants the slot running (from `Stopped` or `Errored`).
    Start,
    /// The actor spawned the worker the last `Spawn` asked for.
    Spawned {
        /// Its process id.
        pid: u32,
    },
    /// Spawning failed (command not found, bad cwd…).
    SpawnFailed {
        /// The OS error, for `last_exit`.
        error: String,
    },
    /// The readiness probe succeeded.
    Ready,
    /// The readiness probe did not succeed within `listen_timeout`.
    NotReady {
        /// Why, for `last_exit`.
        reason: String,
    },
    /// The worker process exited.
    Exited {
        /// Exit status as text (`exit code 1`, `signal 9 (SIGKILL)`).
        status: String,
    },
    /// Replace the worker (operator restart, memory limit).
    Restart {
        /// Why, for logs and `last_exit`.
        reason: String,
    },
    /// Stop the slot and keep it stopped.
    Stop,
    /// A timer armed by `Action::WakeAt` fired.
    Wake,
    /// Replace the worker without downtime: start a new one beside it, then drain the old.
    Replace {
        /// Why, for logs and `last_exit`.
        reason: String,
    },
    /// The outgoing worker has no sessions left, or its `drain_timeout` passed.
    OutgoingDrained,
    /// The outgoing worker exited.
    OutgoingExited {
        /// Exit status as text.
        status: String,
    },
}

/// What the actor must do after a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Spawn a new worker (next generation) and report `Spawned`/`SpawnFailed`.
    Spawn,
    /// Start the readiness probe of the current worker.
    Probe,
    /// SIGTERM the worker's process group, SIGKILL after `kill_timeout`.
    Terminate {
        /// Process group to signal.
        pid: u32,
    },
    /// Deliver `Wake` to this slot at this instant.
    WakeAt(Instant),
    /// The replacement is ready: the outgoing worker `pid` now drains; report
    /// `OutgoingDrained` when it is idle or its `drain_timeout` passed.
    Drain {
        /// The outgoing worker.
        pid: u32,
    },
    /// The replacement failed; the outgoing worker is the slot's worker again.
    RolledBack {
        /// The worker kept.
        pid: u32,
    },
}

/// One slot's state, counters and policy.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Current state.
    pub state: SlotState,
    /// Restarts so far (crash, memory and manual), as `pm2 list` counts them.
    pub restarts: u32,
    /// Crashes in a row without a stable run in between.
    pub crashes: u32,
    /// How the last worker ended, or why it was replaced.
    pub last_exit: Option<String>,
    /// The previous worker, while a replacement takes over.
    pub outgoing: Option<Outgoing>,
    policy: RestartPolicy,
    /// Whether the next `Spawned` is a restart (counts in `restarts`).
    respawning: bool,
}

impl Slot {
    /// A stopped slot with this restart policy.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            state: SlotState::Stopped,
            restarts: 0,
            crashes: 0,
            last_exit: None,
            outgoing: None,
            policy,
            respawning: false,
        }
    }

    /// Process id of the live worker, if any.
    pub fn pid(&self) -> Option<u32> {
        match self.state {
            SlotState::Starting { pid, .. }
            | SlotState::Running { pid, .. }
            | SlotState::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// When the live worker was spawned, if any.
    pub fn started(&self) -> Option<Instant> {
        match self.state {
            SlotState::Starting { started, .. }
            | SlotState::Running { started, .. }
            | SlotState::Stopping { started, .. } => Some(started),
            _ => None,
        }
    }

    /// Whether the slot is at rest with no process: stopped or errored, nothing outgoing.
    pub fn is_down(&self) -> bool {
        matches!(self.state, SlotState::Stopped | SlotState::Errored) && self.outgoing.is_none()
    }

    /// Whether a replacement is under way and its new worker is not ready yet.
    pub fn is_replacing(&self) -> bool {
        self.outgoing
            .as_ref()
            .is_some_and(|o| o.phase == OutgoingPhase::Serving)
    }

    /// Apply `event` at `now`; return what the actor must do.
    pub fn on(&mut self, event: SlotEvent, now: Instant) -> Vec<Action> {
        match self.on_replacement(event, now) {
            Ok(actions) => actions,
            Err(event) => self.on_primary(event, now),
        }
    }

    /// Events of a replacement and of the outgoing worker; gives back every other event.
    fn on_replacement(&mut self, event: SlotEvent, now: Instant) -> Result<Vec<Action>, SlotEvent> {
        use SlotState as S;
        let replacing = self.is_replacing();
        match (self.state.clone(), event) {
            (S::Running { pid, started }, SlotEvent::Replace { reason })
                if self.outgoing.is_none() =>
            {
                self.last_exit = Some(format!("replaced: {reason}"));
                self.outgoing = Some(Outgoing {
                    pid,
                    started,
                    phase: OutgoingPhase::Serving,
                });
                self.respawning = true;
                Ok(vec![Action::Spawn])
            }
            // Already replacing, or stopping: a second request changes nothing.
            (_, SlotEvent::Replace { .. }) if self.outgoing.is_some() => Ok(vec![]),
            (S::Stopping { .. }, SlotEvent::Replace { .. }) => Ok(vec![]),
            // Not running: nothing to keep serving, so a plain restart.
            (_, SlotEvent::Replace { reason }) => Err(SlotEvent::Restart { reason }),
            (S::Starting { pid, started }, SlotEvent::Ready) if replacing => {
                self.state = S::Running { pid, started };
                let old = self.outgoing.as_mut().map(|o| {
                    o.phase = OutgoingPhase::Draining;
                    o.pid
                });
                Ok(old
                    .map(|pid| vec![Action::Drain { pid }])
                    .unwrap_or_default())
            }
            (S::Starting { pid, started }, SlotEvent::NotReady { reason }) if replacing => {
                self.state = S::Stopping {
                    pid,
                    started,
                    then: AfterExit::RollBack(reason),
                };
                Ok(vec![Action::Terminate { pid }])
            }
            (S::Starting { .. }, SlotEvent::Exited { status }) if replacing => {
                Ok(self.roll_back(status))
            }
            (_, SlotEvent::SpawnFailed { error }) if replacing => Ok(self.roll_back(error)),
            (
                S::Stopping {
                    then: AfterExit::RollBack(reason),
                    ..
                },
                SlotEvent::Exited { status },
            ) => Ok(self.roll_back(format!("{reason} ({status})"))),
            (_, SlotEvent::OutgoingDrained) => match self.outgoing.as_mut() {
                Some(o) if o.phase == OutgoingPhase::Draining => {
                    o.phase = OutgoingPhase::Stopping;
                    Ok(vec![Action::Terminate { pid: o.pid }])
                }
                _ => Ok(vec![]),
            },
            (_, SlotEvent::OutgoingExited { .. }) => {
                self.outgoing = None;
                Ok(vec![])
            }
            (_, SlotEvent::Stop) if self.outgoing.is_some() => {
                let mut actions = Vec::new();
                if let Some(o) = self.outgoing.as_mut()
                    && o.phase != OutgoingPhase::Stopping
                {
                    o.phase = OutgoingPhase::Stopping;
                    actions.push(Action::Terminate { pid: o.pid });
                }
                actions.extend(self.on_primary(SlotEvent::Stop, now));
                Ok(actions)
            }
            (_, event) => Err(event),
        }
    }

    /// The replacement failed before it was ready: the outgoing worker takes the slot back.
    fn roll_back(&mut self, why: String) -> Vec<Action> {
        let Some(old) = self.outgoing.take() else {
            return vec![];
        };
        self.last_exit = Some(format!(
            "replacement failed: {why}; kept the previous worker"
        ));
        self.state = SlotState::Running {
            pid: old.pid,
            started: old.started,
        };
        vec![Action::RolledBack { pid: old.pid }]
    }

    /// Events of the slot's own (primary) worker.
    fn on_primary(&mut self, event: SlotEvent, now: Instant) -> Vec<Action> {
        use SlotState as S;
        match (self.state.clone(), event) {
            (S::Stopped | S::Errored, SlotEvent::Start) => {
                self.respawning = self.state == S::Errored;
                self.crashes = 0;
                vec![Action::Spawn]
            }
            (S::Stopped | S::Errored, SlotEvent::Restart { .. }) => {
                self.respawning = true;
                self.crashes = 0;
                vec![Action::Spawn]
            }
            (_, SlotEvent::Spawned { pid }) => {
                if std::mem::take(&mut self.respawning) {
                    self.restarts += 1;
                }
                self.state = S::Starting { pid, started: now };
                vec![Action::Probe]
            }
            (_, SlotEvent::SpawnFailed { error }) => self.crashed(error, Duration::ZERO, now),
            (S::Starting { pid, started }, SlotEvent::Ready) => {
                self.state = S::Running { pid, started };
                vec![]
            }
            (S::Starting { pid, started }, SlotEvent::NotReady { reason }) => {
                self.state = S::Stopping {
                    pid,
                    started,
                    then: AfterExit::Crash(reason),
                };
                vec![Action::Terminate { pid }]
            }
            (
                S::Starting { started, .. } | S::Running { started, .. },
                SlotEvent::Exited { status },
            ) => self.crashed(status, now.saturating_duration_since(started), now),
            (S::Stopping { started, then, .. }, SlotEvent::Exited { status }) => match then {
                AfterExit::Respawn => {
                    self.respawning = true;
                    vec![Action::Spawn]
                }
                AfterExit::Crash(reason) => {
                    let uptime = now.saturating_duration_since(started);
                    self.crashed(format!("{reason} ({status})"), uptime, now)
                }
                AfterExit::Halt => {
                    self.state = S::Stopped;
                    self.last_exit = Some(format!("stopped ({status})"));
                    vec![]
                }
                AfterExit::RollBack(reason) => self.roll_back(format!("{reason} ({status})")),
            },
            (
                S::Starting { pid, started } | S::Running { pid, started },
                SlotEvent::Restart { reason },
            ) => {
                self.last_exit = Some(format!("restarted: {reason}"));
                self.state = S::Stopping {
                    pid,
                    started,
                    then: AfterExit::Respawn,
                };
                vec![Action::Terminate { pid }]
            }
            (S::Backoff { .. }, SlotEvent::Restart { .. }) => {
                self.respawning = true;
                vec![Action::Spawn]
            }
            (S::Starting { pid, started } | S::Running { pid, started }, SlotEvent::Stop) => {
                self.state = S::Stopping {
                    pid,
                    started,
                    then: AfterExit::Halt,
                };
                vec![Action::Terminate { pid }]
            }
            (S::Stopping { pid, started, .. }, SlotEvent::Stop) => {
                // Already signalled; only the plan after exit changes.
                self.state = S::Stopping {
                    pid,
                    started,
                    then: AfterExit::Halt,
                };
                vec![]
            }
            (S::Backoff { .. } | S::Errored, SlotEvent::Stop) => {
                self.state = S::Stopped;
                vec![]
            }
            (S::Backoff { until }, SlotEvent::Wake) if now >= until => {
                self.respawning = true;
                vec![Action::Spawn]
            }
            (S::Backoff { until }, SlotEvent::Wake) => vec![Action::WakeAt(until)],
            // Everything else (a Ready after a stop was asked, a Start while running, a stale
            // Wake…) changes nothing.
            _ => vec![],
        }
    }

    /// The worker ended on its own after `uptime`: back off or give up.
    fn crashed(&mut self, status: String, uptime: Duration, now: Instant) -> Vec<Action> {
        self.last_exit = Some(status);
        self.crashes = if uptime >= self.policy.min_uptime {
            1
        } else {
            self.crashes.saturating_add(1)
        };
        if self.policy.gives_up(self.crashes) {
            self.state = SlotState::Errored;
            return vec![];
        }
        let until = now + self.policy.delay(self.crashes);
        self.state = SlotState::Backoff { until };
        vec![Action::WakeAt(until)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            restart_delay: Duration::from_millis(100),
            min_uptime: Duration::from_secs(1),
            max_restarts: 3,
        }
    }

    fn running(t0: Instant) -> Slot {
        let mut s = Slot::new(policy());
        assert_eq!(s.on(SlotEvent::Start, t0), vec![Action::Spawn]);
        assert_eq!(
            s.on(SlotEvent::Spawned { pid: 10 }, t0),
            vec![Action::Probe]
        );
        assert_eq!(s.on(SlotEvent::Ready, t0), vec![]);
        assert_eq!(
            s.state,
            SlotState::Running {
                pid: 10,
                started: t0
            }
        );
        s
    }

    fn exit(s: &mut Slot, at: Instant) -> Vec<Action> {
        s.on(
            SlotEvent::Exited {
                status: "exit code 1".into(),
            },
            at,
        )
    }

    #[test]
    fn first_start_is_not_a_restart() {
        let s = running(Instant::now());
        assert_eq!(s.restarts, 0);
    }

    #[test]
    fn crash_backs_off_then_respawns_and_counts_a_restart() {
        let t0 = Instant::now();
        let mut s = running(t0);
        let t1 = t0 + Duration::from_secs(5);
        let until = t1 + Duration::from_millis(100);
        assert_eq!(exit(&mut s, t1), vec![Action::WakeAt(until)]);
        assert_eq!(s.state, SlotState::Backoff { until });
        // An early wake re-arms, a due one spawns.
        assert_eq!(s.on(SlotEvent::Wake, t1), vec![Action::WakeAt(until)]);
        assert_eq!(s.on(SlotEvent::Wake, until), vec![Action::Spawn]);
        s.on(SlotEvent::Spawned { pid: 11 }, until);
        assert_eq!(s.restarts, 1);
        assert_eq!(s.last_exit.as_deref(), Some("exit code 1"));
    }

    #[test]
    fn quick_crashes_grow_the_delay_and_end_errored() {
        let t0 = Instant::now();
        let mut s = running(t0);
        let mut now = t0 + Duration::from_millis(10);
        let mut delays = vec![];
        loop {
            match exit(&mut s, now).as_slice() {
                [Action::WakeAt(until)] => {
                    delays.push(*until - now);
                    now = *until;
                    assert_eq!(s.on(SlotEvent::Wake, now), vec![Action::Spawn]);
                    s.on(SlotEvent::Spawned { pid: 1 }, now);
                    now += Duration::from_millis(10);
                }
                [] => break,
                other => panic!("unexpected {other:?}"),
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
        assert_eq!(s.state, SlotState::Errored);
        assert_eq!(s.restarts, 3);
        // An operator restart brings it back with a fresh count.
        assert_eq!(s.on(SlotEvent::Start, now), vec![Action::Spawn]);
        assert_eq!(s.crashes, 0);
    }

    #[test]
    fn a_stable_run_resets_the_crash_count() {
        let t0 = Instant::now();
        let mut s = running(t0);
        let mut now = t0;
        for _ in 0..3 {
            now += Duration::from_millis(10);
            let [Action::WakeAt(until)] = exit(&mut s, now)[..] else {
                panic!("expected a backoff")
            };
            now = until;
            s.on(SlotEvent::Wake, now);
            s.on(SlotEvent::Spawned { pid: 2 }, now);
        }
        assert_eq!(s.crashes, 3);
        // This one ran past min_uptime: back to the first delay, not errored.
        now += Duration::from_secs(2);
        assert_eq!(
            exit(&mut s, now),
            vec![Action::WakeAt(now + Duration::from_millis(100))]
        );
        assert_eq!(s.crashes, 1);
    }

    #[test]
    fn not_ready_terminates_then_counts_as_crash() {
        let t0 = Instant::now();
        let mut s = Slot::new(policy());
        s.on(SlotEvent::Start, t0);
        s.on(SlotEvent::Spawned { pid: 7 }, t0);
        let t1 = t0 + Duration::from_secs(10);
        let reason = "not ready within 10s".to_string();
        assert_eq!(
            s.on(SlotEvent::NotReady { reason }, t1),
            vec![Action::Terminate { pid: 7 }]
        );
        let acts = s.on(
            SlotEvent::Exited {
                status: "signal 15".into(),
            },
            t1,
        );
        assert!(matches!(acts[..], [Action::WakeAt(_)]));
        assert_eq!(
            s.last_exit.as_deref(),
            Some("not ready within 10s (signal 15)")
        );
    }

    #[test]
    fn restart_respawns_without_counting_a_crash() {
        let t0 = Instant::now();
        let mut s = running(t0);
        let reason = "memory 600 MB > 500 MB".to_string();
        assert_eq!(
            s.on(SlotEvent::Restart { reason }, t0),
            vec![Action::Terminate { pid: 10 }]
        );
        assert_eq!(exit(&mut s, t0), vec![Action::Spawn]);
        s.on(SlotEvent::Spawned { pid: 12 }, t0);
        assert_eq!(s.crashes, 0);
        assert_eq!(s.restarts, 1);
    }

    #[test]
    fn stop_halts_and_stays_down() {
        let t0 = Instant::now();
        let mut s = running(t0);
        assert_eq!(
            s.on(SlotEvent::Stop, t0),
            vec![Action::Terminate { pid: 10 }]
        );
        assert_eq!(exit(&mut s, t0), vec![]);
        assert_eq!(s.state, SlotState::Stopped);
        assert!(s.is_down());
        // A stale timer does nothing.
        assert_eq!(s.on(SlotEvent::Wake, t0), vec![]);
    }

    #[test]
    fn stop_during_restart_wins() {
        let t0 = Instant::now();
        let mut s = running(t0);
        s.on(
            SlotEvent::Restart {
                reason: "manual".into(),
            },
            t0,
        );
        assert_eq!(s.on(SlotEvent::Stop, t0), vec![]);
        assert_eq!(exit(&mut s, t0), vec![]);
        assert_eq!(s.state, SlotState::Stopped);
    }

    #[test]
    fn stop_during_backoff_is_immediate() {
        let t0 = Instant::now();
        let mut s = running(t0);
        exit(&mut s, t0);
        assert_eq!(s.on(SlotEvent::Stop, t0), vec![]);
        assert_eq!(s.state, SlotState::Stopped);
    }

    #[test]
    fn spawn_failure_is_a_crash() {
        let t0 = Instant::now();
        let mut s = Slot::new(policy());
        s.on(SlotEvent::Start, t0);
        let acts = s.on(
            SlotEvent::SpawnFailed {
                error: "No such file".into(),
            },
            t0,
        );
        assert_eq!(acts, vec![Action::WakeAt(t0 + Duration::from_millis(100))]);
    }

    fn replacing(t0: Instant) -> Slot {
        let mut s = running(t0);
        let acts = s.on(
            SlotEvent::Replace {
                reason: "reload".into(),
            },
            t0,
        );
        assert_eq!(acts, vec![Action::Spawn]);
        assert!(s.is_replacing());
        assert_eq!(
            s.on(SlotEvent::Spawned { pid: 20 }, t0),
            vec![Action::Probe]
        );
        s
    }

    #[test]
    fn replace_starts_beside_then_drains_then_stops_the_old_worker() {
        let t0 = Instant::now();
        let mut s = replacing(t0);
        assert_eq!(s.pid(), Some(20));
        assert_eq!(s.on(SlotEvent::Ready, t0), vec![Action::Drain { pid: 10 }]);
        assert_eq!(
            s.state,
            SlotState::Running {
                pid: 20,
                started: t0
            }
        );
        assert_eq!(
            s.outgoing.as_ref().map(|o| o.phase),
            Some(OutgoingPhase::Draining)
        );
        assert_eq!(
            s.on(SlotEvent::OutgoingDrained, t0),
            vec![Action::Terminate { pid: 10 }]
        );
        assert_eq!(s.on(SlotEvent::OutgoingDrained, t0), vec![]);
        assert!(!s.is_down());
        s.on(
            SlotEvent::OutgoingExited {
                status: "exit code 0".into(),
            },
            t0,
        );
        assert!(s.outgoing.is_none());
        assert_eq!(s.restarts, 1);
        assert_eq!(s.crashes, 0);
    }

    #[test]
    fn a_replacement_that_crashes_or_never_readies_rolls_back() {
        let t0 = Instant::now();
        let mut s = replacing(t0);
        assert_eq!(exit(&mut s, t0), vec![Action::RolledBack { pid: 10 }]);
        assert_eq!(
            s.state,
            SlotState::Running {
                pid: 10,
                started: t0
            }
        );
        assert!(s.outgoing.is_none());
        assert!(
            s.last_exit
                .as_deref()
                .is_some_and(|e| e.starts_with("replacement failed: exit code 1"))
        );

        let mut s = replacing(t0);
        let reason = "not ready within 1s".to_string();
        assert_eq!(
            s.on(SlotEvent::NotReady { reason }, t0),
            vec![Action::Terminate { pid: 20 }]
        );
        assert_eq!(exit(&mut s, t0), vec![Action::RolledBack { pid: 10 }]);
        assert_eq!(s.pid(), Some(10));

        let mut s = running(t0);
        s.on(
            SlotEvent::Replace {
                reason: "reload".into(),
            },
            t0,
        );
        let acts = s.on(
            SlotEvent::SpawnFailed {
                error: "ENOENT".into(),
            },
            t0,
        );
        assert_eq!(acts, vec![Action::RolledBack { pid: 10 }]);
        assert_eq!(
            s.crashes, 0,
            "a failed replacement is not a crash of the slot"
        );
    }

    #[test]
    fn replace_of_a_slot_that_is_not_running_is_a_plain_restart() {
        let t0 = Instant::now();
        let mut s = running(t0);
        exit(&mut s, t0);
        assert!(matches!(s.state, SlotState::Backoff { .. }));
        assert_eq!(
            s.on(
                SlotEvent::Replace {
                    reason: "reload".into()
                },
                t0
            ),
            vec![Action::Spawn]
        );
        assert!(s.outgoing.is_none());
    }

    #[test]
    fn stop_during_a_replacement_terminates_both_workers() {
        let t0 = Instant::now();
        let mut s = replacing(t0);
        let acts = s.on(SlotEvent::Stop, t0);
        assert_eq!(
            acts,
            vec![Action::Terminate { pid: 10 }, Action::Terminate { pid: 20 }]
        );
        exit(&mut s, t0);
        assert!(!s.is_down(), "the old worker is still exiting");
        s.on(
            SlotEvent::OutgoingExited {
                status: "signal 15".into(),
            },
            t0,
        );
        assert!(s.is_down());
    }
}
