//! Integration tests: the real `rtsup` binary, temp configs, free ports, real processes.
//! One test binary (ripgrep/pueue style); one module per capability.

mod harness;

mod access_log;
mod bad_input;
mod cli;
mod cluster;
mod config_check;
mod headers;
mod hostile;
mod limits;
mod observe;
mod pm2;
mod reload;
mod rollout;
mod routes;
mod sticky;
mod supervise;
mod systemd;
mod tls;
mod worker;
