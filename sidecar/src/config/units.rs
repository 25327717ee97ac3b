//! The grammars of values with units: durations (`10s`, `500ms`), sizes (`256MiB`) and
//! BanyanDB's interval rules (`12h`, `7d`).

use std::{fmt, time::Duration};

use serde::{
    Deserialize, Deserializer,
    de::{self, Visitor},
};

use super::de::deserialize_str;

/// Parses `10s`, `500ms`, `1m`, `1h`: a number and a unit, nothing implicit (the grammar is
/// [`sidecar_common::duration`]); the message quotes the text.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    sidecar_common::duration::parse(text).map_err(|err| format!("bad duration {text:?}: {err}"))
}

/// A size in bytes: `256MiB`, `1GiB`, `65536`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("bad size {text:?}: expected a number and KiB, MiB or GiB"))?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "KiB" => 10,
            "MiB" => 20,
            "GiB" => 30,
            other => {
                return Err(format!(
                    "bad size {text:?}: unknown unit {other:?} (use B, KiB, MiB or GiB)"
                ));
            }
        };
        number
            .checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

/// In the largest unit that writes it exactly, as the configuration would: `1MiB`, `16GiB`.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if bytes != 0 && bytes.trailing_zeros() >= shift {
                return write!(f, "{}{unit}", bytes >> shift);
            }
        }
        write!(f, "{bytes}")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_size(deserializer, |bytes| Ok(ByteSize(bytes)))
    }
}

/// Reads a size written either way (`64MiB` or `67108864`) and hands it to `check` inside the
/// visitor, so that an error points at the value.
pub(super) fn deserialize_size<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    check: impl FnOnce(u64) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct SizeVisitor<F>(F);
    impl<T, F: FnOnce(u64) -> Result<T, String>> Visitor<'_> for SizeVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size such as 256MiB")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            let ByteSize(bytes) = ByteSize::parse(text).map_err(E::custom)?;
            (self.0)(bytes).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<T, E> {
            (self.0)(bytes).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(SizeVisitor(check))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalUnit {
    Hour,
    Day,
}

/// A BanyanDB interval rule: a whole number of hours or days, `12h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalRule {
    pub unit: IntervalUnit,
    pub num: u32,
}

impl IntervalRule {
    pub fn as_duration(self) -> Duration {
        let unit = match self.unit {
            IntervalUnit::Hour => 3600,
            IntervalUnit::Day => 86400,
        };
        Duration::from_secs(unit * u64::from(self.num))
    }

    /// Not the duration grammar: BanyanDB stores a unit and a count, so `90m` or `1d12h`
    /// have no place here.
    pub fn parse(text: &str) -> Result<IntervalRule, String> {
        let text = text.trim();
        let bad =
            || format!("bad interval {text:?}: expected whole hours or days, as in 12h or 7d");
        let (number, unit) = if let Some(number) = text.strip_suffix('h') {
            (number, IntervalUnit::Hour)
        } else if let Some(number) = text.strip_suffix('d') {
            (number, IntervalUnit::Day)
        } else {
            return Err(bad());
        };
        match number.parse::<u32>() {
            Ok(num) if (1..=100_000).contains(&num) => Ok(IntervalRule { unit, num }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for IntervalRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            IntervalUnit::Hour => 'h',
            IntervalUnit::Day => 'd',
        };
        write!(f, "{}{unit}", self.num)
    }
}

deserialize_str!(
    IntervalRule,
    "whole hours or days, as in 7d",
    IntervalRule::parse
);
