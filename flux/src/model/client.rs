//! Which address is the client: the peer, or what trusted proxies say it is.
//!
//! A forwarding header is believed only when the connection comes from a configured trusted
//! proxy, and then only the ONE header that [`ClientIpHeader`] names: the one the proxy
//! overwrites or appends to. A header the proxy passes through untouched is written by the
//! client, so reading it (say `Forwarded` behind an nginx that sets `X-Forwarded-For`) would
//! let any client pick its own address.
//!
//! For `X-Forwarded-For` and `Forwarded` the client is the rightmost address in the chain
//! that is not itself a trusted proxy: every hop appends the address it received from, so the
//! addresses left of the first untrusted one were written by the client and prove nothing.
//! `X-Real-IP` holds one address, which the proxy sets.
//!
//! The walk reads the header's fields from the right without copying them, and stops at the
//! first hop it cannot read: request data of any size or shape costs one pass over it, and
//! never moves the answer left of a hop that is not a trusted proxy.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

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

/// The one forwarding header Flux believes from a trusted proxy
/// ([`Builder::client_ip_header`](crate::Builder::client_ip_header), `FLUX_CLIENT_IP_HEADER`).
/// The others are never read, whoever sends them.
///
/// Configure the proxy to overwrite (or append to) the header named here, and to clear the
/// others: a header that the proxy passes through as the client sent it names whatever
/// address the client likes.
///
/// ```
/// use flux::config::ClientIpHeader;
///
/// let header: ClientIpHeader = "Forwarded".parse()?;
/// assert_eq!(header, ClientIpHeader::Forwarded);
/// assert_eq!(ClientIpHeader::default().as_str(), "x-forwarded-for");
/// assert!("x-client-ip".parse::<ClientIpHeader>().is_err());
/// # Ok::<(), flux::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the default; what the shipped nginx
    /// configurations set, with `$proxy_add_x_forwarded_for`). The client is the rightmost
    /// address that is not a trusted proxy, across all fields of the header.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239): the `for=` of each element, read as
    /// `X-Forwarded-For` is.
    Forwarded,
    /// `X-Real-IP: client`: one address, set by the proxy (nginx: `$remote_addr`). Several
    /// fields, or a value that is not one address, count as none: the peer is the client.
    XRealIp,
}

impl ClientIpHeader {
    /// The header's name, lowercase: `"x-forwarded-for"`, `"forwarded"` or `"x-real-ip"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
            ClientIpHeader::Forwarded => "forwarded",
            ClientIpHeader::XRealIp => "x-real-ip",
        }
    }
}

impl fmt::Display for ClientIpHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClientIpHeader {
    type Err = Error;

    /// The header's name, in any case; anything else is a configuration error of
    /// [`ConfigOption::ClientIpHeader`].
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ClientIpHeader::XForwardedFor),
            "forwarded" => Ok(ClientIpHeader::Forwarded),
            "x-real-ip" => Ok(ClientIpHeader::XRealIp),
            _ => Err(Error::config(
                ConfigOption::ClientIpHeader,
                format!(
                    "unknown client address header {:?}: expected \"x-forwarded-for\", \
                     \"forwarded\" or \"x-real-ip\"",
                    s.trim()
                ),
            )),
        }
    }
}

/// Trusted proxy networks and the header they set; no networks means no forwarding header is
/// ever believed.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies {
    nets: IpSet,
    header: ClientIpHeader,
}

impl TrustedProxies {
    pub(crate) fn parse(items: &[String]) -> Result<TrustedProxies, Error> {
        Ok(TrustedProxies {
            nets: IpSet::parse(items, "trusted proxy", ConfigOption::TrustedProxies)?,
            header: ClientIpHeader::default(),
        })
    }

    /// The same proxies, believed in `header` only.
    pub(crate) fn reading(self, header: ClientIpHeader) -> TrustedProxies {
        TrustedProxies { header, ..self }
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
        match self.header {
            ClientIpHeader::XForwardedFor => self.walk(
                peer,
                hops(headers, "x-forwarded-for", |hop| parse_node(hop.trim())),
            ),
            ClientIpHeader::Forwarded => self.walk(peer, hops(headers, "forwarded", forwarded_for)),
            ClientIpHeader::XRealIp => real_ip(headers).unwrap_or(peer),
        }
    }

