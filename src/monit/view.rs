//! What `rtsup monit` draws: the worker table (the selected row highlighted) over the
//! selected worker's log tail, and a line of keys and balancer totals. Pure: drawn into
//! ratatui's test backend by the tests below.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};
use supervisor::WorkerState;

use super::rates::Rates;
use crate::control::proto::{StatusReport, WorkerStatus};

/// Everything the screen shows.
#[derive(Debug, Default)]
pub struct Model {
    /// The latest status (kept while the daemon does not answer).
    pub report: Option<StatusReport>,
    /// Why the latest refresh failed.
    pub error: Option<String>,
    /// Requests per second per worker.
    pub rates: Rates,
    /// The selected worker: app and slot.
    pub selected: Option<(String, u16)>,
    /// The selected worker's last log lines.
    pub log: Vec<String>,
}

impl Model {
    /// Every worker in table order.
    pub fn rows(&self) -> Vec<(&str, &WorkerStatus)> {
        self.report
            .iter()
            .flat_map(|r| &r.apps)
            .flat_map(|a| a.workers.iter().map(move |w| (a.name.as_str(), w)))
            .collect()
    }

    /// Index of the selected row (the first one when the selection is gone).
    pub fn selected_index(&self) -> Option<usize> {
        let rows = self.rows();
        if rows.is_empty() {
            return None;
        }
        let found = self
            .selected
            .as_ref()
            .and_then(|(app, slot)| rows.iter().position(|(a, w)| a == app && w.slot == *slot));
        Some(found.unwrap_or(0))
    }

    /// Move the selection by `delta` rows (clamped).
    pub fn move_selection(&mut self, delta: isize) {
        let rows = self.rows();
        let Some(i) = self.selected_index() else {
            return;
        };
        let last = rows.len().saturating_sub(1);
        let j = i.saturating_add_signed(delta).min(last);
        let (app, w) = rows[j];
        self.selected = Some((app.to_string(), w.slot));
    }
}

const HEADER: [&str; 10] = [
    "worker", "pid", "state", "cpu", "memory", "restarts", "sessions", "ws", "req/s", "uptime",
];

