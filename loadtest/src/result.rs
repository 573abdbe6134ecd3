//! What one run measured: every figure the verdict judges and the JSON keeps.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::deflate::WireFigures;
use crate::resume::ResumeCounts;
use crate::tracker::SeqCounts;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// From a histogram recorded in nanoseconds, in milliseconds.
    pub fn ms_from_ns(h: &Histogram<u64>) -> Self {
        let mut p = Self::from_ns(h);
        for v in [&mut p.p50, &mut p.p90, &mut p.p99, &mut p.p999, &mut p.max, &mut p.mean] {
            *v /= 1000.0;
        }
        p
    }

    /// From a histogram recorded in nanoseconds.
    pub fn from_ns(h: &Histogram<u64>) -> Self {
        let us = |v: u64| v as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// Figures of a server process over the window.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct ServerFigures {
    pub cpu_s: f64,
    /// CPU nanoseconds per delivered message.
    pub cpu_ns_per_delivery: f64,
    pub rss_before_connect: u64,
    pub rss_connected: u64,
    /// (RSS with every client connected and subscribed, after the warm-up − RSS before) /
    /// connections.
    pub rss_per_connection: f64,
    pub rss_end: u64,
}

/// Where the reading clients' subscriptions stood once the window was over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PairCounts {
    /// (client, symbol) subscriptions held by the reading clients.
    pub held: u64,
    /// Received or announced up to the highest seq any reading client saw of the symbol in the
    /// window.
    pub caught_up: u64,
    /// Short of it, even after the drain.
    pub behind: u64,
    /// No snapshot, event or gap ever came.
    pub never_started: u64,
}

/// What became of the clients that stopped reading for the window, read again after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlowFates {
    pub clients: u64,
    /// Still connected, nothing missed.
    pub kept: u64,
    /// Still connected, told of what they missed (gaps, conflated quotes).
    pub told: u64,
    /// Closed with 1008, or ended during the close linger.
    pub cut: u64,
    /// Closed any other way.
    pub unaccounted: u64,
    /// Of the kept and told, those short of the readers' last seq of a symbol (as of the
    /// window's end) after the drain: the server stopped sending to them without a word.
    #[serde(default)]
    pub behind: u64,
}

/// The most silent of the stale symbols (see [`crate::silence`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StaleSymbol {
    pub symbol: String,
    /// Seconds without an event to any reader before the window's end.
    pub silent_s: f64,
    /// The symbol's mean interval between events, as the readers saw it.
    pub interval_s: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunResult {
    pub connections: usize,
    pub connected: usize,
    pub failed_connects: usize,
    pub connect_ms: Percentiles,
    pub connects_per_s: f64,
    pub window_s: f64,
    pub slow_clients: usize,
    /// Events (trades and quotes) delivered to the reading clients in the window.
    pub delivered: u64,
    /// Of those, the ones whose seq was read and checked against a subscription.
    pub seq_tracked: u64,
    pub delivered_per_s: f64,
    pub per_client_per_s_min: f64,
    pub per_client_per_s_median: f64,
    /// gw_ts to receipt, reading clients, in the window; `count` is the number of events timed.
    pub latency_us: Percentiles,
    /// Sequence accounting of the reading clients, from the window's start to the drain's end.
    pub seq: SeqCounts,
    /// The same for the stalled clients.
    pub slow_seq: SeqCounts,
    pub pairs: PairCounts,
    pub slow: SlowFates,
    /// Messages that are not a JSON object, of an unknown type, or without a field their type
    /// needs (a snapshot's seq, a gap's range).
    pub unreadable: u64,
    /// Events of the window whose `gw_ts` was later than their receipt (not timed).
    pub stamped_ahead: u64,
    /// Error replies, by code, over the whole run.
    pub errors: BTreeMap<String, u64>,
    /// The slow-client policy the server announced in its `subscribed` replies ("mixed" if they
    /// differed); None if it never said.
    pub policy: Option<String>,
    /// The policy the clients asked for (`--policy`); None: the server's default.
    pub asked_policy: Option<String>,
    /// Unsubscribes of clients still open that were never answered, even after the drain.
    pub unanswered_unsubscribes: u64,
    /// Seqs some client received as a trade that another client was told were quotes it
    /// superseded (`conflated`).
    pub hidden_trades: u64,
    /// Seqs told superseded that no client received (nothing shows they were quotes), and
    /// spans that could not be marked (memory bound hit).
    pub conflation_unchecked: u64,
    /// Messages fully parsed as JSON (every non-event message, one event in 64 per client)
    /// that were invalid or disagreed with the fast scanner.
    pub json_mismatches: u64,
    /// Symbols held by the readers with no event to any of them for far longer than their pace
    /// before the window's end (see [`crate::silence`]).
    pub stale_symbols: u64,
    pub stalest_symbol: Option<StaleSymbol>,
    /// Close codes the server sent to reading clients, by code.
    pub closes: BTreeMap<u16, u64>,
    /// Reading clients whose connection ended without a close frame.
    pub dropped: u64,
    /// Subscription changes made during the window.
    pub churns: u64,
    pub server: Option<ServerFigures>,
    pub loadtest_cpu_s: f64,
    /// Load generator CPU over the window as a share of one core (near 1.0: saturated).
    pub loadtest_core_share: f64,
    pub tcp_socket_memory: Option<u64>,
    /// Bytes on the wire per event, a snapshot and a symbol list, and the inflating done here.
    pub wire: WireFigures,
    /// How the drops and resumes went (`--resume-share`), summed over the reading clients;
    /// None when the run dropped no one.
    pub resume: Option<ResumeCounts>,
    /// From a drop to the new connection's upgrade, in ms.
    pub reconnect_ms: Percentiles,
    /// The latency histogram behind `latency_us`: `[value in ns, count]` of every bucket that
    /// has any, so that runs of several processes can be combined exactly
    /// (`tickgate-loadtest combine`).
    pub latency_ns_buckets: Vec<(u64, u64)>,
}

/// The non-empty buckets of a histogram, as `[value, count]`.
pub fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
}
