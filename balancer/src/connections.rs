//! Open client connections, counted in total and per client address, with caps: the proxy
//! refuses a connection over either cap at once, so a flood of connections can neither use
//! up rtsup's file descriptors (the supervisor, control socket and admin keep their reserve)
//! nor let one address hold every connection.
//!
//! A connection is counted from [`Connections::admit`] until its [`Ticket`] drops. Addresses
//! are grouped as a client would hold them: an IPv4 address alone, an IPv6 address by its
//! /64 (the least a host is given), an IPv4-mapped IPv6 address as the IPv4 one. Trusted
//! proxies (a CDN, a load balancer in front) carry many clients and are not capped per
//! address. No I/O.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use ipnet::IpNet;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The proxy holds its whole connection budget.
    Total,
    /// The client's address holds its share.
    PerAddress,
}

/// The caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// Open connections at most, all clients together.
    pub total: usize,
    /// Open connections at most per client address (0: no cap).
    pub per_address: usize,
    /// Addresses never capped per address (trusted proxies).
    pub exempt: Vec<IpNet>,
}

/// The open connections.
#[derive(Debug)]
pub struct Connections {
    caps: ConnectionCaps,
    open: AtomicUsize,
    by_address: DashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Ticket {
    owner: Arc<Connections>,
    address: Option<IpAddr>,
}

impl Connections {
    /// No connection open yet.
    pub fn new(caps: ConnectionCaps) -> Arc<Self> {
        Arc::new(Self {
            caps,
            open: AtomicUsize::new(0),
            by_address: DashMap::new(),
        })
    }

