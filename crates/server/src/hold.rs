//! The write hold: a reactor whose last write pass took long waits about as long again before
//! the next, so every connection's frames pile up into fewer, larger `writev`s.
//!
//! A `writev` costs about the same for one frame as for ten (the kernel's per-call work, and on
//! loopback the receiver's), so frames per call set the CPU a delivery costs. A reactor that
//! writes as soon as it can writes each connection once per ingest batch until its passes get
//! longer than the batch interval; only then do frames pile up. Waiting after a pass of `T` for
//! `min(T, max)` before the next makes frames pile up in proportion to how busy the reactor is:
//! a quiet reactor (short passes) holds nothing back, a busy one writes each connection about
//! half as often, and a tick waits at most one more pass.
//!
//! [`WriteHold`] decides (sans-IO); [`HoldTimer`] is the timerfd that wakes the reactor when the
//! hold is over, as `epoll_wait` only sleeps whole milliseconds.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};

/// Passes shorter than this hold nothing back: not worth a timer.
pub const MIN_HOLD: Duration = Duration::from_micros(100);

/// How long to wait after a write pass before the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteHold {
    /// The longest wait (`server.write_hold_max_us`); zero turns the hold off.
    pub max: Duration,
}

/// What the reactor's last pass did, for [`WriteHold::after_pass`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// How long its fan-out and writes took.
    pub took: Duration,
    /// Connections it wrote to, of the reactor's `open` ones.
    pub written: usize,
    pub open: usize,
    /// The reactor is behind the feed: the pass stopped at its per-turn allowance, or the
    /// channel from the ingest thread is filling up.
    pub behind: bool,
}

impl WriteHold {
    /// The wait after `pass`, if any.
    ///
    /// Holding pays only when connections get frames faster than passes come: then most of
    /// them are written in every pass, and a longer gap between passes puts more frames in each
    /// write. When only a few are written per pass, each gets a frame now and then, and a hold
    /// would delay those frames without saving a write; so it holds only when at least half the
    /// connections (and at least one) were written. A reactor that is behind never holds:
    /// its next pass has more than enough to write already, and waiting would only let the
    /// channel fill.
    pub fn after_pass(&self, pass: Pass) -> Option<Duration> {
        let hold = pass.took.min(self.max);
        let most_written = pass.written > 0 && pass.written * 2 >= pass.open;
        (hold >= MIN_HOLD && most_written && !pass.behind).then_some(hold)
    }
}

/// A one-shot monotonic timerfd registered with the reactor's `Poll`: readable when the hold
/// is over. Each expiry is a new edge, so it is never read.
#[derive(Debug)]
pub struct HoldTimer {
    fd: OwnedFd,
}

impl HoldTimer {
    pub fn new(registry: &Registry, token: Token) -> io::Result<Self> {
        let fd =
            rustix::time::timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)?;
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Self { fd })
    }

    /// Fires once, `after` from now (not zero).
    pub fn arm(&self, after: Duration) -> io::Result<()> {
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        let value = Timespec { tv_sec: after.as_secs() as _, tv_nsec: after.subsec_nanos().max(1) as _ };
        rustix::time::timerfd_settime(
            &self.fd,
            TimerfdTimerFlags::empty(),
            &Itimerspec { it_interval: zero, it_value: value },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(took_us: u64, written: usize, open: usize) -> Pass {
        Pass { took: Duration::from_micros(took_us), written, open, behind: false }
    }

    #[test]
    fn a_busy_pass_holds_as_long_as_it_took_up_to_the_max_and_a_quiet_one_not_at_all() {
        let hold = WriteHold { max: Duration::from_millis(1) };
        let us = Duration::from_micros;
        assert_eq!(hold.after_pass(pass(20, 100, 100)), None);
        assert_eq!(hold.after_pass(pass(99, 100, 100)), None);
        assert_eq!(hold.after_pass(pass(400, 100, 100)), Some(us(400)));
        assert_eq!(hold.after_pass(pass(7_000, 100, 100)), Some(Duration::from_millis(1)));
        let off = WriteHold { max: Duration::ZERO };
        assert_eq!(off.after_pass(pass(7_000, 100, 100)), None);
    }

    #[test]
    fn a_pass_that_wrote_to_few_of_the_connections_holds_nothing_back() {
        let hold = WriteHold { max: Duration::from_millis(1) };
        assert_eq!(hold.after_pass(pass(600, 50, 1000)), None, "a frame now and then per connection");
        assert_eq!(hold.after_pass(pass(600, 499, 1000)), None);
        assert_eq!(hold.after_pass(pass(600, 500, 1000)), Some(Duration::from_micros(600)));
        assert_eq!(hold.after_pass(pass(600, 0, 0)), None, "nobody to write to: the next handshake waits for nothing");
    }

    #[test]
    fn a_reactor_behind_the_feed_never_holds() {
        let hold = WriteHold { max: Duration::from_millis(1) };
        assert_eq!(hold.after_pass(Pass { behind: true, ..pass(3_000, 100, 100) }), None);
    }

    #[test]
    fn the_timer_wakes_a_poll_when_the_hold_is_over() {
        let mut poll = mio::Poll::new().unwrap();
        let timer = HoldTimer::new(poll.registry(), Token(7)).unwrap();
        let mut events = mio::Events::with_capacity(4);
        let start = std::time::Instant::now();
        timer.arm(Duration::from_micros(300)).unwrap();
        poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
        assert!(events.iter().any(|e| e.token() == Token(7) && e.is_readable()));
        assert!(start.elapsed() >= Duration::from_micros(300));
        // Armed again without reading it: a new expiry is a new event.
        timer.arm(Duration::from_micros(300)).unwrap();
        poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
        assert!(events.iter().any(|e| e.token() == Token(7)));
    }
}
