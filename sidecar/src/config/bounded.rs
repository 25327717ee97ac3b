//! Values with bounds: integers, durations and sizes, each checked against its range while
//! it is read. One generic type per kind; a key's bounds are in its type.

use std::{fmt, time::Duration};

use serde::{
    Deserialize, Deserializer,
    de::{self, Visitor},
};

use super::{
    de::parse_str,
    units::{ByteSize, deserialize_size, parse_duration},
};

/// An integer in `MIN..=MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded<const MIN: u32, const MAX: u32>(pub u32);

/// A map or cache size.
pub type Capacity = Bounded<16, { 1 << 22 }>;

impl<'de, const MIN: u32, const MAX: u32> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoundedVisitor<const MIN: u32, const MAX: u32>;
        impl<const MIN: u32, const MAX: u32> Visitor<'_> for BoundedVisitor<MIN, MAX> {
            type Value = Bounded<MIN, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an integer in {MIN}..={MAX}")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
                match u32::try_from(value) {
                    Ok(value) if (MIN..=MAX).contains(&value) => Ok(Bounded(value)),
                    _ => Err(E::custom(format!("{value} is outside {MIN}..={MAX}"))),
                }
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(E::custom(format!("{value} is outside {MIN}..={MAX}"))),
                }
            }
        }
        deserializer.deserialize_i64(BoundedVisitor::<MIN, MAX>)
    }
}

/// A duration in `MIN_MS..=MAX_MS` milliseconds: `1s`, `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundedDuration<const MIN_MS: u64, const MAX_MS: u64>(pub Duration);

/// A drain interval: `10s`, `500ms`.
pub type Interval = BoundedDuration<50, 3_600_000>;
/// How long recent intervals are kept: `1h`, `15m`.
pub type Retention = BoundedDuration<1_000, { 7 * 86_400_000 }>;
/// `shutdown_timeout`: 1s..=5m.
pub type ShutdownTimeout = BoundedDuration<1_000, 300_000>;

impl<const MIN_MS: u64, const MAX_MS: u64> BoundedDuration<MIN_MS, MAX_MS> {
    pub const MIN: Duration = Duration::from_millis(MIN_MS);
    pub const MAX: Duration = Duration::from_millis(MAX_MS);

    pub fn parse(text: &str) -> Result<Self, String> {
        let duration = parse_duration(text)?;
        if duration < Self::MIN || duration > Self::MAX {
            return Err(format!(
                "{text:?} is outside {}..={}",
                humantime::format_duration(Self::MIN),
                humantime::format_duration(Self::MAX)
            ));
        }
        Ok(BoundedDuration(duration))
    }
}

impl<'de, const MIN_MS: u64, const MAX_MS: u64> Deserialize<'de>
    for BoundedDuration<MIN_MS, MAX_MS>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_str(deserializer, "a duration such as 1s or 500ms", Self::parse)
    }
}

/// A size in `MIN..=MAX` bytes: `64MiB`, `1GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundedSize<const MIN: u64, const MAX: u64>(pub u64);

/// `limits.max_history_bytes`: 1MiB..=16GiB.
pub type HistoryBytes = BoundedSize<{ 1 << 20 }, { 16 << 30 }>;

impl<const MIN: u64, const MAX: u64> BoundedSize<MIN, MAX> {
    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for BoundedSize<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_size(deserializer, |bytes| {
            if (MIN..=MAX).contains(&bytes) {
                Ok(BoundedSize(bytes))
            } else {
                Err(format!(
                    "{bytes} bytes is outside {}..={}",
                    ByteSize(MIN),
                    ByteSize(MAX)
                ))
            }
        })
    }
}
