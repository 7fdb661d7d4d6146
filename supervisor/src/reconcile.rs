//! The rollout reconciler: what the fleet should do next, from what is wanted and what is.
//!
//! Pure: no I/O, no clock reads, no channels. The actor calls [`next`] after every message
//! and timer, applies the [`Decision`]s, and calls it again until it returns nothing. It never
//! remembers being "in the middle of" a reload: the wanted state ([`Wanted`], replaced whole by
//! the latest reload) and the slots' own states say everything. [`settle`] reads the same
//! facts to tell each waiting request what happened to each of its slots.
//!
//! Rules, per app:
//! - a wanted slot with no worker starts one (after its crash backoff; not when errored);
//! - an outdated slot (its spec revision is older than wanted) is replaced beside its ready
//!   worker, one slot of the app at a time; a slot whose replacement failed
//!   [`MAX_TRIES`] times at that revision keeps its old worker and spec, and the rest of the
//!   app's rollout stops there (their slots are reported skipped);
//! - a replacement asked by a health check (memory, liveness) goes at once;
//! - slots past the wanted instance count, and every slot of a removed app, are retired
//!   (drained, then stopped) and dropped once down; a stopped app's slots stop at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::ports::PortMap;
use crate::slot::{Phase, Slot};
use crate::spec::AppSpec;

/// Attempts a slot gets at one spec revision before the rollout gives up on it (a dependency
/// blinking during one start-up does not fail a fleet-wide reload).
pub(crate) const MAX_TRIES: u32 = 2;

/// What the operator wants running: the latest accepted configuration and commands.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wanted {
    /// Apps in configuration order.
    pub apps: Vec<WantedApp>,
    /// The daemon is stopping: everything goes down, nothing starts.
    pub stopping: bool,
}

/// One wanted app.
#[derive(Debug, Clone)]
pub(crate) struct WantedApp {
    /// Its spec.
    pub spec: Arc<AppSpec>,
    /// Revision every slot should run (bumped by reloads and restarts).
    pub rev: u64,
    /// Slots wanted (the spec's `instances`, or a `scale` since).
    pub instances: u16,
    /// `false` after `rtsup stop APP`.
    pub enabled: bool,
    /// Per-slot revisions from `rtsup restart APP:SLOT`.
    pub bumps: BTreeMap<u16, u64>,
}

impl WantedApp {
    /// A wanted app running `spec` at `rev`.
    pub(crate) fn new(spec: Arc<AppSpec>, rev: u64) -> Self {
        Self {
            instances: spec.instances,
            spec,
            rev,
            enabled: true,
            bumps: BTreeMap::new(),
        }
    }

    /// The revision slot `slot` should run.
    pub(crate) fn target(&self, slot: u16) -> u64 {
        self.bumps.get(&slot).map_or(self.rev, |&b| b.max(self.rev))
    }
}

/// The slots of one app as they are (an app removed from the configuration stays here until
/// its last worker is gone).
#[derive(Debug, Clone)]
pub(crate) struct AppSlots {
    /// App name.
    pub name: Arc<str>,
    /// Slots by ascending index.
    pub slots: Vec<Slot>,
}

impl AppSlots {
    /// Slot `index`, if it exists.
    pub(crate) fn slot(&self, index: u16) -> Option<&Slot> {
        self.slots.iter().find(|s| s.index == index)
    }
}

/// One step for the actor to carry out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Create the (empty) slots of a newly wanted app.
    AddApp {
        /// App name.
        app: Arc<str>,
    },
    /// Create an empty slot; the next pass starts it.
    AddSlot {
        /// App name.
        app: Arc<str>,
        /// Slot index.
        index: u16,
        /// Revision it starts at.
        rev: u64,
        /// Spec it starts with.
        spec: Arc<AppSpec>,
    },
    /// Spawn a worker in a slot (beside its ready worker when it has one).
    Launch {
        /// App name.
        app: Arc<str>,
        /// Slot index.
        index: u16,
        /// Port for it.
        port: u16,
        /// Revision of `spec`.
        rev: u64,
        /// Spec to run.
        spec: Arc<AppSpec>,
    },
    /// No port is free for a slot: count it as a failed start.
    NoPort {
        /// App name.
        app: Arc<str>,
        /// Slot index.
        index: u16,
        /// Revision it would have run.
        rev: u64,
    },
    /// Drain, then stop, every worker of a slot that is no longer wanted.
    Retire {
        /// App name.
        app: Arc<str>,
        /// Slot index.
        index: u16,
    },
    /// Stop every worker of a slot now.
    Stop {
        /// App name.
        app: Arc<str>,
        /// Slot index.
        index: u16,
    },
    /// Forget a slot that is down and no longer wanted.
    RemoveSlot {
        /// App name.
        app: Arc<str>,
        /// Slot index.
        index: u16,
    },
    /// Forget an app that is down and no longer wanted.
    RemoveApp {
        /// App name.
        app: Arc<str>,
    },
}

