//! `cron_restart` (PM2's): a rolling, drained restart of an app at the times of a cron
//! pattern, in local time; 5 fields, or 6 with seconds first.

use std::time::Duration;

use chrono::Local;
use croner::Cron;
use supervisor::{SupervisorHandle, WorkerState};
use tracing::{info, warn};

/// Parse a pattern (seconds optional): the error says what is wrong with it.
pub fn parse(pattern: &str) -> Result<Cron, String> {
    Cron::new(pattern)
        .with_seconds_optional()
        .parse()
        .map_err(|e| format!("{pattern:?} is not a cron pattern like \"0 3 * * *\": {e}"))
}

/// The states of `app`'s workers now (`None`: no such app any more).
pub fn app_states(handle: &SupervisorHandle, app: &str) -> Option<Vec<WorkerState>> {
    handle
        .fleet()
        .apps
        .iter()
        .find(|a| a.name == app)
        .map(|a| a.workers.iter().map(|w| w.state).collect())
}

/// Whether an app with these worker states is running (not stopped by the operator, not
/// errored): a scheduled or watched restart applies to it.
pub fn running(states: &[WorkerState]) -> bool {
    states
        .iter()
        .any(|s| matches!(s, WorkerState::Ready | WorkerState::Starting))
}

/// Restart `app` (rolling, each worker drained as by `rtsup restart APP`) at every time of
/// `cron`, until the supervisor is gone.
pub async fn run(handle: SupervisorHandle, app: String, cron: Cron) {
    loop {
        let now = Local::now();
        let Ok(next) = cron.find_next_occurrence(&now, false) else {
            warn!(
                app,
                "cron_restart: the pattern has no next time; no more restarts"
            );
            return;
        };
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        // Not an app the operator stopped (it stays stopped), nor one whose previous
        // replacement is still under way (workers draining or stopping): that time is skipped.
        let Some(states) = app_states(&handle, &app) else {
            continue;
        };
        if !running(&states) {
            info!(app, "cron_restart: the app is not running; skipped");
            continue;
        }
        if states
            .iter()
            .any(|s| matches!(s, WorkerState::Draining | WorkerState::Stopping))
        {
            info!(
                app,
                "cron_restart: the previous replacement is still under way; skipped"
            );
            continue;
        }
        info!(app, "cron_restart: rolling restart");
        match handle.restart(&app, None, false).await {
            Ok(report) if report.ok() => info!(app, "cron_restart: done"),
            Ok(report) => warn!(app, ?report, "cron_restart: done with failures"),
            // The supervisor is stopping.
            Err(e) => {
                info!(app, error = %e, "cron_restart: stopped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_with_and_without_seconds_parse_and_bad_ones_say_why() {
        assert!(parse("0 3 * * *").is_ok());
        assert!(parse("*/2 * * * * *").is_ok());
        let e = parse("every day").expect_err("not cron");
        assert!(e.starts_with("\"every day\" is not a cron pattern"), "{e}");
    }
}
