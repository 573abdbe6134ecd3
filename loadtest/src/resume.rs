//! Resuming after a reconnect, as the sequence tracker sees it (docs/PROTOCOL.md, "Resuming
//! after a reconnect"). Sans IO.
//!
//! A client that was dropped hands back the last seq it holds of each symbol. For each, the
//! server must answer with exactly one of: `resumed` and the events after that seq, contiguous
//! into the live stream (**whole**); or a `gap` with reason `history` or `ahead` and a snapshot
//! as of the gap's end (**with a gap**: announced). Anything else (no answer, an event or a
//! snapshot before the answer, a replay that skips or repeats a seq, a gap of another reason
//! or of the wrong range) **fails** the resume.

use crate::tracker::{SeqTracker, Slot};

/// How the resumes of a run went (one client's, or summed over clients).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ResumeCounts {
    /// Connections dropped and opened again with a resume.
    pub reconnects: u64,
    /// Of those, the ones whose new connection failed (refused, no upgrade, closed before it).
    pub reconnect_failed: u64,
    /// Subscriptions resumed with a seq held.
    pub asked: u64,
    /// Subscriptions subscribed afresh on the new connection: nothing of them had come yet.
    pub fresh: u64,
    /// Resumed with `resumed`, and every seq after the one held came, once, in order.
    pub whole: u64,
    /// Answered with a gap `history` or `ahead` and the snapshot it announced (or resumed with a
    /// replay that a slow-consumer gap interrupted).
    pub with_gap: u64,
    /// Anything else: no answer, a silent skip or repeat, a snapshot not announced by a gap.
    pub failed: u64,
    /// Events replayed (seq up to the `resumed` reply's `to_seq`): not live, so not timed nor
    /// counted as delivered.
    pub replayed: u64,
    /// Events the `history` gaps said the client will not get.
    pub announced: u64,
}

impl ResumeCounts {
    pub fn add(&mut self, other: &ResumeCounts) {
        self.reconnects += other.reconnects;
        self.reconnect_failed += other.reconnect_failed;
        self.asked += other.asked;
        self.fresh += other.fresh;
        self.whole += other.whole;
        self.with_gap += other.with_gap;
        self.failed += other.failed;
        self.replayed += other.replayed;
        self.announced += other.announced;
    }
}

/// Where the resume of one subscription stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Resume {
    /// No resume under way.
    #[default]
    Idle,
    /// Asked, after `held`; no answer yet.
    Asked { held: u64 },
    /// `resumed` came: the events up to `to` are the replay. `faults`: seqs skipped or repeated
    /// since; `gapped`: a gap (slow consumer) interrupted it.
    Replaying { to: u64, faults: u64, gapped: bool },
    /// A gap `history` or `ahead` came: the snapshot as of `at` must follow.
    Announced { at: u64 },
}

impl Resume {
    /// Seqs were skipped without an announcement, or repeated.
    pub(crate) fn add_faults(&mut self, n: u64) {
        if let Resume::Replaying { faults, .. } = self {
            *faults += n;
        }
    }

    /// A gap that is not a resume's own answer (a slow-consumer gap, say) came: it may
    /// interrupt a replay, but it answers no resume.
    pub(crate) fn plain_gap(&mut self, counts: &mut ResumeCounts) {
        match self {
            Resume::Replaying { gapped, .. } => *gapped = true,
            Resume::Asked { .. } | Resume::Announced { .. } => {
                counts.failed += 1;
                *self = Resume::Idle;
            }
            Resume::Idle => {}
        }
    }

    /// After an event of seq `seq` (with `faults` seqs skipped untold or repeated) was accounted
    /// for: whether it was replayed. The first event past the replay settles the resume.
    pub(crate) fn after_event(&mut self, seq: u64, new_faults: u64, counts: &mut ResumeCounts) -> bool {
        match *self {
            Resume::Idle => false,
            // An event before the answer, or before the announced snapshot.
            Resume::Asked { .. } | Resume::Announced { .. } => {
                counts.failed += 1;
                *self = Resume::Idle;
                false
            }
            Resume::Replaying { to, faults, gapped } => {
                let faults = faults + new_faults;
                if seq <= to {
                    *self = Resume::Replaying { to, faults, gapped };
                    counts.replayed += 1;
                    return true;
                }
                match (faults, gapped) {
                    (0, false) => counts.whole += 1,
                    (0, true) => counts.with_gap += 1,
                    _ => counts.failed += 1,
                }
                *self = Resume::Idle;
                false
            }
        }
    }
}

/// A snapshot of a subscription: true if it was the one a resume's gap announced (and is
/// accounted for here); false if the caller accounts for it as any snapshot.
pub(crate) fn snapshot_settles(slot: &mut Slot, seq: u64, counts: &mut ResumeCounts) -> bool {
    match slot.resume {
        Resume::Announced { at } if at == seq => {
            counts.with_gap += 1;
            slot.resume = Resume::Idle;
            slot.next = seq.saturating_add(1);
            true
        }
        // A snapshot instead of an answer (the resume ignored), or not the announced one.
        Resume::Asked { .. } | Resume::Announced { .. } => {
            counts.failed += 1;
            slot.resume = Resume::Idle;
            false
        }
        Resume::Idle | Resume::Replaying { .. } => false,
    }
}

