//! From the ingest thread to the reactors: one bounded channel and one waker per reactor.
//!
//! The feed never blocks on a reactor. When a reactor's channel is full, the ticks it cannot
//! take are not queued anywhere: the link goes *lagging* and remembers, per symbol, the span of
//! sequence numbers that reactor missed. While lagging, every further tick for that reactor is
//! folded into those spans too, so the reactor never sees a sequence jump it was not told of.
//! As soon as the channel has room, each span goes out as one [`FanoutMsg::Resync`] carrying the
//! symbol's current last values; the reactor turns it into a `gap` message and a fresh
//! `snapshot` for the symbol's subscribers, and the link returns to normal once every span is
//! out. Other reactors are not affected.
//!
//! Waking is batched: a reactor is woken (one `eventfd` write) at most once per ingest batch,
//! and only when it is parked in `poll`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tickgate_core::{Frame, LastValueCache, LastValues, SymbolId, Tick};

/// What the ingest thread sends a reactor.
#[derive(Debug, Clone)]
pub enum FanoutMsg {
    /// A live event and its frame, built once and shared; with `deflated`, the same message
    /// compressed once (permessage-deflate) for every connection that agreed to it.
    Tick { tick: Tick, frame: Frame, deflated: Option<Frame> },
    /// The reactor's clients miss events `from_seq..=to_seq` of `symbol` (the `gap`'s `reason`:
    /// [`OVERLOAD`] when the reactor's channel was full); `values` is the symbol's state as of
    /// `to_seq`.
    Resync { symbol: SymbolId, from_seq: u64, to_seq: u64, reason: &'static str, values: LastValues },
    /// A message for every client of the reactor (the feed went down or came back).
    Broadcast { frame: Frame },
    /// A message for the subscribers of `symbol` (an upstream gap), in order with its ticks.
    Notice { symbol: SymbolId, frame: Frame },
}

/// The `gap` reason of a resync after a reactor's full channel.
pub const OVERLOAD: &str = "gateway_overload";

/// Counters of one link, written by the ingest thread only.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Ticks that did not fit in the reactor's channel (announced later by resyncs).
    pub ticks_missed: AtomicU64,
    /// Resync messages sent.
    pub resyncs_sent: AtomicU64,
    /// Notices dropped because too many waited for room in the channel.
    pub notices_dropped: AtomicU64,
    /// Wake-ups sent to the reactor.
    pub wakes: AtomicU64,
}

/// The ingest side of one reactor's channel.
#[derive(Debug)]
pub struct ReactorLink {
    tx: Sender<FanoutMsg>,
    waker: Arc<mio::Waker>,
    parked: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
    /// Symbol -> (first, last) missed sequence number, while the link is lagging.
    missed: BTreeMap<SymbolId, (u64, u64)>,
    sent_since_wake: bool,
    /// A broadcast that did not fit in the channel yet (the latest one wins).
    pending_broadcast: Option<Frame>,
    /// Notices that did not fit yet, in order. While any waits, ticks are folded into resync
    /// spans, so a notice never arrives after a tick that followed it.
    pending_notices: std::collections::VecDeque<(SymbolId, Frame)>,
}

/// Most notices a link holds while its channel is full; more are dropped and counted.
const MAX_PENDING_NOTICES: usize = 1024;

/// The reactor side of its channel.
#[derive(Debug)]
pub struct ReactorInbox {
    rx: Receiver<FanoutMsg>,
    parked: Arc<AtomicBool>,
}

/// A bounded channel of `capacity` messages from the ingest thread to one reactor, waking it
/// through `waker` (registered in the reactor's `mio::Poll`).
pub fn reactor_channel(capacity: usize, waker: Arc<mio::Waker>) -> (ReactorLink, ReactorInbox, Arc<LinkStats>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let parked = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(LinkStats::default());
    let link = ReactorLink {
        tx,
        waker,
        parked: parked.clone(),
        stats: stats.clone(),
        missed: BTreeMap::new(),
        sent_since_wake: false,
        pending_broadcast: None,
        pending_notices: std::collections::VecDeque::new(),
    };
    (link, ReactorInbox { rx, parked }, stats)
}

impl ReactorLink {
    /// Offers one tick to the reactor; never blocks.
    pub fn publish(&mut self, tick: &Tick, frame: &Frame) {
        self.publish_deflated(tick, frame, None);
    }

