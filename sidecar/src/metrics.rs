//! The Prometheus view of the store: encoded on each scrape by a prometheus-client collector.
//!
//! prometheus-client writes OpenMetrics text; scrapers that do not ask for OpenMetrics get the
//! Prometheus text format 0.0.4, converted from it (see `to_prometheus_text`).

use std::sync::{Arc, RwLock};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use sidecar_common::{Advice, LATENCY_BUCKETS, ReclaimKind, latency_bucket_upper_ns};

use crate::{
    kernel::modules::Module,
    status::Status,
    store::{DRAIN_DURATION_BUCKETS, LatencyHistogram, Store, rates},
    workload::WorkloadId,
};

/// Which series a scrape wants (all, unless filtered).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Modules to include; empty means all (the daemon's own metrics are module `self`).
    pub modules: Vec<String>,
    pub workloads: Vec<String>,
}

impl Filter {
    fn module(&self, module: &str) -> bool {
        self.modules.is_empty() || self.modules.iter().any(|m| m == module)
    }
    fn workload(&self, workload: &str) -> bool {
        self.workloads.is_empty() || self.workloads.iter().any(|w| w == workload)
    }
}

/// The module name under which the daemon's own metrics are filtered.
pub const SELF_MODULE: &str = "self";

#[derive(Debug)]
struct Exposition {
    store: Arc<RwLock<Store>>,
    status: Arc<Status>,
    filter: Filter,
}

/// Encodes the metrics as OpenMetrics text (ending with `# EOF`).
pub fn encode_openmetrics(
    store: &Arc<RwLock<Store>>,
    status: &Arc<Status>,
    filter: Filter,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition {
        store: Arc::clone(store),
        status: Arc::clone(status),
        filter,
    }));
    let mut text = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn counter_family<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(family)
}

fn gauge_family<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, f64)>,
) -> Result<(), std::fmt::Error> {
    let samples: Vec<_> = samples.into_iter().collect();
    // A family without samples is left out entirely (rates are absent, not 0 or NaN).
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(family)
}

/// Prometheus bucket bounds (seconds) for the kernel's log2 ns buckets: the buckets below
/// ~1 µs fold into the first bound.
const FIRST_EXPORTED_BUCKET: u32 = 10;

fn latency_buckets(histogram: &LatencyHistogram) -> Vec<(f64, u64)> {
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
    buckets
}

