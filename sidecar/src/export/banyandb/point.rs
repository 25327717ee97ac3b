//! A data point waiting for delivery: what the queue and the spool hold. Kept by name
//! (module, node, workload, our field order), not in wire form, so that it is laid out
//! against whatever schema the server has when it is finally written.

use std::time::{SystemTime, UNIX_EPOCH};

use super::schema::{HOST_WORKLOAD, MeasureDef};
use crate::{catalog::Scope, export::DrainDeltas, kernel::modules::Module};

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Point {
    /// Index in `Module::ALL`.
    #[prost(uint32, tag = "1")]
    pub module: u32,
    #[prost(string, tag = "2")]
    pub node: String,
    #[prost(string, tag = "3")]
    pub workload: String,
    /// Whole milliseconds since the Unix epoch.
    #[prost(int64, tag = "4")]
    pub timestamp_ms: i64,
    /// Monotonic; also the point's version, so a replay overwrites itself.
    #[prost(uint64, tag = "5")]
    pub message_id: u64,
    /// In `MeasureDef::fields` order.
    #[prost(int64, repeated, tag = "6")]
    pub fields: Vec<i64>,
}

impl Point {
    pub fn module(&self) -> Option<Module> {
        Module::ALL.get(self.module as usize).copied()
    }
}

fn module_index(module: Module) -> u32 {
    Module::ALL.iter().position(|m| *m == module).unwrap_or(0) as u32
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A point's values in `def`'s field order, each field read by name from the catalog.
fn values(def: &MeasureDef, scope: Scope<'_>) -> Vec<i64> {
    def.fields
        .iter()
        .map(|field| int(field.value(scope)))
        .collect()
}

/// Whole milliseconds since the epoch.
pub fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Turns a drain into points: one per (module, workload) with something counted, plus a
/// host-wide point per module that has host counters (vmscan) and counted something. Timestamps and message ids are given by the caller.
pub fn points(
    deltas: &DrainDeltas,
    measures: &[MeasureDef],
    node: &str,
    timestamp_ms: i64,
    next_id: &mut u64,
) -> Vec<Point> {
    let mut out = Vec::new();
    let mut push = |module: Module, workload: &str, fields: Vec<i64>| {
        if fields.iter().all(|v| *v == 0) {
            return;
        }
        *next_id += 1;
        out.push(Point {
            module: module_index(module),
            node: node.to_owned(),
            workload: workload.to_owned(),
            timestamp_ms,
            message_id: *next_id,
            fields,
        });
    };
    for def in measures {
        for (workload, counts) in &deltas.workloads {
            push(def.module, workload, values(def, Scope::Workload(counts)));
        }
        // Host-wide counters (vmscan's LRU and kswapd) go in a point of their own.
        push(
            def.module,
            HOST_WORKLOAD,
            values(def, Scope::Host(&deltas.host)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        export::banyandb::schema::measures,
        store::{HostCounts, WorkloadCounts},
    };

    #[test]
    fn points_follow_the_measure_fields() {
        let mut counts = WorkloadCounts::default();
        counts.page_cache.misses = 3;
        counts.fadvise[0].calls = 2;
        let deltas = DrainDeltas {
            at: SystemTime::now(),
            workloads: vec![("jobs".to_owned(), counts)],
            host: HostCounts {
                kswapd_wakeups: 1,
                ..HostCounts::default()
            },
        };
        let defs = measures(&Module::ALL);
        let mut id = 10;
        let points = points(&deltas, &defs, "n1", 5, &mut id);
        assert_eq!(points.len(), 3, "{points:?}");
        for point in &points {
            let def = &defs[point.module as usize];
            assert_eq!(point.fields.len(), def.fields.len());
        }
        assert_eq!(points[1].fields[1], 3);
        assert_eq!(points[2].workload, HOST_WORKLOAD);
        assert_eq!(*points[2].fields.last().unwrap(), 1);
        assert_eq!(
            points.iter().map(|p| p.message_id).collect::<Vec<_>>(),
            [11, 12, 13]
        );
    }
}
