//! The control socket: a Unix socket (mode 0600) through which `rtsup status`, `reload`,
//! `restart`, `start APP`, `stop`, `scale` reach the running daemon.
//!
//! Wire format: one JSON object per line each way, versioned ([`proto::PROTOCOL_VERSION`]).

pub mod proto;
pub mod server;
