//! Upstream sources and the ingest thread.
//!
//! A source produces normalized [`Tick`](tickgate_core::Tick)s; the ingest thread stamps each
//! with its per-symbol sequence number, records it in the last-value cache, encodes its frame
//! once, and hands it to every reactor over bounded channels. The feed never blocks on a
//! reactor: see [`fanout`].

pub mod exchange;
pub mod exchange_feed;
pub mod fanout;
pub mod ingest;
mod json;
pub mod normalize;
pub mod replay;
pub mod resolve;
pub mod sim;
pub mod source;
pub mod tcp;
pub mod tls;
pub mod upstream;
pub mod upstream_seq;
