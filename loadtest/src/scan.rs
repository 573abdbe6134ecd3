//! Finds the few fields the load generator needs in a server message, without building a JSON
//! tree and without allocating: one pass over the top-level members of the object.
//!
//! Only top-level members count (a snapshot's nested `trade.seq` is never taken for its own
//! `seq`), whitespace between tokens is allowed anywhere JSON allows it, and a message that is
//! not a JSON object, or whose numbers are not plain unsigned integers, is reported as such, so
//! that the caller can count it instead of passing it unchecked.

/// The fields of one message that matter for measuring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields<'a> {
    /// The `type` string; empty when missing.
    pub kind: &'a [u8],
    pub symbol: &'a [u8],
    pub seq: Option<u64>,
    pub gw_ts: Option<u64>,
    pub from_seq: Option<u64>,
    pub to_seq: Option<u64>,
    /// `after_seq` of a `resumed` reply.
    pub after_seq: Option<u64>,
    /// `reason` of a `gap`.
    pub reason: &'a [u8],
    /// Quotes a conflated quote superseded.
    pub conflated: Option<u64>,
    /// `policy` of a `subscribed` reply.
    pub policy: &'a [u8],
    /// `code` of an `error` reply.
    pub code: &'a [u8],
    /// The payload is not one well-formed JSON object (as far as this scanner checks).
    pub malformed: bool,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end (exclusive) of the string starting at the quote `b[i]`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// The end (exclusive) of the JSON value starting at `b[i]`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let len = b[i..].iter().position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'));
            let end = i + len.unwrap_or(b.len() - i);
            (end > i).then_some(end)
        }
    }
}

/// Calls `visit(key, raw value)` for every top-level member; false if the object is malformed.
fn members<'a>(b: &'a [u8], mut visit: impl FnMut(&'a [u8], &'a [u8])) -> bool {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return false;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return skip_ws(b, i + 1) == b.len();
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return false;
        }
        let Some(key_end) = string_end(b, i) else { return false };
        let key = &b[i + 1..key_end - 1];
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return false;
        }
        i = skip_ws(b, i + 1);
        let Some(end) = value_end(b, i) else { return false };
        visit(key, &b[i..end]);
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return skip_ws(b, i + 1) == b.len(),
            _ => return false,
        }
    }
}

/// The contents of a JSON string value (no unescaping: these fields never need it).
fn string_value(raw: &[u8]) -> Option<&[u8]> {
    (raw.len() >= 2 && raw[0] == b'"').then(|| &raw[1..raw.len() - 1])
}

/// A plain unsigned integer (digits only, fits in u64); anything else is unreadable.
fn number_value(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || raw.len() > 20 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    raw.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// Reads the fields of one message.
pub fn scan(payload: &[u8]) -> Fields<'_> {
    let mut f = Fields::default();
    let well_formed = members(payload, |key, raw| match key {
        b"type" => f.kind = string_value(raw).unwrap_or_default(),
        b"symbol" => f.symbol = string_value(raw).unwrap_or_default(),
        b"policy" => f.policy = string_value(raw).unwrap_or_default(),
        b"code" => f.code = string_value(raw).unwrap_or_default(),
        b"seq" => f.seq = number_value(raw),
        b"gw_ts" => f.gw_ts = number_value(raw),
        b"from_seq" => f.from_seq = number_value(raw),
        b"to_seq" => f.to_seq = number_value(raw),
        b"after_seq" => f.after_seq = number_value(raw),
        b"reason" => f.reason = string_value(raw).unwrap_or_default(),
        b"conflated" => f.conflated = number_value(raw),
        _ => {}
    });
    f.malformed = !well_formed;
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_event_snapshot_and_gap_fields() {
        let f = scan(br#"{"type":"trade","symbol":"AAPL","seq":42,"price":"187.12","size":"100","ts":1,"gw_ts":1700000000000000123}"#);
        assert_eq!(
            (f.kind, f.symbol, f.seq, f.gw_ts, f.malformed),
            (&b"trade"[..], &b"AAPL"[..], Some(42), Some(1_700_000_000_000_000_123), false)
        );
        let f = scan(br#"{"type":"snapshot","symbol":"BTC-USD","seq":7,"trade":{"seq":6},"quote":null}"#);
        assert_eq!((f.kind, f.symbol, f.seq), (&b"snapshot"[..], &b"BTC-USD"[..], Some(7)));
        let f = scan(br#"{"type":"gap","symbol":"X","from_seq":3,"to_seq":9,"reason":"slow_consumer"}"#);
        assert_eq!((f.from_seq, f.to_seq, f.reason), (Some(3), Some(9), &b"slow_consumer"[..]));
        let f = scan(br#"{"type":"resumed","symbol":"X","after_seq":812,"to_seq":820}"#);
        assert_eq!((f.kind, f.after_seq, f.to_seq), (&b"resumed"[..], Some(812), Some(820)));
        let f = scan(br#"{"type":"quote","symbol":"X","seq":5,"conflated":3,"gw_ts":9}"#);
        assert_eq!(f.conflated, Some(3));
        let f = scan(br#"{"type":"subscribed","symbols":["A","B"],"policy":"drop"}"#);
        assert_eq!((f.kind, f.policy), (&b"subscribed"[..], &b"drop"[..]));
        let f = scan(br#"{"type":"error","id":1,"code":"not_entitled","message":"a \"quoted\" word","symbols":["X"]}"#);
        assert_eq!((f.kind, f.code, f.malformed), (&b"error"[..], &b"not_entitled"[..], false));
    }

    #[test]
    fn whitespace_and_member_order_do_not_matter() {
        let f = scan(b"{ \"type\" : \"trade\",\n \"gw_ts\":\t1000 , \"seq\" : 42, \"symbol\": \"AAPL\" }");
        assert_eq!(
            (f.kind, f.symbol, f.seq, f.gw_ts, f.malformed),
            (&b"trade"[..], &b"AAPL"[..], Some(42), Some(1000), false)
        );
        // The nested trade comes first: its seq is not the snapshot's.
        let f = scan(br#"{"type":"snapshot","trade":{"seq":6,"gw_ts":5},"symbol":"A","seq":7}"#);
        assert_eq!((f.seq, f.gw_ts), (Some(7), None));
    }

    #[test]
    fn unreadable_numbers_and_broken_objects_are_reported() {
        let f = scan(br#"{"type":"trade","symbol":"A","seq":"42","gw_ts":1.5e18}"#);
        assert_eq!((f.seq, f.gw_ts, f.malformed), (None, None, false));
        let f = scan(br#"{"type":"trade","symbol":"A","seq":-1,"gw_ts":99999999999999999999999}"#);
        assert_eq!((f.seq, f.gw_ts), (None, None));
        for broken in [&b"garbage"[..], b"", b"[1,2]", br#"{"type":"trade""#, br#"{"type":"trade",}"#, br#"{"a":1}x"#] {
            assert!(scan(broken).malformed, "{:?}", String::from_utf8_lossy(broken));
        }
        assert!(!scan(b" {} ").malformed);
    }

    #[test]
    fn never_panics() {
        proptest::proptest!(|(bytes in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..200))| {
            let _ = scan(&bytes);
        });
    }
}
