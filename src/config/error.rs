//! Configuration errors that name the file, line, column and key.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, 0 when the problem has no place (e.g. a missing section).
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Dotted key path, e.g. `app[0].instances`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file.display(),
                self.line,
                self.col,
                self.key,
                self.message
            )
        }
    }
}

/// Every problem found in one file; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// The problems sorted by place (top of the file first; problems without a place last),
    /// so the output reads like the file.
    pub fn sorted(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| (e.line == 0, e.line, e.col));
        Self(errors)
    }
}

/// Collects errors (and warnings) against one source text, turning byte spans into line and
/// column.
pub struct Reporter<'a> {
    file: &'a Path,
    src: &'a str,
    /// The errors so far.
    pub errors: Vec<ConfigError>,
    /// Things that would not stop rtsup but deserve a look (`rtsup check` prints them); the
    /// message starts with `warning: `.
    pub warnings: Vec<ConfigError>,
}

impl<'a> Reporter<'a> {
    /// A reporter for `src`, read from `file`.
    pub fn new(file: &'a Path, src: &'a str) -> Self {
        Self {
            file,
            src,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The place of byte `span` as (line, column), (0, 0) without a span.
    fn place(&self, span: Option<Range<usize>>) -> (usize, usize) {
        span.map_or((0, 0), |s| line_col(self.src, s.start))
    }

    /// Record a problem at `span` (a byte range of the source) for `key`.
    pub fn at(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) {
        let (line, col) = self.place(span);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            col,
            key: key.into(),
            message: msg.into(),
        });
    }

    /// Record a warning at `span` for `key`.
    pub fn warn(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        msg: impl std::fmt::Display,
    ) {
        let (line, col) = self.place(span);
        self.warnings.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            col,
            key: key.into(),
            message: format!("warning: {msg}"),
        });
    }

    /// Record a parse error from the TOML reader, deriving the key from where it points.
    pub fn toml(&mut self, e: &toml::de::Error) {
        self.toml_in(e, "(file)", None);
    }

    /// Record an error from the TOML reader met while reading the section `key` (at `span`):
    /// the key comes from where the error points, else the section's.
    pub fn toml_in(&mut self, e: &toml::de::Error, key: &str, span: Option<Range<usize>>) {
        let span = e.span().or(span);
        let key = span
            .as_ref()
            .map_or_else(|| key.to_string(), |s| key_at(self.src, s.start));
        let msg = e.message().trim().replace('\n', " ");
        self.at(span, key, msg);
    }
}

/// 1-based line and column of byte `offset`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// Best-effort dotted key for the place at `offset`: the enclosing table header (with the index
/// of an array of tables) and the key on that line, e.g. `app[1].instances`.
pub fn key_at(src: &str, offset: usize) -> String {
    let offset = offset.min(src.len());
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut line_start = 0;
    let mut key = String::new();
    for line in src.split_inclusive('\n') {
        let t = line.trim();
        if line_start > offset {
            break;
        }
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_string();
            let n = counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{n}]");
            *n += 1;
            key.clear();
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_string();
            key.clear();
        } else if let Some((k, _)) = t.split_once('=') {
            key = k.trim().trim_matches('"').to_string();
        }
        line_start += line.len();
    }
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(top level)".into(),
        (true, false) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 4));
    }

    #[test]
    fn key_at_names_array_tables() {
        let src = "[supervisor]\nlog_dir = \"x\"\n[[app]]\nname = \"a\"\n[[app]]\nname = \"b\"\nport = 1\n";
        let off = src.find("port").expect("port");
        assert_eq!(key_at(src, off), "app[1].port");
        let off = src.find("log_dir").expect("log_dir");
        assert_eq!(key_at(src, off), "supervisor.log_dir");
    }
}
