//! `ip-hash`: a consistent-hash ring (pingora-ketama) over the ready backends, keyed by client
//! IP, so a backend leaving moves only its own share of clients.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use pingora_ketama::{Bucket, Continuum};

/// A ring over some backends, answering with their index in the snapshot.
pub struct Ring {
    continuum: Continuum,
    index_of: HashMap<SocketAddr, usize>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("backends", &self.index_of.len())
            .finish()
    }
}

impl Ring {
    /// A ring over `(index, addr)` pairs; `None` when there are none.
    pub fn new(members: impl IntoIterator<Item = (usize, SocketAddr)>) -> Option<Self> {
        let index_of: HashMap<SocketAddr, usize> =
            members.into_iter().map(|(i, a)| (a, i)).collect();
        if index_of.is_empty() {
            return None;
        }
        let buckets: Vec<Bucket> = index_of.keys().map(|a| Bucket::new(*a, 1)).collect();
        Some(Self {
            continuum: Continuum::new(&buckets),
            index_of,
        })
    }

    /// The backend index for `ip`.
    pub fn pick(&self, ip: IpAddr) -> Option<usize> {
        let key = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let addr = self.continuum.node(&key)?;
        self.index_of.get(&addr).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn spreads_and_moves_only_the_leavers_share() {
        let four = Ring::new((0..4).map(|i| (i, addr(5000 + i as u16)))).expect("ring");
        let three =
            Ring::new([0, 1, 3].into_iter().map(|i| (i, addr(5000 + i as u16)))).expect("ring");
        let mut per = [0usize; 4];
        let mut moved = 0;
        for i in 0..10_000 {
            let before = four.pick(ip(i)).expect("pick");
            per[before] += 1;
            let after = three.pick(ip(i)).expect("pick");
            assert_ne!(after, 2);
            if before != 2 && before != after {
                moved += 1;
            }
        }
        assert!(per.iter().all(|&n| n > 1500), "uneven: {per:?}");
        assert_eq!(moved, 0, "clients of surviving backends moved");
    }

    #[test]
    fn empty_ring_is_none() {
        assert!(Ring::new(std::iter::empty()).is_none());
    }
}
