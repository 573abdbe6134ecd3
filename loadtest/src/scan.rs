//! Finds the few fields the load generator needs in a server message, without parsing the
//! whole JSON and without allocating.

/// The fields of one message that matter for measuring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields<'a> {
    pub kind: &'a [u8],
    pub symbol: &'a [u8],
    pub seq: Option<u64>,
    pub gw_ts: Option<u64>,
    pub from_seq: Option<u64>,
    pub to_seq: Option<u64>,
    /// A close code or similar (`"code"` as a number), unused for events.
    pub conflated: Option<u64>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// The string value after `"key":"` (no escapes expected in these fields).
fn string_field<'a>(payload: &'a [u8], key: &[u8]) -> &'a [u8] {
    match find(payload, key) {
        Some(at) => {
            let start = at + key.len();
            let len = payload[start..].iter().position(|&b| b == b'"').unwrap_or(0);
            &payload[start..start + len]
        }
        None => &[],
    }
}

/// The unsigned integer after `"key":`.
fn number_field(payload: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(payload, key)? + key.len();
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    payload[at..at + digits].iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// Reads the fields of one message. Keys are matched at the top level only in the sense that
/// tickgate's (and the peers') messages never nest these names; snapshots nest `seq` in their
/// trade and quote, after the top-level `seq`, which is found first.
pub fn scan(payload: &[u8]) -> Fields<'_> {
    let kind = string_field(payload, b"\"type\":\"");
    let mut fields = Fields { kind, symbol: string_field(payload, b"\"symbol\":\""), ..Fields::default() };
    match kind {
        b"trade" | b"quote" => {
            fields.seq = number_field(payload, b"\"seq\":");
            fields.gw_ts = number_field(payload, b"\"gw_ts\":");
            fields.conflated = number_field(payload, b"\"conflated\":");
        }
        b"snapshot" => fields.seq = number_field(payload, b"\"seq\":"),
        b"gap" => {
            fields.from_seq = number_field(payload, b"\"from_seq\":");
            fields.to_seq = number_field(payload, b"\"to_seq\":");
        }
        _ => {}
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_event_snapshot_and_gap_fields() {
        let f = scan(br#"{"type":"trade","symbol":"AAPL","seq":42,"price":"187.12","size":"100","ts":1,"gw_ts":1700000000000000123}"#);
        assert_eq!(
            (f.kind, f.symbol, f.seq, f.gw_ts),
            (&b"trade"[..], &b"AAPL"[..], Some(42), Some(1_700_000_000_000_000_123))
        );
        let f = scan(br#"{"type":"snapshot","symbol":"BTC-USD","seq":7,"trade":{"seq":6},"quote":null}"#);
        assert_eq!((f.kind, f.symbol, f.seq), (&b"snapshot"[..], &b"BTC-USD"[..], Some(7)));
        let f = scan(br#"{"type":"gap","symbol":"X","from_seq":3,"to_seq":9,"reason":"slow_consumer"}"#);
        assert_eq!((f.from_seq, f.to_seq), (Some(3), Some(9)));
        let f = scan(br#"{"type":"quote","symbol":"X","seq":5,"conflated":3,"gw_ts":9}"#);
        assert_eq!(f.conflated, Some(3));
        let f = scan(b"garbage");
        assert_eq!(f, Fields::default());
    }

    #[test]
    fn never_panics() {
        proptest::proptest!(|(bytes in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..200))| {
            let _ = scan(&bytes);
        });
    }
}
