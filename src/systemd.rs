//! `rtsup systemd`: a unit file for this binary and configuration (like `pm2 startup`).
//!
//! `Type=notify` (READY=1 once every worker is ready), `ExecReload` = SIGHUP (rolling reload),
//! `KillMode=mixed` (SIGTERM to rtsup only, which stops its workers gracefully; systemd kills
//! what is left after the timeout), a watchdog, a raised file limit, and hardening that leaves
//! workers free to write their own directories.

use std::path::Path;

/// The unit text for `exe` running `config`.
pub fn unit(exe: &Path, config: &Path) -> String {
    TEMPLATE
        .replace("{exe}", &exe.display().to_string())
        .replace("{config}", &config.display().to_string())
}

/// The unit, with `{exe}` and `{config}` to fill in. `systemd/rtsup.service` is this text for
/// `/usr/local/bin/rtsup` and `/etc/rtsup/rtsup.toml`.
pub const TEMPLATE: &str = r#"[Unit]
Description=rtsup: Socket.IO process supervisor and sticky balancer
After=network-online.target redis-server.service
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exe} start -c {config}
ExecReload=/bin/kill -HUP $MAINPID
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=60
Restart=on-failure
RestartSec=2
WatchdogSec=30
LimitNOFILE=1048576
RuntimeDirectory=rtsup
RuntimeDirectoryMode=0700
LogsDirectory=rtsup
# Hardening that does not get in the way of workers (they may write their own directories).
NoNewPrivileges=true
PrivateTmp=true
ProtectSystem=full
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectControlGroups=true
RestrictSUIDSGID=true
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
                Path::new("/usr/local/bin/rtsup"),
                Path::new("/etc/rtsup/rtsup.toml")
            )
        );
    }
}
