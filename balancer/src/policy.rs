//! The routing decision, a pure function of the snapshot and the request's facts.
//!
//! ```text
//! sid → sid table owner: Ready|Draining → proxy there; gone → 400 "Session ID unknown"
//!       not in table → affinity cookie to a Ready backend, else 400
//! no sid (handshake) → affinity cookie to a Ready backend, else new_sessions policy
//! other paths → affinity cookie, else round-robin over Ready backends
//! ```

use std::net::IpAddr;

use crate::BackendState;
use crate::routes::Snapshot;

/// How new engine.io sessions are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewSessions {
    /// The Ready backend with the fewest live sessions.
    LeastConn,
    /// Consistent hash of the client IP.
    IpHash,
    /// Each Ready backend in turn.
    RoundRobin,
}

/// What the balancer knows about a request before routing it.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    /// Under the engine.io path.
    pub engineio: bool,
    /// The `sid` of the query (engine.io only).
    pub sid: Option<&'a str>,
    /// The sid table's owner id for that sid, if known.
    pub sid_owner: Option<&'a str>,
    /// The backend key of a valid affinity cookie.
    pub cookie_key: Option<&'a str>,
    /// The client's IP (after trusted-proxy resolution).
    pub client_ip: IpAddr,
}

/// Why a request went where it went (for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Its sid is in the table.
    SidHit,
    /// Its affinity cookie named a Ready backend.
    Cookie,
    /// A new session placed by the `new_sessions` policy.
    NewSession,
    /// A non-engine.io request without affinity.
    RoundRobin,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Proxy to `snapshot.backends[backend]`.
    Proxy {
        /// Index in the snapshot.
        backend: usize,
        /// Why.
        kind: RouteKind,
    },
    /// The sid's owner is gone (or the sid is unknown and nothing else pins it): answer 400
    /// `{"code":1,"message":"Session ID unknown"}` so the client reconnects at once.
    SessionUnknown {
        /// The owner is known to be dead (rather than the sid being unknown).
        owner_gone: bool,
    },
    /// No Ready backend: 503.
    NoBackend,
}

