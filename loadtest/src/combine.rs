//! One report from several load-generator processes run at the same time against the same
//! cluster (one process holds at most ~19,900 sockets): counts summed, latency from the merged
//! histograms, and the verdict judged again on the whole.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::report::{Step, Sweep};
use crate::result::{PairCounts, Percentiles, RunResult, ServerFigures, SlowFates, buckets};
use crate::resume::ResumeCounts;
use crate::verdict::{self, Criteria, Status};

/// Why results cannot be combined.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CombineError {
    #[error("nothing to combine")]
    Empty,
    #[error("{0}: {1} steps, the first file has {2}: combine runs of the same shape")]
    Steps(String, usize, usize),
    #[error("{0}: {1} symbols per client of {2}, the first file has {3} of {4}")]
    Shape(String, usize, usize, usize, usize),
    #[error("{0}, step {1}: no latency histogram (written before combining was possible); run it again")]
    NoHistogram(String, usize),
    #[error("{0}, step {1}: {2}")]
    Unreadable(String, usize, String),
}

/// Combines `sweeps` (each the JSON of one process; `names` name them in errors) into one, named
/// `server`.
pub fn combine(sweeps: &[Sweep], names: &[String], server: &str) -> Result<Sweep, CombineError> {
    let first = sweeps.first().ok_or(CombineError::Empty)?;
    let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| format!("file {}", i + 1));
    for (i, s) in sweeps.iter().enumerate() {
        if s.steps.len() != first.steps.len() {
            return Err(CombineError::Steps(name(i), s.steps.len(), first.steps.len()));
        }
        if (s.symbols_per_client, s.universe) != (first.symbols_per_client, first.universe) {
            return Err(CombineError::Shape(
                name(i),
                s.symbols_per_client,
                s.universe,
                first.symbols_per_client,
                first.universe,
            ));
        }
    }
    let mut steps = Vec::with_capacity(first.steps.len());
    for k in 0..first.steps.len() {
        let parts: Vec<&Step> = sweeps.iter().map(|s| &s.steps[k]).collect();
        let expected: f64 = parts.iter().map(|p| p.expected_per_s).sum();
        let rate = parts[0].rate;
        let errored: Vec<String> = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.verdict.status == Status::Errored)
            .map(|(i, p)| format!("{}: {}", name(i), p.verdict.reasons.join("; ")))
            .collect();
        if !errored.is_empty() {
            steps.push(Step::errored(rate, expected, errored.join("; ")));
            continue;
        }
        let mut results = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let r: RunResult = serde_json::from_value(p.result.clone())
                .map_err(|e| CombineError::Unreadable(name(i), k + 1, e.to_string()))?;
            if r.latency_ns_buckets.is_empty() && r.latency_us.count > 0 {
                return Err(CombineError::NoHistogram(name(i), k + 1));
            }
            results.push(r);
        }
        let combined = combine_results(&results);
        let verdict = verdict::judge(&combined, &Criteria::new(expected, first.p99_bound_us));
        steps.push(Step::measured(rate, expected, &combined, verdict));
    }
    Ok(Sweep {
        server: server.to_string(),
        connections: sweeps.iter().map(|s| s.connections).sum(),
        symbols_per_client: first.symbols_per_client,
        universe: first.universe,
        p99_bound_us: first.p99_bound_us,
        steps,
    })
}

