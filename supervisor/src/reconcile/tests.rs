//! The reconciler bare: every interleaving of the rollout cases as tables of "what is" and
//! "what is wanted", with the decisions expected.

use std::time::{Duration, SystemTime};

use super::*;
use crate::memory::Usage;
use crate::slot::{Tries, Worker};
use crate::testing::arc;

const BASE: u16 = 5000;

fn worker(generation: u64, rev: u64, port: u16, phase: Phase, spec: &Arc<AppSpec>) -> Worker {
    Worker {
        generation,
        pid: 1000 + generation as u32,
        port,
        rev,
        spec: spec.clone(),
        started: Instant::now(),
        started_at: SystemTime::UNIX_EPOCH,
        phase,
        usage: Usage::default(),
        over_memory: false,
        sampled_at: None,
    }
}

/// Slot `index` with a ready worker of generation `generation` at `rev` on `port`.
fn ready(index: u16, rev: u64, port: u16, generation: u64) -> Slot {
    let spec = arc("a", 4, BASE);
    let mut s = Slot::new(index, spec.clone(), rev);
    s.generation = generation;
    s.current = Some(worker(generation, rev, port, Phase::Ready, &spec));
    s
}

fn app(slots: Vec<Slot>) -> Vec<AppSlots> {
    vec![AppSlots {
        name: Arc::from("a"),
        slots,
    }]
}

fn wanted(instances: u16, rev: u64) -> Wanted {
    let mut w = WantedApp::new(arc("a", instances, BASE), rev);
    w.instances = instances;
    Wanted {
        apps: vec![w],
        stopping: false,
    }
}

/// The decisions as short words: `launch 0@5004 r2`, `retire 2`, …
fn words(ds: &[Decision]) -> Vec<String> {
    ds.iter()
        .map(|d| match d {
            Decision::AddApp { app } => format!("add app {app}"),
            Decision::AddSlot { index, rev, .. } => format!("add {index} r{rev}"),
            Decision::Launch {
                index, port, rev, ..
            } => format!("launch {index}@{port} r{rev}"),
            Decision::NoPort { index, .. } => format!("no port {index}"),
            Decision::Retire { index, .. } => format!("retire {index}"),
            Decision::Stop { index, .. } => format!("stop {index}"),
            Decision::RemoveSlot { index, .. } => format!("remove {index}"),
            Decision::RemoveApp { app } => format!("remove app {app}"),
        })
        .collect()
}

fn next_words(w: &Wanted, apps: &[AppSlots]) -> Vec<String> {
    words(&next(w, apps, &[8080], Instant::now()))
}

#[test]
fn a_first_start_adds_the_app_its_slots_then_launches_on_consecutive_ports() {
    let w = wanted(2, 1);
    assert_eq!(next_words(&w, &[]), vec!["add app a"]);
    assert_eq!(next_words(&w, &app(vec![])), vec!["add 0 r1", "add 1 r1"]);
    let spec = arc("a", 2, BASE);
    let slots = vec![Slot::new(0, spec.clone(), 1), Slot::new(1, spec, 1)];
    assert_eq!(
        next_words(&w, &app(slots)),
        vec!["launch 0@5000 r1", "launch 1@5001 r1"]
    );
}

#[test]
fn a_reload_rolls_one_slot_at_a_time_on_twin_ports() {
    let w = wanted(2, 2);
    let slots = vec![ready(0, 1, 5000, 1), ready(1, 1, 5001, 1)];
    assert_eq!(
        next_words(&w, &app(slots.clone())),
        vec!["launch 0@5002 r2"]
    );

    // Slot 0's replacement is starting: nothing else moves.
    let mut replacing = slots.clone();
    let spec = replacing[0].spec.clone();
    replacing[0].launched(worker(
        2,
        2,
        5002,
        Phase::Starting {
            ready_by: Instant::now() + Duration::from_secs(5),
        },
        &spec,
    ));
    assert_eq!(
        next_words(&w, &app(replacing.clone())),
        Vec::<String>::new()
    );

    // Ready (its old worker drains on 5000): slot 1 is next, on its own twin.
    replacing[0].ready(2, Instant::now());
    assert_eq!(next_words(&w, &app(replacing)), vec!["launch 1@5003 r2"]);
}

