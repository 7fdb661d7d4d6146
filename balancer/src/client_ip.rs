//! The client's IP: the TCP peer, or the address a trusted proxy forwarded for; and the
//! `X-Forwarded-For` value the proxy passes on.

use std::borrow::Cow;
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

/// The client IP of a request another host of the cluster (`peer`) forwarded: the peer is
/// believed like a trusted proxy (its `X-Forwarded-For` names the client), `CF-Connecting-IP`
/// never (the client's own header, passed on untouched). The peer is trusted in its canonical
/// form: one on a `[::]` listener arrives as `::ffff:a.b.c.d`, and an IPv6 net never contains
/// the IPv4 address `client_ip` compares.
pub fn client_ip_via_peer(peer: IpAddr, trusted: &[IpNet], xff: Option<&str>) -> IpAddr {
    let mut trusted = trusted.to_vec();
    trusted.push(IpNet::from(peer.to_canonical()));
    client_ip(peer, &trusted, None, xff)
}

/// The `X-Forwarded-For` value to send upstream: the lines received (`prev`, in order, each
/// a comma-separated list), joined, with `peer` appended. A line that is not visible ASCII is
/// dropped (no hop could be read from it downstream). Written without `fmt` (it runs on every
/// proxied request: formatting the address through `Display` cost more than the rest of
/// rtsup's request filter).
pub fn forwarded_for<'a>(prev: impl IntoIterator<Item = &'a [u8]>, peer: IpAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    if let Some(prev) = joined_forwarded_for(prev) {
        out.extend_from_slice(prev.as_bytes());
        out.extend_from_slice(b", ");
    }
    // A dual-stack listener sees an IPv4 client as `::ffff:a.b.c.d`: it is sent as the IPv4
    // address it is, as the client address is everywhere else.
    match peer.to_canonical() {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
    out
}

/// The received `X-Forwarded-For` lines as one list, to walk from the right: every line, in
/// order (a proxy may add its own line instead of appending to the client's), without the
/// lines that are not visible ASCII. Borrowed when there is a single line.
pub fn joined_forwarded_for<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Option<Cow<'a, str>> {
    let mut joined: Option<Cow<'a, str>> = None;
    let readable = lines
        .into_iter()
        .filter(|l| is_visible_ascii(l))
        .filter_map(|l| std::str::from_utf8(l).ok());
    for line in readable {
        joined = Some(match joined {
            None => Cow::Borrowed(line),
            Some(before) => Cow::Owned(format!("{before}, {line}")),
        });
    }
    joined
}

/// What `HeaderValue::to_str` accepts: visible ASCII, space and tab.
fn is_visible_ascii(line: &[u8]) -> bool {
    line.iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_peer_is_believed_whatever_form_its_address_arrives_in() {
        let none: [IpNet; 0] = [];
        let cases = [
            ("10.0.0.2", Some("203.0.113.9"), "203.0.113.9"),
            ("::ffff:10.0.0.2", Some("203.0.113.9"), "203.0.113.9"),
            (
                "::ffff:10.0.0.2",
                Some("203.0.113.9, ::ffff:10.0.0.2"),
                "203.0.113.9",
            ),
            ("2001:db8::2", Some("198.51.100.7"), "198.51.100.7"),
            // Nothing forwarded: the peer itself, canonical.
            ("::ffff:10.0.0.2", None, "10.0.0.2"),
        ];
        for (peer, xff, want) in cases {
            let peer: IpAddr = peer.parse().expect("ip");
            let want: IpAddr = want.parse().expect("ip");
            assert_eq!(client_ip_via_peer(peer, &none, xff), want, "{peer} {xff:?}");
        }
        // The configured trusted proxies still count: a hop of theirs is skipped.
        let trusted: [IpNet; 1] = ["198.51.100.0/24".parse().expect("net")];
        let peer: IpAddr = "::ffff:10.0.0.2".parse().expect("ip");
        assert_eq!(
            client_ip_via_peer(peer, &trusted, Some("203.0.113.9, 198.51.100.5")),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn forwarded_for_appends_the_peer_to_every_readable_line() {
        let cases: [(&[&[u8]], &str, &str); 9] = [
            (&[], "127.0.0.1", "127.0.0.1"),
            (&[], "0.0.0.0", "0.0.0.0"),
            (&[], "255.10.200.9", "255.10.200.9"),
            (&[], "::ffff:10.1.2.3", "10.1.2.3"),
            (&[], "::1", "::1"),
            (&[b"203.0.113.9"], "10.0.0.1", "203.0.113.9, 10.0.0.1"),
            (
                &[b"1.1.1.1, 2.2.2.2"],
                "2001:db8::1",
                "1.1.1.1, 2.2.2.2, 2001:db8::1",
            ),
            (
                &[b"1.1.1.1", b"2.2.2.2"],
                "10.0.0.1",
                "1.1.1.1, 2.2.2.2, 10.0.0.1",
            ),
            (
                &[b"6.6.6.6 \xff", b"2.2.2.2"],
                "10.0.0.1",
                "2.2.2.2, 10.0.0.1",
            ),
        ];
        for (prev, peer, want) in cases {
            let peer: IpAddr = peer.parse().expect("ip");
            let got = forwarded_for(prev.iter().copied(), peer);
            assert_eq!(String::from_utf8(got).expect("utf8"), want);
        }
    }

    #[test]
    fn received_forwarded_for_lines_are_joined_in_order() {
        let cases: [(&[&[u8]], Option<&str>); 5] = [
            (&[], None),
            (&[b"1.1.1.1"], Some("1.1.1.1")),
            (
                &[b"1.1.1.1, 2.2.2.2", b"3.3.3.3"],
                Some("1.1.1.1, 2.2.2.2, 3.3.3.3"),
            ),
            (&[b"\xff", b"3.3.3.3"], Some("3.3.3.3")),
            (&[b"\xff"], None),
        ];
        for (lines, want) in cases {
            let got = joined_forwarded_for(lines.iter().copied());
            assert_eq!(got.as_deref(), want, "{lines:?}");
        }
        // A second line added by a trusted proxy decides the client, not the first line.
        let trusted = nets(&["10.0.0.0/8"]);
        let xff = joined_forwarded_for([&b"6.6.6.6"[..], &b"198.51.100.7"[..]]);
        let ip = client_ip(
            "10.0.0.1".parse().expect("ip"),
            &trusted,
            None,
            xff.as_deref(),
        );
        assert_eq!(ip, IpAddr::from([198, 51, 100, 7]));
    }

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
