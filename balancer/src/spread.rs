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
//! other one from accepting. So a paused accept loop does not sleep blind: it waits until a
//! connection is in the listen queue (an idle proxy does not wake), and gives up on the least
//! loaded thread only once a connection has waited there for [`PATIENCE`] while that thread
//! accepted nothing. From then until that thread accepts again, the loop takes what the others
//! leave waiting for a [`PAUSE`]: a stalled thread costs the first connection 20 ms and the
//! later ones about two pauses. A quiet spell is no stall: connections arriving one at a time,
//! or a burst after a quiet spell, still go to the least loaded thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pingora::apps::{AcceptRule, Asked};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::ThreadLabels;

/// How long a thread over its share leaves a waiting connection to the others before it looks
/// again (they are woken by the same connection, so nothing waits this long for a thread).
const PAUSE: Duration = Duration::from_millis(1);

/// How long a connection may wait in the listen queue, the least loaded thread accepting
/// nothing, before a thread over its share takes it.
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

/// One proxy thread's place among the others: it counts the connections the thread accepts
/// and makes the rule of each of the thread's accept loops.
#[derive(Debug, Clone)]
pub(crate) struct Spread {
    loads: Arc<ThreadLoads>,
    thread: usize,
}

impl Spread {
    /// Thread `thread` among `loads`' threads.
    pub(crate) fn new(loads: Arc<ThreadLoads>, thread: usize) -> Self {
        Self { loads, thread }
    }

    /// Count a connection this thread accepted, until the returned share is dropped.
    pub(crate) fn enter(&self) -> Share {
        self.loads.enter(self.thread)
    }

    /// The rule of one of this thread's accept loops (the TLS listener and its plain redirect
    /// each have theirs: what one loop saw says nothing of the other's queue).
    pub(crate) fn gate(&self) -> Gate {
        Gate {
            spread: self.clone(),
            state: Waiting::No,
        }
    }
}

/// One accept loop's rule: whether it leaves new connections to the other threads now.
#[derive(Debug)]
pub(crate) struct Gate {
    /// The thread whose loop this is.
    spread: Spread,
    state: Waiting,
}

/// What a loop over its thread's share knows of the least loaded thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Not over its share.
    No,
    /// Leaving connections to thread `least` since `since`, when it had accepted `seen`.
    Since {
        since: Instant,
        least: usize,
        seen: u64,
    },
    /// Thread `least` left a connection waiting for [`PATIENCE`] after it had accepted `seen`:
    /// until it accepts again, this loop takes the connections left waiting for a pause.
    GaveUp { least: usize, seen: u64 },
}

impl Gate {
    /// How long to leave new connections to the others, at `now`, after the loop saw `asked`
    /// (`None`: accept).
    fn pause_at(&mut self, asked: Asked, now: Instant) -> Option<Duration> {
        let Spread { loads, thread } = &self.spread;
        let mine = loads.counts.get(*thread).map_or(0, open);
        let (least, least_open, seen) = loads.least();
        let (next, pause) = step(
            self.state,
            asked,
            now,
            over_share(mine, least_open),
            least,
            seen,
        );
        self.state = next;
        pause
    }
}

impl AcceptRule for Gate {
    fn pause(&mut self, asked: Asked) -> Option<Duration> {
        self.pause_at(asked, Instant::now())
    }
}

