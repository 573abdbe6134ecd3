//! `Sec-WebSocket-Extensions` offers of permessage-deflate (RFC 7692 §7), and the server's
//! answer.
//!
//! The client lists offers in order of preference, several headers concatenating into one list
//! (RFC 6455 §9.1): `permessage-deflate; client_max_window_bits, permessage-deflate`. The
//! server accepts the first offer it can honour and declines the others; an offer is declined
//! (never the handshake failed) when it has an unknown parameter, a parameter twice, a value
//! where none is allowed or none where one is required, window bits outside 8..=15, or when it
//! does not follow the header grammar. Other extensions are ignored.
//!
//! tickgate answers an accepted offer with `server_no_context_takeover` and
//! `client_no_context_takeover` always (RFC 7692 §7.1.1.1, §7.1.1.2 allow both in any
//! response): every message is compressed on its own, so one compressed tick serves every
//! client, and no connection holds a compression or decompression context between messages.
//! `server_max_window_bits=N` in the accepted offer is echoed and honoured by compressing only
//! messages no longer than 2^N bytes (their back-references cannot reach further); longer ones
//! go uncompressed, which RFC 7692 §6 allows for any message.

/// Why an offer of permessage-deflate was declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decline {
    /// The element does not follow the extension grammar (RFC 6455 §9.1).
    Malformed,
    /// A parameter RFC 7692 does not define for an offer.
    UnknownParameter,
    /// The same parameter twice.
    DuplicateParameter,
    /// A value where none is allowed, none where one is required, or not a number.
    InvalidValue,
    /// Window bits outside 8..=15.
    WindowBitsOutOfRange,
}

impl Decline {
    pub const ALL: [Decline; 5] = [
        Decline::Malformed,
        Decline::UnknownParameter,
        Decline::DuplicateParameter,
        Decline::InvalidValue,
        Decline::WindowBitsOutOfRange,
    ];

    /// The label of the metric counting it.
    pub fn as_str(self) -> &'static str {
        match self {
            Decline::Malformed => "malformed",
            Decline::UnknownParameter => "unknown_parameter",
            Decline::DuplicateParameter => "duplicate_parameter",
            Decline::InvalidValue => "invalid_value",
            Decline::WindowBitsOutOfRange => "window_bits_out_of_range",
        }
    }

    /// Its position in [`Decline::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An accepted offer: what the connection compresses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// `server_max_window_bits` of the offer (echoed in the answer), or 15 when it had none.
    pub server_max_window_bits: u8,
    /// Whether the offer named `server_max_window_bits` (then the answer does too).
    pub server_window_asked: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value answering the offer.
    pub fn response(&self) -> String {
        let mut answer = String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        if self.server_window_asked {
            answer.push_str("; server_max_window_bits=");
            answer.push_str(&self.server_max_window_bits.to_string());
        }
        answer
    }

    /// The longest message payload compressed for this connection: 2^server_max_window_bits.
    pub fn max_compressed_len(&self) -> usize {
        1usize << self.server_max_window_bits
    }
}

/// The outcome of reading every offer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Negotiation {
    /// The first offer that can be honoured, if any.
    pub agreed: Option<Agreed>,
    /// The permessage-deflate offers declined before it (or all of them), with why.
    pub declined: Vec<Decline>,
}

/// The extension's name in offers and answers.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// Reads the values of every `Sec-WebSocket-Extensions` header, in order, and picks the first
/// permessage-deflate offer that can be honoured.
pub fn negotiate<'h>(headers: impl IntoIterator<Item = &'h [u8]>) -> Negotiation {
    let mut negotiation = Negotiation::default();
    for value in headers {
        for element in split_elements(value) {
            match parse_offer(element) {
                Offer::NotDeflate | Offer::Empty => {}
                Offer::Declined(why) => negotiation.declined.push(why),
                Offer::Deflate(agreed) => {
                    negotiation.agreed = Some(agreed);
                    return negotiation;
                }
            }
        }
    }
    negotiation
}

/// One element of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    Empty,
    NotDeflate,
    Declined(Decline),
    Deflate(Agreed),
}

/// Splits a header value at the commas outside quoted strings (an unterminated quote runs to
/// the end, and that element is malformed).
fn split_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    split_outside_quotes(value, b',')
}