    /// Walks the chain from the nearest hop outwards (`hops` yields right to left); stops at
    /// the first address not trusted. A hop we cannot parse (obfuscated, "unknown", garbage)
    /// ends the walk: we cannot trust what lies beyond it, so the last trusted hop's peer is
    /// the client.
    fn walk(&self, peer: IpAddr, hops: impl Iterator<Item = Option<IpAddr>>) -> IpAddr {
        let mut client = peer;
        for hop in hops {
            let Some(ip) = hop else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// The hops of the comma-separated chain in all fields named `name`, nearest (rightmost)
/// first, each read with `parse`; `None` is a hop that is not an IP address. The fields are
/// split as bytes, so bytes a client put left of a comma (binary, non-ASCII) spoil only its
/// own hops, never those a proxy appended after them. Nothing is copied, and the walk reads
/// only as far as it goes.
fn hops<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
    parse: fn(&str) -> Option<IpAddr>,
) -> impl Iterator<Item = Option<IpAddr>> + 'h {
    headers.get_all(name).iter().rev().flat_map(move |field| {
        field
            .as_bytes()
            .rsplit(|&b| b == b',')
            .map(move |hop| std::str::from_utf8(hop).ok().and_then(parse))
    })
}

/// The `for=` address of one `Forwarded` element (`for=192.0.2.1;proto=https`), if it has
/// one that is an IP address. Elements are split at every comma, quoted or not: a quoted
/// comma then makes an unreadable hop, which ends the walk, where a quote-aware split would
/// let a client's unclosed quote swallow the element a proxy appended after it.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let (_, value) = element
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))?;
    parse_node(value.trim().trim_matches('"'))
}

/// The one address of `X-Real-IP`; none if the header is missing, repeated, or not one
/// address.
fn real_ip(headers: &HeaderMap) -> Option<IpAddr> {
    let mut fields = headers.get_all("x-real-ip").iter();
    let field = fields.next()?;
    if fields.next().is_some() {
        return None;
    }
    parse_node(field.to_str().ok()?.trim())
}

