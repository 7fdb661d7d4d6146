//! The client's IP: the TCP peer, or the address a trusted proxy forwarded for.

use std::net::IpAddr;

use ipnet::IpNet;

/// The client IP for `peer`, believing `CF-Connecting-IP` or the last untrusted hop of
/// `X-Forwarded-For` only when `peer` is one of `trusted`.
/// Addresses are compared in their canonical form: an IPv4 peer of a dual-stack (`[::]`)
/// listener arrives as `::ffff:a.b.c.d` and matches IPv4 blocks.
pub fn client_ip(peer: IpAddr, trusted: &[IpNet], cf: Option<&str>, xff: Option<&str>) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(&ip.to_canonical()));
    if !is_trusted(&peer) {
        return peer;
    }
    if let Some(ip) = cf.and_then(|v| v.trim().parse::<IpAddr>().ok()) {
        return ip.to_canonical();
    }
    // Walk X-Forwarded-For from the right: the first hop we do not trust is the client.
    if let Some(xff) = xff {
        for hop in xff.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if is_trusted(&ip) => continue,
                Ok(ip) => return ip.to_canonical(),
                Err(_) => break,
            }
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().expect("net")).collect()
    }

    #[test]
    fn an_ipv4_peer_of_a_dual_stack_listener_is_matched_as_ipv4() {
        let trusted = nets(&["10.0.0.0/8"]);
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        assert_eq!(
            client_ip(mapped, &trusted, None, Some("203.0.113.9")),
            IpAddr::from([203, 0, 113, 9]),
            "a trusted proxy behind [::] is still trusted"
        );
        let client: IpAddr = "::ffff:198.51.100.7".parse().expect("ip");
        assert_eq!(
            client_ip(client, &trusted, None, None),
            IpAddr::from([198, 51, 100, 7]),
            "and the client is reported as IPv4"
        );
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let ip = client_ip(
            "203.0.113.9".parse().expect("ip"),
            &nets(&["127.0.0.1/32"]),
            Some("1.1.1.1"),
            Some("2.2.2.2"),
        );
        assert_eq!(ip, "203.0.113.9".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn trusted_peer_forwards() {
        let t = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        let peer: IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(
            client_ip(peer, &t, Some("198.51.100.1"), None),
            "198.51.100.1".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            client_ip(peer, &t, None, Some("6.6.6.6, 198.51.100.2, 10.1.1.1")),
            "198.51.100.2".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(client_ip(peer, &t, None, Some("nonsense")), peer);
    }
}
