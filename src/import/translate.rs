//! One PM2 app (its JSON object) → one commented `[[app]]` of rtsup.toml, and the keys that
//! could not be carried over, each with the reason. Pure: table-driven tests below.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Map, Value};

/// A PM2 key rtsup did not carry over, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftOut {
    /// Where it was: `apps[0].out_file`.
    pub key: String,
    /// Why, and what to do instead.
    pub reason: String,
}

/// One app, translated.
#[derive(Debug, Default)]
pub struct App {
    /// Its name (PM2's `name`, else the script's file stem).
    pub name: String,
    /// The `[[app]]` table, with comments.
    pub toml: String,
    /// What could not be carried over.
    pub left_out: Vec<LeftOut>,
    /// The port clients reached the app on under PM2 (its `env.PORT`): the balancer's.
    pub public_port: Option<u16>,
}

/// PM2 keys that have no rtsup counterpart, with the reason given to the user.
const NOT_CARRIED: &[(&str, &str)] = &[
    (
        "out_file",
        "rtsup writes each worker's stdout to log_dir/<app>-<slot>.out.log (rotated); read them with `rtsup logs APP`",
    ),
    (
        "error_file",
        "rtsup writes each worker's stderr to log_dir/<app>-<slot>.err.log (rotated); read them with `rtsup logs APP`",
    ),
    (
        "log_file",
        "`rtsup logs APP` merges every worker's stdout and stderr by time",
    ),
    (
        "log",
        "`rtsup logs APP` merges every worker's stdout and stderr by time",
    ),
    (
        "output",
        "rtsup writes each worker's stdout to log_dir/<app>-<slot>.out.log",
    ),
    (
        "error",
        "rtsup writes each worker's stderr to log_dir/<app>-<slot>.err.log",
    ),
    (
        "merge_logs",
        "rtsup keeps one file per worker and `rtsup logs APP` merges them by time",
    ),
    (
        "combine_logs",
        "rtsup keeps one file per worker and `rtsup logs APP` merges them by time",
    ),
    (
        "log_date_format",
        "rtsup stamps every log line itself (RFC 3339, UTC); the format is not configurable",
    ),
    ("time", "rtsup always stamps every log line (RFC 3339, UTC)"),
    ("log_type", "rtsup's log lines are text with a timestamp"),
    (
        "disable_logs",
        "rtsup always captures worker output (rotated by log_max_size × log_keep)",
    ),
    (
        "pid_file",
        "rtsup shows each worker's pid in `rtsup status --json`",
    ),
    (
        "shutdown_with_message",
        "rtsup stops workers with kill_signal (SIGINT, as PM2 without this option): handle SIGINT where the app handled the 'shutdown' message",
    ),
    (
        "vizion",
        "rtsup has no version-control metadata (deploy with your own tooling)",
    ),
    ("post_update", "rtsup has no pm2 deploy / update hooks"),
    ("force", "rtsup runs each app once, by name"),
    (
        "source_map_support",
        "pass --enable-source-maps in interpreter_args instead (node's own)",
    ),
    (
        "treekill",
        "rtsup always signals the worker's whole process group",
    ),
    ("pmx", "rtsup has no pmx/keymetrics agent"),
    ("automation", "rtsup has no pmx/keymetrics agent"),
    (
        "namespace",
        "rtsup groups nothing by namespace: one config file is one set of apps",
    ),
    (
        "filter_env",
        "workers inherit rtsup's environment; list what they need in env",
    ),
    ("append_env_to_name", "app names stay as written"),
    (
        "stop_exit_codes",
        "rtsup restarts a worker after any exit it did not ask for",
    ),
    (
        "user",
        "run rtsup itself as that user (the systemd unit's User=)",
    ),
    (
        "uid",
        "run rtsup itself as that user (the systemd unit's User=)",
    ),
    (
        "gid",
        "run rtsup itself as that group (the systemd unit's Group=)",
    ),
    (
        "exec_interpreter",
        "use interpreter (handled) — this older alias was not read",
    ),
    (
        "max_memory_restart_delay",
        "rtsup drains an app over max_memory before it replaces it",
    ),
];

/// What the ecosystem evaluator writes in place of a function (JSON has none).
pub const FUNCTION: &str = "[function]";

