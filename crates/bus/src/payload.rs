//! What one bus message holds: one sequenced tick and its symbol's latest event of the other
//! kind, in a small versioned binary layout, on a subject of its own symbol.
//!
//! Layout, version 2 (integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version (2) |
//! | 1 | kind: 0 trade, 1 quote |
//! | 8 | publisher epoch (the publisher's start, ns since the Unix epoch) |
//! | 8 | seq |
//! | 8 | ts |
//! | 8 | gw_ts |
//! | 16 or 32 | trade: price, size; quote: bid, bid_size, ask, ask_size (i64 each) |
//! | 1 | 1 if the symbol's latest event of the other kind follows, 0 if it has none yet |
//! | 0 or 24 + 32 or 16 | that event: seq (below the tick's), ts, gw_ts, then its fields as above |
//! | 1 + n | symbol name: its length, then its bytes |
//!
//! With the other kind carried along, every message is the symbol's whole state as of its seq:
//! an edge builds a correct snapshot from any one message (its first after a start, or the one
//! after ticks it could not read), without the messages before it.
//!
//! Sans-IO: [`encode`] and [`decode`] are all there is; the subject names the symbol too, but
//! the payload's name is the one trusted.

use tickgate_core::{SymbolId, SymbolTable, Tick, TickKind};

/// The version this build writes and the only one it reads.
pub const VERSION: u8 = 2;

const HEADER: usize = 1 + 1 + 8 * 4;

/// A decoded bus message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusTick {
    /// Which start of the publisher sequenced it.
    pub epoch: u64,
    pub tick: Tick,
    /// The symbol's latest event of the other kind as of `tick` (older than it), if any.
    pub other: Option<Tick>,
}

/// Why a bus message was rejected (counted by [`Reject::index`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("the message is shorter than its layout")]
    Truncated,
    #[error("unknown payload version {0}")]
    UnknownVersion(u8),
    #[error("unknown tick kind {0}")]
    UnknownKind(u8),
    #[error("the symbol is not in this gateway's universe")]
    UnknownSymbol,
    #[error("seq 0 (sequence numbers start at 1)")]
    ZeroSeq,
    #[error("the latest event of the other kind it carries is not older than the tick")]
    Inconsistent,
}

