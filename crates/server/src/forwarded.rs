//! The client's address from `X-Forwarded-For` or `Forwarded` (RFC 7239), believed only from
//! a trusted proxy (`server.trusted_proxies`), and only the one header those proxies maintain
//! (`server.forwarded_header`). Sans-IO.
//!
//! The header is read right to left, each hop's proxy having appended the address it saw:
//! addresses of trusted proxies are skipped, and the first one that is not trusted is the
//! client. Nothing left of it is looked at: that client could have written anything there.
//! A hop right of it that is not an address (malformed, `unknown`, an obfuscated `_name`) was
//! written by a trusted proxy that does not know or will not say who its client is: the client
//! is then unknown, and the nearest trusted address right of that hop stands in for it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Address ranges (CIDRs) of the proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses `"10.0.0.0/8"`, `"2001:db8::/32"` or a bare address (a range of one).
    pub fn parse<S: AsRef<str>>(cidrs: &[S]) -> Result<Self, String> {
        let mut ranges = Vec::with_capacity(cidrs.len());
        for cidr in cidrs {
            let cidr = cidr.as_ref();
            let (addr, len) = match cidr.split_once('/') {
                Some((addr, len)) => (addr, Some(len)),
                None => (cidr, None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| format!("{cidr:?} is not an address or CIDR"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                None => max,
                Some(len) => {
                    len.parse::<u8>().ok().filter(|&l| l <= max).ok_or(format!("{cidr:?}: bad prefix length"))?
                }
            };
            ranges.push((ip, len));
        }
        Ok(Self { ranges })
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `ip` is in one of the ranges (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.ranges.iter().any(|&(net, len)| match (net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                net.to_bits() & mask == ip.to_bits() & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                net.to_bits() & mask == ip.to_bits() & mask
            }
            _ => false,
        })
    }
}

/// Which forwarding header the trusted proxies maintain (`server.forwarded_header`): only that
/// one is read, as a client's own copy of the other passes through such a proxy untouched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardingHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, AWS ALB, most balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl ForwardingHeader {
    fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

/// What a trusted proxy's forwarding header says about the client of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddress {
    /// No header (or an empty one): the peer stands.
    NotForwarded,
    /// The rightmost hop that is not a trusted proxy (IPv4-mapped IPv6 made IPv4).
    Client(IpAddr),
    /// A hop a trusted proxy wrote is not an address: the client is unknown. `nearest_trusted`
    /// is the trusted hop right of it that stands in (`None`: the peer itself).
    Unusable { nearest_trusted: Option<IpAddr> },
}

/// The client's address the request's `header` names, read through `trusted` (see the module
/// doc). The caller checks first that the peer itself is trusted.
pub fn client_address(
    headers: &[httparse::Header<'_>],
    header: ForwardingHeader,
    trusted: &TrustedProxies,
) -> ClientAddress {
    // Several header lines are one list, in order: walk the lines from the last, each from its end.
    let hops = headers
        .iter()
        .rev()
        .filter(|h| h.name.eq_ignore_ascii_case(header.name()))
        .flat_map(|h| h.value.rsplit(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|hop| !hop.is_empty());
    let mut nearest_trusted = None;
    for hop in hops {
        let address = std::str::from_utf8(hop).ok().and_then(|hop| match header {
            ForwardingHeader::XForwardedFor => node_address(hop),
            ForwardingHeader::Forwarded => forwarded_for(hop),
        });
        let Some(address) = address else { return ClientAddress::Unusable { nearest_trusted } };
        let address = address.to_canonical();
        if !trusted.contains(address) {
            return ClientAddress::Client(address);
        }
        nearest_trusted = Some(address);
    }
    // Every hop trusted: the leftmost is the client.
    nearest_trusted.map_or(ClientAddress::NotForwarded, ClientAddress::Client)
}

/// An address with or without a port: `192.0.2.60`, `192.0.2.60:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`, `[2001:db8::1]:_port`; `None` for anything else.
fn node_address(node: &str) -> Option<IpAddr> {
    // A port is digits, or obfuscated (RFC 7239 section 6.3: `_` then letters, digits, `._-`).
    let is_port = |port: &str| match port.strip_prefix('_') {
        Some(name) => !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        None => !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()),
    };
    if let Some(rest) = node.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: std::net::Ipv6Addr = ip.parse().ok()?;
        return match after.strip_prefix(':') {
            None if after.is_empty() => Some(IpAddr::V6(ip)),
            Some(port) if is_port(port) => Some(IpAddr::V6(ip)),
            _ => None,
        };
    }
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    let (ip, port) = node.rsplit_once(':')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    is_port(port).then_some(IpAddr::V4(ip))
}

