//! New engine.io sessions per client address: a token bucket per address, so one client cannot
//! open thousands of sessions a second (each costs a worker ~14 KB and lives ~45 s).
//!
//! `rate` sessions per second sustained, `burst` at once; an empty bucket answers how many
//! seconds until the next token (the proxy sends 429 with `Retry-After`). The map is bounded:
//! full buckets are swept, and past `max_clients` tracked addresses new ones are not limited
//! (counted, so a flood from many addresses shows in the metrics) rather than tracked without
//! end. No I/O; the caller passes the clock.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

/// Addresses tracked at most (each ~64 bytes).
pub const MAX_CLIENTS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of new sessions, one per client address.
#[derive(Debug)]
pub struct SessionRate {
    rate: f64,
    burst: f64,
    max_clients: usize,
    buckets: DashMap<IpAddr, Bucket>,
    /// Entries in `buckets`.
    tracked: AtomicUsize,
    /// Handshakes let through untracked because the map was full.
    pub untracked: AtomicU64,
}

impl SessionRate {
    /// `rate` new sessions per second per address, `burst` at once (0 = no limit).
    pub fn new(rate: u32, burst: u32) -> Self {
        Self::with_capacity(rate, burst, MAX_CLIENTS)
    }

    fn with_capacity(rate: u32, burst: u32, max_clients: usize) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            max_clients,
            buckets: DashMap::new(),
            tracked: AtomicUsize::new(0),
            untracked: AtomicU64::new(0),
        }
    }

    /// Take one new session for `ip` at `now`: `Err(seconds)` to wait when its bucket is
    /// empty.
    /// Addresses are grouped like connections ([`crate::connections::client_key`]: an IPv6
    /// client by its /64), so one host cannot spread a flood over its own addresses.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let ip = crate::connections::client_key(ip);
        let mut b = match self.buckets.entry(ip) {
            Entry::Occupied(o) => o.into_ref(),
            Entry::Vacant(v) => {
                // The bound is kept with a count: DashMap's `len` would visit every shard.
                if self.tracked.fetch_add(1, Ordering::AcqRel) >= self.max_clients {
                    self.tracked.fetch_sub(1, Ordering::AcqRel);
                    self.untracked.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                v.insert(Bucket {
                    tokens: self.burst,
                    at: now,
                })
            }
        };
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - b.tokens) / self.rate;
        Err(Duration::from_secs_f64(wait).as_secs().max(1))
    }

    /// Forget addresses whose bucket has refilled (they are as good as new).
    pub fn sweep(&self, now: Instant) {
        let full = self.burst / self.rate.max(f64::MIN_POSITIVE);
        let mut removed = 0;
        self.buckets.retain(|_, b| {
            let keep = now.saturating_duration_since(b.at).as_secs_f64() < full;
            removed += usize::from(!keep);
            keep
        });
        self.tracked.fetch_sub(removed, Ordering::AcqRel);
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.tracked.load(Ordering::Acquire)
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let r = SessionRate::new(10, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(r.take(ip(1), t0), Ok(()));
        }
        assert_eq!(r.take(ip(1), t0), Err(1));
        // Another address has its own bucket.
        assert_eq!(r.take(ip(2), t0), Ok(()));
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.take(ip(1), t1), Ok(()));
        assert_eq!(r.take(ip(1), t1), Err(1));
    }

    #[test]
    fn an_ipv6_host_shares_one_bucket_across_its_64() {
        let r = SessionRate::new(1, 2);
        let t0 = Instant::now();
        let v6 = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(r.take(v6("2001:db8:0:1::1"), t0), Ok(()));
        assert_eq!(r.take(v6("2001:db8:0:1::2"), t0), Ok(()));
        assert_eq!(r.take(v6("2001:db8:0:1:ffff::3"), t0), Err(1), "same /64");
        assert_eq!(r.take(v6("2001:db8:0:2::1"), t0), Ok(()), "another /64");
    }

    #[test]
    fn retry_after_says_how_long() {
        let r = SessionRate::new(1, 1);
        let t0 = Instant::now();
        assert_eq!(r.take(ip(1), t0), Ok(()));
        assert_eq!(r.take(ip(1), t0), Err(1));
        let slow = SessionRate::new(1, 1);
        assert_eq!(slow.take(ip(1), t0), Ok(()));
        assert!(slow.take(ip(1), t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn the_map_is_bounded_and_swept() {
        let r = SessionRate::with_capacity(10, 2, 3);
        let t0 = Instant::now();
        for n in 1..=3 {
            assert_eq!(r.take(ip(n), t0), Ok(()));
        }
        for _ in 0..10 {
            assert_eq!(r.take(ip(9), t0), Ok(()), "untracked past the cap");
        }
        assert_eq!(r.untracked.load(Ordering::Relaxed), 10);
        assert_eq!(r.len(), 3);
        r.sweep(t0 + Duration::from_secs(1));
        assert!(r.is_empty(), "refilled buckets are forgotten");
    }

    #[test]
    fn zero_means_no_limit() {
        let r = SessionRate::new(0, 0);
        for _ in 0..1000 {
            assert_eq!(r.take(ip(1), Instant::now()), Ok(()));
        }
    }
}