fn histogram_family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: Vec<(Labels<'_>, &LatencyHistogram)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, histogram) in samples {
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                histogram.sum_ns as f64 / 1e9,
                histogram.count,
                &latency_buckets(histogram),
                None,
            )?;
    }
    Ok(())
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        let names = store.names();
        let workloads: Vec<(WorkloadId, &str)> = store
            .reported_workloads()
            .into_iter()
            .map(|id| (id, names.name(id)))
            .filter(|(_, name)| self.filter.workload(name))
            .collect();
        let last = store.last();
        let e = &mut encoder;

        if self.filter.module(Module::Fadvise.name()) {
            let by_advice = |pick: fn(&sidecar_common::FadviseCounts) -> u64| {
                workloads
                    .iter()
                    .flat_map(|&(id, name)| {
                        let totals = store.totals(id);
                        Advice::ALL.into_iter().map(move |advice| {
                            (
                                vec![("workload", name), ("advice", advice.label())],
                                pick(&totals.fadvise[advice as usize]),
                            )
                        })
                    })
                    .collect::<Vec<_>>()
            };
            counter_family(
                e,
                "ebpf_fadvise_calls",
                "posix_fadvise calls, by workload and advice.",
                by_advice(|c| c.calls),
            )?;
            counter_family(
                e,
                "ebpf_fadvise_success",
                "posix_fadvise calls that returned 0, by workload and advice.",
                by_advice(|c| c.successes),
            )?;
            gauge_family(
                e,
                "ebpf_fadvise_success_rate_percent",
                "Share of posix_fadvise calls that succeeded over the last interval.",
                workloads.iter().filter_map(|&(id, name)| {
                    Some((
                        vec![("workload", name)],
                        rates::fadvise_success(last?.workload(id))?,
                    ))
                }),
            )?;
        }

        if self.filter.module(Module::PageCache.name()) {
            let per_workload = |pick: fn(&sidecar_common::PageCacheCounts) -> u64| {
                workloads
                    .iter()
                    .map(|&(id, name)| {
                        (vec![("workload", name)], pick(&store.totals(id).page_cache))
                    })
                    .collect::<Vec<_>>()
            };
            counter_family(
                e,
                "ebpf_cache_read_attempts",
                "Pages requested by the read path.",
                per_workload(|c| c.requested_pages),
            )?;
            counter_family(
                e,
                "ebpf_cache_misses",
                "Requested pages that were not cached (added to the cache by the reader).",
                per_workload(|c| c.missed_pages),
            )?;
            counter_family(
                e,
                "ebpf_page_cache_adds",
                "Pages added to the page cache.",
                per_workload(|c| c.added_pages),
            )?;
            counter_family(
                e,
                "ebpf_page_cache_evictions",
                "Pages removed from the page cache while the workload was running.",
                per_workload(|c| c.evicted_pages),
            )?;
            gauge_family(
                e,
                "ebpf_cache_hit_rate_percent",
                "Share of requested pages that were cached, over the last interval.",
                workloads.iter().filter_map(|&(id, name)| {
                    Some((
                        vec![("workload", name)],
                        rates::cache_hit(last?.workload(id))?,
                    ))
                }),
            )?;
            gauge_family(
                e,
                "ebpf_cache_miss_rate_percent",
                "Share of requested pages that were not cached, over the last interval.",
                workloads.iter().filter_map(|&(id, name)| {
                    Some((
                        vec![("workload", name)],
                        rates::cache_miss(last?.workload(id))?,
                    ))
                }),
            )?;
        }

        if self.filter.module(Module::Vmscan.name()) {
            let host = store.host_totals();
            counter(
                e,
                "ebpf_memory_lru_pages_scanned",
                "Pages scanned by LRU shrinking, host-wide.",
                host.lru_pages_scanned,
            )?;
            counter(
                e,
                "ebpf_memory_lru_pages_reclaimed",
                "Pages reclaimed by LRU shrinking, host-wide.",
                host.lru_pages_reclaimed,
            )?;
            counter(
                e,
                "ebpf_memory_kswapd_wakeups",
                "kswapd wakeups, host-wide.",
                host.kswapd_wakeups,
            )?;
            counter_family(
                e,
                "ebpf_memory_direct_reclaim",
                "Direct-reclaim episodes.",
                workloads.iter().map(|&(id, name)| {
                    (
                        vec![("workload", name)],
                        store.totals(id).reclaim[ReclaimKind::Direct as usize].count,
                    )
                }),
            )?;
            for (kind, name, help) in [
                (
                    ReclaimKind::Direct,
                    "ebpf_memory_direct_reclaim_seconds",
                    "Time tasks stalled in direct reclaim.",
                ),
                (
                    ReclaimKind::Memcg,
                    "ebpf_memory_memcg_reclaim_seconds",
                    "Time tasks stalled in memory-cgroup reclaim.",
                ),
            ] {
                histogram_family(
                    e,
                    name,
                    help,
                    workloads
                        .iter()
                        .map(|&(id, workload)| {
                            (
                                vec![("workload", workload)],
                                &store.totals(id).reclaim[kind as usize],
                            )
                        })
                        .collect(),
                )?;
            }
            if let Some(efficiency) = last.and_then(|l| rates::reclaim_efficiency(&l.host)) {
                gauge(
                    e,
                    "ebpf_memory_reclaim_efficiency_percent",
                    "Pages reclaimed per page scanned over the last interval, host-wide.",
                    efficiency,
                )?;
            }
            gauge(
                e,
                "ebpf_memory_direct_reclaim_processes",
                "Tasks in direct reclaim at the last drain.",
                last.map_or(0, |l| l.direct_reclaim_in_progress) as f64,
            )?;
        }

        if self.filter.module(SELF_MODULE) {
            self.encode_self(e, &store)?;
        }
        Ok(())
    }
}

