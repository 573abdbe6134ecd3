//! What one bus message holds: one sequenced tick, in a small versioned binary layout, on a
//! subject of its own symbol.
//!
//! Layout, version 1 (integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version (1) |
//! | 1 | kind: 0 trade, 1 quote |
//! | 8 | publisher epoch (the publisher's start, ns since the Unix epoch) |
//! | 8 | seq |
//! | 8 | ts |
//! | 8 | gw_ts |
//! | 16 or 32 | trade: price, size; quote: bid, bid_size, ask, ask_size (i64 each) |
//! | 1 + n | symbol name: its length, then its bytes |
//!
//! Sans-IO: [`encode`] and [`decode`] are all there is; the subject names the symbol too, but
//! the payload's name is the one trusted.

use tickgate_core::{SymbolId, SymbolTable, Tick, TickKind};

/// The version this build writes and the only one it reads.
pub const VERSION: u8 = 1;

const HEADER: usize = 1 + 1 + 8 * 4;

/// A decoded bus message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusTick {
    /// Which start of the publisher sequenced it.
    pub epoch: u64,
    pub tick: Tick,
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
}

impl Reject {
    /// Every reason, for metrics, by [`Reject::index`].
    pub const REASONS: [&'static str; 5] =
        ["truncated", "unknown_version", "unknown_kind", "unknown_symbol", "zero_seq"];

    pub fn index(self) -> usize {
        match self {
            Self::Truncated => 0,
            Self::UnknownVersion(_) => 1,
            Self::UnknownKind(_) => 2,
            Self::UnknownSymbol => 3,
            Self::ZeroSeq => 4,
        }
    }
}

/// Appends the message for `tick` of the symbol named `name` to `out`.
pub fn encode(out: &mut Vec<u8>, epoch: u64, name: &str, tick: &Tick) {
    let kind = if tick.kind.is_trade() { 0 } else { 1 };
    out.extend_from_slice(&[VERSION, kind]);
    for n in [epoch, tick.seq, tick.ts, tick.gw_ts] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    match tick.kind {
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
    // Symbol names are validated short (SymbolTable), far below 255 bytes.
    let name = &name.as_bytes()[..name.len().min(255)];
    out.push(name.len() as u8);
    out.extend_from_slice(name);
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
    let kind = match kind {
        0 => TickKind::Trade { price: reader.i64()?, size: reader.i64()? },
        1 => {
            TickKind::Quote { bid: reader.i64()?, bid_size: reader.i64()?, ask: reader.i64()?, ask_size: reader.i64()? }
        }
        other => return Err(Reject::UnknownKind(other)),
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
    Ok(BusTick { epoch, tick: Tick { symbol, seq, ts, gw_ts, kind } })
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

    fn ticks() -> [Tick; 2] {
        [
            Tick { symbol: SymbolId(0), seq: 7, ts: 11, gw_ts: 12, kind: TickKind::Trade { price: -5, size: 3 } },
            Tick {
                symbol: SymbolId(1),
                seq: u64::MAX,
                ts: 1,
                gw_ts: 2,
                kind: TickKind::Quote { bid: 1, bid_size: 2, ask: i64::MAX, ask_size: i64::MIN },
            },
        ]
    }

    #[test]
    fn a_tick_comes_back_as_it_went() {
        let table = table();
        for tick in ticks() {
            let mut out = Vec::new();
            encode(&mut out, 99, &table.get(tick.symbol).name, &tick);
            assert_eq!(decode(&out, &table), Ok(BusTick { epoch: 99, tick }));
            assert_eq!(epoch_of(&out), 99);
        }
    }

    #[test]
    fn every_truncation_is_rejected_and_so_is_a_trailing_byte() {
        let table = table();
        for tick in ticks() {
            let mut out = Vec::new();
            encode(&mut out, 1, &table.get(tick.symbol).name, &tick);
            for len in 0..out.len() {
                assert_eq!(decode(&out[..len], &table), Err(Reject::Truncated), "{len} bytes");
            }
            out.push(0);
            assert_eq!(decode(&out, &table), Err(Reject::Truncated));
        }
    }

    #[test]
    fn an_unknown_version_kind_or_symbol_is_rejected() {
        let table = table();
        let [tick, _] = ticks();
        let mut out = Vec::new();
        encode(&mut out, 1, "AAPL", &tick);
        let mut bad = out.clone();
        bad[0] = 2;
        assert_eq!(decode(&bad, &table), Err(Reject::UnknownVersion(2)));
        let mut bad = out.clone();
        bad[1] = 9;
        assert_eq!(decode(&bad, &table), Err(Reject::UnknownKind(9)));
        let mut bad = Vec::new();
        encode(&mut bad, 1, "MSFT", &tick);
        assert_eq!(decode(&bad, &table), Err(Reject::UnknownSymbol));
        let mut bad = Vec::new();
        encode(&mut bad, 1, "AAPL", &Tick { seq: 0, ..tick });
        assert_eq!(decode(&bad, &table), Err(Reject::ZeroSeq));
    }

    #[test]
    fn a_dot_in_a_symbol_name_does_not_split_its_subject() {
        assert_eq!(subject("ticks", "BRK.B"), "ticks.BRK~B");
        assert_eq!(subject("ticks", "BTC-USD"), "ticks.BTC-USD");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_to_a_tick_or_a_reason_never_a_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let _ = decode(&bytes, &table());
        }

        #[test]
        fn any_tick_comes_back_as_it_went(
            epoch: u64, seq in 1u64.., ts: u64, gw_ts: u64, a: i64, b: i64, c: i64, d: i64, quote: bool, symbol in 0u32..2,
        ) {
            let table = table();
            let kind = if quote { TickKind::Quote { bid: a, bid_size: b, ask: c, ask_size: d } } else { TickKind::Trade { price: a, size: b } };
            let tick = Tick { symbol: SymbolId(symbol), seq, ts, gw_ts, kind };
            let mut out = Vec::new();
            encode(&mut out, epoch, &table.get(tick.symbol).name, &tick);
            proptest::prop_assert_eq!(decode(&out, &table), Ok(BusTick { epoch, tick }));
        }
    }
}