/// The figure-by-figure combination of runs made at the same time: counts add up, latency
/// comes from the merged histogram, the generator's share of a core and the connect and
/// reconnect times are the worst process's, the median client rate the median of the medians.
pub fn combine_results(results: &[RunResult]) -> RunResult {
    let mut c = RunResult::default();
    let mut latency = Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3).expect("bounds");
    let mut medians = Vec::with_capacity(results.len());
    let mut resume: Option<ResumeCounts> = None;
    let mut servers = Vec::with_capacity(results.len());
    c.per_client_per_s_min = f64::INFINITY;
    for r in results {
        c.connections += r.connections;
        c.connected += r.connected;
        c.failed_connects += r.failed_connects;
        c.connect_ms = worst(c.connect_ms, r.connect_ms);
        c.connects_per_s += r.connects_per_s;
        c.window_s = c.window_s.max(r.window_s);
        c.slow_clients += r.slow_clients;
        c.delivered += r.delivered;
        c.seq_tracked += r.seq_tracked;
        c.delivered_per_s += r.delivered_per_s;
        c.per_client_per_s_min = c.per_client_per_s_min.min(r.per_client_per_s_min);
        medians.push(r.per_client_per_s_median);
        for &(value, count) in &r.latency_ns_buckets {
            let _ = latency.record_n(value, count);
        }
        c.seq.add(&r.seq);
        c.slow_seq.add(&r.slow_seq);
        c.pairs = add_pairs(c.pairs, r.pairs);
        c.slow = add_fates(c.slow, r.slow);
        c.unreadable += r.unreadable;
        c.stamped_ahead += r.stamped_ahead;
        c.unanswered_unsubscribes += r.unanswered_unsubscribes;
        c.hidden_trades += r.hidden_trades;
        c.conflation_unchecked += r.conflation_unchecked;
        c.json_mismatches += r.json_mismatches;
        c.stale_symbols += r.stale_symbols;
        if r.stalest_symbol.as_ref().map(|s| s.silent_s) > c.stalest_symbol.as_ref().map(|s| s.silent_s) {
            c.stalest_symbol.clone_from(&r.stalest_symbol);
        }
        if c.asked_policy.is_none() {
            c.asked_policy.clone_from(&r.asked_policy);
        }
        add_into(&mut c.errors, &r.errors);
        add_into(&mut c.closes, &r.closes);
        c.policy = match (c.policy.take(), &r.policy) {
            (None, p) => p.clone(),
            (Some(a), Some(b)) if a != *b => Some("mixed".into()),
            (a, _) => a,
        };
        c.dropped += r.dropped;
        c.churns += r.churns;
        servers.push(r.server);
        c.loadtest_cpu_s += r.loadtest_cpu_s;
        c.loadtest_core_share = c.loadtest_core_share.max(r.loadtest_core_share);
        c.tcp_socket_memory = c.tcp_socket_memory.max(r.tcp_socket_memory);
        if let Some(r) = &r.resume {
            resume.get_or_insert_with(ResumeCounts::default).add(r);
        }
        c.reconnect_ms = worst(c.reconnect_ms, r.reconnect_ms);
        c.wire.add(&r.wire);
    }
    if !c.per_client_per_s_min.is_finite() {
        c.per_client_per_s_min = 0.0;
    }
    medians.sort_by(f64::total_cmp);
    c.per_client_per_s_median = medians.get(medians.len() / 2).copied().unwrap_or(0.0);
    c.latency_us = Percentiles::from_ns(&latency);
    c.latency_ns_buckets = buckets(&latency);
    c.resume = resume;
    // Server figures only when every process measured one (each its own server process).
    c.server = servers.iter().copied().collect::<Option<Vec<ServerFigures>>>().map(|all| {
        let cpu_s: f64 = all.iter().map(|s| s.cpu_s).sum();
        let before: u64 = all.iter().map(|s| s.rss_before_connect).sum();
        let connected: u64 = all.iter().map(|s| s.rss_connected).sum();
        ServerFigures {
            cpu_s,
            cpu_ns_per_delivery: if c.delivered > 0 { cpu_s * 1e9 / c.delivered as f64 } else { 0.0 },
            rss_before_connect: before,
            rss_connected: connected,
            rss_per_connection: (connected as f64 - before as f64) / c.connections.max(1) as f64,
            rss_end: all.iter().map(|s| s.rss_end).sum(),
        }
    });
    c
}

fn worst(a: Percentiles, b: Percentiles) -> Percentiles {
    Percentiles {
        count: a.count + b.count,
        p50: a.p50.max(b.p50),
        p90: a.p90.max(b.p90),
        p99: a.p99.max(b.p99),
        p999: a.p999.max(b.p999),
        max: a.max.max(b.max),
        mean: a.mean.max(b.mean),
    }
}

fn add_pairs(a: PairCounts, b: PairCounts) -> PairCounts {
    PairCounts {
        held: a.held + b.held,
        caught_up: a.caught_up + b.caught_up,
        behind: a.behind + b.behind,
        never_started: a.never_started + b.never_started,
    }
}