    /// [`ReactorLink::publish`] with the tick's compressed frame, if it was compressed.
    pub fn publish_deflated(&mut self, tick: &Tick, frame: &Frame, deflated: Option<&Frame>) {
        if self.missed.is_empty() && self.pending_notices.is_empty() {
            let msg = FanoutMsg::Tick { tick: *tick, frame: frame.clone(), deflated: deflated.cloned() };
            match self.tx.try_send(msg) {
                Ok(()) => {
                    self.sent_since_wake = true;
                    return;
                }
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(_)) => {}
            }
        }
        self.stats.ticks_missed.fetch_add(1, Ordering::Relaxed);
        self.missed.entry(tick.symbol).and_modify(|span| span.1 = tick.seq).or_insert((tick.seq, tick.seq));
    }

    /// Offers a message for the subscribers of `symbol`, ordered with its ticks; never blocks.
    pub fn notify(&mut self, symbol: SymbolId, frame: Frame) {
        if self.missed.is_empty() && self.pending_notices.is_empty() {
            match self.tx.try_send(FanoutMsg::Notice { symbol, frame }) {
                Ok(()) => {
                    self.sent_since_wake = true;
                    return;
                }
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(FanoutMsg::Notice { symbol, frame })) => {
                    self.pending_notices.push_back((symbol, frame));
                    return;
                }
                Err(TrySendError::Full(_)) => return,
            }
        }
        if self.pending_notices.len() < MAX_PENDING_NOTICES {
            self.pending_notices.push_back((symbol, frame));
        } else {
            self.stats.notices_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Offers a resync of `symbol`: events `from_seq..=to_seq` never reach the reactor's clients
    /// (`reason`), and `values` is the symbol's state as of `to_seq`; never blocks. On a link
    /// that is lagging, or a full channel, the span joins the missed spans (announced as
    /// [`OVERLOAD`]: the reactor fell behind as well).
    pub fn resync(&mut self, symbol: SymbolId, from_seq: u64, to_seq: u64, reason: &'static str, values: &LastValues) {
        if self.missed.is_empty() && self.pending_notices.is_empty() {
            let msg = FanoutMsg::Resync { symbol, from_seq, to_seq, reason, values: *values };
            match self.tx.try_send(msg) {
                Ok(()) => {
                    self.sent_since_wake = true;
                    self.stats.resyncs_sent.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(_)) => {}
            }
        }
        self.missed.entry(symbol).and_modify(|span| span.1 = to_seq).or_insert((from_seq, to_seq));
    }

    /// Whether ticks are being folded into resync spans.
    pub fn is_lagging(&self) -> bool {
        !self.missed.is_empty() || !self.pending_notices.is_empty()
    }

    /// Sends what resyncs fit, then wakes the reactor if it is parked and was sent anything.
    /// Queues a message for every client of the reactor; if the channel is full it waits for
    /// the next flush (a newer broadcast replaces it).
    pub fn broadcast(&mut self, frame: Frame) {
        self.pending_broadcast = Some(frame);
    }

    pub fn flush(&mut self, lvc: &LastValueCache) {
        if let Some(frame) = self.pending_broadcast.take() {
            match self.tx.try_send(FanoutMsg::Broadcast { frame }) {
                Ok(()) => self.sent_since_wake = true,
                Err(TrySendError::Full(FanoutMsg::Broadcast { frame })) => self.pending_broadcast = Some(frame),
                Err(_) => {}
            }
        }
        while let Some((symbol, frame)) = self.pending_notices.pop_front() {
            match self.tx.try_send(FanoutMsg::Notice { symbol, frame }) {
                Ok(()) => self.sent_since_wake = true,
                Err(TrySendError::Full(FanoutMsg::Notice { symbol, frame })) => {
                    self.pending_notices.push_front((symbol, frame));
                    break;
                }
                Err(_) => {
                    self.pending_notices.clear();
                    break;
                }
            }
        }
        // Resyncs cover ticks that came after any notice still waiting: they wait too.
        while let Some((&symbol, &(from_seq, to_seq))) =
            self.missed.first_key_value().filter(|_| self.pending_notices.is_empty())
        {
            let msg = FanoutMsg::Resync { symbol, from_seq, to_seq, reason: OVERLOAD, values: *lvc.get(symbol) };
            match self.tx.try_send(msg) {
                Ok(()) => {
                    self.missed.pop_first();
                    self.sent_since_wake = true;
                    self.stats.resyncs_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_)) => break,
                Err(TrySendError::Disconnected(_)) => {
                    self.missed.clear();
                    break;
                }
            }
        }
        if self.sent_since_wake {
            self.sent_since_wake = false;
            // Pairs with the fence in `ReactorInbox::park`: either the reactor sees our messages
            // before it sleeps, or we see it parked and wake it.
            fence(Ordering::SeqCst);
            if self.parked.swap(false, Ordering::SeqCst) {
                self.stats.wakes.fetch_add(1, Ordering::Relaxed);
                // A failed wake leaves the reactor to its poll timeout; nothing is lost.
                let _ = self.waker.wake();
            }
        }
    }

    /// Wakes the reactor unconditionally (shutdown, configuration changes).
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }
}

