//! Releasing a draining backend's WebSockets gradually, so its clients do not all reconnect in
//! the same millisecond when the worker finally stops.
//!
//! pingora 0.9 gives no way to wake an upgraded connection's proxy loop from outside its task:
//! the loop (`proxy_handle_downstream` / `proxy_handle_upstream` in pingora-proxy's
//! `proxy_h1.rs`) only selects on the two sockets and its internal pipes, and every
//! `ProxyHttp` callback it makes is driven by bytes arriving. But it does wake when the
//! upstream socket reaches end of stream. So the balancer keeps a duplicate of each upgraded
//! connection's upstream socket (taken in pingora's `upstream_tcp_sock_tweak_hook`, a plain
//! `dup`, no `unsafe`) and releasing a connection is `shutdown(Both)` on it: the worker sees
//! FIN, pingora reads EOF, `response_body_filter` appends a WebSocket close frame (1001) for
//! the client, and pingora ends the request and closes the client connection.
//!
//! [`Upgrades`] is the registry: connections register when their 101 passes, unregister when
//! the request ends; [`Upgrades::release`] marks a backend released and closes its open
//! connections spread evenly over a window on the runtime the proxy was started from, and
//! closes at once any connection to it that opens later.

use std::collections::HashMap;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tracing::debug;

/// Something the registry can close.
pub(crate) trait Close: Send + Sync {
    /// End the connection now (idempotent, non-blocking).
    fn close(&self);
}

/// The upstream side of one upgraded connection: a duplicate of its socket, so it can be shut
/// from outside the request's task. Held strongly only by the request's context, so the
/// duplicate never outlives the request (it would keep the connection open).
#[derive(Debug, Default)]
pub(crate) struct UpstreamSocket {
    socket: Mutex<Option<std::net::TcpStream>>,
    released: AtomicBool,
}

impl UpstreamSocket {
    /// Keep a duplicate of `socket` (called by pingora before it connects).
    pub(crate) fn attach(&self, socket: &tokio::net::TcpSocket) -> std::io::Result<()> {
        let dup = socket.as_fd().try_clone_to_owned()?;
        *self.socket.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(std::net::TcpStream::from(dup));
        Ok(())
    }

    /// Whether the balancer ended this connection (so its end is ours to announce).
    pub(crate) fn released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }
}

impl Close for UpstreamSocket {
    fn close(&self) {
        // Before the shutdown: the EOF it causes is handled on another thread, which must see
        // the flag.
        self.released.store(true, Ordering::Release);
        let socket = self
            .socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match socket {
            Some(s) => {
                if let Err(e) = s.shutdown(Shutdown::Both) {
                    debug!(error = %e, "releasing an upstream socket");
                }
            }
            None => debug!("released connection has no upstream socket"),
        }
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
        let released = {
            let mut map = self.lock();
            let conns = map.entry(backend.clone()).or_default();
            if !conns.released {
                conns.open.insert(id, conn.clone());
            }
            conns.released
        };
        if released && let Some(c) = conn.upgrade() {
            debug!(%backend, "closing a connection to a released backend");
            c.close();
        }
    }

    /// Connection `id` to `backend` ended.
    pub(crate) fn closed(&self, backend: &str, id: u64) {
        if let Some(conns) = self.lock().get_mut(backend) {
            conns.open.remove(&id);
        }
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
    use tokio::io::AsyncReadExt;
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
    async fn shutting_the_duplicate_ends_both_sides() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = UpstreamSocket::default();
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        up.attach(&socket).expect("dup");
        let mut ours = socket.connect(addr).await.expect("connect");
        let (mut worker, _) = listener.accept().await.expect("accept");
        assert!(!up.released());
        up.close();
        assert!(up.released());
        let mut buf = [0u8; 8];
        // Our side wakes with EOF (the proxy loop's wake-up), the worker sees FIN.
        let n = tokio::time::timeout(Duration::from_secs(2), ours.read(&mut buf))
            .await
            .expect("proxy side woke")
            .expect("read");
        assert_eq!(n, 0);
        let n = tokio::time::timeout(Duration::from_secs(2), worker.read(&mut buf))
            .await
            .expect("worker side woke")
            .expect("read");
        assert_eq!(n, 0);
        up.close(); // idempotent
    }
}
