//! `rtsup-worker`: run the reference Socket.IO worker configured from the environment
//! (`PORT`, `REDIS_URL` or `RTSUP_HUB`, …; see `rtsup_worker::config`).

fn main() -> std::process::ExitCode {
    rtsup_worker::server::main_from_env()
}
