//! Releasing a draining backend's WebSockets gradually, so its clients do not all reconnect in
//! the same millisecond when the worker finally stops.
//!
//! Each WebSocket runs as a tunnel on a task of its own ([`crate::tunnel`]), which holds a
//! [`ReleaseSignal`]. Releasing a connection sets the signal and wakes that task: the tunnel
//! passes on what the worker already sent, appends a WebSocket close frame (1001) for the
//! client and closes both connections, so the worker sees its transport end.
//!
//! [`Upgrades`] is the registry: connections register when their 101 passes, unregister when
//! the WebSocket ends; [`Upgrades::release`] marks a backend released and closes its open
//! connections spread evenly over a window on the runtime the proxy was started from, and
//! closes at once any connection to it that opens later.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Waker;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::runtime::Handle;
use tracing::debug;

/// Something the registry can close.
pub(crate) trait Close: Send + Sync {
    /// End the connection now (idempotent, non-blocking).
    fn close(&self);
}

/// The release switch of one WebSocket: set from any thread, seen by its tunnel, which it
/// wakes. Held strongly only by its request's context (which the tunnel keeps), so the registry
/// never keeps an ended one.
#[derive(Debug, Default)]
pub(crate) struct ReleaseSignal {
    released: AtomicBool,
    waker: AtomicWaker,
}

impl ReleaseSignal {
    /// Whether the balancer ended this connection (so its end is ours to announce).
    pub(crate) fn released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// Wake `waker` (the tunnel's task) when released.
    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }
}

impl Close for ReleaseSignal {
    fn close(&self) {
        self.released.store(true, Ordering::Release);
        self.waker.wake();
    }
}

#[derive(Default)]
struct Conns {
    open: HashMap<u64, Weak<dyn Close>>,
    released: bool,
}

/// The open upgraded (WebSocket) connections of every backend, closable from any thread.
pub struct Upgrades {
    backends: Mutex<HashMap<Arc<str>, Conns>>,
    next_id: AtomicU64,
    runtime: Handle,
    /// WebSockets registered and not yet ended (released ones included).
    live: AtomicUsize,
    /// The proxy is stopping: every WebSocket, of any backend, is closed as it registers.
    stopping: AtomicBool,
}

impl std::fmt::Debug for Upgrades {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrades").finish_non_exhaustive()
    }
}

impl Upgrades {
    /// A registry whose delayed closes run on `runtime`.
    pub(crate) fn new(runtime: Handle) -> Self {
        Self {
            backends: Mutex::default(),
            next_id: AtomicU64::new(1),
            runtime,
            live: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    /// A fresh connection id (never 0).
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Conns>> {
        self.backends.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connection `id` to `backend` is upgraded. Closed at once when `backend` was released.
    pub(crate) fn opened(&self, backend: &Arc<str>, id: u64, conn: Weak<dyn Close>) {
        self.live.fetch_add(1, Ordering::AcqRel);
        let released = {
            let mut map = self.lock();
            let conns = map.entry(backend.clone()).or_default();
            let released = conns.released || self.stopping.load(Ordering::Acquire);
            if !released {
                conns.open.insert(id, conn.clone());
            }
            released
        };
        if released && let Some(c) = conn.upgrade() {
            debug!(%backend, "closing a connection to a released backend");
            c.close();
        }
    }

    /// Connection `id` to `backend` ended.
    pub(crate) fn closed(&self, backend: &str, id: u64) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        if let Some(conns) = self.lock().get_mut(backend) {
            conns.open.remove(&id);
        }
    }

    /// The proxy is stopping: close every open WebSocket at once (each client gets the 1001
    /// close frame) and any that opens later. Returns how many.
    pub(crate) fn release_all(&self) -> usize {
        let conns: Vec<Weak<dyn Close>> = {
            let mut map = self.lock();
            self.stopping.store(true, Ordering::Release);
            map.values_mut()
                .flat_map(|c| {
                    c.released = true;
                    c.open.drain().map(|(_, w)| w)
                })
                .collect()
        };
        for conn in &conns {
            if let Some(c) = conn.upgrade() {
                c.close();
            }
        }
        conns.len()
    }

    /// WebSockets registered that have not ended yet.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Close every open WebSocket to `backend_id`, spread evenly over `window` (connection k
    /// of n at k·window/n from now; a zero window closes them all at once), and from now on
    /// close any new one at once. Returns how many it will close; the closes happen in the
    /// background, so this returns at once and may be called from any thread.
    ///
    /// Each client gets a WebSocket close frame (1001 "going away") and the worker sees its
    /// connection end. Calling it again for the same backend returns 0.
    pub fn release(&self, backend_id: &str, window: Duration) -> usize {
        let conns: Vec<Weak<dyn Close>> = {
            let mut map = self.lock();
            let conns = map.entry(Arc::from(backend_id)).or_default();
            conns.released = true;
            conns
                .open
                .drain()
                .map(|(_, c)| c)
                .filter(|c| c.strong_count() > 0)
                .collect()
        };
        let n = conns.len();
        debug!(backend = backend_id, n, ?window, "releasing WebSockets");
        if n > 0 {
            self.runtime.spawn(close_spread(conns, window));
        }
        n
    }

    /// Open WebSockets to `backend_id` that are not being released.
    pub fn open(&self, backend_id: &str) -> usize {
        self.lock().get(backend_id).map_or(0, |c| {
            c.open.values().filter(|w| w.strong_count() > 0).count()
        })
    }

    /// Forget backends not in `keep` (called when the backend set changes).
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|id, _| keep(id));
    }
}

