//! `proxy_header`: arbitrary bytes into `tickgate_server::proxy_protocol::parse`.
//!
//! Contract: never panics. A complete header's length lies inside the buffer and within the
//! version's maximum, and the verdict does not change when more bytes follow (what comes after
//! a header is the connection's, not the header's); `Incomplete` only for a buffer shorter than
//! the longest header; a verdict on a prefix of the input is never contradicted by the whole
//! input (an error stays an error, a complete header stays the same header).

use tickgate_server::proxy_protocol::{Parsed, V2_MAX, parse};

pub fn check(data: &[u8]) {
    let verdict = parse(data);
    match verdict {
        Ok(Parsed::Complete { len, .. }) => {
            assert!(len > 0 && len <= data.len() && len <= V2_MAX, "len {len} of {} bytes", data.len());
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(parse(&longer), verdict, "bytes after the header changed its verdict");
        }
        Ok(Parsed::Incomplete) => assert!(data.len() < V2_MAX, "Incomplete for {} bytes", data.len()),
        Err(_) => {}
    }
    // A decided prefix stays decided the same way.
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        match parse(&data[..cut]) {
            Ok(Parsed::Incomplete) => {}
            Err(e) => assert_eq!(verdict, Err(e), "a prefix's error must stand ({cut} bytes)"),
            complete => assert_eq!(verdict, complete, "a prefix's header must stand ({cut} bytes)"),
        }
    }
}
