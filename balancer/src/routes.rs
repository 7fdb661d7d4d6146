//! The route snapshot: an immutable view of the backends, rebuilt on every change of the
//! backend set and swapped in atomically (ArcSwap), so the request path takes no lock.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::ring::Ring;
use crate::{Backend, BackendSet, BackendState};

/// What routing needs, precomputed.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every backend, as published.
    pub backends: Vec<Backend>,
    /// Indices of this host's Ready backends (those new sessions may go to).
    pub ready: Vec<usize>,
    /// Consistent-hash ring over the Ready backends of this host.
    pub ring: Option<Ring>,
    /// Hashed with foldhash rather than SipHash (as [`crate::loads::Loads`]): built from the
    /// configuration, only looked up by a request (about 200 instructions a lookup saved).
    by_id: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    ready_by_key: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
}

impl Snapshot {
    /// Precompute lookups for `set`.
    pub fn build(set: &BackendSet) -> Self {
        let backends = set.backends.clone();
        let ready: Vec<usize> = (0..backends.len())
            .filter(|&i| backends[i].state == BackendState::Ready && !backends[i].remote)
            .collect();
        let ring = Ring::new(ready.iter().map(|&i| (i, backends[i].addr)));
        let by_id = backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id.clone(), i))
            .collect();
        // Cookies may name another host's worker too.
        let ready_by_key = (0..backends.len())
            .filter(|&i| backends[i].state == BackendState::Ready)
            .map(|i| (backends[i].key.clone(), i))
            .collect();
        Self {
            backends,
            ready,
            ring,
            by_id,
            ready_by_key,
        }
    }

    /// The backend with this id.
    pub fn by_id(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The Ready backend holding this affinity key.
    pub fn ready_by_key(&self, key: &str) -> Option<usize> {
        self.ready_by_key.get(key).copied()
    }
}

/// The current snapshot, shared by every request.
#[derive(Debug, Default)]
pub struct RouteTable {
    current: ArcSwap<Snapshot>,
}

impl RouteTable {
    /// The snapshot in force now.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Follow `rx`: rebuild and swap the snapshot on every change; ends when the sender is gone.
    /// `on_change` runs after each swap (e.g. to forget load counters of vanished backends).
    pub async fn follow(&self, mut rx: watch::Receiver<BackendSet>, on_change: impl Fn(&Snapshot)) {
        loop {
            // Clone out of the borrow at once: a held watch::Ref would block the sender.
            let set = rx.borrow_and_update().clone();
            let snap = Snapshot::build(&set);
            on_change(&snap);
            self.current.store(Arc::new(snap));
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}