impl ReactorInbox {
    /// Takes the next message, if any.
    pub fn try_recv(&self) -> Option<FanoutMsg> {
        self.rx.try_recv().ok()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Announces that the reactor is about to sleep in `poll`. Returns false if messages are
    /// already waiting, in which case it must not sleep.
    pub fn park(&self) -> bool {
        self.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.rx.is_empty() {
            true
        } else {
            self.parked.store(false, Ordering::SeqCst);
            false
        }
    }

    /// Announces that the reactor is awake again.
    pub fn unpark(&self) {
        self.parked.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickgate_core::{Sequencer, TickKind};
    use tickgate_protocol::FrameBuilder;

    fn waker() -> (mio::Poll, Arc<mio::Waker>) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        (poll, waker)
    }

    /// Drains the inbox into the seq numbers a client of each symbol would end up accounting for.
    fn drain(inbox: &ReactorInbox, seen: &mut BTreeMap<u32, Vec<(u64, u64)>>) {
        while let Some(msg) = inbox.try_recv() {
            match msg {
                FanoutMsg::Tick { tick, .. } => seen.entry(tick.symbol.0).or_default().push((tick.seq, tick.seq)),
                FanoutMsg::Resync { symbol, from_seq, to_seq, values, .. } => {
                    assert_eq!(values.seq, to_seq, "resync carries the state as of its last seq");
                    seen.entry(symbol.0).or_default().push((from_seq, to_seq));
                }
                FanoutMsg::Broadcast { .. } | FanoutMsg::Notice { .. } => {}
            }
        }
    }

    #[test]
    fn a_full_channel_turns_into_resyncs_that_cover_every_missed_seq() {
        let (_poll, waker) = waker();
        let (mut link, inbox, stats) = reactor_channel(4, waker);
        let mut seq = Sequencer::new(3);
        let mut lvc = LastValueCache::new(3);
        let mut builder = FrameBuilder::new();
        let mut seen = BTreeMap::new();
        for round in 0..20 {
            for i in 0..7u32 {
                let mut tick = Tick {
                    symbol: SymbolId(i % 3),
                    seq: 0,
                    ts: 0,
                    gw_ts: 0,
                    kind: TickKind::Trade { price: 1, size: 1 },
                };
                seq.stamp(&mut tick);
                lvc.record(&tick);
                let frame = builder.text(|o| o.extend_from_slice(b"{}"));
                link.publish(&tick, &frame);
            }
            link.flush(&lvc);
            if round % 3 == 0 {
                drain(&inbox, &mut seen);
            }
        }
        while link.is_lagging() || !inbox.is_empty() {
            drain(&inbox, &mut seen);
            link.flush(&lvc);
        }
        assert!(stats.ticks_missed.load(Ordering::Relaxed) > 0, "the test overflowed the channel");
        assert!(stats.resyncs_sent.load(Ordering::Relaxed) > 0);
        for (symbol, spans) in seen {
            let mut next = 1;
            for (from, to) in spans {
                assert_eq!(from, next, "symbol {symbol}: every seq accounted for, in order, once");
                next = to + 1;
            }
            assert_eq!(next - 1, seq.last_seq(SymbolId(symbol)));
        }
    }

    #[test]
    fn a_notice_that_waits_for_room_still_comes_before_the_ticks_that_followed_it() {
        let (_poll, waker) = waker();
        let (mut link, inbox, _stats) = reactor_channel(2, waker);
        let mut lvc = LastValueCache::new(1);
        let frame = Frame::from_bytes(b"x");
        let mut tick =
            Tick { symbol: SymbolId(0), seq: 0, ts: 0, gw_ts: 0, kind: TickKind::Trade { price: 1, size: 1 } };
        let mut next = |lvc: &mut LastValueCache| {
            tick.seq += 1;
            lvc.record(&tick);
            tick
        };
        for _ in 0..2 {
            let t = next(&mut lvc);
            link.publish(&t, &frame);
        }
        link.notify(SymbolId(0), Frame::from_bytes(b"gap"));
        let t = next(&mut lvc);
        link.publish(&t, &frame);
        assert!(link.is_lagging());
        let mut order = Vec::new();
        while link.is_lagging() || !inbox.is_empty() {
            while let Some(msg) = inbox.try_recv() {
                order.push(match msg {
                    FanoutMsg::Tick { tick, .. } => format!("tick {}", tick.seq),
                    FanoutMsg::Notice { .. } => "notice".to_string(),
                    FanoutMsg::Resync { from_seq, to_seq, .. } => format!("resync {from_seq}..={to_seq}"),
                    FanoutMsg::Broadcast { .. } => "broadcast".to_string(),
                });
            }
            link.flush(&lvc);
        }
        assert_eq!(order, ["tick 1", "tick 2", "notice", "resync 3..=3"]);
    }

    #[test]
    fn wakes_only_a_parked_reactor_and_only_once_per_batch() {
        let (_poll, waker) = waker();
        let (mut link, inbox, stats) = reactor_channel(64, waker);
        let lvc = LastValueCache::new(1);
        let tick = Tick { symbol: SymbolId(0), seq: 1, ts: 0, gw_ts: 0, kind: TickKind::Trade { price: 1, size: 1 } };
        let frame = Frame::from_bytes(b"x");
        link.publish(&tick, &frame);
        link.flush(&lvc);
        assert_eq!(stats.wakes.load(Ordering::Relaxed), 0, "an awake reactor is not woken");
        assert!(!inbox.park(), "a reactor with messages waiting must not sleep");
        while inbox.try_recv().is_some() {}
        assert!(inbox.park());
        for _ in 0..10 {
            link.publish(&tick, &frame);
        }
        link.flush(&lvc);
        link.flush(&lvc);
        assert_eq!(stats.wakes.load(Ordering::Relaxed), 1);
    }
}
