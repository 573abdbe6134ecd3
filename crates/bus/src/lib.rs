//! tickgate on a bus: NATS JetStream carries the one sequenced stream of a cluster.
//!
//! A **publisher** runs the sources and the sequencer as a standalone gateway does, and hands
//! every sequenced tick to [`publisher::PublisherSink`], which publishes it to the stream from
//! a thread of its own. An **edge** has no sources: [`edge::BusSource`] is its one source, fed
//! by the stream, and its ingest thread keeps each tick's `seq` and `gw_ts`
//! ([`tickgate_feed::ingest::Sequencing::Keep`]), so every edge builds byte-identical frames.
//!
//! The NATS client (async-nats) runs on a current-thread tokio runtime owned by the bus
//! thread; it talks to the ingest thread through bounded channels only. This crate never runs
//! on a reactor thread and never blocks the ingest thread.

pub mod config;
pub mod connect;
pub mod edge;
pub mod fetch;
pub mod payload;
pub mod publisher;
mod stats;

pub use config::{BusConfig, BusRole};
pub use stats::BusStats;

/// Why the bus could not be started or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot reach NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("NATS credentials file {path}: {source}")]
    Credentials { path: std::path::PathBuf, source: std::io::Error },
    #[error("JetStream stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("reading the last published seq of {symbol}: {reason}")]
    LastSeq { symbol: String, reason: String },
    #[error("the bus thread: {0}")]
    Thread(std::io::Error),
    #[error("the bus thread ended before it started")]
    Ended,
}