/// Splits `value` at each `separator` outside quoted strings (a backslash inside quotes escapes
/// the next byte).
fn split_outside_quotes(value: &[u8], separator: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let v = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, &b) in v.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                _ if b == separator && !quoted => {
                    rest = Some(&v[i + 1..]);
                    return Some(&v[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(v)
    })
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// A parameter value: a token, or a quoted string whose unescaped content is a token
/// (RFC 6455 §9.1). At most a few bytes matter (window bits), so longer values are refused
/// as invalid without being copied.
fn param_value(raw: &[u8]) -> Result<Value, Decline> {
    if raw.first() == Some(&b'"') {
        if raw.len() < 2 || raw.last() != Some(&b'"') {
            return Err(Decline::Malformed);
        }
        let mut buf = [0u8; 8];
        let mut len = 0;
        let mut escaped = false;
        for &b in &raw[1..raw.len() - 1] {
            if !escaped && b == b'\\' {
                escaped = true;
                continue;
            }
            if !escaped && b == b'"' {
                return Err(Decline::Malformed);
            }
            escaped = false;
            if !is_tchar(b) {
                return Err(Decline::InvalidValue);
            }
            if len == buf.len() {
                return Ok(Value::Long);
            }
            buf[len] = b;
            len += 1;
        }
        if escaped || len == 0 {
            return Err(if escaped { Decline::Malformed } else { Decline::InvalidValue });
        }
        return Ok(Value::Short(buf, len));
    }
    if !is_token(raw) {
        return Err(Decline::Malformed);
    }
    if raw.len() > 8 {
        return Ok(Value::Long);
    }
    let mut buf = [0u8; 8];
    buf[..raw.len()].copy_from_slice(raw);
    Ok(Value::Short(buf, raw.len()))
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Short([u8; 8], usize),
    Long,
}

/// Window bits: a decimal 8..=15 without leading zeros (RFC 7692 §7.1.2).
fn window_bits(value: Value) -> Result<u8, Decline> {
    // Longer than 8 bytes: not a window size in any spelling the RFC allows.
    let Value::Short(buf, len) = value else { return Err(Decline::InvalidValue) };
    let digits = &buf[..len];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(Decline::InvalidValue);
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return Err(Decline::InvalidValue);
    }
    let n = digits.iter().fold(0u32, |n, d| n.saturating_mul(10).saturating_add(u32::from(d - b'0')));
    match u8::try_from(n) {
        Ok(bits @ 8..=15) => Ok(bits),
        _ => Err(Decline::WindowBitsOutOfRange),
    }
}

fn parse_offer(element: &[u8]) -> Offer {
    let element = trim(element);
    if element.is_empty() {
        return Offer::Empty;
    }
    let mut parts = split_params(element);
    let name = trim(parts.next().unwrap_or_default());
    if !is_token(name) {
        return Offer::Declined(Decline::Malformed);
    }
    if !name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE.as_bytes()) {
        return Offer::NotDeflate;
    }
    match deflate_params(parts) {
        Ok(agreed) => Offer::Deflate(agreed),
        Err(why) => Offer::Declined(why),
    }
}

/// Splits an element at the semicolons outside quoted strings.
fn split_params(element: &[u8]) -> impl Iterator<Item = &[u8]> {
    split_outside_quotes(element, b';')
}