/// Draw `model` on `frame`.
pub fn draw(frame: &mut Frame, model: &Model) {
    let [table_area, log_area, help_area] = Layout::vertical([
        Constraint::Percentage(50),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    // The daemon does not answer: the last status is shown dimmed, without live states.
    let stale = model.error.is_some();
    let names = model
        .rows()
        .iter()
        .map(|(app, w)| app.chars().count() + 1 + w.slot.to_string().len())
        .max()
        .unwrap_or(6)
        .max(6);
    let rows: Vec<Row> = model
        .rows()
        .into_iter()
        .map(|(app, w)| {
            let rate = model
                .rates
                .get(app, w.slot, w.generation)
                .map_or("-".into(), |r| format!("{r:.1}"));
            Row::new(vec![
                Cell::from(format!("{app}:{}", w.slot)),
                Cell::from(w.pid.map_or("-".into(), |p| p.to_string())),
                if stale {
                    Cell::from("?")
                } else {
                    Cell::from(w.state.as_str()).style(state_style(w.state))
                },
                Cell::from(format!("{:.1}%", w.cpu_percent)),
                Cell::from(
                    bytesize::ByteSize::b(w.memory_bytes)
                        .display()
                        .iec()
                        .to_string(),
                ),
                Cell::from(w.restarts.to_string()),
                Cell::from(w.sessions.map_or("-".into(), |n| n.to_string())),
                Cell::from(w.websockets.map_or("-".into(), |n| n.to_string())),
                Cell::from(rate),
                Cell::from(uptime(w.uptime_s)),
            ])
            .style(if stale {
                Style::new().add_modifier(Modifier::DIM)
            } else {
                Style::new()
            })
        })
        .collect();
    let title = match (&model.error, &model.report) {
        (Some(e), _) => format!(" rtsup monit — DAEMON NOT ANSWERING (last status shown): {e} "),
        (None, Some(r)) if r.reloading => " rtsup monit — reloading ".to_string(),
        _ => " rtsup monit ".to_string(),
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(u16::try_from(names).unwrap_or(u16::MAX)),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(11),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(9),
        ],
    )
    .header(Row::new(HEADER).style(Style::new().add_modifier(Modifier::BOLD)))
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol("> ")
    .block(Block::new().borders(Borders::ALL).title(title));
    let mut state = TableState::default().with_selected(model.selected_index());
    frame.render_stateful_widget(table, table_area, &mut state);

    let log_title = match &model.selected {
        Some((app, slot)) => format!(" log {app}:{slot} "),
        None => " log ".to_string(),
    };
    // The newest lines that fit.
    let fits = usize::from(log_area.height.saturating_sub(2));
    let skip = model.log.len().saturating_sub(fits);
    let log: Vec<Line> = model.log[skip..]
        .iter()
        .map(|l| Line::raw(l.as_str()))
        .collect();
    frame.render_widget(
        Paragraph::new(log).block(Block::new().borders(Borders::ALL).title(log_title)),
        log_area,
    );

    let totals = model
        .report
        .as_ref()
        .and_then(|r| r.balancer.as_ref())
        .map_or(String::new(), |b| {
            format!(
                " · balancer: {} sessions, {} websockets, {} \"Session ID unknown\"",
                b.sessions, b.websockets, b.sid_unknown
            )
        });
    frame.render_widget(
        Paragraph::new(format!("↑/↓ select · q quit{totals}")),
        help_area,
    );
}

fn state_style(state: WorkerState) -> Style {
    Style::new().fg(match state {
        WorkerState::Ready => Color::Green,
        WorkerState::Starting | WorkerState::Draining | WorkerState::Waiting => Color::Yellow,
        WorkerState::Stopping | WorkerState::Stopped => Color::Gray,
        WorkerState::Errored => Color::Red,
    })
}

fn uptime(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{AppStatus, BalancerSummary};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn worker(slot: u16, state: WorkerState) -> WorkerStatus {
        WorkerStatus {
            slot,
            generation: 1,
            pid: Some(100 + u32::from(slot)),
            port: 3000 + slot,
            state,
            restarts: u32::from(slot),
            uptime_s: 3725,
            memory_bytes: 50 << 20,
            cpu_percent: 2.5,
            last_exit: None,
            sessions: Some(7),
            websockets: Some(3),
            requests: Some(10),
        }
    }

    fn screen(model: &Model) -> String {
        let mut terminal = Terminal::new(TestBackend::new(110, 20)).expect("test fixture");
        terminal.draw(|f| draw(f, model)).expect("test fixture");
        let buffer = terminal.backend().buffer().clone();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_table_shows_every_worker_and_the_selected_ones_log() {
        let mut model = Model {
            report: Some(StatusReport {
                apps: vec![AppStatus {
                    name: "api".into(),
                    workers: vec![
                        worker(0, WorkerState::Ready),
                        worker(1, WorkerState::Errored),
                    ],
                }],
                reloading: false,
                balancer: Some(BalancerSummary {
                    sessions: 14,
                    websockets: 6,
                    sid_unknown: 0,
                }),
                cluster: None,
            }),
            log: vec!["first line".into(), "listening on 3001".into()],
            ..Model::default()
        };
        model.move_selection(1);
        let text = screen(&model);
        assert!(text.contains("api:0"), "{text}");
        assert!(text.contains("> api:1"), "{text}");
        assert!(text.contains("errored"), "{text}");
        assert!(text.contains("50.0 MiB"), "{text}");
        assert!(text.contains("1h2m"), "{text}");
        assert!(text.contains("log api:1"), "{text}");
        assert!(text.contains("listening on 3001"), "{text}");
        assert!(text.contains("balancer: 14 sessions"), "{text}");
        // Clamped at both ends.
        model.move_selection(5);
        assert_eq!(model.selected_index(), Some(1));
        model.move_selection(-9);
        assert_eq!(model.selected_index(), Some(0));
    }

    #[test]
    fn an_unreachable_daemon_is_said_in_the_title() {
        let model = Model {
            error: Some("connection refused".into()),
            ..Model::default()
        };
        assert!(
            screen(&model).contains("DAEMON NOT ANSWERING (last status shown): connection refused")
        );
    }
}
