//! The test kit: what sidecar's integration tests and xtask share, so that each exists
//! once: one HTTP getter ([`http`]), one Prometheus text parser ([`prometheus`]), /proc
//! readers ([`procfs`]), the memory cgroup that forces reclaim ([`cgroup`]), the workload
//! generator's command line and report ([`generator`]), stopping a child ([`process`]), a
//! test PKI ([`pki`], feature `pki`) and the BanyanDB stand-in that the exporter is judged
//! by ([`banyandb`], feature `banyandb`). Both features are on by default; xtask takes the
//! kit without them, because the stand-in needs the `sidecar` crate and that crate's build
//! needs the eBPF object xtask builds.

#[cfg(feature = "banyandb")]
pub mod banyandb;
pub mod cgroup;
pub mod generator;
pub mod http;
#[cfg(feature = "pki")]
pub mod pki;
pub mod process;
pub mod procfs;
pub mod prometheus;
