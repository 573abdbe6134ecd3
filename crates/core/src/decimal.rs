//! Exact fixed-point decimals.
//!
//! A price or size is an `i64` mantissa with a per-symbol scale (digits after the point):
//! `18712` at scale 2 is `187.12`. Values travel as decimal strings on the wire and are never
//! rounded: a string with more fractional digits than the scale allows is rejected unless the
//! extra digits are zeros.

use std::fmt;

/// The largest scale tickgate accepts; 10^18 still fits an `i64`.
pub const MAX_SCALE: u8 = 18;

/// Why a decimal string could not be turned into a fixed-point value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("empty decimal")]
    Empty,
    #[error("invalid character in decimal")]
    InvalidCharacter,
    #[error("more fractional digits than the symbol's scale of {scale} allows")]
    Inexact { scale: u8 },
    #[error("decimal out of range")]
    Overflow,
    #[error("scale {0} is above the maximum of {MAX_SCALE}")]
    ScaleTooLarge(u8),
}

/// Parses a decimal string (`"187.12"`, `"-0.5"`, `"100"`) into a mantissa at `scale`.
///
/// Trailing fractional zeros beyond the scale are accepted (`"1.50"` at scale 1); any other
/// digit beyond it is [`DecimalError::Inexact`]: tickgate never rounds money.
pub fn parse_fixed(text: &str, scale: u8) -> Result<i64, DecimalError> {
    if scale > MAX_SCALE {
        return Err(DecimalError::ScaleTooLarge(scale));
    }
    let bytes = text.as_bytes();
    let (negative, digits) = match bytes.first() {
        None => return Err(DecimalError::Empty),
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        Some(_) => (false, bytes),
    };
    if digits.is_empty() {
        return Err(DecimalError::Empty);
    }
    let (int_part, frac_part) = match digits.iter().position(|&b| b == b'.') {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(DecimalError::Empty);
    }
    let mut mantissa: i64 = 0;
    let push = |m: i64, d: u8| -> Result<i64, DecimalError> {
        if !d.is_ascii_digit() {
            return Err(DecimalError::InvalidCharacter);
        }
        m.checked_mul(10).and_then(|m| m.checked_add(i64::from(d - b'0'))).ok_or(DecimalError::Overflow)
    };
    for &d in int_part {
        mantissa = push(mantissa, d)?;
    }
    for (i, &d) in frac_part.iter().enumerate() {
        if i < usize::from(scale) {
            mantissa = push(mantissa, d)?;
        } else if d != b'0' {
            return Err(if d.is_ascii_digit() {
                DecimalError::Inexact { scale }
            } else {
                DecimalError::InvalidCharacter
            });
        }
    }
    for _ in frac_part.len()..usize::from(scale) {
        mantissa = mantissa.checked_mul(10).ok_or(DecimalError::Overflow)?;
    }
    Ok(if negative { -mantissa } else { mantissa })
}

/// Writes `mantissa` at `scale` as a decimal string with exactly `scale` fractional digits.
pub fn format_fixed(out: &mut Vec<u8>, mantissa: i64, scale: u8) {
    let mut digits = itoa_buf(mantissa.unsigned_abs());
    if mantissa < 0 {
        out.push(b'-');
    }
    let scale = usize::from(scale);
    let len = digits.len();
    if scale == 0 {
        out.extend_from_slice(digits.as_slice());
        return;
    }
    if len <= scale {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - len));
        out.extend_from_slice(digits.as_slice());
    } else {
        let (int, frac) = digits.as_mut_slice().split_at(len - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    }
}

/// A fixed-point value with its scale, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    pub mantissa: i64,
    pub scale: u8,
}

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(24);
        format_fixed(&mut out, self.mantissa, self.scale);
        // `format_fixed` writes only ASCII digits, '-' and '.'.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

/// Decimal digits of `value`, without allocating.
struct DigitBuf {
    buf: [u8; 20],
    start: usize,
}

impl DigitBuf {
    fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..]
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }
    fn len(&self) -> usize {
        self.buf.len() - self.start
    }
}

fn itoa_buf(mut value: u64) -> DigitBuf {
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    DigitBuf { buf, start }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fmt(m: i64, s: u8) -> String {
        Fixed { mantissa: m, scale: s }.to_string()
    }

    #[test]
    fn formats_with_exact_scale() {
        assert_eq!(fmt(18712, 2), "187.12");
        assert_eq!(fmt(5, 3), "0.005");
        assert_eq!(fmt(-5, 3), "-0.005");
        assert_eq!(fmt(100, 0), "100");
        assert_eq!(fmt(0, 2), "0.00");
        assert_eq!(fmt(i64::MIN, 4), "-922337203685477.5808");
    }

    #[test]
    fn parses_exact_values_and_rejects_rounding() {
        assert_eq!(parse_fixed("187.12", 2), Ok(18712));
        assert_eq!(parse_fixed("187.1", 2), Ok(18710));
        assert_eq!(parse_fixed("187", 2), Ok(18700));
        assert_eq!(parse_fixed(".5", 1), Ok(5));
        assert_eq!(parse_fixed("1.50", 1), Ok(15));
        assert_eq!(parse_fixed("-0.25", 2), Ok(-25));
        assert_eq!(parse_fixed("1.125", 2), Err(DecimalError::Inexact { scale: 2 }));
        assert_eq!(parse_fixed("", 2), Err(DecimalError::Empty));
        assert_eq!(parse_fixed(".", 2), Err(DecimalError::Empty));
        assert_eq!(parse_fixed("1e5", 2), Err(DecimalError::InvalidCharacter));
        assert_eq!(parse_fixed("NaN", 2), Err(DecimalError::InvalidCharacter));
        assert_eq!(parse_fixed("99999999999999999999", 0), Err(DecimalError::Overflow));
        assert_eq!(parse_fixed("1", 19), Err(DecimalError::ScaleTooLarge(19)));
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(m in any::<i64>().prop_filter("MIN has no positive twin", |m| *m != i64::MIN), s in 0u8..=MAX_SCALE) {
            let text = fmt(m, s);
            prop_assert_eq!(parse_fixed(&text, s), Ok(m));
        }
    }
}
