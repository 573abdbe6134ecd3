//! Counters each reactor publishes for metrics, health checks and tests.
//!
//! A reactor counts into plain locals during a loop turn and publishes them here once per turn
//! (one relaxed atomic add per counter), so the per-message path touches no shared memory.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name { $($(#[$fmeta])* pub $field: AtomicU64,)* }

        /// The same counters as plain numbers, gathered during one loop turn.
        #[derive(Debug, Default, Clone, Copy)]
        pub struct TurnCounters { $(pub $field: u64,)* }

        impl $name {
            /// Adds one turn's counts.
            pub fn add(&self, turn: &TurnCounters) {
                $(if turn.$field != 0 { self.$field.fetch_add(turn.$field, Ordering::Relaxed); })*
            }
        }
    };
}

counters! {
    /// Cumulative counters of one reactor.
    ReactorCounters {
        /// TCP connections accepted.
        accepted,
        /// Connections upgraded to WebSocket.
        upgraded,
        /// Connections closed, for any reason.
        closed,
        /// Tick frames queued to clients (one per subscriber per tick, less what was conflated
        /// or dropped).
        deliveries,
        /// Quotes that replaced a superseded quote queued for a slow client.
        conflated,
        /// Events not queued for a slow client (announced later with a gap).
        dropped,
        /// Per-client frames queued (replies, snapshots, gaps).
        replies,
        /// `writev` calls that wrote something.
        write_calls,
        /// Bytes handed to the kernel.
        bytes_written,
        /// Client commands received.
        commands,
        /// Commands answered with an error.
        command_errors,
        /// Connections closed with 1002, 1007 or 1009 for breaking the protocol.
        protocol_closes,
        /// Connections closed with 1008 for falling too far behind.
        slow_consumer_closes,
        /// Gap messages sent to slow clients for events their policy dropped.
        slow_gaps_sent,
        /// Gap messages sent to clients after this reactor fell behind the feed.
        overload_gaps_sent,
        /// HTTP requests answered without an upgrade (health checks, 400s, 404s).
        http_responses,
        /// Loop turns (a reactor that stops turning is stuck).
        turns,
    }
}

/// Counters and gauges of one reactor.
#[derive(Debug, Default)]
pub struct ReactorStats {
    pub counters: ReactorCounters,
    /// Open connections (gauge).
    pub connections: AtomicU64,
    /// Subscriptions held by its connections (gauge).
    pub subscriptions: AtomicU64,
    /// Bytes queued for its connections and not yet written (gauge).
    pub queued_bytes: AtomicU64,
}
