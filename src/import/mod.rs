//! `rtsup import FILE`: a PM2 ecosystem file (`.js`, `.json`, `.yaml`) → an equivalent,
//! commented rtsup.toml, and the keys that could not be carried over with the reason.
//!
//! The file is evaluated as PM2 does ([`ecosystem`]); each app is translated on its own
//! ([`translate`]); the result is checked by rtsup's own configuration reader before it is
//! handed back, so what `import` writes is a file `rtsup start` accepts.

mod ecosystem;
mod translate;

use std::path::Path;

use serde_json::{Map, Value};

pub use translate::LeftOut;

use crate::config::Config;

/// What the import produced.
#[derive(Debug)]
pub struct Imported {
    /// The rtsup.toml text.
    pub toml: String,
    /// Keys not carried over.
    pub left_out: Vec<LeftOut>,
    /// Problems rtsup's own checker found in the result (a key PM2 accepted that rtsup
    /// refuses, such as an env_file that does not exist): the user must edit those.
    pub check_errors: Option<String>,
}

/// Import `file`; `output` is where the TOML will be written (its directory is the base of
/// relative paths when it is checked), or `None` for stdout (checked as if in the current
/// directory).
pub fn import(file: &Path, output: Option<&Path>) -> anyhow::Result<Imported> {
    let value = ecosystem::read(file)?;
    let apps = ecosystem::apps(&value)?;
    if apps.is_empty() {
        anyhow::bail!("{}: `apps` is empty", file.display());
    }
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let base = absolute.parent().unwrap_or(Path::new("/"));
    let (toml, mut left_out) = render(
        &apps,
        base,
        &format!("imported from {} by `rtsup import`", absolute.display()),
        None,
    );
    if value.get("deploy").is_some() {
        left_out.push(LeftOut {
            key: "deploy".into(),
            reason: "rtsup does not deploy (pm2 deploy): ship the code with your own tooling, then `rtsup reload`".into(),
        });
    }
    let check_errors = check(&toml, &value, output);
    Ok(Imported {
        toml,
        left_out,
        check_errors,
    })
}

/// The rtsup.toml for PM2 `apps` whose relative paths are relative to `base`; `origin` says
/// where it came from (its first comment line).
pub fn render(
    apps: &[&Map<String, Value>],
    base: &Path,
    origin: &str,
    listen: Option<&str>,
) -> (String, Vec<LeftOut>) {
    let translated: Vec<_> = apps
        .iter()
        .enumerate()
        .map(|(i, a)| translate::app(i, a, base))
        .collect();
    let mut toml = format!(
        "# rtsup.toml {origin}.\n\
         # Start it: rtsup start -c THIS_FILE [--env PROFILE]   (-d to run in the background)\n\
         # Each instance runs as its own process on its own port ($PORT = port + slot), behind\n\
         # the sticky balancer below: clients connect to the balancer, not to the workers.\n\n"
    );
    let mut left_out = Vec::new();
    for app in &translated {
        toml.push_str(&app.toml);
        toml.push('\n');
        left_out.extend(app.left_out.iter().cloned());
    }
    if let Some(first) = translated.first() {
        // Where clients reached the first app under PM2, when its env.PORT said.
        let (listen, note) = match (listen, first.public_port) {
            (Some(l), _) => (l.to_string(), "clients connect here"),
            (None, Some(p)) => (
                format!("0.0.0.0:{p}"),
                "the app's env.PORT: clients (and nginx) keep connecting there",
            ),
            (None, None) => (
                crate::config::defaults::DEFAULT_BALANCER_LISTEN.to_string(),
                "clients (or nginx/your load balancer) connect here",
            ),
        };
        toml.push_str(&format!(
            "[balancer]\n\
             listen = \"{listen}\"  # {note}\n\
             app = \"{}\"\n",
            first.name
        ));
    }
    if translated.len() > 1 {
        toml.push_str(
            "# The other apps are supervised; route hosts or paths to them with [[balancer.route]].\n",
        );
    }
    (toml, left_out)
}

/// Check `toml` as rtsup would read it, with no profile and with each one the file has.
fn check(toml: &str, value: &serde_json::Value, output: Option<&Path>) -> Option<String> {
    let at = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new("rtsup.toml").to_path_buf());
    let at = std::path::absolute(&at).unwrap_or(at);
    let mut profiles: Vec<Option<String>> = vec![None];
    if let Ok(apps) = ecosystem::apps(value) {
        for app in apps {
            for k in app.keys() {
                if let Some(p) = k.strip_prefix("env_").filter(|p| *p != "file")
                    && !profiles.iter().flatten().any(|q| q == p)
                {
                    profiles.push(Some(p.to_string()));
                }
            }
        }
    }
    let mut errors = Vec::new();
    for profile in &profiles {
        // As `rtsup check` would: commands on PATH included.
        let report = Config::check_text(&at, toml, profile.as_deref());
        if !report.errors.0.is_empty() {
            let e = report.errors.to_string();
            if !errors.contains(&e) {
                errors.push(e);
            }
        }
    }
    (!errors.is_empty()).then(|| errors.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ecosystem_imports_to_a_file_rtsup_accepts() {
        let dir = tempfile::tempdir().expect("test fixture");
        let eco = dir.path().join("ecosystem.config.js");
        std::fs::write(
            &eco,
            r#"module.exports = { apps: [
                 { name: 'api', script: 'server.js', instances: 2, exec_mode: 'cluster',
                   env: { PORT: 4100 }, env_production: { NODE_ENV: 'production' },
                   wait_ready: true, out_file: './out.log' },
                 { name: 'jobs', script: 'jobs.js' } ] };"#,
        )
        .expect("test fixture");
        let out = dir.path().join("rtsup.toml");
        let imported = import(&eco, Some(&out)).expect("test fixture");
        assert!(
            imported.check_errors.is_none(),
            "{:?}\n{}",
            imported.check_errors,
            imported.toml
        );
        let config = Config::parse(&out, &imported.toml).expect("test fixture");
        assert_eq!(config.apps.len(), 2);
        assert_eq!(imported.left_out.len(), 1, "{:?}", imported.left_out);
        assert_eq!(imported.left_out[0].key, "apps[0].out_file");
    }
}
