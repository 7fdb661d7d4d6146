//! `rtsup monit`: a live terminal view (ratatui) of every worker — state, CPU, memory,
//! restarts, sessions, WebSockets, requests/s, uptime — over the selected worker's log tail
//! (PM2's `pm2 monit`). It reads the daemon's status every second over the control socket
//! and the log files from the daemon's `log_dir`.

mod rates;
mod view;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use anyhow::Context;
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::control::proto::{Request, Response};
use crate::control_client;
use view::Model;

/// How often the status and the log are read again.
const REFRESH: Duration = Duration::from_secs(1);

/// Longest wait for a key before a signal to quit is looked at.
const SIGNAL_CHECK: Duration = Duration::from_millis(200);

/// Log lines kept for the pane (more than any terminal shows).
const LOG_LINES: usize = 200;

/// Run until the user quits (q, Esc, Ctrl-C). The daemon must answer at the start; later
/// failures are shown in the title while the last status stays on screen.
pub fn run(socket: &Path, log_dir: PathBuf) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut model = Model::default();
    refresh(&rt, socket, &log_dir, &mut model);
    if let Some(e) = model.error.take() {
        anyhow::bail!("{e}");
    }
    // SIGTERM, SIGHUP (the terminal closed) and SIGINT end the view like `q`, so the terminal
    // is always given back in its normal state.
    let quit = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGHUP, SIGINT] {
        signal_hook::flag::register(sig, quit.clone()).context("handling signals")?;
    }
    let mut terminal = ratatui::try_init().context("opening the terminal")?;
    let result = event_loop(&mut terminal, &rt, socket, &log_dir, &mut model, &quit);
    ratatui::restore();
    result
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    rt: &tokio::runtime::Runtime,
    socket: &Path,
    log_dir: &Path,
    model: &mut Model,
    quit: &AtomicBool,
) -> anyhow::Result<()> {
    let mut next = Instant::now() + REFRESH;
    loop {
        if quit.load(Ordering::Relaxed) {
            return Ok(());
        }
        terminal.draw(|f| view::draw(f, model))?;
        // Short enough to notice a signal soon.
        let timeout = next
            .saturating_duration_since(Instant::now())
            .min(SIGNAL_CHECK);
        if event::poll(timeout)? {
            if let Event::Key(key) = event::read()?
                && key.kind == KeyEventKind::Press
            {
                match key.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(());
                    }
                    KeyCode::Down | KeyCode::Char('j') => move_to(log_dir, model, 1),
                    KeyCode::Up | KeyCode::Char('k') => move_to(log_dir, model, -1),
                    _ => {}
                }
            }
            continue;
        }
        if Instant::now() < next {
            continue;
        }
        refresh(rt, socket, log_dir, model);
        next = Instant::now() + REFRESH;
    }
}

/// Select another worker and show its log at once.
fn move_to(log_dir: &Path, model: &mut Model, delta: isize) {
    model.move_selection(delta);
    read_log(log_dir, model);
}

/// Read the status and the selected worker's log again.
fn refresh(rt: &tokio::runtime::Runtime, socket: &Path, log_dir: &Path, model: &mut Model) {
    match rt.block_on(control_client::call(socket, Request::Status)) {
        Ok(Response::Status(report)) => {
            model.rates.update(&report, Instant::now());
            model.report = Some(report);
            model.error = None;
        }
        Ok(_) => model.error = Some("unexpected answer to status".into()),
        Err(e) => model.error = Some(format!("{e:#}")),
    }
    if model.selected.is_none() {
        model.move_selection(0);
    }
    read_log(log_dir, model);
}

fn read_log(log_dir: &Path, model: &mut Model) {
    let Some((app, slot)) = model.selected.clone() else {
        model.log.clear();
        return;
    };
    model.log = crate::logs_cmd::find(log_dir, Some(&app), Some(slot))
        .and_then(|files| crate::logs_cmd::recent(files, Some(slot), LOG_LINES))
        .unwrap_or_else(|e| vec![format!("cannot read the log: {e:#}")]);
}
