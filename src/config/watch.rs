//! `watch` / `ignore_watch` / `watch_delay` of an app (PM2's), checked: the paths to watch
//! (absolute), the ignore patterns compiled, the settle time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::error::Reporter;
use super::raw::{RawConfig, RawWatch};

/// Ignored under every watched path unless the app lists its own `ignore_watch` (as PM2's
/// defaults, plus version control).
pub const DEFAULT_IGNORE: &[&str] = &["node_modules", ".git"];

/// Changes settle this long before the app is reloaded, unless `watch_delay` says otherwise.
const DEFAULT_DELAY: &str = "1s";

/// One app's watch, checked.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The app.
    pub app: String,
    /// Directories or files watched (recursively), absolute.
    pub paths: Vec<PathBuf>,
    /// The app's `cwd`, absolute: ignore patterns are relative to it (as PM2's).
    pub cwd: PathBuf,
    /// A changed path is ignored when it, or any directory on its way down from `cwd` (or
    /// from the watched path, for one outside `cwd`), matches one of these.
    pub ignore: GlobSet,
    /// Quiet time after the last change before the rolling reload.
    pub delay: Duration,
}

impl WatchConfig {
    /// Whether a change of `path` (absolute) should reload the app.
    pub fn wants(&self, path: &Path) -> bool {
        let Some(root) = self.paths.iter().find(|r| path.starts_with(r)) else {
            return false;
        };
        let rel = path
            .strip_prefix(&self.cwd)
            .or_else(|_| path.strip_prefix(root))
            .unwrap_or(path);
        // `node_modules` matches `node_modules/x/y.js`; `watched/ignored` matches under it;
        // `*.log` matches a log file at any depth.
        let mut prefix = PathBuf::new();
        for part in rel.components() {
            prefix.push(part);
            if self.ignore.is_match(&prefix) || self.ignore.is_match(part.as_os_str()) {
                return false;
            }
        }
        true
    }
}

/// Every app's watch. `base` is the configuration file's directory.
pub fn watches(raw: &RawConfig, base: &Path, rep: &mut Reporter<'_>) -> Vec<WatchConfig> {
    let mut out = Vec::new();
    for (i, app) in raw.app.iter().enumerate() {
        let Some(app) = app.as_ref().map(|a| &a.value) else {
            continue;
        };
        let key = |k: &str| format!("app[{i}].{k}");
        let Some(watch) = &app.watch else {
            for (k, present) in [
                ("ignore_watch", app.ignore_watch.is_some()),
                ("watch_delay", app.watch_delay.is_some()),
            ] {
                if present {
                    rep.at(None, key(k), "has no effect without watch");
                }
            }
            continue;
        };
        let cwd = app
            .cwd
            .as_ref()
            .map_or_else(|| base.to_path_buf(), |c| base.join(c.get_ref()));
        let paths: Vec<PathBuf> = match watch.get_ref() {
            RawWatch::On(false) => continue,
            RawWatch::On(true) => vec![cwd.clone()],
            RawWatch::Paths(p) if p.is_empty() => {
                rep.at(
                    Some(watch.span()),
                    key("watch"),
                    "is an empty list: name a path, or write watch = true for the app's cwd",
                );
                continue;
            }
            RawWatch::Paths(p) => p.iter().map(|p| cwd.join(p)).collect(),
        };
        let mut bad = false;
        for p in &paths {
            if !p.exists() {
                rep.at(
                    Some(watch.span()),
                    key("watch"),
                    format!("{} does not exist", p.display()),
                );
                bad = true;
            }
        }
        let patterns: Vec<String> = match &app.ignore_watch {
            Some(list) => list.get_ref().clone(),
            None => DEFAULT_IGNORE.iter().map(|s| s.to_string()).collect(),
        };
        let mut set = GlobSetBuilder::new();
        for p in &patterns {
            // PM2's ignore_watch entries are often plain paths ("logs", "./tmp").
            let p = p.trim_start_matches("./").trim_end_matches('/');
            match Glob::new(p) {
                Ok(g) => {
                    set.add(g);
                }
                Err(e) => {
                    rep.at(
                        app.ignore_watch.as_ref().map(|s| s.span()),
                        key("ignore_watch"),
                        format!("{p:?} is not a glob pattern: {e}"),
                    );
                    bad = true;
                }
            }
        }
        let ignore = match set.build() {
            Ok(s) => s,
            Err(e) => {
                rep.at(None, key("ignore_watch"), e.to_string());
                continue;
            }
        };
        let delay = super::validate::duration(
            app.watch_delay.as_ref(),
            DEFAULT_DELAY,
            &key("watch_delay"),
            rep,
        );
        let (Some(name), Some(delay), false) = (&app.name, delay, bad) else {
            continue;
        };
        out.push(WatchConfig {
            app: name.get_ref().clone(),
            paths: paths
                .into_iter()
                .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
                .collect(),
            cwd: std::fs::canonicalize(&cwd).unwrap_or(cwd),
            ignore,
            delay,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(ignore: &[&str]) -> WatchConfig {
        let mut set = GlobSetBuilder::new();
        for p in ignore {
            set.add(Glob::new(p).expect("test fixture"));
        }
        WatchConfig {
            app: "api".into(),
            paths: vec![PathBuf::from("/srv/api")],
            cwd: PathBuf::from("/srv/api"),
            ignore: set.build().expect("test fixture"),
            delay: Duration::from_secs(1),
        }
    }

    #[test]
    fn ignore_patterns_match_directories_files_and_globs() {
        let w = watch(&["node_modules", "watched/ignored", "*.log"]);
        let cases = [
            ("/srv/api/server.js", true),
            ("/srv/api/lib/a.js", true),
            ("/srv/api/node_modules/x/index.js", false),
            ("/srv/api/lib/node_modules/x.js", false),
            ("/srv/api/watched/a.txt", true),
            ("/srv/api/watched/ignored/a.txt", false),
            ("/srv/api/logs/out.log", false),
            ("/srv/other/server.js", false),
        ];
        for (path, want) in cases {
            assert_eq!(w.wants(Path::new(path)), want, "{path}");
        }
    }
}
