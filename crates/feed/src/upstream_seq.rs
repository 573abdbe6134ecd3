//! The lifecycle of an upstream's own sequence numbers, per symbol of one source. Sans IO.
//!
//! | what arrives (same session unless said) | outcome |
//! |---|---|
//! | the symbol's first `seq` ever | delivered; the numbering starts there |
//! | `last + 1` | delivered |
//! | `last + 2 ..= last + 1 + max_jump` | delivered, after an upstream gap of the skipped span |
//! | further ahead than that | delivered, after an upstream reset (`seq_jump`); the numbering starts again there |
//! | `last - max_jump ..= last` (a repeat or a late one) | rejected, `seq_backwards`; nothing changes |
//! | the [`RESTART_RUN`]th number in a row behind `last`, each above the one before | delivered, after an upstream reset (`upstream_restart`): the upstream numbers afresh without reconnecting; the numbering starts again there |
//! | further back than that | delivered, after an upstream reset (`seq_jump`); the numbering starts again there |
//! | the first `seq` of a new session (a reconnect) | continuing the last session's numbering (`last + 1 ..= last + 1 + max_jump`, or any number ahead for [`Numbering::Increasing`]): as within a session; otherwise delivered after an upstream reset (`upstream_restart`) |
//! | the first `seq` of a new replay lap | delivered after an upstream reset (`replay_loop`) |
//! | a message the upstream marks as a reset | delivered after an upstream reset of its reason |
//!
//! `seq` 0 is an ordinary number, the lowest. A jump can never become a baseline that rejects
//! what follows: going back more than `max_jump` is itself a reset, and a numbering that runs
//! again behind the last number (an upstream that restarts at 1 on the same connection, after
//! fewer than `max_jump` messages) is one after [`RESTART_RUN`] of its numbers. Repeats of one
//! number, or numbers that go back, can be rejected for as long as they come. No arithmetic here
//! can wrap.

/// Default `feed.max_seq_jump`: the largest forward jump taken as a gap rather than a reset.
pub const DEFAULT_MAX_SEQ_JUMP: u64 = 1_000_000;

/// Numbers in a row behind the last delivered one, each above the one before, that are taken as
/// the upstream numbering afresh rather than as repeats: the upstream's retransmission of its
/// last few messages stays rejected, a restarted numbering loses at most `RESTART_RUN - 1`.
pub const RESTART_RUN: u32 = 32;

/// Why the upstream's numbering of a symbol did not continue: clients get an `upstream_reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetReason {
    /// A new upstream session (a reconnect) numbers afresh, or the upstream numbers afresh on
    /// the same connection (a run of [`RESTART_RUN`] rising numbers behind the last).
    UpstreamRestart,
    /// The number jumped further than `feed.max_seq_jump` (ahead or back).
    SeqJump,
    /// A looping replay started its recording over.
    ReplayLoop,
    /// The publisher of a cluster restarted: what its sources gave while it was down was never
    /// published (the sequence goes on from the last number it did publish).
    PublisherRestart,
}

impl ResetReason {
    /// Every reason, for metrics and the protocol, by [`ResetReason::index`].
    pub const REASONS: [&'static str; 4] = ["upstream_restart", "seq_jump", "replay_loop", "publisher_restart"];
    const ALL: [ResetReason; 4] = [Self::UpstreamRestart, Self::SeqJump, Self::ReplayLoop, Self::PublisherRestart];

    pub fn index(self) -> usize {
        match self {
            Self::UpstreamRestart => 0,
            Self::SeqJump => 1,
            Self::ReplayLoop => 2,
            Self::PublisherRestart => 3,
        }
    }

    /// The label of this reason (an entry of [`ResetReason::REASONS`]).
    pub fn reason(self) -> &'static str {
        Self::REASONS[self.index()]
    }

    /// The reason labelled `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.reason() == text)
    }
}

/// What a sequence number says about the events before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// Nothing missing (or the first number seen).
    InOrder,
    /// The upstream skipped `from..=to`.
    Gap { from: u64, to: u64 },
    /// The numbering started again: an unknown number of events may be missing.
    Reset(ResetReason),
}

