//! Live session counts per backend id, for `least-conn` placement (and later drain decisions).
//!
//! Counted: engine.io sessions in the sid table, WebSocket-first connections, and handshakes
//! in flight (so a burst of handshakes spreads instead of piling onto one backend before any
//! sid is learned).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;

/// Session counts keyed by backend id.
///
/// Hashed with foldhash rather than SipHash: the keys are the configuration's backend ids,
/// never a client's bytes, and the per-worker request count is added to on every request
/// (SipHash was about 300 instructions per request of it under callgrind).
#[derive(Debug, Default)]
pub struct Loads {
    counts: DashMap<Arc<str>, AtomicI64, foldhash::fast::RandomState>,
}

impl Loads {
    /// Add `n` (may be negative) to `id`'s count.
    pub fn add(&self, id: &Arc<str>, n: i64) {
        if let Some(c) = self.counts.get(id) {
            c.fetch_add(n, Ordering::Relaxed);
            return;
        }
        self.counts
            .entry(id.clone())
            .or_default()
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Current count of `id` (0 when unknown).
    pub fn get(&self, id: &str) -> i64 {
        self.counts
            .get(id)
            .map_or(0, |c| c.load(Ordering::Relaxed).max(0))
    }

    /// Forget backends not in `keep` (called when the backend set changes).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.counts.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_and_never_read_negative() {
        let l = Loads::default();
        let a: Arc<str> = Arc::from("a");
        l.add(&a, 2);
        l.add(&a, -3);
        assert_eq!(l.get("a"), 0);
        l.add(&a, 5);
        assert_eq!(l.get("a"), 4);
        assert_eq!(l.get("b"), 0);
    }
}
