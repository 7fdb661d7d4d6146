//! The actor with a fake process world and tokio's paused clock: kills at every step of a
//! rollout, spawn failures, reloads in a row, scaling, apps coming and going, and 1,000
//! randomized runs that must all end with every slot settled and every request answered.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::testing::spec;

/// How a fake worker behaves, chosen by its spec's `command`.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// Ready 100 ms after spawn; exits 10 ms after SIGTERM.
    Good,
    /// Cannot be spawned (ENOENT).
    Missing,
    /// Exits with code 1 50 ms after spawn.
    Crash,
    /// Never answers its probe (no report at all: the slot's own deadline must act).
    Silent,
    /// Ready, but ignores SIGTERM (only SIGKILL ends it).
    Stubborn,
}

fn kind(command: &str) -> Kind {
    match command {
        "missing" => Kind::Missing,
        "crash" => Kind::Crash,
        "silent" => Kind::Silent,
        "stubborn" => Kind::Stubborn,
        _ => Kind::Good,
    }
}

struct Proc {
    app: Arc<str>,
    slot: u16,
    generation: u64,
    port: u16,
    kind: Kind,
    reporter: Reporter,
    exiting: bool,
}

#[derive(Default)]
struct World {
    next_pid: u32,
    live: HashMap<u32, Proc>,
    /// Spawns that found their port taken by a live process.
    port_clashes: Vec<String>,
    spawned: u32,
    /// Ports a stranger listens on.
    strangers: Vec<u16>,
    /// The supervisor's events, as written to the event logs.
    events: Vec<String>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().expect("world")
    }

    /// The process exits `after` from now with `status`, once.
    fn exit(&self, pid: u32, after: Duration, status: &str) {
        let (reporter, app, slot, generation) = {
            let mut w = self.world();
            let Some(p) = w.live.get_mut(&pid) else {
                return;
            };
            if p.exiting {
                return;
            }
            p.exiting = true;
            (p.reporter.clone(), p.app.clone(), p.slot, p.generation)
        };
        let (fake, status) = (self.clone(), status.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            fake.world().live.remove(&pid);
            reporter
                .report(app, slot, generation, WorkerEvent::Exited(status))
                .await;
        });
    }

    /// `kill -9` from outside.
    fn kill(&self, pid: u32) {
        self.exit(pid, Duration::ZERO, "signal 9 (SIGKILL)");
    }

    fn live_pids(&self) -> Vec<u32> {
        let mut p: Vec<u32> = self.world().live.keys().copied().collect();
        p.sort_unstable();
        p
    }
}

impl Effects for Fake {
    fn check_port(&mut self, port: u16) -> Result<(), String> {
        if self.world().strangers.contains(&port) {
            Err(format!("port {port} in use by pid 1 (stranger)"))
        } else {
            Ok(())
        }
    }

    fn spawn(&mut self, order: &Order<'_>, reporter: &Reporter) -> Result<u32, String> {
        let k = kind(&order.spec.command);
        if k == Kind::Missing {
            return Err(format!(
                "spawn {}: No such file or directory (os error 2)",
                order.spec.command
            ));
        }
        let pid = {
            let mut w = self.world();
            w.spawned += 1;
            w.next_pid += 1;
            let pid = 1000 + w.next_pid;
            if w.live.values().any(|p| p.port == order.port && !p.exiting) {
                let msg = format!("{}:{} port {}", order.app, order.slot, order.port);
                w.port_clashes.push(msg);
            }
            w.live.insert(
                pid,
                Proc {
                    app: order.app.clone(),
                    slot: order.slot,
                    generation: order.generation,
                    port: order.port,
                    kind: k,
                    reporter: reporter.clone(),
                    exiting: false,
                },
            );
            pid
        };
        let (app, slot, generation) = (order.app.clone(), order.slot, order.generation);
        match k {
            Kind::Crash => self.exit(pid, Duration::from_millis(50), "exit code 1; stderr: boom"),
            Kind::Good | Kind::Stubborn => {
                let (fake, reporter) = (self.clone(), reporter.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if fake.world().live.contains_key(&pid) {
                        reporter
                            .report(app, slot, generation, WorkerEvent::Ready)
                            .await;
                    }
                });
            }
            Kind::Silent | Kind::Missing => {}
        }
        Ok(pid)
    }

    fn signal(&mut self, pid: u32, signal: Signal) {
        let kind = self.world().live.get(&pid).map(|p| p.kind);
        match (kind, signal) {
            (None, _) | (Some(Kind::Stubborn), Signal::SIGTERM) => {}
            (Some(_), Signal::SIGKILL) => self.exit(pid, Duration::ZERO, "signal 9 (SIGKILL)"),
            (Some(_), _) => self.exit(pid, Duration::from_millis(10), "signal 15 (SIGTERM)"),
        }
    }

    fn watch(&mut self, _order: &Order<'_>, _reporter: &Reporter) {}

    fn event(&mut self, app: &str, line: &str) {
        self.world().events.push(format!("{app}: {line}"));
    }

    fn forget(&mut self, _app: &str, _slot: u16, _generation: u64) {}
}

