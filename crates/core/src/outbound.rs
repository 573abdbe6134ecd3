//! A connection's queue of whole frames waiting for the socket.

use std::collections::VecDeque;
use std::io::IoSlice;

use crate::frame::Frame;

/// The frames queued for one connection, in send order, and how far the first is written.
///
/// The IO layer asks for up to N slices ([`OutboundQueue::io_slices`]), hands them to one
/// `writev`, and reports how many bytes the kernel took ([`OutboundQueue::consume`]). Frames
/// are shared, so queueing one costs a reference count, never a copy; the queue's ring keeps its
/// capacity, so steady traffic allocates nothing.
#[derive(Debug, Default)]
pub struct OutboundQueue {
    frames: VecDeque<Frame>,
    /// Bytes of the front frame already written (a frame is far shorter than 4 GiB).
    front_written: u32,
    /// Bytes queued and not yet written.
    queued_bytes: usize,
    /// Frames ever pushed: the id of the next frame.
    pushed: u64,
    /// Frames ever written out completely: the id of the front frame.
    completed: u64,
    /// Most frames queued at once since the last [`OutboundQueue::trim`].
    peak: u32,
}

/// Identifies one pushed frame for as long as it is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryId(u64);

impl OutboundQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, frame: Frame) -> EntryId {
        self.queued_bytes += frame.len();
        self.frames.push_back(frame);
        self.peak = self.peak.max(self.frames.len() as u32);
        self.pushed += 1;
        EntryId(self.pushed - 1)
    }

    /// Replaces a queued frame that has not started to be written; false if it is gone or
    /// already partly written.
    pub fn replace(&mut self, id: EntryId, frame: Frame) -> bool {
        let first_replaceable = self.completed + u64::from(self.front_written > 0);
        if id.0 < first_replaceable || id.0 >= self.pushed {
            return false;
        }
        let slot = &mut self.frames[(id.0 - self.completed) as usize];
        self.queued_bytes = self.queued_bytes - slot.len() + frame.len();
        *slot = frame;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames queued, the partly written one included.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Whether the front frame is partly written: anything queued now must wait behind it.
    pub fn is_mid_frame(&self) -> bool {
        self.front_written > 0
    }

    /// Fills `slices` with the unwritten bytes, front first; returns how many it filled.
    pub fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        self.io_slices_within(slices, usize::MAX)
    }

    /// [`OutboundQueue::io_slices`] of at most `max_bytes` in all (the last slice cut short).
    pub fn io_slices_within<'a>(&'a self, slices: &mut [IoSlice<'a>], max_bytes: usize) -> usize {
        let mut filled = 0;
        let mut left = max_bytes;
        for (slot, frame) in slices.iter_mut().zip(self.frames.iter()) {
            if left == 0 {
                break;
            }
            let start = if filled == 0 { self.front_written as usize } else { 0 };
            let end = frame.len().min(start.saturating_add(left));
            *slot = IoSlice::new(&frame[start..end]);
            left -= end - start;
            filled += 1;
        }
        filled
    }

    /// Marks `written` bytes as sent, dropping the frames that are now complete; returns how
    /// many whole frames that completed.
    pub fn consume(&mut self, mut written: usize) -> usize {
        debug_assert!(written <= self.queued_bytes);
        self.queued_bytes -= written;
        let mut completed = 0;
        while written > 0 {
            let Some(front) = self.frames.front() else { break };
            let left = front.len() - self.front_written as usize;
            if written >= left {
                written -= left;
                self.front_written = 0;
                self.frames.pop_front();
                self.completed += 1;
                completed += 1;
            } else {
                self.front_written += written as u32;
                written = 0;
            }
        }
        completed
    }

    /// Gives back ring memory the connection has not needed since the last call: an idle
    /// connection ends up with none, a steady one keeps what its bursts use, so neither
    /// allocates per message. Meant to be called every few hundred milliseconds.
    pub fn trim(&mut self) {
        let keep = (self.peak as usize).max(self.frames.len());
        if self.frames.capacity() > 2 * keep {
            self.frames.shrink_to(keep);
        }
        self.peak = self.frames.len() as u32;
    }

    /// Drops every frame not yet started, keeping a partly written front frame so the byte
    /// stream stays whole; returns the bytes dropped.
    pub fn discard_unstarted(&mut self) -> usize {
        let keep = usize::from(self.front_written > 0);
        let dropped: usize = self.frames.drain(keep..).map(|f| f.len()).sum();
        self.queued_bytes -= dropped;
        self.pushed = self.completed + keep as u64;
        dropped
    }

    /// Drops every frame (the connection is gone).
    pub fn clear(&mut self) {
        self.frames.clear();
        self.front_written = 0;
        self.queued_bytes = 0;
        self.completed = self.pushed;
    }

    /// Heap bytes held by the ring itself (frames are shared and not counted).
    pub fn ring_bytes(&self) -> usize {
        self.frames.capacity() * std::mem::size_of::<Frame>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Writes at most `budget` bytes of the queue's slices, as a socket would.
    fn write_some(queue: &mut OutboundQueue, max_slices: usize, budget: usize, sink: &mut Vec<u8>) {
        let mut slices = vec![IoSlice::new(&[]); max_slices];
        let n = queue.io_slices(&mut slices);
        let mut taken = 0;
        for s in &slices[..n] {
            let take = s.len().min(budget - taken);
            sink.extend_from_slice(&s[..take]);
            taken += take;
            if taken == budget {
                break;
            }
        }
        queue.consume(taken);
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let mut q = OutboundQueue::new();
        q.push(Frame::from_bytes(b"hello"));
        q.push(Frame::from_bytes(b"world!"));
        assert_eq!(q.queued_bytes(), 11);
        let mut out = Vec::new();
        write_some(&mut q, 8, 3, &mut out);
        assert!(q.is_mid_frame());
        write_some(&mut q, 8, 4, &mut out);
        assert_eq!(q.len(), 1);
        write_some(&mut q, 8, 100, &mut out);
        assert_eq!(out, b"helloworld!");
        assert!(q.is_empty());
        assert_eq!(q.queued_bytes(), 0);
        assert!(!q.is_mid_frame());
    }

    #[test]
    fn slices_within_a_byte_limit_cut_the_last_short() {
        let mut q = OutboundQueue::new();
        q.push(Frame::from_bytes(b"hello"));
        q.push(Frame::from_bytes(b"world!"));
        q.consume(2);
        let mut slices = [IoSlice::new(&[]); 8];
        let n = q.io_slices_within(&mut slices, 6);
        let taken: Vec<&[u8]> = slices[..n].iter().map(|s| &**s).collect();
        assert_eq!(taken, [&b"llo"[..], &b"wor"[..]]);
        assert_eq!(q.io_slices_within(&mut slices, 0), 0);
        assert_eq!(q.io_slices_within(&mut slices, 3), 1, "exactly the front frame's rest");
        assert_eq!(q.io_slices_within(&mut slices, usize::MAX), 2);
    }

    #[test]
    fn only_unstarted_frames_can_be_replaced() {
        let mut q = OutboundQueue::new();
        let a = q.push(Frame::from_bytes(b"aaaa"));
        let b = q.push(Frame::from_bytes(b"bbbb"));
        let mut out = Vec::new();
        write_some(&mut q, 8, 2, &mut out);
        assert!(!q.replace(a, Frame::from_bytes(b"AA")), "partly written");
        assert!(q.replace(b, Frame::from_bytes(b"BBBBBB")));
        assert_eq!(q.queued_bytes(), 2 + 6);
        write_some(&mut q, 8, 100, &mut out);
        assert_eq!(out, b"aaaaBBBBBB");
        assert!(!q.replace(b, Frame::from_bytes(b"x")), "already written");
        let c = q.push(Frame::from_bytes(b"c"));
        q.clear();
        assert!(!q.replace(c, Frame::from_bytes(b"x")), "cleared");
    }

    #[test]
    fn trimming_frees_what_an_idle_queue_no_longer_uses() {
        let mut q = OutboundQueue::new();
        for _ in 0..20 {
            q.push(Frame::from_bytes(b"x"));
        }
        q.consume(20);
        q.trim();
        assert!(q.ring_bytes() > 0, "the burst was in this period");
        q.trim();
        assert_eq!(q.ring_bytes(), 0, "idle for a whole period: nothing kept");
        q.push(Frame::from_bytes(b"y"));
        q.push(Frame::from_bytes(b"y"));
        q.consume(2);
        q.trim();
        let steady = q.ring_bytes();
        q.push(Frame::from_bytes(b"y"));
        q.push(Frame::from_bytes(b"y"));
        q.consume(2);
        q.trim();
        assert_eq!(q.ring_bytes(), steady, "a steady queue keeps its ring");
    }

    #[test]
    fn discarding_keeps_a_partly_written_frame() {
        let mut q = OutboundQueue::new();
        for bytes in [&b"abc"[..], b"de", b"f"] {
            q.push(Frame::from_bytes(bytes));
        }
        let mut out = Vec::new();
        write_some(&mut q, 8, 1, &mut out);
        assert_eq!(q.discard_unstarted(), 3);
        q.push(Frame::from_bytes(b"Z"));
        write_some(&mut q, 8, 100, &mut out);
        assert_eq!(out, b"abcZ");
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn queued_frames_share_the_buffer() {
        let frame = Frame::from_bytes(b"tick");
        let mut queues: Vec<OutboundQueue> = (0..10).map(|_| OutboundQueue::new()).collect();
        for q in &mut queues {
            q.push(frame.clone());
        }
        assert_eq!(frame.share_count(), 11);
        queues.clear();
        assert_eq!(frame.share_count(), 1);
    }

    proptest! {
        /// Whatever the interleaving of pushes and partial writes, the bytes written are the
        /// frames, whole and in order.
        #[test]
        fn bytes_out_are_the_frames_in_order(
            ops in proptest::collection::vec(
                prop_oneof![
                    (1usize..40).prop_map(Op::Push),
                    (1usize..4, 0usize..60).prop_map(|(s, b)| Op::Write(s, b)),
                ],
                0..200,
            )
        ) {
            let mut q = OutboundQueue::new();
            let mut expected = Vec::new();
            let mut out = Vec::new();
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Push(len) => {
                        let bytes: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
                        expected.extend_from_slice(&bytes);
                        q.push(Frame::from_bytes(&bytes));
                    }
                    Op::Write(slices, budget) => write_some(&mut q, slices, budget, &mut out),
                }
                prop_assert_eq!(q.queued_bytes(), expected.len() - out.len());
            }
            write_some(&mut q, 1024, usize::MAX / 2, &mut out);
            prop_assert_eq!(out, expected);
            prop_assert!(q.is_empty());
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize),
        Write(usize, usize),
    }
}
