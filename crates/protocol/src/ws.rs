//! Server-to-client WebSocket frames (RFC 6455 §5.2).
//!
//! Frames from a server are never masked, so one buffer serves every client. A
//! [`FrameBuilder`] keeps a scratch buffer with room for the largest header in front of the
//! payload: the payload is encoded once, the header written in front of it, and the whole frame
//! copied once into a shared [`Frame`].

use tickgate_core::Frame;

use crate::deflate::{DeflateCounts, MessageDeflater};

/// Largest header of an unmasked frame: 2 bytes + 8 bytes of extended length.
pub const MAX_HEADER_LEN: usize = 10;

pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
pub(crate) const FIN: u8 = 0x80;
/// RSV1: the message is compressed (permessage-deflate, RFC 7692 §6).
pub(crate) const RSV1: u8 = 0x40;

/// The first byte and payload of one whole unmasked frame built here (header and payload, no
/// more, no less), or `None` for anything else.
pub fn split_frame(frame: &[u8]) -> Option<(u8, &[u8])> {
    let (&first, rest) = frame.split_first()?;
    let (&second, rest) = rest.split_first()?;
    if second & 0x80 != 0 {
        return None;
    }
    let (len, rest) = match second {
        126 => {
            let (len, rest) = rest.split_at_checked(2)?;
            (usize::from(u16::from_be_bytes([len[0], len[1]])), rest)
        }
        127 => {
            let (len, rest) = rest.split_at_checked(8)?;
            (usize::try_from(u64::from_be_bytes(len.try_into().ok()?)).ok()?, rest)
        }
        n => (usize::from(n), rest),
    };
    (rest.len() == len).then_some((first, rest))
}

/// Writes the header of an unmasked, final frame into the end of `dst`; returns its length.
fn write_header(dst: &mut [u8; MAX_HEADER_LEN], opcode: u8, payload_len: usize) -> usize {
    write_header_first(dst, FIN | opcode, payload_len)
}

