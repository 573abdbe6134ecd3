//! Sans-IO state of the tickgate gateway.
//!
//! This crate holds the plain data structures that the rest of tickgate drives: the symbol
//! table, the normalized [`Tick`] with exact fixed-point prices, the per-symbol
//! [`Sequencer`] and [`LastValueCache`], the per-connection [`SymbolSet`] and the per-reactor
//! [`SubscriptionIndex`], the per-connection [`OutboundQueue`] of shared [`Frame`]s, and the
//! [`Outbox`] that applies a connection's byte budget and slow-consumer [`Policy`].
//!
//! It never touches a socket, a thread or a clock: time, bytes and events come in as arguments,
//! so everything here is tested without a network.

pub mod bandwidth;
pub mod decimal;
pub mod frame;
pub mod history;
pub mod market;
pub mod outbound;
pub mod outbox;
pub mod rate;
pub mod subscription;
pub mod symbol;
pub mod throttle;
pub mod tick;

pub use bandwidth::BandwidthCap;
pub use decimal::{DecimalError, format_fixed, parse_fixed};
pub use frame::Frame;
pub use history::{History, HistoryLimits, Since};
pub use market::{LastValueCache, LastValues, Sequencer};
pub use outbound::{EntryId, OutboundQueue};
pub use outbox::{Budget, MissedSpan, Outbox, OverHardLimit, Policy, Verdict};
pub use rate::TokenBucket;
pub use subscription::{Channels, SubscriptionIndex, SymbolSet};
pub use symbol::{AssetClass, SymbolError, SymbolId, SymbolInfo, SymbolTable};
pub use throttle::{QuoteVerdict, Release, SlotWheel, Throttles};
pub use tick::{Tick, TickKind};