/// When connection `k` of `n` is closed in a release over `window`.
pub(crate) fn close_offset(k: usize, n: usize, window: Duration) -> Duration {
    let nanos = window.as_nanos() * k as u128 / n.max(1) as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

async fn close_spread(conns: Vec<Weak<dyn Close>>, window: Duration) {
    let start = tokio::time::Instant::now();
    let n = conns.len();
    for (k, conn) in conns.into_iter().enumerate() {
        tokio::time::sleep_until(start + close_offset(k, n, window)).await;
        if let Some(c) = conn.upgrade() {
            c.close();
        }
    }
    debug!(n, "release done");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// Records when it was closed.
    struct Probe {
        closed: Mutex<Vec<Instant>>,
    }

    impl Close for Probe {
        fn close(&self) {
            self.closed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Instant::now());
        }
    }

    fn probe() -> Arc<Probe> {
        Arc::new(Probe {
            closed: Mutex::new(Vec::new()),
        })
    }

    fn closes(p: &Probe) -> Vec<Instant> {
        p.closed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn register(u: &Upgrades, backend: &str, n: usize) -> Vec<Arc<Probe>> {
        let id: Arc<str> = Arc::from(backend);
        (0..n)
            .map(|_| {
                let p = probe();
                let w: Weak<dyn Close> = Arc::downgrade(&p) as Weak<dyn Close>;
                u.opened(&id, u.next_id(), w);
                p
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn spreads_closes_evenly_over_the_window() {
        let u = Upgrades::new(Handle::current());
        let conns = register(&u, "a", 2000);
        let others = register(&u, "b", 10);
        assert_eq!(u.open("a"), 2000);
        let t0 = Instant::now();
        assert_eq!(u.release("a", Duration::from_secs(5)), 2000);
        assert_eq!(u.open("a"), 0);
        tokio::time::sleep(Duration::from_secs(6)).await;

        let mut buckets = [0usize; 50];
        for c in &conns {
            let at = closes(c);
            assert_eq!(at.len(), 1, "closed exactly once");
            let ms = at[0].duration_since(t0).as_millis() as usize;
            assert!(ms < 5000, "closed within the window: {ms} ms");
            buckets[ms / 100] += 1;
        }
        assert!(buckets.iter().all(|&b| b == 40), "{buckets:?}");
        assert!(others.iter().all(|c| closes(c).is_empty()));
        assert_eq!(u.open("b"), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_window_closes_everything_at_once() {
        let u = Upgrades::new(Handle::current());
        let conns = register(&u, "a", 100);
        let t0 = Instant::now();
        assert_eq!(u.release("a", Duration::ZERO), 100);
        tokio::time::sleep(Duration::from_millis(1)).await;
        for c in &conns {
            assert_eq!(closes(c), vec![t0]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn later_connections_close_at_once_and_ended_ones_are_skipped() {
        let u = Upgrades::new(Handle::current());
        let mut conns = register(&u, "a", 3);
        // One ends by itself before the release, one during it.
        let ended = conns.remove(0);
        drop(ended);
        let id: Arc<str> = Arc::from("a");
        let p = probe();
        let pid = u.next_id();
        u.opened(&id, pid, Arc::downgrade(&p) as Weak<dyn Close>);
        u.closed("a", pid);
        assert_eq!(u.release("a", Duration::from_secs(1)), 2);
        drop(conns.pop());
        let t0 = Instant::now();
        let late = register(&u, "a", 1);
        assert_eq!(closes(&late[0]), vec![t0], "closed on registration");
        assert_eq!(u.open("a"), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(closes(&conns[0]).len(), 1);
        assert!(closes(&p).is_empty());
        assert_eq!(u.release("a", Duration::from_secs(1)), 0, "nothing left");
        u.retain(|id| id != "a");
        let fresh = register(&u, "a", 1);
        assert!(
            closes(&fresh[0]).is_empty(),
            "a forgotten backend is not released"
        );
    }

    #[tokio::test]
    async fn a_release_wakes_the_registered_task_once_and_stays_set() {
        let signal = Arc::new(ReleaseSignal::default());
        let waiter = {
            let signal = signal.clone();
            tokio::spawn(std::future::poll_fn(move |cx| {
                signal.register(cx.waker());
                if signal.released() {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            }))
        };
        tokio::task::yield_now().await;
        assert!(!signal.released());
        signal.close();
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("woken")
            .expect("join");
        signal.close(); // idempotent
        assert!(signal.released());
    }

    #[tokio::test]
    async fn release_all_closes_every_backends_connections_and_later_ones() {
        let u = Upgrades::new(tokio::runtime::Handle::current());
        let a = register(&u, "a", 2);
        let b = register(&u, "b", 1);
        assert_eq!(u.live(), 3);
        assert_eq!(u.release_all(), 3);
        for p in a.iter().chain(&b) {
            assert_eq!(closes(p).len(), 1);
        }
        let late = register(&u, "b", 1);
        assert_eq!(closes(&late[0]).len(), 1, "a later one is closed at once");
        let new_backend = register(&u, "c", 1);
        assert_eq!(closes(&new_backend[0]).len(), 1, "of any backend");
        u.closed("a", 1);
        assert_eq!(u.live(), 4);
    }
}
