//! permessage-deflate in the IO layer: the inflating stage of a connection's byte stream, and
//! the reactor thread's one decompressor that every connection of the reactor borrows for the
//! length of one message (the clients were answered `client_no_context_takeover`, so no
//! connection keeps a decompression context between messages).

use std::cell::RefCell;

use tickgate_protocol::deflate::{InboundInflate, InflateError, MessageInflater};

thread_local! {
    /// The reactor thread's decompressor, made when its first compressed message arrives.
    static INFLATER: RefCell<Option<MessageInflater>> = const { RefCell::new(None) };
}

/// Buffers kept between messages past this capacity are given back.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Messages inflated on this thread, and their bytes compressed and inflated.
pub fn inflated_on_this_thread() -> [u64; 3] {
    INFLATER.with(|i| i.borrow().as_ref().map_or([0; 3], |i| [i.messages, i.compressed_bytes, i.inflated_bytes]))
}

/// A connection's inflating stage: what the client sends goes through [`InboundInflate`];
/// what comes out waits here for the frame parser to read it.
#[derive(Debug)]
pub struct Inflating {
    filter: InboundInflate,
    pending: Vec<u8>,
    taken: usize,
    /// Why the stream cannot go on; the reactor closes the connection with its code.
    pub error: Option<InflateError>,
}

impl Inflating {
    /// `max_message`: the largest message, compressed or inflated (`limits.max_message_size`).
    pub fn new(max_message: usize) -> Self {
        Self { filter: InboundInflate::new(max_message), pending: Vec::new(), taken: 0, error: None }
    }

    /// Frames folded into others (see [`InboundInflate::merged`]).
    pub fn merged(&self) -> u16 {
        self.filter.merged()
    }

    /// Feeds bytes read from the client.
    pub fn feed(&mut self, raw: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let (filter, pending) = (&mut self.filter, &mut self.pending);
        let result = INFLATER.with(|cell| {
            let mut inflater = cell.borrow_mut();
            filter.feed(raw, pending, inflater.get_or_insert_with(MessageInflater::new))
        });
        if let Err(e) = result {
            self.error = Some(e);
        }
    }

    /// Whether bytes wait for the parser.
    pub fn has_pending(&self) -> bool {
        self.taken < self.pending.len()
    }

    /// Moves waiting bytes into `buf`; returns how many.
    pub fn take_into(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.pending.len() - self.taken);
        buf[..n].copy_from_slice(&self.pending[self.taken..self.taken + n]);
        self.taken += n;
        if self.taken == self.pending.len() {
            self.taken = 0;
            if self.pending.capacity() > KEEP_CAPACITY {
                self.pending = Vec::new();
            }
            self.pending.clear();
        }
        n
    }

    /// Every waiting byte.
    pub fn take_all(&mut self) -> Vec<u8> {
        let rest = self.pending.split_off(self.taken);
        self.pending.clear();
        self.taken = 0;
        rest
    }
}