    /// The caps in force.
    pub fn caps(&self) -> &ConnectionCaps {
        &self.caps
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Client addresses (grouped) holding at least one connection.
    pub fn addresses(&self) -> usize {
        self.by_address.len()
    }

    /// Count a new connection from `peer` (its TCP peer address; `None` for a Unix socket),
    /// or say which cap refuses it.
    pub fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Ticket, Refusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.caps.total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        let address = peer
            .map(|ip| ip.to_canonical())
            .filter(|ip| {
                self.caps.per_address > 0 && !self.caps.exempt.iter().any(|n| n.contains(ip))
            })
            .map(client_key);
        if let Some(key) = address {
            let mut held = self.by_address.entry(key).or_insert(0);
            if *held >= self.caps.per_address {
                drop(held);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerAddress);
            }
            *held += 1;
        }
        Ok(Ticket {
            owner: self.clone(),
            address,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(key) = self.address {
            self.owner.by_address.remove_if_mut(&key, |_, held| {
                *held = held.saturating_sub(1);
                *held == 0
            });
        }
        self.owner.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The address a client is counted under: IPv4 as is, IPv6 by its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// How descriptors are shared out: client connections at most, and idle upstream
/// connections kept for reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Client connections at most.
    pub connections: usize,
    /// Idle upstream connections pingora keeps at most.
    pub pool: usize,
}

/// How `nofile` descriptors are shared when `open_now` are already taken: a reserve for the
/// supervisor, control socket, admin and logs (an eighth, at least 32), the idle upstream pool
/// (an eighth, at most `max_pool`), and the rest for client connections at two descriptors
/// each (client and upstream, a WebSocket too); at least one connection, so a tiny limit still
/// serves.
pub fn budget(nofile: u64, open_now: u64, max_pool: usize) -> Budget {
    let usable = nofile.saturating_sub(open_now);
    let reserve = (usable / 8).max(32);
    let pool = (usable / 8).min(max_pool as u64);
    let room = usable.saturating_sub(reserve).saturating_sub(pool) / 2;
    Budget {
        connections: usize::try_from(room).unwrap_or(usize::MAX).max(1),
        pool: usize::try_from(pool).unwrap_or(max_pool),
    }
}

/// What one client connection may cost the proxy beyond its header buffer (measured ~18 KB
/// for an idle connection, bench/hostile.py), rounded up.
pub const CONNECTION_OVERHEAD: u64 = 24 * 1024;

/// How many client connections fit in a quarter of `memory` bytes when each may hold a whole
/// `max_header` (a partial header is the most a client can make the proxy hold); at least 1.
pub fn memory_cap(memory: u64, max_header: u64) -> usize {
    let room = memory / 4 / (max_header + CONNECTION_OVERHEAD).max(1);
    usize::try_from(room).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, per_address: usize) -> Arc<Connections> {
        Connections::new(ConnectionCaps {
            total,
            per_address,
            exempt: vec!["10.0.0.0/8".parse().expect("cidr")],
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn the_total_cap_refuses_the_connection_past_it_and_a_drop_frees_a_place() {
        let c = caps(2, 0);
        let a = c.admit(ip("1.1.1.1")).expect("first");
        let _b = c.admit(ip("2.2.2.2")).expect("second");
        assert_eq!(c.admit(ip("3.3.3.3")).err(), Some(Refusal::Total));
        assert_eq!(c.open(), 2);
        drop(a);
        assert!(c.admit(ip("3.3.3.3")).is_ok());
    }

    #[test]
    fn the_per_address_cap_counts_each_address_alone() {
        let c = caps(100, 2);
        let held: Vec<Ticket> = (0..2)
            .map(|_| c.admit(ip("1.1.1.1")).expect("within"))
            .collect();
        assert_eq!(c.admit(ip("1.1.1.1")).err(), Some(Refusal::PerAddress));
        let other = c.admit(ip("1.1.1.2"));
        assert!(other.is_ok(), "another address has its own share");
        assert_eq!(c.open(), 3, "refused connections are not counted");
        drop(held);
        assert_eq!(
            c.addresses(),
            1,
            "an address with nothing open is forgotten"
        );
        assert!(c.admit(ip("1.1.1.1")).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let c = caps(100, 1);
        let _a = c.admit(ip("2001:db8:1:2::1")).expect("first");
        assert_eq!(
            c.admit(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refusal::PerAddress),
            "same /64"
        );
        assert!(c.admit(ip("2001:db8:1:3::1")).is_ok(), "another /64");
        let _v4 = c.admit(ip("5.5.5.5")).expect("v4");
        let mapped_proxy: Vec<Ticket> = (0..3)
            .map(|_| {
                c.admit(ip("::ffff:10.0.0.1"))
                    .expect("a mapped trusted proxy is exempt")
            })
            .collect();
        assert_eq!(mapped_proxy.len(), 3);
        assert_eq!(
            c.admit(ip("::ffff:5.5.5.5")).err(),
            Some(Refusal::PerAddress)
        );
    }

    #[test]
    fn trusted_proxies_and_unix_peers_are_not_capped_per_address() {
        let c = caps(100, 1);
        let held: Vec<Ticket> = (0..5)
            .map(|_| c.admit(ip("10.1.2.3")).expect("exempt"))
            .collect();
        let unix: Vec<Ticket> = (0..5).map(|_| c.admit(None).expect("unix")).collect();
        assert_eq!(c.open(), 10);
        assert_eq!(c.addresses(), 0);
        drop((held, unix));
        assert_eq!(c.open(), 0);
    }

    #[test]
    fn the_memory_cap_is_a_quarter_of_memory_at_a_full_header_each() {
        let gib = 1 << 30;
        // 24 GiB, 32 KiB headers: 6 GiB / 56 KiB.
        assert_eq!(memory_cap(24 * gib, 32 * 1024), 112_347);
        // 1 MiB headers: far fewer.
        assert_eq!(memory_cap(24 * gib, 1 << 20), 6_003);
        assert_eq!(memory_cap(0, 1 << 20), 1);
    }

    #[test]
    fn the_budget_leaves_a_reserve_and_a_pool_and_counts_two_descriptors_a_connection() {
        // (nofile, open now) -> (connections, pool), with a pool of 128 at most
        let table = [
            (1024, 40, 369, 123),
            (1_048_576, 40, 458_670, 128),
            (256, 50, 74, 25),
            (96, 40, 8, 7),
            (10, 40, 1, 0),
        ];
        for (nofile, open, connections, pool) in table {
            assert_eq!(
                budget(nofile, open, 128),
                Budget { connections, pool },
                "{nofile} {open}"
            );
        }
    }
}
