//! Upstream names to symbols, for one source.
//!
//! A source's names are the universe's own, the configured aliases (`BTCUSDT` -> `BTC-USD`),
//! and, when the gateway is configured to add unknown symbols, names it has never seen: those
//! join the shared universe ([`SymbolTable::add`]) the first time a good message carries them
//! ([`SymbolResolver::find`] gives the scales to check a message against, [`SymbolResolver::admit`]
//! adds the symbol once it passed),
//! and clients can subscribe to them from then on. Each resolver keeps its own cache, so a
//! known name costs one hash lookup and no lock.

use std::collections::HashMap;
use std::sync::Arc;

use tickgate_core::symbol::is_valid_symbol_name;
use tickgate_core::{AssetClass, SymbolError, SymbolId, SymbolInfo, SymbolTable};

use crate::normalize::Reject;

/// What to do with an upstream symbol the universe does not have.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UnknownSymbols {
    /// Reject the message (counted as `unknown_symbol`).
    #[default]
    Reject,
    /// Add the symbol to the universe with the scales these rules give it (the table's reserved
    /// room permitting; past it, messages are rejected as `universe_full`).
    Add(AddedScales),
}

/// The scales of added symbols: those of the first rule whose pattern matches the name, or
/// the default pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedScales {
    pub rules: Arc<[ScaleRule]>,
    pub price_scale: u8,
    pub size_scale: u8,
}

/// Scales for the added symbols whose name matches `pattern`: a name, `PREFIX*`, `*SUFFIX` or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleRule {
    pub pattern: Box<str>,
    pub price_scale: u8,
    pub size_scale: u8,
}

impl AddedScales {
    /// Every added symbol gets these scales.
    pub fn uniform(price_scale: u8, size_scale: u8) -> Self {
        Self { rules: Arc::new([]), price_scale, size_scale }
    }

    /// The (price, size) scales of a symbol added under `name`.
    pub fn for_name(&self, name: &str) -> (u8, u8) {
        self.rules
            .iter()
            .find(|rule| pattern_matches(&rule.pattern, name))
            .map_or((self.price_scale, self.size_scale), |rule| (rule.price_scale, rule.size_scale))
    }
}

/// Whether `name` matches `pattern`: the same name, `PREFIX*`, `*SUFFIX`, or `*` (any name).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        return name.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return name.ends_with(suffix);
    }
    pattern == name
}

/// What [`SymbolResolver::find`] found for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The symbol, or None for a name that [`SymbolResolver::admit`] would add.
    pub id: Option<SymbolId>,
    pub price_scale: u8,
    pub size_scale: u8,
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

    /// The symbol an upstream name stands for, adding it at once if it is new (see
    /// [`find`](Self::find) and [`admit`](Self::admit) to add it only once its message is good).
    pub fn resolve(&mut self, upstream: &str) -> Result<SymbolId, Reject> {
        let found = self.find(upstream)?;
        self.admit(upstream, found)
    }

    /// What an upstream name stands for: a known symbol, or (adding unknown symbols) one that
    /// [`admit`](Self::admit) would add. Either way its scales, to check the message against.
    pub fn find(&mut self, upstream: &str) -> Result<Found, Reject> {
        if let Some(&id) = self.names.get(upstream) {
            return Ok(self.known(id));
        }
        // Another source may have added it since.
        if let Some(id) = self.symbols.lookup(self.universe_name(upstream)) {
            self.names.insert(upstream.into(), id);
            return Ok(self.known(id));
        }
        match &self.unknown {
            UnknownSymbols::Add(scales) if is_valid_symbol_name(self.universe_name(upstream)) => {
                let (price_scale, size_scale) = scales.for_name(self.universe_name(upstream));
                Ok(Found { id: None, price_scale, size_scale })
            }
            _ => Err(Reject::UnknownSymbol),
        }
    }

    /// The symbol of a name [`find`](Self::find) found, added to the universe now if it is new:
    /// call it once the message is known to be good, so bad messages never add symbols.
    pub fn admit(&mut self, upstream: &str, found: Found) -> Result<SymbolId, Reject> {
        if let Some(id) = found.id {
            return Ok(id);
        }
        let ours = self.universe_name(upstream);
        let (price_scale, size_scale) = (found.price_scale, found.size_scale);
        let info = SymbolInfo { name: ours.into(), class: AssetClass::Crypto, price_scale, size_scale };
        let id = match self.symbols.add(info) {
            Ok(id) => {
                tracing::info!(symbol = ours, price_scale, size_scale, "symbol added to the universe");
                id
            }
            // Another source added it between `find` and now.
            Err(SymbolError::Duplicate(_)) => self.symbols.lookup(ours).ok_or(Reject::UnknownSymbol)?,
            Err(SymbolError::Full(_) | SymbolError::TooMany) => return Err(Reject::UniverseFull),
            Err(SymbolError::InvalidName(_) | SymbolError::ScaleTooLarge { .. }) => return Err(Reject::UnknownSymbol),
        };
        self.names.insert(upstream.into(), id);
        Ok(id)
    }

    fn known(&self, id: SymbolId) -> Found {
        let info = self.symbols.get(id);
        Found { id: Some(id), price_scale: info.price_scale, size_scale: info.size_scale }
    }

    /// The universe's name for an upstream name: its alias target, or itself.
    fn universe_name<'n>(&'n self, upstream: &'n str) -> &'n str {
        self.aliases.get(upstream).map_or(upstream, |name| name.as_ref())
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
        let add = UnknownSymbols::Add(AddedScales::uniform(4, 6));
        let mut a = SymbolResolver::new(symbols.clone(), &aliases, add.clone());
        let mut b = SymbolResolver::new(symbols.clone(), &HashMap::new(), add);
        assert_eq!(a.resolve("ETHUSDT"), Ok(SymbolId(1)), "an alias adds its target name");
        assert_eq!(b.resolve("ETH-USD"), Ok(SymbolId(1)), "the other source finds it");
        assert_eq!(symbols.get(SymbolId(1)).price_scale, 4);
        assert_eq!(b.resolve("lowercase"), Err(Reject::UnknownSymbol), "not a valid name");
        assert_eq!(b.resolve("SOL-USD"), Ok(SymbolId(2)));
        assert_eq!(a.resolve("DOGE-USD"), Err(Reject::UniverseFull));
        assert_eq!(symbols.len(), 3);
    }

    #[test]
    fn added_symbols_take_the_scales_of_the_first_matching_rule() {
        let rule =
            |pattern: &str, price_scale, size_scale| ScaleRule { pattern: pattern.into(), price_scale, size_scale };
        let scales = AddedScales {
            rules: Arc::new([rule("*-USD", 2, 8), rule("DESK*", 4, 0), rule("ACME", 3, 1)]),
            price_scale: 8,
            size_scale: 8,
        };
        assert_eq!(scales.for_name("SOL-USD"), (2, 8));
        assert_eq!(scales.for_name("DESK-A"), (4, 0));
        assert_eq!(scales.for_name("ACME"), (3, 1));
        assert_eq!(scales.for_name("ACMEX"), (8, 8), "an exact pattern matches only its name");
        let mut r = SymbolResolver::new(table(4), &HashMap::new(), UnknownSymbols::Add(scales));
        let id = r.resolve("DESK-B").unwrap();
        assert_eq!((r.symbols().get(id).price_scale, r.symbols().get(id).size_scale), (4, 0));
    }
}