/// Decide where a request goes. `load(i)` is backend i's live session count; `turn` is a
/// counter for round-robin choices.
pub fn route(
    snap: &Snapshot,
    facts: &RequestFacts<'_>,
    policy: NewSessions,
    load: impl Fn(usize) -> i64,
    turn: usize,
) -> Decision {
    let by_cookie = facts.cookie_key.and_then(|k| snap.ready_by_key(k));
    if facts.engineio && facts.sid.is_some() {
        if let Some(owner) = facts.sid_owner {
            return match snap.by_id(owner) {
                Some(i)
                    if matches!(
                        snap.backends[i].state,
                        BackendState::Ready | BackendState::Draining
                    ) =>
                {
                    Decision::Proxy {
                        backend: i,
                        kind: RouteKind::SidHit,
                    }
                }
                _ => Decision::SessionUnknown { owner_gone: true },
            };
        }
        return match by_cookie {
            Some(i) => Decision::Proxy {
                backend: i,
                kind: RouteKind::Cookie,
            },
            None => Decision::SessionUnknown { owner_gone: false },
        };
    }
    if let Some(i) = by_cookie {
        return Decision::Proxy {
            backend: i,
            kind: RouteKind::Cookie,
        };
    }
    if snap.ready.is_empty() {
        return Decision::NoBackend;
    }
    let n = snap.ready.len();
    let rr = snap.ready[turn % n];
    if !facts.engineio {
        return Decision::Proxy {
            backend: rr,
            kind: RouteKind::RoundRobin,
        };
    }
    let backend = match policy {
        NewSessions::RoundRobin => rr,
        NewSessions::IpHash => snap
            .ring
            .as_ref()
            .and_then(|r| r.pick(facts.client_ip))
            .unwrap_or(rr),
        NewSessions::LeastConn => {
            // Start the scan at the round-robin position so ties rotate.
            (0..n)
                .map(|k| snap.ready[(turn + k) % n])
                .min_by_key(|&i| load(i))
                .unwrap_or(rr)
        }
    };
    Decision::Proxy {
        backend,
        kind: RouteKind::NewSession,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, BackendSet};
    use std::net::SocketAddr;
    use std::sync::Arc;

    fn snap(states: &[BackendState]) -> Snapshot {
        Snapshot::build(&BackendSet {
            backends: states
                .iter()
                .enumerate()
                .map(|(i, s)| Backend {
                    id: Arc::from(format!("w{i}")),
                    key: Arc::from(format!("k{i}")),
                    addr: SocketAddr::from(([127, 0, 0, 1], 5000 + i as u16)),
                    state: *s,
                    remote: false,
                })
                .collect(),
        })
    }

    fn facts<'a>(
        sid: Option<&'a str>,
        owner: Option<&'a str>,
        cookie: Option<&'a str>,
    ) -> RequestFacts<'a> {
        RequestFacts {
            engineio: true,
            sid,
            sid_owner: owner,
            cookie_key: cookie,
            client_ip: "10.0.0.1".parse().expect("ip"),
        }
    }

    use BackendState::*;

    #[test]
    fn sid_goes_to_its_owner_even_when_draining() {
        let s = snap(&[Ready, Draining]);
        let d = route(
            &s,
            &facts(Some("x"), Some("w1"), None),
            NewSessions::LeastConn,
            |_| 0,
            0,
        );
        assert_eq!(
            d,
            Decision::Proxy {
                backend: 1,
                kind: RouteKind::SidHit
            }
        );
    }

    #[test]
    fn sid_of_a_dead_owner_is_unknown_at_once() {
        let s = snap(&[Ready, Gone]);
        for owner in ["w1", "vanished"] {
            let d = route(
                &s,
                &facts(Some("x"), Some(owner), Some("k0")),
                NewSessions::LeastConn,
                |_| 0,
                0,
            );
            assert_eq!(d, Decision::SessionUnknown { owner_gone: true });
        }
    }

    #[test]
    fn unknown_sid_falls_back_to_the_cookie_else_400() {
        let s = snap(&[Ready, Ready]);
        let d = route(
            &s,
            &facts(Some("x"), None, Some("k1")),
            NewSessions::LeastConn,
            |_| 0,
            0,
        );
        assert_eq!(
            d,
            Decision::Proxy {
                backend: 1,
                kind: RouteKind::Cookie
            }
        );
        let d = route(
            &s,
            &facts(Some("x"), None, None),
            NewSessions::LeastConn,
            |_| 0,
            0,
        );
        assert_eq!(d, Decision::SessionUnknown { owner_gone: false });
    }

    #[test]
    fn handshakes_honour_the_cookie_only_for_ready_backends() {
        let s = snap(&[Ready, Draining]);
        let d = route(
            &s,
            &facts(None, None, Some("k0")),
            NewSessions::RoundRobin,
            |_| 0,
            1,
        );
        assert_eq!(
            d,
            Decision::Proxy {
                backend: 0,
                kind: RouteKind::Cookie
            }
        );
        // k1 is draining: the cookie is ignored and the policy picks a Ready backend.
        let d = route(
            &s,
            &facts(None, None, Some("k1")),
            NewSessions::RoundRobin,
            |_| 0,
            1,
        );
        assert_eq!(
            d,
            Decision::Proxy {
                backend: 0,
                kind: RouteKind::NewSession
            }
        );
    }

    #[test]
    fn least_conn_picks_the_emptiest_and_rotates_ties() {
        let s = snap(&[Ready, Ready, Ready]);
        let loads = [5, 1, 3];
        let d = route(
            &s,
            &facts(None, None, None),
            NewSessions::LeastConn,
            |i| loads[i],
            0,
        );
        assert_eq!(
            d,
            Decision::Proxy {
                backend: 1,
                kind: RouteKind::NewSession
            }
        );
        let picks: Vec<_> = (0..3)
            .map(|t| {
                route(
                    &s,
                    &facts(None, None, None),
                    NewSessions::LeastConn,
                    |_| 0,
                    t,
                )
            })
            .collect();
        assert_eq!(
            picks[0],
            Decision::Proxy {
                backend: 0,
                kind: RouteKind::NewSession
            }
        );
        assert_eq!(
            picks[1],
            Decision::Proxy {
                backend: 1,
                kind: RouteKind::NewSession
            }
        );
    }

    #[test]
    fn ip_hash_is_stable_and_starting_or_gone_backends_get_nothing() {
        let s = snap(&[Ready, Starting, Ready, Gone]);
        let f = facts(None, None, None);
        let first = route(&s, &f, NewSessions::IpHash, |_| 0, 0);
        for t in 0..10 {
            assert_eq!(route(&s, &f, NewSessions::IpHash, |_| 0, t), first);
        }
        for t in 0..10 {
            let Decision::Proxy { backend, .. } = route(&s, &f, NewSessions::RoundRobin, |_| 0, t)
            else {
                panic!("no proxy")
            };
            assert!(backend == 0 || backend == 2);
        }
    }

    #[test]
    fn nothing_ready_is_503() {
        let s = snap(&[Starting, Gone]);
        assert_eq!(
            route(
                &s,
                &facts(None, None, None),
                NewSessions::LeastConn,
                |_| 0,
                0
            ),
            Decision::NoBackend
        );
    }
}
