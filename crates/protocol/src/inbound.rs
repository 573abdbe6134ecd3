//! Fail-fast UTF-8 checking of client text messages, as bytes arrive.
//!
//! The frame parser checks a text message's UTF-8 once the whole frame is in. RFC 6455 §8.1
//! asks an endpoint to fail the connection *as soon as* it sees invalid UTF-8, so a client that
//! sends a huge text frame whose first bytes are already invalid is closed (1007) right away,
//! not after the whole frame has been buffered. [`Utf8Watch`] follows the frame structure of
//! the client's byte stream, unmasks text payloads and validates them incrementally. It never
//! changes the bytes; the frame parser still does everything else.

/// The client's byte stream holds text that is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8 in a text message")]
pub struct InvalidUtf8;

#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting a frame header.
    Header { buf: [u8; 14], have: u8 },
    /// Inside a frame's payload.
    Payload { remaining: u64, mask: [u8; 4], offset: u8, text: bool, fin: bool },
    /// Something the frame parser will reject anyway (unmasked frame, bad length): stop watching.
    Off,
}

/// Follows one client's frames and validates text payloads as they arrive.
#[derive(Debug, Clone)]
pub struct Utf8Watch {
    state: State,
    /// A fragmented text message is in progress.
    in_text: bool,
    /// Bytes of an incomplete UTF-8 sequence carried over (at most 3).
    pending: [u8; 4],
    pending_len: u8,
    /// Frame headers seen, wrapping (see [`Utf8Watch::frames`]).
    frames: u16,
}

impl Default for Utf8Watch {
    fn default() -> Self {
        Self::new()
    }
}

impl Utf8Watch {
    pub fn new() -> Self {
        Self {
            state: State::Header { buf: [0; 14], have: 0 },
            in_text: false,
            pending: [0; 4],
            pending_len: 0,
            frames: 0,
        }
    }

    /// Frames whose header has arrived, every kind counted (control, continuation, empty),
    /// wrapping at 2^16: the difference (`wrapping_sub`) of two readings is the frames between
    /// them, for spans of fewer than 65,536 frames. Stops counting once the stream holds
    /// something the frame parser rejects (an unmasked frame) or invalid text.
    pub fn frames(&self) -> u16 {
        self.frames
    }

    /// Feeds the next bytes read from the client.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return Ok(()),
                State::Header { buf, have } => {
                    buf[usize::from(*have)] = bytes[0];
                    *have += 1;
                    bytes = &bytes[1..];
                    let (buf, have) = (*buf, usize::from(*have));
                    if let Some(next) = self.header_done(&buf[..have]) {
                        self.state = next;
                        if let State::Payload { remaining: 0, fin, text, .. } = self.state {
                            self.end_frame(text, fin)?;
                        }
                    }
                }
                State::Payload { remaining, mask, offset, text, fin } => {
                    let take = (*remaining).min(bytes.len() as u64) as usize;
                    let (chunk, rest) = bytes.split_at(take);
                    bytes = rest;
                    *remaining -= take as u64;
                    let (is_text, is_fin, done) = (*text, *fin, *remaining == 0);
                    if is_text {
                        let (mask, start) = (*mask, usize::from(*offset));
                        *offset = ((start + take) % 4) as u8;
                        self.validate(chunk, mask, start)?;
                    }
                    if done {
                        self.end_frame(is_text, is_fin)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Returns the payload state once `h` holds a whole header.
    fn header_done(&mut self, h: &[u8]) -> Option<State> {
        if h.len() < 2 {
            return None;
        }
        if h[1] & 0x80 == 0 {
            return Some(State::Off);
        }
        let (len, at) = match h[1] & 0x7f {
            126 if h.len() >= 4 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 if h.len() >= 10 => (u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]), 10),
            126 | 127 => return None,
            n => (u64::from(n), 2),
        };
        if h.len() < at + 4 {
            return None;
        }
        let mask = [h[at], h[at + 1], h[at + 2], h[at + 3]];
        self.frames = self.frames.wrapping_add(1);
        let fin = h[0] & 0x80 != 0;
        let text = match h[0] & 0x0f {
            0x1 => {
                self.in_text = true;
                self.pending_len = 0;
                true
            }
            0x0 => self.in_text,
            0x2 => {
                self.in_text = false;
                false
            }
            // Control frames (and reserved opcodes, which the frame parser rejects) are not
            // text and never end the message they interrupt.
            _ => false,
        };
        Some(State::Payload { remaining: len, mask, offset: 0, text, fin })
    }

