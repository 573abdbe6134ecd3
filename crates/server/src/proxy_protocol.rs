//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer puts before a
//! connection's first byte to say whose connection it is. Sans-IO: [`parse`] looks at the
//! bytes received so far and says whether a whole header is there, how long it is and what
//! it says; it never guesses, and anything malformed is an error.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included (spec §2.1).
pub const V1_MAX: usize = 107;
/// The longest version 2 header accepted: 16 bytes, the addresses and up to this many bytes of
/// TLVs in all (cloud balancers send a few hundred).
pub const V2_MAX: usize = 16 + 2048;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A connection on behalf of `source` (the client), made to `destination`.
    Proxied { source: SocketAddr, destination: SocketAddr },
    /// The balancer speaking for itself (health checks: v2 LOCAL), or a protocol it cannot
    /// describe (v1 UNKNOWN, v2 UNSPEC or UNIX): the peer's own address stands.
    Local,
}

/// What [`parse`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A header may be coming: read more.
    Incomplete,
    /// A whole header of `len` bytes; the connection's own bytes follow it.
    Complete { header: ProxyHeader, len: usize },
}

/// Why the bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol header (the connection starts with something else)")]
    Missing,
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
    #[error("PROXY header longer than {0} bytes")]
    TooLong(usize),
}

/// Parses the header at the start of `buf` (the bytes received so far).
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let v1_prefix = b"PROXY ";
    if is_prefix(buf, &V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() { Ok(Parsed::Incomplete) } else { parse_v2(buf) }
    } else if is_prefix(buf, v1_prefix) {
        if buf.len() < v1_prefix.len() { Ok(Parsed::Incomplete) } else { parse_v1(buf) }
    } else {
        Err(ProxyError::Missing)
    }
}

