//! Whether a measured step passed: a pure function of what the run observed. Anything the run
//! could not check fails the step with a reason; nothing passes by default.

use crate::run::RunResult;

/// What a step has to meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criteria {
    /// Deliveries per second expected to the reading clients if nothing were lost.
    pub expected_per_s: f64,
    pub p99_bound_us: f64,
    /// Load-generator CPU, as a share of one core, at which its own figures stop being the
    /// server's.
    pub generator_bound_share: f64,
    /// The slowest reading client's rate, as a share of the median client's, below which it
    /// counts as starved.
    pub slowest_client_share: f64,
    /// Events the median client must have received in the window for the slowest client's rate
    /// to be judged: below it, chance alone spreads the clients' counts (starvation is still
    /// caught exactly, by every subscription having to reach the last published seq).
    pub slowest_client_min_events: f64,
}

impl Criteria {
    pub fn new(expected_per_s: f64, p99_bound_us: f64) -> Self {
        Self {
            expected_per_s,
            p99_bound_us,
            generator_bound_share: 0.9,
            slowest_client_share: 0.25,
            slowest_client_min_events: 100.0,
        }
    }
}

/// The outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Passed,
    Failed,
    /// Every check passed, but the load generator was saturated: its figures are its own.
    GeneratorBound,
    /// The run itself could not be carried out.
    Errored,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::GeneratorBound => "gen-bound",
            Status::Errored => "errored",
        }
    }
}

/// The status and, unless it passed, every reason why not.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    pub status: Status,
    pub reasons: Vec<String>,
}

