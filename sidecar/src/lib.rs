//! sidecar: eBPF observability of fadvise, the page cache and memory reclaim, per workload.
//!
//! Data flows one way: kernel programs -> [`kernel`] (drain) -> [`aggregate`] (classify into
//! workloads) -> [`store`] -> sinks: Prometheus [`metrics`] over [`http`], the [`grpc`] API,
//! and the BanyanDB exporter ([`export`], handed each drain's deltas by the drain itself).

pub mod aggregate;
pub mod api;
pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub mod conn;
pub mod export;
pub mod files;
pub mod grpc;
pub mod http;
pub mod kernel;
pub mod logging;
pub mod metrics;
pub mod privilege;
pub mod query;
pub mod run;
pub mod startup;
pub mod status;
pub mod store;
pub mod sync;
pub mod tls;
pub mod workload;