/// How an upstream numbers a symbol's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbering {
    /// Every event gets the next number: a hole is an upstream gap.
    Contiguous,
    /// Numbers only increase (Coinbase's `sequence` spans channels tickgate does not take):
    /// holes are normal, only going back is checked.
    Increasing,
}

#[derive(Debug, Clone, Copy, Default)]
struct SymbolSeq {
    /// The last delivered number, None before any.
    last: Option<u64>,
    /// Set by a new session until the symbol's first number of that session.
    new_session: Option<ResetReason>,
    /// The rejected numbers behind `last` since the last delivered one, each above the one
    /// before: (the latest, how many).
    behind: Option<(u64, u32)>,
}

/// The last upstream sequence number of every symbol of one source.
#[derive(Debug, Clone)]
pub struct UpstreamSeqs {
    symbols: Vec<SymbolSeq>,
    max_jump: u64,
}

impl UpstreamSeqs {
    /// Room for `capacity` symbols (by [`tickgate_core::SymbolId::index`]).
    pub fn new(capacity: usize, max_jump: u64) -> Self {
        Self { symbols: vec![SymbolSeq::default(); capacity], max_jump }
    }

    pub fn set_max_jump(&mut self, max_jump: u64) {
        self.max_jump = max_jump;
    }

    /// A new upstream session starts (a connection, a replay lap): each symbol's next number is
    /// checked against `reason` (see the module docs). Runs once per session, not per message.
    pub fn new_session(&mut self, reason: ResetReason) {
        for s in &mut self.symbols {
            if s.last.is_some() {
                s.new_session = Some(reason);
            }
        }
    }

    /// Checks `seq` of the symbol at `index` and records it if delivered; `reset` is a reset the
    /// upstream itself announced with this message.
    pub fn check(
        &mut self,
        index: usize,
        seq: Option<u64>,
        numbering: Numbering,
        reset: Option<ResetReason>,
    ) -> Result<Continuity, crate::normalize::Reject> {
        let max_jump = self.max_jump;
        let Some(s) = self.symbols.get_mut(index) else { return Ok(Continuity::InOrder) };
        if let Some(reason) = reset {
            *s = SymbolSeq { last: seq, new_session: None, behind: None };
            return Ok(Continuity::Reset(reason));
        }
        let Some(seq) = seq else { return Ok(Continuity::InOrder) };
        let Some(last) = s.last else {
            *s = SymbolSeq { last: Some(seq), new_session: None, behind: None };
            return Ok(Continuity::InOrder);
        };
        // Events skipped if `seq` continues the numbering (None: it does not go forward).
        let skipped = seq.checked_sub(last).and_then(|d| d.checked_sub(1));
        let continuity = match (s.new_session, skipped) {
            (Some(ResetReason::UpstreamRestart), Some(skipped))
                if skipped <= max_jump || numbering == Numbering::Increasing =>
            {
                continued(last, seq, skipped, numbering)
            }
            (Some(reason), _) => Continuity::Reset(reason),
            (None, Some(skipped)) if skipped <= max_jump || numbering == Numbering::Increasing => {
                continued(last, seq, skipped, numbering)
            }
            (None, Some(_)) => Continuity::Reset(ResetReason::SeqJump),
            (None, None) if last - seq <= max_jump => {
                let run = match s.behind {
                    Some((latest, run)) if seq > latest => run.saturating_add(1),
                    _ => 1,
                };
                if run < RESTART_RUN {
                    s.behind = Some((seq, run));
                    return Err(crate::normalize::Reject::SeqBackwards);
                }
                Continuity::Reset(ResetReason::UpstreamRestart)
            }
            (None, None) => Continuity::Reset(ResetReason::SeqJump),
        };
        *s = SymbolSeq { last: Some(seq), new_session: None, behind: None };
        Ok(continuity)
    }
}