#[test]
fn a_slot_that_failed_twice_stops_the_rollout_and_keeps_its_spec() {
    let w = wanted(2, 2);
    let mut slots = vec![ready(0, 1, 5000, 3), ready(1, 1, 5001, 1)];
    slots[0].tries = Some(Tries {
        rev: 2,
        failed: 1,
        reason: "exit code 1".into(),
        generation: 3,
    });
    // One failure: the slot is tried once more.
    assert_eq!(
        next_words(&w, &app(slots.clone())),
        vec!["launch 0@5002 r2"]
    );
    slots[0].tries = Some(Tries {
        rev: 2,
        failed: MAX_TRIES,
        reason: "exit code 1".into(),
        generation: 3,
    });
    let apps = app(slots.clone());
    assert_eq!(next_words(&w, &apps), Vec::<String>::new(), "halted");
    let mut targets: Vec<Target> = (0..2)
        .map(|i| Target {
            app: Arc::from("a"),
            slot: i,
            expect: Expect::Replace,
            since: 1,
            outcome: None,
        })
        .collect();
    assert!(settle(&mut targets, 2, &w, &apps));
    assert_eq!(
        targets[0].outcome,
        Some(Outcome::Failed {
            reason: "exit code 1".into()
        })
    );
    assert!(matches!(targets[1].outcome, Some(Outcome::Skipped { .. })));

    // A crash of the failed slot restarts it with the spec in force, not the failing one.
    let mut crashed = slots;
    crashed[0].current = None;
    crashed[0].backoff_until = Some(Instant::now() - Duration::from_millis(1));
    assert_eq!(next_words(&w, &app(crashed)), vec!["launch 0@5000 r1"]);
}

#[test]
fn a_newer_reload_retries_a_slot_that_failed_an_older_one() {
    let w = wanted(1, 3);
    let mut slots = vec![ready(0, 1, 5000, 3)];
    slots[0].tries = Some(Tries {
        rev: 2,
        failed: MAX_TRIES,
        reason: "exit code 1".into(),
        generation: 3,
    });
    assert_eq!(next_words(&w, &app(slots)), vec!["launch 0@5001 r3"]);
}

#[test]
fn scale_down_retires_the_surplus_and_drops_it_once_down() {
    let w = wanted(2, 1);
    let slots: Vec<Slot> = (0..4).map(|i| ready(i, 1, BASE + i, 1)).collect();
    assert_eq!(
        next_words(&w, &app(slots.clone())),
        vec!["retire 2", "retire 3"]
    );
    let mut retiring = slots;
    let now = Instant::now();
    retiring[2].retire(now);
    retiring[3].retire(now);
    assert_eq!(next_words(&w, &app(retiring.clone())), Vec::<String>::new());
    retiring[2].leaving.clear();
    assert_eq!(next_words(&w, &app(retiring)), vec!["remove 2"]);
}

#[test]
fn scale_4_2_4_never_reuses_a_port_a_draining_worker_holds() {
    // Back to 4 while slots 2 and 3 still drain on 5002 and 5003, and slots 0 and 1 run on
    // their twins of the 2-instance layout (5002 and 5003 were taken, so 5004 and 5001).
    let w = wanted(4, 3);
    let now = Instant::now();
    let mut slots = vec![
        ready(0, 3, 5004, 2),
        ready(1, 3, 5001, 2),
        ready(2, 1, 5002, 1),
        ready(3, 1, 5003, 1),
    ];
    slots[2].retire(now);
    slots[3].retire(now);
    let ds = next_words(&w, &app(slots));
    assert_eq!(ds, vec!["launch 2@5006 r3", "launch 3@5007 r3"]);
}

