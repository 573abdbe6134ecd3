//! `deflate_offer`: arbitrary bytes as `Sec-WebSocket-Extensions` header values (one per line)
//! into `tickgate_protocol::deflate::negotiate`; and `deflate_inflate`: arbitrary bytes as a
//! client's byte stream into `tickgate_protocol::deflate::InboundInflate`, fed whole and in two
//! chops.

use tickgate_protocol::deflate::{InboundInflate, MessageInflater, negotiate};

/// Never panics. An accepted offer's window is 8..=15, and the answer reads back, as an offer,
/// as the same agreement. No offer is taken without the extension's name in the input, and
/// headers after the one holding the accepted offer change nothing. Each declined offer is one
/// element of the list.
pub fn check_offer(data: &[u8]) {
    let headers: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let n = negotiate(headers.iter().copied());
    let elements: usize = headers.iter().map(|h| h.iter().filter(|&&b| b == b',').count() + 1).sum();
    assert!(n.declined.len() <= elements, "{} declined of {elements} elements", n.declined.len());
    let Some(agreed) = n.agreed else { return };
    assert!((8..=15).contains(&agreed.server_max_window_bits));
    let lower = data.to_ascii_lowercase();
    assert!(lower.windows(18).any(|w| w == b"permessage-deflate"), "accepted without being offered");
    let answer = agreed.response();
    let again = negotiate([answer.as_bytes()]);
    assert_eq!(again.agreed, Some(agreed), "the answer {answer:?} reads back");
    assert!(again.declined.is_empty());
    let holding = (1..=headers.len()).find(|&k| negotiate(headers[..k].iter().copied()).agreed.is_some()).unwrap();
    let prefix = negotiate(headers[..holding].iter().copied());
    assert_eq!(prefix, n, "headers after the accepted offer change nothing");
}

/// Never panics; feeding the stream in two chops gives the same output and verdict as whole.
/// The first byte picks the chop and the message limit.
pub fn check_inflate(data: &[u8]) {
    let Some((&pick, stream)) = data.split_first() else { return };
    let max = 64usize << (pick % 8);
    let run = |chops: &[&[u8]]| {
        let (mut filter, mut inflater, mut out) = (InboundInflate::new(max), MessageInflater::new(), Vec::new());
        let mut result = Ok(());
        for chop in chops {
            result = filter.feed(chop, &mut out, &mut inflater);
            if result.is_err() {
                break;
            }
        }
        (result, out)
    };
    let whole = run(&[stream]);
    let cut = usize::from(pick).min(stream.len());
    let chopped = run(&[&stream[..cut], &stream[cut..]]);
    assert_eq!(whole.0, chopped.0, "verdict");
    if whole.0.is_ok() {
        assert_eq!(whole.1, chopped.1, "output");
    }
}
