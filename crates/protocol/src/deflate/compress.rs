//! Compressing one message into one frame (permessage-deflate, RFC 7692 §7.2.1), with no
//! context carried from one message to the next (`server_no_context_takeover`), so a frame
//! compressed once can go to every connection that agreed to the extension.

use flate2::{Compress, Compression, FlushCompress, Status};
use tickgate_core::Frame;

use crate::ws::{FIN, MAX_HEADER_LEN, RSV1, split_frame, write_header_first};

/// Messages shorter than this are sent as they are: the deflate block header and the
/// end-of-block code eat what little there is to gain, and the CPU is better spent elsewhere.
pub const MIN_COMPRESSED_LEN: usize = 64;

/// The deflate level: zlib's default, the usual balance of ratio and speed.
const LEVEL: u32 = 6;

/// The tail that a sync flush leaves and RFC 7692 §7.2.1 strips from every message.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What a [`MessageDeflater`] did, since it was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeflateCounts {
    /// Messages compressed into frames that were used.
    pub messages: u64,
    /// Their payload bytes before compression...
    pub raw_bytes: u64,
    /// ...and after.
    pub compressed_bytes: u64,
    /// Messages not sent compressed: compression did not make them smaller.
    pub not_smaller: u64,
}

/// A deflate compressor reset for every message, and its output buffer. Its memory (about
/// 300 KB with zlib-rs) is allocated once, by its owner: the ingest thread has one for the
/// shared tick frames, each reactor one for the frames of its own connections.
pub struct MessageDeflater {
    compress: Compress,
    /// The frame being built: room for the largest header, then the compressed payload.
    scratch: Vec<u8>,
    counts: DeflateCounts,
}

impl std::fmt::Debug for MessageDeflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageDeflater").field("counts", &self.counts).finish_non_exhaustive()
    }
}

impl Default for MessageDeflater {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageDeflater {
    pub fn new() -> Self {
        Self {
            compress: Compress::new(Compression::new(LEVEL), false),
            scratch: Vec::with_capacity(1024),
            counts: DeflateCounts::default(),
        }
    }

    pub fn counts(&self) -> DeflateCounts {
        self.counts
    }

    /// `payload` as one compressed final frame of `opcode` (RSV1 set), or `None` when it is
    /// shorter than [`MIN_COMPRESSED_LEN`] or compression does not make it smaller (send it
    /// as it is).
    pub fn frame(&mut self, opcode: u8, payload: &[u8]) -> Option<Frame> {
        if payload.len() < MIN_COMPRESSED_LEN {
            return None;
        }
        self.deflate_into_scratch(opcode, payload, false)
    }

    /// Deflates `payload` behind room for the header; the frame, unless compression did not
    /// make it smaller and `any_size` is false.
    fn deflate_into_scratch(&mut self, opcode: u8, payload: &[u8], any_size: bool) -> Option<Frame> {
        self.compress.reset();
        self.scratch.clear();
        self.scratch.extend_from_slice(&[0; MAX_HEADER_LEN]);
        let start_in = self.compress.total_in();
        loop {
            let consumed = usize::try_from(self.compress.total_in() - start_in).ok()?;
            if self.scratch.capacity() - self.scratch.len() < 64 {
                self.scratch.reserve(payload.len() / 2 + 64);
            }
            let status = self.compress.compress_vec(&payload[consumed..], &mut self.scratch, FlushCompress::Sync);
            let done = usize::try_from(self.compress.total_in() - start_in).ok()? == payload.len()
                && self.scratch.len() < self.scratch.capacity();
            match status {
                Ok(Status::Ok | Status::BufError) if !done => continue,
                Ok(_) => break,
                Err(_) => return None,
            }
        }
        // A sync flush ends on an empty stored block; RFC 7692 leaves it off the wire.
        if !self.scratch.ends_with(&SYNC_TAIL) {
            return None;
        }
        self.scratch.truncate(self.scratch.len() - SYNC_TAIL.len());
        if !any_size && self.scratch.len() - MAX_HEADER_LEN >= payload.len() {
            self.counts.not_smaller += 1;
            return None;
        }
        Some(self.finish_frame(opcode, payload.len()))
    }

    /// Writes the header in front of the compressed payload in `scratch` and counts it.
    fn finish_frame(&mut self, opcode: u8, raw_len: usize) -> Frame {
        let compressed_len = self.scratch.len() - MAX_HEADER_LEN;
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = write_header_first(&mut header, FIN | RSV1 | opcode, compressed_len);
        let start = MAX_HEADER_LEN - header_len;
        self.scratch[start..MAX_HEADER_LEN].copy_from_slice(&header[start..]);
        self.counts.messages += 1;
        self.counts.raw_bytes += raw_len as u64;
        self.counts.compressed_bytes += compressed_len as u64;
        Frame::from_bytes(&self.scratch[start..])
    }

    /// `payload` as one compressed final frame of `opcode` whatever its length: deflated when it
    /// is at most `max_len` bytes (the connection's window holds it whole), else as stored
    /// blocks (deflate without back-references, valid for any window). For the echo route,
    /// where every message of a compressing connection goes compressed.
    pub fn frame_always(&mut self, opcode: u8, payload: &[u8], max_len: usize) -> Frame {
        if payload.len() <= max_len {
            let before = self.counts.not_smaller;
            if let Some(frame) = self.deflate_into_scratch(opcode, payload, true) {
                return frame;
            }
            self.counts.not_smaller = before;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&[0; MAX_HEADER_LEN]);
        for chunk in payload.chunks(usize::from(u16::MAX)) {
            let len = chunk.len() as u16;
            // BFINAL 0, BTYPE 00 (stored), then LEN and its complement, little-endian.
            self.scratch.push(0x00);
            self.scratch.extend_from_slice(&len.to_le_bytes());
            self.scratch.extend_from_slice(&(!len).to_le_bytes());
            self.scratch.extend_from_slice(chunk);
        }
        // The empty stored block of a sync flush, less the 00 00 ff ff RFC 7692 strips.
        self.scratch.push(0x00);
        self.finish_frame(opcode, payload.len())
    }

