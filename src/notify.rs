//! systemd's notify protocol (`Type=notify`, sd_notify(3)). Silent when not started by systemd
//! (no `NOTIFY_SOCKET`).
//!
//! - READY=1 once every slot of every app has *settled*: its worker is ready, or the slot gave
//!   up (errored) or is not wanted (stopped). A crash-looping app must not hold the start back:
//!   under `Type=notify` a start that never reports ready times out and systemd restarts rtsup,
//!   killing the healthy apps with it. The STATUS= line tells what settled how, e.g.
//!   `chat 4/4 ready; api 0/2 ready, 2 errored: exit code 1`.
//! - STATUS= follows the fleet while the daemon runs, at most once per [`STATUS_EVERY`].
//! - RELOADING=1 with MONOTONIC_USEC when a reload starts, READY=1 with STATUS= when it ends
//!   (the reloader calls [`Notifier::reloading`] and [`Notifier::ready`]); STOPPING=1.
//! - WATCHDOG=1 only after a round trip through the supervisor's actor
//!   ([`SupervisorHandle::ping`]) answered in time: a stuck actor stops the pings and systemd
//!   restarts the daemon.
//!
//! Workers never inherit `NOTIFY_SOCKET` (the supervisor removes it from their environment).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use supervisor::{Fleet, SupervisorHandle, WorkerSnapshot, WorkerState};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

/// STATUS= updates that follow the fleet are sent at most this often.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Longest excerpt of an errored worker's `last_exit` in the STATUS= line.
const REASON_CHARS: usize = 60;

/// Longest STATUS= text sent.
const STATUS_CHARS: usize = 1024;

/// Sends notify messages to systemd, if it is listening. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Notifier {
    shared: Arc<Shared>,
    fleet: watch::Receiver<Fleet>,
}

#[derive(Debug)]
struct Shared {
    /// `NOTIFY_SOCKET`: a path, or `@name` for the abstract namespace.
    socket: Option<PathBuf>,
    /// STOPPING=1 was sent: no READY=1 any more.
    stopping: AtomicBool,
}

/// What the fleet looks like to systemd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Every slot of every app is ready, errored or stopped (and the fleet is not empty).
    pub settled: bool,
    /// Per app: `name ready/total ready[, n state…][, n errored: reason]`, joined by `; `.
    pub text: String,
}

/// Summarize `fleet` slot by slot (a slot's first row is its current worker or its empty
/// place; outgoing workers of a reload follow it and are not counted).
pub fn summarize(fleet: &Fleet) -> Summary {
    let mut settled = !fleet.apps.is_empty();
    let mut parts = Vec::with_capacity(fleet.apps.len());
    for app in &fleet.apps {
        let mut slots: BTreeMap<u16, &WorkerSnapshot> = BTreeMap::new();
        for w in &app.workers {
            slots.entry(w.slot).or_insert(w);
        }
        let count = |state: WorkerState| slots.values().filter(|w| w.state == state).count();
        settled &= slots.values().all(|w| {
            matches!(
                w.state,
                WorkerState::Ready | WorkerState::Errored | WorkerState::Stopped
            )
        });
        let mut part = format!(
            "{} {}/{} ready",
            app.name,
            count(WorkerState::Ready),
            slots.len()
        );
        for state in [
            WorkerState::Starting,
            WorkerState::Waiting,
            WorkerState::Draining,
            WorkerState::Stopping,
            WorkerState::Stopped,
        ] {
            let n = count(state);
            if n > 0 {
                let _ = write!(part, ", {n} {}", state.as_str());
            }
        }
        let errored: Vec<&WorkerSnapshot> = slots
            .values()
            .copied()
            .filter(|w| w.state == WorkerState::Errored)
            .collect();
        if !errored.is_empty() {
            let _ = write!(part, ", {} errored", errored.len());
            if let Some(reason) = errored
                .iter()
                .find_map(|w| w.last_exit.as_deref())
                .map(reason_excerpt)
                .filter(|r| !r.is_empty())
            {
                let _ = write!(part, ": {reason}");
            }
        }
        parts.push(part);
    }
    Summary {
        settled,
        text: parts.join("; "),
    }
}

/// The beginning of a `last_exit` text: up to its first `;` (`exit code 1; stderr: …` →
/// `exit code 1`) or line end, control characters removed, at most [`REASON_CHARS`].
fn reason_excerpt(last_exit: &str) -> String {
    let head = last_exit
        .split([';', '\n', '\r'])
        .next()
        .unwrap_or_default();
    let mut out: String = head
        .chars()
        .filter(|c| !c.is_control())
        .take(REASON_CHARS)
        .collect();
    if head.chars().filter(|c| !c.is_control()).count() > REASON_CHARS {
        out.push('…');
    }
    out.trim().to_string()
}