/// The next decisions for `apps` to approach `wanted` at `now`. `reserved` are ports of
/// rtsup's own listeners.
pub(crate) fn next(
    wanted: &Wanted,
    apps: &[AppSlots],
    reserved: &[u16],
    now: Instant,
) -> Vec<Decision> {
    let mut ports = PortMap {
        held: apps
            .iter()
            .flat_map(|a| a.slots.iter().flat_map(Slot::ports))
            .collect(),
        ranges: wanted
            .apps
            .iter()
            .map(|w| {
                let lo = u32::from(w.spec.port);
                let n = u32::from(w.spec.instances.max(w.instances));
                (w.spec.name.clone(), lo..lo + 2 * n)
            })
            .collect(),
        reserved: reserved.iter().copied().collect(),
    };
    let mut out = Vec::new();
    for app in apps {
        let want = wanted
            .apps
            .iter()
            .find(|w| *w.spec.name == *app.name)
            .filter(|_| !wanted.stopping);
        match want {
            None => {
                for slot in &app.slots {
                    if wanted.stopping {
                        if needs_stop(slot) {
                            out.push(Decision::Stop {
                                app: app.name.clone(),
                                index: slot.index,
                            });
                        }
                    } else if needs_retire(slot) {
                        out.push(Decision::Retire {
                            app: app.name.clone(),
                            index: slot.index,
                        });
                    }
                }
                if !wanted.stopping && app.slots.iter().all(Slot::is_down) {
                    out.push(Decision::RemoveApp {
                        app: app.name.clone(),
                    });
                }
            }
            Some(w) => app_decisions(w, app, &mut ports, now, &mut out),
        }
    }
    if !wanted.stopping {
        for w in &wanted.apps {
            if !apps.iter().any(|a| *a.name == *w.spec.name) {
                out.push(Decision::AddApp {
                    app: Arc::from(w.spec.name.as_str()),
                });
            }
        }
    }
    out
}

fn app_decisions(
    w: &WantedApp,
    app: &AppSlots,
    ports: &mut PortMap,
    now: Instant,
    out: &mut Vec<Decision>,
) {
    let name = &app.name;
    if !w.enabled {
        for slot in &app.slots {
            if needs_stop(slot) {
                out.push(Decision::Stop {
                    app: name.clone(),
                    index: slot.index,
                });
            } else if slot.index >= w.instances && slot.is_down() {
                out.push(Decision::RemoveSlot {
                    app: name.clone(),
                    index: slot.index,
                });
            }
        }
        return;
    }
    for index in 0..w.instances {
        if app.slot(index).is_none() {
            // A rollout that stopped at a failed slot leaves the old spec in force: new slots
            // get it too.
            let (rev, spec) = match halted_by(app, w.rev) {
                Some(failed) => (failed.rev, failed.spec.clone()),
                None => (w.target(index), w.spec.clone()),
            };
            out.push(Decision::AddSlot {
                app: name.clone(),
                index,
                rev,
                spec,
            });
        }
    }
    // One rolling replacement per app at a time.
    let mut rolling = app.slots.iter().any(Slot::is_replacing);
    for slot in &app.slots {
        if slot.index >= w.instances {
            if needs_retire(slot) {
                out.push(Decision::Retire {
                    app: name.clone(),
                    index: slot.index,
                });
            } else if slot.is_down() {
                out.push(Decision::RemoveSlot {
                    app: name.clone(),
                    index: slot.index,
                });
            }
            continue;
        }
        let launch = match &slot.current {
            None => !slot.errored && slot.backoff_until.is_none_or(|t| t <= now),
            Some(cur) if cur.phase == Phase::Ready && !slot.is_replacing() => {
                if slot.replace.is_some() {
                    true
                } else if wants_newer(w, app, slot) && !rolling {
                    rolling = true;
                    true
                } else {
                    false
                }
            }
            Some(_) => false,
        };
        if !launch {
            continue;
        }
        let (rev, spec) = choose(w, app, slot);
        match ports.allocate(name, spec.port, w.instances.max(spec.instances), slot.index) {
            Some(port) => out.push(Decision::Launch {
                app: name.clone(),
                index: slot.index,
                port,
                rev,
                spec,
            }),
            None => out.push(Decision::NoPort {
                app: name.clone(),
                index: slot.index,
                rev,
            }),
        }
    }
}

