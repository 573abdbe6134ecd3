//! The progress of a run on standard error: a live bar on a terminal (indicatif), one plain line
//! a second otherwise (a pipe, a CI log), so a log holds no carriage returns.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where a run is, for its progress display.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    /// connecting, warming up, measuring or draining.
    pub phase: &'static str,
    /// How far the phase is: connections opened, or ms elapsed...
    pub done: u64,
    /// ...of this many.
    pub total: u64,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Connections open.
    pub open: usize,
    /// Events delivered so far, over every client.
    pub delivered: u64,
    /// The 99th percentile latency so far, in µs.
    pub p99_us: f64,
}

/// The display: a bar redrawn in place, or periodic lines.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    every: Duration,
    last: Instant,
    last_delivered: u64,
}

impl Progress {
    /// A bar when standard error is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{prefix:<11} [{bar:30}] {percent:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        let every = if bar.is_some() { Duration::from_millis(200) } else { Duration::from_secs(1) };
        Self { bar, every, last: Instant::now(), last_delivered: 0 }
    }

    /// Whether it is time to show the status again.
    pub fn due(&self, now: Instant) -> bool {
        now.duration_since(self.last) >= self.every
    }

    /// Shows `status`; the rate is over the time since the last call.
    pub fn show(&mut self, now: Instant, status: &Status) {
        let seconds = now.duration_since(self.last).as_secs_f64().max(1e-3);
        let rate = status.delivered.saturating_sub(self.last_delivered) as f64 / seconds;
        self.last = now;
        self.last_delivered = status.delivered;
        let figures =
            format!("t={:.1}s open={} msgs/s={rate:.0} p99={:.0}us", status.elapsed_s, status.open, status.p99_us);
        match &self.bar {
            Some(bar) => {
                bar.set_prefix(status.phase);
                bar.set_length(status.total.max(1));
                bar.set_position(status.done.min(status.total));
                bar.set_message(figures);
            }
            None => eprintln!("{:<11} {figures}", status.phase),
        }
    }

    /// Clears the bar (the summary follows).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