/// One line, no control characters (a newline would end the STATUS= assignment), bounded.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(STATUS_CHARS)
        .collect()
}

impl Notifier {
    /// Enabled when `NOTIFY_SOCKET` is set; STATUS= lines describe `fleet`.
    pub fn from_env(fleet: watch::Receiver<Fleet>) -> Self {
        Self::new(
            std::env::var_os("NOTIFY_SOCKET")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            fleet,
        )
    }

    /// A notifier sending to `socket` (`None`: silent).
    fn new(socket: Option<PathBuf>, fleet: watch::Receiver<Fleet>) -> Self {
        Self {
            shared: Arc::new(Shared {
                socket,
                stopping: AtomicBool::new(false),
            }),
            fleet,
        }
    }

    fn send(&self, states: &[NotifyState]) {
        let Some(socket) = &self.shared.socket else {
            return;
        };
        let mut msg = String::new();
        for s in states {
            let _ = writeln!(msg, "{s}");
        }
        if let Err(e) = send_datagram(socket, msg.as_bytes()) {
            debug!(error = %e, socket = %socket.display(), "sd_notify failed");
        }
    }

    /// The fleet's summary, prefixed by what the daemon is doing (`reloading: `, `stopping: `).
    fn status_line(&self) -> Summary {
        let fleet = self.fleet.borrow();
        let mut summary = summarize(&fleet);
        if self.shared.stopping.load(Ordering::SeqCst) {
            summary.text = format!("stopping: {}", summary.text);
        } else if fleet.reloading {
            summary.text = format!("reloading: {}", summary.text);
        }
        summary.text = one_line(&summary.text);
        summary
    }

    /// READY=1 with a STATUS= line: `what`, then the fleet's summary.
    pub fn ready(&self, what: &str) {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let text = one_line(&format!("{what}: {}", summarize(&self.fleet.borrow()).text));
        self.send(&[NotifyState::Ready, NotifyState::Status(&text)]);
    }

    /// RELOADING=1 with MONOTONIC_USEC, as sd_notify(3) asks (the service manager uses the
    /// timestamp to order the reload against the READY=1 that ends it).
    pub fn reloading(&self) {
        let text = one_line(&format!(
            "reloading: {}",
            summarize(&self.fleet.borrow()).text
        ));
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now, NotifyState::Status(&text)]),
            Err(_) => self.send(&[NotifyState::Reloading, NotifyState::Status(&text)]),
        }
    }

    /// STOPPING=1; no READY=1 is sent afterwards.
    pub fn stopping(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Follow the fleet: READY=1 the first time every slot has settled, and STATUS= whenever
    /// the summary changes (at most once per [`STATUS_EVERY`]). Ends with the supervisor.
    pub fn spawn_status(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().follow_fleet())
    }

    async fn follow_fleet(self) {
        let mut fleet = self.fleet.clone();
        let mut ready_sent = false;
        let mut last: Option<(Instant, String)> = None;
        loop {
            fleet.mark_unchanged();
            let summary = self.status_line();
            let now = Instant::now();
            let mut wake = None;
            let stopping = self.shared.stopping.load(Ordering::SeqCst);
            if !ready_sent && summary.settled && !stopping {
                info!(status = %summary.text, "every slot settled: READY=1");
                self.send(&[NotifyState::Ready, NotifyState::Status(&summary.text)]);
                ready_sent = true;
                last = Some((now, summary.text));
            } else if !summary.text.is_empty()
                && last.as_ref().is_none_or(|(_, t)| *t != summary.text)
            {
                let due = last.as_ref().map_or(now, |(at, _)| *at + STATUS_EVERY);
                if now >= due {
                    self.send(&[NotifyState::Status(&summary.text)]);
                    last = Some((now, summary.text));
                } else {
                    wake = Some(due);
                }
            }
            tokio::select! {
                changed = fleet.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
            }
        }
    }

    /// If systemd asked for a watchdog (`WATCHDOG_USEC`): every quarter period, ping the
    /// supervisor's actor and send WATCHDOG=1 only if it answered within a quarter period.
    pub fn spawn_watchdog(
        &self,
        supervisor: SupervisorHandle,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.shared.socket.as_ref()?;
        let period = sd_notify::watchdog_enabled()?;
        info!(period = ?period, "systemd watchdog enabled; pings go through the supervisor");
        Some(tokio::spawn(self.clone().watchdog(period, move || {
            let supervisor = supervisor.clone();
            async move { supervisor.ping().await.is_ok() }
        })))
    }

    /// Send WATCHDOG=1 after every `ping` that answers `true` within a quarter of `period`.
    async fn watchdog<F, Fut>(self, period: Duration, mut ping: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let every = (period / 4).max(Duration::from_millis(10));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match tokio::time::timeout(every, ping()).await {
                Ok(true) => {
                    if failing {
                        info!("the supervisor answers again; WATCHDOG=1 resumes");
                        failing = false;
                    }
                    self.send(&[NotifyState::Watchdog]);
                }
                Ok(false) => {
                    if !failing {
                        warn!("the supervisor is gone; no WATCHDOG=1");
                        failing = true;
                    }
                }
                Err(_) => {
                    if !failing {
                        warn!(within = ?every, "the supervisor did not answer a ping; no WATCHDOG=1");
                        failing = true;
                    }
                }
            }
        }
    }
}

