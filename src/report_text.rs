//! The human form of a per-slot report (`rtsup reload`, `restart`, `start APP`, `stop APP`,
//! `scale`): one line per slot, then a summary; failures make the command exit non-zero.

use std::fmt::Write;

use supervisor::Report;

/// One line per slot and a summary line starting with `verb`.
pub fn render(verb: &str, report: &Report) -> String {
    let mut out = String::new();
    let width = report
        .slots
        .iter()
        .map(|s| s.app.len() + 1 + s.slot.to_string().len())
        .max()
        .unwrap_or(0);
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for s in &report.slots {
        let (word, detail) = (s.outcome.word(), s.outcome.detail());
        match counts.iter_mut().find(|(w, _)| *w == word) {
            Some((_, n)) => *n += 1,
            None => counts.push((word, 1)),
        }
        let name = format!("{}:{}", s.app, s.slot);
        let _ = writeln!(out, "{name:<width$}  {word:<10} {detail}");
    }
    let summary: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
    let _ = writeln!(
        out,
        "{verb}: {}",
        if summary.is_empty() {
            "nothing to do".to_string()
        } else {
            summary.join(", ")
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use supervisor::{Outcome, SlotReport};

    #[test]
    fn one_line_per_slot_and_a_summary() {
        let report = Report {
            slots: vec![
                SlotReport {
                    app: "chat".into(),
                    slot: 0,
                    outcome: Outcome::Replaced { generation: 2 },
                },
                SlotReport {
                    app: "chat".into(),
                    slot: 1,
                    outcome: Outcome::Failed {
                        reason: "spawn nodee: No such file or directory (os error 2)".into(),
                    },
                },
            ],
        };
        let text = render("reload", &report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "chat:0  replaced   generation 2");
        assert!(
            lines[1].starts_with("chat:1  failed     spawn nodee"),
            "{text}"
        );
        assert_eq!(lines[2], "reload: 1 replaced, 1 failed");
    }
}