/// The address in one `Forwarded` element's `for=` (`for=192.0.2.60`, `for="[2001:db8::1]:4711"`,
/// `for="192.0.2.60:_port"`); `None` for a missing one, `unknown` or an obfuscated `_name`
/// (RFC 7239 section 6).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then(|| value.trim())
    })?;
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    node_address(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &[(&str, &str)], header: ForwardingHeader, trusted: &[&str]) -> ClientAddress {
        let headers: Vec<httparse::Header<'_>> =
            raw.iter().map(|(name, value)| httparse::Header { name, value: value.as_bytes() }).collect();
        client_address(&headers, header, &TrustedProxies::parse(trusted).unwrap())
    }

    fn xff(raw: &[(&str, &str)], trusted: &[&str]) -> ClientAddress {
        read(raw, ForwardingHeader::XForwardedFor, trusted)
    }

    fn fwd(raw: &[(&str, &str)], trusted: &[&str]) -> ClientAddress {
        read(raw, ForwardingHeader::Forwarded, trusted)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn client(text: &str) -> ClientAddress {
        ClientAddress::Client(ip(text))
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(xff(&[("X-Forwarded-For", "203.0.113.7")], &trusted), client("203.0.113.7"));
        // A client that sends its own X-Forwarded-For cannot pick its address.
        assert_eq!(xff(&[("X-Forwarded-For", "1.2.3.4, 203.0.113.7, 10.1.1.1")], &trusted), client("203.0.113.7"));
        assert_eq!(
            xff(&[("x-forwarded-for", "1.2.3.4"), ("X-Forwarded-For", "203.0.113.7")], &trusted),
            client("203.0.113.7")
        );
        assert_eq!(xff(&[("X-Forwarded-For", "10.0.0.2, 10.0.0.3")], &trusted), client("10.0.0.2"), "all trusted");
        assert_eq!(xff(&[("X-Forwarded-For", "::ffff:203.0.113.7")], &trusted), client("203.0.113.7"), "mapped");
    }

    #[test]
    fn nothing_left_of_the_client_is_read() {
        let trusted = ["10.0.0.0/8"];
        for junk in ["junk", "\u{ff}", "[::1", "1.2.3.4:99999", "_hidden", "unknown"] {
            let header = format!("{junk}, 203.0.113.9, 10.0.0.1");
            assert_eq!(xff(&[("X-Forwarded-For", &header)], &trusted), client("203.0.113.9"), "{junk}");
            let header = format!("for={junk}, for=203.0.113.9");
            assert_eq!(fwd(&[("Forwarded", &header)], &trusted), client("203.0.113.9"), "{junk}");
        }
        let bytes = [b'\xff', b',', b' ', b'2', b'.', b'2', b'.', b'2', b'.', b'2'];
        let headers = [httparse::Header { name: "X-Forwarded-For", value: &bytes }];
        let read = client_address(&headers, ForwardingHeader::XForwardedFor, &TrustedProxies::parse(&trusted).unwrap());
        assert_eq!(read, client("2.2.2.2"), "not UTF-8 left of the client");
    }

    #[test]
    fn a_hop_a_trusted_proxy_wrote_that_is_no_address_makes_the_client_unknown() {
        let trusted = ["10.0.0.0/8"];
        let unusable = |nearest: Option<&str>| ClientAddress::Unusable { nearest_trusted: nearest.map(ip) };
        assert_eq!(xff(&[("X-Forwarded-For", "203.0.113.7, not-an-address")], &trusted), unusable(None));
        assert_eq!(xff(&[("X-Forwarded-For", "1.1.1.1, junk, 10.0.0.5")], &trusted), unusable(Some("10.0.0.5")));
        assert_eq!(fwd(&[("Forwarded", "for=_hidden")], &trusted), unusable(None), "obfuscated");
        assert_eq!(fwd(&[("Forwarded", "for=unknown;proto=https")], &trusted), unusable(None));
        assert_eq!(fwd(&[("Forwarded", "proto=https")], &trusted), unusable(None), "no for=");
        assert_eq!(xff(&[("X-Forwarded-For", "")], &trusted), ClientAddress::NotForwarded);
        assert_eq!(xff(&[("X-Forwarded-For", " , ")], &trusted), ClientAddress::NotForwarded);
        assert_eq!(xff(&[], &trusted), ClientAddress::NotForwarded);
    }

    #[test]
    fn addresses_with_ports_and_brackets() {
        let trusted = ["10.0.0.0/8"];
        for (hop, expected) in [
            ("192.0.2.60:8080", "192.0.2.60"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
        ] {
            assert_eq!(xff(&[("X-Forwarded-For", hop)], &trusted), client(expected), "{hop}");
        }
        for bad in ["[2001:db8::1]x", "[192.0.2.1]", "192.0.2.60:", "192.0.2.60:123456", "2001:db8::1:80:"] {
            assert_eq!(
                xff(&[("X-Forwarded-For", bad)], &trusted),
                ClientAddress::Unusable { nearest_trusted: None },
                "{bad}"
            );
        }
        assert_eq!(fwd(&[("Forwarded", "for=\"[2001:db8::1]:4711\", for=10.2.3.4")], &trusted), client("2001:db8::1"));
        assert_eq!(fwd(&[("Forwarded", "For=\"192.0.2.61:8080\"")], &trusted), client("192.0.2.61"));
        assert_eq!(fwd(&[("Forwarded", "for=\"192.0.2.62:_abc\";by=10.0.0.1")], &trusted), client("192.0.2.62"));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let trusted = ["10.0.0.0/8"];
        let both = [("X-Forwarded-For", "198.51.100.1"), ("Forwarded", "for=192.0.2.60;proto=https;by=10.0.0.1")];
        assert_eq!(xff(&both, &trusted), client("198.51.100.1"));
        assert_eq!(fwd(&both, &trusted), client("192.0.2.60"));
        assert_eq!(fwd(&[("X-Forwarded-For", "198.51.100.1")], &trusted), ClientAddress::NotForwarded);
    }

    #[test]
    fn ranges_match_by_prefix() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8", "192.0.2.1", "2001:db8::/32", "0.0.0.0/0"][..3]).unwrap();
        let ip = |text: &str| Some(ip(text));
        assert!(trusted.contains(ip("10.255.0.1").unwrap()));
        assert!(!trusted.contains(ip("11.0.0.1").unwrap()));
        assert!(trusted.contains(ip("192.0.2.1").unwrap()) && !trusted.contains(ip("192.0.2.2").unwrap()));
        assert!(trusted.contains(ip("::ffff:10.0.0.1").unwrap()), "IPv4-mapped counts as IPv4");
        assert!(trusted.contains(ip("2001:db8:1::1").unwrap()) && !trusted.contains(ip("2001:db9::1").unwrap()));
        assert!(TrustedProxies::parse(&["0.0.0.0/0"]).unwrap().contains(ip("8.8.8.8").unwrap()));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129"] {
            assert!(TrustedProxies::parse(&[bad]).is_err(), "{bad}");
        }
    }
}
