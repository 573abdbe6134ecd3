//! `utf8_watch`: client byte streams fed in arbitrary chops into `tickgate_protocol::inbound::Utf8Watch`.
//!
//! Contract: never panics, and chopping never changes the verdict. Fed one byte at a time, the
//! watcher fails at some byte `E` (or never); fed whole it must fail iff `E` exists, and fed in
//! any other chops the first chunk that fails must be the one holding byte `E`.
//!
//! In structured mode the input describes frames (so mutations keep the framing and explore the
//! text), and an independent model decides where the stream first becomes invalid: the first
//! byte after which a text message's bytes can no longer be UTF-8 (RFC 6455 §8.1, "as soon as"),
//! or the last byte of a final text frame whose message ends inside a character. The watcher,
//! fed byte by byte, must fail exactly there.
//!
//! Input format (missing bytes read as 0):
//! `[mode] [cuts] [cut sizes...]` then the stream.
//! - mode `& 1`: 0 raw (the rest of the input is the stream), 1 structured.
//! - cuts `% 16` bytes of chunk sizes follow, each `byte + 1`, used in a cycle (none: halves).
//! - structured frames, until the input ends: `[h] [len] [mask: 4] [payload...]`, with
//!   h bit 7 FIN, bits 0..3 opcode, bits 4..5 both set = unmasked, bit 6 sets RSV1;
//!   len: `% 4` chooses the encoding (0, 3: shortest; 1: 16-bit; 2: 64-bit) and the length is
//!   `(len >> 2) * 5` (0..=315, so payloads cross the watcher's 256-byte chunks); the payload
//!   bytes in the input are plain text, masked here; a payload cut short by the input's end
//!   leaves the stream inside that frame.

use arbitrary::{Arbitrary, Unstructured};
use tickgate_protocol::inbound::{InvalidUtf8, Utf8Watch};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub masked: bool,
    /// 0: shortest, 1: 16-bit, 2: 64-bit.
    pub len_encoding: u8,
    pub declared_len: usize,
    pub mask: [u8; 4],
    /// Plain text; shorter than `declared_len` when the stream ends inside the frame.
    pub payload: Vec<u8>,
}

