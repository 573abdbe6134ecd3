//! The bus's counters, read by /metrics.

use std::sync::atomic::{AtomicBool, AtomicU64};

use crate::payload::Reject;

/// Counters of the bus thread (single writer) and of the publisher's sink.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Set while the NATS connection is up (and, on an edge, the stream is being read).
    pub connected: AtomicBool,
    /// Reconnections to NATS after a loss.
    pub reconnects: AtomicU64,
    /// Ticks published and acknowledged by the stream (publisher).
    pub published: AtomicU64,
    /// Publishes that failed (publisher): not acknowledged, or refused by the stream.
    pub publish_errors: AtomicU64,
    /// Ticks not published because the publish queue was full (publisher).
    pub publish_dropped: AtomicU64,
    /// Ticks read from the stream and handed on (edge).
    pub received: AtomicU64,
    /// Bus messages rejected (edge), by [`Reject::index`].
    pub rejected: [AtomicU64; Reject::REASONS.len()],
    /// Ticks read with a seq not above their symbol's last (a repeat on the stream): dropped.
    pub repeats: AtomicU64,
    /// Set once an edge has read the stream up to where it ended when the edge started (its
    /// replay into the resume history is done); a publisher sets it at start.
    pub caught_up: AtomicBool,
    /// Catch-ups from the stream after a loss of the bus (edge).
    pub catch_ups: AtomicU64,
    /// Messages of the stream not yet read by this edge.
    pub lag_messages: AtomicU64,
    /// Wall-clock age of the last tick read, at the time it was read, in ns (edge).
    pub lag_ns: AtomicU64,
    /// Seq skips announced as `gap` (edge): ticks sequenced but never read here.
    pub gaps: AtomicU64,
    /// Publisher restarts announced as `upstream_reset` (edge).
    pub publisher_restarts: AtomicU64,
    /// Resumes read from the stream (edge), by outcome ([`crate::fetch::OUTCOMES`]).
    pub resume_fetches: [AtomicU64; crate::fetch::OUTCOMES.len()],
    /// Events those reads returned.
    pub resume_fetched_events: AtomicU64,
}