/// Judges one run.
pub fn judge(r: &RunResult, c: &Criteria) -> Verdict {
    let mut reasons = Vec::new();
    let mut fail = |why: String| reasons.push(why);

    if r.connected < r.connections || r.failed_connects > 0 {
        fail(format!("{} of {} clients connected ({} failed connects)", r.connected, r.connections, r.failed_connects));
    }
    if r.delivered == 0 {
        fail("no event delivered in the window".into());
    }
    if r.latency_us.count != r.delivered {
        fail(format!("{} of {} delivered events carried a readable gw_ts", r.latency_us.count, r.delivered));
    }
    if r.stamped_ahead > 0 {
        fail(format!("{} events stamped with a gw_ts after they were received", r.stamped_ahead));
    }
    if r.seq_tracked != r.delivered {
        fail(format!(
            "{} of {} delivered events were sequence-checked (the rest had no readable seq or symbol, or were not subscribed)",
            r.seq_tracked, r.delivered
        ));
    }
    if r.unreadable > 0 {
        fail(format!("{} messages unreadable (not a JSON object, or of an unknown type)", r.unreadable));
    }
    let s = &r.seq;
    if s.lost > 0 {
        fail(format!("{} events lost without a gap", s.lost));
    }
    if s.announced > 0 {
        fail(format!("{} events announced missing (gap) to clients that kept reading", s.announced));
    }
    if s.duplicates > 0 {
        fail(format!("{} duplicate or backward seqs", s.duplicates));
    }
    if s.unexpected > 0 {
        fail(format!("{} messages of symbols not subscribed", s.unexpected));
    }
    if s.conflated_trades > 0 {
        fail(format!("{} trades marked conflated", s.conflated_trades));
    }
    let conflation_allowed = r.policy.as_deref() == Some("conflate");
    if s.conflated > 0 && !conflation_allowed {
        fail(format!(
            "{} quotes conflated under policy {}",
            s.conflated,
            r.policy.as_deref().unwrap_or("(none announced)")
        ));
    }
    if !r.errors.is_empty() {
        let list: Vec<String> = r.errors.iter().map(|(code, n)| format!("{code} ×{n}")).collect();
        fail(format!("error replies: {}", list.join(", ")));
    }
    let p = &r.pairs;
    if p.never_started > 0 || p.behind > 0 {
        fail(format!(
            "{} of {} subscriptions not accounted for at the end of the window ({} never started, {} behind the last published seq)",
            p.never_started + p.behind,
            p.held,
            p.never_started,
            p.behind
        ));
    }
    if !r.closes.is_empty() || r.dropped > 0 {
        let list: Vec<String> = r.closes.iter().map(|(code, n)| format!("{code} ×{n}")).collect();
        fail(format!("reading clients closed: [{}], dropped without a close: {}", list.join(", "), r.dropped));
    }
    if r.delivered_per_s < 0.95 * c.expected_per_s {
        fail(format!("{:.0} deliveries/s, under 95% of the {:.0} expected", r.delivered_per_s, c.expected_per_s));
    }
    let median_events = r.per_client_per_s_median * r.window_s;
    if median_events >= c.slowest_client_min_events
        && r.per_client_per_s_min < c.slowest_client_share * r.per_client_per_s_median
    {
        fail(format!(
            "the slowest client got {:.1}/s, under {:.0}% of the median {:.1}/s",
            r.per_client_per_s_min,
            c.slowest_client_share * 100.0,
            r.per_client_per_s_median
        ));
    }
    if r.latency_us.count > 0 && r.latency_us.p99 > c.p99_bound_us {
        fail(format!("p99 {:.0} µs over the bound of {:.0} µs", r.latency_us.p99, c.p99_bound_us));
    }
    let w = &r.slow;
    if w.unaccounted > 0 || r.slow_seq.lost > 0 || r.slow_seq.duplicates > 0 || r.slow_seq.unexpected > 0 {
        fail(format!(
            "stalled clients: {} neither kept, told nor cut; {} events lost untold, {} duplicates, {} unexpected",
            w.unaccounted, r.slow_seq.lost, r.slow_seq.duplicates, r.slow_seq.unexpected
        ));
    }
    if r.slow_seq.conflated_trades > 0 {
        fail(format!("{} trades marked conflated to stalled clients", r.slow_seq.conflated_trades));
    }
    if r.slow_seq.conflated > 0 && !conflation_allowed {
        fail(format!("{} quotes conflated to stalled clients without the conflate policy", r.slow_seq.conflated));
    }

    if let Some(resume) = &r.resume {
        if resume.asked == 0 {
            fail(format!(
                "no subscription was resumed ({} reconnects; none held a seq yet, or no round fell in the window)",
                resume.reconnects
            ));
        }
        if resume.failed > 0 || resume.reconnect_failed > 0 {
            fail(format!(
                "resumes: {} of {} failed (not answered, or a seq skipped or repeated across the reconnect), {} reconnects failed",
                resume.failed, resume.asked, resume.reconnect_failed
            ));
        }
    }

    let saturated = r.loadtest_core_share >= c.generator_bound_share;
    let status = match (reasons.is_empty(), saturated) {
        (true, false) => Status::Passed,
        (true, true) => Status::GeneratorBound,
        (false, _) => Status::Failed,
    };
    if saturated {
        reasons.push(format!(
            "the load generator used {:.0}% of a core: its latency and the server's batching are its own",
            r.loadtest_core_share * 100.0
        ));
    }
    Verdict { status, reasons }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resume::ResumeCounts;
    use crate::run::{PairCounts, Percentiles, SlowFates};
    use crate::tracker::SeqCounts;

    /// A run that passes: 10 clients, 1000 events each, all timed and tracked.
    fn clean() -> RunResult {
        RunResult {
            connections: 10,
            connected: 10,
            window_s: 1.0,
            delivered: 10_000,
            seq_tracked: 10_000,
            delivered_per_s: 10_000.0,
            per_client_per_s_min: 900.0,
            per_client_per_s_median: 1000.0,
            latency_us: Percentiles { count: 10_000, p50: 100.0, p99: 900.0, ..Percentiles::default() },
            seq: SeqCounts { received: 10_000, ..SeqCounts::default() },
            policy: Some("conflate".into()),
            pairs: PairCounts { held: 100, caught_up: 100, ..PairCounts::default() },
            loadtest_core_share: 0.3,
            ..RunResult::default()
        }
    }

    fn criteria() -> Criteria {
        Criteria::new(10_000.0, 5_000.0)
    }

    fn fails_with(r: &RunResult, fragment: &str) {
        let v = judge(r, &criteria());
        assert_eq!(v.status, Status::Failed, "{v:?}");
        assert!(v.reasons.iter().any(|why| why.contains(fragment)), "no reason with {fragment:?}: {v:?}");
    }

    #[test]
    fn a_clean_run_passes_with_no_reasons() {
        assert_eq!(judge(&clean(), &criteria()), Verdict { status: Status::Passed, reasons: vec![] });
    }

    #[test]
    fn an_empty_run_fails() {
        let r = RunResult { connections: 10, connected: 10, ..RunResult::default() };
        fails_with(&r, "no event delivered");
        fails_with(&r, "under 95%");
    }

    #[test]
    fn untimed_or_unsequenced_events_fail() {
        let mut r = clean();
        r.latency_us.count = 0;
        r.latency_us.p99 = 0.0;
        fails_with(&r, "readable gw_ts");
        let mut r = clean();
        r.seq_tracked = 9_999;
        fails_with(&r, "sequence-checked");
        let mut r = clean();
        r.unreadable = 1;
        fails_with(&r, "unreadable");
        let mut r = clean();
        r.stamped_ahead = 1;
        fails_with(&r, "1 events stamped with a gw_ts after");
    }

    #[test]
    fn every_kind_of_loss_fails() {
        for (field, fragment) in [
            (0, "lost without a gap"),
            (1, "announced missing"),
            (2, "duplicate"),
            (3, "not subscribed"),
            (4, "trades marked conflated"),
        ] {
            let mut r = clean();
            match field {
                0 => r.seq.lost = 1,
                1 => r.seq.announced = 1,
                2 => r.seq.duplicates = 1,
                3 => r.seq.unexpected = 1,
                _ => r.seq.conflated_trades = 1,
            }
            fails_with(&r, fragment);
        }
    }

    #[test]
    fn conflation_passes_only_under_the_conflate_policy() {
        let mut r = clean();
        r.seq.conflated = 5;
        assert_eq!(judge(&r, &criteria()).status, Status::Passed);
        r.policy = Some("drop".into());
        fails_with(&r, "conflated under policy drop");
        r.policy = None;
        fails_with(&r, "(none announced)");
    }

    #[test]
    fn errors_unaccounted_pairs_closes_and_a_starved_client_fail() {
        let mut r = clean();
        r.errors.insert("not_entitled".into(), 1);
        fails_with(&r, "not_entitled ×1");
        let mut r = clean();
        r.pairs.never_started = 1;
        fails_with(&r, "1 never started");
        let mut r = clean();
        r.pairs.behind = 2;
        fails_with(&r, "2 behind");
        let mut r = clean();
        r.closes.insert(1008, 1);
        fails_with(&r, "1008 ×1");
        let mut r = clean();
        r.dropped = 1;
        fails_with(&r, "dropped without a close: 1");
        let mut r = clean();
        r.per_client_per_s_min = 100.0;
        fails_with(&r, "slowest client");
        // Too few events per client for rates to tell starvation from chance: not judged.
        r.window_s = 0.05;
        assert!(!judge(&r, &criteria()).reasons.iter().any(|why| why.contains("slowest client")));
        let mut r = clean();
        r.latency_us.p99 = 6_000.0;
        fails_with(&r, "p99 6000");
    }

    #[test]
    fn stalled_clients_must_be_kept_told_or_cut() {
        let mut r = clean();
        r.slow = SlowFates { clients: 3, kept: 1, told: 1, cut: 1, unaccounted: 0 };
        r.slow_seq.announced = 40;
        assert_eq!(judge(&r, &criteria()).status, Status::Passed);
        r.slow.unaccounted = 1;
        fails_with(&r, "1 neither kept");
        let mut r = clean();
        r.slow_seq.lost = 3;
        fails_with(&r, "3 events lost untold");
    }

    #[test]
    fn resumes_must_be_made_and_each_whole_or_announced() {
        let mut r = clean();
        r.resume = Some(ResumeCounts { reconnects: 5, asked: 50, whole: 40, with_gap: 10, ..ResumeCounts::default() });
        assert_eq!(judge(&r, &criteria()).status, Status::Passed);
        r.resume = Some(ResumeCounts { reconnects: 5, asked: 50, whole: 49, failed: 1, ..ResumeCounts::default() });
        fails_with(&r, "resumes: 1 of 50 failed");
        r.resume =
            Some(ResumeCounts { reconnects: 5, asked: 50, whole: 50, reconnect_failed: 1, ..ResumeCounts::default() });
        fails_with(&r, "1 reconnects failed");
        r.resume = Some(ResumeCounts { reconnects: 5, fresh: 50, ..ResumeCounts::default() });
        fails_with(&r, "no subscription was resumed");
    }

    #[test]
    fn a_saturated_generator_never_passes() {
        let mut r = clean();
        r.loadtest_core_share = 0.95;
        let v = judge(&r, &criteria());
        assert_eq!(v.status, Status::GeneratorBound);
        assert!(v.reasons[0].contains("95% of a core"));
        r.seq.lost = 1;
        assert_eq!(judge(&r, &criteria()).status, Status::Failed);
    }
}
