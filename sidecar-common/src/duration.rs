//! The one duration grammar: the configuration's, `sidecar-load`'s and `cargo xtask load`'s.
//!
//! A duration is one or more parts, each a number and a unit (`10s`, `500ms`, `1.5h`,
//! `1h 30m`); spaces may separate parts, and a number from its unit. A unit is always
//! required: a bare `10` is an error, not ten seconds, because no default would be right for
//! both an interval (seconds) and a timeout (milliseconds). The unit spellings are
//! humantime's, which parsed durations here before.
//!
//! No allocation: the daemon, the load generator and xtask share it, and none of them should
//! have to pull in the daemon (which embeds the eBPF object) to read `500ms`.

use core::{fmt, time::Duration};

/// Parses a duration such as `10s`, `500ms`, `1m`, `1h` or `1h 30m`.
pub fn parse(text: &str) -> Result<Duration, Error> {
    let mut rest = text.trim_start();
    if rest.trim_end().is_empty() {
        return Err(Error::Empty);
    }
    let offset = |rest: &str| text.len() - rest.len();
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if whole_len == 0 {
            return Err(Error::NumberExpected { at: offset(rest) });
        }
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after_point) => {
                let len = after_point.bytes().take_while(u8::is_ascii_digit).count();
                if len == 0 {
                    return Err(Error::NumberExpected {
                        at: offset(after_point),
                    });
                }
                after_point.split_at(len)
            }
            None => ("", after),
        };
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| !(c.is_ascii_alphabetic() || c == 'µ'))
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(match after.chars().next() {
                None => Error::UnitMissing,
                Some(c) if c.is_ascii_digit() => Error::UnitMissing,
                Some(_) => Error::InvalidCharacter { at: offset(after) },
            });
        }
        let unit_nanos = unit_nanos(unit).ok_or_else(|| Error::unknown_unit(unit))?;
        nanos = nanos
            .checked_add(part_nanos(whole, fraction, unit_nanos)?)
            .ok_or(Error::TooLarge)?;
        rest = after.trim_start();
    }
    let seconds = u64::try_from(nanos / NANOS_PER_SECOND).map_err(|_| Error::TooLarge)?;
    // The remainder of a division by 10^9 always fits.
    let subsec = (nanos % NANOS_PER_SECOND) as u32;
    Ok(Duration::new(seconds, subsec))
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Nanoseconds in one `unit`, for humantime's spellings.
fn unit_nanos(unit: &str) -> Option<u128> {
    const SECOND: u128 = NANOS_PER_SECOND;
    Some(match unit {
        "nanos" | "nsec" | "ns" => 1,
        "usec" | "us" | "µs" => 1_000,
        "millis" | "msec" | "ms" => 1_000_000,
        "seconds" | "second" | "secs" | "sec" | "s" => SECOND,
        "minutes" | "minute" | "min" | "mins" | "m" => 60 * SECOND,
        "hours" | "hour" | "hr" | "hrs" | "h" => 3_600 * SECOND,
        "days" | "day" | "d" => 86_400 * SECOND,
        "weeks" | "week" | "wk" | "wks" | "w" => 7 * 86_400 * SECOND,
        // humantime's: 30.44 and 365.25 days.
        "months" | "month" | "M" => 2_630_016 * SECOND,
        "years" | "year" | "yr" | "yrs" | "y" => 31_557_600 * SECOND,
        _ => return None,
    })
}

/// `whole.fraction` units in nanoseconds; a fraction finer than a nanosecond is an error
/// rather than a silent rounding.
fn part_nanos(whole: &str, fraction: &str, unit_nanos: u128) -> Result<u128, Error> {
    let whole: u64 = whole.parse().map_err(|_| Error::TooLarge)?;
    let mut nanos = u128::from(whole)
        .checked_mul(unit_nanos)
        .ok_or(Error::TooLarge)?;
    let fraction = fraction.trim_end_matches('0');
    if !fraction.is_empty() {
        // 10^38 is the largest power of ten in a u128; a unit is at most ~2^55 ns.
        let digits = u32::try_from(fraction.len()).map_err(|_| Error::TooPrecise)?;
        let numerator: u128 = fraction.parse().map_err(|_| Error::TooPrecise)?;
        let scaled = numerator.checked_mul(unit_nanos).ok_or(Error::TooPrecise)?;
        let denominator = 10u128.checked_pow(digits).ok_or(Error::TooPrecise)?;
        if scaled % denominator != 0 {
            return Err(Error::TooPrecise);
        }
        nanos = nanos
            .checked_add(scaled / denominator)
            .ok_or(Error::TooLarge)?;
    }
    Ok(nanos)
}

/// Why a duration did not parse; positions are byte offsets into the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Nothing but spaces.
    Empty,
    /// A number without a unit, as in `10`.
    UnitMissing,
    /// Something else where a number should start.
    NumberExpected { at: usize },
    /// A character that is neither part of a number nor of a unit.
    InvalidCharacter { at: usize },
    /// A unit no spelling matches; its first bytes, so that the error needs no allocation.
    UnknownUnit(UnitText),
    /// More than `u64::MAX` seconds.
    TooLarge,
    /// A fraction finer than a nanosecond, as in `1.5ns`.
    TooPrecise,
}