/// `192.0.2.1`, `192.0.2.1:8080`, `[2001:db8::1]`, `[2001:db8::1]:443`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let ip = node.strip_prefix('[')?.strip_suffix(']')?;
    ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    const ALL: [ClientIpHeader; 3] = [
        ClientIpHeader::XForwardedFor,
        ClientIpHeader::Forwarded,
        ClientIpHeader::XRealIp,
    ];

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
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("forwarded", "for=2.2.2.2"),
            ("x-real-ip", "3.3.3.3"),
        ]);
        for header in ALL {
            let none = proxies(&[]).reading(header);
            assert_eq!(none.client_ip(peer("203.0.113.5"), &h), ip("203.0.113.5"));
            let some = proxies(&["10.0.0.0/8"]).reading(header);
            assert_eq!(some.client_ip(peer("203.0.113.5"), &h), ip("203.0.113.5"));
        }
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
        let p = p.reading(ClientIpHeader::Forwarded);
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https, for=10.9.9.9",
        )]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("2001:db8::1"));
    }

    /// The issue's attack: behind an nginx that sets `X-Forwarded-For` and passes the
    /// client's `Forwarded` through, a forged `Forwarded` named any address it liked.
    #[test]
    fn only_the_configured_header_is_read() {
        let p = proxies(&["10.0.0.1"]);
        let forged = headers(&[
            ("forwarded", "for=198.51.100.66"),
            ("x-real-ip", "198.51.100.67"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &forged), ip("203.0.113.9"));
        let forged = headers(&[("forwarded", "for=198.51.100.66")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &forged), ip("10.0.0.1"));

        let p = p.reading(ClientIpHeader::Forwarded);
        let forged = headers(&[
            ("x-forwarded-for", "198.51.100.66"),
            ("forwarded", "for=203.0.113.9"),
        ]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &forged), ip("203.0.113.9"));

        let p = p.reading(ClientIpHeader::XRealIp);
        let forged = headers(&[
            ("x-forwarded-for", "198.51.100.66"),
            ("forwarded", "for=198.51.100.67"),
        ]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &forged), ip("10.0.0.1"));
    }

    #[test]
    fn x_real_ip_is_one_address_or_none() {
        let p = proxies(&["10.0.0.0/8"]).reading(ClientIpHeader::XRealIp);
        let client =
            |pairs: &[(&'static str, &str)]| p.client_ip(peer("10.0.0.1"), &headers(pairs));
        assert_eq!(client(&[("x-real-ip", " 203.0.113.9 ")]), ip("203.0.113.9"));
        assert_eq!(
            client(&[("x-real-ip", "203.0.113.9:443")]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client(&[("x-real-ip", "[2001:db8::1]:443")]),
            ip("2001:db8::1")
        );
        assert_eq!(
            client(&[("x-real-ip", "::ffff:203.0.113.9")]),
            ip("203.0.113.9")
        );
        // A proxy that sets it names even a trusted address: that is what it received from.
        assert_eq!(client(&[("x-real-ip", "10.7.7.7")]), ip("10.7.7.7"));
        for garbled in [
            &[("x-real-ip", "203.0.113.9, 198.51.100.1")][..],
            &[("x-real-ip", "203.0.113.9"), ("x-real-ip", "198.51.100.1")],
            &[("x-real-ip", "unknown")],
            &[("x-real-ip", "")],
            &[("x-real-ip", "[2001:db8::1]junk")],
        ] {
            assert_eq!(client(garbled), ip("10.0.0.1"), "{garbled:?}");
        }
        let mut map = HeaderMap::new();
        map.append(
            "x-real-ip",
            HeaderValue::from_bytes(b"203.0.113.9\xff").unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(p.client_ip(peer("10.0.0.1"), &map), ip("10.0.0.1"));
    }

    #[test]
    fn garbage_hops_stop_the_walk() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "1.1.1.1, unknown, 10.0.0.7")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("10.0.0.7"));
        let h = headers(&[("x-forwarded-for", "")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("10.0.0.1"));
        let p = p.reading(ClientIpHeader::Forwarded);
        let h = headers(&[("forwarded", "for=1.1.1.1, for=_hidden, for=10.0.0.7")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("10.0.0.7"));
        let h = headers(&[("forwarded", "for=1.1.1.1, proto=https")]);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    /// Binary bytes a client wrote spoil its own hops only: the address a proxy appended
    /// after a comma in the same field still counts.
    #[test]
    fn binary_bytes_left_of_a_comma_do_not_hide_the_appended_hop() {
        let p = proxies(&["10.0.0.0/8"]);
        let mut map = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"\xff\xfe6.6.6.6\x80, 203.0.113.9")
            .unwrap_or_else(|e| panic!("{e}"));
        map.append("x-forwarded-for", value);
        assert_eq!(p.client_ip(peer("10.0.0.1"), &map), ip("203.0.113.9"));
    }

    #[test]
    fn the_header_is_named_in_any_case() {
        assert_eq!(
            "X-Forwarded-For".parse::<ClientIpHeader>().ok(),
            Some(ClientIpHeader::XForwardedFor)
        );
        assert_eq!(
            " forwarded ".parse::<ClientIpHeader>().ok(),
            Some(ClientIpHeader::Forwarded)
        );
        assert_eq!(
            "X-REAL-IP".parse::<ClientIpHeader>().ok(),
            Some(ClientIpHeader::XRealIp)
        );
        for header in ALL {
            assert_eq!(header.as_str().parse::<ClientIpHeader>().ok(), Some(header));
            assert_eq!(header.to_string(), header.as_str());
        }
        let Err(Error::Config(e)) = "x-client-ip".parse::<ClientIpHeader>() else {
            panic!("an unknown header must be refused");
        };
        assert_eq!(e.option(), ConfigOption::ClientIpHeader);
        assert!(e.reason().contains("x-client-ip"), "{e}");
    }

    #[test]
    fn bad_proxy_config_is_an_error() {
        let Err(err) = TrustedProxies::parse(&["10.0.0.0/33".to_owned()]) else {
            panic!("a /33 network must be rejected");
        };
        assert!(err.to_string().contains("10.0.0.0/33"));
    }

    // ---- properties ------------------------------------------------------------------------

    /// The trusted proxies of the properties: 10.0.0.0/8 and 2001:db8:ffff::/48.
    fn trusted() -> TrustedProxies {
        proxies(&["10.0.0.0/8", "2001:db8:ffff::/48"])
    }

    /// An address the properties draw: trusted or not, v4, v6 or v4-mapped.
    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u8..4, any::<u8>()).prop_map(|(c, d)| IpAddr::from([10, 0, c, d])),
            (0u8..4, any::<u8>()).prop_map(|(c, d)| IpAddr::from([203, 0, 113 + c, d])),
            any::<u16>().prop_map(|h| IpAddr::from([0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, h])),
            any::<u16>().prop_map(|h| IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, h])),
            any::<u8>()
                .prop_map(|d| IpAddr::from(std::net::Ipv4Addr::new(10, 9, 9, d).to_ipv6_mapped())),
        ]
    }

    /// One hop as a proxy or a client writes it: an address (with or without a port), or
    /// something that is none.
    #[derive(Clone, Debug)]
    enum Hop {
        Ip(IpAddr, Option<u16>),
        Junk(String),
    }

    impl Hop {
        fn ip(&self) -> Option<IpAddr> {
            match self {
                Hop::Ip(ip, _) => Some(ip.to_canonical()),
                Hop::Junk(_) => None,
            }
        }

        fn node(&self) -> String {
            match self {
                Hop::Ip(IpAddr::V4(ip), Some(port)) => format!("{ip}:{port}"),
                Hop::Ip(IpAddr::V6(ip), Some(port)) => format!("[{ip}]:{port}"),
                Hop::Ip(ip, None) => ip.to_string(),
                Hop::Junk(junk) => junk.clone(),
            }
        }

        /// The hop in `header`'s syntax: `Forwarded` brackets and quotes IPv6 addresses and
        /// anything with a port (RFC 7239), and carries another parameter now and then.
        fn write(&self, header: ClientIpHeader) -> String {
            match (header, self) {
                (ClientIpHeader::Forwarded, Hop::Ip(IpAddr::V6(ip), port)) => match port {
                    Some(port) => format!("for=\"[{ip}]:{port}\";proto=https"),
                    None => format!("proto=http;for=\"[{ip}]\""),
                },
                (ClientIpHeader::Forwarded, Hop::Ip(_, Some(_))) => {
                    format!("for=\"{}\"", self.node())
                }
                (ClientIpHeader::Forwarded, _) => format!("for={}", self.node()),
                _ => self.node(),
            }
        }
    }

    fn hop() -> impl Strategy<Value = Hop> {
        prop_oneof![
            4 => (address(), proptest::option::of(any::<u16>())).prop_map(|(ip, port)| Hop::Ip(ip, port)),
            // Nothing here reads as an address: no hex digit, no '.', no ':'.
            1 => "(unknown|_hidden|[g-z_ ]{0,12})".prop_map(Hop::Junk),
        ]
    }

    /// A chain of hops in one to three fields (each field one or more hops, comma-joined).
    fn chain() -> impl Strategy<Value = Vec<Vec<Hop>>> {
        proptest::collection::vec(proptest::collection::vec(hop(), 1..5), 1..4)
    }

    fn with_chain(header: ClientIpHeader, fields: &[Vec<Hop>]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for field in fields {
            let value: Vec<String> = field.iter().map(|hop| hop.write(header)).collect();
            let value = HeaderValue::from_str(&value.join(", ")).unwrap_or_else(|e| panic!("{e}"));
            map.append(header.as_str(), value);
        }
        map
    }

    /// Arbitrary bytes as a header value (those a header may not hold, CR, LF and NUL,
    /// dropped), up to `max` bytes.
    fn raw_value(max: usize) -> impl Strategy<Value = HeaderValue> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(|mut bytes| {
            bytes.retain(|b| *b >= 0x20 || *b == b'\t');
            bytes.retain(|b| *b != 0x7f);
            HeaderValue::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"))
        })
    }

    /// Fields of any forwarding header, with arbitrary bytes or address-like text.
    fn hostile_fields() -> impl Strategy<Value = Vec<(ClientIpHeader, HeaderValue)>> {
        let text = proptest::collection::vec(
            prop_oneof![
                Just("for=".to_owned()),
                Just(", ".to_owned()),
                Just(";".to_owned()),
                Just("\"".to_owned()),
                Just("[".to_owned()),
                Just("]".to_owned()),
                address().prop_map(|ip| ip.to_string()),
                "[0-9a-f:.]{0,8}",
            ],
            0..12,
        )
        .prop_map(|parts| HeaderValue::from_str(&parts.concat()).unwrap_or_else(|e| panic!("{e}")));
        let value = prop_oneof![raw_value(300), text];
        proptest::collection::vec((proptest::sample::select(ALL.to_vec()), value), 0..8)
    }

    fn map_of(fields: &[(ClientIpHeader, HeaderValue)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (header, value) in fields {
            map.append(header.as_str(), value.clone());
        }
        map
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary fields of every forwarding header, read under every setting, from a
        /// trusted and an untrusted peer: an answer, never a panic; from an untrusted peer
        /// always the peer.
        #[test]
        fn hostile_headers_never_panic(
            fields in hostile_fields(),
            huge in raw_value(16 * 1024),
            peer_ip in address(),
        ) {
            let mut map = map_of(&fields);
            map.append("x-forwarded-for", huge.clone());
            map.append("forwarded", huge);
            for header in ALL {
                let proxies = trusted().reading(header);
                let client = proxies.client_ip(SocketAddr::new(peer_ip, 1), &map);
                if !proxies.trusts(peer_ip) {
                    prop_assert_eq!(client, peer_ip.to_canonical());
                }
            }
        }

        /// Whatever a client puts in the headers that are not the configured one, the
        /// answer is the one the configured header alone gives.
        #[test]
        fn other_headers_never_change_the_address(
            header in proptest::sample::select(ALL.to_vec()),
            chain in chain(),
            forged in hostile_fields(),
            peer_ip in address(),
        ) {
            let proxies = trusted().reading(header);
            let honest = with_chain(header, &chain);
            let mut forged_map = honest.clone();
            for (name, value) in forged.iter().filter(|(name, _)| *name != header) {
                forged_map.append(name.as_str(), value.clone());
            }
            let peer = SocketAddr::new(peer_ip, 1);
            prop_assert_eq!(proxies.client_ip(peer, &forged_map), proxies.client_ip(peer, &honest));
        }

        /// With the configured header, the answer is the peer or an address of the chain
        /// right of which every hop is a trusted proxy: a client can name itself only where
        /// the trusted hops say it stands.
        #[test]
        fn the_answer_is_the_peer_or_a_hop_behind_trusted_ones(
            header in proptest::sample::select(ALL.to_vec()),
            chain in chain(),
            peer_ip in address(),
        ) {
            let proxies = trusted().reading(header);
            let peer_ip = peer_ip.to_canonical();
            let client = proxies.client_ip(SocketAddr::new(peer_ip, 1), &with_chain(header, &chain));
            let hops: Vec<Option<IpAddr>> = chain.iter().flatten().map(Hop::ip).collect();
            let vouched = |i: usize| {
                proxies.trusts(peer_ip)
                    && hops[i + 1..].iter().all(|hop| hop.is_some_and(|ip| proxies.trusts(ip)))
            };
            let allowed = client == peer_ip
                || (0..hops.len()).any(|i| hops[i] == Some(client) && vouched(i));
            prop_assert!(allowed, "{client} from {peer_ip} with {hops:?}");
            if header == ClientIpHeader::XRealIp && hops.len() > 1 {
                prop_assert_eq!(client, peer_ip, "several X-Real-IP values count as none");
            }
        }

        /// What a client writes before the hops that trusted proxies append (arbitrary bytes,
        /// in the same field or fields of its own) never moves the answer off the address the
        /// first proxy received from.
        #[test]
        fn a_client_prefix_never_moves_the_answer(
            header in prop_oneof![Just(ClientIpHeader::XForwardedFor), Just(ClientIpHeader::Forwarded)],
            prefix in raw_value(200),
            own_field in any::<bool>(),
            client_last in 0u8..=255,
            proxies_behind in proptest::collection::vec(any::<u8>(), 0..3),
        ) {
            let proxies = trusted().reading(header);
            let client = IpAddr::from([203, 0, 113, client_last]);
            let mut appended = vec![Hop::Ip(client, None)];
            appended.extend(proxies_behind.iter().map(|d| Hop::Ip(IpAddr::from([10, 1, 1, *d]), None)));
            let appended: Vec<String> = appended.iter().map(|hop| hop.write(header)).collect();
            let appended = appended.join(", ");
            let mut map = HeaderMap::new();
            if own_field {
                map.append(header.as_str(), prefix);
                map.append(header.as_str(), HeaderValue::from_str(&appended).unwrap_or_else(|e| panic!("{e}")));
            } else {
                let mut value = prefix.as_bytes().to_vec();
                value.extend_from_slice(b", ");
                value.extend_from_slice(appended.as_bytes());
                map.append(header.as_str(), HeaderValue::from_bytes(&value).unwrap_or_else(|e| panic!("{e}")));
            }
            prop_assert_eq!(proxies.client_ip(peer("10.0.0.1"), &map), client);
        }
    }
}