/// What the slot's next worker runs: the wanted revision when it may still be tried, with the
/// wanted spec only if the app's configuration itself is new to the slot and not rejected (a
/// restart after a failed reload restarts the spec in force); else the spec in force.
fn choose(w: &WantedApp, app: &AppSlots, slot: &Slot) -> (u64, Arc<AppSpec>) {
    if !wants_newer(w, app, slot) {
        return (slot.rev, slot.spec.clone());
    }
    let new_config = slot.rev < w.rev && !exhausted(slot, w.rev) && halted_by(app, w.rev).is_none();
    let spec = if new_config {
        w.spec.clone()
    } else {
        slot.spec.clone()
    };
    (w.target(slot.index), spec)
}

/// The slot runs an older revision than wanted, and that revision may still be tried.
fn wants_newer(w: &WantedApp, app: &AppSlots, slot: &Slot) -> bool {
    let target = w.target(slot.index);
    slot.rev < target && !exhausted(slot, target) && halted_by(app, target).is_none()
}

/// The slot has used up its attempts at revision `rev` (or a newer one).
fn exhausted(slot: &Slot, rev: u64) -> bool {
    slot.tries
        .as_ref()
        .is_some_and(|t| t.rev >= rev && t.failed >= MAX_TRIES)
}

/// The slot of `app` whose failure stopped the rollout of revision `rev`, if any.
fn halted_by(app: &AppSlots, rev: u64) -> Option<&Slot> {
    app.slots.iter().find(|s| exhausted(s, rev))
}

fn needs_stop(slot: &Slot) -> bool {
    slot.backoff_until.is_some()
        || slot.errored
        || slot
            .workers()
            .any(|w| !matches!(w.phase, Phase::Stopping { .. }))
}

fn needs_retire(slot: &Slot) -> bool {
    slot.current.is_some() || slot.backoff_until.is_some() || slot.errored || slot.is_replacing()
}

/// What a request expects of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expect {
    /// A new worker at the request's revision replaces the old one (reload, restart).
    Replace,
    /// A new slot, ready at the request's revision (scale up, app added).
    Add,
    /// A ready worker in a slot that had none (`rtsup start APP`).
    Start,
    /// The slot retired (scale down, app removed).
    Removed,
    /// The slot stopped (`rtsup stop APP`).
    Stopped,
}

/// What happened to one slot of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A new worker replaced the old one.
    Replaced {
        /// The new worker's generation.
        generation: u64,
    },
    /// A new slot started and is ready.
    Added {
        /// Its worker's generation.
        generation: u64,
    },
    /// The slot was started and is ready.
    Started {
        /// Its worker's generation.
        generation: u64,
    },
    /// Nothing to do for this slot.
    Unchanged {
        /// Why.
        reason: String,
    },
    /// The slot is no longer wanted: its worker drains, then stops.
    Removed,
    /// The slot's workers have stopped.
    Stopped,
    /// The slot could not be brought to the request's state; it keeps its previous worker
    /// and spec where it had one.
    Failed {
        /// Why: exit status and the worker's last stderr lines.
        reason: String,
    },
    /// Not attempted: the app's rollout stopped at another failed slot.
    Skipped {
        /// Why.
        reason: String,
    },
    /// A later request took the slot elsewhere (e.g. removed it).
    Superseded {
        /// What happened instead.
        reason: String,
    },
}

impl Outcome {
    /// Whether this outcome is a failure of the request.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed { .. } | Self::Skipped { .. })
    }

    /// One word for it: `replaced`, `added`, `failed`…
    pub fn word(&self) -> &'static str {
        match self {
            Self::Replaced { .. } => "replaced",
            Self::Added { .. } => "added",
            Self::Started { .. } => "started",
            Self::Unchanged { .. } => "unchanged",
            Self::Removed => "removed",
            Self::Stopped => "stopped",
            Self::Failed { .. } => "failed",
            Self::Skipped { .. } => "skipped",
            Self::Superseded { .. } => "superseded",
        }
    }

    /// What goes with the word: the new generation, or the reason.
    pub fn detail(&self) -> String {
        match self {
            Self::Replaced { generation }
            | Self::Added { generation }
            | Self::Started { generation } => format!("generation {generation}"),
            Self::Unchanged { reason }
            | Self::Failed { reason }
            | Self::Skipped { reason }
            | Self::Superseded { reason } => reason.clone(),
            Self::Removed => "draining, then stopped".into(),
            Self::Stopped => String::new(),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.detail() {
            d if d.is_empty() => f.write_str(self.word()),
            d => write!(f, "{} ({d})", self.word()),
        }
    }
}

