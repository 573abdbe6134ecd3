//! The symbol universe: names, ids and per-symbol decimal scales.
//!
//! A [`SymbolId`] is a dense index into the table, so per-symbol state everywhere in tickgate is
//! a plain `Vec` indexed by it. The table is built once at start and shared read-only.

use std::collections::HashMap;

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
}

/// Whether `name` is a valid symbol name. Valid names need no escaping inside a JSON string.
pub fn is_valid_symbol_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SYMBOL_LEN
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_' | b'/'))
}

/// The symbol universe, built once and then read-only.
#[derive(Debug, Default, Clone)]
pub struct SymbolTable {
    symbols: Vec<SymbolInfo>,
    by_name: HashMap<Box<str>, SymbolId>,
}

impl SymbolTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a symbol and returns its id.
    pub fn insert(&mut self, info: SymbolInfo) -> Result<SymbolId, SymbolError> {
        if !is_valid_symbol_name(&info.name) {
            return Err(SymbolError::InvalidName(info.name.into()));
        }
        if info.price_scale > crate::decimal::MAX_SCALE || info.size_scale > crate::decimal::MAX_SCALE {
            return Err(SymbolError::ScaleTooLarge { name: info.name.into(), max: crate::decimal::MAX_SCALE });
        }
        if self.by_name.contains_key(&info.name) {
            return Err(SymbolError::Duplicate(info.name.into()));
        }
        let id = SymbolId(u32::try_from(self.symbols.len()).map_err(|_| SymbolError::TooMany)?);
        self.by_name.insert(info.name.clone(), id);
        self.symbols.push(info);
        Ok(id)
    }

    pub fn lookup(&self, name: &str) -> Option<SymbolId> {
        self.by_name.get(name).copied()
    }

    /// The symbol with this id. Ids come from this table, so an unknown id is a bug.
    pub fn get(&self, id: SymbolId) -> &SymbolInfo {
        &self.symbols[id.index()]
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (SymbolId, &SymbolInfo)> {
        self.symbols.iter().enumerate().map(|(i, s)| (SymbolId(i as u32), s))
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
    fn rejects_names_that_would_need_escaping() {
        let mut t = SymbolTable::new();
        for bad in ["", "a\"b", "lower", "WAY-TOO-LONG-SYMBOL-NAME-FOR-ANYONE-1", "A B"] {
            assert!(matches!(t.insert(info(bad)), Err(SymbolError::InvalidName(_))), "{bad:?}");
        }
    }
}
