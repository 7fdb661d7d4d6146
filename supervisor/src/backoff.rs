//! Restart policy: how long to wait before restarting a crashed worker, and when to give up.
//!
//! Pure arithmetic, no clocks: the slot state machine asks it with the count of consecutive
//! crashes it keeps itself.

use std::time::Duration;

/// PM2's cap on the exponential restart delay (`exp_backoff_restart_delay`): 15 s.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(15);

/// Growth of the restart delay per consecutive crash (PM2 uses 1.5).
pub const BACKOFF_FACTOR: f64 = 1.5;

/// When and how often a crashed worker is restarted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    /// Delay before the first restart after a crash.
    pub restart_delay: Duration,
    /// A worker that ran at least this long before exiting was stable: its crash count resets.
    pub min_uptime: Duration,
    /// Consecutive crashes tolerated; one more and the slot is `errored`.
    pub max_restarts: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            restart_delay: Duration::from_millis(100),
            min_uptime: Duration::from_secs(1),
            max_restarts: 16,
        }
    }
}

impl RestartPolicy {
    /// Delay before restarting after the `crashes`-th consecutive crash (1-based):
    /// `restart_delay × 1.5^(crashes-1)`, capped at [`MAX_RESTART_DELAY`].
    pub fn delay(&self, crashes: u32) -> Duration {
        let exp = crashes.saturating_sub(1).min(64) as i32;
        let secs = self.restart_delay.as_secs_f64() * BACKOFF_FACTOR.powi(exp);
        if secs >= MAX_RESTART_DELAY.as_secs_f64() {
            MAX_RESTART_DELAY
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// Whether `crashes` consecutive crashes exhaust the policy.
    pub fn gives_up(&self, crashes: u32) -> bool {
        crashes > self.max_restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_by_half_and_caps() {
        let p = RestartPolicy {
            restart_delay: Duration::from_millis(100),
            ..RestartPolicy::default()
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(150));
        assert_eq!(p.delay(3), Duration::from_millis(225));
        assert_eq!(p.delay(40), MAX_RESTART_DELAY);
        assert_eq!(p.delay(u32::MAX), MAX_RESTART_DELAY);
    }

    #[test]
    fn zero_delay_stays_zero() {
        let p = RestartPolicy {
            restart_delay: Duration::ZERO,
            ..RestartPolicy::default()
        };
        assert_eq!(p.delay(10), Duration::ZERO);
    }

    #[test]
    fn gives_up_after_max_restarts() {
        let p = RestartPolicy {
            max_restarts: 3,
            ..RestartPolicy::default()
        };
        assert!(!p.gives_up(3));
        assert!(p.gives_up(4));
    }
}
