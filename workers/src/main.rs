//! `rtsup-worker`: the reference Socket.IO worker (socketioxide).
//!
//! Not built yet: this binary only says so and exits with an error, so nothing mistakes it for
//! a working worker. See the reference-worker issue.

fn main() -> std::process::ExitCode {
    eprintln!("rtsup-worker: the reference Socket.IO worker is not implemented yet");
    std::process::ExitCode::FAILURE
}
