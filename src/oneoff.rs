//! `rtsup start app.js -i 4 --name api` (as `pm2 start app.js -i 4 --name api`): a one-off
//! app without a configuration file. The app is written as `./rtsup.toml` with PM2's
//! defaults (the same translation as `rtsup import`), so `rtsup reload`, `rtsup status` and a
//! later `rtsup start` in this directory find it; a `./rtsup.toml` the user wrote is never
//! overwritten.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Map, json};

/// The first line of a file written here: only such a file is rewritten by the next one-off.
const ORIGIN: &str = "written by `rtsup start SCRIPT` (rewritten by the next one; edit it and it is yours: rename it or run it with -c)";

/// What the command line asked for.
#[derive(Debug)]
pub struct OneOff {
    /// The script (or program) to run.
    pub script: String,
    /// `-i`: a number, `max` or `-1`.
    pub instances: Option<String>,
    /// `--name` (default: the script's file stem).
    pub name: Option<String>,
    /// First worker port.
    pub port: u16,
    /// Balancer address.
    pub listen: String,
    /// Arguments after `--`.
    pub args: Vec<String>,
}

/// Whether `rtsup start ARG` names a script to run (a file, a path or a file name with an
/// extension, or `-i` / `--name` given) rather than an app of the running daemon (app names
/// have neither `/` nor `.`).
pub fn wanted(arg: &str, instances: bool, name: bool) -> bool {
    instances || name || arg.contains('/') || arg.contains('.') || Path::new(arg).is_file()
}

/// Why `script` cannot be run: a path or a file name with an extension must be a file here;
/// a bare name must be a program on PATH.
fn script_problem(script: &str) -> Option<String> {
    let path = Path::new(script);
    if script.contains('/') || path.extension().is_some() {
        return (!path.is_file()).then(|| format!("{script}: no such file"));
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(script).is_file()));
    (!on_path).then(|| format!("{script}: not a file here and not a program on PATH"))
}

/// Write the app as `dest`; refuses to replace a file this command did not write.
pub fn write(o: &OneOff, dest: &Path) -> anyhow::Result<()> {
    if let Some(problem) = script_problem(&o.script) {
        bail!("{problem}");
    }
    if let Ok(existing) = std::fs::read_to_string(dest)
        && !existing.lines().next().is_some_and(|l| l.contains(ORIGIN))
    {
        bail!(
            "{} exists and was not written by `rtsup start SCRIPT`: add the app to it and run `rtsup start` (or `rtsup reload`), or run this in another directory",
            dest.display()
        );
    }
    let mut app = Map::new();
    if let Some(n) = &o.name {
        app.insert("name".into(), json!(n));
    }
    app.insert("script".into(), json!(o.script));
    if let Some(i) = &o.instances {
        let v = i.parse::<i64>().map_or_else(|_| json!(i), |n| json!(n));
        app.insert("instances".into(), v);
    }
    if !o.args.is_empty() {
        app.insert("args".into(), json!(o.args));
    }
    app.insert("port".into(), json!(o.port));
    let base = std::env::current_dir().context("the current directory")?;
    let (toml, left_out) = crate::import::render(&[&app], &base, ORIGIN, Some(&o.listen));
    if let Some(l) = left_out.first() {
        bail!("{}: {}", l.key.trim_start_matches("apps[0]."), l.reason);
    }
    let config = crate::config::Config::parse(dest, &toml)
        .map_err(|e| anyhow::anyhow!("the app as given is not valid:\n{e}"))?;
    std::fs::write(dest, &toml).with_context(|| format!("cannot write {}", dest.display()))?;
    if let Some(app) = config.apps.first() {
        eprintln!(
            "rtsup: wrote {} — app {} ({} {}), workers from port {}, balancer on {}",
            dest.display(),
            app.name,
            app.command,
            app.args.join(" "),
            o.port,
            o.listen
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-off of `script`, created in `dir`.
    fn one_off(dir: &Path, script: &str) -> OneOff {
        let path = dir.join(script);
        std::fs::write(&path, "// a script\n").expect("write the script");
        OneOff {
            script: path.display().to_string(),
            instances: Some("3".into()),
            name: Some("api".into()),
            port: 4100,
            listen: "127.0.0.1:4099".into(),
            args: vec!["--verbose".into()],
        }
    }

    #[test]
    fn a_one_off_is_written_and_rewritten_but_a_users_file_is_kept() {
        let dir = tempfile::tempdir().expect("test fixture");
        let dest = dir.path().join("rtsup.toml");
        let app = one_off(dir.path(), "app.js");
        write(&app, &dest).expect("test fixture");
        let config = crate::config::Config::load(&dest).expect("test fixture");
        assert_eq!(config.apps[0].name, "api");
        assert_eq!(config.apps[0].instances, 3);
        assert_eq!(config.apps[0].args, [app.script.as_str(), "--verbose"]);
        // Ours: rewritten.
        write(&one_off(dir.path(), "other.js"), &dest).expect("test fixture");
        // The user's: kept.
        std::fs::write(&dest, "[[app]]\nname = \"mine\"\n").expect("test fixture");
        let e = write(&app, &dest).expect_err("must fail");
        assert!(e.to_string().contains("was not written by"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&dest).expect("test fixture"),
            "[[app]]\nname = \"mine\"\n"
        );
    }

    #[test]
    fn a_bad_instance_count_or_a_missing_script_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("test fixture");
        let mut o = one_off(dir.path(), "app.js");
        o.instances = Some("lots".into());
        let e = write(&o, &dir.path().join("rtsup.toml")).expect_err("must fail");
        assert!(e.to_string().starts_with("instances:"), "{e}");
        for missing in ["missing.js", "./bin/nothing", "no-such-program-anywhere"] {
            let mut o = one_off(dir.path(), "app.js");
            o.script = missing.into();
            let e = write(&o, &dir.path().join("rtsup.toml")).expect_err("must fail");
            assert!(e.to_string().starts_with(missing), "{e}");
        }
        assert!(!dir.path().join("rtsup.toml").exists());
    }

    #[test]
    fn scripts_are_told_from_app_names() {
        assert!(wanted("app.js", false, false));
        assert!(wanted("./run", false, false));
        assert!(!wanted("chat", false, false));
        assert!(wanted("chat", true, false));
    }
}