/// `word` as a shell would need it (quoted when it has anything but safe characters).
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The interpreter PM2 picks for a script by its extension (`None`: run it directly).
fn interpreter_for(script: &str) -> Option<&'static str> {
    let ext = Path::new(script).extension()?.to_str()?;
    Some(match ext {
        "js" | "cjs" | "mjs" => "node",
        "ts" => "ts-node",
        "coffee" => "coffee",
        "py" => "python3",
        "sh" => "bash",
        "rb" => "ruby",
        "php" => "php",
        "pl" => "perl",
        _ => return None,
    })
}

/// Translate app `i` of an ecosystem file that lives in `base`.
pub fn app(i: usize, pm2: &Map<String, Value>, base: &Path) -> App {
    // A key whose whole value is a function is left out at once (its value is unknown).
    let functions: Vec<LeftOut> = pm2
        .iter()
        .filter(|(_, v)| v.as_str() == Some(FUNCTION))
        .map(|(k, _)| LeftOut {
            key: format!("apps[{i}].{k}"),
            reason: "is a function: rtsup needs the value itself; write it out".to_string(),
        })
        .collect();
    let cleaned: Map<String, Value> = pm2
        .iter()
        .filter(|(_, v)| v.as_str() != Some(FUNCTION))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut t = Translator {
        i,
        pm2: &cleaned,
        out: String::new(),
        left_out: Vec::new(),
        used: Vec::new(),
    };
    let name = t.name();
    t.command();
    t.cwd(base);
    t.instances();
    let env = t.env_tables();
    let public_port = t.port(i, &env);
    t.paths(base);
    t.supervision();
    t.watch();
    t.write_env(&env);
    t.unknown_keys();
    t.left_out.extend(functions);
    App {
        name,
        toml: t.out,
        left_out: t.left_out,
        public_port,
    }
}

/// The state of one app's translation.
struct Translator<'a> {
    i: usize,
    pm2: &'a Map<String, Value>,
    out: String,
    left_out: Vec<LeftOut>,
    /// Keys read (the others are reported at the end).
    used: Vec<String>,
}

/// `env` and each `env_<profile>`, values as strings.
struct EnvTables {
    base: BTreeMap<String, String>,
    profiles: BTreeMap<String, BTreeMap<String, String>>,
}