impl Error {
    fn unknown_unit(unit: &str) -> Error {
        let mut text = UnitText {
            bytes: [0; UnitText::CAPACITY],
            len: 0,
        };
        for c in unit.chars() {
            let end = usize::from(text.len) + c.len_utf8();
            if end > UnitText::CAPACITY {
                break;
            }
            c.encode_utf8(&mut text.bytes[usize::from(text.len)..end]);
            text.len = end as u8;
        }
        Error::UnknownUnit(text)
    }
}

/// The start of an unknown unit, kept inline (at most [`UnitText::CAPACITY`] bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitText {
    bytes: [u8; UnitText::CAPACITY],
    len: u8,
}

impl UnitText {
    pub const CAPACITY: usize = 16;

    pub fn as_str(&self) -> &str {
        // Filled from whole chars of a str only.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Empty => f.write_str("empty: give a number and a unit, as in 10s or 500ms"),
            Error::UnitMissing => f.write_str("give a unit, as in 10s or 500ms"),
            Error::NumberExpected { at } => write!(f, "expected a number at byte {at}"),
            Error::InvalidCharacter { at } => write!(f, "unexpected character at byte {at}"),
            Error::UnknownUnit(unit) => write!(
                f,
                "unknown unit {:?} (use ns, us, ms, s, m, h, d or w)",
                unit.as_str()
            ),
            Error::TooLarge => f.write_str("too large"),
            Error::TooPrecise => f.write_str("finer than a nanosecond"),
        }
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString as _;

    use super::*;

    fn ok(text: &str) -> Duration {
        parse(text).unwrap_or_else(|err| panic!("{text:?}: {err:?}"))
    }

    #[test]
    fn a_number_and_a_unit() {
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("7d"), Duration::from_secs(7 * 86400));
        assert_eq!(ok("2w"), Duration::from_secs(14 * 86400));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        assert_eq!(ok("250µs"), Duration::from_micros(250));
        assert_eq!(ok("3ns"), Duration::from_nanos(3));
        assert_eq!(ok("0s"), Duration::ZERO);
    }

    #[test]
    fn humantime_spellings_and_forms() {
        assert_eq!(ok("10 seconds"), Duration::from_secs(10));
        assert_eq!(ok("2min"), Duration::from_secs(120));
        assert_eq!(ok("1hour"), Duration::from_secs(3600));
        assert_eq!(ok("1h 30m"), Duration::from_secs(5400));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("  1s  "), Duration::from_secs(1));
        assert_eq!(ok("1M"), Duration::from_secs(2_630_016));
        assert_eq!(ok("1y"), Duration::from_secs(31_557_600));
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0.25h"), Duration::from_secs(900));
        assert_eq!(ok("1.000s"), Duration::from_secs(1));
        assert_eq!(ok("0.5us"), Duration::from_nanos(500));
        assert_eq!(parse("1.5ns"), Err(Error::TooPrecise));
        assert_eq!(parse("0.0000000001s"), Err(Error::TooPrecise));
        assert_eq!(parse("1.s"), Err(Error::NumberExpected { at: 2 }));
    }

    #[test]
    fn a_unit_is_required() {
        assert_eq!(parse("10"), Err(Error::UnitMissing));
        assert_eq!(parse(" 10 "), Err(Error::UnitMissing));
        assert_eq!(parse("1s 5"), Err(Error::UnitMissing));
        assert_eq!(parse("10 5s"), Err(Error::UnitMissing));
        assert!(Error::UnitMissing.to_string().contains("give a unit"));
    }

    #[test]
    fn errors() {
        assert_eq!(parse(""), Err(Error::Empty));
        assert_eq!(parse("   "), Err(Error::Empty));
        assert_eq!(parse("s"), Err(Error::NumberExpected { at: 0 }));
        assert_eq!(parse("-1s"), Err(Error::NumberExpected { at: 0 }));
        assert_eq!(
            parse("10 seconds please"),
            Err(Error::NumberExpected { at: 11 })
        );
        assert_eq!(parse("10-s"), Err(Error::InvalidCharacter { at: 2 }));
        assert_eq!(parse("1s,"), Err(Error::NumberExpected { at: 2 }));
        let Err(err @ Error::UnknownUnit(unit)) = parse("10x") else {
            panic!("10x parsed");
        };
        assert_eq!(unit.as_str(), "x");
        assert!(err.to_string().starts_with("unknown unit \"x\""), "{err}");
        let Err(Error::UnknownUnit(unit)) = parse("1µµµµµµµµµµ") else {
            panic!("parsed");
        };
        assert_eq!(unit.as_str(), "µµµµµµµµ");
        assert_eq!(parse("18446744073709551616s"), Err(Error::TooLarge));
        assert_eq!(parse("18446744073709551615h"), Err(Error::TooLarge));
        assert_eq!(ok("18446744073709551615s"), Duration::from_secs(u64::MAX));
    }
}