    /// An uncompressed whole data frame built here (a reply, the echo of a message),
    /// compressed for a connection that accepts payloads of at most `max_len` bytes
    /// compressed; `None` when it stays as it is (a control frame, too short or too long, not
    /// smaller compressed).
    pub fn recompress(&mut self, frame: &[u8], max_len: usize) -> Option<Frame> {
        let (first, payload) = split_frame(frame)?;
        let opcode = first & 0x0f;
        if first & 0x70 != 0 || first & FIN == 0 || !matches!(opcode, 0x1 | 0x2) || payload.len() > max_len {
            return None;
        }
        self.frame(opcode, payload)
    }

    /// [`MessageDeflater::recompress`] for the echo route: every data message compressed (see
    /// [`MessageDeflater::frame_always`]); `None` for a control frame or one already compressed.
    pub fn recompress_always(&mut self, frame: &[u8], max_len: usize) -> Option<Frame> {
        let (first, payload) = split_frame(frame)?;
        let opcode = first & 0x0f;
        if first & 0x70 != 0 || first & FIN == 0 || !matches!(opcode, 0x1 | 0x2) {
            return None;
        }
        Some(self.frame_always(opcode, payload, max_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::OP_TEXT;
    use flate2::{Decompress, FlushDecompress};

    /// Inflates one message's payload as a client does: the sync tail put back.
    pub(crate) fn inflate(compressed: &[u8]) -> Vec<u8> {
        let mut input = compressed.to_vec();
        input.extend_from_slice(&SYNC_TAIL);
        let mut d = Decompress::new(false);
        let mut out = Vec::with_capacity(16 << 20);
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
        assert_eq!(d.total_in() as usize, input.len());
        out
    }

    #[test]
    fn compresses_each_message_on_its_own() {
        let mut deflater = MessageDeflater::new();
        let tick = br#"{"type":"quote","symbol":"AAPL","seq":1,"bid":"189.10","ask":"189.12","bid_size":"100","ask_size":"300"}"#;
        let first = deflater.frame(OP_TEXT, tick).unwrap();
        let again = deflater.frame(OP_TEXT, tick).unwrap();
        assert_eq!(first, again, "nothing carried over from the first message");
        let (head, payload) = split_frame(&first).unwrap();
        assert_eq!(head, 0xc1, "FIN, RSV1, text");
        assert!(payload.len() < tick.len());
        assert_eq!(inflate(payload), tick);
        let counts = deflater.counts();
        assert_eq!((counts.messages, counts.raw_bytes), (2, 2 * tick.len() as u64));
    }

    #[test]
    fn large_messages_and_extended_lengths() {
        let mut deflater = MessageDeflater::new();
        let big: Vec<u8> = (0..300_000u32).flat_map(|i| format!("{{\"n\":{}}},", i % 977).into_bytes()).collect();
        let frame = deflater.frame(OP_TEXT, &big).unwrap();
        let (_, payload) = split_frame(&frame).unwrap();
        assert_eq!(inflate(payload), big);
    }

    #[test]
    fn leaves_short_and_incompressible_messages_alone() {
        let mut deflater = MessageDeflater::new();
        assert!(deflater.frame(OP_TEXT, b"{\"type\":\"pong\"}").is_none());
        let noise: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        assert!(deflater.frame(0x2, &noise).is_none());
        assert_eq!(deflater.counts().not_smaller, 1);
    }

    #[test]
    fn the_echo_route_compresses_everything_within_the_window() {
        let mut deflater = MessageDeflater::new();
        let tiny = deflater.recompress_always(&crate::data_frame(true, b"hi"), 256).unwrap();
        assert_eq!(inflate(split_frame(&tiny).unwrap().1), b"hi");
        // Longer than the window: stored blocks, no back-reference.
        let long: Vec<u8> = b"abcabcabc".iter().copied().cycle().take(200_000).collect();
        let frame = deflater.recompress_always(&crate::data_frame(false, &long), 256).unwrap();
        let (first, payload) = split_frame(&frame).unwrap();
        assert_eq!(first, 0xc2);
        assert!(payload.len() > long.len(), "stored, not deflated");
        assert_eq!(inflate(payload), long);
        let frame = deflater.recompress_always(&crate::data_frame(false, &long), usize::MAX).unwrap();
        assert!(split_frame(&frame).unwrap().1.len() < 2_000, "deflated within a full window");
        assert_eq!(deflater.recompress_always(&frame, usize::MAX), None, "already compressed");
    }

    #[test]
    fn recompresses_plain_frames_within_the_window() {
        let mut deflater = MessageDeflater::new();
        let text = "x".repeat(300);
        let plain = crate::data_frame(true, text.as_bytes());
        assert!(deflater.recompress(&plain, 256).is_none(), "longer than the client's window");
        let frame = deflater.recompress(&plain, 512).unwrap();
        assert_eq!(inflate(split_frame(&frame).unwrap().1), text.as_bytes());
        assert!(deflater.recompress(&frame, 512).is_none(), "already compressed");
        assert!(deflater.recompress(&crate::close_frame(crate::CloseCode::Normal, &text), 512).is_none());
    }
}
