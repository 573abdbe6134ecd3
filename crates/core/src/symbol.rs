//! The symbol universe: names, ids and per-symbol decimal scales.
//!
//! A [`SymbolId`] is a dense index into the table, so per-symbol state everywhere in tickgate is
//! a plain `Vec` indexed by it. The table is built once at start and shared read-only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};

/// Longest symbol name accepted.
pub const MAX_SYMBOL_LEN: usize = 32;

/// Dense id of a symbol: its index in the [`SymbolTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymbolId(pub u32);

impl SymbolId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What kind of instrument a symbol is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetClass {
    Equity,
    Crypto,
}

/// One symbol of the universe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolInfo {
    pub name: Box<str>,
    pub class: AssetClass,
    /// Fractional digits of prices.
    pub price_scale: u8,
    /// Fractional digits of sizes.
    pub size_scale: u8,
}

/// Why a symbol could not be added to the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    #[error(
        "symbol name {0:?} is empty, longer than {MAX_SYMBOL_LEN} bytes, or has a character other than A-Z, 0-9, '.', '-', '_', '/'"
    )]
    InvalidName(String),
    #[error("symbol {0:?} is listed twice")]
    Duplicate(String),
    #[error("symbol {name:?} has a scale above {max}")]
    ScaleTooLarge { name: String, max: u8 },
    #[error("more than u32::MAX symbols")]
    TooMany,
    #[error("the universe is full ({0} symbols)")]
    Full(usize),
}

/// Whether `name` is a valid symbol name. Valid names need no escaping inside a JSON string.
pub fn is_valid_symbol_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SYMBOL_LEN
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_' | b'/'))
}

/// The symbol universe.
///
/// Built once at start with [`SymbolTable::insert`]; then shared (`Arc`) and read by every
/// thread. A table may keep spare room ([`SymbolTable::reserve_additions`]) for symbols an
/// upstream introduces at run time ([`SymbolTable::add`]): ids never move and per-symbol state
/// elsewhere is sized by [`SymbolTable::capacity`], so an addition needs no coordination beyond
/// the table itself. Reading a symbol by id is lock-free (the hot path); looking one up by name
/// takes a read lock (subscriptions and new upstream names only).
#[derive(Default)]
pub struct SymbolTable {
    /// Filled in order; `len` of them are set.
    slots: Vec<OnceLock<SymbolInfo>>,
    len: AtomicUsize,
    by_name: RwLock<HashMap<Box<str>, SymbolId>>,
}

impl SymbolTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a symbol while the table is being built, and returns its id.
    pub fn insert(&mut self, info: SymbolInfo) -> Result<SymbolId, SymbolError> {
        let len = *self.len.get_mut();
        if len == self.slots.len() {
            self.slots.push(OnceLock::new());
        }
        self.add(info)
    }

    /// Keeps room for `extra` symbols to be [`add`](Self::add)ed once the table is shared.
    pub fn reserve_additions(&mut self, extra: usize) {
        let target = *self.len.get_mut() + extra;
        self.slots.resize_with(target.max(self.slots.len()), OnceLock::new);
    }

    /// Adds a symbol to a shared table, in the room kept by
    /// [`reserve_additions`](Self::reserve_additions).
    pub fn add(&self, info: SymbolInfo) -> Result<SymbolId, SymbolError> {
        if !is_valid_symbol_name(&info.name) {
            return Err(SymbolError::InvalidName(info.name.into()));
        }
        if info.price_scale > crate::decimal::MAX_SCALE || info.size_scale > crate::decimal::MAX_SCALE {
            return Err(SymbolError::ScaleTooLarge { name: info.name.into(), max: crate::decimal::MAX_SCALE });
        }
        // The write lock orders additions: `len` only moves under it.
        let mut by_name = self.by_name.write().unwrap_or_else(PoisonError::into_inner);
        if by_name.contains_key(&info.name) {
            return Err(SymbolError::Duplicate(info.name.into()));
        }
        let index = self.len.load(Ordering::Relaxed);
        let slot = self.slots.get(index).ok_or(SymbolError::Full(self.slots.len()))?;
        let id = SymbolId(u32::try_from(index).map_err(|_| SymbolError::TooMany)?);
        by_name.insert(info.name.clone(), id);
        let _ = slot.set(info);
        // Release: a reader that sees the new length sees the slot filled.
        self.len.store(index + 1, Ordering::Release);
        Ok(id)
    }

    pub fn lookup(&self, name: &str) -> Option<SymbolId> {
        self.by_name.read().unwrap_or_else(PoisonError::into_inner).get(name).copied()
    }

    /// The symbol with this id. Ids come from this table, so an unknown id is a bug.
    pub fn get(&self, id: SymbolId) -> &SymbolInfo {
        self.slots[id.index()].get().expect("symbol ids come from their table")
    }

    /// Symbols in the table now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Symbols the table can ever hold: the size of per-symbol state elsewhere.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The symbols in the table now, in id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (SymbolId, &SymbolInfo)> {
        self.slots[..self.len()].iter().enumerate().map(|(i, s)| (SymbolId(i as u32), s.get().expect("filled")))
    }
}

impl std::fmt::Debug for SymbolTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SymbolTable").field("len", &self.len()).field("capacity", &self.capacity()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> SymbolInfo {
        SymbolInfo { name: name.into(), class: AssetClass::Equity, price_scale: 2, size_scale: 0 }
    }

    #[test]
    fn ids_are_dense_and_names_unique() {
        let mut t = SymbolTable::new();
        assert_eq!(t.insert(info("AAPL")), Ok(SymbolId(0)));
        assert_eq!(t.insert(info("BTC-USD")), Ok(SymbolId(1)));
        assert_eq!(t.insert(info("AAPL")), Err(SymbolError::Duplicate("AAPL".into())));
        assert_eq!(t.lookup("BTC-USD"), Some(SymbolId(1)));
        assert_eq!(t.lookup("btc-usd"), None);
        assert_eq!(t.get(SymbolId(0)).name.as_ref(), "AAPL");
    }

    #[test]
    fn a_shared_table_takes_additions_in_its_reserved_room_only() {
        let mut t = SymbolTable::new();
        t.insert(info("AAPL")).unwrap();
        t.reserve_additions(2);
        assert_eq!((t.len(), t.capacity()), (1, 3));
        let shared = std::sync::Arc::new(t);
        let adders: Vec<_> = ["MSFT", "NVDA", "AMZN"]
            .into_iter()
            .map(|name| {
                let t = shared.clone();
                std::thread::spawn(move || t.add(info(name)))
            })
            .collect();
        let results: Vec<_> = adders.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2, "{results:?}");
        assert!(results.contains(&Err(SymbolError::Full(3))), "{results:?}");
        assert_eq!(shared.len(), 3);
        for (id, s) in shared.iter() {
            assert_eq!(shared.lookup(&s.name), Some(id));
        }
        assert_eq!(shared.add(info("AAPL")), Err(SymbolError::Duplicate("AAPL".into())));
    }

    #[test]
    fn rejects_names_that_would_need_escaping() {
        let mut t = SymbolTable::new();
        for bad in ["", "a\"b", "lower", "WAY-TOO-LONG-SYMBOL-NAME-FOR-ANYONE-1", "A B"] {
            assert!(matches!(t.insert(info(bad)), Err(SymbolError::InvalidName(_))), "{bad:?}");
        }
    }
}