fn add_fates(a: SlowFates, b: SlowFates) -> SlowFates {
    SlowFates {
        clients: a.clients + b.clients,
        kept: a.kept + b.kept,
        told: a.told + b.told,
        cut: a.cut + b.cut,
        unaccounted: a.unaccounted + b.unaccounted,
        behind: a.behind + b.behind,
    }
}

fn add_into<K: Ord + Clone>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (k, n) in from {
        *into.entry(k.clone()).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::SeqCounts;
    use crate::verdict::Verdict;

    /// A run of `n` clients whose latencies are `latencies_us`.
    fn part(n: usize, latencies_us: &[u64], core_share: f64) -> RunResult {
        let mut h = Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3).unwrap();
        for &us in latencies_us {
            h.record(us * 1000).unwrap();
        }
        let delivered = latencies_us.len() as u64;
        RunResult {
            connections: n,
            connected: n,
            window_s: 1.0,
            delivered,
            seq_tracked: delivered,
            delivered_per_s: delivered as f64,
            per_client_per_s_min: 1.0,
            per_client_per_s_median: 2.0,
            latency_us: Percentiles::from_ns(&h),
            latency_ns_buckets: buckets(&h),
            seq: SeqCounts { received: delivered, ..SeqCounts::default() },
            pairs: PairCounts { held: n as u64, caught_up: n as u64, ..PairCounts::default() },
            policy: Some("conflate".into()),
            loadtest_core_share: core_share,
            ..RunResult::default()
        }
    }

    #[test]
    fn counts_add_up_and_latency_comes_from_the_merged_histograms() {
        // 99 fast events in one process, one slow one in the other: the p99 of the whole is
        // neither process's own.
        let a = part(10, &[100; 90], 0.3);
        let mut b = part(5, &[100; 9], 0.6);
        b.latency_ns_buckets.push((50_000_000, 1));
        b.delivered += 1;
        b.seq_tracked += 1;
        b.errors.insert("rate_limited".into(), 2);
        let c = combine_results(&[a, b]);
        assert_eq!((c.connections, c.delivered, c.latency_us.count, c.pairs.held), (15, 100, 100, 15));
        assert!((99.0..=101.0).contains(&c.latency_us.p99), "{:?}", c.latency_us);
        assert!(c.latency_us.max >= 49_000.0, "{:?}", c.latency_us);
        assert_eq!(c.loadtest_core_share, 0.6);
        assert_eq!(c.errors.get("rate_limited"), Some(&2));
        let v = verdict::judge(&c, &Criteria::new(100.0, 5_000.0));
        assert!(v.reasons.iter().any(|r| r.contains("rate_limited ×2")), "{v:?}");
    }

    #[test]
    fn sweeps_of_another_shape_or_without_histograms_are_refused() {
        let step = |r: &RunResult| Step::measured(10.0, 100.0, r, Verdict { status: Status::Passed, reasons: vec![] });
        let sweep = |k: usize, r: &RunResult| Sweep {
            server: "x".into(),
            connections: r.connections,
            symbols_per_client: k,
            universe: 100,
            p99_bound_us: 5_000.0,
            steps: vec![step(r)],
        };
        let names = ["a.json".to_string(), "b.json".to_string()];
        let good = part(10, &[100; 100], 0.3);
        let combined = combine(&[sweep(10, &good), sweep(10, &good)], &names, "all").unwrap();
        assert_eq!((combined.connections, combined.steps[0].expected_per_s), (20, 200.0));
        assert_eq!(combined.steps[0].verdict.status, Status::Passed, "{:?}", combined.steps[0].verdict);
        assert!(matches!(combine(&[sweep(10, &good), sweep(5, &good)], &names, "all"), Err(CombineError::Shape(..))));
        let mut old = good.clone();
        old.latency_ns_buckets.clear();
        assert_eq!(
            combine(&[sweep(10, &good), sweep(10, &old)], &names, "all").unwrap_err(),
            CombineError::NoHistogram("b.json".into(), 1)
        );
        assert_eq!(combine(&[], &names, "all").unwrap_err(), CombineError::Empty);
    }
}
