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
