//! Who is subscribed to what.
//!
//! Each connection owns a [`SymbolSet`], the source of truth for its subscriptions. Each
//! reactor keeps a [`SubscriptionIndex`] from symbol to the connections subscribed to it, so
//! fanning out a tick costs its number of deliveries, never the number of connections.

use crate::symbol::SymbolId;
use crate::tick::TickKind;

/// Which events of a symbol a subscription asks for: trades, quotes, or both (the default).
///
/// A set of the two channels in two bits; the empty set is never stored (a subscription with no
/// channel left is no subscription).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Channels(u8);

impl Default for Channels {
    fn default() -> Self {
        Self::ALL
    }
}

impl Channels {
    pub const NONE: Channels = Channels(0);
    pub const TRADES: Channels = Channels(1);
    pub const QUOTES: Channels = Channels(2);
    pub const ALL: Channels = Channels(3);

    /// A channel by its wire name (`"trades"`, `"quotes"`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "trades" => Some(Self::TRADES),
            "quotes" => Some(Self::QUOTES),
            _ => None,
        }
    }

    /// The wire names of the channels in the set, trades first.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [(Self::TRADES, "trades"), (Self::QUOTES, "quotes")]
            .into_iter()
            .filter(move |&(c, _)| self.contains(c))
            .map(|(_, name)| name)
    }

    pub fn union(self, other: Channels) -> Channels {
        Channels(self.0 | other.0)
    }

    /// The channels of `self` that are not in `other`.
    pub fn without(self, other: Channels) -> Channels {
        Channels(self.0 & !other.0)
    }

    /// Whether every channel of `other` is in `self`.
    pub fn contains(self, other: Channels) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether an event of this kind belongs to the set.
    #[inline]
    pub fn admits(self, kind: &TickKind) -> bool {
        let channel = if kind.is_trade() { Self::TRADES } else { Self::QUOTES };
        self.0 & channel.0 != 0
    }
}

/// The symbols one connection is subscribed to.
///
/// Universes run to tens of thousands of symbols while a client watches a few dozen, so the set
/// starts as a small sorted vector (4 bytes a symbol) and turns into a flat bitmap over the
/// universe only once that is smaller (more than `universe / 32` symbols). It turns back when it
/// shrinks below half of that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolSet {
    repr: Repr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    Sparse(Vec<u32>),
    Dense { words: Vec<u64>, len: usize },
}

impl Default for SymbolSet {
    fn default() -> Self {
        Self::new()
    }
}

impl SymbolSet {
    pub const fn new() -> Self {
        SymbolSet { repr: Repr::Sparse(Vec::new()) }
    }

    fn dense_threshold(universe: usize) -> usize {
        (universe / 32).max(8)
    }

    /// Adds `id`; returns whether it was new. `universe` is the size of the symbol table.
    pub fn insert(&mut self, id: SymbolId, universe: usize) -> bool {
        debug_assert!(id.index() < universe);
        let added = match &mut self.repr {
            Repr::Sparse(ids) => match ids.binary_search(&id.0) {
                Ok(_) => false,
                Err(pos) => {
                    ids.insert(pos, id.0);
                    true
                }
            },
            Repr::Dense { words, len } => {
                let (w, bit) = (id.index() / 64, 1u64 << (id.index() % 64));
                let fresh = words[w] & bit == 0;
                words[w] |= bit;
                *len += usize::from(fresh);
                fresh
            }
        };
        if let Repr::Sparse(ids) = &self.repr {
            if ids.len() > Self::dense_threshold(universe) {
                let mut words = vec![0u64; universe.div_ceil(64)];
                for &i in ids {
                    words[i as usize / 64] |= 1 << (i % 64);
                }
                self.repr = Repr::Dense { words, len: ids.len() };
            }
        }
        added
    }

    /// Makes room for `additional` more symbols, so that subscribing to several at once
    /// allocates once and no more than they need (a vector grown one insert at a time would hold
    /// up to twice that).
    pub fn reserve(&mut self, additional: usize, universe: usize) {
        if let Repr::Sparse(ids) = &mut self.repr {
            if ids.len() + additional <= Self::dense_threshold(universe) {
                ids.reserve_exact(additional);
            }
        }
    }

