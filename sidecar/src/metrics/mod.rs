//! The metric families: one model, built from the store and the [`catalog`](crate::catalog),
//! that every pull sink reads. `/metrics` encodes it with prometheus-client
//! ([`exposition`]); `GetMetrics` turns it into messages (`grpc`).

mod collect;
mod exposition;
mod model;

pub use collect::{Part, collect, collect_part};
pub use exposition::{ExpositionCache, encode};
pub use model::{Family, Filter, LabelValue, Labels, Sample, Value};

#[cfg(test)]
mod tests;
