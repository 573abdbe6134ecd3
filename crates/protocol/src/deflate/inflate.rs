//! Inflating client messages (permessage-deflate, RFC 7692 §7.2.2), sans IO, in front of the
//! frame parser.
//!
//! [`InboundInflate`] follows the frame structure of the client's byte stream. Frames of
//! uncompressed messages and control frames pass through unchanged. The frames of a compressed
//! message (RSV1 on its first frame) are collected (unmasked) until its final frame, then the
//! whole message is inflated at once and handed on as one final frame of the message's opcode,
//! RSV1 clear, masked with a zero key: the frame parser and the UTF-8 check downstream see an
//! ordinary message. The client was answered `client_no_context_takeover`, so every message
//! inflates on its own, with a [`MessageInflater`] that its owner (one per reactor) lends for
//! the call: no connection keeps a decompression context.
//!
//! Bounds: the compressed bytes of a message and its inflated size are both held to the
//! message size limit; inflating stops as soon as the output passes it ([`InflateError::TooBig`],
//! 1009), so a deflate bomb costs at most that much memory.

use flate2::{Decompress, FlushDecompress, Status};

/// What a sync flush leaves at the end of a message and RFC 7692 strips: put back to inflate.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Buffers kept between messages past this capacity are given back.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Why the client's stream cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// The message, compressed or inflated, is longer than the limit (close 1009).
    #[error("compressed message inflates past the limit of {limit} bytes")]
    TooBig { limit: usize },
    /// The compressed data is not valid deflate (close 1007).
    #[error("compressed message is not valid deflate data")]
    BadData,
    /// Frames that break RFC 7692 (close 1002).
    #[error("{0}")]
    Protocol(&'static str),
}

/// A raw-deflate decompressor reset for each message, and the buffer it inflates into.
pub struct MessageInflater {
    decompress: Decompress,
    out: Vec<u8>,
    /// Messages inflated, and their bytes before and after.
    pub messages: u64,
    pub compressed_bytes: u64,
    pub inflated_bytes: u64,
}

impl std::fmt::Debug for MessageInflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageInflater").field("messages", &self.messages).finish_non_exhaustive()
    }
}

impl Default for MessageInflater {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageInflater {
    pub fn new() -> Self {
        Self {
            decompress: Decompress::new(false),
            out: Vec::new(),
            messages: 0,
            compressed_bytes: 0,
            inflated_bytes: 0,
        }
    }

    /// Inflates one whole message (its sync tail already put back), at most `limit` bytes.
    pub fn inflate(&mut self, input: &[u8], limit: usize) -> Result<&[u8], InflateError> {
        self.decompress.reset(false);
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        }
        self.out.clear();
        let mut consumed = 0usize;
        loop {
            if self.out.len() == self.out.capacity() {
                // Grow geometrically, never past one byte over the limit.
                let room = self.out.capacity().max(1024).min(limit.saturating_add(1) - self.out.len());
                self.out.reserve_exact(room);
            }
            let (in_before, out_before) = (self.decompress.total_in(), self.out.len());
            let status = self
                .decompress
                .decompress_vec(&input[consumed..], &mut self.out, FlushDecompress::Sync)
                .map_err(|_| InflateError::BadData)?;
            let took = usize::try_from(self.decompress.total_in() - in_before).map_err(|_| InflateError::BadData)?;
            consumed += took;
            if self.out.len() > limit {
                return Err(InflateError::TooBig { limit });
            }
            let room_left = self.out.len() < self.out.capacity();
            match status {
                Status::StreamEnd => break,
                _ if consumed == input.len() && room_left => break,
                _ if took == 0 && self.out.len() == out_before && room_left => return Err(InflateError::BadData),
                _ => {}
            }
        }
        self.messages += 1;
        self.compressed_bytes += input.len().saturating_sub(SYNC_TAIL.len()) as u64;
        self.inflated_bytes += self.out.len() as u64;
        Ok(&self.out)
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting a frame header (at most 14 bytes).
    Header { buf: [u8; 14], have: u8 },
    /// Copying a frame through unchanged.
    Through { remaining: u64 },
    /// Collecting a frame of a compressed message.
    Collect { remaining: u64, mask: [u8; 4], offset: u8, fin: bool },
}

/// One connection's inflating filter (see the module documentation).
#[derive(Debug)]
pub struct InboundInflate {
    state: State,
    /// The opcode of the compressed message being collected.
    message: Option<u8>,
    /// Its payload so far, unmasked.
    compressed: Vec<u8>,
    /// Frames folded into the one handed on, wrapping (the frame rate counts what came in).
    merged: u16,
    /// The largest message, compressed or inflated.
    max_message: usize,
}

impl InboundInflate {
    pub fn new(max_message: usize) -> Self {
        Self {
            state: State::Header { buf: [0; 14], have: 0 },
            message: None,
            compressed: Vec::new(),
            merged: 0,
            max_message,
        }
    }