    /// Removes `id`; returns whether it was there.
    pub fn remove(&mut self, id: SymbolId) -> bool {
        let removed = match &mut self.repr {
            Repr::Sparse(ids) => match ids.binary_search(&id.0) {
                Ok(pos) => {
                    ids.remove(pos);
                    if ids.len() < ids.capacity() / 4 {
                        ids.shrink_to(ids.len() * 2);
                    }
                    true
                }
                Err(_) => false,
            },
            Repr::Dense { words, len } => {
                let (w, bit) = (id.index() / 64, 1u64 << (id.index() % 64));
                match words.get_mut(w) {
                    Some(word) if *word & bit != 0 => {
                        *word &= !bit;
                        *len -= 1;
                        true
                    }
                    _ => false,
                }
            }
        };
        if let Repr::Dense { words, len } = &self.repr {
            let universe = words.len() * 64;
            if *len < Self::dense_threshold(universe) / 2 {
                self.repr = Repr::Sparse(self.iter().map(|s| s.0).collect());
            }
        }
        removed
    }

    pub fn contains(&self, id: SymbolId) -> bool {
        match &self.repr {
            Repr::Sparse(ids) => ids.binary_search(&id.0).is_ok(),
            Repr::Dense { words, .. } => words.get(id.index() / 64).is_some_and(|w| w & (1 << (id.index() % 64)) != 0),
        }
    }

    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Sparse(ids) => ids.len(),
            Repr::Dense { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The symbols in ascending id order.
    pub fn iter(&self) -> impl Iterator<Item = SymbolId> + '_ {
        let (sparse, dense) = match &self.repr {
            Repr::Sparse(ids) => (Some(ids.iter().map(|&i| SymbolId(i))), None),
            Repr::Dense { words, .. } => (
                None,
                Some(
                    words
                        .iter()
                        .enumerate()
                        .flat_map(|(w, &word)| BitIter(word).map(move |bit| SymbolId((w * 64 + bit) as u32))),
                ),
            ),
        };
        sparse.into_iter().flatten().chain(dense.into_iter().flatten())
    }

    /// Heap bytes held by the set.
    pub fn heap_bytes(&self) -> usize {
        match &self.repr {
            Repr::Sparse(ids) => ids.capacity() * 4,
            Repr::Dense { words, .. } => words.capacity() * 8,
        }
    }

    /// Empties the set and returns what it held.
    pub fn take(&mut self) -> SymbolSet {
        std::mem::take(self)
    }
}

struct BitIter(u64);

impl Iterator for BitIter {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

/// How far up a paused subscription's channels are kept (see [`SubscriptionIndex::pause`]).
const PAUSED_SHIFT: u8 = 2;

/// Key of a connection inside one reactor.
pub type ConnKey = u32;

/// Symbol -> the connections of one reactor subscribed to it, with the [`Channels`] each asked
/// for.
///
/// A subscription can be *paused* ([`SubscriptionIndex::pause`]): it keeps its channels, but the
/// fan-out offers it nothing (its entry in [`SubscriptionIndex::channels`] admits no event) until
/// it is unpaused. A resume replaying the history is paused: the replay reads the live events
/// from the history too, and the subscription goes live once the replay has caught up. The
/// channels of a paused entry are kept two bits up, so the fan-out's check is unchanged.
///
/// Kept in step with the connections' [`SymbolSet`]s by the reactor: every insert or remove in a
/// set is mirrored here, and a closing connection removes itself from every symbol it held. The
/// channels live only here, in a vector parallel to the subscribers', so the fan-out reads them
/// in the same pass.
#[derive(Debug, Clone)]
pub struct SubscriptionIndex {
    subscribers: Vec<Vec<ConnKey>>,
    channels: Vec<Vec<Channels>>,
    total: usize,
}

impl SubscriptionIndex {
    pub fn new(symbols: usize) -> Self {
        Self { subscribers: vec![Vec::new(); symbols], channels: vec![Vec::new(); symbols], total: 0 }
    }

    /// Adds `conn` to `symbol`'s subscribers on both channels.
    pub fn add(&mut self, symbol: SymbolId, conn: ConnKey) {
        self.add_on(symbol, conn, Channels::ALL);
    }

    /// Adds `conn` to `symbol`'s subscribers on `channels`.
    pub fn add_on(&mut self, symbol: SymbolId, conn: ConnKey, channels: Channels) {
        self.subscribers[symbol.index()].push(conn);
        self.channels[symbol.index()].push(channels);
        self.total += 1;
    }

    /// Removes `conn` from `symbol`'s subscribers (order is not kept).
    pub fn remove(&mut self, symbol: SymbolId, conn: ConnKey) {
        let subs = &mut self.subscribers[symbol.index()];
        if let Some(pos) = subs.iter().position(|&c| c == conn) {
            subs.swap_remove(pos);
            self.channels[symbol.index()].swap_remove(pos);
            self.total -= 1;
        }
    }