#[test]
fn a_health_check_replacement_goes_even_while_another_slot_rolls() {
    let w = wanted(2, 2);
    let mut slots = vec![ready(0, 1, 5000, 1), ready(1, 2, 5001, 1)];
    slots[1].replace = Some("memory 312MB > max_memory 300MB".into());
    let ds = next_words(&w, &app(slots));
    // Slot 1 is up to date: it keeps its own spec (4 instances, so its twin is 5005).
    assert_eq!(ds, vec!["launch 0@5002 r2", "launch 1@5005 r2"]);
}

#[test]
fn backoff_errored_and_stopped_apps_start_nothing() {
    let now = Instant::now();
    let w = wanted(1, 1);
    let mut s = ready(0, 1, 5000, 1);
    s.current = None;
    s.backoff_until = Some(now + Duration::from_secs(1));
    assert_eq!(next_words(&w, &app(vec![s.clone()])), Vec::<String>::new());
    s.backoff_until = Some(now - Duration::from_millis(1));
    assert_eq!(
        next_words(&w, &app(vec![s.clone()])),
        vec!["launch 0@5000 r1"]
    );
    s.backoff_until = None;
    s.errored = true;
    assert_eq!(next_words(&w, &app(vec![s])), Vec::<String>::new());

    let mut w = wanted(1, 1);
    w.apps[0].enabled = false;
    assert_eq!(
        next_words(&w, &app(vec![ready(0, 1, 5000, 1)])),
        vec!["stop 0"]
    );
}

#[test]
fn a_removed_app_is_retired_then_forgotten_and_stopping_stops_everything() {
    let w = Wanted::default();
    let slots = vec![ready(0, 1, 5000, 1)];
    assert_eq!(next_words(&w, &app(slots.clone())), vec!["retire 0"]);
    assert_eq!(next_words(&w, &app(vec![])), vec!["remove app a"]);

    let mut w = wanted(1, 1);
    w.stopping = true;
    assert_eq!(next_words(&w, &app(slots)), vec!["stop 0"]);
    assert_eq!(
        next_words(&w, &[]),
        Vec::<String>::new(),
        "nothing is added"
    );
}

#[test]
fn no_free_port_is_a_decision_not_a_panic() {
    let mut w = wanted(1, 1);
    let mut spec = crate::testing::spec("a", 1, 65535);
    spec.port = 65535;
    w.apps[0].spec = Arc::new(spec.clone());
    let mut busy = Slot::new(0, Arc::new(spec), 1);
    busy.current = None;
    let mut other = ready(1, 1, 65535, 1);
    other.index = 1;
    w.apps[0].instances = 2;
    let ds = next_words(&w, &app(vec![busy, other]));
    assert_eq!(ds, vec!["no port 0"]);
}

#[test]
fn settle_reports_replaced_removed_and_superseded() {
    let w = wanted(1, 2);
    let slots = vec![ready(0, 2, 5002, 2), ready(1, 1, 5001, 1)];
    let apps = app(slots);
    let mut targets = vec![
        Target {
            app: Arc::from("a"),
            slot: 0,
            expect: Expect::Replace,
            since: 1,
            outcome: None,
        },
        Target {
            app: Arc::from("a"),
            slot: 1,
            expect: Expect::Replace,
            since: 1,
            outcome: None,
        },
    ];
    assert!(settle(&mut targets, 2, &w, &apps));
    assert_eq!(
        targets[0].outcome,
        Some(Outcome::Replaced { generation: 2 })
    );
    assert!(matches!(
        targets[1].outcome,
        Some(Outcome::Superseded { .. })
    ));

    // Not yet replaced: the target stays open.
    let mut open = vec![Target {
        app: Arc::from("a"),
        slot: 0,
        expect: Expect::Replace,
        since: 2,
        outcome: None,
    }];
    assert!(!settle(&mut open, 3, &wanted(1, 3), &apps));

    let mut gone = vec![Target {
        app: Arc::from("a"),
        slot: 5,
        expect: Expect::Removed,
        since: 1,
        outcome: None,
    }];
    assert!(settle(&mut gone, 2, &w, &apps));
    assert_eq!(gone[0].outcome, Some(Outcome::Removed));
}