impl Frame {
    fn header(&self) -> Vec<u8> {
        let mut h = vec![u8::from(self.fin) << 7 | u8::from(self.rsv1) << 6 | self.opcode];
        let m = if self.masked { 0x80 } else { 0 };
        let len = self.declared_len;
        match self.len_encoding {
            1 => {
                h.push(m | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
            2 => {
                h.push(m | 127);
                h.extend_from_slice(&(len as u64).to_be_bytes());
            }
            _ if len < 126 => h.push(m | len as u8),
            _ => {
                h.push(m | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        if self.masked {
            h.extend_from_slice(&self.mask);
        }
        h
    }

    fn wire_payload(&self) -> Vec<u8> {
        if !self.masked {
            return self.payload.clone();
        }
        self.payload.iter().enumerate().map(|(i, b)| b ^ self.mask[i % 4]).collect()
    }
}

#[derive(Debug, Clone)]
pub enum Stream {
    Raw(Vec<u8>),
    Frames(Vec<Frame>),
}

#[derive(Debug, Clone)]
pub struct Input {
    /// Chunk sizes, used in a cycle.
    pub cuts: Vec<usize>,
    pub stream: Stream,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let byte = |u: &mut Unstructured<'_>| u8::arbitrary(u);
        let structured = byte(u)? & 1 == 1;
        let n = byte(u)? % 16;
        let mut cuts = Vec::new();
        for _ in 0..n {
            cuts.push(usize::from(byte(u)?) + 1);
        }
        if !structured {
            return Ok(Input { cuts, stream: Stream::Raw(u.bytes(u.len())?.to_vec()) });
        }
        let mut frames = Vec::new();
        while !u.is_empty() {
            let h = byte(u)?;
            let l = byte(u)?;
            let mut mask = [0u8; 4];
            for m in &mut mask {
                *m = byte(u)?;
            }
            let declared_len = usize::from(l >> 2) * 5;
            let payload = u.bytes(declared_len.min(u.len()))?.to_vec();
            frames.push(Frame {
                fin: h & 0x80 != 0,
                rsv1: h & 0x40 != 0,
                opcode: h & 0x0f,
                masked: h & 0x30 != 0x30,
                len_encoding: match l & 3 {
                    1 => 1,
                    2 => 2,
                    _ => 0,
                },
                declared_len,
                mask,
                payload,
            });
        }
        Ok(Input { cuts, stream: Stream::Frames(frames) })
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::arbitrary(&mut u)
    }
}

impl Input {
    pub fn bytes(&self) -> Vec<u8> {
        match &self.stream {
            Stream::Raw(bytes) => bytes.clone(),
            Stream::Frames(frames) => {
                let mut out = Vec::new();
                for f in frames {
                    out.extend(f.header());
                    out.extend(f.wire_payload());
                }
                out
            }
        }
    }
}

/// Feeds `stream` one byte at a time: the index of the byte that failed, if one did.
pub fn first_failure(stream: &[u8]) -> Option<usize> {
    let mut w = Utf8Watch::new();
    stream.iter().position(|b| w.feed(std::slice::from_ref(b)).is_err())
}

/// Feeds `stream` in chunks of `sizes` (cycled); returns the byte range of the chunk that failed.
fn chopped_failure(stream: &[u8], sizes: &[usize]) -> Option<(usize, usize)> {
    let mut w = Utf8Watch::new();
    let mut at = 0;
    for &size in sizes.iter().cycle() {
        if at >= stream.len() {
            return None;
        }
        let end = (at + size).min(stream.len());
        if w.feed(&stream[at..end]) == Err(InvalidUtf8) {
            return Some((at, end));
        }
        at = end;
    }
    unreachable!()
}

/// The model: the index of the byte at which the stream first can no longer hold valid text.
pub fn model_failure(frames: &[Frame]) -> Option<usize> {
    let mut at = 0; // stream index of the frame's first byte
    let mut in_text = false;
    let mut message: Vec<u8> = Vec::new();
    for f in frames {
        let header_len = f.header().len();
        if !f.masked {
            return None; // the watcher stops watching; the frame parser rejects the stream
        }
        let text = match f.opcode {
            0x1 => {
                in_text = true;
                message.clear();
                true
            }
            0x0 => in_text,
            0x2 => {
                in_text = false;
                false
            }
            _ => false,
        };
        if text {
            let start = message.len();
            message.extend_from_slice(&f.payload);
            if let Some(bad) = first_invalid_prefix(&message) {
                if bad >= start {
                    return Some(at + header_len + (bad - start));
                }
            }
            let complete = f.payload.len() == f.declared_len;
            if complete && f.fin {
                in_text = false;
                if std::str::from_utf8(&message).is_err() {
                    // Ends inside a character: known at the frame's last byte.
                    return Some(at + header_len + f.payload.len() - 1);
                }
                message.clear();
            }
        }
        at += header_len + f.payload.len();
    }
    None
}

/// The smallest `k` such that `bytes[..=k]` is no prefix of any UTF-8 text.
fn first_invalid_prefix(bytes: &[u8]) -> Option<usize> {
    let invalid = |k: usize| matches!(std::str::from_utf8(&bytes[..=k]), Err(e) if e.error_len().is_some());
    if bytes.is_empty() || !invalid(bytes.len() - 1) {
        return None;
    }
    // Monotone: once no text starts so, no longer prefix does either.
    let (mut lo, mut hi) = (0, bytes.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if invalid(mid) { hi = mid } else { lo = mid + 1 }
    }
    Some(lo)
}

pub fn check(input: &Input) {
    let stream = input.bytes();
    let first = first_failure(&stream);

    let whole = Utf8Watch::new().feed(&stream);
    assert_eq!(whole.is_err(), first.is_some(), "fed whole: {whole:?}; fed byte by byte: fails at {first:?}");

    let halves = [stream.len().div_ceil(2).max(1)];
    let sizes = if input.cuts.is_empty() { &halves[..] } else { &input.cuts[..] };
    let chopped = chopped_failure(&stream, sizes);
    match (first, chopped) {
        (None, None) => {}
        (Some(e), Some((from, to))) if from <= e && e < to => {}
        _ => panic!("chopped in {sizes:?}: fails in {chopped:?}; fed byte by byte: fails at {first:?}"),
    }

    if let Stream::Frames(frames) = &input.stream {
        let model = model_failure(frames);
        assert_eq!(first, model, "the watcher (byte by byte) fails at {first:?}, the model at {model:?}");
    }
}
