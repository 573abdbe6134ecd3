//! The few WebSocket pieces a load-generating client needs, sans IO: finding whole server frames
//! in a buffer, and writing masked client frames.

/// Where one complete server frame sits in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    /// FIN bit and opcode, as the first header byte.
    pub opcode: u8,
    pub fin: bool,
    /// The RSV1-3 bits: RSV1 marks a compressed message where permessage-deflate was agreed;
    /// any other set is a broken frame.
    pub rsv: u8,
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
        rsv: b[0] & 0x70,
        payload: (at + header, at + end),
        next: at + end,
    }))
}

/// Whether a frame is one this client reads: whole (FIN, no fragmentation is used), no RSV bit
/// but RSV1 on a text message where permessage-deflate was agreed (`deflate`), and text, close,
/// ping or pong (binary and reserved opcodes are not the protocol's).
pub fn is_readable(frame: &FrameRef, deflate: bool) -> bool {
    let rsv_ok = frame.rsv == 0 || (deflate && frame.rsv == 0x40 && frame.opcode == 1);
    frame.fin && rsv_ok && matches!(frame.opcode, 1 | 8 | 9 | 0xA)
}

/// The `Sec-WebSocket-Key` every connection sends (RFC 6455 §1.3's example).
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The `Sec-WebSocket-Accept` a server must answer [`WS_KEY`] with (SHA-1 and base64 of the key
/// and the protocol's GUID, RFC 6455 §4.2.2).
pub fn expected_accept() -> String {
    tungstenite::handshake::derive_accept_key(WS_KEY.as_bytes())
}

/// Whether the response head (up to the blank line) accepts the upgrade: status 101, an
/// `Upgrade: websocket` header, and the `Sec-WebSocket-Accept` of the key sent.
pub fn upgrade_accepted(head: &[u8], accept: &str) -> bool {
    let Ok(head) = std::str::from_utf8(head) else { return false };
    let mut lines = head.split("\r\n");
    let status_ok = lines.next().is_some_and(|l| l.starts_with("HTTP/1.1 101"));
    let (mut upgrade, mut accepted) = (false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("upgrade") {
            upgrade = value.eq_ignore_ascii_case("websocket");
        } else if name.trim().eq_ignore_ascii_case("sec-websocket-accept") {
            accepted = value == accept;
        }
    }
    status_ok && upgrade && accepted
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
        assert_eq!((f.opcode, f.fin, f.rsv, f.payload, f.next), (1, true, 0, (2, 5), 5));
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

    #[test]
    fn fragments_rsv_bits_binary_and_reserved_opcodes_are_not_readable() {
        let frame = |b0: u8| parse_frame(&[b0, 0], 0).unwrap().unwrap();
        for ok in [0x81, 0x88, 0x89, 0x8A] {
            assert!(is_readable(&frame(ok), false), "{ok:#x}");
            assert!(is_readable(&frame(ok), true), "{ok:#x}");
        }
        for broken in [0x01, 0x80, 0x82, 0x83, 0x87, 0x8B, 0x8F, 0xC1, 0xA1, 0x91, 0x72] {
            assert!(!is_readable(&frame(broken), false), "{broken:#x}");
        }
        // RSV1 on a text message: compressed where permessage-deflate was agreed, broken otherwise.
        assert!(is_readable(&frame(0xC1), true));
        for broken in [0xA1, 0x91, 0xC8, 0xC9, 0xE1, 0x41] {
            assert!(!is_readable(&frame(broken), true), "{broken:#x}");
        }
    }

    #[test]
    fn an_upgrade_needs_101_upgrade_and_the_right_accept() {
        // RFC 6455 §1.3: this key's accept value.
        let accept = expected_accept();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let good = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        assert!(upgrade_accepted(good, &accept));
        for bad in [
            &b"HTTP/1.1 101 whatever\r\nX: y"[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket",
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: AAAA",
            b"HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        ] {
            assert!(!upgrade_accepted(bad, &accept), "{}", String::from_utf8_lossy(bad));
        }
    }
}
