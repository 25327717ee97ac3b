//! Push sinks. The drain thread hands each drain's per-workload deltas to the exporters
//! through an [`ExportHandle`]: an unbounded channel, so the drain never blocks, whose
//! consumer (the exporter task) moves the points at once into its bounded queue and spool,
//! where drops are counted. Nothing is dropped silently on the way.

pub mod banyandb;

use std::time::SystemTime;

use crate::{
    store::{HostCounts, Interval, WorkloadCounts},
    workload::WorkloadNames,
};

/// One drain's deltas, as the exporters need them.
#[derive(Clone, Debug)]
pub struct DrainDeltas {
    /// When the drain switched epochs: the end of the interval.
    pub at: SystemTime,
    /// Workloads with something counted in this interval, by name.
    pub workloads: Vec<(String, WorkloadCounts)>,
    /// Host-wide counts.
    pub host: HostCounts,
}

impl DrainDeltas {
    pub fn from_interval(interval: &Interval, names: &WorkloadNames) -> DrainDeltas {
        DrainDeltas {
            at: interval.at,
            workloads: names
                .ids()
                .filter_map(|id| {
                    let counts = interval.workloads.get(usize::from(id.0))?;
                    (!counts.is_empty()).then(|| (names.name(id).to_owned(), counts.clone()))
                })
                .collect(),
            host: interval.host,
        }
    }
}

/// A push exporter's state as the pull sinks show it (/metrics, `GetStatus`). Status,
/// metrics and gRPC read this, never an exporter's own types: a second exporter would
/// publish the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExporterSnapshot {
    /// The exporter's name in `GetStatus` (`export.<name>` in the configuration).
    pub name: &'static str,
    /// Where it stands: `starting`, `connecting`, `ok`, `retrying`, ... (docs/banyandb.md).
    pub state: &'static str,
    /// Points acknowledged.
    pub written: u64,
    /// Point write attempts that failed and will be retried.
    pub retried: u64,
    /// Points refused for good.
    pub rejected: u64,
    /// Points waiting, in memory and in the spool.
    pub queue_points: u64,
    pub spool_bytes: u64,
    /// Points dropped undelivered (the spool was full).
    pub dropped: u64,
    /// Spool records skipped as torn or failing their checksum.
    pub spool_corrupt_records: u64,
    pub circuit: CircuitState,
    pub last_error: Option<ErrorRecord>,
}

/// A circuit breaker's state, as `sidecar_export_circuit_state` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Writes flow.
    Closed = 0,
    /// Too many consecutive failures: no writes until the cool-down ends.
    Open = 1,
    /// One probe write decides between closed and open.
    HalfOpen = 2,
}

/// The most recent error, with when it happened; `past` once writes succeeded after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorRecord {
    pub message: String,
    pub at: SystemTime,
    pub past: bool,
}

/// An exporter that publishes its state; the status holds these.
pub trait PublishState: std::fmt::Debug + Send + Sync {
    fn snapshot(&self) -> ExporterSnapshot;
}

/// The drain thread's end of an exporter: `submit` never blocks.
#[derive(Clone, Debug)]
pub struct ExportHandle {
    tx: tokio::sync::mpsc::UnboundedSender<DrainDeltas>,
}

impl ExportHandle {
    pub(crate) fn new(tx: tokio::sync::mpsc::UnboundedSender<DrainDeltas>) -> ExportHandle {
        ExportHandle { tx }
    }

    /// Hands a drain over; false when the exporter has stopped.
    pub fn submit(&self, deltas: DrainDeltas) -> bool {
        self.tx.send(deltas).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_drain_hands_over_the_workloads_with_counts() {
        let config = Config::parse(
            "workloads:\n  - name: jobs\n    pids: [1]\n  - name: idle\n    pids: [2]\n",
            "t",
        )
        .unwrap();
        let names = WorkloadNames::from_config(&config);
        let at = SystemTime::now();
        let mut interval = Interval::empty(names.len(), at);
        interval.workloads[0].page_cache.misses = 4;
        interval.host.kswapd_wakeups = 2;
        let deltas = DrainDeltas::from_interval(&interval, &names);
        assert_eq!(deltas.at, at);
        assert_eq!(deltas.workloads.len(), 1);
        assert_eq!(deltas.workloads[0].0, "jobs");
        assert_eq!(deltas.workloads[0].1.page_cache.misses, 4);
        assert_eq!(deltas.host.kswapd_wakeups, 2);

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let handle = ExportHandle::new(tx);
        for _ in 0..1000 {
            assert!(handle.submit(deltas.clone()));
        }
        assert_eq!(rx.len(), 1000);
        rx.close();
        drop(rx);
        assert!(!handle.submit(deltas), "a stopped exporter says so");
    }
}
