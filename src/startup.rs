//! `rtsup startup` (what `pm2 startup` + `pm2 save` do): install the systemd unit for this
//! binary and configuration, create its system user when missing, reload systemd and enable
//! (and start) the service, printing every step. The configuration is checked first, so a
//! host never boots into a file rtsup refuses.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

use crate::config::Config;

/// What `rtsup startup` was asked to do.
#[derive(Debug)]
pub struct Startup {
    /// The configuration file (absolute).
    pub config: PathBuf,
    /// The user the service runs as (created as a system user when it is `rtsup` and missing).
    pub user: String,
    /// Where the unit goes.
    pub unit_dir: PathBuf,
    /// Enable only: do not start it now.
    pub no_start: bool,
    /// Print what would be done, do nothing.
    pub dry_run: bool,
}

/// The unit's name.
const UNIT: &str = "rtsup.service";

/// The user created when missing.
const SYSTEM_USER: &str = "rtsup";

/// Run it.
pub fn run(s: &Startup) -> anyhow::Result<ExitCode> {
    // As `rtsup check`: a command not on PATH would crash-loop at boot.
    let report = Config::check(&s.config, None);
    if !report.errors.0.is_empty() {
        bail!(
            "{} is not ready to run at boot:\n{}",
            s.config.display(),
            report.errors
        );
    }
    // Directories the configuration names itself must stay writable (and visible) under the
    // unit's sandbox.
    let settings = crate::config::ClientSettings::read(&s.config)?;
    let own_dirs: Vec<PathBuf> = [
        settings
            .control_socket
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_path_buf)),
        settings.log_dir.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    if in_private_tmp(&s.config) {
        bail!(
            "{} is under /tmp, which the unit makes private (PrivateTmp=true): the service could not read it; put it in /etc/rtsup",
            s.config.display()
        );
    }
    for d in &own_dirs {
        if in_private_tmp(d) {
            bail!(
                "{} is under /tmp, which the unit makes private (PrivateTmp=true): `rtsup status` could never reach it; use /run/rtsup and /var/log/rtsup (leave control_socket and log_dir out)",
                d.display()
            );
        }
    }
    let exe = std::env::current_exe().context("finding the rtsup binary")?;
    let group = match nix::unistd::User::from_name(&s.user)? {
        Some(u) => {
            Some(nix::unistd::Group::from_gid(u.gid)?.map_or_else(|| u.gid.to_string(), |g| g.name))
        }
        None if s.user == SYSTEM_USER => None,
        None => bail!(
            "no user {:?} on this host (--user names an existing user, or leave it out for the system user {SYSTEM_USER})",
            s.user
        ),
    };
    if group.is_none() {
        step(
            s.dry_run,
            &format!("create the system user {SYSTEM_USER}"),
            Command::new("useradd").args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ]),
        )?;
    }
    let group = group.unwrap_or_else(|| SYSTEM_USER.to_string());
    // The PATH this command runs with (as `pm2 startup` does): an nvm-installed node is found.
    let path = std::env::var("PATH").ok();
    let unit = unit_for(&exe, &s.config, &s.user, &group, path.as_deref(), &own_dirs);
    let path = s.unit_dir.join(UNIT);
    if s.dry_run {
        say(format!("would write {}:\n{unit}", path.display()))?;
    } else {
        if std::fs::read_to_string(&path).is_ok_and(|old| old == unit) {
            say(format!("{} is up to date", path.display()))?;
        } else {
            std::fs::create_dir_all(&s.unit_dir)
                .with_context(|| format!("cannot create {}", s.unit_dir.display()))?;
            std::fs::write(&path, &unit)
                .with_context(|| format!("cannot write {} (run it with sudo)", path.display()))?;
            say(format!("wrote {}", path.display()))?;
        }
    }
    step(
        s.dry_run,
        "reload systemd",
        Command::new("systemctl").arg("daemon-reload"),
    )?;
    let mut enable = Command::new("systemctl");
    enable.arg("enable");
    if !s.no_start {
        enable.arg("--now");
    }
    enable.arg(UNIT);
    step(s.dry_run, "enable the service at boot", &mut enable)?;
    if !s.dry_run {
        say(format!(
            "rtsup runs {} as {} at boot{}; `systemctl reload rtsup` applies changes, `journalctl -u rtsup` shows its log",
            s.config.display(),
            s.user,
            if s.no_start { "" } else { " and now" }
        ))?;
        if s.user != "root" && under_home(&s.config) {
            eprintln!(
                "rtsup: note: {} is under /home or /root: the unit reads /home read-only, and the user {} must be able to read it and the apps' directories",
                s.config.display(),
                s.user
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The unit for `exe` and `config`, run as `user`:`group`, with `path` as its PATH (when
/// given) and `writable` directories added to the ones the sandbox leaves writable.
fn unit_for(
    exe: &Path,
    config: &Path,
    user: &str,
    group: &str,
    path: Option<&str>,
    writable: &[PathBuf],
) -> String {
    crate::systemd::unit(exe, config)
        .lines()
        .map(|l| match l {
            "User=rtsup" => format!("User={user}"),
            "Group=rtsup" => format!("Group={group}"),
            l if l.starts_with("Environment=PATH=") => match path {
                Some(p) => format!("Environment=\"PATH={p}\""),
                None => l.to_string(),
            },
            l if l.starts_with("ReadWritePaths=") && !writable.is_empty() => {
                let extra: Vec<String> = writable.iter().map(|d| d.display().to_string()).collect();
                format!("{l} {}", extra.join(" "))
            }
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn in_private_tmp(p: &Path) -> bool {
    p.starts_with("/tmp") || p.starts_with("/var/tmp")
}

fn under_home(p: &Path) -> bool {
    p.starts_with("/home") || p.starts_with("/root")
}

/// One line to stdout (a closed pipe is an error, never a panic).
fn say(line: String) -> anyhow::Result<()> {
    crate::out(&(line + "\n"))?;
    Ok(())
}

/// Print `what` and the command, run it (unless `dry_run`); a failure names the command and
/// what it printed.
fn step(dry_run: bool, what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let line = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    if dry_run {
        say(format!("would {what}: {line}"))?;
        return Ok(());
    }
    say(format!("{what}: {line}"))?;
    let out = cmd.output().with_context(|| format!("cannot run {line}"))?;
    if !out.status.success() {
        bail!(
            "{line} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_as_the_chosen_user() {
        let unit = unit_for(
            Path::new("/usr/bin/rtsup"),
            Path::new("/srv/app/rtsup.toml"),
            "deploy",
            "www",
            Some("/home/deploy/.nvm/versions/node/v20/bin:/usr/bin"),
            &[PathBuf::from("/srv/app/logs")],
        );
        assert!(unit.contains("\nUser=deploy\nGroup=www\n"), "{unit}");
        assert!(
            unit.contains(
                "\nEnvironment=\"PATH=/home/deploy/.nvm/versions/node/v20/bin:/usr/bin\"\n"
            ),
            "{unit}"
        );
        assert!(
            unit.contains("\nReadWritePaths=/run/rtsup /var/log/rtsup /srv/app/logs\n"),
            "{unit}"
        );
        assert!(unit.contains("ExecStart=/usr/bin/rtsup start -c /srv/app/rtsup.toml\n"));
        assert!(!unit.contains("User=rtsup"));
    }
}
