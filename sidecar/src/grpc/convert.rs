//! Messages of the API from the store's and the catalog's types.

use std::time::{Duration, SystemTime};

use sidecar_common::OwnerCounts;

use crate::{
    api::pb,
    catalog::Kind,
    kernel::ModuleState,
    metrics::{Family, Sample, Value},
    store::{IoWorkloadCounts, LatencyHistogram, Period, Store},
    workload::WorkloadId,
};

pub(super) fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

pub(super) fn duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(value.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(value.subsec_nanos()).unwrap_or(0),
    }
}

pub(super) fn metric_type(kind: Kind) -> pb::MetricType {
    match kind {
        Kind::Counter => pb::MetricType::Counter,
        Kind::Gauge => pb::MetricType::Gauge,
        Kind::Histogram => pb::MetricType::Histogram,
    }
}

pub(super) fn to_metric(
    family: &Family,
    name: &str,
    sample: &Sample,
    at: prost_types::Timestamp,
) -> pb::Metric {
    let value = match &sample.value {
        Value::Count(v) => Some(pb::metric::Value::Number(*v as f64)),
        Value::Number(v) => Some(pb::metric::Value::Number(*v)),
        Value::Histogram {
            count,
            sum,
            buckets,
        } => {
            let mut cumulative = 0;
            Some(pb::metric::Value::Histogram(pb::Histogram {
                count: *count,
                sum: *sum,
                buckets: buckets
                    .iter()
                    .map(|(upper, n)| {
                        cumulative += n;
                        pb::Bucket {
                            upper_bound: *upper,
                            cumulative_count: cumulative,
                        }
                    })
                    .collect(),
            }))
        }
    };
    pb::Metric {
        name: name.to_owned(),
        r#type: metric_type(family.def.kind) as i32,
        help: family.def.help.to_owned(),
        module: family.def.module.to_owned(),
        labels: sample
            .labels
            .iter()
            .map(|(k, v)| pb::Label {
                name: (*k).to_owned(),
                value: v.to_string(),
            })
            .collect(),
        value,
        collected_at: Some(at),
    }
}

pub(super) fn reclaim_stats(histogram: &LatencyHistogram) -> pb::ReclaimStats {
    pb::ReclaimStats {
        episodes: histogram.count,
        stalled_seconds: histogram.sum_ns as f64 / 1e9,
        mean_seconds: histogram.mean_seconds(),
        p50_seconds: histogram.quantile_seconds(0.5),
        p99_seconds: histogram.quantile_seconds(0.99),
        max_seconds: histogram.max_seconds(),
    }
}

fn latency_stats(histogram: &LatencyHistogram) -> pb::LatencyStats {
    pb::LatencyStats {
        calls: histogram.count,
        total_seconds: histogram.sum_ns as f64 / 1e9,
        mean_seconds: histogram.mean_seconds(),
        p50_seconds: histogram.quantile_seconds(0.5),
        p99_seconds: histogram.quantile_seconds(0.99),
        max_seconds: histogram.max_seconds(),
    }
}

fn file_io_stats(io: &IoWorkloadCounts) -> pb::FileIoStats {
    pb::FileIoStats {
        read: Some(latency_stats(&io.read)),
        read_bytes: io.read_bytes,
        fsync: Some(latency_stats(&io.sync)),
        dirtied_pages: io.dirtied_pages,
        written_back_pages: io.written_back_pages,
    }
}

/// `acting` holds the refaults by the running processes, `owned` what the workload's memory
/// cgroups own.
fn memcg_stats(acting: &OwnerCounts, owned: &OwnerCounts) -> pb::MemcgStats {
    pb::MemcgStats {
        file_refaults: acting.file_refaults,
        anon_refaults: acting.anon_refaults,
        owned_adds: owned.adds,
        owned_evictions: owned.evictions,
        owned_file_refaults: owned.file_refaults,
        owned_anon_refaults: owned.anon_refaults,
    }
}

/// Per-workload statistics of a period, for the selected workloads (all reported ones when
/// `selected` is empty).
pub fn io_stats(store: &Store, period: &Period, selected: &[WorkloadId]) -> pb::IoStats {
    let names = store.names();
    let ids: Vec<WorkloadId> = if selected.is_empty() {
        store.reported_workloads()
    } else {
        selected.to_vec()
    };
    let workloads = ids
        .into_iter()
        .map(|id| {
            let counts = period.workload(id);
            let pc = &counts.page_cache;
            pb::WorkloadIoStats {
                workload: names.name(id).to_owned(),
                fadvise: sidecar_common::Advice::ALL
                    .iter()
                    .map(|advice| {
                        let c = counts.fadvise[*advice as usize];
                        pb::FadviseStats {
                            advice: advice.label().to_owned(),
                            calls: c.calls,
                            successes: c.successes,
                        }
                    })
                    .collect(),
                page_cache: Some(pb::PageCacheStats {
                    read_attempts: pc.read_attempts,
                    misses: pc.misses,
                    adds: pc.adds,
                    evictions: pc.evictions,
                    hit_ratio: crate::store::rates::cache_hit(counts).map(|p| p / 100.0),
                }),
                direct_reclaim: Some(reclaim_stats(
                    &counts.reclaim[sidecar_common::ReclaimKind::Direct as usize],
                )),
                memcg_reclaim: Some(reclaim_stats(
                    &counts.reclaim[sidecar_common::ReclaimKind::Memcg as usize],
                )),
                io: Some(file_io_stats(&counts.io)),
                memcg: Some(memcg_stats(&counts.refaults, &counts.memcg)),
            }
        })
        .collect();
    pb::IoStats {
        start: Some(timestamp(period.start)),
        end: Some(timestamp(period.end)),
        intervals: u32::try_from(period.intervals).unwrap_or(u32::MAX),
        workloads,
        host: Some(pb::HostReclaim {
            lru_pages_scanned: period.host.lru_pages_scanned,
            lru_pages_reclaimed: period.host.lru_pages_reclaimed,
            efficiency_percent: crate::store::rates::reclaim_efficiency(&period.host),
            kswapd_wakeups: period.host.kswapd_wakeups,
            direct_reclaim_in_progress: period.direct_reclaim_in_progress,
        }),
    }
}

pub(super) fn module_status(
    name: &str,
    state: Option<&ModuleState>,
    hook: Option<String>,
) -> pb::ModuleStatus {
    pb::ModuleStatus {
        name: name.to_owned(),
        state: state.map_or("starting", ModuleState::label).to_owned(),
        error: state
            .and_then(ModuleState::error)
            .unwrap_or_default()
            .to_owned(),
        hook: hook.unwrap_or_default(),
    }
}