impl<'a> Translator<'a> {
    fn get(&mut self, key: &str) -> Option<&'a Value> {
        self.used.push(key.to_string());
        self.pm2.get(key).filter(|v| !v.is_null())
    }

    fn leave(&mut self, key: &str, reason: impl Into<String>) {
        self.left_out.push(LeftOut {
            key: format!("apps[{}].{key}", self.i),
            reason: reason.into(),
        });
    }

    fn line(&mut self, key: &str, value: impl Into<toml::Value>, comment: Option<&str>) {
        let value: toml::Value = value.into();
        let _ = write!(self.out, "{key} = {value}");
        if let Some(c) = comment {
            let _ = write!(self.out, "  # {c}");
        }
        self.out.push('\n');
    }

    fn comment(&mut self, text: &str) {
        let _ = writeln!(self.out, "# {text}");
    }

    fn name(&mut self) -> String {
        let name = match self.get("name").and_then(Value::as_str) {
            Some(n) => n.to_string(),
            None => {
                let script = self.pm2.get("script").and_then(Value::as_str).unwrap_or("");
                let stem = Path::new(script)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("app");
                format!(
                    "{stem}{}",
                    if self.i == 0 {
                        String::new()
                    } else {
                        self.i.to_string()
                    }
                )
            }
        };
        // rtsup names log files after apps: letters, digits, '-' and '_'.
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        self.out.push_str("[[app]]\n");
        if clean == name {
            self.line("name", clean.clone(), None);
        } else {
            let note = format!("PM2's name was {name:?} (rtsup names log files after apps)");
            self.line("name", clean.clone(), Some(&note));
        }
        clean
    }

    /// `script`, `args`, `interpreter`, `interpreter_args` / `node_args` → `command` + `args`.
    fn command(&mut self) {
        let script = self
            .get("script")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if script.is_empty() {
            self.leave("script", "missing: PM2 needs one too; set command by hand");
        }
        let interpreter = self
            .get("interpreter")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut args: Vec<String> = Vec::new();
        for key in ["interpreter_args", "node_args"] {
            args.extend(self.words(key));
        }
        let (command, note) = match interpreter.as_deref() {
            Some("none") => (script.clone(), None),
            Some(i) => (i.to_string(), None),
            None => match interpreter_for(&script) {
                Some(i) => (
                    i.to_string(),
                    Some(format!("PM2 runs .{} files with {i}", ext(&script))),
                ),
                None => (script.clone(), None),
            },
        };
        if command != script {
            args.push(script);
        } else if !args.is_empty() {
            self.leave(
                "interpreter_args",
                "the script runs directly (interpreter \"none\"), so there is nothing to pass them to",
            );
            args.clear();
        }
        args.extend(self.words("args"));
        self.line("command", command, note.as_deref());
        self.line("args", args, None);
    }

    /// A string (split like a shell) or an array of strings / numbers.
    fn words(&mut self, key: &str) -> Vec<String> {
        match self.get(key) {
            None => Vec::new(),
            Some(Value::String(s)) if s == FUNCTION => {
                self.leave(
                    key,
                    "is a function: rtsup needs the value itself; write it out",
                );
                Vec::new()
            }
            Some(Value::String(s)) => match shlex::split(s) {
                Some(words) => words,
                None => {
                    self.leave(key, format!("{s:?} has an unclosed quote"));
                    Vec::new()
                }
            },
            Some(Value::Array(a)) if a.iter().any(|v| v.as_str() == Some(FUNCTION)) => {
                self.leave(
                    key,
                    "holds a function: rtsup needs the values themselves; write them out",
                );
                Vec::new()
            }
            Some(Value::Array(a)) => a.iter().map(scalar).collect(),
            Some(other) => {
                self.leave(key, format!("must be a string or an array, not {other}"));
                Vec::new()
            }
        }
    }

    fn cwd(&mut self, base: &Path) {
        match self.get("cwd").and_then(Value::as_str) {
            Some(c) => self.line("cwd", base.join(c).display().to_string(), None),
            None => self.line(
                "cwd",
                base.display().to_string(),
                Some("the ecosystem file's directory, as under PM2"),
            ),
        }
    }

    fn instances(&mut self) {
        let mode = self
            .get("exec_mode")
            .and_then(Value::as_str)
            .unwrap_or("fork");
        let mode_note = match mode {
            "cluster" | "cluster_mode" => Some(
                "PM2 cluster mode: here each instance is its own process on its own port ($PORT), behind rtsup's sticky balancer",
            ),
            "fork" | "fork_mode" => None,
            other => {
                let other = other.to_string();
                self.leave(
                    "exec_mode",
                    format!("{other:?} is neither fork nor cluster"),
                );
                None
            }
        };
        let count: Option<toml::Value> = match self.get("instances") {
            None => None,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(0) => Some("max".into()),
                Some(n) => Some(n.into()),
                None => {
                    let n = n.to_string();
                    self.leave("instances", format!("{n} is not a whole number"));
                    None
                }
            },
            Some(Value::String(s)) if s == "max" => Some("max".into()),
            Some(Value::String(s)) => match s.trim().parse::<i64>() {
                Ok(0) => Some("max".into()),
                Ok(n) => Some(n.into()),
                Err(_) => {
                    let s = s.clone();
                    self.leave("instances", format!("{s:?} is not a number or \"max\""));
                    None
                }
            },
            Some(other) => {
                let other = other.to_string();
                self.leave("instances", format!("{other} is not a number or \"max\""));
                None
            }
        };
        let negative = matches!(&count, Some(toml::Value::Integer(n)) if *n < 0);
        let note = if negative {
            Some("as PM2: the number of CPUs minus that many, at least 1")
        } else {
            mode_note
        };
        if let Some(count) = count {
            self.line("instances", count, note);
        } else if let Some(n) = mode_note {
            self.comment(n);
        }
    }

    fn env_tables(&mut self) -> EnvTables {
        let base = match self.get("env") {
            Some(v) => self.vars("env", v),
            None => BTreeMap::new(),
        };
        let mut profiles = BTreeMap::new();
        let keys: Vec<String> = self
            .pm2
            .keys()
            .filter(|k| k.starts_with("env_") && *k != "env_file")
            .cloned()
            .collect();
        for key in keys {
            if let Some(v) = self.get(&key) {
                let vars = self.vars(&key, v);
                profiles.insert(key["env_".len()..].to_string(), vars);
            }
        }
        EnvTables { base, profiles }
    }

    /// An env object's values as strings (PM2 passes numbers and booleans as their text).
    fn vars(&mut self, key: &str, v: &Value) -> BTreeMap<String, String> {
        let Some(obj) = v.as_object() else {
            self.leave(key, "must be an object of variables");
            return BTreeMap::new();
        };
        let mut vars = BTreeMap::new();
        for (name, value) in obj {
            match value {
                Value::String(s) if s == FUNCTION => self.leave(
                    &format!("{key}.{name}"),
                    "is a function: rtsup needs the value itself; write it out",
                ),
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    vars.insert(name.clone(), scalar(value));
                }
                Value::Null => {}
                other => self.leave(
                    &format!("{key}.{name}"),
                    format!("an environment variable is text, not {other}"),
                ),
            }
        }
        vars
    }

    /// rtsup gives slot i `PORT = port + i`. Under PM2 (cluster mode) every instance shared
    /// `env.PORT`, the port clients reach: for the first app that port becomes the
    /// balancer's and the workers take the ports after it. `port` (not a PM2 key; `rtsup start
    /// SCRIPT` writes it) sets the workers' base as is. The public port, when there is one.
    fn port(&mut self, i: usize, env: &EnvTables) -> Option<u16> {
        if let Some(p) = self.get("port").and_then(Value::as_u64) {
            self.line(
                "port",
                i64::try_from(p).unwrap_or(0),
                Some("slot i listens on port + i ($PORT)"),
            );
            return None;
        }
        let from_env = env.base.get("PORT").map(|p| (p, p.parse::<u16>().ok()));
        match from_env {
            Some((_, Some(p))) if i == 0 => {
                self.line(
                    "port",
                    i64::from(p) + 1,
                    Some("env.PORT + 1: slot i listens on port + i ($PORT); clients keep env.PORT, now the balancer's"),
                );
                Some(p)
            }
            Some((_, Some(p))) => {
                self.line(
                    "port",
                    i64::from(p),
                    Some("from env.PORT: slot i listens on port + i ($PORT); route clients to it with [[balancer.route]]"),
                );
                None
            }
            Some((text, None)) => {
                let text = text.clone();
                self.leave(
                    "env.PORT",
                    format!(
                        "{text:?} is not a port; rtsup gives each slot its own PORT from `port`"
                    ),
                );
                self.default_port(i);
                None
            }
            None => {
                self.default_port(i);
                None
            }
        }
    }

    fn default_port(&mut self, i: usize) {
        self.line(
            "port",
            3000 + 100 * i64::try_from(i).unwrap_or(0),
            Some("slot i listens on port + i ($PORT); the app must read $PORT"),
        );
    }

    /// `env_file`, relative to the ecosystem file as under PM2.
    fn paths(&mut self, base: &Path) {
        if let Some(f) = self.get("env_file").and_then(Value::as_str) {
            self.line("env_file", base.join(f).display().to_string(), None);
        }
        if let Some(v) = self.get("increment_var").and_then(Value::as_str) {
            self.line("increment_var", v.to_string(), None);
        }
        match self.get("instance_var").and_then(Value::as_str) {
            None | Some("NODE_APP_INSTANCE") => {}
            Some(_) => self.leave(
                "instance_var",
                "rtsup sets NODE_APP_INSTANCE and RTSUP_INSTANCE to the slot number",
            ),
        }
    }

    fn supervision(&mut self) {
        if self.get("wait_ready").and_then(Value::as_bool) == Some(true) {
            self.line(
                "wait_ready",
                true,
                Some("ready once the worker calls process.send('ready') (and its port accepts)"),
            );
        }
        self.duration("listen_timeout", "listen_timeout", None);
        self.line("kill_signal", "SIGINT", Some("PM2's"));
        if !self.duration("kill_timeout", "kill_timeout", None) {
            self.line("kill_timeout", "1600ms", Some("PM2's default"));
        }
        if let Some(v) = self.get("max_memory_restart") {
            match memory(v) {
                Ok(size) => self.line(
                    "max_memory",
                    size,
                    Some("drained and replaced above this (RSS of the worker's process tree)"),
                ),
                Err(e) => self.leave("max_memory_restart", e),
            }
        }
        self.duration("min_uptime", "min_uptime", None);
        if let Some(v) = self.get("max_restarts") {
            match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => self.line("max_restarts", i64::from(n), None),
                None => self.leave("max_restarts", format!("{v} is not a count")),
            }
        }
        let backoff = self.duration(
            "exp_backoff_restart_delay",
            "restart_delay",
            Some("PM2's exp_backoff_restart_delay: ×1.5 per crash up to 15 s"),
        );
        if backoff {
            if self.get("restart_delay").is_some() {
                self.leave(
                    "restart_delay",
                    "rtsup has one restart delay, taken from exp_backoff_restart_delay",
                );
            }
        } else {
            self.duration(
                "restart_delay",
                "restart_delay",
                Some("rtsup's delay grows ×1.5 per consecutive crash, up to 15 s"),
            );
        }
        if self.get("autorestart").and_then(Value::as_bool) == Some(false) {
            self.leave(
                "autorestart",
                "rtsup always restarts a worker that exits; `rtsup stop APP` stops an app",
            );
        }
        let cron = self.get("cron_restart").or_else(|| self.pm2.get("cron"));
        self.used.push("cron".to_string());
        if let Some(c) = cron {
            match c.as_str().map(crate::cron::parse) {
                Some(Ok(_)) => self.line(
                    "cron_restart",
                    c.as_str().unwrap_or_default().to_string(),
                    Some("a rolling, drained restart"),
                ),
                Some(Err(e)) => self.leave("cron_restart", e),
                None => self.leave("cron_restart", format!("{c} is not a cron pattern")),
            }
        }
    }

    /// A PM2 duration (a number of milliseconds, or text like "2s") as rtsup's `key`;
    /// whether it was there and carried.
    fn duration(&mut self, pm2_key: &str, key: &str, note: Option<&str>) -> bool {
        let Some(v) = self.get(pm2_key) else {
            return false;
        };
        match duration(v) {
            Ok(d) => {
                self.line(key, d, note);
                true
            }
            Err(e) => {
                self.leave(pm2_key, e);
                false
            }
        }
    }

    fn watch(&mut self) {
        let watch = self.get("watch");
        match watch {
            None | Some(Value::Bool(false)) => {
                self.used.extend([
                    "ignore_watch".into(),
                    "watch_delay".into(),
                    "watch_options".into(),
                ]);
                return;
            }
            Some(Value::Bool(true)) => self.line(
                "watch",
                true,
                Some("rolling reload when a file under cwd changes"),
            ),
            Some(Value::String(s)) => self.line("watch", vec![s.clone()], None),
            Some(Value::Array(a)) => {
                let paths: Vec<String> = a.iter().map(scalar).collect();
                self.line(
                    "watch",
                    paths,
                    Some("rolling reload when a file under these (relative to cwd) changes"),
                );
            }
            Some(other) => {
                let other = other.to_string();
                self.leave("watch", format!("{other} is not true or a list of paths"));
                return;
            }
        }
        match self.get("ignore_watch") {
            None => {}
            Some(Value::String(s)) => self.line("ignore_watch", vec![s.clone()], None),
            Some(Value::Array(a)) => {
                let globs: Vec<String> = a.iter().map(scalar).collect();
                self.line("ignore_watch", globs, None);
            }
            Some(other) => {
                let other = other.to_string();
                self.leave("ignore_watch", format!("{other} is not a list of patterns"));
            }
        }
        self.duration(
            "watch_delay",
            "watch_delay",
            Some("changes settle this long before the reload"),
        );
        if self.get("watch_options").is_some() {
            self.leave(
                "watch_options",
                "chokidar's options have no counterpart (rtsup uses inotify through the notify crate)",
            );
        }
    }

    fn write_env(&mut self, env: &EnvTables) {
        let base: BTreeMap<_, _> = env
            .base
            .iter()
            .filter(|(k, _)| k.as_str() != "PORT")
            .collect();
        if env
            .base
            .get("PORT")
            .is_some_and(|p| p.parse::<u16>().is_ok())
        {
            self.comment("env.PORT became `port` above: rtsup sets PORT for each slot");
        }
        if !base.is_empty() {
            self.out.push_str("\n[app.env]\n");
            for (k, v) in base {
                self.line(&key(k), v.clone(), None);
            }
        }
        for (profile, vars) in &env.profiles {
            let _ = writeln!(
                self.out,
                "\n[app.{}]  # rtsup start --env {}",
                key(&format!("env_{profile}")),
                shell_word(profile)
            );
            for (k, v) in vars {
                if k == "PORT" {
                    self.leave(
                        &format!("env_{profile}.PORT"),
                        format!("rtsup sets PORT for each slot from `port`; a profile cannot move it ({v:?} dropped): change `port` (and the balancer's listen) instead"),
                    );
                    continue;
                }
                self.line(&key(k), v.clone(), None);
            }
        }
    }

    fn unknown_keys(&mut self) {
        for k in self.pm2.keys() {
            if self.used.iter().any(|u| u == k) {
                continue;
            }
            let reason = NOT_CARRIED
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, r)| (*r).to_string())
                .unwrap_or_else(|| "not a PM2 app option rtsup knows".to_string());
            self.left_out.push(LeftOut {
                key: format!("apps[{}].{k}", self.i),
                reason,
            });
        }
    }
}