    /// Frames received that were folded into others, wrapping at 2^16: add the difference of
    /// two readings to the frames the parser saw for the frames the client sent.
    pub fn merged(&self) -> u16 {
        self.merged
    }

    /// Feeds bytes read from the client; appends what the frame parser is to read to `out`.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        inflater: &mut MessageInflater,
    ) -> Result<(), InflateError> {
        while !input.is_empty() {
            match &mut self.state {
                State::Header { buf, have } => {
                    let h = usize::from(*have);
                    buf[h] = input[0];
                    *have += 1;
                    input = &input[1..];
                    let (buf, have) = (*buf, h + 1);
                    if let Some(next) = self.header_done(&buf[..have], out)? {
                        self.state = next;
                        if let State::Collect { remaining: 0, fin, .. } = next {
                            self.end_collect(fin, out, inflater)?;
                        } else if let State::Through { remaining: 0 } = next {
                            self.state = State::Header { buf: [0; 14], have: 0 };
                        }
                    }
                }
                State::Through { remaining } => {
                    let take = (*remaining).min(input.len() as u64) as usize;
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::Header { buf: [0; 14], have: 0 };
                    }
                }
                State::Collect { remaining, mask, offset, fin } => {
                    let take = (*remaining).min(input.len() as u64) as usize;
                    let start = usize::from(*offset);
                    self.compressed.extend(input[..take].iter().enumerate().map(|(i, b)| b ^ mask[(start + i) % 4]));
                    *offset = ((start + take) % 4) as u8;
                    input = &input[take..];
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        let fin = *fin;
                        self.end_collect(fin, out, inflater)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The state after a whole header `h`, or `None` while it is incomplete.
    fn header_done(&mut self, h: &[u8], out: &mut Vec<u8>) -> Result<Option<State>, InflateError> {
        if h.len() < 2 {
            return Ok(None);
        }
        let masked = h[1] & 0x80 != 0;
        let (len, at) = match h[1] & 0x7f {
            126 if h.len() >= 4 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 if h.len() >= 10 => (u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]), 10),
            126 | 127 => return Ok(None),
            n => (u64::from(n), 2),
        };
        let header_len = at + if masked { 4 } else { 0 };
        if h.len() < header_len {
            return Ok(None);
        }
        let (first, opcode) = (h[0], h[0] & 0x0f);
        let rsv1 = first & 0x40 != 0;
        let control = opcode & 0x08 != 0;
        let compressed = match (control, opcode, self.message) {
            (true, _, _) => false,
            (false, 0, Some(_)) if rsv1 => return Err(InflateError::Protocol("RSV1 set on a continuation frame")),
            (false, 0, Some(_)) => true,
            (false, 0, None) => false,
            (false, _, Some(_)) => {
                return Err(InflateError::Protocol("a new message began before the compressed one ended"));
            }
            (false, _, None) => rsv1,
        };
        if !compressed {
            // The parser judges it (and refuses RSV1 on a control frame, or RSV2/RSV3).
            out.extend_from_slice(h);
            return Ok(Some(State::Through { remaining: len }));
        }
        if !masked {
            return Err(InflateError::Protocol("unmasked frame from a client"));
        }
        let total = usize::try_from(len).ok().and_then(|len| len.checked_add(self.compressed.len()));
        if total.is_none_or(|total| total > self.max_message) {
            return Err(InflateError::TooBig { limit: self.max_message });
        }
        if opcode == 0 {
            self.merged = self.merged.wrapping_add(1);
        } else {
            self.message = Some(opcode);
            self.compressed.clear();
        }
        let mask = [h[at], h[at + 1], h[at + 2], h[at + 3]];
        Ok(Some(State::Collect { remaining: len, mask, offset: 0, fin: first & 0x80 != 0 }))
    }

    /// A frame of the compressed message is in; the message is inflated once its final frame is.
    fn end_collect(
        &mut self,
        fin: bool,
        out: &mut Vec<u8>,
        inflater: &mut MessageInflater,
    ) -> Result<(), InflateError> {
        self.state = State::Header { buf: [0; 14], have: 0 };
        if !fin {
            return Ok(());
        }
        let opcode = self.message.take().unwrap_or(0x1);
        self.compressed.extend_from_slice(&SYNC_TAIL);
        let inflated = inflater.inflate(&self.compressed, self.max_message)?;
        let len = inflated.len();
        out.push(0x80 | opcode);
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            out.push(0x80 | 126);
            out.extend_from_slice(&short.to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        // A zero masking key: the payload goes through unchanged.
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(inflated);
        if self.compressed.capacity() > KEEP_CAPACITY {
            self.compressed = Vec::new();
        }
        self.compressed.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::MessageDeflater;
    use crate::ws::split_frame;

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn compressed(payload: &[u8]) -> Vec<u8> {
        let f = MessageDeflater::new().frame(0x1, payload).unwrap();
        split_frame(&f).unwrap().1.to_vec()
    }

    /// The frames the parser would see: (first byte, unmasked payload).
    fn frames(mut s: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        while !s.is_empty() {
            let (len, at) = match s[1] & 0x7f {
                126 => (u16::from_be_bytes([s[2], s[3]]) as usize, 4),
                127 => (u64::from_be_bytes(s[2..10].try_into().unwrap()) as usize, 10),
                n => (n as usize, 2),
            };
            let mask = &s[at..at + 4];
            let payload = s[at + 4..at + 4 + len].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            v.push((s[0], payload));
            s = &s[at + 4 + len..];
        }
        v
    }

    fn run(stream: &[u8], split: usize, max: usize) -> Result<Vec<u8>, InflateError> {
        let (mut f, mut i, mut out) = (InboundInflate::new(max), MessageInflater::new(), Vec::new());
        f.feed(&stream[..split], &mut out, &mut i)?;
        f.feed(&stream[split..], &mut out, &mut i)?;
        Ok(out)
    }

    #[test]
    fn inflates_compressed_messages_and_passes_the_rest() {
        let text = r#"{"op":"subscribe","symbols":["AAPL","MSFT","AAPL","MSFT","AAPL","MSFT","AAPL","MSFT"]}"#;
        let deflated = compressed(text.as_bytes());
        let (a, b) = deflated.split_at(deflated.len() / 2);
        let mut stream = frame(0x41, a); // RSV1, text, not final
        stream.extend(frame(0x89, b"hi")); // a ping in between
        stream.extend(frame(0x80, b)); // the final continuation
        stream.extend(frame(0x81, b"{\"op\":\"list_symbols\"}")); // uncompressed
        stream.extend(frame(0xc2, &compressed(&[7u8; 500]))); // compressed binary, one frame
        for split in 0..stream.len() {
            let out = run(&stream, split, 4096).unwrap();
            let seen = frames(&out);
            assert_eq!(seen.len(), 4, "split at {split}");
            assert_eq!(seen[0], (0x89, b"hi".to_vec()));
            assert_eq!(seen[1], (0x81, text.as_bytes().to_vec()));
            assert_eq!(seen[2], (0x81, b"{\"op\":\"list_symbols\"}".to_vec()));
            assert_eq!(seen[3], (0x82, vec![7u8; 500]));
        }
        let (mut f, mut i, mut out) = (InboundInflate::new(4096), MessageInflater::new(), Vec::new());
        f.feed(&stream, &mut out, &mut i).unwrap();
        assert_eq!(f.merged(), 1, "two frames of the first message became one");
        assert_eq!(i.messages, 2);
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_limit() {
        let bomb = compressed(&vec![b'a'; 10 << 20]);
        assert!(bomb.len() < 16 * 1024, "{} compressed bytes", bomb.len());
        let stream = frame(0xc1, &bomb);
        assert_eq!(run(&stream, 0, 16 * 1024), Err(InflateError::TooBig { limit: 16 * 1024 }));
        let mut i = MessageInflater::new();
        let mut input = bomb.clone();
        input.extend_from_slice(&SYNC_TAIL);
        assert!(i.inflate(&input, 1 << 16).is_err());
        assert!(i.out.capacity() <= (1 << 16) + 1 + 1024, "never grew past the limit: {}", i.out.capacity());
        assert_eq!(i.inflate(&input, 11 << 20).map(<[u8]>::len), Ok(10 << 20));
    }

    #[test]
    fn refuses_what_rfc_7692_forbids() {
        let deflated = compressed(&[b'x'; 100]);
        let mut stream = frame(0x41, &deflated[..3]);
        stream.extend(frame(0xc0, &deflated[3..]));
        assert_eq!(run(&stream, 0, 4096), Err(InflateError::Protocol("RSV1 set on a continuation frame")));
        let mut stream = frame(0x41, &deflated[..3]);
        stream.extend(frame(0x81, b"{}"));
        assert!(matches!(run(&stream, 0, 4096), Err(InflateError::Protocol(_))));
        assert_eq!(run(&frame(0xc1, &[0xff; 40]), 0, 4096), Err(InflateError::BadData));
        let big = frame(0xc1, &[0u8; 5000]);
        assert_eq!(run(&big, 4, 4096), Err(InflateError::TooBig { limit: 4096 }), "refused at the header");
    }

    #[test]
    fn empty_compressed_messages() {
        // An empty message compresses to a single 0x00 byte (RFC 7692 §7.2.3.6); and to nothing.
        for payload in [&[0x00u8][..], &[]] {
            let out = run(&frame(0xc1, payload), 0, 64).unwrap();
            assert_eq!(frames(&out), vec![(0x81, vec![])]);
        }
    }
}
