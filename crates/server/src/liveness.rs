//! Whether the gateway is alive: a reactor or the ingest thread that ends while nobody asked it
//! to fails the whole gateway, which then stops (clients get 1011) so that its supervisor can
//! restart the process.
//!
//! The first failure wins and is kept with its reason: `/healthz` answers 503 with it, the
//! reactors close their clients with it, and the binary exits non-zero once they are done.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use mio::Waker;

/// The thread that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Reactor(usize),
    Ingest,
    /// The bus thread of a cluster's publisher.
    Bus,
}

/// Why the gateway failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub part: Part,
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.part {
            Part::Reactor(id) => write!(f, "reactor {id} stopped: {}", self.reason),
            Part::Ingest => write!(f, "the ingest thread stopped: {}", self.reason),
            Part::Bus => write!(f, "the bus publisher stopped: {}", self.reason),
        }
    }
}

/// A fault a test makes a thread suffer, through the real paths of a failure (see
/// [`crate::Gateway::start_with_fault_hook`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The reactor panics in its loop.
    ReactorPanic(usize),
    /// The reactor's next `poll` fails.
    ReactorPollFails(usize),
    /// The ingest thread panics while polling its first source.
    IngestPanic,
}

impl std::str::FromStr for Fault {
    type Err = String;

    /// `reactor-panic:N`, `reactor-poll:N` or `ingest-panic`.
    fn from_str(text: &str) -> Result<Self, String> {
        let reactor = |rest: &str| rest.parse::<usize>().map_err(|_| format!("{text:?}: not a reactor number"));
        match text.split_once(':') {
            Some(("reactor-panic", n)) => Ok(Fault::ReactorPanic(reactor(n)?)),
            Some(("reactor-poll", n)) => Ok(Fault::ReactorPollFails(reactor(n)?)),
            None if text == "ingest-panic" => Ok(Fault::IngestPanic),
            _ => Err(format!("{text:?} is not a fault: reactor-panic:N, reactor-poll:N or ingest-panic")),
        }
    }
}

/// No fault armed; otherwise the armed fault's code (see [`Liveness::take_fault`]).
const NO_FAULT: u8 = 0;
const PANIC: u8 = 1;
const POLL_FAILS: u8 = 2;

/// The gateway's run state, shared by every thread.
#[derive(Debug)]
pub struct Liveness {
    /// Set to stop every thread: a requested shutdown or a failure.
    shutdown: Arc<AtomicBool>,
    failed: AtomicBool,
    failure: Mutex<Option<Failure>>,
    changed: Condvar,
    /// Woken on a failure, so parked reactors start closing at once.
    wakers: Vec<Arc<Waker>>,
    /// Faults armed by a test, one per reactor, and the ingest thread's.
    reactor_faults: Vec<AtomicU8>,
    ingest_fault: AtomicBool,
}

impl Liveness {
    pub fn new(shutdown: Arc<AtomicBool>, wakers: Vec<Arc<Waker>>) -> Self {
        let reactor_faults = wakers.iter().map(|_| AtomicU8::new(NO_FAULT)).collect();
        Self {
            shutdown,
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            changed: Condvar::new(),
            wakers,
            reactor_faults,
            ingest_fault: AtomicBool::new(false),
        }
    }

    /// Records that `part` ended unexpectedly, and stops the gateway. Only the first failure is
    /// kept; a later one is logged and otherwise ignored.
    pub fn fail(&self, part: Part, reason: String) {
        let failure = Failure { part, reason };
        {
            let mut first = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_some() {
                tracing::error!(%failure, "another failure while stopping");
                return;
            }
            tracing::error!(%failure, "gateway failed; closing every client with 1011 and stopping");
            *first = Some(failure);
            // Before the shutdown flag: whoever sees the flag finds the failure.
            self.failed.store(true, Ordering::SeqCst);
        }
        self.shutdown.store(true, Ordering::SeqCst);
        self.wake_reactors();
        self.changed.notify_all();
    }

    /// Asks every thread to stop (a graceful shutdown).
    pub fn request_stop(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.wake_reactors();
    }

    fn wake_reactors(&self) {
        for waker in &self.wakers {
            let _ = waker.wake();
        }
    }

    /// Whether the gateway has failed (one atomic load).
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// The failure, if the gateway has failed.
    pub fn failure(&self) -> Option<Failure> {
        if !self.has_failed() {
            return None;
        }
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a stop was asked for or forced by a failure.
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Blocks until the gateway fails.
    pub fn wait_for_failure(&self) -> Failure {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(failure) = failure.as_ref() {
                return failure.clone();
            }
            failure = self.changed.wait(failure).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Arms `fault`; the thread concerned suffers it at its next look.
    pub fn inject(&self, fault: Fault) {
        match fault {
            Fault::ReactorPanic(id) | Fault::ReactorPollFails(id) => {
                let code = if matches!(fault, Fault::ReactorPanic(_)) { PANIC } else { POLL_FAILS };
                if let Some(slot) = self.reactor_faults.get(id) {
                    slot.store(code, Ordering::SeqCst);
                    let _ = self.wakers[id].wake();
                }
            }
            Fault::IngestPanic => self.ingest_fault.store(true, Ordering::SeqCst),
        }
    }

    /// The fault armed for reactor `id`, disarmed.
    pub fn take_fault(&self, id: usize) -> Option<Fault> {
        let slot = self.reactor_faults.get(id)?;
        if slot.load(Ordering::Relaxed) == NO_FAULT {
            return None;
        }
        match slot.swap(NO_FAULT, Ordering::SeqCst) {
            PANIC => Some(Fault::ReactorPanic(id)),
            POLL_FAILS => Some(Fault::ReactorPollFails(id)),
            _ => None,
        }
    }

    /// Whether the ingest thread's fault is armed (disarming it).
    pub fn take_ingest_fault(&self) -> bool {
        self.ingest_fault.load(Ordering::Relaxed) && self.ingest_fault.swap(false, Ordering::SeqCst)
    }
}

/// The message of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => format!("panicked: {text}"),
        (_, Some(text)) => format!("panicked: {text}"),
        _ => "panicked".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_kept_and_stops_the_gateway() {
        let shutdown = Arc::new(AtomicBool::new(false));
        let liveness = Liveness::new(shutdown.clone(), Vec::new());
        assert_eq!(liveness.failure(), None);
        liveness.fail(Part::Reactor(1), "panicked: boom".into());
        liveness.fail(Part::Ingest, "later".into());
        assert!(shutdown.load(Ordering::SeqCst));
        let failure = liveness.wait_for_failure();
        assert_eq!(failure.part, Part::Reactor(1));
        assert_eq!(failure.to_string(), "reactor 1 stopped: panicked: boom");
    }

    #[test]
    fn faults_parse_and_fire_once() {
        assert_eq!("reactor-panic:1".parse(), Ok(Fault::ReactorPanic(1)));
        assert_eq!("reactor-poll:0".parse(), Ok(Fault::ReactorPollFails(0)));
        assert_eq!("ingest-panic".parse(), Ok(Fault::IngestPanic));
        assert!("reactor-panic:x".parse::<Fault>().is_err());
        assert!("reboot".parse::<Fault>().is_err());
        let liveness = Liveness::new(Arc::new(AtomicBool::new(false)), Vec::new());
        liveness.inject(Fault::IngestPanic);
        assert!(liveness.take_ingest_fault());
        assert!(!liveness.take_ingest_fault());
        assert_eq!(liveness.take_fault(0), None, "no such reactor");
    }
}