fn ext(script: &str) -> &str {
    Path::new(script)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
}

/// A scalar as PM2 would pass it on (numbers and booleans as their text).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A TOML key: bare when it can be, else quoted.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        toml::Value::String(k.to_string()).to_string()
    }
}

/// PM2's durations: a number of milliseconds, digits as text, or text like "2s" / "1m".
fn duration(v: &Value) -> Result<String, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(|ms| format!("{ms}ms"))
            .ok_or_else(|| format!("{n} is not a number of milliseconds")),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(format!("{s}ms"))
        }
        Value::String(s) => {
            let s = s.trim();
            humantime::parse_duration(s)
                .map(|_| s.to_string())
                .map_err(|_| {
                    format!("{s:?} is not a duration (a number of milliseconds or like \"2s\")")
                })
        }
        other => Err(format!("{other} is not a duration")),
    }
}

/// PM2's `max_memory_restart`: bytes, or digits with K, M or G (powers of 1024).
fn memory(v: &Value) -> Result<String, String> {
    let text = match v {
        Value::Number(n) => {
            return n
                .as_u64()
                .map(|b| format!("{b}B"))
                .ok_or_else(|| format!("{n} is not a size"));
        }
        Value::String(s) => s.trim(),
        other => return Err(format!("{other} is not a size")),
    };
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let Ok(n) = digits.trim().parse::<u64>() else {
        return Err(format!("{text:?} is not a size like \"300M\""));
    };
    let unit = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => "B",
        "K" | "KB" => "KiB",
        "M" | "MB" => "MiB",
        "G" | "GB" => "GiB",
        _ => return Err(format!("{text:?} is not a size like \"300M\"")),
    };
    Ok(format!("{n}{unit}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn translate(v: Value) -> App {
        app(
            0,
            v.as_object().expect("test fixture"),
            Path::new("/srv/app"),
        )
    }

    #[test]
    fn values_convert_as_pm2_reads_them() {
        let cases: &[(Value, Result<&str, ()>)] = &[
            (json!(3000), Ok("3000ms")),
            (json!("3000"), Ok("3000ms")),
            (json!("2s"), Ok("2s")),
            (json!("1m"), Ok("1m")),
            (json!(-5), Err(())),
            (json!("soon"), Err(())),
        ];
        for (v, want) in cases {
            assert_eq!(duration(v).as_deref().map_err(|_| ()), *want, "{v}");
        }
        let sizes: &[(Value, Result<&str, ()>)] = &[
            (json!("300M"), Ok("300MiB")),
            (json!("1G"), Ok("1GiB")),
            (json!("512k"), Ok("512KiB")),
            (json!(1048576), Ok("1048576B")),
            (json!("lots"), Err(())),
            (json!("3T"), Err(())),
        ];
        for (v, want) in sizes {
            assert_eq!(memory(v).as_deref().map_err(|_| ()), *want, "{v}");
        }
    }

    #[test]
    fn a_cluster_app_becomes_an_app_with_pm2s_defaults() {
        let a = translate(json!({
            "name": "api", "script": "server.js", "instances": 4, "exec_mode": "cluster",
            "env": {"NODE_ENV": "development", "PORT": 5001, "DEBUG": true},
            "env_production": {"NODE_ENV": "production"},
            "wait_ready": true, "kill_timeout": 3000, "max_memory_restart": "300M",
            "cron_restart": "0 3 * * *", "watch": ["src"], "ignore_watch": "node_modules",
            "watch_delay": 500, "increment_var": "WORKER_ID", "node_args": "--max-old-space-size=512",
            "args": "--color 'two words'"
        }));
        let doc: toml::Value = toml::from_str(&a.toml).expect("test fixture");
        let app = &doc["app"][0];
        assert_eq!(app["name"].as_str(), Some("api"));
        assert_eq!(app["command"].as_str(), Some("node"));
        let args: Vec<_> = app["args"]
            .as_array()
            .expect("test fixture")
            .iter()
            .map(|v| v.as_str().expect("test fixture"))
            .collect();
        assert_eq!(
            args,
            [
                "--max-old-space-size=512",
                "server.js",
                "--color",
                "two words"
            ]
        );
        assert_eq!(app["cwd"].as_str(), Some("/srv/app"));
        assert_eq!(app["instances"].as_integer(), Some(4));
        // env.PORT is the balancer's now; the workers take the ports after it.
        assert_eq!(app["port"].as_integer(), Some(5002));
        assert_eq!(a.public_port, Some(5001));
        assert_eq!(app["wait_ready"].as_bool(), Some(true));
        assert_eq!(app["kill_signal"].as_str(), Some("SIGINT"));
        assert_eq!(app["kill_timeout"].as_str(), Some("3000ms"));
        assert_eq!(app["max_memory"].as_str(), Some("300MiB"));
        assert_eq!(app["cron_restart"].as_str(), Some("0 3 * * *"));
        assert_eq!(app["watch"].as_array().map(Vec::len), Some(1));
        assert_eq!(app["ignore_watch"][0].as_str(), Some("node_modules"));
        assert_eq!(app["watch_delay"].as_str(), Some("500ms"));
        assert_eq!(app["increment_var"].as_str(), Some("WORKER_ID"));
        assert_eq!(app["env"]["DEBUG"].as_str(), Some("true"));
        assert!(app["env"].get("PORT").is_none(), "rtsup sets PORT per slot");
        assert_eq!(
            app["env_production"]["NODE_ENV"].as_str(),
            Some("production")
        );
        assert!(a.left_out.is_empty(), "{:?}", a.left_out);
    }

    #[test]
    fn keys_without_a_counterpart_are_listed_with_a_reason() {
        let a = translate(json!({
            "script": "worker.py", "out_file": "./out.log", "time": true,
            "autorestart": false, "instances": "lots", "cron_restart": "often",
            "frobnicate": 1, "max_memory_restart": "big"
        }));
        let keys: Vec<_> = a.left_out.iter().map(|l| l.key.as_str()).collect();
        for k in [
            "apps[0].out_file",
            "apps[0].time",
            "apps[0].autorestart",
            "apps[0].instances",
            "apps[0].cron_restart",
            "apps[0].frobnicate",
            "apps[0].max_memory_restart",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        assert!(a.left_out.iter().all(|l| !l.reason.is_empty()));
        assert_eq!(a.name, "worker");
        let doc: toml::Value = toml::from_str(&a.toml).expect("test fixture");
        assert_eq!(doc["app"][0]["command"].as_str(), Some("python3"));
        assert_eq!(doc["app"][0]["kill_timeout"].as_str(), Some("1600ms"));
    }

    #[test]
    fn instances_follow_pm2s_words_and_signs() {
        for (v, want) in [
            (json!("max"), toml::Value::from("max")),
            (json!(0), toml::Value::from("max")),
            (json!(-1), toml::Value::from(-1)),
            (json!("2"), toml::Value::from(2)),
        ] {
            let a = translate(json!({"script": "s.js", "instances": v}));
            let doc: toml::Value = toml::from_str(&a.toml).expect("test fixture");
            assert_eq!(doc["app"][0]["instances"], want);
        }
    }

    #[test]
    fn odd_names_and_env_keys_stay_valid_toml() {
        let a = translate(json!({
            "name": "my app@1", "script": "./bin/run", "interpreter": "none",
            "env": {"weird key": "x", "QUOTE": "a\"b"}
        }));
        let doc: toml::Value = toml::from_str(&a.toml).expect("test fixture");
        assert_eq!(doc["app"][0]["name"].as_str(), Some("my-app-1"));
        assert_eq!(doc["app"][0]["command"].as_str(), Some("./bin/run"));
        assert_eq!(doc["app"][0]["env"]["weird key"].as_str(), Some("x"));
        assert_eq!(doc["app"][0]["env"]["QUOTE"].as_str(), Some("a\"b"));
    }
}