impl SeqTracker {
    /// The connection was dropped: settles the resumes still under way, forgets the symbols
    /// being left, and returns what the new connection asks for: each symbol with the last seq
    /// held, or None to subscribe it afresh (nothing of it came yet, or only a snapshot at 0).
    pub fn begin_resume(&mut self) -> Vec<(u32, Option<u64>)> {
        self.settle_resumes();
        self.slots.retain(|s| !s.leaving);
        self.leaving.clear();
        self.resumes.reconnects += 1;
        let mut asks = Vec::with_capacity(self.slots.len());
        for slot in &mut self.slots {
            // A resume needs a seq of at least 1 (docs/PROTOCOL.md).
            if slot.next >= 2 {
                let held = slot.next - 1;
                slot.resume = Resume::Asked { held };
                self.resumes.asked += 1;
                asks.push((slot.symbol, Some(held)));
            } else {
                slot.next = 0;
                self.resumes.fresh += 1;
                asks.push((slot.symbol, None));
            }
        }
        asks
    }

    /// Counts every resume still under way as settled: a replay complete and clean is whole
    /// (the live stream after it had not started yet), anything else failed.
    pub fn settle_resumes(&mut self) {
        for slot in &mut self.slots {
            match slot.resume {
                Resume::Idle => {}
                Resume::Replaying { to, faults: 0, gapped } if slot.next > to => {
                    if gapped {
                        self.resumes.with_gap += 1;
                    } else {
                        self.resumes.whole += 1;
                    }
                }
                Resume::Asked { .. } | Resume::Announced { .. } | Resume::Replaying { .. } => {
                    self.resumes.failed += 1;
                }
            }
            slot.resume = Resume::Idle;
        }
    }

    /// A `resumed` reply: the events `after + 1..=to` follow.
    pub fn on_resumed(&mut self, symbol: u32, after: u64, to: u64) {
        let Some(slot) = self.slots.iter_mut().find(|s| s.symbol == symbol) else {
            self.counts.unexpected += 1;
            return;
        };
        match slot.resume {
            Resume::Asked { held } if after == held && to >= after => {
                slot.resume = Resume::Replaying { to, faults: 0, gapped: false };
            }
            Resume::Asked { .. } => {
                // Not after the seq handed back: what follows is counted as lost or repeated.
                self.resumes.failed += 1;
                slot.resume = Resume::Idle;
            }
            // A `resumed` nobody asked for.
            _ => self.counts.unexpected += 1,
        }
    }

    /// A gap with reason `history` (`ahead` false) or `ahead`: the answer to a resume when the
    /// server cannot replay. `history` must start right after the seq held, `ahead` end at it;
    /// any other gap of these reasons counts as a gap announced to a reading client.
    pub fn on_resume_gap(&mut self, symbol: u32, from: u64, to: u64, ahead: bool) {
        let Some(slot) = self.slots.iter_mut().find(|s| s.symbol == symbol) else {
            self.counts.unexpected += 1;
            return;
        };
        match slot.resume {
            Resume::Asked { held } if !ahead && from == held.saturating_add(1) && to >= from => {
                self.resumes.announced += to - from + 1;
                slot.next = to.saturating_add(1);
                slot.resume = Resume::Announced { at: to };
            }
            // The gateway's newest event is `from - 1`, older than the seq held: its snapshot
            // follows, lower than what the client holds.
            Resume::Asked { held } if ahead && to == held && (1..=held).contains(&from) => {
                slot.next = from;
                slot.resume = Resume::Announced { at: from - 1 };
            }
            _ => self.on_gap(symbol, from, to),
        }
    }
}

