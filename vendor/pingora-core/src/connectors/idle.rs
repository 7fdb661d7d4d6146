//! Idle upstream connections kept for reuse (rtsup: `vendor/README.md` change 10).
//!
//! Upstream pingora keeps each idle connection behind an `Arc<Mutex>` watched by a task of its
//! own: every release spawns that task and allocates its channels, and every reuse wakes it and
//! waits for it to hand the lock back (two task switches per proxied request). Here an idle
//! connection is a plain entry in a map: taken most recent first and checked when taken (one
//! that was closed or sent data is dropped, as before), and swept once a second by one task per
//! pool for idle timeouts and connections the server closed. The pool holds at most `size`
//! connections; past that the longest idle one is evicted.

use super::PoolCallback;
use crate::protocols::Stream;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the sweeper looks for timed-out and closed idle connections.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Entry {
    stream: Stream,
    since: Instant,
    timeout: Option<Duration>,
    /// Release order: the smallest is the longest idle.
    seq: u64,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.timeout
            .is_some_and(|t| now.saturating_duration_since(self.since) >= t)
    }
}

/// Hashes a peer key to itself (rtsup, vendored change 31): the key is already a hash of the
/// peer (`Peer::reuse_hash`), of configured upstreams only, so SipHashing it again (about 140
/// instructions, twice per proxied request: one take, one put) bought nothing.
#[derive(Default)]
struct PeerKeyHasher(u64);

impl Hasher for PeerKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are `u64`); fold anything else in all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

#[derive(Default)]
struct State {
    /// Idle connections per peer key, in release order.
    by_key: HashMap<u64, Vec<Entry>, BuildHasherDefault<PeerKeyHasher>>,
    count: usize,
    seq: u64,
}

impl State {
    /// Remove the longest idle connection of all.
    fn evict_oldest(&mut self) -> Option<Entry> {
        let key = *self
            .by_key
            .iter()
            .filter_map(|(k, v)| v.first().map(|e| (k, e.seq)))
            .min_by_key(|(_, seq)| *seq)?
            .0;
        let list = self.by_key.get_mut(&key)?;
        let entry = list.remove(0);
        if list.is_empty() {
            self.by_key.remove(&key);
        }
        self.count -= 1;
        Some(entry)
    }
}

/// The idle connections of one connector.
pub(crate) struct IdlePool {
    state: Mutex<State>,
    size: usize,
    sweeping: AtomicBool,
    on_evict: Option<PoolCallback>,
    /// The connector's count of idle connections that received data.
    unexpected_data: Arc<AtomicU64>,
}

impl IdlePool {
    pub(crate) fn new(
        size: usize,
        on_evict: Option<PoolCallback>,
        unexpected_data: Arc<AtomicU64>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            size,
            sweeping: AtomicBool::new(false),
            on_evict,
            unexpected_data,
        })
    }

    /// The most recently released connection for `key` that did not time out, with how long it
    /// was idle. The caller checks it is still usable.
    pub(crate) fn take(&self, key: u64) -> Option<(Stream, Duration)> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let list = state.by_key.get_mut(&key)?;
        let mut found = None;
        let mut taken = 0;
        while let Some(entry) = list.pop() {
            taken += 1;
            if !entry.expired(now) {
                found = Some((entry.stream, now.saturating_duration_since(entry.since)));
                break;
            }
        }
        if list.is_empty() {
            state.by_key.remove(&key);
        }
        state.count -= taken;
        found
    }

    /// Keep `stream` for reuse by `key` for at most `timeout`.
    pub(crate) fn put(self: &Arc<Self>, key: u64, stream: Stream, timeout: Option<Duration>) {
        if self.size == 0 {
            return;
        }
        let evicted = {
            let mut state = self.state.lock();
            let evicted = if state.count >= self.size {
                state.evict_oldest()
            } else {
                None
            };
            state.seq += 1;
            let seq = state.seq;
            state.by_key.entry(key).or_default().push(Entry {
                stream,
                since: Instant::now(),
                timeout,
                seq,
            });
            state.count += 1;
            evicted
        };
        if let (Some(entry), Some(callback)) = (evicted, &self.on_evict) {
            callback(entry.since.elapsed());
        }
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            let pool = Arc::downgrade(self);
            pingora_runtime::current_handle().spawn(sweep_while_alive(pool));
        }
    }

    /// Drop the connections that timed out or that the server closed (or sent data on).
    fn sweep(&self) {
        let now = Instant::now();
        let mut state = self.state.lock();
        let mut dropped = 0;
        state.by_key.retain(|_, list| {
            list.retain_mut(|e| {
                let keep = !e.expired(now)
                    && super::test_reusable_stream(&mut e.stream, &self.unexpected_data);
                if !keep {
                    dropped += 1;
                }
                keep
            });
            !list.is_empty()
        });
        state.count -= dropped;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().count
    }
}