/// Sessions never pin anything, unless `busy` is set.
#[derive(Default)]
struct Gate {
    busy: std::sync::atomic::AtomicBool,
    released: Mutex<Vec<(String, u16, u64, Duration)>>,
}

impl DrainGate for Gate {
    fn sessions(&self, _: &str, _: u16, _: u64) -> Option<u64> {
        Some(u64::from(
            self.busy.load(std::sync::atomic::Ordering::Relaxed),
        ))
    }
    fn release(&self, app: &str, slot: u16, generation: u64, window: Duration) {
        if let Ok(mut r) = self.released.lock() {
            r.push((app.to_string(), slot, generation, window));
        }
    }
}

fn app_spec(name: &str, instances: u16, port: u16, command: &str) -> AppSpec {
    let mut s = spec(name, instances, port);
    s.command = command.into();
    s
}

struct Rig {
    handle: SupervisorHandle,
    fake: Fake,
    gate: Arc<Gate>,
    join: JoinHandle<()>,
}

fn rig(apps: Vec<AppSpec>) -> Rig {
    let fake = Fake::default();
    let gate = Arc::new(Gate::default());
    let spec = SupervisorSpec {
        apps,
        logs: crate::spec::LogSpec {
            dir: "/nonexistent".into(),
            max_size: 1,
            keep: 1,
        },
        reserved_ports: vec![8080],
    };
    let (handle, join) = spawn_with(spec, gate.clone(), fake.clone());
    Rig {
        handle,
        fake,
        gate,
        join,
    }
}

