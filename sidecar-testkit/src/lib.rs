//! The test kit: what sidecar's integration tests and benchmarks share, so that each exists
//! once. [`banyandb`] is the BanyanDB stand-in that the exporter is judged by.

pub mod banyandb;