/// `seq` follows `last` with `skipped` numbers between them.
fn continued(last: u64, seq: u64, skipped: u64, numbering: Numbering) -> Continuity {
    if skipped == 0 || numbering == Numbering::Increasing {
        Continuity::InOrder
    } else {
        // seq >= last + 2 here, so neither bound wraps.
        Continuity::Gap { from: last + 1, to: seq - 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Reject;
    use proptest::prelude::*;

    const MAX_JUMP: u64 = 1_000;

    fn check(seqs: &mut UpstreamSeqs, seq: u64) -> Result<Continuity, Reject> {
        seqs.check(0, Some(seq), Numbering::Contiguous, None)
    }

    #[test]
    fn the_lifecycle_table() {
        let mut s = UpstreamSeqs::new(1, MAX_JUMP);
        assert_eq!(check(&mut s, 0), Ok(Continuity::InOrder), "0 is an ordinary first number");
        assert_eq!(check(&mut s, 0), Err(Reject::SeqBackwards), "a repeated 0 is a repeat");
        assert_eq!(check(&mut s, 3), Ok(Continuity::Gap { from: 1, to: 2 }), "0 -> 3 skips 1 and 2");
        assert_eq!(check(&mut s, 4), Ok(Continuity::InOrder));
        assert_eq!(check(&mut s, 2), Err(Reject::SeqBackwards));
        assert_eq!(check(&mut s, u64::MAX), Ok(Continuity::Reset(ResetReason::SeqJump)));
        assert_eq!(check(&mut s, 5), Ok(Continuity::Reset(ResetReason::SeqJump)), "the jump is no baseline");
        assert_eq!(check(&mut s, 6), Ok(Continuity::InOrder));
        s.new_session(ResetReason::UpstreamRestart);
        assert_eq!(check(&mut s, 1), Ok(Continuity::Reset(ResetReason::UpstreamRestart)));
        assert_eq!(check(&mut s, 2), Ok(Continuity::InOrder));
        s.new_session(ResetReason::UpstreamRestart);
        assert_eq!(check(&mut s, 5), Ok(Continuity::Gap { from: 3, to: 4 }), "a session that continues the numbering");
        s.new_session(ResetReason::ReplayLoop);
        assert_eq!(check(&mut s, 6), Ok(Continuity::Reset(ResetReason::ReplayLoop)), "a lap is always a reset");
        assert_eq!(
            s.check(0, Some(1), Numbering::Contiguous, Some(ResetReason::UpstreamRestart)),
            Ok(Continuity::Reset(ResetReason::UpstreamRestart)),
            "a reset the upstream announces"
        );
        assert_eq!(check(&mut s, 2), Ok(Continuity::InOrder));
    }

    #[test]
    fn an_upstream_that_numbers_afresh_without_reconnecting_loses_at_most_a_restart_run() {
        let mut s = UpstreamSeqs::new(1, MAX_JUMP);
        for seq in 1..=500 {
            assert!(check(&mut s, seq).is_ok());
        }
        // A daily reset on the same connection: 1, 2, ... again, all within max_jump of 500.
        let run = u64::from(RESTART_RUN);
        for seq in 1..run {
            assert_eq!(check(&mut s, seq), Err(Reject::SeqBackwards), "seq {seq}");
        }
        assert_eq!(check(&mut s, run), Ok(Continuity::Reset(ResetReason::UpstreamRestart)));
        assert_eq!(check(&mut s, run + 1), Ok(Continuity::InOrder), "the new numbering is the baseline");
        assert_eq!(check(&mut s, run + 1), Err(Reject::SeqBackwards), "and repeats of it are repeats");

        // A retransmission of the last few, and one number repeated however often, stay repeats.
        let mut s = UpstreamSeqs::new(1, MAX_JUMP);
        for seq in 1..=500 {
            assert!(check(&mut s, seq).is_ok());
        }
        for seq in 500 - run + 2..=500 {
            assert_eq!(check(&mut s, seq), Err(Reject::SeqBackwards), "a retransmitted {seq}");
        }
        assert_eq!(check(&mut s, 501), Ok(Continuity::InOrder), "then the numbering carries on");
        for _ in 0..3 * run {
            assert_eq!(check(&mut s, 400), Err(Reject::SeqBackwards));
        }
        assert_eq!(check(&mut s, 502), Ok(Continuity::InOrder));
    }

    #[test]
    fn increasing_numbering_has_no_gaps_but_still_no_poisoning_baseline() {
        let mut s = UpstreamSeqs::new(1, MAX_JUMP);
        let mut check = |seq| s.check(0, Some(seq), Numbering::Increasing, None);
        assert_eq!(check(10), Ok(Continuity::InOrder));
        assert_eq!(check(1_000_000), Ok(Continuity::InOrder), "holes are normal");
        assert_eq!(check(999_999), Err(Reject::SeqBackwards));
        assert_eq!(check(u64::MAX), Ok(Continuity::InOrder));
        assert_eq!(check(1_000_001), Ok(Continuity::Reset(ResetReason::SeqJump)));
        s.new_session(ResetReason::UpstreamRestart);
        let mut check = |seq| s.check(0, Some(seq), Numbering::Increasing, None);
        assert_eq!(check(50_000_000), Ok(Continuity::InOrder), "a reconnect that carries on, however far");
        s.new_session(ResetReason::UpstreamRestart);
        let mut check = |seq| s.check(0, Some(seq), Numbering::Increasing, None);
        assert_eq!(check(7), Ok(Continuity::Reset(ResetReason::UpstreamRestart)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        NewSession,
        Seq(u64),
        /// A numbering running from this number, longer than a restart run.
        Run(u64),
    }

    fn seq_value() -> impl Strategy<Value = u64> {
        prop_oneof![0..20u64, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>(), (MAX_JUMP - 2)..(MAX_JUMP + 30)]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![1 => Just(Op::NewSession), 8 => seq_value().prop_map(Op::Seq), 1 => (0..40u64).prop_map(Op::Run)]
    }

    proptest! {
        /// Whatever came before: a rejection is only ever a repeat within `max_jump` of the last
        /// delivered number of the same session, a gap is a real non-empty span within
        /// `max_jump`, the next number is always delivered in order, and a new session always
        /// delivers its first number.
        #[test]
        fn no_state_silences_a_symbol(ops in proptest::collection::vec(op(), 0..60), probe in seq_value()) {
            let mut s = UpstreamSeqs::new(1, MAX_JUMP);
            let mut last: Option<u64> = None;
            let mut fresh_session = false;
            // Rejected numbers in a row, each above the one before: (the latest, how many).
            let mut behind: Option<(u64, u32)> = None;
            let ops = ops.into_iter().flat_map(|op| match op {
                Op::Run(from) => (from..from + u64::from(RESTART_RUN) + 5).map(Op::Seq).collect(),
                op => vec![op],
            });
            for op in ops {
                match op {
                    Op::NewSession => {
                        s.new_session(ResetReason::UpstreamRestart);
                        fresh_session = true;
                    }
                    Op::Run(_) => unreachable!("expanded above"),
                    Op::Seq(seq) => match check(&mut s, seq) {
                        Err(reject) => {
                            prop_assert_eq!(reject, Reject::SeqBackwards);
                            let last = last.expect("a first number is never rejected");
                            prop_assert!(!fresh_session, "a new session's first number is delivered");
                            prop_assert!(seq <= last && last - seq <= MAX_JUMP);
                            let run = match behind {
                                Some((latest, run)) if seq > latest => run + 1,
                                _ => 1,
                            };
                            prop_assert!(run < RESTART_RUN, "a numbering afresh is taken after {} numbers", RESTART_RUN);
                            behind = Some((seq, run));
                        }
                        Ok(continuity) => {
                            if let Continuity::Gap { from, to } = continuity {
                                let last = last.expect("a gap needs a number before it");
                                prop_assert!(from == last + 1 && to + 1 == seq && from <= to);
                                prop_assert!(to - from < MAX_JUMP);
                            }
                            if continuity == Continuity::InOrder && !fresh_session {
                                prop_assert!(last.is_none_or(|l| seq == l + 1));
                            }
                            last = Some(seq);
                            fresh_session = false;
                            behind = None;
                        }
                    },
                }
            }
            if let Some(l) = last.and_then(|l| l.checked_add(1)) {
                prop_assert!(check(&mut s, l).is_ok(), "the next number is delivered");
            }
            s.new_session(ResetReason::UpstreamRestart);
            prop_assert!(check(&mut s, probe).is_ok(), "a new session delivers whatever it starts with");
        }
    }
}
