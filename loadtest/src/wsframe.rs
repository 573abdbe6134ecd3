//! The few WebSocket pieces a load-generating client needs, sans IO: finding whole server frames
//! in a buffer, and writing masked client frames.

/// Where one complete server frame sits in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    /// FIN bit and opcode, as the first header byte.
    pub opcode: u8,
    pub fin: bool,
    /// RSV1: a compressed message (permessage-deflate).
    pub rsv1: bool,
    /// Payload start and end in the buffer.
    pub payload: (usize, usize),
    /// Where the next frame starts.
    pub next: usize,
}

/// Why a buffer does not hold a usable frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the server sent a masked frame")]
    Masked,
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(u64),
}

/// Largest server frame accepted.
pub const MAX_FRAME: u64 = 16 << 20;

/// Looks for one complete frame at the start of `buf`. `Ok(None)` means more bytes are needed.
pub fn parse_frame(buf: &[u8], at: usize) -> Result<Option<FrameRef>, FrameError> {
    let b = &buf[at..];
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let (len, header) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => (u64::from_be_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]), 10),
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let end = header + len as usize;
    if b.len() < end {
        return Ok(None);
    }
    Ok(Some(FrameRef {
        opcode: b[0] & 0x0f,
        fin: b[0] & 0x80 != 0,
        rsv1: b[0] & 0x40 != 0,
        payload: (at + header, at + end),
        next: at + end,
    }))
}

/// Appends a masked client frame (clients must mask, RFC 6455 §5.3).
pub fn write_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_whole_frames_and_waits_for_partial_ones() {
        let mut buf = vec![0x81, 3, b'a', b'b', b'c', 0x81, 126, 0x01, 0x00];
        buf.extend(std::iter::repeat_n(b'x', 200));
        let f = parse_frame(&buf, 0).unwrap().unwrap();
        assert_eq!((f.opcode, f.fin, f.rsv1, f.payload, f.next), (1, true, false, (2, 5), 5));
        assert_eq!(parse_frame(&buf, 5).unwrap(), None, "256-byte payload, 200 present");
        buf.extend(std::iter::repeat_n(b'x', 56));
        let g = parse_frame(&buf, 5).unwrap().unwrap();
        assert_eq!(g.payload, (9, 265));
        assert_eq!(parse_frame(&[0x81, 0x81, 0, 0, 0, 0, 0], 0), Err(FrameError::Masked));
    }

    #[test]
    fn client_frames_are_masked() {
        let mut out = Vec::new();
        write_client_frame(&mut out, 1, b"hi", [1, 2, 3, 4]);
        assert_eq!(out, [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
    }
}
