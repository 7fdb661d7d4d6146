//! Several rtsup hosts sharing sessions: how a worker is named across hosts, and the seam
//! towards the session directory (Redis, kept in the `rtsup` binary so this crate stays free of
//! it).
//!
//! A worker's global name is `<host>/<local name>`, where `<host>` is the `advertise` address
//! of the rtsup that runs it (`10.0.0.11:8080/chat:0#3` for an id, `10.0.0.11:8080/chat:0` for
//! a key). Other hosts' workers appear in the backend set as *remote* backends whose address
//! is their host's rtsup: a request for one of their sessions is proxied there, marked with
//! [`PEER_HEADER`], and that host routes it to its own worker (never onwards).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Set on a request one rtsup proxies to another: the receiver routes it to its own workers
/// only and does not ask the directory (so a request never travels twice).
pub const PEER_HEADER: &str = "x-rtsup-peer";

/// Where sessions learned by other hosts are found.
pub trait SessionDirectory: Send + Sync {
    /// A session this host learned: `sid` belongs to the worker named `global`. Must not
    /// block (the request path calls it).
    fn learned(&self, sid: &str, global: &str);
    /// The global name of the worker owning `sid`, if a host published it; bounded in time
    /// (an unreachable directory answers `None` quickly).
    fn lookup(&self, sid: &str) -> Pin<Box<dyn Future<Output = Option<String>> + Send + 'static>>;
}

/// This host's place in a cluster.
#[derive(Clone)]
pub struct ClusterLink {
    /// This host's name (its `advertise` address).
    pub me: Arc<str>,
    /// The shared session directory.
    pub directory: Arc<dyn SessionDirectory>,
    /// The local address peers are connected from (this host's advertised one, when it is an
    /// address of this machine): a peer recognises it and believes its `X-Forwarded-For`.
    pub bind: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLink").field("me", &self.me).finish()
    }
}

impl ClusterLink {
    /// The global name of this host's `local` id or key.
    pub fn global(&self, local: &str) -> String {
        format!("{}/{local}", self.me)
    }

    /// The local part of `global` when it names one of this host's workers.
    pub fn local<'a>(&self, global: &'a str) -> Option<&'a str> {
        global.strip_prefix(&*self.me)?.strip_prefix('/')
    }
}

/// Whether an id or key names another host's worker.
pub fn is_remote(name: &str) -> bool {
    name.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl SessionDirectory for Nothing {
        fn learned(&self, _: &str, _: &str) {}
        fn lookup(&self, _: &str) -> Pin<Box<dyn Future<Output = Option<String>> + Send>> {
            Box::pin(async { None })
        }
    }

    #[test]
    fn names_round_trip_and_other_hosts_stay_remote() {
        let c = ClusterLink {
            me: Arc::from("10.0.0.11:8080"),
            directory: Arc::new(Nothing),
            bind: None,
        };
        assert_eq!(c.global("chat:0#3"), "10.0.0.11:8080/chat:0#3");
        assert_eq!(c.local("10.0.0.11:8080/chat:0"), Some("chat:0"));
        assert_eq!(c.local("10.0.0.12:8080/chat:0"), None);
        assert_eq!(c.local("10.0.0.11:80800/chat:0"), None);
        assert!(is_remote("10.0.0.12:8080/chat:0#1"));
        assert!(!is_remote("chat:0#1"));
    }
}