impl Exposition {
    fn encode_self(
        &self,
        e: &mut DescriptorEncoder<'_>,
        store: &Store,
    ) -> Result<(), std::fmt::Error> {
        let info = e.encode_descriptor(
            "sidecar_build",
            "Build information.",
            None,
            MetricType::Info,
        )?;
        prometheus_client::metrics::info::Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION")),
            ("kernel", self.status.kernel().release.as_str()),
        ])
        .encode(info)?;

        let modules = self.status.modules().unwrap_or_default();
        gauge_family(
            e,
            "sidecar_module_attached",
            "1 when every program of the module is attached, else 0.",
            Module::ALL.into_iter().map(|module| {
                let attached = modules
                    .get(&module)
                    .is_some_and(|s| *s == crate::kernel::ModuleState::Attached);
                (
                    vec![("module", module.name())],
                    f64::from(u8::from(attached)),
                )
            }),
        )?;
        counter(
            e,
            "sidecar_drains",
            "Drains of the kernel maps.",
            store.drains(),
        )?;
        let durations = store.drain_durations();
        let mut family = e.encode_descriptor(
            "sidecar_drain_duration_seconds",
            "Time to switch epochs and read and clear the kernel maps.",
            None,
            MetricType::Histogram,
        )?;
        let buckets: Vec<(f64, u64)> = DRAIN_DURATION_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(durations.counts.iter().copied())
            .collect();
        family.encode_histogram::<NoLabelSet>(
            durations.sum_seconds,
            durations.count,
            &buckets,
            None,
        )?;
        if let Some(last) = store.last() {
            gauge(
                e,
                "sidecar_last_drain_timestamp_seconds",
                "When the last drain ended (Unix time).",
                last.at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            )?;
            gauge(
                e,
                "sidecar_last_drain_switch_seconds",
                "Time the last drain waited for the epoch switch (an RCU grace period).",
                last.drain.switch_duration.as_secs_f64(),
            )?;
            gauge(
                e,
                "sidecar_last_drain_entries",
                "Kernel map entries read and removed by the last drain.",
                last.drain.entries as f64,
            )?;
        }
        let host = store.host_totals();
        counter_family(
            e,
            "sidecar_map_overflow",
            "Events counted under workload \"other\" because a kernel map was full.",
            [
                (vec![("map", "fadvise")], host.overflow.fadvise),
                (vec![("map", "page_cache")], host.overflow.page_cache),
                (vec![("map", "reclaim")], host.overflow.reclaim),
                (vec![("map", "processes")], host.overflow.processes),
            ],
        )?;
        counter(
            e,
            "sidecar_bpf_field_read_errors",
            "Tracepoint fields the programs could not read (should stay 0).",
            host.field_read_errors,
        )?;
        counter(
            e,
            "sidecar_dropped_process_events",
            "Events of processes that matched no workload, dropped (unmatched: drop).",
            host.dropped_process_events,
        )?;
        gauge(
            e,
            "sidecar_tracked_processes",
            "Processes with a cached workload classification.",
            store.tracked_processes() as f64,
        )?;
        gauge(
            e,
            "sidecar_kernel_map_bytes",
            "Kernel memory held by the sidecar's BPF maps.",
            self.status.kernel_map_bytes() as f64,
        )?;
        if !store.programs().is_empty() {
            let programs = store.programs();
            let mut run_time = e.encode_descriptor(
                "sidecar_bpf_program_run_seconds",
                "CPU time spent in each BPF program (kernel BPF statistics).",
                None,
                MetricType::Counter,
            )?;
            for program in programs {
                ConstCounter::new(program.run_time.as_secs_f64())
                    .encode(run_time.encode_family(&vec![("program", program.name.as_str())])?)?;
            }
            counter_family(
                e,
                "sidecar_bpf_program_runs",
                "Runs of each BPF program (kernel BPF statistics).",
                programs
                    .iter()
                    .map(|p| (vec![("program", p.name.as_str())], p.run_count)),
            )?;
        }
        Ok(())
    }
}