/// One datagram to the notify socket (`@name`: Linux abstract namespace).
fn send_datagram(socket: &std::path::Path, msg: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_os_str().as_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(msg, &addr)?
        }
        None => sock.send_to(msg, socket)?,
    };
    if sent == msg.len() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            "incomplete notify datagram",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use supervisor::AppSnapshot;

    fn worker(slot: u16, state: WorkerState, last_exit: Option<&str>) -> WorkerSnapshot {
        WorkerSnapshot {
            slot,
            generation: 1,
            pid: None,
            port: 5000 + slot,
            state,
            restarts: 0,
            started_at: None,
            memory_bytes: 0,
            cpu_percent: 0.0,
            last_exit: last_exit.map(str::to_string),
            over_memory: false,
        }
    }

    fn app(name: &str, workers: Vec<WorkerSnapshot>) -> AppSnapshot {
        AppSnapshot {
            name: name.into(),
            workers,
        }
    }

    #[test]
    fn an_errored_app_settles_and_is_named_with_its_exit() {
        let crash = Some("exit code 1; stderr: fixture stderr\nsecond line");
        let fleet = Fleet {
            apps: vec![
                app(
                    "chat",
                    (0..4)
                        .map(|i| worker(i, WorkerState::Ready, None))
                        .collect(),
                ),
                app(
                    "api",
                    (0..2)
                        .map(|i| worker(i, WorkerState::Errored, crash))
                        .collect(),
                ),
            ],
            reloading: false,
        };
        assert_eq!(
            summarize(&fleet),
            Summary {
                settled: true,
                text: "chat 4/4 ready; api 0/2 ready, 2 errored: exit code 1".into()
            }
        );
    }

    #[test]
    fn waiting_starting_and_stopping_are_not_settled() {
        for state in [
            WorkerState::Waiting,
            WorkerState::Starting,
            WorkerState::Stopping,
        ] {
            let fleet = Fleet {
                apps: vec![app(
                    "chat",
                    vec![worker(0, WorkerState::Ready, None), worker(1, state, None)],
                )],
                reloading: false,
            };
            let s = summarize(&fleet);
            assert!(!s.settled, "{state:?}");
            assert_eq!(s.text, format!("chat 1/2 ready, 1 {}", state.as_str()));
        }
        assert!(
            !summarize(&Fleet::default()).settled,
            "nothing published yet"
        );
    }

    #[test]
    fn a_reloads_outgoing_worker_is_not_counted() {
        // Slot 0 is being replaced: its new worker is ready, the old one drains behind it.
        let fleet = Fleet {
            apps: vec![app(
                "chat",
                vec![
                    worker(0, WorkerState::Ready, None),
                    worker(0, WorkerState::Draining, None),
                    worker(1, WorkerState::Ready, None),
                ],
            )],
            reloading: true,
        };
        assert_eq!(
            summarize(&fleet),
            Summary {
                settled: true,
                text: "chat 2/2 ready".into()
            }
        );
    }

    #[test]
    fn reasons_are_one_short_line() {
        assert_eq!(reason_excerpt("signal 9 (SIGKILL)"), "signal 9 (SIGKILL)");
        assert_eq!(reason_excerpt("boom\nSTATUS=forged"), "boom");
        let long = "x".repeat(200);
        assert_eq!(reason_excerpt(&long).chars().count(), REASON_CHARS + 1);
        assert_eq!(one_line("a\nREADY=1"), "a READY=1");
    }

    /// A notifier sending to a datagram socket the test reads.
    fn listening() -> (tempfile::TempDir, UnixDatagram, Notifier) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_nonblocking(true).expect("nonblocking");
        let (_tx, rx) = watch::channel(Fleet::default());
        (dir, sock, Notifier::new(Some(path), rx))
    }

    /// The messages received so far.
    /// Let a ping in flight finish, then nothing more may come for several periods.
    async fn assert_silent(sock: &UnixDatagram, period: Duration, why: &str) {
        tokio::time::sleep(period).await;
        drain(sock);
        tokio::time::sleep(period * 4).await;
        assert_eq!(drain(sock), Vec::<String>::new(), "{why}");
    }

    fn drain(sock: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    /// Poll `sock` until `count` WATCHDOG=1 messages arrived, or fail after `within`.
    async fn watchdogs(sock: &UnixDatagram, count: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        let mut seen = 0;
        while seen < count && Instant::now() < deadline {
            seen += drain(sock)
                .iter()
                .filter(|m| m.as_str() == "WATCHDOG=1\n")
                .count();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    }

    #[tokio::test]
    async fn watchdog_pings_only_while_the_actor_answers() {
        let (_dir, sock, notifier) = listening();
        let (tx, rx) = watch::channel(true);
        let period = Duration::from_millis(80);
        let task = tokio::spawn(notifier.watchdog(period, move || {
            let answering = *rx.borrow();
            async move {
                if answering {
                    true
                } else {
                    // A stuck actor: the ping never completes.
                    std::future::pending::<bool>().await
                }
            }
        }));
        assert!(watchdogs(&sock, 3, Duration::from_secs(10)).await >= 3);
        tx.send(false).expect("send");
        assert_silent(&sock, period, "no WATCHDOG=1 when stuck").await;
        let _ = tx.send(true);
        assert!(
            watchdogs(&sock, 1, Duration::from_secs(10)).await >= 1,
            "pings resume when the actor answers again"
        );
        task.abort();
    }

    #[tokio::test]
    async fn watchdog_stops_when_the_supervisor_is_gone() {
        let logs = tempfile::tempdir().expect("tempdir");
        let (handle, actor) = supervisor::Supervisor::spawn(
            supervisor::SupervisorSpec {
                apps: Vec::new(),
                logs: supervisor::LogSpec {
                    dir: logs.path().to_path_buf(),
                    max_size: 1 << 20,
                    keep: 1,
                },
                reserved_ports: Vec::new(),
            },
            Arc::new(NoSessions),
        );
        let (_dir, sock, notifier) = listening();
        let period = Duration::from_millis(80);
        let ping = handle.clone();
        let task = tokio::spawn(notifier.watchdog(period, move || {
            let ping = ping.clone();
            async move { ping.ping().await.is_ok() }
        }));
        assert!(
            watchdogs(&sock, 3, Duration::from_secs(10)).await >= 3,
            "pings while the actor runs"
        );
        handle.stop().await;
        actor.await.expect("actor ended");
        assert_silent(&sock, period, "no WATCHDOG=1 after the actor ended").await;
        task.abort();
    }

    struct NoSessions;

    impl supervisor::DrainGate for NoSessions {
        fn sessions(&self, _app: &str, _slot: u16, _generation: u64) -> Option<u64> {
            None
        }
    }

    #[tokio::test]
    async fn status_follows_the_fleet_and_ready_comes_once_settled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_nonblocking(true).expect("nonblocking");
        let (tx, rx) = watch::channel(Fleet::default());
        let notifier = Notifier::new(Some(path), rx);
        let task = notifier.spawn_status();
        let fleet = |states: &[WorkerState]| Fleet {
            apps: vec![app(
                "api",
                states
                    .iter()
                    .enumerate()
                    .map(|(i, s)| worker(i as u16, *s, Some("exit code 3")))
                    .collect(),
            )],
            reloading: false,
        };
        tx.send(fleet(&[WorkerState::Ready, WorkerState::Waiting]))
            .expect("send");
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.iter().any(|m: &String| m.contains("STATUS=api 1/2")) {
            assert!(Instant::now() < deadline, "no status: {seen:?}");
            seen.extend(drain(&sock));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!seen.iter().any(|m| m.contains("READY=1")), "{seen:?}");
        tx.send(fleet(&[WorkerState::Ready, WorkerState::Errored]))
            .expect("send");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.iter().any(|m| m.contains("READY=1")) {
            assert!(Instant::now() < deadline, "no READY=1: {seen:?}");
            seen.extend(drain(&sock));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ready = seen
            .iter()
            .find(|m| m.contains("READY=1"))
            .expect("ready message");
        assert_eq!(
            ready,
            "READY=1\nSTATUS=api 1/2 ready, 1 errored: exit code 3\n"
        );
        // Fleet changes are not sent more often than once per STATUS_EVERY.
        let before = seen.len();
        let start = Instant::now();
        for _ in 0..20 {
            tx.send(fleet(&[WorkerState::Ready, WorkerState::Starting]))
                .expect("send");
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send(fleet(&[WorkerState::Ready, WorkerState::Waiting]))
                .expect("send");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen.extend(drain(&sock));
        let sent = seen.len() - before;
        let allowed = 1 + (start.elapsed().as_millis() / STATUS_EVERY.as_millis()) as usize;
        assert!(sent <= allowed, "{sent} updates in {:?}", start.elapsed());
        task.abort();
    }
}
