//! The sid table: engine.io session id → owning backend, learned from handshake responses.
//!
//! A sync sharded map (DashMap): it is written from pingora's synchronous body filter. An entry
//! lives while requests keep coming or a WebSocket of the session is open; it expires after the
//! session's `pingInterval + pingTimeout` of silence. The table has a hard size bound, kept
//! with an atomic count. A full table refuses the new entry at once (the session then relies
//! on its affinity cookie; refusals are counted) and asks the sweeper task for a sweep, at most
//! once per [`FULL_SWEEP_EVERY`]; the sweeper also runs [`SidTable::sweep`] periodically. No
//! request ever does work that grows with the number of sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::loads::Loads;

/// Default silence after which a session is forgotten: engine.io's 25 s + 20 s.
pub const DEFAULT_LIVENESS: Duration = Duration::from_secs(45);
/// Default hard bound on entries.
pub const DEFAULT_MAX_SESSIONS: usize = 1_000_000;
/// Least time between two sweeps a full table asks for.
pub const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Entry {
    backend: Arc<str>,
    /// Milliseconds since the table's epoch of the last request.
    last_seen: AtomicU64,
    liveness_ms: u64,
    websockets: AtomicU32,
}

/// Sessions and their owners.
#[derive(Debug)]
pub struct SidTable {
    /// Hashed with foldhash (randomly seeded) rather than SipHash: its keys are the sids
    /// the workers generate, never bytes a client chooses (a client's sid is only looked up).
    map: DashMap<Box<str>, Entry, foldhash::fast::RandomState>,
    /// Entries in `map` (DashMap's own `len` visits every shard).
    count: AtomicUsize,
    /// Milliseconds since `epoch` of the last sweep a full table asked for, plus one (0: never).
    last_full_sweep: AtomicU64,
    /// Where a full table asks the sweeper task for a sweep now.
    sweep_wanted: Arc<Notify>,
    /// New sessions refused because the table was full.
    pub refused: AtomicU64,
    epoch: Instant,
    max: usize,
    loads: Arc<Loads>,
}

