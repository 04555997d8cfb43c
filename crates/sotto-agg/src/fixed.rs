//! Fixed-point encoding of decimal amounts: a value `x` with scale `s` (a
//! power of ten) is the integer `x * s`, exact or refused. Totals decode back
//! to decimal text with the same scale.

use crate::error::FixedError;

/// Largest accepted scale (10^18).
pub const MAX_SCALE: u64 = 1_000_000_000_000_000_000;

/// Number of decimal places a power-of-ten `scale` gives, or `None` when it
/// is not a power of ten.
pub fn decimal_places(scale: u64) -> Option<u32> {
    let mut places = 0;
    let mut s = scale;
    while s > 1 {
        if !s.is_multiple_of(10) {
            return None;
        }
        s /= 10;
        places += 1;
    }
    (s == 1).then_some(places)
}

/// Parses decimal text (`-12.50`, `+3`, `7.`) into `value * scale`.
pub fn parse(text: &str, scale: u64) -> Result<i64, FixedError> {
    let places = decimal_places(scale).ok_or(FixedError::BadScale { scale })?;
    let trimmed = text.trim();
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return Err(FixedError::NotANumber);
    }
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > places as usize {
        return Err(FixedError::TooPrecise { places });
    }
    let mut value: i128 = 0;
    for b in int_part.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(b - b'0')))
            .ok_or(FixedError::TooLarge)?;
        if value > i128::from(i64::MAX) + 1 {
            return Err(FixedError::TooLarge);
        }
    }
    value *= i128::from(scale);
    let mut frac_value: i128 = 0;
    for b in frac_trimmed.bytes() {
        frac_value = frac_value * 10 + i128::from(b - b'0');
    }
    let missing = places as usize - frac_trimmed.len();
    frac_value *= 10i128.pow(u32::try_from(missing).unwrap_or(0));
    value += frac_value;
    if negative {
        value = -value;
    }
    i64::try_from(value).map_err(|_| FixedError::TooLarge)
}

/// Formats `value / scale` as decimal text with exactly as many places as
/// the scale has.
pub fn format(value: i64, scale: u64) -> String {
    let places = decimal_places(scale).unwrap_or(0) as usize;
    let magnitude = value.unsigned_abs();
    let sign = if value < 0 { "-" } else { "" };
    if places == 0 {
        return format!("{sign}{magnitude}");
    }
    let scale = u128::from(scale);
    let whole = u128::from(magnitude) / scale;
    let frac = u128::from(magnitude) % scale;
    format!("{sign}{whole}.{frac:0places$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_decimal_text_exactly() {
        assert_eq!(parse("12.5", 100), Ok(1250));
        assert_eq!(parse("-0.01", 100), Ok(-1));
        assert_eq!(parse("+7", 100), Ok(700));
        assert_eq!(parse(" 3.10 ", 10), Ok(31));
        assert_eq!(parse("42", 1), Ok(42));
        assert_eq!(parse(".5", 10), Ok(5));
    }

    #[test]
    fn refuses_bad_text() {
        assert_eq!(
            parse("1.234", 100),
            Err(FixedError::TooPrecise { places: 2 })
        );
        assert_eq!(parse("abc", 100), Err(FixedError::NotANumber));
        assert_eq!(parse("", 100), Err(FixedError::NotANumber));
        assert_eq!(parse("-", 100), Err(FixedError::NotANumber));
        assert_eq!(parse("1e5", 100), Err(FixedError::NotANumber));
        assert_eq!(parse("1.2.3", 100), Err(FixedError::NotANumber));
        assert_eq!(parse("99999999999999999999", 1), Err(FixedError::TooLarge));
        assert_eq!(parse("1", 30), Err(FixedError::BadScale { scale: 30 }));
    }

    #[test]
    fn formats_with_the_scale() {
        assert_eq!(format(1250, 100), "12.50");
        assert_eq!(format(-1, 100), "-0.01");
        assert_eq!(format(42, 1), "42");
        assert_eq!(format(i64::MIN, 1), "-9223372036854775808");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(value in any::<i64>(), places in 0u32..6) {
            let scale = 10u64.pow(places);
            prop_assert_eq!(parse(&format(value, scale), scale), Ok(value));
        }
    }
}