impl Rig {
    /// Advance (paused) time until `check` holds, within `limit`.
    async fn until(&self, what: &str, limit: Duration, check: impl Fn(&Fleet) -> bool) -> Fleet {
        let deadline = Instant::now() + limit;
        loop {
            let fleet = self.handle.fleet();
            if check(&fleet) {
                return fleet;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {fleet:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn all_ready(&self, app: &str, n: usize) -> Vec<WorkerSnapshot> {
        let fleet = self
            .until(
                &format!("{n} ready workers of {app}"),
                Duration::from_secs(60),
                |f| {
                    f.apps.iter().any(|a| {
                        a.name == app
                            && a.workers.len() == n
                            && a.workers.iter().all(|w| w.state == WorkerState::Ready)
                    })
                },
            )
            .await;
        workers(&fleet, app)
    }

    async fn stop(self) {
        self.handle.stop().await;
        tokio::time::timeout(Duration::from_secs(60), self.join)
            .await
            .expect("the actor ends after stop")
            .expect("actor task");
        assert!(self.fake.live_pids().is_empty(), "every process is gone");
        assert_eq!(self.fake.world().port_clashes, Vec::<String>::new());
    }
}

fn workers(fleet: &Fleet, app: &str) -> Vec<WorkerSnapshot> {
    fleet
        .apps
        .iter()
        .find(|a| a.name == app)
        .map(|a| a.workers.clone())
        .unwrap_or_default()
}

fn pids(ws: &[WorkerSnapshot]) -> Vec<u32> {
    ws.iter().filter_map(|w| w.pid).collect()
}

fn outcomes(r: &Report) -> Vec<String> {
    r.slots
        .iter()
        .map(|s| format!("{}:{} {}", s.app, s.slot, s.outcome.word()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_rolling_reload_replaces_every_slot_and_reports_it() {
    let r = rig(vec![app_spec("a", 3, 5000, "good")]);
    let before = r.all_ready("a", 3).await;
    let report = r
        .handle
        .reload(vec![app_spec("a", 3, 5000, "good")])
        .await
        .expect("answered");
    assert_eq!(
        outcomes(&report),
        vec!["a:0 replaced", "a:1 replaced", "a:2 replaced"]
    );
    assert!(report.ok());
    let after = r.all_ready("a", 3).await;
    for p in pids(&before) {
        assert!(!pids(&after).contains(&p));
    }
    assert_eq!(
        after.iter().map(|w| w.port).collect::<Vec<_>>(),
        vec![5003, 5004, 5005],
        "each new worker on its twin port"
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn kill_9_of_the_old_worker_while_its_replacement_starts_never_hangs_the_reload() {
    let r = rig(vec![app_spec("a", 2, 5000, "good")]);
    let before = r.all_ready("a", 2).await;
    let h = r.handle.clone();
    let reload = tokio::spawn(async move { h.reload(vec![app_spec("a", 2, 5000, "good")]).await });
    r.until(
        "slot 0's replacement starting",
        Duration::from_secs(5),
        |f| {
            workers(f, "a")
                .iter()
                .any(|w| w.state == WorkerState::Starting)
        },
    )
    .await;
    r.fake.kill(before[0].pid.expect("pid"));
    let report = tokio::time::timeout(Duration::from_secs(60), reload)
        .await
        .expect("the reload is answered")
        .expect("task")
        .expect("report");
    assert_eq!(outcomes(&report), vec!["a:0 replaced", "a:1 replaced"]);
    // A second reload works too.
    let again = r.handle.reload(vec![app_spec("a", 2, 5000, "good")]).await;
    assert!(again.expect("report").ok());
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn kill_of_the_new_worker_before_ready_rolls_back_then_retries() {
    let r = rig(vec![app_spec("a", 1, 5000, "good")]);
    let before = r.all_ready("a", 1).await;
    let h = r.handle.clone();
    let reload = tokio::spawn(async move { h.reload(vec![app_spec("a", 1, 5000, "good")]).await });
    let fleet = r
        .until("the replacement starting", Duration::from_secs(5), |f| {
            workers(f, "a")
                .iter()
                .any(|w| w.state == WorkerState::Starting)
        })
        .await;
    let new = workers(&fleet, "a")
        .iter()
        .find(|w| w.state == WorkerState::Starting)
        .and_then(|w| w.pid)
        .expect("new pid");
    r.fake.kill(new);
    let report = reload.await.expect("task").expect("report");
    assert_eq!(
        outcomes(&report),
        vec!["a:0 replaced"],
        "the second try succeeded"
    );
    let after = r.all_ready("a", 1).await;
    assert_ne!(after[0].pid, before[0].pid);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_command_that_cannot_start_fails_the_reload_and_keeps_the_old_spec() {
    let r = rig(vec![app_spec("a", 2, 5000, "good")]);
    let before = r.all_ready("a", 2).await;
    let report = r
        .handle
        .reload(vec![app_spec("a", 2, 5000, "missing")])
        .await
        .expect("report");
    assert!(!report.ok());
    assert_eq!(outcomes(&report), vec!["a:0 failed", "a:1 skipped"]);
    let Outcome::Failed { reason } = &report.slots[0].outcome else {
        panic!("{report:?}")
    };
    assert!(reason.contains("spawn missing: No such file"), "{reason}");
    assert_eq!(
        pids(&r.all_ready("a", 2).await),
        pids(&before),
        "old workers kept"
    );
    // The next crash restart uses the spec in force, not the broken one.
    r.fake.kill(before[1].pid.expect("pid"));
    r.until("slot 1 back", Duration::from_secs(10), |f| {
        let ws = workers(f, "a");
        ws.len() == 2 && ws[1].state == WorkerState::Ready && ws[1].pid != before[1].pid
    })
    .await;
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_replacement_that_never_answers_its_probe_fails_on_the_slot_deadline() {
    let r = rig(vec![app_spec("a", 1, 5000, "good")]);
    let before = r.all_ready("a", 1).await;
    let t0 = Instant::now();
    let report = r
        .handle
        .reload(vec![app_spec("a", 1, 5000, "silent")])
        .await
        .expect("report");
    assert_eq!(outcomes(&report), vec!["a:0 failed"]);
    // Two tries, each bounded by listen_timeout (1 s) + grace (1 s) + the TERM/KILL time.
    assert!(Instant::now() - t0 < Duration::from_secs(10));
    assert_eq!(pids(&r.all_ready("a", 1).await), pids(&before));
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_during_a_rollout_supersedes_it_and_both_are_answered() {
    let r = rig(vec![app_spec("a", 3, 5000, "good")]);
    r.all_ready("a", 3).await;
    let h = r.handle.clone();
    let first = tokio::spawn(async move { h.reload(vec![app_spec("a", 3, 5000, "good")]).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut second_spec = app_spec("a", 3, 5000, "good");
    second_spec.args = vec!["v2".into()];
    let second = r.handle.reload(vec![second_spec]).await.expect("report");
    let first = first.await.expect("task").expect("report");
    assert!(first.ok() && second.ok(), "{first:?} {second:?}");
    assert_eq!(outcomes(&second).len(), 3);
    let fleet = r.handle.fleet();
    assert!(!fleet.reloading);
    r.all_ready("a", 3).await;
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_while_old_workers_still_drain_replaces_every_slot() {
    let r = rig(vec![app_spec("a", 2, 5000, "good")]);
    r.all_ready("a", 2).await;
    r.gate
        .busy
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let first = r.handle.reload(vec![app_spec("a", 2, 5000, "good")]).await;
    assert!(first.expect("report").ok());
    // The old workers still drain (sessions pinned); reload again at once.
    assert!(
        workers(&r.handle.fleet(), "a")
            .iter()
            .any(|w| w.state == WorkerState::Draining)
    );
    let second = r
        .handle
        .reload(vec![app_spec("a", 2, 5000, "good")])
        .await
        .expect("report");
    assert_eq!(outcomes(&second), vec!["a:0 replaced", "a:1 replaced"]);
    // Drain time up with sessions left: the gate is asked to release them over the window.
    r.until("drains over", Duration::from_secs(30), |f| {
        workers(f, "a").len() == 2
    })
    .await;
    let released = r.gate.released.lock().expect("lock").clone();
    assert!(released.iter().all(|x| x.3 == Duration::from_secs(1)));
    assert_eq!(released.len(), 4, "{released:?}");
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn scale_4_2_4_never_lands_on_a_port_still_held() {
    let r = rig(vec![app_spec("a", 4, 5000, "good")]);
    r.all_ready("a", 4).await;
    r.gate
        .busy
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let down = r
        .handle
        .reload(vec![app_spec("a", 2, 5000, "good")])
        .await
        .expect("report");
    assert_eq!(
        outcomes(&down),
        vec!["a:2 removed", "a:3 removed", "a:0 replaced", "a:1 replaced"]
    );
    let up = r
        .handle
        .reload(vec![app_spec("a", 4, 5000, "good")])
        .await
        .expect("report");
    assert!(up.ok(), "{up:?}");
    r.gate
        .busy
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let ws = r.all_ready("a", 4).await;
    let mut ports: Vec<u16> = ws.iter().map(|w| w.port).collect();
    ports.dedup();
    assert_eq!(ports.len(), 4);
    assert!(r.fake.world().port_clashes.is_empty());
    // `scale` drains too and answers per slot.
    let report = r.handle.scale("a", 3).await.expect("report");
    assert!(outcomes(&report).contains(&"a:3 removed".to_string()));
    r.all_ready("a", 3).await;
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn apps_come_and_go_on_reload_and_start_stop_one_app() {
    let r = rig(vec![app_spec("a", 1, 5000, "good")]);
    r.all_ready("a", 1).await;
    let report = r
        .handle
        .reload(vec![
            app_spec("a", 1, 5000, "good"),
            app_spec("b", 2, 6000, "good"),
        ])
        .await
        .expect("report");
    assert_eq!(
        outcomes(&report),
        vec!["a:0 replaced", "b:0 added", "b:1 added"]
    );
    r.all_ready("b", 2).await;

    let stopped = r.handle.stop_app("b").await.expect("report");
    assert_eq!(outcomes(&stopped), vec!["b:0 stopped", "b:1 stopped"]);
    let started = r.handle.start_app("b").await.expect("report");
    assert_eq!(outcomes(&started), vec!["b:0 started", "b:1 started"]);
    r.all_ready("b", 2).await;

    let report = r
        .handle
        .reload(vec![app_spec("b", 2, 6000, "good")])
        .await
        .expect("report");
    assert_eq!(
        outcomes(&report),
        vec!["b:0 replaced", "b:1 replaced", "a:0 removed"]
    );
    r.until("app a gone", Duration::from_secs(30), |f| {
        f.apps.iter().all(|a| a.name != "a")
    })
    .await;
    assert!(matches!(
        r.handle.restart("a", None, false).await,
        Err(SupervisorError::UnknownApp(_))
    ));
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn restart_rolls_and_force_replaces_all_at_once() {
    let r = rig(vec![app_spec("a", 2, 5000, "good")]);
    let before = r.all_ready("a", 2).await;
    let report = r.handle.restart("a", Some(1), false).await.expect("report");
    assert_eq!(outcomes(&report), vec!["a:1 replaced"]);
    let after = r.all_ready("a", 2).await;
    assert_eq!(after[0].pid, before[0].pid, "slot 0 untouched");

    let report = r.handle.restart("a", None, true).await.expect("report");
    assert_eq!(outcomes(&report), vec!["a:0 replaced", "a:1 replaced"]);
    assert!(matches!(
        r.handle.restart("a", Some(9), false).await,
        Err(SupervisorError::UnknownSlot { .. })
    ));
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_port_held_by_a_stranger_is_skipped() {
    let fake = Fake::default();
    fake.world().strangers.push(5000);
    let spec = SupervisorSpec {
        apps: vec![app_spec("a", 1, 5000, "good")],
        logs: crate::spec::LogSpec {
            dir: "/nonexistent".into(),
            max_size: 1,
            keep: 1,
        },
        reserved_ports: vec![],
    };
    let (handle, join) = spawn_with(spec, Arc::new(Gate::default()), fake.clone());
    let r = Rig {
        handle,
        fake,
        gate: Arc::new(Gate::default()),
        join,
    };
    let ws = r.all_ready("a", 1).await;
    assert_eq!(ws[0].port, 5001, "the twin, not the stranger's port");
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_ignores_sigterm_is_killed_and_stop_still_ends() {
    let r = rig(vec![app_spec("a", 1, 5000, "stubborn")]);
    r.all_ready("a", 1).await;
    let t0 = Instant::now();
    r.stop().await;
    assert!(
        Instant::now() - t0 <= Duration::from_secs(2),
        "kill_timeout bounds it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_ends_errored_and_a_reload_revives_it() {
    let r = rig(vec![app_spec("a", 1, 5000, "crash")]);
    r.until("errored", Duration::from_secs(60), |f| {
        workers(f, "a")
            .first()
            .is_some_and(|w| w.state == WorkerState::Errored)
    })
    .await;
    let report = r
        .handle
        .reload(vec![app_spec("a", 1, 5000, "good")])
        .await
        .expect("report");
    assert_eq!(outcomes(&report), vec!["a:0 replaced"]);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_app_whose_command_cannot_start_is_reported_failed_promptly() {
    let r = rig(vec![app_spec("a", 1, 5000, "good")]);
    r.all_ready("a", 1).await;
    let t0 = Instant::now();
    let report = r
        .handle
        .reload(vec![
            app_spec("a", 1, 5000, "good"),
            app_spec("b", 1, 6000, "missing"),
        ])
        .await
        .expect("report");
    assert_eq!(outcomes(&report), vec!["a:0 replaced", "b:0 failed"]);
    assert!(
        Instant::now() - t0 < Duration::from_secs(2),
        "two tries, not the whole crash loop: {:?}",
        Instant::now() - t0
    );
    let report = r.handle.scale("b", 3).await.expect("report");
    assert!(!report.ok());
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn after_a_failed_reload_scale_start_and_restart_run_the_spec_in_force() {
    let r = rig(vec![app_spec("a", 2, 5000, "good")]);
    r.all_ready("a", 2).await;
    let failed = r
        .handle
        .reload(vec![app_spec("a", 2, 5000, "missing")])
        .await
        .expect("report");
    assert!(!failed.ok());
    let report = r.handle.scale("a", 3).await.expect("report");
    assert_eq!(
        outcomes(&report),
        vec!["a:0 unchanged", "a:1 unchanged", "a:2 added"]
    );
    r.all_ready("a", 3).await;

    assert!(r.handle.stop_app("a").await.expect("report").ok());
    let started = r.handle.start_app("a").await.expect("report");
    assert_eq!(
        outcomes(&started),
        vec!["a:0 started", "a:1 started", "a:2 started"],
        "no stale failure from the earlier reload"
    );
    let before = r.all_ready("a", 3).await;
    let forced = r.handle.restart("a", None, true).await.expect("report");
    assert_eq!(
        outcomes(&forced),
        vec!["a:0 replaced", "a:1 replaced", "a:2 replaced"]
    );
    let after = r.all_ready("a", 3).await;
    assert!(pids(&after).iter().all(|p| !pids(&before).contains(p)));
    let rolled = r.handle.restart("a", None, false).await.expect("report");
    assert!(rolled.ok(), "{rolled:?}");
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn starting_a_stopped_app_whose_new_config_is_broken_runs_the_old_one() {
    let r = rig(vec![app_spec("a", 2, 5000, "good")]);
    r.all_ready("a", 2).await;
    assert!(r.handle.stop_app("a").await.expect("report").ok());
    let reload = r
        .handle
        .reload(vec![app_spec("a", 2, 5000, "missing")])
        .await
        .expect("report");
    assert_eq!(outcomes(&reload), vec!["a:0 unchanged", "a:1 unchanged"]);
    let started = r.handle.start_app("a").await.expect("report");
    assert_eq!(
        outcomes(&started),
        vec!["a:0 started", "a:1 started"],
        "the report says how the slots end: running, on the spec in force"
    );
    r.all_ready("a", 2).await;
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn scaling_back_up_while_slots_drain_waits_for_the_new_workers() {
    let r = rig(vec![app_spec("a", 4, 5000, "good")]);
    r.all_ready("a", 4).await;
    r.gate
        .busy
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let down = r.handle.scale("a", 2).await.expect("report");
    assert_eq!(
        outcomes(&down),
        vec![
            "a:0 unchanged",
            "a:1 unchanged",
            "a:2 removed",
            "a:3 removed"
        ]
    );
    let up = r.handle.scale("a", 4).await.expect("report");
    assert_eq!(
        outcomes(&up),
        vec!["a:0 unchanged", "a:1 unchanged", "a:2 added", "a:3 added"]
    );
    let fleet = r.handle.fleet();
    let ws = workers(&fleet, "a");
    for slot in [2, 3] {
        assert!(
            ws.iter()
                .any(|w| w.slot == slot && w.state == WorkerState::Ready),
            "answered once slot {slot} has a ready worker: {ws:#?}"
        );
    }
    assert!(matches!(
        r.handle.scale("a", 65535).await,
        Err(SupervisorError::Invalid(_))
    ));
    r.stop().await;
}

/// A tiny deterministic generator (xorshift64*), so each randomized run can be replayed from
/// its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One randomized run: random kills, spawn failures, reloads, scales and restarts at random
/// times; then the world calms down and every invariant must hold.
async fn random_run(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let commands = [
        "good", "good", "good", "missing", "crash", "silent", "stubborn",
    ];
    let mut instances = 1 + rng.below(3) as u16;
    let r = rig(vec![app_spec("a", instances, 5000, "good")]);
    let mut answers = Vec::new();
    let mut enabled = true;
    let trace = std::env::var_os("RTSUP_RANDOM_TRACE").is_some();
    for _ in 0..(5 + rng.below(15)) {
        tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
        let step = rng.below(8);
        if trace {
            eprintln!(
                "{:?} step {step} fleet {:?}",
                Instant::now(),
                r.handle.fleet()
            );
        }
        match step {
            6 => {
                enabled = !enabled;
                let h = r.handle.clone();
                let on = enabled;
                answers.push(tokio::spawn(async move {
                    let report = if on {
                        h.start_app("a").await
                    } else {
                        h.stop_app("a").await
                    };
                    report.map(|_| ())
                }));
            }
            7 => {
                // A restart starts a stopped app again.
                enabled = true;
                let h = r.handle.clone();
                answers.push(tokio::spawn(async move {
                    h.restart("a", Some(0), false).await.map(|_| ())
                }));
            }
            0 | 1 => {
                let live = r.fake.live_pids();
                if !live.is_empty() {
                    r.fake.kill(live[rng.below(live.len() as u64) as usize]);
                }
            }
            2 => {
                instances = 1 + rng.below(4) as u16;
                let command = commands[rng.below(commands.len() as u64) as usize];
                let h = r.handle.clone();
                let specs = vec![app_spec("a", instances, 5000, command)];
                answers.push(tokio::spawn(
                    async move { h.reload(specs).await.map(|_| ()) },
                ));
            }
            3 => {
                enabled = true;
                let h = r.handle.clone();
                let force = rng.below(2) == 0;
                answers.push(tokio::spawn(async move {
                    match h.restart("a", None, force).await {
                        Ok(_) | Err(SupervisorError::UnknownSlot { .. }) => Ok(()),
                        Err(e) => Err(e),
                    }
                }));
            }
            4 => {
                instances = 1 + rng.below(4) as u16;
                let h = r.handle.clone();
                let n = instances;
                answers.push(tokio::spawn(
                    async move { h.scale("a", n).await.map(|_| ()) },
                ));
            }
            _ => {
                // A good reload at the end of a burst brings broken specs back.
                let h = r.handle.clone();
                let specs = vec![app_spec("a", instances, 5000, "good")];
                answers.push(tokio::spawn(
                    async move { h.reload(specs).await.map(|_| ()) },
                ));
            }
        }
    }
    for a in answers {
        let answered = tokio::time::timeout(Duration::from_secs(600), a).await;
        let result = answered
            .unwrap_or_else(|_| panic!("seed {seed}: a request was never answered"))
            .expect("task");
        assert!(result.is_ok(), "seed {seed}: {result:?}");
    }
    // Let crash backoffs and drains finish.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let fleet = r.handle.fleet();
    let ws = workers(&fleet, "a");
    assert!(!fleet.reloading, "seed {seed}: a request still pending");
    if enabled {
        assert_eq!(
            ws.len(),
            usize::from(instances),
            "seed {seed}: one worker per wanted slot, nothing left draining: {ws:#?}"
        );
    } else {
        assert!(
            ws.len() <= usize::from(instances).max(1),
            "seed {seed}: a stopped app keeps at most its wanted slots: {ws:#?}"
        );
    }
    for w in &ws {
        let settled = if enabled {
            matches!(w.state, WorkerState::Ready | WorkerState::Errored)
        } else {
            w.state == WorkerState::Stopped
        };
        assert!(
            settled,
            "seed {seed}: slot {} settled as {:?}: {ws:#?}",
            w.slot, w.state
        );
    }
    let live = r.fake.live_pids();
    let mut running: Vec<u32> = ws.iter().filter_map(|w| w.pid).collect();
    running.sort_unstable();
    assert_eq!(
        live, running,
        "seed {seed}: no orphan, no process untracked"
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_thousand_randomized_runs_settle_and_answer_everything() {
    let runs: u64 = std::env::var("RTSUP_RANDOM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let first: u64 = std::env::var("RTSUP_RANDOM_FIRST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for seed in first..first + runs {
        random_run(seed).await;
    }
}