    fn end_frame(&mut self, text: bool, fin: bool) -> Result<(), InvalidUtf8> {
        self.state = State::Header { buf: [0; 14], have: 0 };
        if text && fin {
            self.in_text = false;
            if self.pending_len > 0 {
                self.pending_len = 0;
                return Err(InvalidUtf8);
            }
        }
        Ok(())
    }

    fn validate(&mut self, masked: &[u8], mask: [u8; 4], start: usize) -> Result<(), InvalidUtf8> {
        let mut piece = [0u8; 260];
        for (n, part) in masked.chunks(256).enumerate() {
            let carried = usize::from(self.pending_len);
            piece[..carried].copy_from_slice(&self.pending[..carried]);
            for (i, b) in part.iter().enumerate() {
                piece[carried + i] = b ^ mask[(start + n * 256 + i) % 4];
            }
            let len = carried + part.len();
            match std::str::from_utf8(&piece[..len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => {
                    let tail = &piece[e.valid_up_to()..len];
                    self.pending[..tail.len()].copy_from_slice(tail);
                    self.pending_len = tail.len() as u8;
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn valid_text_split_anywhere_passes() {
        let text = "κόσμε — tickgate ✓ 𝄞".as_bytes();
        let mut stream = frame(0x01, &text[..5]);
        stream.extend(frame(0x89, b"ping"));
        stream.extend(frame(0x80, &text[5..]));
        stream.extend(frame(0x82, &[0xff, 0xfe]));
        for split in 0..stream.len() {
            let mut w = Utf8Watch::new();
            assert_eq!(w.feed(&stream[..split]), Ok(()));
            assert_eq!(w.feed(&stream[split..]), Ok(()), "split at {split}");
        }
    }

    #[test]
    fn counts_every_frame_however_the_stream_is_split() {
        let mut stream = frame(0x01, b"{\"op\":");
        stream.extend(frame(0x8a, b""));
        stream.extend(frame(0x00, b""));
        stream.extend(frame(0x89, b"ping"));
        stream.extend(frame(0x80, b"1}"));
        stream.extend(frame(0x82, &[0u8; 300]));
        for split in 0..stream.len() {
            let mut w = Utf8Watch::new();
            let _ = w.feed(&stream[..split]);
            let _ = w.feed(&stream[split..]);
            assert_eq!(w.frames(), 6, "split at {split}");
        }
        let mut w = Utf8Watch::new();
        let _ = w.feed(&stream[..3]);
        assert_eq!(w.frames(), 0, "a header is counted once it is whole");
    }

    #[test]
    fn invalid_text_fails_before_the_frame_is_complete() {
        let mut payload = b"ok so far ".to_vec();
        payload.push(0xc0); // never valid in UTF-8
        payload.extend(std::iter::repeat_n(b'x', 1000));
        let stream = frame(0x81, &payload);
        let mut w = Utf8Watch::new();
        // Header (4) + mask (4) + the 11 payload bytes up to the bad one.
        assert_eq!(w.feed(&stream[..8 + 10]), Ok(()));
        assert_eq!(w.feed(&stream[18..20]), Err(InvalidUtf8));
    }

    #[test]
    fn a_sequence_cut_off_at_the_end_of_the_message_is_invalid() {
        let stream = frame(0x81, &[b'a', 0xe2, 0x82]);
        assert_eq!(Utf8Watch::new().feed(&stream), Err(InvalidUtf8));
        let mut ok = frame(0x01, &[b'a', 0xe2, 0x82]);
        ok.extend(frame(0x80, &[0xac]));
        assert_eq!(Utf8Watch::new().feed(&ok), Ok(()), "completed in the next fragment");
    }

    proptest! {
        #[test]
        fn chopping_never_changes_the_verdict(payload in proptest::collection::vec(any::<u8>(), 0..300), cut in any::<prop::sample::Index>()) {
            let stream = frame(0x81, &payload);
            let whole = Utf8Watch::new().feed(&stream).is_ok();
            prop_assert_eq!(whole, std::str::from_utf8(&payload).is_ok());
            let at = cut.index(stream.len() + 1);
            let mut w = Utf8Watch::new();
            let chopped = w.feed(&stream[..at]).is_ok() && w.feed(&stream[at..]).is_ok();
            prop_assert_eq!(chopped, whole);
        }
    }
}
