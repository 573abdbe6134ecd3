//! Upstream names to symbols, for one source.
//!
//! A source's names are the universe's own, the configured aliases (`BTCUSDT` -> `BTC-USD`),
//! and, when the gateway is configured to add unknown symbols, names it has never seen: those
//! join the shared universe ([`SymbolTable::add`]) the first time a good message carries them,
//! and clients can subscribe to them from then on. Each resolver keeps its own cache, so a
//! known name costs one hash lookup and no lock.

use std::collections::HashMap;
use std::sync::Arc;

use tickgate_core::{AssetClass, SymbolError, SymbolId, SymbolInfo, SymbolTable};

use crate::normalize::Reject;

/// What to do with an upstream symbol the universe does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownSymbols {
    /// Reject the message (counted as `unknown_symbol`).
    #[default]
    Reject,
    /// Add the symbol to the universe with these scales (the table's reserved room permitting;
    /// past it, messages are rejected as `universe_full`).
    Add { price_scale: u8, size_scale: u8 },
}

/// Upstream name -> symbol for one source.
#[derive(Clone)]
pub struct SymbolResolver {
    symbols: Arc<SymbolTable>,
    /// Names seen so far (the universe's own at start, aliases, and additions).
    names: HashMap<Box<str>, SymbolId>,
    /// Upstream name -> universe name, for targets not yet in the universe.
    aliases: HashMap<Box<str>, Box<str>>,
    unknown: UnknownSymbols,
}

impl SymbolResolver {
    pub fn new(symbols: Arc<SymbolTable>, aliases: &HashMap<String, String>, unknown: UnknownSymbols) -> Self {
        let mut names: HashMap<Box<str>, SymbolId> = symbols.iter().map(|(id, s)| (s.name.clone(), id)).collect();
        for (upstream, ours) in aliases {
            if let Some(id) = symbols.lookup(ours) {
                names.insert(upstream.as_str().into(), id);
            }
        }
        let aliases = aliases.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect();
        Self { symbols, names, aliases, unknown }
    }

    /// The universe this resolver adds to.
    pub fn symbols(&self) -> &Arc<SymbolTable> {
        &self.symbols
    }

    /// The symbol an upstream name stands for.
    pub fn resolve(&mut self, upstream: &str) -> Result<SymbolId, Reject> {
        if let Some(&id) = self.names.get(upstream) {
            return Ok(id);
        }
        let ours = self.aliases.get(upstream).map_or(upstream, |name| name.as_ref());
        // Another source may have added it since.
        let id = match self.symbols.lookup(ours) {
            Some(id) => id,
            None => {
                let UnknownSymbols::Add { price_scale, size_scale } = self.unknown else {
                    return Err(Reject::UnknownSymbol);
                };
                let info = SymbolInfo { name: ours.into(), class: AssetClass::Crypto, price_scale, size_scale };
                match self.symbols.add(info) {
                    Ok(id) => {
                        tracing::info!(symbol = ours, price_scale, size_scale, "symbol added to the universe");
                        id
                    }
                    Err(SymbolError::Duplicate(_)) => self.symbols.lookup(ours).ok_or(Reject::UnknownSymbol)?,
                    Err(SymbolError::Full(_) | SymbolError::TooMany) => return Err(Reject::UniverseFull),
                    Err(SymbolError::InvalidName(_) | SymbolError::ScaleTooLarge { .. }) => {
                        return Err(Reject::UnknownSymbol);
                    }
                }
            }
        };
        self.names.insert(upstream.into(), id);
        Ok(id)
    }

    /// The per-symbol state a source keeps must cover every symbol the universe can hold.
    pub fn capacity(&self) -> usize {
        self.symbols.capacity()
    }
}

impl std::fmt::Debug for SymbolResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SymbolResolver").field("names", &self.names.len()).field("unknown", &self.unknown).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(spare: usize) -> Arc<SymbolTable> {
        let mut t = SymbolTable::new();
        t.insert(SymbolInfo { name: "BTC-USD".into(), class: AssetClass::Crypto, price_scale: 2, size_scale: 8 })
            .unwrap();
        t.reserve_additions(spare);
        Arc::new(t)
    }

    #[test]
    fn rejects_unknown_names_unless_told_to_add_them() {
        let aliases = HashMap::from([("XBTUSD".to_string(), "BTC-USD".to_string())]);
        let mut r = SymbolResolver::new(table(4), &aliases, UnknownSymbols::Reject);
        assert_eq!(r.resolve("XBTUSD"), Ok(SymbolId(0)));
        assert_eq!(r.resolve("ETH-USD"), Err(Reject::UnknownSymbol));
        assert_eq!(r.symbols().len(), 1);
    }

    #[test]
    fn adds_new_names_once_shared_across_sources_until_the_room_runs_out() {
        let symbols = table(2);
        let aliases = HashMap::from([("ETHUSDT".to_string(), "ETH-USD".to_string())]);
        let add = UnknownSymbols::Add { price_scale: 4, size_scale: 6 };
        let mut a = SymbolResolver::new(symbols.clone(), &aliases, add);
        let mut b = SymbolResolver::new(symbols.clone(), &HashMap::new(), add);
        assert_eq!(a.resolve("ETHUSDT"), Ok(SymbolId(1)), "an alias adds its target name");
        assert_eq!(b.resolve("ETH-USD"), Ok(SymbolId(1)), "the other source finds it");
        assert_eq!(symbols.get(SymbolId(1)).price_scale, 4);
        assert_eq!(b.resolve("lowercase"), Err(Reject::UnknownSymbol), "not a valid name");
        assert_eq!(b.resolve("SOL-USD"), Ok(SymbolId(2)));
        assert_eq!(a.resolve("DOGE-USD"), Err(Reject::UniverseFull));
        assert_eq!(symbols.len(), 3);
    }
}
