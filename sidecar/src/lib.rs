//! sidecar: eBPF observability of fadvise, the page cache and memory reclaim, per workload.
//!
//! Data flows one way: kernel programs -> [`kernel`] (drain) -> [`aggregate`] (classify into
//! workloads) -> [`store`] -> sinks: [`metrics`] over [`http`] and [`grpc`] (pull), and
//! [`export`] (each drain's deltas pushed to BanyanDB). What each sink exports is declared
//! once, in [`catalog`].

pub mod aggregate;
pub mod api;
pub mod auth;
pub mod catalog;
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
pub mod memcg;
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