impl Reject {
    /// Every reason, for metrics, by [`Reject::index`].
    pub const REASONS: [&'static str; 6] =
        ["truncated", "unknown_version", "unknown_kind", "unknown_symbol", "zero_seq", "inconsistent"];

    pub fn index(self) -> usize {
        match self {
            Self::Truncated => 0,
            Self::UnknownVersion(_) => 1,
            Self::UnknownKind(_) => 2,
            Self::UnknownSymbol => 3,
            Self::ZeroSeq => 4,
            Self::Inconsistent => 5,
        }
    }
}

/// Appends the message for `tick` of the symbol named `name` to `out`, with `other`, the
/// symbol's latest event of the other kind (an `other` of the same kind as `tick` is left out).
pub fn encode(out: &mut Vec<u8>, epoch: u64, name: &str, tick: &Tick, other: Option<&Tick>) {
    let kind = if tick.kind.is_trade() { 0 } else { 1 };
    out.extend_from_slice(&[VERSION, kind]);
    for n in [epoch, tick.seq, tick.ts, tick.gw_ts] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    encode_fields(out, &tick.kind);
    match other.filter(|o| o.kind.is_trade() != tick.kind.is_trade()) {
        Some(other) => {
            out.push(1);
            for n in [other.seq, other.ts, other.gw_ts] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            encode_fields(out, &other.kind);
        }
        None => out.push(0),
    }
    // Symbol names are validated short (SymbolTable), far below 255 bytes.
    let name = &name.as_bytes()[..name.len().min(255)];
    out.push(name.len() as u8);
    out.extend_from_slice(name);
}

fn encode_fields(out: &mut Vec<u8>, kind: &TickKind) {
    match *kind {
        TickKind::Trade { price, size } => {
            for n in [price, size] {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        TickKind::Quote { bid, bid_size, ask, ask_size } => {
            for n in [bid, bid_size, ask, ask_size] {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
    }
}

/// Reads one message, resolving its symbol in `symbols`.
pub fn decode(bytes: &[u8], symbols: &SymbolTable) -> Result<BusTick, Reject> {
    let Some(&version) = bytes.first() else { return Err(Reject::Truncated) };
    if version != VERSION {
        return Err(Reject::UnknownVersion(version));
    }
    if bytes.len() < HEADER {
        return Err(Reject::Truncated);
    }
    let kind = bytes[1];
    let mut reader = Reader { bytes, at: 2 };
    let (epoch, seq, ts, gw_ts) = (reader.u64()?, reader.u64()?, reader.u64()?, reader.u64()?);
    let trade = match kind {
        0 => true,
        1 => false,
        other => return Err(Reject::UnknownKind(other)),
    };
    let kind = reader.fields(trade)?;
    let other = match reader.take(1)?[0] {
        0 => None,
        1 => {
            let (seq, ts, gw_ts) = (reader.u64()?, reader.u64()?, reader.u64()?);
            Some((seq, ts, gw_ts, reader.fields(!trade)?))
        }
        _ => return Err(Reject::Inconsistent),
    };
    let len = usize::from(reader.take(1)?[0]);
    let name = reader.take(len)?;
    if reader.at != bytes.len() {
        return Err(Reject::Truncated);
    }
    let symbol: SymbolId =
        std::str::from_utf8(name).ok().and_then(|name| symbols.lookup(name)).ok_or(Reject::UnknownSymbol)?;
    if seq == 0 {
        return Err(Reject::ZeroSeq);
    }
    let other = match other {
        Some((other_seq, ..)) if other_seq == 0 || other_seq >= seq => return Err(Reject::Inconsistent),
        Some((seq, ts, gw_ts, kind)) => Some(Tick { symbol, seq, ts, gw_ts, kind }),
        None => None,
    };
    Ok(BusTick { epoch, tick: Tick { symbol, seq, ts, gw_ts, kind }, other })
}

/// The publisher epoch of a message of any version this build knows, 0 if it has none (a
/// stray message on the stream is nobody's).
pub fn epoch_of(bytes: &[u8]) -> u64 {
    match bytes.get(2..10) {
        Some(epoch) if bytes[0] == VERSION => epoch.iter().rev().fold(0, |n, &b| (n << 8) | u64::from(b)),
        _ => 0,
    }
}

/// The subject of `name`'s ticks under `prefix`: `prefix.NAME`, a `.` of the name written `~`
/// (a subject's tokens are split at dots; `~` is never part of a symbol name).
pub fn subject(prefix: &str, name: &str) -> String {
    let mut subject = String::with_capacity(prefix.len() + 1 + name.len());
    subject.push_str(prefix);
    subject.push('.');
    subject.extend(name.chars().map(|c| if c == '.' { '~' } else { c }));
    subject
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Reject> {
        let end = self.at.checked_add(n).ok_or(Reject::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(Reject::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn u64(&mut self) -> Result<u64, Reject> {
        let mut le = [0; 8];
        le.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(le))
    }

    fn i64(&mut self) -> Result<i64, Reject> {
        self.u64().map(|n| n as i64)
    }

    fn fields(&mut self, trade: bool) -> Result<TickKind, Reject> {
        Ok(if trade {
            TickKind::Trade { price: self.i64()?, size: self.i64()? }
        } else {
            TickKind::Quote { bid: self.i64()?, bid_size: self.i64()?, ask: self.i64()?, ask_size: self.i64()? }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickgate_core::{AssetClass, SymbolInfo};

    fn table() -> SymbolTable {
        let mut table = SymbolTable::new();
        for name in ["BRK.B", "AAPL"] {
            table
                .insert(SymbolInfo { name: name.into(), class: AssetClass::Equity, price_scale: 2, size_scale: 0 })
                .unwrap();
        }
        table
    }

    /// Ticks with the other kind's latest event: none, and one.
    fn ticks() -> [(Tick, Option<Tick>); 2] {
        let trade =
            Tick { symbol: SymbolId(0), seq: 7, ts: 11, gw_ts: 12, kind: TickKind::Trade { price: -5, size: 3 } };
        let quote = Tick {
            symbol: SymbolId(1),
            seq: u64::MAX,
            ts: 1,
            gw_ts: 2,
            kind: TickKind::Quote { bid: 1, bid_size: 2, ask: i64::MAX, ask_size: i64::MIN },
        };
        let earlier_trade =
            Tick { symbol: SymbolId(1), seq: 40, ts: 3, gw_ts: 4, kind: TickKind::Trade { price: 9, size: 8 } };
        [(trade, None), (quote, Some(earlier_trade))]
    }

    fn encoded(epoch: u64, table: &SymbolTable, tick: &Tick, other: Option<&Tick>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, epoch, &table.get(tick.symbol).name, tick, other);
        out
    }

    #[test]
    fn a_tick_comes_back_as_it_went_with_the_other_kinds_latest() {
        let table = table();
        for (tick, other) in ticks() {
            let out = encoded(99, &table, &tick, other.as_ref());
            assert_eq!(decode(&out, &table), Ok(BusTick { epoch: 99, tick, other }));
            assert_eq!(epoch_of(&out), 99);
        }
    }

    #[test]
    fn an_other_of_the_same_kind_is_left_out() {
        let table = table();
        let [(trade, _), _] = ticks();
        let older = Tick { seq: 3, ..trade };
        assert_eq!(
            decode(&encoded(1, &table, &trade, Some(&older)), &table),
            Ok(BusTick { epoch: 1, tick: trade, other: None })
        );
    }

    #[test]
    fn every_truncation_is_rejected_and_so_is_a_trailing_byte() {
        let table = table();
        for (tick, other) in ticks() {
            let mut out = encoded(1, &table, &tick, other.as_ref());
            for len in 0..out.len() {
                assert_eq!(decode(&out[..len], &table), Err(Reject::Truncated), "{len} bytes");
            }
            out.push(0);
            assert_eq!(decode(&out, &table), Err(Reject::Truncated));
        }
    }

    #[test]
    fn an_unknown_version_kind_or_symbol_or_an_inconsistent_other_is_rejected() {
        let table = table();
        let [(tick, _), (quote, other)] = ticks();
        let out = encoded(1, &table, &tick, None);
        let mut bad = out.clone();
        bad[0] = 1;
        assert_eq!(decode(&bad, &table), Err(Reject::UnknownVersion(1)), "version 1 is read no more");
        let mut bad = out.clone();
        bad[1] = 9;
        assert_eq!(decode(&bad, &table), Err(Reject::UnknownKind(9)));
        let mut bad = Vec::new();
        encode(&mut bad, 1, "MSFT", &tick, None);
        assert_eq!(decode(&bad, &table), Err(Reject::UnknownSymbol));
        let bad = encoded(1, &table, &Tick { seq: 0, ..tick }, None);
        assert_eq!(decode(&bad, &table), Err(Reject::ZeroSeq));
        let newer = Tick { seq: quote.seq, ..other.unwrap() };
        assert_eq!(decode(&encoded(1, &table, &quote, Some(&newer)), &table), Err(Reject::Inconsistent));
        let mut bad = out.clone();
        bad[HEADER + 16] = 2;
        assert_eq!(decode(&bad, &table), Err(Reject::Inconsistent), "the presence byte is 0 or 1");
    }

    #[test]
    fn a_dot_in_a_symbol_name_does_not_split_its_subject() {
        assert_eq!(subject("ticks", "BRK.B"), "ticks.BRK~B");
        assert_eq!(subject("ticks", "BTC-USD"), "ticks.BTC-USD");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_to_a_tick_or_a_reason_never_a_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode(&bytes, &table());
        }

        #[test]
        fn any_tick_comes_back_as_it_went(
            epoch: u64, seq in 2u64.., other_seq in 1u64.., ts: u64, gw_ts: u64, a: i64, b: i64, c: i64, d: i64,
            quote: bool, with_other: bool, symbol in 0u32..2,
        ) {
            let table = table();
            let quote_kind = TickKind::Quote { bid: a, bid_size: b, ask: c, ask_size: d };
            let trade_kind = TickKind::Trade { price: a, size: b };
            let (kind, other_kind) = if quote { (quote_kind, trade_kind) } else { (trade_kind, quote_kind) };
            let tick = Tick { symbol: SymbolId(symbol), seq, ts, gw_ts, kind };
            let other = with_other.then_some(Tick { seq: 1 + other_seq % (seq - 1), kind: other_kind, ..tick });
            let out = encoded(epoch, &table, &tick, other.as_ref());
            proptest::prop_assert_eq!(decode(&out, &table), Ok(BusTick { epoch, tick, other }));
        }
    }
}
