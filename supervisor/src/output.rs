//! Worker output capture: stdout/stderr lines to timestamped, size-rotated files.
//!
//! `log_dir/<app>-<slot>.out.log` and `.err.log`; when a write would take a file past
//! `max_size`, it becomes `.log.1` (older ones shift to `.2` … `.keep`, the oldest is removed).
//! Successive workers of one slot share the files, so a slot's history reads as one log.
//!
//! Lines are stored as people read them: ANSI escape sequences (colours, cursor moves) are
//! removed, and a timestamp the worker printed at the start of its line is replaced by
//! rtsup's own (UTC, milliseconds), so every line of every worker carries exactly one, in one
//! format, and lines from several files sort together by time (`rtsup logs APP`).
//! The supervisor's own events for an app go to `log_dir/<app>.events.log` in the same format.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::spec::LogSpec;

/// Longest line kept whole; longer output is cut into pieces of this size.
pub const MAX_LINE: usize = 64 * 1024;

/// Which output stream of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

impl Stream {
    /// File-name part: `out` or `err`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Out => "out",
            Self::Err => "err",
        }
    }
}

/// Path of the supervisor's event log of one app.
pub fn events_path(dir: &Path, app: &str) -> PathBuf {
    dir.join(format!("{app}.events.log"))
}

/// Path of the live log file of one slot's stream.
pub fn log_path(dir: &Path, app: &str, slot: u16, stream: Stream) -> PathBuf {
    dir.join(format!("{app}-{slot}.{}.log", stream.as_str()))
}

/// A log file that rotates itself by size.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    keep: u32,
}

/// A rotating file shared by the output pumps of successive workers of one slot.
pub type SharedLog = Arc<Mutex<RotatingFile>>;

/// Lines of a worker's stderr kept in memory, to say why it failed.
pub const TAIL_LINES: usize = 5;

/// The last [`TAIL_LINES`] lines a worker wrote (newest last).
#[derive(Debug, Clone, Default)]
pub struct Tail(Arc<Mutex<std::collections::VecDeque<String>>>);

impl Tail {
    fn push(&self, line: &[u8]) {
        if let Ok(mut lines) = self.0.lock() {
            if lines.len() == TAIL_LINES {
                lines.pop_front();
            }
            // One line of a status table: tabs would break its columns.
            lines.push_back(String::from_utf8_lossy(line).replace('\t', " "));
        }
    }

    /// The lines kept, joined with ` | `; empty when the worker wrote nothing.
    pub fn joined(&self) -> String {
        self.0
            .lock()
            .map(|l| l.iter().map(String::as_str).collect::<Vec<_>>().join(" | "))
            .unwrap_or_default()
    }
}

impl RotatingFile {
    /// Open (append) `path`, creating it.
    pub fn open(path: PathBuf, spec: &LogSpec) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            size,
            max_size: spec.max_size.max(1),
            keep: spec.keep,
        })
    }

    /// Append one line, prefixed with an RFC 3339 UTC timestamp, rotating first if needed.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let stamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let mut buf = Vec::with_capacity(stamp.len() + 1 + line.len() + 1);
        buf.extend_from_slice(stamp.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(line);
        buf.push(b'\n');
        self.write_raw(&buf)
    }

    /// Append `bytes` as they are (whole lines carrying their own time, like the access
    /// log's), rotating first if they would not fit.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = bytes.len() as u64;
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(bytes)?;
        self.size += len;
        Ok(())
    }

    /// Open the file at the path again when it is no longer the one written to (moved away
    /// by logrotate, deleted), so writing resumes at the path.
    pub fn reopen_if_moved(&mut self) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let same = match (fs::metadata(&self.path), self.file.metadata()) {
            (Ok(at_path), Ok(open)) => at_path.ino() == open.ino() && at_path.dev() == open.dev(),
            _ => false,
        };
        if !same {
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = self.file.metadata()?.len();
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    fs::rename(&from, numbered(n + 1))?;
                }
            }
            fs::rename(&self.path, numbered(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Copy `reader` line by line into `log` until end of file. Write errors are reported once to
/// the supervisor's own log and then the output is discarded, so a full disk never blocks the
/// worker on a full pipe.
/// `tail`, when given, keeps the last lines in memory too.
pub async fn pump(reader: impl AsyncRead + Unpin, log: SharedLog, tail: Option<Tail>) {
    let mut reader = BufReader::with_capacity(MAX_LINE, reader);
    let mut line = Vec::new();
    let mut failed = false;
    loop {
        let (done, used) = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&buf[..i]);
                    (true, i + 1)
                }
                None => {
                    let take = buf.len().min(MAX_LINE - line.len());
                    line.extend_from_slice(&buf[..take]);
                    (line.len() >= MAX_LINE, take)
                }
            },
        };
        reader.consume(used);
        if done {
            write(&log, &line, tail.as_ref(), &mut failed);
            line.clear();
        }
    }
    if !line.is_empty() {
        write(&log, &line, tail.as_ref(), &mut failed);
    }
}

