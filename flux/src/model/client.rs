//! Which address is the client: the peer, or what trusted proxies say it is.
//!
//! `Forwarded` and `X-Forwarded-For` are believed only when the connection comes from a
//! configured trusted proxy. The client is then the rightmost address in the chain that is
//! not itself a trusted proxy: every hop appends the address it received from, so the
//! addresses left of the first untrusted one were written by the client and prove nothing.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use crate::error::{ConfigOption, Error};

/// A set of addresses and networks: trusted proxies, exempt clients.
#[derive(Clone, Debug, Default)]
pub(crate) struct IpSet {
    nets: Vec<IpNet>,
}

impl IpSet {
    /// Parses IP addresses and CIDR networks; `role` names them in the error
    /// (`"trusted proxy"`), `option` is the setting they come from.
    pub(crate) fn parse(
        items: &[String],
        role: &str,
        option: ConfigOption,
    ) -> Result<IpSet, Error> {
        let nets = items
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                let s = s.trim();
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        Error::config(
                            option,
                            format!(
                                "{role} {s:?} is neither an IP address nor a CIDR network (like 10.0.0.0/8)"
                            ),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(IpSet { nets })
    }

    /// Whether `ip` (IPv4-mapped IPv6 read as IPv4) is in the set.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// Trusted proxy networks; empty means no forwarding header is ever believed.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies {
    nets: IpSet,
}

impl TrustedProxies {
    pub(crate) fn parse(items: &[String]) -> Result<TrustedProxies, Error> {
        Ok(TrustedProxies {
            nets: IpSet::parse(items, "trusted proxy", ConfigOption::TrustedProxies)?,
        })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.contains(ip)
    }

    /// The client's address for a request from `peer` with these headers.
    pub(crate) fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.ip().to_canonical();
        if self.nets.is_empty() || !self.trusts(peer) {
            return peer;
        }
        // `Forwarded` (RFC 7239) wins when present; otherwise `X-Forwarded-For`.
        let chain = forwarded_chain(headers).or_else(|| x_forwarded_for_chain(headers));
        let Some(chain) = chain else {
            return peer;
        };
        // Walk from the nearest hop outwards; stop at the first address not trusted. A
        // hop we cannot parse (obfuscated, "unknown", garbage) ends the walk: we cannot
        // trust what lies beyond it, so the last trusted hop's peer is the client.
        let mut client = peer;
        for hop in chain.iter().rev() {
            match hop {
                Some(ip) => {
                    client = *ip;
                    if !self.trusts(*ip) {
                        break;
                    }
                }
                None => break,
            }
        }
        client
    }
}

/// The `for=` addresses of all `Forwarded` fields, in order; `None` entries are hops that
/// are not IP addresses.
fn forwarded_chain(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut chain = Vec::new();
    let mut seen = false;
    for value in headers.get_all(http::header::FORWARDED) {
        seen = true;
        let Ok(value) = value.to_str() else {
            chain.push(None);
            continue;
        };
        for element in value.split(',') {
            let hop = element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                .map(|(_, v)| parse_node(v.trim().trim_matches('"')));
            chain.push(hop.flatten());
        }
    }
    seen.then_some(chain)
}

fn x_forwarded_for_chain(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut chain = Vec::new();
    let mut seen = false;
    for value in headers.get_all("x-forwarded-for") {
        seen = true;
        let Ok(value) = value.to_str() else {
            chain.push(None);
            continue;
        };
        chain.extend(value.split(',').map(|hop| parse_node(hop.trim())));
    }
    seen.then_some(chain)
}

/// `192.0.2.1`, `192.0.2.1:8080`, `[2001:db8::1]`, `[2001:db8::1]:443`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let inner = node.strip_prefix('[')?;
    let (ip, _) = inner.split_once(']')?;
    ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap_or_else(|e| panic!("{e}")));
        }
        map
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap_or_else(|e| panic!("{e}")), 40000)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn untrusted_peers_cannot_spoof() {
        let none = proxies(&[]);
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(none.client_ip(peer("203.0.113.5"), &h), ip("203.0.113.5"));
        let some = proxies(&["10.0.0.0/8"]);
        assert_eq!(some.client_ip(peer("203.0.113.5"), &h), ip("203.0.113.5"));
    }

    #[test]
    fn trusted_proxy_chain_yields_rightmost_untrusted_hop() {
        let p = proxies(&["10.0.0.0/8", "192.168.1.1"]);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("198.51.100.7"));
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(p.client_ip(peer("192.168.1.1"), &h), ip("198.51.100.7"));
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https, for=10.9.9.9",
        )]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("2001:db8::1"));
    }

    #[test]
    fn garbage_hops_stop_the_walk() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "1.1.1.1, unknown, 10.0.0.7")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("10.0.0.7"));
        let h = headers(&[("x-forwarded-for", "")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn bad_proxy_config_is_an_error() {
        let Err(err) = TrustedProxies::parse(&["10.0.0.0/33".to_owned()]) else {
            panic!("a /33 network must be rejected");
        };
        assert!(err.to_string().contains("10.0.0.0/33"));
    }
}
