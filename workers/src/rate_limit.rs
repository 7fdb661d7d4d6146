//! A token bucket per socket: `rate` client events per second, bursts up to `rate`.

use std::time::{Duration, Instant};

/// Refused events in a row after which a socket is disconnected: a client that keeps hammering
/// past its limit is misbehaving, not bursting.
pub const MAX_REFUSED_IN_A_ROW: u32 = 200;

/// Tokens refill continuously; each client event takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_sec: f64,
    last: Instant,
    /// Events refused since the last one allowed.
    refused: u32,
}

impl TokenBucket {
    /// A full bucket allowing `rate` events per second.
    pub fn new(rate: u32, now: Instant) -> Self {
        let r = f64::from(rate.max(1));
        Self {
            capacity: r,
            tokens: r,
            per_sec: r,
            last: now,
            refused: 0,
        }
    }

    /// Whether the client has been refused [`MAX_REFUSED_IN_A_ROW`] times in a row.
    pub fn exhausted(&self) -> bool {
        self.refused >= MAX_REFUSED_IN_A_ROW
    }

    /// Take a token at `now`; false when the bucket is empty (the event is rejected).
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused = 0;
            true
        } else {
            self.refused = self.refused.saturating_add(1);
            false
        }
    }

    /// Time until the next token.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens).max(0.0)) / self.per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5, t0);
        assert!((0..5).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert!(b.retry_after() > Duration::ZERO);
        assert!(b.try_take(t0 + Duration::from_millis(200)));
        assert!(!b.try_take(t0 + Duration::from_millis(200)));
        // Long idle never overfills.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 5);
    }

    #[test]
    fn sustained_refusals_exhaust_the_client() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, t0);
        assert!(b.try_take(t0));
        for _ in 0..MAX_REFUSED_IN_A_ROW - 1 {
            assert!(!b.try_take(t0));
        }
        assert!(!b.exhausted());
        assert!(!b.try_take(t0));
        assert!(b.exhausted());
        // One allowed event resets the count.
        assert!(b.try_take(t0 + Duration::from_secs(2)));
        assert!(!b.exhausted());
    }
}