impl SidTable {
    /// An empty table bounded to `max` entries, counting sessions into `loads`.
    pub fn new(max: usize, loads: Arc<Loads>) -> Self {
        Self {
            map: DashMap::default(),
            count: AtomicUsize::new(0),
            last_full_sweep: AtomicU64::new(0),
            sweep_wanted: Arc::default(),
            refused: AtomicU64::new(0),
            epoch: Instant::now(),
            max,
            loads,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// What the sweeper task waits on, besides its period: a full table wants a sweep now.
    pub fn sweep_wanted(&self) -> Arc<Notify> {
        self.sweep_wanted.clone()
    }

    /// Record that `sid` belongs to `backend`. Returns false when the table is full (the
    /// session then relies on the affinity cookie until a sweep makes room).
    pub fn insert(&self, sid: &str, backend: Arc<str>, liveness: Option<Duration>) -> bool {
        if !self.reserve() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            self.ask_for_sweep();
            return false;
        }
        let entry = Entry {
            backend: backend.clone(),
            last_seen: AtomicU64::new(self.now_ms()),
            liveness_ms: liveness.unwrap_or(DEFAULT_LIVENESS).as_millis() as u64,
            websockets: AtomicU32::new(0),
        };
        self.loads.add(&backend, 1);
        if let Some(old) = self.map.insert(sid.into(), entry) {
            self.loads.add(&old.backend, -1);
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }

    /// Take a place for one entry, if the table has one.
    fn reserve(&self) -> bool {
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Ask the sweeper task for a sweep because the table is full, unless a full table asked
    /// less than [`FULL_SWEEP_EVERY`] ago.
    fn ask_for_sweep(&self) {
        let now = self.now_ms().saturating_add(1);
        let last = self.last_full_sweep.load(Ordering::Acquire);
        let every = FULL_SWEEP_EVERY.as_millis() as u64;
        if last != 0 && now.saturating_sub(last) < every {
            return;
        }
        if self
            .last_full_sweep
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.sweep_wanted.notify_one();
        }
    }

    /// Every session and its owner, copied (to write them to a shared directory again).
    pub fn sessions(&self) -> Vec<(String, Arc<str>)> {
        self.map
            .iter()
            .map(|e| (e.key().to_string(), e.value().backend.clone()))
            .collect()
    }

    /// The owner of `sid`, refreshing its last-seen time.
    pub fn lookup(&self, sid: &str) -> Option<Arc<str>> {
        let e = self.map.get(sid)?;
        e.last_seen.store(self.now_ms(), Ordering::Relaxed);
        Some(e.backend.clone())
    }

    /// Forget `sid` (its owner is gone).
    pub fn remove(&self, sid: &str) {
        if let Some((_, e)) = self.map.remove(sid) {
            self.loads.add(&e.backend, -1);
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A WebSocket of `sid` opened (the entry does not expire while one is open).
    pub fn websocket_opened(&self, sid: &str) {
        if let Some(e) = self.map.get(sid) {
            e.websockets.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A WebSocket of `sid` closed.
    pub fn websocket_closed(&self, sid: &str) {
        if let Some(e) = self.map.get(sid) {
            let _ = e
                .websockets
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            e.last_seen.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Drop every silent entry past its liveness with no open WebSocket; returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.now_ms();
        let mut removed = 0;
        self.map.retain(|_, e| {
            let idle = now.saturating_sub(e.last_seen.load(Ordering::Relaxed));
            let keep = e.websockets.load(Ordering::Relaxed) > 0 || idle <= e.liveness_ms;
            if !keep {
                self.loads.add(&e.backend, -1);
                removed += 1;
            }
            keep
        });
        self.count.fetch_sub(removed, Ordering::AcqRel);
        removed
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize) -> (SidTable, Arc<Loads>) {
        let loads = Arc::new(Loads::default());
        (SidTable::new(max, loads.clone()), loads)
    }

    #[test]
    fn insert_lookup_remove_count_loads() {
        let (t, loads) = table(10);
        let a: Arc<str> = Arc::from("a");
        assert!(t.insert("s1", a.clone(), None));
        assert!(t.insert("s2", a.clone(), None));
        assert_eq!(t.lookup("s1").as_deref(), Some("a"));
        assert_eq!(loads.get("a"), 2);
        t.remove("s1");
        assert_eq!(t.lookup("s1"), None);
        assert_eq!(loads.get("a"), 1);
    }

    #[test]
    fn silent_sessions_expire_unless_a_websocket_is_open() {
        let (t, loads) = table(10);
        let a: Arc<str> = Arc::from("a");
        t.insert("quiet", a.clone(), Some(Duration::ZERO));
        t.insert("ws", a.clone(), Some(Duration::ZERO));
        t.websocket_opened("ws");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(t.sweep(), 1);
        assert_eq!(t.lookup("quiet"), None);
        assert!(t.lookup("ws").is_some());
        t.websocket_closed("ws");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(t.sweep(), 1);
        assert_eq!(loads.get("a"), 0);
    }

    #[test]
    fn the_bound_holds() {
        let (t, _) = table(2);
        let a: Arc<str> = Arc::from("a");
        assert!(t.insert("1", a.clone(), None));
        assert!(t.insert("2", a.clone(), None));
        assert!(!t.insert("3", a.clone(), None));
        assert_eq!(t.len(), 2);
        // Replacing an entry is not a new one; removing makes room.
        assert!(
            !t.insert("2", a.clone(), None),
            "full is full, even for a known sid"
        );
        t.remove("1");
        assert!(t.insert("3", a.clone(), None));
        assert_eq!(t.len(), 2);
    }

    /// Whether a sweep was asked for since the last call.
    async fn sweep_asked(t: &SidTable) -> bool {
        let wanted = t.sweep_wanted();
        tokio::select! {
            biased;
            () = wanted.notified() => true,
            () = std::future::ready(()) => false,
        }
    }

    #[tokio::test]
    async fn a_full_table_refuses_at_once_and_asks_for_a_sweep_at_most_once_a_second() {
        let (t, _) = table(2);
        let a: Arc<str> = Arc::from("a");
        assert!(t.insert("old1", a.clone(), Some(Duration::ZERO)));
        assert!(t.insert("old2", a.clone(), Some(Duration::from_secs(60))));
        assert!(!sweep_asked(&t).await);
        std::thread::sleep(Duration::from_millis(5));
        // Full: refused at once (nothing swept on the request's path), counted, a sweep asked.
        assert!(!t.insert("new1", a.clone(), None));
        assert_eq!((t.len(), t.refused.load(Ordering::Relaxed)), (2, 1));
        assert!(sweep_asked(&t).await);
        // Full again within the second: refused, counted, no second ask.
        assert!(!t.insert("new2", a.clone(), None));
        assert_eq!(t.refused.load(Ordering::Relaxed), 2);
        assert!(!sweep_asked(&t).await);
        // The sweep asked for makes room.
        assert_eq!(t.sweep(), 1);
        assert!(t.insert("new2", a.clone(), None));
        assert_eq!(t.len(), 2);
    }
}
