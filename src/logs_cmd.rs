//! `rtsup logs [-f] [-n N] [APP[:SLOT]]`: print and follow worker log files merged by time, with
//! the supervisor's own events (`<app>.events.log`) interleaved and labelled `rtsup`; no daemon
//! needed.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::control::proto::{Request, Response};

/// How often `-f` looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// How long `rtsup logs` waits for a daemon to say where its logs are.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// One live log file and where reading stopped.
struct Followed {
    path: PathBuf,
    label: String,
    inode: u64,
    offset: u64,
}

/// The `log_dir` of the daemon answering at `socket`; `None` when none answers in time (or it
/// is an older daemon that does not know the question).
pub fn daemon_log_dir(socket: &Path) -> Option<PathBuf> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let answer = runtime.block_on(async {
        tokio::time::timeout(
            ASK_TIMEOUT,
            crate::control_client::call(socket, Request::LogDir),
        )
        .await
    });
    match answer {
        Ok(Ok(Response::LogDir { path })) => Some(path),
        _ => None,
    }
}

/// Live log files in `dir` for `app` (and `slot`), sorted: `(path, label)`.
pub fn find(
    dir: &Path,
    app: Option<&str>,
    slot: Option<u16>,
) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let entries =
        fs::read_dir(dir).with_context(|| format!("reading log_dir {}", dir.display()))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // <app>-<slot>.<out|err>.log, and the supervisor's <app>.events.log
        let Some(stem) = name.strip_suffix(".log") else {
            continue;
        };
        let Some((worker, stream)) = stem.rsplit_once('.') else {
            continue;
        };
        if stream == "events" {
            if app.is_none_or(|x| x == worker) {
                found.push((entry.path(), format!("{worker} rtsup")));
            }
            continue;
        }
        if stream != "out" && stream != "err" {
            continue;
        }
        let Some((a, s)) = worker.rsplit_once('-') else {
            continue;
        };
        let Ok(s) = s.parse::<u16>() else { continue };
        if app.is_some_and(|x| x != a) || slot.is_some_and(|x| x != s) {
            continue;
        }
        found.push((entry.path(), format!("{a}:{s} {stream}")));
    }
    found.sort();
    Ok(found)
}

/// Print the last `lines` lines of the files merged by time (every line starts with rtsup's
/// UTC timestamp, so they sort as text), each labelled with its worker and stream or `rtsup`
/// for the supervisor's events; then with `follow` keep printing what is added (a rotated file
/// is reopened from its start).
/// With `slot`, the supervisor's event lines about other slots are left out.
pub fn run(
    files: Vec<(PathBuf, String)>,
    slot: Option<u16>,
    lines: usize,
    follow: bool,
) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let prefix = files.len() > 1;
    let (merged, mut followed) = merged_tail(files, slot, lines)?;
    for (line, i) in &merged {
        let label = prefix.then_some(followed[*i].label.as_str());
        emit(&mut out, label, line)?;
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(FOLLOW_POLL);
        for f in &mut followed {
            let Ok(meta) = fs::metadata(&f.path) else {
                continue;
            };
            if meta.ino() != f.inode || meta.len() < f.offset {
                f.inode = meta.ino();
                f.offset = 0;
            }
            if meta.len() == f.offset {
                continue;
            }
            let mut file = File::open(&f.path)?;
            file.seek(SeekFrom::Start(f.offset))?;
            let mut buf = Vec::new();
            file.take(meta.len() - f.offset).read_to_end(&mut buf)?;
            // Print whole lines only; the rest waits for its newline.
            let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            f.offset += end as u64 + 1;
            let events = f.label.ends_with(" rtsup");
            for line in buf[..=end].split_inclusive(|&b| b == b'\n') {
                if !events || about_slot(line, slot) {
                    emit(&mut out, prefix.then_some(f.label.as_str()), line)?;
                }
            }
        }
        out.flush()?;
    }
}

/// A line and the index of the file it comes from.
type MergedLine = (Vec<u8>, usize);

/// The last `lines` lines of `files` merged by time, each with the index of its file, and
/// where each file ends now (to follow it).
fn merged_tail(
    files: Vec<(PathBuf, String)>,
    slot: Option<u16>,
    lines: usize,
) -> anyhow::Result<(Vec<MergedLine>, Vec<Followed>)> {
    let prefix = files.len() > 1;
    let mut followed = Vec::new();
    let mut merged: Vec<(Vec<u8>, usize)> = Vec::new();
    for (i, (path, label)) in files.into_iter().enumerate() {
        let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let meta = file.metadata()?;
        let mut text = tail(&mut file, meta.len(), lines)?;
        // Not enough in the live file: the rotated ones (`.1` newest) hold the rest.
        for n in 1.. {
            let have = text.iter().filter(|&&b| b == b'\n').count();
            if have >= lines {
                break;
            }
            let older = PathBuf::from(format!("{}.{n}", path.display()));
            let Ok(mut f) = File::open(&older) else {
                break;
            };
            let len = f.metadata()?.len();
            let mut before = tail(&mut f, len, lines - have)?;
            before.extend_from_slice(&text);
            text = before;
        }
        let events = label.ends_with(" rtsup");
        merged.extend(
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty() && (!events || about_slot(l, slot)))
                .map(|l| (l.to_vec(), i)),
        );
        followed.push(Followed {
            path,
            label,
            inode: meta.ino(),
            offset: meta.len(),
        });
    }
    // Stable: lines with the same stamp keep their file's order. One file is in order already
    // (and the access log's lines do not start with a stamp).
    if prefix {
        merged.sort_by(|a, b| stamp(&a.0).cmp(stamp(&b.0)));
    }
    let skip = merged.len().saturating_sub(lines);
    merged.drain(..skip);
    Ok((merged, followed))
}