/// The rule's next state and answer (how long to pause, `None`: accept), from the state, what
/// the loop saw since it asked last, the time, whether its thread is over its share, and which
/// thread is least loaded with how many connections it accepted.
fn step(
    state: Waiting,
    asked: Asked,
    now: Instant,
    over: bool,
    least: usize,
    seen: u64,
) -> (Waiting, Option<Duration>) {
    if !over {
        return (Waiting::No, None);
    }
    let same = |l, s| (l, s) == (least, seen);
    match (state, asked) {
        // A connection still waits and the least loaded thread took nothing.
        (
            Waiting::Since {
                since,
                least: l,
                seen: s,
            },
            Asked::Waiting,
        ) if same(l, s) => {
            if now.saturating_duration_since(since) >= PATIENCE {
                (Waiting::GaveUp { least, seen }, None)
            } else {
                (state, Some(PAUSE))
            }
        }
        // Gave up on a stalled thread: connections already waiting are taken at once, and
        // each new arrival after the others had a pause to take it (the stalled thread may be
        // back; if it is, it takes it and the rule starts over).
        (Waiting::GaveUp { least: l, seen: s }, asked) if same(l, s) => match asked {
            Asked::Accepted | Asked::Missed => (state, Some(Duration::ZERO)),
            Asked::Arrived => (state, Some(PAUSE)),
            Asked::Waiting => (state, None),
        },
        // Just over its share, a connection just arrived, or the least loaded thread accepted
        // since (or another one is least): leave the connections to it.
        _ => (
            Waiting::Since {
                since: now,
                least,
                seen,
            },
            Some(PAUSE),
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
    fn a_loop_over_its_share_takes_only_connections_left_waiting_for_patience() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let since = |n, least, seen| Waiting::Since {
            since: ms(n),
            least,
            seen,
        };
        let gave_up = |least, seen| Waiting::GaveUp { least, seen };
        let (no, p, zero) = (Waiting::No, Some(PAUSE), Some(Duration::ZERO));
        use Asked::{Accepted, Arrived, Missed, Waiting as Queued};
        // (state, asked, at ms, over its share, least loaded thread, its accepted)
        //   → (state, pause)
        let table = [
            (no, Accepted, 0, false, 1, 5, no, None),
            (no, Accepted, 0, true, 1, 5, since(0, 1, 5), p),
            (no, Arrived, 0, true, 1, 5, since(0, 1, 5), p),
            (since(0, 1, 5), Queued, 19, true, 1, 5, since(0, 1, 5), p),
            // No longer over its share: accept.
            (since(0, 1, 5), Queued, 3, false, 1, 5, no, None),
            // The least loaded thread accepted: it is alive, the pause starts over.
            (since(0, 1, 5), Queued, 19, true, 1, 6, since(19, 1, 6), p),
            // Another thread is now the least loaded: the pause starts over.
            (since(0, 1, 5), Queued, 19, true, 2, 9, since(19, 2, 9), p),
            // The queue emptied and a connection arrived later (connections one at a time,
            // or a burst after a quiet spell): the time idle is no patience, left to the others.
            (
                since(0, 1, 5),
                Arrived,
                500,
                true,
                1,
                5,
                since(500, 1, 5),
                p,
            ),
            (since(0, 1, 5), Arrived, 20, true, 1, 5, since(20, 1, 5), p),
            // A connection left waiting for PATIENCE, nothing accepted by the least loaded
            // thread: this loop takes it.
            (since(0, 1, 5), Queued, 20, true, 1, 5, gave_up(1, 5), None),
            // Then it looks whether another one waits already (a burst), and takes it too.
            (gave_up(1, 5), Accepted, 21, true, 1, 5, gave_up(1, 5), zero),
            (gave_up(1, 5), Queued, 21, true, 1, 5, gave_up(1, 5), None),
            // Another loop took the one it went for: it looks again.
            (gave_up(1, 5), Missed, 21, true, 1, 5, gave_up(1, 5), zero),
            // A new arrival is left to the others for a pause (the stalled thread may be
            // back), then taken if still waiting.
            (gave_up(1, 5), Arrived, 900, true, 1, 5, gave_up(1, 5), p),
            (gave_up(1, 5), Queued, 901, true, 1, 5, gave_up(1, 5), None),
            // The stalled thread accepts again.
            (gave_up(1, 5), Queued, 22, true, 1, 6, since(22, 1, 6), p),
            (gave_up(1, 5), Accepted, 22, true, 1, 6, since(22, 1, 6), p),
            (gave_up(1, 5), Arrived, 22, true, 1, 6, since(22, 1, 6), p),
            (since(0, 1, 5), Missed, 22, true, 1, 5, since(22, 1, 5), p),
            (gave_up(1, 5), Queued, 22, false, 1, 5, no, None),
        ];
        for (state, asked, at, over, least, seen, next, pause) in table {
            assert_eq!(
                step(state, asked, ms(at), over, least, seen),
                (next, pause),
                "{state:?} after {asked:?} at {at} ms, over {over}, least {least} accepted {seen}"
            );
        }
    }

    #[test]
    fn shares_count_while_they_live_and_the_least_loaded_always_accepts() {
        let (loads, gauges) = loads(2);
        let (first, second) = (Spread::new(loads.clone(), 0), Spread::new(loads.clone(), 1));
        let (mut a, mut b) = (first.gate(), second.gate());
        let t0 = Instant::now();
        let at = |n| t0 + Duration::from_millis(n);
        let held: Vec<Share> = (0..3).map(|_| first.enter()).collect();
        assert_eq!(a.pause_at(Asked::Accepted, t0), Some(PAUSE));
        assert_eq!(b.pause_at(Asked::Accepted, t0), None);
        // Connections one at a time, 50 ms apart: each is left to the second thread until
        // the first is no longer over its share.
        let mut taken = Vec::new();
        for k in 1..=2 {
            assert_eq!(a.pause_at(Asked::Arrived, at(50 * k)), Some(PAUSE), "{k}");
            assert_eq!(b.pause_at(Asked::Accepted, at(50 * k)), None);
            taken.push(second.enter());
        }
        assert_eq!(a.pause_at(Asked::Arrived, at(150)), None);
        assert_eq!((open_on(&gauges, 0), open_on(&gauges, 1)), (3, 2));
        drop(taken);
        // The second thread stalls while a burst of three waits: once the first connection
        // has waited PATIENCE the first thread takes it and the others already waiting; a
        // later arrival is taken once it has waited a pause.
        assert_eq!(a.pause_at(Asked::Arrived, at(200)), Some(PAUSE));
        assert_eq!(a.pause_at(Asked::Waiting, at(219)), Some(PAUSE));
        let mut burst = Vec::new();
        assert_eq!(a.pause_at(Asked::Waiting, at(220)), None);
        for _ in 0..2 {
            burst.push(first.enter());
            assert_eq!(a.pause_at(Asked::Accepted, at(220)), Some(Duration::ZERO));
            assert_eq!(a.pause_at(Asked::Waiting, at(220)), None);
        }
        burst.push(first.enter());
        assert_eq!(a.pause_at(Asked::Accepted, at(220)), Some(Duration::ZERO));
        assert_eq!(a.pause_at(Asked::Arrived, at(900)), Some(PAUSE));
        assert_eq!(a.pause_at(Asked::Waiting, at(901)), None);
        burst.push(first.enter());
        // Once the second accepts again, the first leaves the waiting ones to it.
        let c = second.enter();
        assert_eq!(a.pause_at(Asked::Waiting, at(901)), Some(PAUSE));
        assert_eq!(a.pause_at(Asked::Waiting, at(920)), Some(PAUSE));
        assert_eq!(a.pause_at(Asked::Waiting, at(921)), None);
        drop((held, burst, c));
        assert_eq!((open_on(&gauges, 0), open_on(&gauges, 1)), (0, 0));
        assert_eq!(a.pause_at(Asked::Waiting, t0), None);
        assert_eq!(b.pause_at(Asked::Waiting, t0), None);
    }

    #[test]
    fn one_thread_is_never_over_its_share_and_unknown_threads_are_ignored() {
        let (loads, gauges) = loads(1);
        let only = Spread::new(loads.clone(), 0);
        let held: Vec<Share> = (0..100).map(|_| only.enter()).collect();
        assert_eq!(only.gate().pause(Asked::Accepted), None);
        let stray = Spread::new(loads, 7);
        let share = stray.enter();
        assert_eq!(stray.gate().pause(Asked::Arrived), None);
        drop(share);
        drop(held);
        assert_eq!(open_on(&gauges, 0), 0);
    }
}
