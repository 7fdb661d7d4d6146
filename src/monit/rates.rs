//! Requests per second of each worker, from the request totals of two status reports.

use std::collections::HashMap;
use std::time::Instant;

use crate::control::proto::StatusReport;

/// A worker: app, slot, generation (a replacement starts its count again).
type Key = (String, u16, u64);

/// The totals seen at the previous report.
#[derive(Debug, Default)]
pub struct Rates {
    last: HashMap<Key, u64>,
    at: Option<Instant>,
    rates: HashMap<Key, f64>,
}

impl Rates {
    /// Take the totals of `report`, seen at `now`.
    pub fn update(&mut self, report: &StatusReport, now: Instant) {
        let elapsed = self.at.map(|t| now.duration_since(t).as_secs_f64());
        let mut seen = HashMap::new();
        self.rates.clear();
        for app in &report.apps {
            for w in &app.workers {
                let Some(total) = w.requests else { continue };
                let key = (app.name.clone(), w.slot, w.generation);
                if let (Some(dt), Some(prev)) = (elapsed, self.last.get(&key))
                    && dt > 0.0
                {
                    let rate = total.saturating_sub(*prev) as f64 / dt;
                    self.rates.insert(key.clone(), rate);
                }
                seen.insert(key, total);
            }
        }
        self.last = seen;
        self.at = Some(now);
    }

    /// Requests per second of a worker (`None` before two reports have been seen).
    pub fn get(&self, app: &str, slot: u16, generation: u64) -> Option<f64> {
        self.rates
            .get(&(app.to_string(), slot, generation))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{AppStatus, WorkerStatus};
    use std::time::Duration;

    fn report(generation: u64, requests: u64) -> StatusReport {
        StatusReport {
            apps: vec![AppStatus {
                name: "api".into(),
                workers: vec![WorkerStatus {
                    slot: 0,
                    generation,
                    pid: Some(1),
                    port: 3000,
                    state: supervisor::WorkerState::Ready,
                    restarts: 0,
                    uptime_s: 1,
                    memory_bytes: 0,
                    cpu_percent: 0.0,
                    last_exit: None,
                    sessions: None,
                    websockets: None,
                    requests: Some(requests),
                }],
            }],
            reloading: false,
            balancer: None,
            cluster: None,
        }
    }

    #[test]
    fn rates_come_from_the_difference_and_a_new_worker_starts_over() {
        let t = Instant::now();
        let mut r = Rates::default();
        r.update(&report(1, 100), t);
        assert_eq!(r.get("api", 0, 1), None);
        r.update(&report(1, 300), t + Duration::from_secs(2));
        assert_eq!(r.get("api", 0, 1), Some(100.0));
        // Replaced: generation 2 has no previous total.
        r.update(&report(2, 5), t + Duration::from_secs(3));
        assert_eq!(r.get("api", 0, 2), None);
        assert_eq!(r.get("api", 0, 1), None);
    }
}
