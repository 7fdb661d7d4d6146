//! The human form of `rtsup status`: an aligned table, one row per worker.

use std::fmt::Write;

use crate::control::proto::StatusReport;

/// `rows` (the first is the header) in aligned columns.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(
                line,
                "{cell:<w$}  ",
                w = widths.get(c).copied().unwrap_or(0)
            );
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `rtsup status --cluster`: every host of the cluster and its workers.
pub fn render_cluster(c: &crate::cluster::ClusterSummary) -> String {
    let mut out = format!(
        "cluster {}: {} host(s); Redis {}\n",
        c.name,
        c.hosts.len(),
        match (&c.redis_up, &c.redis_down_since) {
            (true, _) => "answers".to_string(),
            (false, Some(since)) => format!(
                "DOWN since {since}{}: each host routes its own sessions, other hosts as last seen",
                c.redis_error
                    .as_deref()
                    .map_or(String::new(), |e| format!(" ({e})"))
            ),
            (false, None) => "DOWN".to_string(),
        }
    );
    let mut rows = vec![
        ["host", "app", "slot", "gen", "state"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    ];
    for h in &c.hosts {
        let host = if h.host.to_string() == c.me {
            format!("{} (this host)", h.host)
        } else {
            h.host.to_string()
        };
        if h.workers.is_empty() {
            rows.push(vec![
                host.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for w in &h.workers {
            rows.push(vec![
                host.clone(),
                w.app.clone(),
                w.slot.to_string(),
                w.generation.to_string(),
                w.state.clone(),
            ]);
        }
    }
    out.push_str(&aligned(&rows));
    out
}

/// Render `report` as an aligned text table.
pub fn render(report: &StatusReport) -> String {
    let header = [
        "app",
        "slot",
        "gen",
        "pid",
        "port",
        "state",
        "uptime",
        "restarts",
        "cpu",
        "mem",
        "sessions",
        "ws",
        "last exit",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for app in &report.apps {
        for w in &app.workers {
            rows.push(vec![
                app.name.clone(),
                w.slot.to_string(),
                w.generation.to_string(),
                w.pid.map_or("-".into(), |p| p.to_string()),
                w.port.to_string(),
                w.state.as_str().to_string(),
                if w.pid.is_some() {
                    duration(w.uptime_s)
                } else {
                    "-".into()
                },
                w.restarts.to_string(),
                format!("{:.0}%", w.cpu_percent),
                megabytes(w.memory_bytes),
                w.sessions.map_or("-".into(), |n| n.to_string()),
                w.websockets.map_or("-".into(), |n| n.to_string()),
                clip(w.last_exit.as_deref().unwrap_or_default(), LAST_EXIT_WIDTH),
            ]);
        }
    }
    let mut out = String::new();
    if report.reloading {
        out.push_str("rolling reload in progress\n");
    }
    out.push_str(&aligned(&rows));
    // An errored slot says why and how to bring it back.
    for app in &report.apps {
        for w in app.workers.iter().filter(|w| w.state.as_str() == "errored") {
            let _ = writeln!(
                out,
                "{}:{} is errored after {} restart(s): {}\n  fix the cause, then: rtsup restart {}:{} (or rtsup reload)",
                app.name,
                w.slot,
                w.restarts,
                w.last_exit.as_deref().unwrap_or("no exit recorded"),
                app.name,
                w.slot
            );
        }
    }
    if let Some(b) = &report.balancer {
        let _ = writeln!(
            out,
            "balancer: {} sessions, {} websockets, {} \"Session ID unknown\" answered",
            b.sessions, b.websockets, b.sid_unknown
        );
    }
    out
}

/// Widest "last exit" cell in the table (the JSON has it whole).
const LAST_EXIT_WIDTH: usize = 80;

/// `text` cut to `max` characters, with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// `45s`, `12m`, `3h`, `2d`.
fn duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn megabytes(b: u64) -> String {
    format!("{:.1}MB", b as f64 / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{AppStatus, WorkerStatus};
    use supervisor::WorkerState;

    #[test]
    fn columns_align() {
        let w = |slot, pid| WorkerStatus {
            slot,
            generation: 1,
            pid,
            port: 5000 + slot,
            state: if pid.is_some() {
                WorkerState::Ready
            } else {
                WorkerState::Errored
            },
            restarts: 0,
            uptime_s: 3700,
            memory_bytes: 45_200_000,
            cpu_percent: 1.4,
            last_exit: None,
            sessions: Some(3),
            websockets: None,
            requests: None,
        };
        let table = render(&StatusReport {
            apps: vec![AppStatus {
                name: "chat".into(),
                workers: vec![w(0, Some(12345)), w(1, None)],
            }],
            reloading: false,
            balancer: None,
            cluster: None,
        });
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(
            lines[1].starts_with(
                "chat  0     1    12345  5000  ready    1h      0         1%   45.2MB"
            ),
            "{table}"
        );
        assert_eq!(lines[0].find("state"), lines[2].find("errored"));
        assert_eq!(
            lines[3],
            "chat:1 is errored after 0 restart(s): no exit recorded"
        );
        assert_eq!(
            lines[4],
            "  fix the cause, then: rtsup restart chat:1 (or rtsup reload)"
        );
    }

    #[test]
    fn long_exits_are_clipped() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
