//! Reading a PM2 ecosystem file into JSON: `.js` / `.cjs` / `.mjs` evaluated by node (as PM2
//! does: `module.exports` or an ES module's default export), `.json` and `.yaml` / `.yml` read
//! directly.

use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// How long node may take to evaluate an ecosystem file (it runs the user's code).
const EVAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Evaluates the module named by argv[1] and prints it as JSON after [`MARKER`] (the file may
/// print things of its own), then exits (the file may have started timers or servers);
/// functions (PM2 allows a few, none rtsup could carry) become a marker string so the
/// translator can name them.
const EVAL_JS: &str = r#"
const { pathToFileURL } = require('node:url');
import(pathToFileURL(process.argv[1]).href).then((m) => {
  const c = m && m.default !== undefined ? m.default : m;
  const json = JSON.stringify(c, (k, v) => typeof v === 'function' ? '[function]' : v);
  process.stdout.write('\n' + process.argv[2] + json + '\n', () => process.exit(0));
}, (e) => { console.error(e && e.stack || String(e)); process.exit(1); });
"#;

/// Starts the line of the evaluated configuration in node's output.
const MARKER: &str = "\u{1e}rtsup-ecosystem-json:";

/// How long output is still read once node has exited (a child it left behind may hold the
/// pipe open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(300);

/// The file's content as JSON.
pub fn read(file: &Path) -> anyhow::Result<Value> {
    let name = file.to_string_lossy().to_lowercase();
    if name.ends_with(".json") {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
    } else if name.ends_with(".yaml") || name.ends_with(".yml") {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{} is not YAML", file.display()))?;
        // `<<: *base` merge keys, as js-yaml (PM2's reader) applies them.
        yaml.apply_merge().with_context(|| {
            format!(
                "{}: a merge key (<<) that cannot be applied",
                file.display()
            )
        })?;
        serde_json::to_value(yaml)
            .with_context(|| format!("{}: YAML that has no JSON form", file.display()))
    } else if [".js", ".cjs", ".mjs"].iter().any(|e| name.ends_with(e)) {
        eval_js(file)
    } else {
        bail!(
            "{}: an ecosystem file ends in .js, .cjs, .mjs, .json, .yaml or .yml",
            file.display()
        )
    }
}

/// Run node on `file` (in its directory, as PM2 does) and parse what it prints.
fn eval_js(file: &Path) -> anyhow::Result<Value> {
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    if !file.is_file() {
        bail!("{}: no such file", file.display());
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut child = std::process::Command::new("node")
        .arg("-e")
        .arg(EVAL_JS)
        .arg(&file)
        .arg(MARKER)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run node to evaluate the ecosystem file (is Node.js installed?)")?;
    let stdout = chunks(child.stdout.take().context("node's stdout")?);
    let stderr = chunks(child.stderr.take().context("node's stderr")?);
    let deadline = std::time::Instant::now() + EVAL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "node did not finish evaluating {} within {}s (does it start a server before exporting?)",
                file.display(),
                EVAL_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = drain(&stdout);
    let stderr = drain(&stderr);
    if !status.success() {
        bail!(
            "node could not evaluate {}:\n{}",
            file.display(),
            String::from_utf8_lossy(&stderr).trim_end()
        );
    }
    let text = String::from_utf8_lossy(&stdout);
    let json = text
        .rsplit_once(MARKER)
        .map(|(_, after)| after.lines().next().unwrap_or_default())
        .with_context(|| format!("node printed no configuration for {}", file.display()))?;
    serde_json::from_str(json).with_context(|| {
        format!(
            "{} does not export a configuration (module.exports = {{ apps: [...] }})",
            file.display()
        )
    })
}

/// Read `pipe` on a thread of its own, chunk by chunk.
fn chunks(mut pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    rx
}

/// What `rx` has, and what comes within [`DRAIN_AFTER_EXIT`] (node has exited: whatever it
/// wrote is in the pipe; a child it left may keep the pipe open without writing).
fn drain(rx: &mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(chunk) = rx.recv_timeout(DRAIN_AFTER_EXIT) {
        out.extend_from_slice(&chunk);
    }
    out
}

/// The `apps` of an ecosystem (`{ apps: [...] }`, a bare array, or a single app object).
pub fn apps(config: &Value) -> anyhow::Result<Vec<&serde_json::Map<String, Value>>> {
    let list = match config {
        Value::Object(o) => match o.get("apps") {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(Value::Object(_)) => vec![&o["apps"]],
            Some(_) => bail!("`apps` must be an array of app objects"),
            None if o.contains_key("script") => vec![config],
            None => bail!("no `apps` in the ecosystem file"),
        },
        Value::Array(a) => a.iter().collect(),
        _ => bail!("the ecosystem file must export an object with `apps`"),
    };
    list.into_iter()
        .enumerate()
        .map(|(i, a)| {
            a.as_object()
                .with_context(|| format!("apps[{i}] is not an object"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apps_are_found_in_each_shape_pm2_accepts() {
        let one = json!({"name": "a", "script": "a.js"});
        assert_eq!(
            apps(&json!({"apps": [one.clone()]}))
                .expect("test fixture")
                .len(),
            1
        );
        assert_eq!(
            apps(&json!([one.clone(), one.clone()]))
                .expect("test fixture")
                .len(),
            2
        );
        assert_eq!(apps(&one).expect("test fixture").len(), 1);
        assert!(apps(&json!({"deploy": {}})).is_err());
        assert!(apps(&json!({"apps": [1]})).is_err());
    }

    #[test]
    fn yaml_and_json_files_are_read() {
        let dir = tempfile::tempdir().expect("test fixture");
        let y = dir.path().join("eco.yaml");
        std::fs::write(
            &y,
            "apps:\n  - name: api\n    script: server.js\n    instances: 2\n",
        )
        .expect("test fixture");
        assert_eq!(
            read(&y).expect("test fixture")["apps"][0]["instances"],
            json!(2)
        );
        let j = dir.path().join("eco.json");
        std::fs::write(&j, r#"{"apps":[{"name":"api","script":"s.js"}]}"#).expect("test fixture");
        assert_eq!(
            read(&j).expect("test fixture")["apps"][0]["name"],
            json!("api")
        );
        let bad = dir.path().join("eco.txt");
        std::fs::write(&bad, "").expect("test fixture");
        assert!(read(&bad).is_err());
    }
}
