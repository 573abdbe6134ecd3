//! Counters each reactor publishes for metrics, health checks and tests.
//!
//! A reactor counts into plain locals and publishes them here at each housekeeping pass (about
//! every 50 ms; one relaxed atomic add per counter), so the per-message path touches no shared
//! memory.
//! Events that are not per message (closes, HTTP answers, commands) count straight into atomics.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

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
        /// Quotes held back by their subscription's rate cap (superseded by a later one).
        throttled,
        /// Events not queued for a slow client (announced later with a gap).
        dropped,
        /// Waits of a connection whose bandwidth cap held bytes back, each until the cap allows
        /// the next write.
        bandwidth_waits,
        /// Per-client frames queued (replies, snapshots, gaps).
        replies,
        /// `writev` calls that wrote something.
        write_calls,
        /// Whole frames completed by those calls (frames per call = this / write_calls).
        frames_written,
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
        /// Gap messages sent to clients of a cluster edge for events it could not read from the bus.
        bus_gaps_sent,
        /// `upstream_gap` messages sent to clients (events the upstream itself skipped).
        upstream_gaps_sent,
        /// HTTP requests answered without an upgrade (health checks, 400s, 404s).
        http_responses,
        /// Loop turns (a reactor that stops turning is stuck).
        turns,
        /// Waits before a write pass, of a busy reactor holding frames back to write them
        /// together (`server.write_hold_max_us`).
        write_holds,
        /// Client messages refused for the rate limit (answered with error rate_limited).
        rate_limited,
        /// Subscriptions refused for the per-connection maximum.
        subscriptions_refused,
        /// Connections refused by a connection limit (503 or 429).
        connections_refused,
        /// Of those, the ones reset at once, unanswered: too many refused connections were
        /// already being answered.
        connections_refused_unanswered,
        /// Pings sent to silent connections.
        pings_sent,
        /// Tokens refused, or not presented in time.
        auth_failures,
        /// Subscriptions refused for lack of entitlement.
        not_entitled,
        /// TLS handshakes completed.
        tls_handshakes,
        /// TLS handshakes or records rustls refused (garbage, a truncated or unsupported
        /// ClientHello, a bad record), and clients that were neither TLS nor HTTP on a TLS port.
        tls_failures,
        /// Plain HTTP requests on a TLS port (answered 400 in plain HTTP).
        tls_plain_http,
        /// TLS ClientHellos on a plain port (answered with a handshake_failure alert).
        tls_on_plain_port,
        /// PROXY protocol headers taken (`server.proxy_protocol`).
        proxy_headers,
        /// Connections refused for a missing or malformed PROXY protocol header.
        proxy_headers_refused,
        /// Upgrades whose client address came from a trusted proxy's forwarding headers.
        forwarded_addresses,
        /// Upgrades from a trusted proxy whose forwarding header held a hop, right of the
        /// client, that is not an address (the nearest trusted hop stood in).
        forwarded_unusable,
        /// Resumes answered with every event after the client's seq (none when it was current).
        resumes_whole,
        /// Resumes answered with a gap "history" and a snapshot (the history did not reach back).
        resumes_history,
        /// Resumes answered with a gap "ahead" and a snapshot (the client's seq was past ours).
        resumes_ahead,
        /// Events queued by resumes, from the history.
        replayed,
        /// Upgrades that agreed to permessage-deflate.
        deflate_negotiated,
        /// Tick frames queued compressed: the shared compressed frame (deliveries counts them too).
        deflated_deliveries,
        /// Connections closed with 1009 because a compressed message inflated past
        /// limits.max_message_size (a deflate bomb), or came compressed past it.
        inflate_too_big,
        /// Replays cut short by the history evicting events the client had not been sent yet
        /// (answered with a gap "history" and a snapshot).
        replays_cut,
        /// Resumes answered with the events after the client's seq read from the stream, then
        /// the history (an edge).
        resumes_stream,
        /// Resumes the stream was not asked for: this reactor or connection had its most
        /// fetches in flight, or the fetch thread's queue was full (a gap "history").
        resume_fetches_refused,
        /// Fetches from the stream that failed: the bus down, a timeout, an error.
        resume_fetches_failed,
        /// Answers from the stream for a subscription that went away or resumed again meanwhile.
        resume_fetches_stale,
    }
}

/// HTTP statuses counted for requests answered without an upgrade.
pub const HTTP_STATUSES: [u16; 11] = [200, 400, 401, 403, 404, 405, 408, 429, 431, 500, 503];

/// Client command ops counted, the last for commands that could not be parsed.
pub const COMMAND_OPS: [&str; 6] =
    ["subscribe", "unsubscribe", "list_symbols", "list_subscriptions", "auth", "invalid"];