/// Writes the header of an unmasked frame with first byte `first` (FIN, RSV bits, opcode) into
/// the end of `dst`; returns its length.
pub(crate) fn write_header_first(dst: &mut [u8; MAX_HEADER_LEN], first: u8, payload_len: usize) -> usize {
    if payload_len < 126 {
        dst[8] = first;
        dst[9] = payload_len as u8;
        2
    } else if payload_len <= usize::from(u16::MAX) {
        dst[6] = first;
        dst[7] = 126;
        dst[8..10].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        dst[0] = first;
        dst[1] = 127;
        dst[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// Builds text frames from payloads encoded in place, reusing one scratch buffer; and, for
/// connections that agreed to permessage-deflate, compressed ones (the compressor is made the
/// first time one is asked for).
#[derive(Debug)]
pub struct FrameBuilder {
    scratch: Vec<u8>,
    built: u64,
    deflater: Option<Box<MessageDeflater>>,
}

impl Default for FrameBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameBuilder {
    pub fn new() -> Self {
        Self { scratch: Vec::with_capacity(512), built: 0, deflater: None }
    }

    /// Encodes a payload with `encode` and returns it as one complete text frame.
    pub fn text(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Frame {
        self.text_for(0, encode)
    }

    /// [`FrameBuilder::text`] for one connection: compressed (RSV1) when it agreed to
    /// permessage-deflate for payloads of at most `deflate_max_len` bytes (`0`: it did not), the
    /// payload fits, and compression makes it smaller; plain otherwise.
    pub fn text_for(&mut self, deflate_max_len: usize, encode: impl FnOnce(&mut Vec<u8>)) -> Frame {
        self.scratch.clear();
        self.scratch.extend_from_slice(&[0; MAX_HEADER_LEN]);
        encode(&mut self.scratch);
        self.built += 1;
        let payload_len = self.scratch.len() - MAX_HEADER_LEN;
        if payload_len <= deflate_max_len {
            if let Some(frame) = self.deflate_last() {
                return frame;
            }
        }
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = write_header(&mut header, OP_TEXT, payload_len);
        let start = MAX_HEADER_LEN - header_len;
        self.scratch[start..MAX_HEADER_LEN].copy_from_slice(&header[start..]);
        Frame::from_bytes(&self.scratch[start..])
    }

    /// The last frame's payload compressed into a frame of its own (RSV1), or `None` when
    /// that does not make it smaller. The ingest thread compresses each tick this way once, for
    /// every connection that agreed to permessage-deflate.
    pub fn deflate_last(&mut self) -> Option<Frame> {
        let payload = self.scratch.get(MAX_HEADER_LEN..).unwrap_or_default();
        self.deflater.get_or_insert_with(Box::default).frame(OP_TEXT, payload)
    }

    /// A whole uncompressed data frame (a reply, an echo) compressed for a connection that
    /// agreed to permessage-deflate for payloads of at most `deflate_max_len` bytes; `None`
    /// when it goes as it is.
    pub fn recompress(&mut self, frame: &[u8], deflate_max_len: usize) -> Option<Frame> {
        if deflate_max_len == 0 {
            return None;
        }
        self.deflater.get_or_insert_with(Box::default).recompress(frame, deflate_max_len)
    }

    /// [`FrameBuilder::recompress`] for the echo route: every data message compressed, messages
    /// longer than `deflate_max_len` as stored blocks.
    pub fn recompress_always(&mut self, frame: &[u8], deflate_max_len: usize) -> Option<Frame> {
        if deflate_max_len == 0 {
            return None;
        }
        self.deflater.get_or_insert_with(Box::default).recompress_always(frame, deflate_max_len)
    }

    /// What the compressor did so far (zero before it was first used).
    pub fn deflate_counts(&self) -> DeflateCounts {
        self.deflater.as_ref().map(|d| d.counts()).unwrap_or_default()
    }

    /// Frames built by this builder so far.
    pub fn frames_built(&self) -> u64 {
        self.built
    }

    /// The payload of the last frame built (for tests and logs).
    pub fn last_payload(&self) -> &[u8] {
        self.scratch.get(MAX_HEADER_LEN..).unwrap_or_default()
    }
}

/// One whole unfragmented text or binary frame carrying `payload` (used by the echo route).
pub fn data_frame(text: bool, payload: &[u8]) -> Frame {
    let mut header = [0u8; MAX_HEADER_LEN];
    let header_len = write_header(&mut header, if text { OP_TEXT } else { OP_BINARY }, payload.len());
    let mut frame = Vec::with_capacity(header_len + payload.len());
    frame.extend_from_slice(&header[MAX_HEADER_LEN - header_len..]);
    frame.extend_from_slice(payload);
    Frame::from_bytes(&frame)
}

/// A ping frame with an empty payload.
pub fn ping_frame() -> Frame {
    Frame::from_bytes(&[FIN | OP_PING, 0])
}

/// Close codes tickgate sends (RFC 6455 §7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    Normal = 1000,
    GoingAway = 1001,
    ProtocolError = 1002,
    InvalidPayload = 1007,
    PolicyViolation = 1008,
    MessageTooBig = 1009,
    InternalError = 1011,
}

/// A close frame with `code` and a reason (cut to fit the 123 bytes a control frame allows).
pub fn close_frame(code: CloseCode, reason: &str) -> Frame {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = &reason.as_bytes()[..cut];
    let mut frame = Vec::with_capacity(4 + reason.len());
    frame.push(FIN | OP_CLOSE);
    frame.push((2 + reason.len()) as u8);
    frame.extend_from_slice(&(code as u16).to_be_bytes());
    frame.extend_from_slice(reason);
    Frame::from_bytes(&frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes an unmasked frame: (fin+opcode byte, payload).
    fn decode(frame: &[u8]) -> (u8, &[u8]) {
        assert_eq!(frame[1] & 0x80, 0, "server frames are unmasked");
        let (len, offset) = match frame[1] & 0x7f {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize, 10),
            n => (n as usize, 2),
        };
        assert_eq!(frame.len(), offset + len, "one whole frame");
        (frame[0], &frame[offset..])
    }

    #[test]
    fn text_frames_use_the_shortest_length_encoding() {
        let mut builder = FrameBuilder::new();
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let frame = builder.text(|out| out.extend(std::iter::repeat_n(b'x', len)));
            let header_len = frame.len() - len;
            assert_eq!(
                header_len,
                if len < 126 {
                    2
                } else if len <= 65_535 {
                    4
                } else {
                    10
                }
            );
            let (first, payload) = decode(&frame);
            assert_eq!(first, 0x81);
            assert_eq!(payload.len(), len);
        }
    }

    #[test]
    fn data_and_ping_frames() {
        let frame = data_frame(false, &[1, 2, 3]);
        assert_eq!(decode(&frame), (0x82, &[1u8, 2, 3][..]));
        let big = vec![7u8; 70_000];
        let frame = data_frame(true, &big);
        assert_eq!(decode(&frame), (0x81, &big[..]));
        assert_eq!(&*ping_frame(), &[0x89, 0]);
    }

    #[test]
    fn close_frames_carry_code_and_a_cut_reason() {
        let frame = close_frame(CloseCode::PolicyViolation, "slow consumer");
        let (first, payload) = decode(&frame);
        assert_eq!(first, 0x88);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
        assert_eq!(&payload[2..], b"slow consumer");
        let long = "é".repeat(100);
        let frame = close_frame(CloseCode::GoingAway, &long);
        let (_, payload) = decode(&frame);
        assert!(payload.len() <= 125);
        assert!(std::str::from_utf8(&payload[2..]).is_ok(), "cut on a character boundary");
    }
}