/// The sweeper of one pool, until the pool is dropped.
async fn sweep_while_alive(pool: Weak<IdlePool>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::l4::stream::Stream as L4Stream;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the pooled client side and the server side.
    async fn pair(listener: &TcpListener) -> (Stream, TcpStream) {
        let addr = listener.local_addr().expect("addr");
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let client: Stream = Box::new(L4Stream::from(client.expect("connect")));
        (client, server.expect("accept").0)
    }

    async fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").await.expect("bind")
    }

    #[tokio::test]
    async fn the_most_recent_connection_of_the_key_is_taken_first() {
        let l = listener().await;
        let pool = IdlePool::new(8, None, Arc::default());
        let (a, _sa) = pair(&l).await;
        let (b, _sb) = pair(&l).await;
        let (c, _sc) = pair(&l).await;
        let (a_id, b_id) = (a.id(), b.id());
        pool.put(1, a, None);
        pool.put(1, b, None);
        pool.put(2, c, None);
        assert_eq!(pool.take(1).map(|(s, _)| s.id()), Some(b_id));
        assert_eq!(pool.take(1).map(|(s, _)| s.id()), Some(a_id));
        assert!(pool.take(1).is_none());
        assert_eq!(pool.len(), 1);
    }

    // rtsup change 31: keys hashed to themselves still keep their connections apart, whatever
    // their bits.
    #[tokio::test]
    async fn each_key_gets_back_its_own_connection() {
        let l = listener().await;
        let keys = [0, 1, 2, 1 << 32, 1 << 63, u64::MAX, 0x9e37_79b9_7f4a_7c15];
        let pool = IdlePool::new(keys.len(), None, Arc::default());
        let mut ids = Vec::new();
        let mut peers = Vec::new();
        for key in keys {
            let (s, peer) = pair(&l).await;
            ids.push(s.id());
            peers.push(peer);
            pool.put(key, s, None);
        }
        for (key, id) in keys.into_iter().zip(ids).rev() {
            assert_eq!(
                pool.take(key).map(|(s, _)| s.id()),
                Some(id),
                "key {key:#x}"
            );
        }
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn past_the_size_the_longest_idle_connection_is_evicted() {
        let l = listener().await;
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = evictions.clone();
        let pool = IdlePool::new(
            2,
            Some(Arc::new(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            })),
            Arc::default(),
        );
        let (a, _sa) = pair(&l).await;
        let (b, _sb) = pair(&l).await;
        let (c, _sc) = pair(&l).await;
        let (b_id, c_id) = (b.id(), c.id());
        pool.put(1, a, None);
        pool.put(2, b, None);
        pool.put(1, c, None);
        assert_eq!(pool.len(), 2);
        assert_eq!(evictions.load(Ordering::Relaxed), 1);
        assert_eq!(pool.take(1).map(|(s, _)| s.id()), Some(c_id));
        assert!(pool.take(1).is_none(), "the oldest of key 1 was evicted");
        assert_eq!(pool.take(2).map(|(s, _)| s.id()), Some(b_id));
    }

    #[tokio::test]
    async fn a_timed_out_connection_is_never_taken_and_is_swept() {
        let l = listener().await;
        let pool = IdlePool::new(8, None, Arc::default());
        let (a, _sa) = pair(&l).await;
        let (b, _sb) = pair(&l).await;
        pool.put(1, a, Some(Duration::ZERO));
        assert!(pool.take(1).is_none());
        pool.put(1, b, Some(Duration::ZERO));
        pool.sweep();
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn the_sweep_drops_connections_the_server_closed_or_wrote_on() {
        let l = listener().await;
        let unexpected = Arc::new(AtomicU64::new(0));
        let pool = IdlePool::new(8, None, unexpected.clone());
        let (a, sa) = pair(&l).await;
        let (b, mut sb) = pair(&l).await;
        let (c, _sc) = pair(&l).await;
        let c_id = c.id();
        pool.put(1, a, None);
        pool.put(1, b, None);
        pool.put(1, c, None);
        drop(sa);
        sb.write_all(b"surprise").await.expect("write");
        // The closes reach the pooled sockets' readiness through the runtime's reactor.
        tokio::time::timeout(Duration::from_secs(5), async {
            while pool.len() > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                pool.sweep();
            }
        })
        .await
        .expect("swept");
        assert_eq!(unexpected.load(Ordering::Relaxed), 1);
        assert_eq!(pool.take(1).map(|(s, _)| s.id()), Some(c_id));
    }
}
