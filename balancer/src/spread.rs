//! The client connections spread evenly over the proxy threads.
//!
//! Every proxy thread runs its own accept loop on the one listening socket, and the kernel
//! wakes them all for a new connection: whichever comes first takes it. Under a burst (a load
//! generator opening its 64 connections at once) one thread can take them all and leave the
//! other idle for as long as the connections live: measured, one thread at 80 % of a core,
//! the other at 1 %, the machine 10 % idle and a round of keep-alive requests a quarter slower
//! (docs/BENCHMARKS.md). So each thread counts the connections it serves (a WebSocket's
//! tunnel included), and a thread holding more than the least loaded one plus a margin leaves
//! new connections to the others for a moment, as nginx's workers stop accepting when theirs
//! run short. The least loaded thread always accepts, so no connection waits on the rule.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::ThreadLabels;

/// How long a thread over its share leaves new connections to the others before it looks
/// again (they are woken by the same connection, so nothing waits this long for a thread).
pub(crate) const PAUSE: Duration = Duration::from_millis(1);

/// The open connections of every proxy thread (the gauges of the metric
/// `balancer_thread_connections`).
#[derive(Debug)]
pub(crate) struct ThreadLoads {
    counts: Box<[Gauge]>,
}

impl ThreadLoads {
    /// Counts for `threads` proxy threads (at least one), kept in `gauges`' members.
    pub(crate) fn new(threads: usize, gauges: &Family<ThreadLabels, Gauge>) -> Arc<Self> {
        Arc::new(Self {
            counts: (0..threads.max(1))
                .map(|i| {
                    let thread = u32::try_from(i).unwrap_or(u32::MAX);
                    gauges.get_or_create(&ThreadLabels { thread }).clone()
                })
                .collect(),
        })
    }

    /// Whether `thread` should leave new connections to the others for now.
    pub(crate) fn over_share(&self, thread: usize) -> bool {
        let Some(mine) = self.counts.get(thread) else {
            return false;
        };
        let least = self.counts.iter().map(open).min().unwrap_or(0);
        over_share(open(mine), least)
    }

    /// Count a connection `thread` accepted, until the returned share is dropped.
    pub(crate) fn enter(self: &Arc<Self>, thread: usize) -> Share {
        if let Some(c) = self.counts.get(thread) {
            c.inc();
        }
        Share {
            loads: self.clone(),
            thread,
        }
    }
}

/// The connections a thread's gauge counts.
fn open(gauge: &Gauge) -> usize {
    usize::try_from(gauge.get()).unwrap_or(0)
}

/// Whether a thread serving `mine` connections is past its share when the least loaded one
/// serves `least`: more than one connection and an eighth over it.
fn over_share(mine: usize, least: usize) -> bool {
    mine > least + 1 + least / 8
}

/// One connection counted on its thread, while it lives.
#[derive(Debug)]
pub(crate) struct Share {
    loads: Arc<ThreadLoads>,
    thread: usize,
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Some(c) = self.loads.counts.get(self.thread) {
            c.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(threads: usize) -> (Arc<ThreadLoads>, Family<ThreadLabels, Gauge>) {
        let gauges = Family::default();
        (ThreadLoads::new(threads, &gauges), gauges)
    }

    fn open_on(gauges: &Family<ThreadLabels, Gauge>, thread: u32) -> i64 {
        gauges.get_or_create(&ThreadLabels { thread }).get()
    }

    #[test]
    fn a_thread_past_the_least_loaded_by_a_margin_is_over_its_share() {
        // (mine, least, over)
        let table = [
            (0, 0, false),
            (1, 0, false),
            (2, 0, true),
            (2, 1, false),
            (3, 1, true),
            (9, 8, false),
            (10, 8, false),
            (11, 8, true),
            (34, 30, false),
            (35, 30, true),
            (1000, 1000, false),
            (1126, 1000, false),
            (1127, 1000, true),
        ];
        for (mine, least, over) in table {
            assert_eq!(over_share(mine, least), over, "mine {mine}, least {least}");
        }
    }

    #[test]
    fn shares_count_while_they_live_and_the_least_loaded_always_accepts() {
        let (loads, gauges) = loads(2);
        let a: Vec<Share> = (0..2).map(|_| loads.enter(0)).collect();
        assert!(loads.over_share(0));
        assert!(!loads.over_share(1));
        let b = loads.enter(1);
        assert!(!loads.over_share(0));
        assert_eq!((open_on(&gauges, 0), open_on(&gauges, 1)), (2, 1));
        drop(b);
        assert!(loads.over_share(0));
        drop(a);
        assert_eq!((open_on(&gauges, 0), open_on(&gauges, 1)), (0, 0));
        assert!(!loads.over_share(0) && !loads.over_share(1));
    }

    #[test]
    fn one_thread_is_never_over_its_share_and_unknown_threads_are_ignored() {
        let (loads, gauges) = loads(1);
        let held: Vec<Share> = (0..100).map(|_| loads.enter(0)).collect();
        assert!(!loads.over_share(0));
        let stray = loads.enter(7);
        assert!(!loads.over_share(7));
        drop(stray);
        drop(held);
        assert_eq!(open_on(&gauges, 0), 0);
    }
}
