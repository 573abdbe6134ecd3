//! The client's address from `Forwarded` (RFC 7239) or `X-Forwarded-For`, believed only from
//! a trusted proxy (`server.trusted_proxies`). Sans-IO.
//!
//! The headers are read right to left, each hop's proxy having appended the address it saw:
//! addresses of trusted proxies are skipped, and the first one that is not trusted is the
//! client (anything left of it could be made up by that client). A header that does not parse
//! is not used at all.

use std::net::IpAddr;

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

/// The client's address the request's forwarding headers name, read through `trusted` (see
/// the module doc); `None` when there is no usable header. `Forwarded` wins over
/// `X-Forwarded-For`. The caller checks first that the peer itself is trusted.
pub fn client_address(headers: &[httparse::Header<'_>], trusted: &TrustedProxies) -> Option<IpAddr> {
    let joined = |name: &str| -> Option<String> {
        let values: Vec<&str> = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).ok())
            .collect::<Option<_>>()?;
        (!values.is_empty()).then(|| values.join(","))
    };
    let hops: Vec<IpAddr> = if let Some(forwarded) = joined("forwarded") {
        forwarded.split(',').map(forwarded_for).collect::<Option<_>>()?
    } else {
        let list = joined("x-forwarded-for")?;
        list.split(',').map(|a| a.trim().parse().ok()).collect::<Option<_>>()?
    };
    let mut client = None;
    for &hop in hops.iter().rev() {
        client = Some(hop);
        if !trusted.contains(hop) {
            break;
        }
    }
    client
}

/// The address in one `Forwarded` element's `for=` (`for=192.0.2.60`, `for="[2001:db8::1]:4711"`,
/// `for="192.0.2.60:80"`); `None` for a missing, obfuscated (`_hidden`) or `unknown` one.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then(|| value.trim())
    })?;
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    if let Some(rest) = value.strip_prefix('[') {
        let (ip, _port) = rest.split_once(']')?;
        return ip.parse().ok();
    }
    match value.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip.parse().ok(),
        _ => value.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(raw: &[(&str, &str)], trusted: &[&str]) -> Option<IpAddr> {
        let headers: Vec<httparse::Header<'_>> =
            raw.iter().map(|(name, value)| httparse::Header { name, value: value.as_bytes() }).collect();
        client_address(&headers, &TrustedProxies::parse(trusted).unwrap())
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(client(&[("X-Forwarded-For", "203.0.113.7")], &trusted), ip("203.0.113.7"));
        // A client that sends its own X-Forwarded-For cannot pick its address.
        assert_eq!(client(&[("X-Forwarded-For", "1.2.3.4, 203.0.113.7, 10.1.1.1")], &trusted), ip("203.0.113.7"));
        assert_eq!(
            client(&[("x-forwarded-for", "1.2.3.4"), ("X-Forwarded-For", "203.0.113.7")], &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client(&[("X-Forwarded-For", "10.0.0.2, 10.0.0.3")], &trusted),
            ip("10.0.0.2"),
            "all trusted: the leftmost"
        );
    }

    #[test]
    fn forwarded_wins_and_parses_its_forms() {
        let trusted = ["10.0.0.0/8", "2001:db8:ffff::/48"];
        let both = [("X-Forwarded-For", "198.51.100.1"), ("Forwarded", "for=192.0.2.60;proto=https;by=10.0.0.1")];
        assert_eq!(client(&both, &trusted), ip("192.0.2.60"));
        assert_eq!(client(&[("Forwarded", "for=\"[2001:db8::1]:4711\", for=10.2.3.4")], &trusted), ip("2001:db8::1"));
        assert_eq!(client(&[("Forwarded", "For=\"192.0.2.61:8080\"")], &trusted), ip("192.0.2.61"));
        assert_eq!(client(&[("Forwarded", "for=_hidden")], &trusted), None, "obfuscated: not used");
    }

    #[test]
    fn a_header_that_does_not_parse_is_not_used() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(client(&[("X-Forwarded-For", "203.0.113.7, not-an-address")], &trusted), None);
        assert_eq!(client(&[("X-Forwarded-For", "")], &trusted), None);
        assert_eq!(client(&[("Forwarded", "proto=https")], &trusted), None);
        assert_eq!(client(&[], &trusted), None);
    }

    #[test]
    fn ranges_match_by_prefix() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8", "192.0.2.1", "2001:db8::/32", "0.0.0.0/0"][..3]).unwrap();
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