fn write(log: &SharedLog, line: &[u8], tail: Option<&Tail>, failed: &mut bool) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let cleaned = clean(line);
    let line = cleaned.as_slice();
    if let Some(tail) = tail {
        tail.push(line);
    }
    let result = match log.lock() {
        Ok(mut f) => f.write_line(line),
        Err(_) => Ok(()),
    };
    if let Err(e) = result
        && !*failed
    {
        *failed = true;
        tracing::warn!(error = %e, "cannot write worker output; discarding it");
    }
}

/// A worker's line as stored: without ANSI escape sequences, without other control characters
/// (a `\r` or a NUL would let a line overwrite its own label and timestamp on a terminal; tabs
/// stay), and without a timestamp of its own at the start (rtsup's replaces it).
pub fn clean(line: &[u8]) -> Vec<u8> {
    let mut plain = strip_ansi(line);
    plain.retain(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    // Invalid UTF-8 becomes U+FFFD; C1 controls (U+0080–U+009F, e.g. the 8-bit CSI) and the
    // bidirectional overrides that reorder what a terminal shows are dropped.
    let text: String = String::from_utf8_lossy(&plain)
        .chars()
        .filter(|c| !matches!(c, '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        .collect();
    let skip = leading_timestamp(text.as_bytes());
    text.as_bytes()[skip..].to_vec()
}

/// `line` without ANSI escape sequences: CSI (`ESC [ … final`), OSC (`ESC ] … BEL|ESC \`)
/// and two-byte escapes.
fn strip_ansi(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i] != 0x1b {
            out.push(line[i]);
            i += 1;
            continue;
        }
        match line.get(i + 1) {
            Some(b'[') => {
                i += 2;
                while i < line.len() && !(0x40..=0x7e).contains(&line[i]) {
                    i += 1;
                }
                i += 1;
            }
            Some(b']') => {
                i += 2;
                while i < line.len()
                    && line[i] != 0x07
                    && !(line[i] == 0x1b && line.get(i + 1) == Some(&b'\\'))
                {
                    i += 1;
                }
                i += if line.get(i) == Some(&0x1b) { 2 } else { 1 };
            }
            Some(_) => i += 2,
            None => i += 1,
        }
    }
    out
}

/// Length of a timestamp the worker put at the start of `line` (`2026-11-23T10:00:00.123Z`,
/// `[2026-11-23 10:00:00,123]`, with a time zone or not), with the separator after it; 0 when
/// the line does not start with one.
fn leading_timestamp(line: &[u8]) -> usize {
    let bracket = line.first() == Some(&b'[');
    let mut i = usize::from(bracket);
    let digits = |i: &mut usize, n: usize| {
        let ok = line.len() >= *i + n && line[*i..*i + n].iter().all(u8::is_ascii_digit);
        if ok {
            *i += n;
        }
        ok
    };
    let byte = |i: &mut usize, set: &[u8]| {
        let ok = line.get(*i).is_some_and(|b| set.contains(b));
        if ok {
            *i += 1;
        }
        ok
    };
    let date_time = digits(&mut i, 4)
        && byte(&mut i, b"-")
        && digits(&mut i, 2)
        && byte(&mut i, b"-")
        && digits(&mut i, 2)
        && byte(&mut i, b"T ")
        && digits(&mut i, 2)
        && byte(&mut i, b":")
        && digits(&mut i, 2)
        && byte(&mut i, b":")
        && digits(&mut i, 2);
    if !date_time {
        return 0;
    }
    if byte(&mut i, b".,") {
        while line.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    if !byte(&mut i, b"Z") && line.get(i).is_some_and(|b| *b == b'+' || *b == b'-') {
        let mut j = i + 1;
        if digits(&mut j, 2) {
            byte(&mut j, b":");
            if digits(&mut j, 2) {
                i = j;
            }
        }
    }
    if bracket && !byte(&mut i, b"]") {
        return 0;
    }
    // The separator the worker put after it: spaces, or ": " / "- ".
    while line.get(i) == Some(&b' ') {
        i += 1;
    }
    if matches!(line.get(i), Some(b':' | b'-')) && line.get(i + 1) == Some(&b' ') {
        i += 2;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, max_size: u64, keep: u32) -> LogSpec {
        LogSpec {
            dir: dir.to_path_buf(),
            max_size,
            keep,
        }
    }

    #[test]
    fn a_moved_or_deleted_file_is_opened_again_at_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let spec = LogSpec {
            dir: dir.path().to_path_buf(),
            max_size: 1 << 20,
            keep: 2,
        };
        let mut f = RotatingFile::open(path.clone(), &spec).expect("open");
        f.write_raw(b"one\n").expect("write");
        fs::rename(&path, dir.path().join("access.log.old")).expect("mv");
        f.reopen_if_moved().expect("reopen");
        f.write_raw(b"two\n").expect("write");
        fs::remove_file(&path).expect("rm");
        f.reopen_if_moved().expect("reopen");
        f.write_raw(b"three\n").expect("write");
        f.reopen_if_moved().expect("unchanged");
        f.write_raw(b"four\n").expect("write");
        assert_eq!(fs::read_to_string(&path).expect("read"), "three\nfour\n");
        assert_eq!(
            fs::read_to_string(dir.path().join("access.log.old")).expect("read"),
            "one\n"
        );
    }

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_path(dir.path(), "chat", 0, Stream::Out);
        let mut f = RotatingFile::open(path.clone(), &spec(dir.path(), 100, 2)).expect("open");
        for i in 0..20 {
            f.write_line(format!("line {i:02} padding").as_bytes())
                .expect("write");
        }
        let live = fs::read_to_string(&path).expect("read");
        assert!(live.len() <= 100, "{live}");
        assert!(live.ends_with("line 19 padding\n"), "{live}");
        assert!(PathBuf::from(format!("{}.2", path.display())).exists());
        assert!(!PathBuf::from(format!("{}.3", path.display())).exists());
    }

    #[test]
    fn colours_and_the_workers_own_timestamps_are_removed() {
        let cases: [(&[u8], &str); 10] = [
            (b"\x1b[32minfo\x1b[0m: listening", "info: listening"),
            (b"2026-11-23T10:00:00.123Z listening", "listening"),
            (b"[2026-11-23 10:00:00,123] INFO x", "INFO x"),
            (b"2026-11-23 10:00:00+01:00 - started", "started"),
            (b"\x1b]0;title\x07plain", "plain"),
            (b"over\rwrite\x00\x01\tkept", "overwrite\tkept"),
            ("c1\u{9b}31m \u{202e}evil".as_bytes(), "c131m evil"),
            (b"bad\xff\xfe!", "bad\u{fffd}\u{fffd}!"),
            (b"2026 is a year", "2026 is a year"),
            (
                b"[2026-11-23 10:00:00 unclosed",
                "[2026-11-23 10:00:00 unclosed",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(String::from_utf8_lossy(&clean(raw)), want);
        }
    }

    #[tokio::test]
    async fn pump_timestamps_lines_and_splits_long_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_path(dir.path(), "a", 1, Stream::Err);
        let log = Arc::new(Mutex::new(
            RotatingFile::open(path.clone(), &spec(dir.path(), 1 << 30, 5)).expect("open"),
        ));
        let mut input = b"hello\r\nworld\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        let tail = Tail::default();
        pump(&input[..], log, Some(tail.clone())).await;
        assert!(tail.joined().starts_with("hello | world | xxx"));
        let text = fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{}", &text[..200]);
        assert!(lines[0].ends_with("Z hello"), "{}", lines[0]);
        assert!(lines[1].ends_with("Z world"));
        assert!(lines[3].ends_with("Z xxxxxxxxxx"));
    }
}
