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
//! run short.
//!
//! The rule must never leave a connection waiting on a thread that does not come: a thread
//! stalled (descheduled on a loaded host, stopped in a debugger) would otherwise stop every
//! other one from accepting. So a thread pauses only while the least loaded one shows it is
//! accepting: once a pause has lasted [`PATIENCE`] without that thread accepting a connection,
//! the paused one accepts again, until the least loaded one is seen accepting. A proxy with no
//! new connections looks the same, which also ends the pause: a waiting accept costs nothing,
//! a pause wakes the thread every millisecond.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::ThreadLabels;

/// How long a thread over its share leaves new connections to the others before it looks
/// again (they are woken by the same connection, so nothing waits this long for a thread).
const PAUSE: Duration = Duration::from_millis(1);

/// How long a thread over its share waits for the least loaded one to accept a connection
/// before it takes them again itself.
const PATIENCE: Duration = Duration::from_millis(20);

/// Connections a thread accepted since it started, on a cache line of its own (each thread
/// writes its own on every accept).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Accepted(AtomicU64);

/// The open connections of every proxy thread (the gauges of the metric
/// `balancer_thread_connections`) and how many each accepted.
#[derive(Debug)]
pub(crate) struct ThreadLoads {
    counts: Box<[Gauge]>,
    accepted: Box<[Accepted]>,
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
            accepted: (0..threads.max(1)).map(|_| Accepted::default()).collect(),
        })
    }

    /// The least loaded thread: its index, open connections and connections accepted.
    fn least(&self) -> (usize, usize, u64) {
        let (i, open) = self
            .counts
            .iter()
            .map(open)
            .enumerate()
            .min_by_key(|&(_, n)| n)
            .unwrap_or((0, 0));
        let accepted = self
            .accepted
            .get(i)
            .map_or(0, |a| a.0.load(Ordering::Relaxed));
        (i, open, accepted)
    }

    /// Count a connection `thread` accepted, until the returned share is dropped.
    fn enter(self: &Arc<Self>, thread: usize) -> Share {
        if let Some(c) = self.counts.get(thread) {
            c.inc();
        }
        if let Some(a) = self.accepted.get(thread) {
            a.0.fetch_add(1, Ordering::Relaxed);
        }
        Share {
            loads: self.clone(),
            thread,
        }
    }
}

/// One proxy thread's accept rule: whether it leaves new connections to the others now.
#[derive(Debug)]
pub(crate) struct Gate {
    loads: Arc<ThreadLoads>,
    thread: usize,
    /// Both accept loops of the thread's service (the TLS listener and its plain redirect)
    /// ask; they run on the one thread, so this lock is never contended.
    state: Mutex<Waiting>,
}

/// What a thread over its share knows of the least loaded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Not over its share.
    No,
    /// Pausing since `since`, when thread `least` had accepted `seen` connections.
    Since {
        since: Instant,
        least: usize,
        seen: u64,
    },
    /// Thread `least` accepted nothing for [`PATIENCE`] after it had accepted `seen`: this
    /// thread accepts until it does.
    GaveUp { least: usize, seen: u64 },
}

impl Gate {
    /// The rule of `thread` among `loads`' threads.
    pub(crate) fn new(loads: Arc<ThreadLoads>, thread: usize) -> Self {
        Self {
            loads,
            thread,
            state: Mutex::new(Waiting::No),
        }
    }

    /// Count a connection this thread accepted, until the returned share is dropped.
    pub(crate) fn enter(&self) -> Share {
        self.loads.enter(self.thread)
    }

    /// How long to leave new connections to the others before asking again, at `now`
    /// (`None`: accept).
    pub(crate) fn pause(&self, now: Instant) -> Option<Duration> {
        let mine = self.loads.counts.get(self.thread).map_or(0, open);
        let (least, least_open, seen) = self.loads.least();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (next, pause) = step(*state, now, over_share(mine, least_open), least, seen);
        *state = next;
        pause.then_some(PAUSE)
    }
}

