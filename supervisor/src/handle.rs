//! The typed handle to the supervisor: systemctl-like verbs, each answered with a report.
//!
//! Every call is answered: the actor settles each request from its slots' states, and every
//! state that waits has a deadline, so no call waits without bound.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

use crate::effects::Inbox;
use crate::fleet::Fleet;
use crate::reconcile::Outcome;
use crate::spec::AppSpec;

/// Errors the supervisor answers with.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
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
    /// A value the supervisor cannot apply.
    #[error("{0}")]
    Invalid(String),
    /// The actor has stopped, or is stopping.
    #[error("the supervisor is stopping")]
    Gone,
}

/// What a request did, slot by slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// One entry per slot the request concerned.
    pub slots: Vec<SlotReport>,
}

/// What a request did to one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotReport {
    /// App name.
    pub app: String,
    /// Slot index.
    pub slot: u16,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Report {
    /// Whether no slot failed or was skipped.
    pub fn ok(&self) -> bool {
        !self.slots.iter().any(|s| s.outcome.is_failure())
    }

    /// How many slots ended with an outcome matching `pred`.
    pub fn count(&self, pred: impl Fn(&Outcome) -> bool) -> usize {
        self.slots.iter().filter(|s| pred(&s.outcome)).count()
    }
}

/// Asks the balancer side about a draining worker's sessions, and to let them go gently.
/// The supervisor never learns what a session is.
pub trait DrainGate: Send + Sync + 'static {
    /// Live sessions of worker `generation` of `app`'s slot `slot`; `None` when nobody routes
    /// to it (then draining ends at once).
    fn sessions(&self, app: &str, slot: u16, generation: u64) -> Option<u64>;

    /// The worker's drain time is up: close its remaining connections spread over `window`
    /// (it is stopped once the window has passed).
    fn release(&self, _app: &str, _slot: u16, _generation: u64, _window: Duration) {}
}

type Reply<T> = oneshot::Sender<Result<T, SupervisorError>>;

/// A request to the actor.
pub(crate) enum Command {
    Reload {
        apps: Vec<AppSpec>,
        reply: Reply<Report>,
    },
    Restart {
        app: String,
        slot: Option<u16>,
        force: bool,
        reply: Reply<Report>,
    },
    StartApp {
        app: String,
        reply: Reply<Report>,
    },
    StopApp {
        app: String,
        reply: Reply<Report>,
    },
    Scale {
        app: String,
        instances: u16,
        reply: Reply<Report>,
    },
    Ping {
        reply: Reply<()>,
    },
    Stop {
        reply: Reply<()>,
    },
}

/// A cheap clonable handle to the supervisor actor.
#[derive(Clone)]
pub struct SupervisorHandle {
    pub(crate) tx: mpsc::Sender<Inbox>,
    pub(crate) fleet: watch::Receiver<Fleet>,
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

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SupervisorError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Inbox::Command(make(reply)))
            .await
            .map_err(|_| SupervisorError::Gone)?;
        rx.await.map_err(|_| SupervisorError::Gone)?
    }

    /// Make `apps` the wanted configuration (apps may come and go, instance counts change) and
    /// replace every worker slot by slot without downtime. A later reload supersedes this one;
    /// both are answered.
    pub async fn reload(&self, apps: Vec<AppSpec>) -> Result<Report, SupervisorError> {
        self.ask(|reply| Command::Reload { apps, reply }).await
    }

    /// Replace `app`'s workers (or only `slot`) one at a time without downtime, or all at
    /// once with `force`.
    pub async fn restart(
        &self,
        app: &str,
        slot: Option<u16>,
        force: bool,
    ) -> Result<Report, SupervisorError> {
        let app = app.to_string();
        self.ask(|reply| Command::Restart {
            app,
            slot,
            force,
            reply,
        })
        .await
    }

    /// Start a stopped (or errored) app.
    pub async fn start_app(&self, app: &str) -> Result<Report, SupervisorError> {
        let app = app.to_string();
        self.ask(|reply| Command::StartApp { app, reply }).await
    }

    /// Stop one app's workers (the daemon keeps running).
    pub async fn stop_app(&self, app: &str) -> Result<Report, SupervisorError> {
        let app = app.to_string();
        self.ask(|reply| Command::StopApp { app, reply }).await
    }

    /// Run `instances` slots of `app`: new slots on free ports, surplus ones drained first.
    pub async fn scale(&self, app: &str, instances: u16) -> Result<Report, SupervisorError> {
        let app = app.to_string();
        self.ask(|reply| Command::Scale {
            app,
            instances,
            reply,
        })
        .await
    }

    /// A round trip through the actor: proves it is alive and not stuck.
    pub async fn ping(&self) -> Result<(), SupervisorError> {
        self.ask(|reply| Command::Ping { reply }).await
    }

    /// Stop every worker (SIGTERM, SIGKILL after `kill_timeout`) and wait until all are gone.
    /// The actor ends afterwards.
    pub async fn stop(&self) {
        let _ = self.ask(|reply| Command::Stop { reply }).await;
    }
}