    /// The connections subscribed to `symbol`.
    pub fn subscribers(&self, symbol: SymbolId) -> &[ConnKey] {
        &self.subscribers[symbol.index()]
    }

    /// The channels of each of [`SubscriptionIndex::subscribers`], in the same order, as the
    /// fan-out sees them (a paused entry admits nothing).
    pub fn channels(&self, symbol: SymbolId) -> &[Channels] {
        &self.channels[symbol.index()]
    }

    fn position(&self, symbol: SymbolId, conn: ConnKey) -> Option<usize> {
        self.subscribers[symbol.index()].iter().position(|&c| c == conn)
    }

    /// The channels `conn` holds of `symbol`, if it is subscribed (paused or not).
    pub fn channels_of(&self, symbol: SymbolId, conn: ConnKey) -> Option<Channels> {
        let pos = self.position(symbol, conn)?;
        let Channels(bits) = self.channels[symbol.index()][pos];
        Some(Channels((bits | bits >> PAUSED_SHIFT) & Channels::ALL.0))
    }

    /// Sets the channels `conn` holds of `symbol` (paused, it stays paused); false if it is not
    /// subscribed.
    pub fn set_channels(&mut self, symbol: SymbolId, conn: ConnKey, channels: Channels) -> bool {
        debug_assert!(!channels.is_empty());
        let Some(pos) = self.position(symbol, conn) else { return false };
        let entry = &mut self.channels[symbol.index()][pos];
        let paused = entry.0 & !Channels::ALL.0 != 0;
        *entry = if paused { Channels(channels.0 << PAUSED_SHIFT) } else { channels };
        true
    }

    /// Pauses `conn`'s subscription to `symbol`: the fan-out offers it nothing until
    /// [`SubscriptionIndex::unpause`]. False if it is not subscribed.
    pub fn pause(&mut self, symbol: SymbolId, conn: ConnKey) -> bool {
        let Some(channels) = self.channels_of(symbol, conn) else { return false };
        let pos = self.position(symbol, conn).unwrap_or_default();
        self.channels[symbol.index()][pos] = Channels(channels.0 << PAUSED_SHIFT);
        true
    }

    /// Ends a [`SubscriptionIndex::pause`]: the next event of `symbol` is offered to `conn`.
    pub fn unpause(&mut self, symbol: SymbolId, conn: ConnKey) -> bool {
        let Some(channels) = self.channels_of(symbol, conn) else { return false };
        let pos = self.position(symbol, conn).unwrap_or_default();
        self.channels[symbol.index()][pos] = channels;
        true
    }

    /// Whether `conn`'s subscription to `symbol` is paused.
    pub fn is_paused(&self, symbol: SymbolId, conn: ConnKey) -> bool {
        self.position(symbol, conn).is_some_and(|pos| self.channels[symbol.index()][pos].0 & !Channels::ALL.0 != 0)
    }

    /// Number of (symbol, connection) pairs.
    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn small_sets_stay_sparse_and_grow_into_a_bitmap() {
        let universe = 10_000;
        let mut set = SymbolSet::new();
        for i in 0..20 {
            assert!(set.insert(SymbolId(i * 7), universe));
        }
        assert!(!set.insert(SymbolId(7), universe));
        assert!(set.heap_bytes() <= 32 * 4, "a few dozen symbols stay a small vector");
        for i in 0..1_000 {
            set.insert(SymbolId(i), universe);
        }
        assert!(set.heap_bytes() <= universe / 8 + 8, "a large set is a bitmap");
        // The 20 multiples of 7 were all below 1,000 already.
        assert_eq!(set.len(), 1_000);
        for i in 0..1_000 {
            set.remove(SymbolId(i));
        }
        assert!(set.is_empty());
        assert_eq!(set.heap_bytes(), 0, "an emptied set goes back to a vector");
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((any::<bool>(), 0u32..600), 0..800)) {
            let universe = 600;
            let mut set = SymbolSet::new();
            let mut model = BTreeSet::new();
            for (insert, id) in ops {
                if insert {
                    prop_assert_eq!(set.insert(SymbolId(id), universe), model.insert(id));
                } else {
                    prop_assert_eq!(set.remove(SymbolId(id)), model.remove(&id));
                }
                prop_assert_eq!(set.len(), model.len());
            }
            let listed: Vec<u32> = set.iter().map(|s| s.0).collect();
            let expected: Vec<u32> = model.iter().copied().collect();
            prop_assert_eq!(listed, expected);
            for id in 0..universe as u32 {
                prop_assert_eq!(set.contains(SymbolId(id)), model.contains(&id));
            }
        }
    }

