//! Who the client is behind reverse proxies (SPEC §9): the TCP peer, or, when the peer is
//! one of `dashboard.trusted_proxies`, the nearest address in `X-Forwarded-For` that is not
//! a trusted proxy. Only trusted proxies are believed, so a client that writes its own
//! `X-Forwarded-For` cannot pose as someone else (and escape the login rate limit).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The client behind `peer`, given the `X-Forwarded-For` header values in order.
///
/// Walks the forwarded chain right to left (the right end was appended by the proxy
/// nearest us) while each hop is trusted; the first untrusted address is the client. If
/// every hop is trusted the leftmost one is. An entry that is not an address stops the
/// walk at the trusted hop that passed it on: nothing to its left can be believed.
pub fn client_ip<'h>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'h str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.to_canonical();
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return client;
        };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, or either with
/// a port (some proxies add one).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| hop.trim_matches(['[', ']']).parse::<IpAddr>())
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(peer: &str, xff: &[&str], trusted: &[&str], expected: &str) {
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        let got = client_ip(peer.parse().unwrap(), xff.iter().copied(), &trusted);
        assert_eq!(
            got.to_string(),
            expected,
            "peer {peer}, xff {xff:?}, trusted {trusted:?}"
        );
    }

    #[test]
    fn the_client_behind_trusted_proxies() {
        let proxy = ["10.0.0.0/8"];
        // No trusted proxies: X-Forwarded-For is never believed.
        check("10.0.0.1", &["1.1.1.1"], &[], "10.0.0.1");
        check("203.0.113.9", &["1.1.1.1"], &proxy, "203.0.113.9");
        // A trusted peer: the nearest untrusted hop, right to left.
        check("10.0.0.1", &["1.1.1.1"], &proxy, "1.1.1.1");
        check("10.0.0.1", &["6.6.6.6, 1.1.1.1"], &proxy, "1.1.1.1");
        check(
            "10.0.0.1",
            &["6.6.6.6, 1.1.1.1, 10.0.0.2"],
            &proxy,
            "1.1.1.1",
        );
        check(
            "10.0.0.1",
            &["6.6.6.6", "1.1.1.1 , 10.0.0.2"],
            &proxy,
            "1.1.1.1",
        );
        // Every hop trusted: the leftmost; no header at all: the peer.
        check("10.0.0.1", &["10.9.9.9, 10.0.0.2"], &proxy, "10.9.9.9");
        check("10.0.0.1", &[], &proxy, "10.0.0.1");
        // Garbage stops the walk at the trusted hop that passed it on.
        check("10.0.0.1", &["1.1.1.1, unknown"], &proxy, "10.0.0.1");
        check(
            "10.0.0.1",
            &["1.1.1.1, unknown, 10.0.0.2"],
            &proxy,
            "10.0.0.2",
        );
        check("10.0.0.1", &[""], &proxy, "10.0.0.1");
        // Ports, brackets, IPv6 and IPv4-mapped peers.
        check("10.0.0.1", &["1.1.1.1:4711"], &proxy, "1.1.1.1");
        check("10.0.0.1", &["[2001:db8::7]:443"], &proxy, "2001:db8::7");
        check("10.0.0.1", &["[2001:db8::7]"], &proxy, "2001:db8::7");
        check("::ffff:10.0.0.1", &["1.1.1.1"], &proxy, "1.1.1.1");
        check("fd00::1", &["::ffff:1.1.1.1"], &["fd00::/8"], "1.1.1.1");
    }
}
