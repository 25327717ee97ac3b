//! How values are read: every check runs inside the serde visitor, while the deserializer
//! still points at the value, so that serde_yaml reports the value's own line and column.
//! A check made after `Deserialize` returned (`#[serde(try_from)]`, `String::deserialize`
//! then a test) is placed at the enclosing mapping instead.

use std::fmt;

use serde::{
    Deserializer,
    de::{self, Visitor},
};

/// Deserializes a string with `parse`, so that errors point at the value.
pub(super) fn parse_str<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct StrVisitor<F>(&'static str, F);
    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StrVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            (self.1)(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(StrVisitor(expecting, parse))
}

/// `impl Deserialize` for a type written as a string: `$parse` checks it inside the visitor
/// ([`parse_str`]). A derive in all but name; serde_with's `DeserializeFromStr` does the same
/// but would bring a proc-macro crate for a few lines, and says "a string" where we say what.
macro_rules! deserialize_str {
    ($type:ty, $expecting:literal, $parse:expr) => {
        impl<'de> ::serde::Deserialize<'de> for $type {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                $crate::config::de::parse_str(deserializer, $expecting, $parse)
            }
        }
    };
}
pub(super) use deserialize_str;
