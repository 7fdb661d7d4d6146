//! `rtsup`: process supervisor and sticky Socket.IO balancer in one binary.
//!
//! This crate is the CLI and the wiring; policy lives in the `supervisor` (processes) and
//! `balancer` (HTTP, engine.io) crates.

mod admin;
mod cli;
mod cluster;
mod config;
mod control;
mod control_client;
mod cron;
mod daemon;
mod demo;
mod detach;
mod import;
mod leftovers;
mod logs_cmd;
mod monit;
mod notify;
mod observe;
mod oneoff;
mod reload;
mod report_text;
mod signals;
mod startup;
mod status_table;
mod systemd;
mod watch;
mod wiring;
mod worker_metrics;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::control::proto::{Request, Response};
use anyhow::{Context, bail};
use clap::Parser;

use crate::cli::{Cli, Command, Target};
use crate::config::{ClientSettings, Config};

/// Added to every log filter that does not name pingora_core itself: pingora's connector reports
/// a routine race of its connection pool ("failed to acquire reusable stream") at error level on
/// every miss; failures to reach a worker are rtsup's own (`rtsup_balancer_upstream_errors_total`
/// and the 502/503 answers).
const QUIET_TARGET: &str = "pingora_core::connectors=off";

/// jemalloc instead of glibc's malloc, with its background threads purging freed pages: glibc
/// keeps what a flood of connections allocated on its per-thread arenas long after they
/// closed (measured: 160 MB still resident 30 s after 2,000 partial headers were closed,
/// bench/hostile.py); jemalloc gives them back within its decay time (10 s).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Configuration file used when `-c` is not given.
const DEFAULT_CONFIG: &str = "rtsup.toml";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // `rtsup status | head -1`: the reader is done, so is the command (as ripgrep does).
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtsup: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `rtsup start` of the configuration `explicit` (else ./rtsup.toml, else the embedded demo):
/// in the foreground, or with `detach` (how long to wait for it) in the background.
fn start_daemon(
    explicit: Option<&Path>,
    profile: Option<&str>,
    detach: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    // Absolute, so the daemon's messages (e.g. a refused reload, shown by a client in
    // another directory) name the file unambiguously.
    let file = find_config(explicit).map(|f| std::path::absolute(&f).unwrap_or(f));
    let config = match &file {
        Some(file) => Config::load_profile(file, profile)
            .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?,
        None => {
            let demo = demo::config()?;
            if let Some(b) = &demo.balancer {
                eprintln!(
                    "rtsup: no -c FILE and no ./{DEFAULT_CONFIG}: starting the embedded demo"
                );
                eprintln!(
                    "rtsup: open http://{}/ (workers: rtsup status; logs: rtsup logs -f)",
                    b.listen
                );
            }
            demo
        }
    };
    if let Some(wait) = detach {
        return detach::run(&config, file.as_deref(), profile, wait);
    }
    init_tracing();
    control::server::advertise_log_dir(
        std::path::absolute(&config.supervisor.logs.dir)
            .unwrap_or_else(|_| config.supervisor.logs.dir.clone()),
    );
    runtime()?.block_on(daemon::run(config, file))?;
    Ok(ExitCode::SUCCESS)
}