    #[test]
    fn index_tracks_subscribers() {
        let mut index = SubscriptionIndex::new(3);
        index.add(SymbolId(1), 10);
        index.add(SymbolId(1), 11);
        index.add(SymbolId(2), 10);
        assert_eq!(index.subscribers(SymbolId(1)), &[10, 11]);
        index.remove(SymbolId(1), 10);
        index.remove(SymbolId(1), 99);
        assert_eq!(index.subscribers(SymbolId(1)), &[11]);
        assert_eq!(index.subscribers(SymbolId(0)), &[] as &[ConnKey]);
        assert_eq!(index.total(), 2);
    }

    #[test]
    fn index_keeps_each_subscribers_channels_through_removals() {
        let mut index = SubscriptionIndex::new(2);
        index.add_on(SymbolId(1), 10, Channels::TRADES);
        index.add(SymbolId(1), 11);
        index.add_on(SymbolId(1), 12, Channels::QUOTES);
        index.remove(SymbolId(1), 10);
        // The last subscriber took the removed one's place, with its own channels.
        assert_eq!(index.subscribers(SymbolId(1)), &[12, 11]);
        assert_eq!(index.channels(SymbolId(1)), &[Channels::QUOTES, Channels::ALL]);
        assert_eq!(index.channels_of(SymbolId(1), 11), Some(Channels::ALL));
        assert_eq!(index.channels_of(SymbolId(1), 10), None);
        assert!(index.set_channels(SymbolId(1), 11, Channels::TRADES));
        assert!(!index.set_channels(SymbolId(0), 11, Channels::TRADES));
        assert_eq!(index.channels(SymbolId(1)), &[Channels::QUOTES, Channels::TRADES]);
    }

    #[test]
    fn a_paused_subscription_keeps_its_channels_and_admits_nothing() {
        let trade = TickKind::Trade { price: 1, size: 1 };
        let quote = TickKind::Quote { bid: 1, bid_size: 1, ask: 2, ask_size: 1 };
        let mut index = SubscriptionIndex::new(2);
        index.add_on(SymbolId(1), 10, Channels::TRADES);
        index.add(SymbolId(1), 11);
        assert!(index.pause(SymbolId(1), 10));
        assert!(!index.pause(SymbolId(0), 10), "not subscribed");
        assert!(index.is_paused(SymbolId(1), 10) && !index.is_paused(SymbolId(1), 11));
        assert_eq!(index.channels_of(SymbolId(1), 10), Some(Channels::TRADES));
        let admitted = |index: &SubscriptionIndex, kind: &TickKind| -> Vec<bool> {
            index.channels(SymbolId(1)).iter().map(|c| c.admits(kind)).collect()
        };
        assert_eq!(admitted(&index, &trade), [false, true]);
        assert!(index.set_channels(SymbolId(1), 10, Channels::ALL));
        assert!(index.is_paused(SymbolId(1), 10), "new channels, still paused");
        assert_eq!(admitted(&index, &quote), [false, true]);
        assert!(index.unpause(SymbolId(1), 10));
        assert_eq!(index.channels_of(SymbolId(1), 10), Some(Channels::ALL));
        assert_eq!(admitted(&index, &quote), [true, true]);
        assert!(!index.is_paused(SymbolId(1), 10));
    }

    #[test]
    fn channels_admit_their_kind_and_combine_as_sets() {
        let trade = TickKind::Trade { price: 1, size: 1 };
        let quote = TickKind::Quote { bid: 1, bid_size: 1, ask: 2, ask_size: 1 };
        assert!(Channels::TRADES.admits(&trade) && !Channels::TRADES.admits(&quote));
        assert!(Channels::QUOTES.admits(&quote) && !Channels::QUOTES.admits(&trade));
        assert!(Channels::ALL.admits(&trade) && Channels::ALL.admits(&quote));
        assert_eq!(Channels::TRADES.union(Channels::QUOTES), Channels::ALL);
        assert_eq!(Channels::ALL.without(Channels::TRADES), Channels::QUOTES);
        assert!(Channels::ALL.without(Channels::ALL).is_empty());
        assert!(Channels::ALL.contains(Channels::QUOTES) && !Channels::QUOTES.contains(Channels::ALL));
        assert_eq!(Channels::ALL.names().collect::<Vec<_>>(), ["trades", "quotes"]);
        assert_eq!(Channels::parse("quotes"), Some(Channels::QUOTES));
        assert_eq!(Channels::parse("Quotes"), None);
    }
}
