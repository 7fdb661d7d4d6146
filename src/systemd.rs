//! `rtsup systemd`: a unit file for this binary and configuration (like `pm2 startup`).
//!
//! `Type=notify` (READY=1 once every worker slot is ready or errored, WATCHDOG=1 only while the
//! supervisor answers), `ExecReload` = SIGHUP (rolling reload), `KillMode=mixed` (SIGTERM to
//! rtsup only, which stops its workers gracefully; systemd kills what is left after the
//! timeout). It runs as the dedicated user `rtsup` with `RuntimeDirectory=rtsup` (the control
//! socket `/run/rtsup/rtsup.sock`) and `LogsDirectory=rtsup` (`/var/log/rtsup`), passed to the
//! daemon as `RTSUP_CONTROL_SOCKET` and `RTSUP_LOG_DIR` (used when the configuration names no
//! `control_socket` / `log_dir`), a `PATH` on which `node` is found, a raised file limit, and
//! hardening (read-only system and home, private /tmp) that leaves rtsup's own directories
//! writable.

use std::path::Path;

/// The unit text for `exe` running `config`.
pub fn unit(exe: &Path, config: &Path) -> String {
    TEMPLATE
        .replace("{exe}", &exe.display().to_string())
        .replace("{config}", &config.display().to_string())
}

/// The unit, with `{exe}` and `{config}` to fill in. `systemd/rtsup.service` is this text for
/// `/usr/bin/rtsup` and `/etc/rtsup/rtsup.toml`.
pub const TEMPLATE: &str = r#"[Unit]
Description=rtsup: Socket.IO process supervisor and sticky balancer
After=network-online.target redis-server.service
Wants=network-online.target

[Service]
# READY=1 once every worker slot is ready or has given up (errored); STATUS= names each app.
Type=notify
NotifyAccess=main
# A crash-looping app is errored after max_restarts tries with growing delays: give it time.
TimeoutStartSec=300
User=rtsup
Group=rtsup
ExecStart={exe} start -c {config}
ExecReload=/bin/kill -HUP $MAINPID
# Workers inherit this environment: `node` is found on PATH.
Environment=PATH=/usr/local/bin:/usr/bin:/bin
# Used when the configuration sets no control_socket / log_dir: the directories below.
Environment=RTSUP_CONTROL_SOCKET=/run/rtsup/rtsup.sock
Environment=RTSUP_LOG_DIR=/var/log/rtsup
RuntimeDirectory=rtsup
RuntimeDirectoryMode=0700
LogsDirectory=rtsup
LogsDirectoryMode=0750
# SIGTERM to rtsup only (it stops its workers gracefully); SIGKILL to what is left at the end.
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=60
Restart=on-failure
RestartSec=2
# WATCHDOG=1 is sent only while the supervisor answers a ping.
WatchdogSec=30s
LimitNOFILE=1048576
# Listening on a port below 1024 (balancer listen = "0.0.0.0:80") needs:
#AmbientCapabilities=CAP_NET_BIND_SERVICE
# Hardening. The file system is read-only except the directories rtsup writes; add
# ReadWritePaths= for any directory your workers write (uploads, caches).
NoNewPrivileges=true
ProtectSystem=strict
ReadWritePaths=/run/rtsup /var/log/rtsup
ProtectHome=read-only
PrivateTmp=true
PrivateDevices=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectKernelLogs=true
ProtectControlGroups=true
RestrictSUIDSGID=true
RestrictRealtime=true
LockPersonality=true

[Install]
WantedBy=multi-user.target
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_unit_is_the_template() {
        let shipped = include_str!("../systemd/rtsup.service");
        assert_eq!(
            shipped,
            unit(
                Path::new("/usr/bin/rtsup"),
                Path::new("/etc/rtsup/rtsup.toml")
            )
        );
    }
}
