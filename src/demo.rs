//! The embedded first run: `rtsup start` with no `-c` and no `./rtsup.toml` supervises two
//! reference workers (`rtsup worker`, this very binary) on the embedded adapter, behind the
//! balancer on 127.0.0.1:8080. No Redis, no Node, no file to write.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;

/// The demo configuration; `{exe}` becomes the path of the running binary.
pub const DEMO_TOML: &str = r#"
[[app]]
name = "demo"
command = "{exe}"
args = ["worker"]
instances = 2
port = 3001
ready = "http:/health"
env = { RTSUP_EMIT_TOKEN = "demo-token" }

[balancer]
listen = "127.0.0.1:8080"
app = "demo"
new_sessions = "least-conn"

[admin]
listen = "127.0.0.1:9090"
"#;

/// Where the demo's configuration is said to come from in messages.
pub const DEMO_NAME: &str = "(embedded demo)";

/// The demo configuration, running `exe` as the worker.
pub fn config_for(exe: &Path) -> anyhow::Result<Config> {
    let text = DEMO_TOML.replace(
        "{exe}",
        &exe.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\""),
    );
    Config::parse(&PathBuf::from(DEMO_NAME), &text)
        .map_err(|e| anyhow::anyhow!("embedded demo config is invalid:\n{e}"))
}

/// The demo configuration for the running binary.
pub fn config() -> anyhow::Result<Config> {
    let exe = std::env::current_exe().context("finding the rtsup binary for the demo workers")?;
    config_for(&exe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_demo_is_valid() {
        let c = config_for(Path::new("/usr/bin/rtsup")).expect("valid");
        assert_eq!(c.apps[0].command, "/usr/bin/rtsup");
        assert_eq!(c.apps[0].instances, 2);
        assert_eq!(c.balancer.expect("balancer").listen.port(), 8080);
    }
}