/// A histogram of nanoseconds, 1 µs to 60 s, two significant digits (1%).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 2).expect("valid histogram bounds")
}

/// Upper bounds of the latency histograms' buckets, in ns: 25 µs to 10 s (the `le` labels of
/// `/metrics`, in seconds), chosen for fan-out latencies from tens of microseconds on a quiet
/// host to seconds for a reactor far behind.
pub const LATENCY_BUCKETS_NS: [u64; 18] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A Prometheus histogram of one latency, cumulative since start: a reactor adds each second's
/// [`latency_histogram`] into it (a few relaxed atomic adds a second, never per message), and
/// /metrics sums the reactors' and prints `_bucket`, `_sum` and `_count`.
#[derive(Debug, Default)]
pub struct LatencyBuckets {
    /// Values at most each bound of [`LATENCY_BUCKETS_NS`] (not cumulative over buckets).
    pub buckets: [AtomicU64; LATENCY_BUCKETS_NS.len()],
    /// Every value, the ones past the last bound included.
    pub count: AtomicU64,
    pub sum_ns: AtomicU64,
}

impl LatencyBuckets {
    /// Adds one second's histogram.
    pub fn add(&self, second: &Histogram<u64>) {
        let mut buckets = [0u64; LATENCY_BUCKETS_NS.len()];
        let mut sum = 0u64;
        for v in second.iter_recorded() {
            let (value, n) = (second.highest_equivalent(v.value_iterated_to()), v.count_at_value());
            sum = sum.saturating_add(value.saturating_mul(n));
            if let Some(i) = LATENCY_BUCKETS_NS.iter().position(|&bound| value <= bound) {
                buckets[i] += n;
            }
        }
        for (bucket, n) in self.buckets.iter().zip(buckets) {
            if n > 0 {
                bucket.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(second.len(), Ordering::Relaxed);
        self.sum_ns.fetch_add(sum, Ordering::Relaxed);
    }
}

/// Counters and gauges of one reactor.
#[derive(Debug, Default)]
pub struct ReactorStats {
    pub counters: ReactorCounters,
    /// Connections closed, by [`CloseReason::index`](crate::connection::CloseReason::index).
    pub closed_by_reason: [AtomicU64; crate::connection::CloseReason::ALL.len()],
    /// HTTP responses by status, in the order of [`HTTP_STATUSES`].
    pub http_by_status: [AtomicU64; HTTP_STATUSES.len()],
    /// Client commands by op ([`COMMAND_OPS`]) and result (0 ok, 1 error).
    pub commands: [[AtomicU64; 2]; COMMAND_OPS.len()],
    /// Ingest-to-kernel latency of deliveries, since start.
    pub delivery_latency: LatencyBuckets,
    /// Time to fan out and write one batch of ticks, since start.
    pub fanout_time: LatencyBuckets,
    /// Ticks waiting in the reactor's channel (gauge).
    pub channel_depth: AtomicU64,
    /// Wall-clock ns of the reactor's last housekeeping pass: a reactor whose heartbeat is old
    /// is stuck.
    pub heartbeat_ns: AtomicU64,
    /// Open connections (gauge).
    pub connections: AtomicU64,
    /// Subscriptions held by its connections (gauge).
    pub subscriptions: AtomicU64,
    /// Bytes queued for its connections and not yet written (gauge).
    pub queued_bytes: AtomicU64,
    /// Connections with a bandwidth cap, those of them the cap was holding back at the last
    /// sweep, and the bytes queued for those (gauges).
    pub bandwidth_capped: AtomicU64,
    pub bandwidth_held: AtomicU64,
    pub bandwidth_held_bytes: AtomicU64,
    /// Subscriptions under a rate cap (`max_rate` or `limits.max_update_rate`) (gauge).
    pub rate_capped_subscriptions: AtomicU64,
    /// permessage-deflate offers declined, by [`Decline::index`](tickgate_protocol::deflate::Decline::index).
    pub deflate_declined: [AtomicU64; tickgate_protocol::deflate::Decline::ALL.len()],
    /// Per-connection frames compressed (replies, snapshots, symbol lists, echoes), and their
    /// payload bytes before and after; stored whole at each housekeeping pass.
    pub deflate_own: [AtomicU64; 3],
    /// Client messages inflated, and their bytes compressed and inflated; stored the same way.
    pub inflated: [AtomicU64; 3],
    /// Bytes and events its resume history holds (gauges).
    pub history_bytes: AtomicU64,
    pub history_events: AtomicU64,
    /// Resumes being replayed (gauge).
    pub replays: AtomicU64,
}