/// The rule's next state and whether to pause, from the state, the time, whether the thread
/// is over its share, and which thread is least loaded with how many connections it accepted.
fn step(state: Waiting, now: Instant, over: bool, least: usize, seen: u64) -> (Waiting, bool) {
    if !over {
        return (Waiting::No, false);
    }
    match state {
        Waiting::GaveUp { least: l, seen: s } if (l, s) == (least, seen) => (state, false),
        Waiting::Since {
            since,
            least: l,
            seen: s,
        } if (l, s) == (least, seen) => {
            if now.saturating_duration_since(since) >= PATIENCE {
                (Waiting::GaveUp { least, seen }, false)
            } else {
                (state, true)
            }
        }
        // Just over, or the least loaded thread accepted since (or another one is least):
        // it is taking connections, leave them to it.
        _ => (
            Waiting::Since {
                since: now,
                least,
                seen,
            },
            true,
        ),
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
    fn a_pause_lasts_while_the_least_loaded_thread_accepts_and_gives_up_after_patience() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let since = |n, least, seen| Waiting::Since {
            since: ms(n),
            least,
            seen,
        };
        let gave_up = |least, seen| Waiting::GaveUp { least, seen };
        // (state, at ms, over its share, least loaded thread, its accepted) → (state, pause)
        let table = [
            (Waiting::No, 0, false, 1, 5, Waiting::No, false),
            (Waiting::No, 0, true, 1, 5, since(0, 1, 5), true),
            (since(0, 1, 5), 19, true, 1, 5, since(0, 1, 5), true),
            // No longer over its share: accept.
            (since(0, 1, 5), 3, false, 1, 5, Waiting::No, false),
            // The least loaded thread accepted: it is alive, the pause starts over.
            (since(0, 1, 5), 19, true, 1, 6, since(19, 1, 6), true),
            // Another thread is now the least loaded: the pause starts over.
            (since(0, 1, 5), 19, true, 2, 9, since(19, 2, 9), true),
            // Nothing accepted by it for PATIENCE: this thread accepts again.
            (since(0, 1, 5), 20, true, 1, 5, gave_up(1, 5), false),
            (gave_up(1, 5), 500, true, 1, 5, gave_up(1, 5), false),
            // Until it is seen accepting.
            (gave_up(1, 5), 501, true, 1, 6, since(501, 1, 6), true),
            (gave_up(1, 5), 501, false, 1, 5, Waiting::No, false),
        ];
        for (state, at, over, least, seen, next, pause) in table {
            assert_eq!(
                step(state, ms(at), over, least, seen),
                (next, pause),
                "{state:?} at {at} ms, over {over}, least {least} accepted {seen}"
            );
        }
    }

    #[test]
    fn shares_count_while_they_live_and_the_least_loaded_always_accepts() {
        let (loads, gauges) = loads(2);
        let (first, second) = (Gate::new(loads.clone(), 0), Gate::new(loads.clone(), 1));
        let t0 = Instant::now();
        let a: Vec<Share> = (0..2).map(|_| first.enter()).collect();
        assert_eq!(first.pause(t0), Some(PAUSE));
        assert_eq!(second.pause(t0), None);
        let b = second.enter();
        assert_eq!(first.pause(t0), None);
        assert_eq!((open_on(&gauges, 0), open_on(&gauges, 1)), (2, 1));
        drop(b);
        assert_eq!(first.pause(t0), Some(PAUSE));
        // The second thread takes nothing for PATIENCE (stalled, or no new connection).
        assert_eq!(first.pause(t0 + PATIENCE), None);
        assert_eq!(first.pause(t0 + PATIENCE * 10), None);
        // Once it accepts again, the first leaves the new connections to it.
        let c = second.enter();
        drop(c);
        assert_eq!(first.pause(t0 + PATIENCE * 11), Some(PAUSE));
        drop(a);
        assert_eq!((open_on(&gauges, 0), open_on(&gauges, 1)), (0, 0));
        assert_eq!(first.pause(t0), None);
        assert_eq!(second.pause(t0), None);
    }

    #[test]
    fn one_thread_is_never_over_its_share_and_unknown_threads_are_ignored() {
        let (loads, gauges) = loads(1);
        let only = Gate::new(loads.clone(), 0);
        let held: Vec<Share> = (0..100).map(|_| only.enter()).collect();
        assert_eq!(only.pause(Instant::now()), None);
        let stray = Gate::new(loads, 7);
        let share = stray.enter();
        assert_eq!(stray.pause(Instant::now()), None);
        drop(share);
        drop(held);
        assert_eq!(open_on(&gauges, 0), 0);
    }
}