/// `rtsup import`: the TOML to stdout or `-o`, what was left out to stderr; fails when rtsup
/// would not accept the result as it is (the TOML is still written, to be edited).
fn import_cmd(file: &Path, output: Option<&Path>, force: bool) -> anyhow::Result<ExitCode> {
    if let Some(o) = output {
        if std::fs::canonicalize(o).is_ok_and(|o| std::fs::canonicalize(file).is_ok_and(|f| f == o))
        {
            bail!(
                "{} is the file being imported; write the TOML elsewhere",
                o.display()
            );
        }
        if o.exists() && !force {
            bail!("{} exists; pass --force to overwrite it", o.display());
        }
    }
    let imported = import::import(file, output)?;
    match output {
        Some(o) => {
            std::fs::write(o, &imported.toml)
                .with_context(|| format!("cannot write {}", o.display()))?;
            eprintln!("rtsup: wrote {}", o.display());
        }
        None => out(&imported.toml)?,
    }
    if !imported.left_out.is_empty() {
        eprintln!("not carried over ({}):", imported.left_out.len());
        for l in &imported.left_out {
            eprintln!("  {}: {}", l.key, l.reason);
        }
    }
    match imported.check_errors {
        Some(errors) => {
            eprintln!("rtsup would not accept the imported file as it is; edit it:\n{errors}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Whether `e` comes from writing to a pipe whose reader has gone.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Write `text` to stdout; an error (a closed pipe) is returned, never a panic.
fn out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config, env } => {
            let file = config_file(config.as_deref())?;
            let report = Config::check(&file, env.as_deref());
            if !report.errors.0.is_empty() {
                eprintln!("{}", report.errors);
            }
            for w in &report.warnings {
                eprintln!("{w}");
            }
            match report.config {
                Some(c) => {
                    out(&format!(
                        "{}: ok ({} app(s))\n",
                        file.display(),
                        c.apps.len()
                    ))?;
                    Ok(ExitCode::SUCCESS)
                }
                None => Ok(ExitCode::FAILURE),
            }
        }
        Command::Worker => Ok(rtsup_worker::server::main_from_env()),
        Command::Import {
            file,
            output,
            force,
        } => import_cmd(&file, output.as_deref(), force),
        Command::Start {
            config,
            socket,
            app,
            env,
            detach,
            wait,
            instances,
            name,
            port,
            listen,
            script_args,
        } => {
            let config = match app {
                Some(script) if oneoff::wanted(&script, instances.is_some(), name.is_some()) => {
                    // Before anything is written: a one-off runs a daemon of its own.
                    let sock = config::validate::default_control_socket();
                    if runtime()?
                        .block_on(control_client::call(&sock, Request::Status))
                        .is_ok()
                    {
                        bail!(
                            "an rtsup daemon already runs on {}: add the app to its configuration and run `rtsup reload` (a one-off `rtsup start SCRIPT` starts a daemon of its own)",
                            sock.display()
                        );
                    }
                    let dest = PathBuf::from(DEFAULT_CONFIG);
                    oneoff::write(
                        &oneoff::OneOff {
                            script,
                            instances,
                            name,
                            port,
                            listen,
                            args: script_args,
                        },
                        &dest,
                    )?;
                    Some(dest)
                }
                Some(app) => {
                    let target = Target { config, socket };
                    return ask(&target, "start", Request::StartApp { app });
                }
                None => config,
            };
            start_daemon(config.as_deref(), env.as_deref(), detach.then_some(wait))
        }
        Command::Monit { target } => {
            let socket = socket(&target)?;
            runtime()?.block_on(control_client::call(&socket, Request::Status))?;
            let (dir, _) = log_dir(&target)?;
            monit::run(&socket, dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            target,
            json,
            cluster: true,
        } => {
            let socket = socket(&target)?;
            let Response::Status(report) =
                runtime()?.block_on(control_client::call(&socket, Request::Status))?
            else {
                bail!("unexpected answer to status");
            };
            let Some(cluster) = report.cluster else {
                bail!("this rtsup is not in a cluster (no [cluster] section)");
            };
            if json {
                out(&format!("{}\n", serde_json::to_string(&cluster)?))?;
            } else {
                out(&status_table::render_cluster(&cluster))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { target, json, .. } => {
            let socket = socket(&target)?;
            let Response::Status(report) =
                runtime()?.block_on(control_client::call(&socket, Request::Status))?
            else {
                bail!("unexpected answer to status");
            };
            if json {
                out(&format!("{}\n", serde_json::to_string(&report)?))?;
            } else {
                out(&status_table::render(&report))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop {
            target,
            app: Some(app),
        } => ask(&target, "stop", Request::StopApp { app }),
        Command::Stop { target, app: None } => {
            let socket = socket(&target)?;
            runtime()?.block_on(control_client::call(&socket, Request::Stop))?;
            out("stopped\n")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scale {
            target,
            app,
            instances,
        } => ask(&target, "scale", Request::Scale { app, instances }),
        Command::Reload {
            target,
            certs: true,
        } => {
            let socket = socket(&target)?;
            match runtime()?.block_on(control_client::call(&socket, Request::ReloadCertificates))? {
                Response::Certificates { served } => {
                    out(&served.iter().map(|l| format!("{l}\n")).collect::<String>())?;
                    Ok(ExitCode::SUCCESS)
                }
                Response::Error { message } => {
                    eprintln!("rtsup: {message}");
                    Ok(ExitCode::FAILURE)
                }
                _ => bail!("unexpected answer to reload --certs"),
            }
        }
        Command::Reload { target, .. } => ask(&target, "reload", Request::Reload),
        Command::Systemd { config } => {
            let file = config_file(config.as_deref())?;
            load(Some(&file))?;
            let exe = std::env::current_exe().context("finding the rtsup binary")?;
            let file = std::fs::canonicalize(&file)
                .with_context(|| format!("resolving {}", file.display()))?;
            out(&systemd::unit(&exe, &file))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Startup {
            config,
            user,
            unit_dir,
            no_start,
            dry_run,
        } => {
            let file = config_file(config.as_deref())?;
            let config = std::fs::canonicalize(&file)
                .with_context(|| format!("resolving {}", file.display()))?;
            startup::run(&startup::Startup {
                config,
                user,
                unit_dir,
                no_start,
                dry_run,
            })
        }
        Command::Restart {
            target,
            force,
            which,
        } => {
            let (app, slot) = cli::parse_which(&which)?;
            ask(&target, "restart", Request::Restart { app, slot, force })
        }
        Command::Logs {
            target,
            follow,
            lines,
            which,
            access,
        } => {
            if access {
                let (dir, from) = log_dir(&target)?;
                // A file of its own when the configuration names one.
                let file = client_settings(target.config.as_deref())?
                    .access_log
                    .unwrap_or_else(|| dir.join("access.log"));
                if !file.exists() {
                    bail!(
                        "no access log at {} ({from}; a balancer with access_log = \"off\" or another path writes none there)",
                        file.display()
                    );
                }
                logs_cmd::run(vec![(file, "access".into())], None, lines, follow)?;
                return Ok(ExitCode::SUCCESS);
            }
            let (app, slot) = match which.as_deref().map(cli::parse_which).transpose()? {
                Some((a, s)) => (Some(a), s),
                None => (None, None),
            };
            let (dir, from) = log_dir(&target)?;
            let files = logs_cmd::find(&dir, app.as_deref(), slot).with_context(|| from.clone())?;
            if files.is_empty() {
                bail!("no worker log files in {} ({from})", dir.display());
            }
            logs_cmd::run(files, slot, lines, follow)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Send a request answered with a per-slot report, print it; non-zero exit when any slot
/// failed.
fn ask(target: &Target, verb: &str, request: Request) -> anyhow::Result<ExitCode> {
    let socket = socket(target)?;
    let Response::Report(report) = runtime()?.block_on(control_client::call(&socket, request))?
    else {
        bail!("unexpected answer to {verb}");
    };
    let text = report_text::render(verb, &report);
    if report.ok() {
        out(&text)?;
        Ok(ExitCode::SUCCESS)
    } else {
        eprint!("{text}");
        Ok(ExitCode::FAILURE)
    }
}

/// `-c FILE` if given, else `./rtsup.toml` if it exists.
fn find_config(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => Path::new(DEFAULT_CONFIG)
            .exists()
            .then(|| PathBuf::from(DEFAULT_CONFIG)),
    }
}

fn config_file(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    find_config(explicit).with_context(|| {
        format!("no configuration: pass -c FILE or create ./{DEFAULT_CONFIG} (see configs/)")
    })
}

fn load(explicit: Option<&Path>) -> anyhow::Result<Config> {
    let file = config_file(explicit)?;
    Config::load(&file).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))
}

/// The control socket: `--socket`, else the configuration's `control_socket` (read leniently:
/// nothing else in the file matters to a client), else the default path.
fn socket(target: &Target) -> anyhow::Result<PathBuf> {
    if let Some(s) = &target.socket {
        return Ok(s.clone());
    }
    Ok(client_settings(target.config.as_deref())?
        .control_socket
        .unwrap_or_else(config::validate::default_control_socket))
}

/// `[supervisor]` of `-c FILE` or `./rtsup.toml`, read leniently, its warnings on stderr;
/// nothing without a file. An unreadable `-c FILE` is an error, an unreadable `./rtsup.toml`
/// a warning.
fn client_settings(explicit: Option<&Path>) -> anyhow::Result<ClientSettings> {
    let Some(file) = find_config(explicit) else {
        return Ok(ClientSettings::default());
    };
    match ClientSettings::read(&file) {
        Ok(settings) => {
            for w in &settings.warnings {
                eprintln!("rtsup: warning: {w}");
            }
            Ok(settings)
        }
        Err(e) if explicit.is_some() => {
            Err(e).with_context(|| format!("reading {}", file.display()))
        }
        Err(e) => {
            eprintln!(
                "rtsup: warning: cannot read {}: {e}; using the defaults",
                file.display()
            );
            Ok(ClientSettings::default())
        }
    }
}

/// Where `rtsup logs` reads, and what said so: the `log_dir` of the daemon when one answers
/// on the control socket, else the configuration's, else the default.
fn log_dir(target: &Target) -> anyhow::Result<(PathBuf, String)> {
    let mut settings = None;
    let socket = match &target.socket {
        Some(s) => s.clone(),
        None => {
            let s = client_settings(target.config.as_deref())?;
            let socket = s
                .control_socket
                .clone()
                .unwrap_or_else(config::validate::default_control_socket);
            settings = Some(s);
            socket
        }
    };
    if let Some(dir) = logs_cmd::daemon_log_dir(&socket) {
        return Ok((
            dir,
            format!("the log_dir of the daemon at {}", socket.display()),
        ));
    }
    if target.socket.is_some() {
        eprintln!(
            "rtsup: no daemon answers at {}; using the configuration's log_dir or the default",
            socket.display()
        );
    }
    let settings = match settings {
        Some(s) => s,
        None => client_settings(target.config.as_deref())?,
    };
    Ok(
        match (settings.log_dir, find_config(target.config.as_deref())) {
            (Some(dir), Some(file)) => (dir, format!("the log_dir of {}", file.display())),
            _ => (
                config::validate::default_log_dir(),
                "the default log_dir".to_string(),
            ),
        },
    )
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Daemon logs on stderr; `RTSUP_LOG` (or `RUST_LOG`) sets the filter, default `info`; pingora's
/// connector stays silent unless the filter names it (see [`QUIET_TARGET`]).
/// JSON lines when stderr is not a terminal (journald, files) or `RTSUP_LOG_FORMAT=json`;
/// text with `RTSUP_LOG_FORMAT=text`.
fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let spec = std::env::var("RTSUP_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let spec = if spec.contains("pingora_core") {
        spec
    } else {
        format!("{spec},{QUIET_TARGET}")
    };
    let filter = EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET_TARGET}")));
    let json = match std::env::var("RTSUP_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    // Colours only for a terminal (`start -d` writes text to a file).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