/// One slot a request waits on.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// App name.
    pub app: Arc<str>,
    /// Slot index.
    pub slot: u16,
    /// What the request expects.
    pub expect: Expect,
    /// The slot's generation when the request was made (0 for a slot that did not exist).
    pub since: u64,
    /// Settled outcome, once known.
    pub outcome: Option<Outcome>,
}

/// Settle what can be settled of `targets` (a request at revision `rev`); returns whether
/// every target has its outcome.
pub(crate) fn settle(targets: &mut [Target], rev: u64, wanted: &Wanted, apps: &[AppSlots]) -> bool {
    for t in targets.iter_mut().filter(|t| t.outcome.is_none()) {
        let app = apps.iter().find(|a| a.name == t.app);
        let slot = app.and_then(|a| a.slot(t.slot));
        let want = wanted.apps.iter().find(|w| *w.spec.name == *t.app);
        t.outcome = match t.expect {
            Expect::Replace | Expect::Add | Expect::Start => {
                ready_outcome(t, rev, want, app, slot, wanted.stopping)
            }
            Expect::Removed => match slot {
                None => Some(Outcome::Removed),
                Some(s) if s.current.is_none() && !needs_retire(s) => Some(Outcome::Removed),
                _ if want.is_some_and(|w| t.slot < w.instances) && !wanted.stopping => {
                    Some(Outcome::Superseded {
                        reason: "wanted again by a later request".into(),
                    })
                }
                _ => None,
            },
            Expect::Stopped => match slot {
                None => Some(Outcome::Stopped),
                Some(s) if s.is_down() => Some(Outcome::Stopped),
                _ if want.is_some_and(|w| w.enabled) && !wanted.stopping => {
                    Some(Outcome::Superseded {
                        reason: "started again by a later request".into(),
                    })
                }
                _ => None,
            },
        };
    }
    targets.iter().all(|t| t.outcome.is_some())
}

fn ready_outcome(
    t: &Target,
    rev: u64,
    want: Option<&WantedApp>,
    app: Option<&AppSlots>,
    slot: Option<&Slot>,
    stopping: bool,
) -> Option<Outcome> {
    if stopping {
        return Some(Outcome::Superseded {
            reason: "rtsup is stopping".into(),
        });
    }
    let Some(want) = want else {
        return Some(Outcome::Superseded {
            reason: "app removed by a later reload".into(),
        });
    };
    if !want.enabled {
        return Some(Outcome::Superseded {
            reason: "app stopped".into(),
        });
    }
    if t.slot >= want.instances {
        return Some(Outcome::Superseded {
            reason: format!("scaled down to {} instance(s)", want.instances),
        });
    }
    let (app, slot) = (app?, slot?);
    // A later request may have re-targeted the slot: report where it ends, not where it was
    // on the way. `rtsup start APP` only wants a ready worker.
    let goal = match t.expect {
        Expect::Start => 0,
        // A slot added while the app's rollout is stopped starts with the spec in force.
        Expect::Add if halted_by(app, want.rev).is_some() => 0,
        _ => rev.max(want.target(t.slot)),
    };
    if let Some(cur) = &slot.current
        && cur.phase == Phase::Ready
        && cur.generation > t.since
        && cur.rev >= goal
    {
        let generation = cur.generation;
        return Some(match t.expect {
            Expect::Add => Outcome::Added { generation },
            Expect::Start => Outcome::Started { generation },
            _ => Outcome::Replaced { generation },
        });
    }
    // `start APP` wants the app running: after a newer spec failed, the slot comes up on the
    // spec in force, so only an errored slot fails it.
    if let Some(tries) = &slot.tries
        && t.expect != Expect::Start
        && tries.rev >= goal
        && tries.failed >= MAX_TRIES
        && tries.generation > t.since
    {
        return Some(Outcome::Failed {
            reason: tries.reason.clone(),
        });
    }
    if slot.errored {
        return Some(Outcome::Failed {
            reason: format!(
                "errored after {} crashes in a row: {}",
                slot.crashes,
                slot.last_exit.as_deref().unwrap_or("no exit recorded")
            ),
        });
    }
    if slot.rev < goal
        && let Some(failed) = halted_by(app, goal)
        && failed.index != t.slot
    {
        return Some(Outcome::Skipped {
            reason: format!(
                "not attempted: the rollout of {} stopped after slot {} failed",
                app.name, failed.index
            ),
        });
    }
    None
}

#[cfg(test)]
mod tests;