/// The parameters of one permessage-deflate offer. Every problem is reported; the first one
/// in the order of the parameters wins, malformed syntax before all else.
fn deflate_params<'e>(params: impl Iterator<Item = &'e [u8]>) -> Result<Agreed, Decline> {
    const SERVER_NO_CONTEXT: u8 = 1;
    const CLIENT_NO_CONTEXT: u8 = 2;
    const SERVER_BITS: u8 = 4;
    const CLIENT_BITS: u8 = 8;
    let mut seen = 0u8;
    let mut problem = None;
    let mut agreed = Agreed { server_max_window_bits: 15, server_window_asked: false };
    for param in params {
        let param = trim(param);
        let (name, value) = match param.iter().position(|&b| b == b'=') {
            Some(eq) => (trim(&param[..eq]), Some(trim(&param[eq + 1..]))),
            None => (param, None),
        };
        if !is_token(name) {
            return Err(Decline::Malformed);
        }
        let value = match value.map(param_value) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(Decline::Malformed)) => return Err(Decline::Malformed),
            Some(Err(e)) => {
                problem.get_or_insert(e);
                continue;
            }
        };
        let lower = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        let (bit, result) = if lower("server_no_context_takeover") {
            (SERVER_NO_CONTEXT, if value.is_some() { Err(Decline::InvalidValue) } else { Ok(()) })
        } else if lower("client_no_context_takeover") {
            (CLIENT_NO_CONTEXT, if value.is_some() { Err(Decline::InvalidValue) } else { Ok(()) })
        } else if lower("server_max_window_bits") {
            let result = match value {
                None => Err(Decline::InvalidValue),
                Some(v) => window_bits(v).map(|bits| {
                    agreed.server_max_window_bits = bits;
                    agreed.server_window_asked = true;
                }),
            };
            (SERVER_BITS, result)
        } else if lower("client_max_window_bits") {
            // Any value the client's compressor uses is fine: the inflater's window is 2^15.
            (CLIENT_BITS, value.map_or(Ok(()), |v| window_bits(v).map(|_| ())))
        } else {
            problem.get_or_insert(Decline::UnknownParameter);
            continue;
        };
        if seen & bit != 0 {
            problem.get_or_insert(Decline::DuplicateParameter);
        }
        seen |= bit;
        if let Err(e) = result {
            problem.get_or_insert(e);
        }
    }
    match problem {
        Some(why) => Err(why),
        None => Ok(agreed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(headers: &[&str]) -> Negotiation {
        negotiate(headers.iter().map(|h| h.as_bytes()))
    }

    const PLAIN: Agreed = Agreed { server_max_window_bits: 15, server_window_asked: false };

    #[test]
    fn accepts_what_browsers_offer() {
        let n = of(&["permessage-deflate; client_max_window_bits"]);
        assert_eq!(n, Negotiation { agreed: Some(PLAIN), declined: vec![] });
        assert_eq!(PLAIN.response(), "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        assert_eq!(of(&["permessage-deflate"]).agreed, Some(PLAIN));
        assert_eq!(of(&["Permessage-Deflate ;Client_No_Context_Takeover"]).agreed, Some(PLAIN));
    }

    #[test]
    fn every_parameter_with_and_without_values() {
        let n = of(&["permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=9"]);
        let agreed = n.agreed.unwrap();
        assert_eq!(agreed, Agreed { server_max_window_bits: 10, server_window_asked: true });
        assert_eq!(agreed.max_compressed_len(), 1024);
        assert!(agreed.response().ends_with("; server_max_window_bits=10"));
        assert_eq!(of(&["permessage-deflate; server_max_window_bits=\"8\""]).agreed.unwrap().server_max_window_bits, 8);
        assert_eq!(of(&["permessage-deflate; client_max_window_bits=15"]).agreed, Some(PLAIN));
    }

    #[test]
    fn declines_bad_offers_and_takes_the_next_good_one() {
        let cases: &[(&str, Decline)] = &[
            ("permessage-deflate; server_max_window_bits=7", Decline::WindowBitsOutOfRange),
            ("permessage-deflate; server_max_window_bits=16", Decline::WindowBitsOutOfRange),
            ("permessage-deflate; client_max_window_bits=99999999999", Decline::InvalidValue),
            ("permessage-deflate; client_max_window_bits=1000", Decline::WindowBitsOutOfRange),
            ("permessage-deflate; server_max_window_bits=08", Decline::InvalidValue),
            ("permessage-deflate; server_max_window_bits", Decline::InvalidValue),
            ("permessage-deflate; server_max_window_bits=x", Decline::InvalidValue),
            ("permessage-deflate; server_no_context_takeover=1", Decline::InvalidValue),
            ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", Decline::DuplicateParameter),
            ("permessage-deflate; server_max_window_bits=9; server_max_window_bits=10", Decline::DuplicateParameter),
            ("permessage-deflate; x-mystery", Decline::UnknownParameter),
            ("permessage-deflate; =9", Decline::Malformed),
            ("permessage-deflate; server_max_window_bits=\"9", Decline::Malformed),
            ("permessage-deflate; a b", Decline::Malformed),
            ("per message-deflate", Decline::Malformed),
        ];
        for (offer, why) in cases {
            let n = of(&[*offer]);
            assert_eq!(n, Negotiation { agreed: None, declined: vec![*why] }, "{offer}");
            let n = of(&[*offer, "permessage-deflate; server_max_window_bits=12"]);
            assert_eq!(n.declined, vec![*why], "{offer}");
            assert_eq!(n.agreed.unwrap().server_max_window_bits, 12, "{offer}");
        }
    }

    #[test]
    fn lists_span_headers_and_skip_other_extensions() {
        let n = of(&["x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=20", ", permessage-deflate"]);
        assert_eq!(n.declined, vec![Decline::WindowBitsOutOfRange]);
        assert_eq!(n.agreed, Some(PLAIN));
        assert_eq!(of(&["foo; bar=\"a,b\", baz"]), Negotiation::default());
        assert_eq!(of(&[""]), Negotiation::default());
        assert_eq!(of(&[]), Negotiation::default());
    }

    #[test]
    fn never_panics_on_any_bytes() {
        for len in 0..6 {
            let alphabet = b"p;=,\"\\ 8x";
            let mut idx = vec![0usize; len];
            loop {
                let bytes: Vec<u8> = idx.iter().map(|&i| alphabet[i]).collect();
                let _ = negotiate([&bytes[..]]);
                let mut carry = true;
                for i in idx.iter_mut() {
                    if carry {
                        *i += 1;
                        carry = *i == alphabet.len();
                        if carry {
                            *i = 0;
                        }
                    }
                }
                if carry {
                    break;
                }
            }
        }
    }
}