/// Whether `buf` and `signature` agree on their common length.
fn is_prefix(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if buf.len() >= V1_MAX { Err(ProxyError::TooLong(V1_MAX)) } else { Ok(Parsed::Incomplete) };
    };
    match window.get(cr + 1) {
        None => return Ok(Parsed::Incomplete),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyError::V1("CR not followed by LF")),
    }
    let line = std::str::from_utf8(&window[..cr]).map_err(|_| ProxyError::V1("not ASCII"))?;
    let len = cr + 2;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY"
    let header = match fields.next() {
        // The rest of the line is to be ignored (§2.1).
        Some("UNKNOWN") => ProxyHeader::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut next = || fields.next().ok_or(ProxyError::V1("missing field"));
            let (source, destination) = (next()?, next()?);
            let (source_port, destination_port) = (next()?, next()?);
            if fields.next().is_some() {
                return Err(ProxyError::V1("extra field"));
            }
            let ip = |text: &str| -> Result<IpAddr, ProxyError> {
                match family {
                    "TCP4" => text.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| ProxyError::V1("bad IPv4 address")),
                    _ => text.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| ProxyError::V1("bad IPv6 address")),
                }
            };
            let port = |text: &str| -> Result<u16, ProxyError> {
                // Decimal, no sign, no leading zero (§2.1).
                let canonical = !text.is_empty()
                    && text.bytes().all(|b| b.is_ascii_digit())
                    && (text == "0" || !text.starts_with('0'));
                if !canonical {
                    return Err(ProxyError::V1("bad port"));
                }
                text.parse().map_err(|_| ProxyError::V1("bad port"))
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(source)?, port(source_port)?),
                destination: SocketAddr::new(ip(destination)?, port(destination_port)?),
            }
        }
        _ => return Err(ProxyError::V1("unknown protocol family")),
    };
    Ok(Parsed::Complete { header, len })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let Some(fixed) = buf.get(..16) else { return Ok(Parsed::Incomplete) };
    let (version, command) = (fixed[12] >> 4, fixed[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError::V2("version is not 2"));
    }
    let (family, protocol) = (fixed[13] >> 4, fixed[13] & 0x0f);
    let body_len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let len = 16 + body_len;
    if len > V2_MAX {
        return Err(ProxyError::TooLong(V2_MAX));
    }
    let Some(body) = buf.get(16..len) else { return Ok(Parsed::Incomplete) };
    let header = match command {
        0 => ProxyHeader::Local,
        1 => match (family, protocol) {
            // TCP (or UDP) over IPv4 and IPv6; TLVs after the addresses are ignored.
            (1, 1 | 2) => {
                let a = body.get(..12).ok_or(ProxyError::V2("IPv4 addresses cut short"))?;
                let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(a[i], a[i + 1], a[i + 2], a[i + 3]));
                let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
                ProxyHeader::Proxied {
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                }
            }
            (2, 1 | 2) => {
                let a = body.get(..36).ok_or(ProxyError::V2("IPv6 addresses cut short"))?;
                let ip = |i: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&a[i..i + 16]);
                    IpAddr::V6(Ipv6Addr::from(octets))
                };
                let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
                ProxyHeader::Proxied {
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                }
            }
            // UNSPEC or UNIX sockets: nothing tickgate can use as a client address.
            (0 | 3, _) => ProxyHeader::Local,
            _ => return Err(ProxyError::V2("unknown address family or protocol")),
        },
        _ => return Err(ProxyError::V2("unknown command")),
    };
    Ok(Parsed::Complete { header, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied { source: source.parse().unwrap(), destination: destination.parse().unwrap() }
    }

    #[test]
    fn version_1_tcp4_tcp6_and_unknown() {
        let v4 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parse(v4), Ok(Parsed::Complete { header: proxied("192.0.2.1:56324", "198.51.100.2:443"), len: 45 }));
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 8443\r\n";
        assert_eq!(
            parse(v6),
            Ok(Parsed::Complete { header: proxied("[2001:db8::1]:4000", "[2001:db8::2]:8443"), len: v6.len() })
        );
        let unknown = b"PROXY UNKNOWN whatever follows\r\n";
        assert_eq!(parse(unknown), Ok(Parsed::Complete { header: ProxyHeader::Local, len: unknown.len() }));
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let v1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        let v2 = v2_tcp4();
        for header in [&v1[..], &v2[..]] {
            for cut in 0..header.len() {
                assert_eq!(parse(&header[..cut]), Ok(Parsed::Incomplete), "{cut} bytes");
            }
        }
    }

    #[test]
    fn version_1_refuses_what_the_spec_does_not_allow() {
        let bad: [&[u8]; 9] = [
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 1\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 01 443\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\rX",
        ];
        for header in bad {
            assert!(matches!(parse(header), Err(ProxyError::V1(_))), "{:?}", String::from_utf8_lossy(header));
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat();
        assert_eq!(parse(&long), Err(ProxyError::TooLong(V1_MAX)));
    }

    #[test]
    fn no_header_is_missing_not_guessed() {
        for start in [&b"GET / HTTP/1.1\r\n"[..], &[0x16, 0x03, 0x01], b"PROXZ", b"\r\n\r\nX"] {
            assert_eq!(parse(start), Err(ProxyError::Missing), "{start:?}");
        }
    }

    fn v2_tcp4() -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 12 + 7]);
        h.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb]);
        h.extend_from_slice(&[0x04, 0, 4, b'a', b'b', b'c', b'd']); // a TLV, ignored
        h
    }

    #[test]
    fn version_2_tcp4_tcp6_local_and_unspec() {
        let mut v4 = v2_tcp4();
        let len = v4.len();
        v4.extend_from_slice(b"GET");
        assert_eq!(parse(&v4), Ok(Parsed::Complete { header: proxied("192.0.2.1:56324", "198.51.100.2:443"), len }));

        let mut v6 = V2_SIGNATURE.to_vec();
        v6.extend_from_slice(&[0x21, 0x21, 0, 36]);
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x0f, 0xa0, 0x20, 0xfb]);
        assert_eq!(
            parse(&v6),
            Ok(Parsed::Complete { header: proxied("[2001:db8::1]:4000", "[2001:db8::2]:8443"), len: 52 })
        );

        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local), Ok(Parsed::Complete { header: ProxyHeader::Local, len: 16 }));
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0, 0]);
        assert_eq!(parse(&unspec), Ok(Parsed::Complete { header: ProxyHeader::Local, len: 16 }));
    }

    #[test]
    fn version_2_refuses_what_the_spec_does_not_allow() {
        let with = |ver_cmd: u8, fam: u8, body: &[u8]| {
            let mut h = V2_SIGNATURE.to_vec();
            h.extend_from_slice(&[ver_cmd, fam]);
            h.extend_from_slice(&(body.len() as u16).to_be_bytes());
            h.extend_from_slice(body);
            h
        };
        assert_eq!(parse(&with(0x11, 0x11, &[0; 12])), Err(ProxyError::V2("version is not 2")));
        assert_eq!(parse(&with(0x22, 0x11, &[0; 12])), Err(ProxyError::V2("unknown command")));
        assert_eq!(parse(&with(0x21, 0x11, &[0; 8])), Err(ProxyError::V2("IPv4 addresses cut short")));
        assert_eq!(parse(&with(0x21, 0x21, &[0; 20])), Err(ProxyError::V2("IPv6 addresses cut short")));
        assert!(matches!(parse(&with(0x21, 0x41, &[0; 12])), Err(ProxyError::V2(_))));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Err(ProxyError::TooLong(V2_MAX)));
    }
}