/// Converts OpenMetrics text to the Prometheus text format 0.0.4: counter families take
/// their `_total` name, info families become gauges, and `# EOF` and `# UNIT` go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut renamed: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.splitn(2, ' ');
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                match kind {
                    "counter" => {
                        renamed.insert(name, format!("{name}_total"));
                    }
                    "info" => {
                        renamed.insert(name, format!("{name}_info"));
                    }
                    _ => {}
                }
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            let new_name = renamed.get(name)?;
            let tail = if *prefix == "# TYPE " && tail == "info" {
                "gauge"
            } else {
                tail
            };
            Some(format!("{prefix}{new_name} {tail}"))
        });
        match rewritten {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::{config::Config, status::KernelFacts, store::Interval, workload::WorkloadNames};

    fn fixture() -> (Arc<RwLock<Store>>, Arc<Status>) {
        let config = Config::parse("workloads:\n  - name: jobs\n    pids: [1]\n", "t").unwrap();
        let names = WorkloadNames::from_config(&config);
        let mut store = Store::new(names.clone(), 10, true);
        let mut interval = Interval::empty(names.len(), SystemTime::now());
        interval.workloads[0].fadvise[Advice::DontNeed as usize].calls = 5;
        interval.workloads[0].fadvise[Advice::DontNeed as usize].successes = 4;
        interval.workloads[0].page_cache.requested_pages = 100;
        interval.workloads[0].page_cache.missed_pages = 10;
        interval.workloads[0].reclaim[ReclaimKind::Memcg as usize].record(3_000_000);
        interval.host.lru_pages_scanned = 10;
        interval.host.lru_pages_reclaimed = 5;
        store.apply(interval, Vec::new(), 1);
        (
            Arc::new(RwLock::new(store)),
            Arc::new(Status::new(KernelFacts::default())),
        )
    }

    #[test]
    fn openmetrics_has_the_contract_names() {
        let (store, status) = fixture();
        let text = encode_openmetrics(&store, &status, Filter::default()).unwrap();
        assert!(text.ends_with("# EOF\n"));
        for expected in [
            "ebpf_fadvise_calls_total{workload=\"jobs\",advice=\"dontneed\"} 5",
            "ebpf_fadvise_success_total{workload=\"jobs\",advice=\"dontneed\"} 4",
            "ebpf_fadvise_success_rate_percent{workload=\"jobs\"} 80.0",
            "ebpf_cache_read_attempts_total{workload=\"jobs\"} 100",
            "ebpf_cache_misses_total{workload=\"jobs\"} 10",
            "ebpf_cache_hit_rate_percent{workload=\"jobs\"} 90.0",
            "ebpf_memory_lru_pages_scanned_total 10",
            "ebpf_memory_reclaim_efficiency_percent 50.0",
            "ebpf_memory_memcg_reclaim_seconds_count{workload=\"jobs\"} 1",
            "ebpf_memory_memcg_reclaim_seconds_bucket{le=\"+Inf\",workload=\"jobs\"} 1",
            "sidecar_drains_total 1",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        // `other` had no events in the interval: no rate for it.
        assert!(!text.contains("ebpf_cache_hit_rate_percent{workload=\"other\"}"));
        assert!(text.contains("ebpf_cache_read_attempts_total{workload=\"other\"} 0"));
    }

    #[test]
    fn latency_buckets_are_cumulative_in_seconds() {
        let mut h = LatencyHistogram::default();
        h.record(500); // folds into the first exported bound
        h.record(3_000_000);
        let buckets = latency_buckets(&h);
        assert_eq!(buckets.first().map(|b| b.1), Some(1));
        assert!((buckets[0].0 - 1.024e-6).abs() < 1e-12);
        assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 2);
    }

    #[test]
    fn filters_narrow_the_output() {
        let (store, status) = fixture();
        let filter = Filter {
            modules: vec!["page_cache".into()],
            workloads: vec!["jobs".into()],
        };
        let text = encode_openmetrics(&store, &status, filter).unwrap();
        assert!(text.contains("ebpf_cache_misses_total{workload=\"jobs\"}"));
        assert!(!text.contains("workload=\"other\""));
        assert!(!text.contains("ebpf_fadvise"));
        assert!(!text.contains("sidecar_"));
    }

    #[test]
    fn prometheus_text_renames_counter_families() {
        let (store, status) = fixture();
        let text =
            to_prometheus_text(&encode_openmetrics(&store, &status, Filter::default()).unwrap());
        assert!(text.contains("# TYPE ebpf_fadvise_calls_total counter\n"));
        assert!(text.contains("# HELP ebpf_fadvise_calls_total posix_fadvise"));
        assert!(text.contains("# TYPE sidecar_build_info gauge\n"));
        assert!(!text.contains("# EOF"));
        assert!(text.contains("# TYPE ebpf_memory_memcg_reclaim_seconds histogram\n"));
    }
}
