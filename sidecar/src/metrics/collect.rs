//! Builds the families of the catalog from the store and the daemon's status.

use std::sync::Arc;

use sidecar_common::{Advice, LATENCY_BUCKETS, latency_bucket_upper_ns};

use super::model::{Family, Filter, LabelValue, Labels, Sample, Value};
use crate::{
    catalog::{CATALOG, FamilyDef, Source},
    status::Status,
    store::{LatencyHistogram, Store},
    workload::WorkloadId,
};

/// Prometheus bucket bounds (seconds) for the kernel's log2 ns buckets: the buckets below
/// ~1 µs fold into the first bound.
const FIRST_EXPORTED_BUCKET: u32 = 10;

pub(crate) fn latency_value(histogram: &LatencyHistogram) -> Value {
    let mut buckets = Vec::with_capacity(LATENCY_BUCKETS);
    let mut pending = 0;
    for (index, count) in histogram.buckets.iter().enumerate() {
        pending += count;
        let bucket = index as u32;
        match latency_bucket_upper_ns(bucket) {
            Some(_) if bucket < FIRST_EXPORTED_BUCKET => {}
            Some(upper_ns) => {
                buckets.push((upper_ns as f64 / 1e9, pending));
                pending = 0;
            }
            None => buckets.push((f64::INFINITY, pending)),
        }
    }
    Value::Histogram {
        count: histogram.count,
        sum: histogram.sum_ns as f64 / 1e9,
        buckets,
    }
}

/// Builds every family the filter selects from the store and the daemon's status.
pub fn collect(store: &Store, status: &Status, filter: &Filter) -> Vec<Family> {
    collect_part(store, status, filter, Part::All)
}

/// Which families `collect_part` builds: the store's change only at a drain, so their
/// exposition can be rendered once per drain; the status's can change at any time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    All,
    Store,
    Status,
}

impl Part {
    fn includes(self, def: &FamilyDef) -> bool {
        // The old hand-written list of status families missed this one, so it has been
        // rendered with the store's; kept so that this change leaves the output as it was.
        let from_status = def.source.from_status()
            && !std::ptr::eq(def, &crate::catalog::EXPORT_SPOOL_CORRUPT_RECORDS);
        match self {
            Part::All => true,
            Part::Store => !from_status,
            Part::Status => from_status,
        }
    }
}

fn unlabelled(value: Value) -> Sample {
    Sample {
        labels: Labels::new(),
        value,
    }
}

/// The families of the catalog that `filter` and `part` select, in catalog order; a family
/// without samples is left out (rates are absent, not 0 or NaN).
pub fn collect_part(store: &Store, status: &Status, filter: &Filter, part: Part) -> Vec<Family> {
    let names = store.names();
    let workloads: Vec<(WorkloadId, LabelValue)> = store
        .reported_workloads()
        .into_iter()
        .filter(|&id| filter.workload(names.name(id)))
        .map(|id| (id, names.shared_name(id)))
        .collect();
    let advice_labels: Vec<LabelValue> = Advice::ALL
        .into_iter()
        .map(|advice| Arc::from(advice.label()))
        .collect();
    let last = store.last();
    let exporters = status.exporters();
    let per_workload = |value: &dyn Fn(WorkloadId) -> Option<Value>| -> Vec<Sample> {
        let mut samples = Vec::with_capacity(workloads.len());
        samples.extend(workloads.iter().filter_map(|(id, name)| {
            Some(Sample {
                labels: smallvec::smallvec![("workload", name.clone())],
                value: value(*id)?,
            })
        }));
        samples
    };
    let mut families = Vec::new();
    for &def in CATALOG {
        if !filter.module(def.module) || !part.includes(def) {
            continue;
        }
        let samples = match def.source {
            Source::Advice(read) => {
                let mut samples = Vec::with_capacity(workloads.len() * Advice::COUNT);
                for (id, name) in &workloads {
                    let totals = store.totals(*id);
                    samples.extend(Advice::ALL.into_iter().map(|advice| Sample {
                        labels: smallvec::smallvec![
                            ("workload", name.clone()),
                            ("advice", advice_labels[advice as usize].clone()),
                        ],
                        value: Value::Count(read(&totals.fadvise[advice as usize])),
                    }));
                }
                samples
            }
            Source::Workload(read) => {
                per_workload(&|id| Some(Value::Count(read(store.totals(id)))))
            }
            // A workload's histogram appears with its first stall: ~30 buckets of zeros
            // for every workload that never stalled would make most of a large scrape.
            Source::Latency(histogram) => per_workload(&|id| {
                let histogram = histogram(store.totals(id));
                (histogram.count > 0).then(|| latency_value(histogram))
            }),
            Source::Rate(rate) => per_workload(&|id| rate(last?.workload(id)).map(Value::Number)),
            Source::Host(read) => vec![unlabelled(Value::Count(read(store.host_totals())))],
            Source::HostRate(rate) => last
                .and_then(|l| rate(&l.host))
                .map(|v| unlabelled(Value::Number(v)))
                .into_iter()
                .collect(),
            Source::Store(value) => value(store).map(unlabelled).into_iter().collect(),
            Source::StoreSamples(samples) => samples(store),
            Source::Exporter(value) => exporters.iter().map(|e| unlabelled(value(e))).collect(),
            Source::Status(samples) => samples(status, &exporters),
        };
        if !samples.is_empty() {
            families.push(Family { def, samples });
        }
    }
    families
}