/// The last `lines` lines of `files` merged by time, as text, each labelled with its worker
/// and stream when there are several files (for `rtsup monit`).
pub fn recent(
    files: Vec<(PathBuf, String)>,
    slot: Option<u16>,
    lines: usize,
) -> anyhow::Result<Vec<String>> {
    let prefix = files.len() > 1;
    let (merged, followed) = merged_tail(files, slot, lines)?;
    Ok(merged
        .iter()
        .map(|(line, i)| {
            let text = String::from_utf8_lossy(line);
            match prefix {
                true => format!("{} | {text}", followed[*i].label),
                false => text.into_owned(),
            }
        })
        .collect())
}

/// Whether an event line (`<stamp> slot 3: …` or `<stamp> reload: …`) concerns `slot`: app-wide
/// events always do.
fn about_slot(line: &[u8], slot: Option<u16>) -> bool {
    let Some(slot) = slot else { return true };
    let message = line.splitn(2, |&b| b == b' ').nth(1).unwrap_or_default();
    !message.starts_with(b"slot ") || message.starts_with(format!("slot {slot}:").as_bytes())
}

/// The timestamp a stored line starts with (up to the first space).
fn stamp(line: &[u8]) -> &[u8] {
    line.split(|&b| b == b' ').next().unwrap_or_default()
}

/// The last `n` lines of `file` (of length `len`), reading backwards in blocks.
fn tail(file: &mut File, len: u64, n: usize) -> io::Result<Vec<u8>> {
    const BLOCK: u64 = 64 * 1024;
    let mut start = len;
    let mut buf = Vec::new();
    while start > 0 && buf.iter().filter(|&&b| b == b'\n').count() <= n {
        let from = start.saturating_sub(BLOCK);
        let mut chunk = vec![0; (start - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
    }
    let newlines: Vec<usize> = buf
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
        .collect();
    // Skip everything before the n-th newline from the end (ignoring a final one).
    let body_newlines = if buf.last() == Some(&b'\n') {
        &newlines[..newlines.len() - 1]
    } else {
        &newlines[..]
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let cut = if body_newlines.len() >= n {
        body_newlines[body_newlines.len() - n] + 1
    } else {
        0
    };
    Ok(buf.split_off(cut))
}

fn emit(out: &mut impl Write, label: Option<&str>, text: &[u8]) -> io::Result<()> {
    for line in text.split_inclusive(|&b| b == b'\n') {
        if let Some(label) = label {
            write!(out, "{label} | ")?;
        }
        out.write_all(line)?;
        if line.last() != Some(&b'\n') {
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_of_other_slots_are_left_out() {
        let line = b"2026-11-23T10:00:00.000Z slot 1: worker 2 ready";
        assert!(about_slot(line, None));
        assert!(about_slot(line, Some(1)));
        assert!(!about_slot(line, Some(0)));
        assert!(!about_slot(b"2026-11-23T10:00:00.000Z slot 10: x", Some(1)));
        assert!(about_slot(
            b"2026-11-23T10:00:00.000Z reload: revision 2",
            Some(0)
        ));
    }

    #[test]
    fn tail_takes_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a-0.out.log");
        let body: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        fs::write(&p, &body).expect("write");
        let mut f = File::open(&p).expect("open");
        let t = tail(&mut f, body.len() as u64, 3).expect("tail");
        assert_eq!(
            String::from_utf8_lossy(&t),
            "line 99997\nline 99998\nline 99999\n"
        );
        let t = tail(&mut f, body.len() as u64, 0).expect("tail");
        assert!(t.is_empty());
    }

    #[test]
    fn find_filters_by_app_and_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in [
            "chat-0.out.log",
            "chat-1.err.log",
            "chat-1.out.log.1",
            "web-0.out.log",
            "other.txt",
        ] {
            fs::write(dir.path().join(n), "").expect("write");
        }
        let all = find(dir.path(), None, None).expect("find");
        assert_eq!(all.len(), 3);
        let one = find(dir.path(), Some("chat"), Some(1)).expect("find");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].1, "chat:1 err");
    }
}