/// The `subscribe` a resuming client sends: `resume` with the seq held of each symbol that has
/// one, `symbols` for the others; `extra` is appended inside the object (e.g. a policy).
pub fn resume_command(universe: &[String], asks: &[(u32, Option<u64>)], extra: &str) -> String {
    let name = |s: u32| universe.get(s as usize).map_or("", String::as_str);
    let fresh: Vec<String> = asks.iter().filter(|a| a.1.is_none()).map(|a| format!("\"{}\"", name(a.0))).collect();
    let resume: Vec<String> = asks
        .iter()
        .filter_map(|&(s, held)| held.map(|seq| format!("{{\"symbol\":\"{}\",\"seq\":{seq}}}", name(s))))
        .collect();
    let mut command = String::from("{\"op\":\"subscribe\"");
    if !fresh.is_empty() || resume.is_empty() {
        command.push_str(&format!(",\"symbols\":[{}]", fresh.join(",")));
    }
    if !resume.is_empty() {
        command.push_str(&format!(",\"resume\":[{}]", resume.join(",")));
    }
    command.push_str(extra);
    command.push('}');
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::SeqCounts;

    /// A tracker of symbols 0 and 1 holding seq 10 of each, dropped and resuming.
    fn resuming() -> SeqTracker {
        let mut t = SeqTracker::new(&[0, 1]);
        t.on_snapshot(0, 10);
        t.on_snapshot(1, 10);
        assert_eq!(t.begin_resume(), [(0, Some(10)), (1, Some(10))]);
        t
    }

    #[test]
    fn a_contiguous_replay_into_the_live_stream_is_whole_and_not_live() {
        let mut t = resuming();
        t.on_resumed(0, 10, 12);
        assert!(t.on_event(0, 11, 0, true));
        assert!(t.on_event(0, 12, 0, false));
        assert!(!t.on_event(0, 13, 0, false), "past to_seq: live");
        // Nothing missed: the first live event settles it.
        t.on_resumed(1, 10, 10);
        assert!(!t.on_event(1, 11, 0, false));
        assert_eq!((t.resumes.whole, t.resumes.failed, t.resumes.replayed), (2, 0, 2));
        assert_eq!(t.counts, SeqCounts { received: 4, ..SeqCounts::default() });
    }

    #[test]
    fn a_replay_that_skips_or_repeats_fails() {
        let mut t = resuming();
        t.on_resumed(0, 10, 13);
        t.on_event(0, 11, 0, true);
        t.on_event(0, 13, 0, true); // 12 silently skipped
        t.on_event(0, 14, 0, true);
        t.on_resumed(1, 10, 12);
        t.on_event(1, 11, 0, true);
        t.on_event(1, 11, 0, true); // repeated
        t.on_event(1, 12, 0, true);
        t.on_event(1, 13, 0, true);
        assert_eq!((t.resumes.whole, t.resumes.failed), (0, 2));
        assert_eq!((t.counts.lost, t.counts.duplicates), (1, 1));
    }

    #[test]
    fn a_skip_right_after_the_replay_fails_the_resume() {
        let mut t = resuming();
        t.on_resumed(0, 10, 11);
        t.on_event(0, 11, 0, true);
        t.on_event(0, 14, 0, true);
        assert_eq!((t.resumes.whole, t.resumes.failed, t.counts.lost), (0, 1, 2));
    }

    #[test]
    fn history_and_ahead_gaps_with_their_snapshots_are_announced() {
        let mut t = resuming();
        t.on_resume_gap(0, 11, 50, false);
        t.on_snapshot(0, 50);
        t.on_event(0, 51, 0, true);
        // The server restarted: its newest event is 7, older than the 10 held.
        t.on_resume_gap(1, 8, 10, true);
        t.on_snapshot(1, 7);
        t.on_event(1, 8, 0, true);
        assert_eq!((t.resumes.with_gap, t.resumes.failed, t.resumes.announced), (2, 0, 40));
        assert_eq!(t.counts, SeqCounts { received: 2, ..SeqCounts::default() }, "not gaps to a reading client");
    }

    #[test]
    fn a_resume_ignored_or_answered_wrongly_fails() {
        // A plain snapshot instead of an answer; an event before the answer.
        let mut t = resuming();
        t.on_snapshot(0, 10);
        t.on_event(1, 11, 0, true);
        assert_eq!(t.resumes.failed, 2);
        // A history gap that does not start right after the seq held; a gap of another reason.
        let mut t = resuming();
        t.on_resume_gap(0, 15, 20, false);
        t.on_gap(1, 11, 20);
        t.on_resume_gap(1, 11, 20, false);
        assert_eq!(t.resumes.failed, 2, "a plain gap answers no resume; the late answer is a plain gap");
        assert_eq!((t.counts.lost, t.counts.announced), (4, 16));
        // A resumed after the wrong seq; no answer at all.
        let mut t = resuming();
        t.on_resumed(0, 9, 12);
        t.settle_resumes();
        assert_eq!((t.resumes.failed, t.resumes.asked), (2, 2));
    }

    #[test]
    fn a_clean_replay_cut_short_by_the_end_is_whole_and_unstarted_symbols_start_afresh() {
        let mut t = SeqTracker::new(&[0, 1, 2]);
        t.on_snapshot(0, 10);
        t.on_snapshot(1, 0);
        assert_eq!(t.begin_resume(), [(0, Some(10)), (1, None), (2, None)]);
        t.on_resumed(0, 10, 11);
        t.on_event(0, 11, 0, true);
        t.settle_resumes();
        assert_eq!(
            t.resumes,
            ResumeCounts { reconnects: 1, asked: 1, fresh: 2, whole: 1, replayed: 1, ..ResumeCounts::default() }
        );
    }

    #[test]
    fn the_command_resumes_what_it_holds_and_subscribes_the_rest() {
        let universe: Vec<String> = ["AAA", "BBB", "CCC"].map(String::from).to_vec();
        assert_eq!(
            resume_command(&universe, &[(0, Some(812)), (2, None)], ",\"policy\":\"drop\""),
            r#"{"op":"subscribe","symbols":["CCC"],"resume":[{"symbol":"AAA","seq":812}],"policy":"drop"}"#
        );
        assert_eq!(
            resume_command(&universe, &[(1, Some(4))], ""),
            r#"{"op":"subscribe","resume":[{"symbol":"BBB","seq":4}]}"#
        );
    }
}
