//! The metric families: one model, built from the store, that every pull sink encodes.
//! `/metrics` encodes it with prometheus-client; `GetMetrics` flattens it into messages.
//!
//! prometheus-client writes OpenMetrics text; scrapers that do not ask for OpenMetrics get the
//! Prometheus text format 0.0.4, which differs only in counter descriptors (see `encode`).

use crate::sync::Recover as _;
use std::{
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};
use sidecar_common::{Advice, LATENCY_BUCKETS, ReclaimKind, latency_bucket_upper_ns};

use crate::{
    kernel::{ModuleState, modules::Module},
    status::Status,
    store::{DRAIN_DURATION_BUCKETS, LatencyHistogram, Store, rates},
    workload::WorkloadId,
};

/// The module name under which the daemon's own metrics are filtered.
pub const SELF_MODULE: &str = "self";

/// Every module name a filter may use.
pub fn module_names() -> impl Iterator<Item = &'static str> {
    Module::ALL
        .into_iter()
        .map(Module::name)
        .chain(std::iter::once(SELF_MODULE))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric family: name (without the `_total`/`_info` suffix), type, help, module.
#[derive(Debug)]
pub struct FamilyDef {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub module: &'static str,
}

impl FamilyDef {
    /// The name samples carry on /metrics: counters end in `_total`.
    pub fn exposed_name(&self) -> String {
        match self.kind {
            Kind::Counter => format!("{}_total", self.name),
            Kind::Gauge | Kind::Histogram => self.name.to_owned(),
        }
    }
}

macro_rules! families {
    ($($id:ident = $name:literal, $kind:ident, $module:expr, $help:literal;)*) => {
        $(pub static $id: FamilyDef = FamilyDef {
            name: $name,
            kind: Kind::$kind,
            help: $help,
            module: $module,
        };)*
        /// Every family the sidecar can export, in exposition order.
        pub const CATALOG: &[&FamilyDef] = &[$(&$id),*];
    };
}

const FADVISE: &str = "fadvise";
const PAGE_CACHE: &str = "page_cache";
const VMSCAN: &str = "vmscan";

families! {
    FADVISE_CALLS = "ebpf_fadvise_calls", Counter, FADVISE,
        "posix_fadvise calls, by workload and advice.";
    FADVISE_SUCCESS = "ebpf_fadvise_success", Counter, FADVISE,
        "posix_fadvise calls that returned 0, by workload and advice.";
    FADVISE_SUCCESS_RATE = "ebpf_fadvise_success_rate_percent", Gauge, FADVISE,
        "Share of posix_fadvise calls that succeeded over the last interval.";
    CACHE_READ_ATTEMPTS = "ebpf_cache_read_attempts", Counter, PAGE_CACHE,
        "Pages requested by the read path.";
    CACHE_MISSES = "ebpf_cache_misses", Counter, PAGE_CACHE,
        "Requested pages that were not cached (added to the cache by the reader).";
    PAGE_CACHE_ADDS = "ebpf_page_cache_adds", Counter, PAGE_CACHE,
        "Pages added to the page cache.";
    PAGE_CACHE_EVICTIONS = "ebpf_page_cache_evictions", Counter, PAGE_CACHE,
        "Pages removed from the page cache while the workload was running.";
    CACHE_HIT_RATE = "ebpf_cache_hit_rate_percent", Gauge, PAGE_CACHE,
        "Share of requested pages that were cached, over the last interval.";
    CACHE_MISS_RATE = "ebpf_cache_miss_rate_percent", Gauge, PAGE_CACHE,
        "Share of requested pages that were not cached, over the last interval.";
    LRU_SCANNED = "ebpf_memory_lru_pages_scanned", Counter, VMSCAN,
        "Pages scanned by LRU shrinking, host-wide.";
    LRU_RECLAIMED = "ebpf_memory_lru_pages_reclaimed", Counter, VMSCAN,
        "Pages reclaimed by LRU shrinking, host-wide.";
    KSWAPD_WAKEUPS = "ebpf_memory_kswapd_wakeups", Counter, VMSCAN,
        "kswapd wakeups, host-wide.";
    DIRECT_RECLAIM = "ebpf_memory_direct_reclaim", Counter, VMSCAN,
        "Direct-reclaim episodes.";
    DIRECT_RECLAIM_SECONDS = "ebpf_memory_direct_reclaim_seconds", Histogram, VMSCAN,
        "Time tasks stalled in direct reclaim.";
    MEMCG_RECLAIM_SECONDS = "ebpf_memory_memcg_reclaim_seconds", Histogram, VMSCAN,
        "Time tasks stalled in memory-cgroup reclaim.";
    RECLAIM_EFFICIENCY = "ebpf_memory_reclaim_efficiency_percent", Gauge, VMSCAN,
        "Pages reclaimed per page scanned over the last interval, host-wide.";
    DIRECT_RECLAIM_PROCESSES = "ebpf_memory_direct_reclaim_processes", Gauge, VMSCAN,
        "Tasks in direct reclaim at the last drain.";
    BUILD = "sidecar_build_info", Gauge, SELF_MODULE,
        "Build information; the value is always 1.";
    MODULE_ATTACHED = "sidecar_module_attached", Gauge, SELF_MODULE,
        "1 when every program of the module is attached, else 0.";
    DRAINS = "sidecar_drains", Counter, SELF_MODULE,
        "Drains of the kernel maps.";
    DRAIN_DURATION = "sidecar_drain_duration_seconds", Histogram, SELF_MODULE,
        "Time to switch epochs and read and clear the kernel maps.";
    LAST_DRAIN_TIMESTAMP = "sidecar_last_drain_timestamp_seconds", Gauge, SELF_MODULE,
        "When the last drain ended (Unix time).";
    LAST_DRAIN_SWITCH = "sidecar_last_drain_switch_seconds", Gauge, SELF_MODULE,
        "Time the last drain waited for the epoch switch (an RCU grace period).";
    LAST_DRAIN_ENTRIES = "sidecar_last_drain_entries", Gauge, SELF_MODULE,
        "Kernel map entries read and removed by the last drain.";
    MAP_OVERFLOW = "sidecar_map_overflow", Counter, SELF_MODULE,
        "Events counted under workload \"other\" because a kernel map was full.";
    FIELD_READ_ERRORS = "sidecar_bpf_field_read_errors", Counter, SELF_MODULE,
        "Tracepoint fields the programs could not read (should stay 0).";
    DROPPED_PROCESS_EVENTS = "sidecar_dropped_process_events", Counter, SELF_MODULE,
        "Events of processes that matched no workload, dropped (unmatched: drop).";
    FADVISE_CALLS_SEEN = "sidecar_fadvise_calls_seen", Counter, SELF_MODULE,
        "posix_fadvise calls seen host-wide: the per-workload calls add up to this.";
    TRACKED_PROCESSES = "sidecar_tracked_processes", Gauge, SELF_MODULE,
        "Processes with a cached workload classification.";
    KERNEL_MAP_BYTES = "sidecar_kernel_map_bytes", Gauge, SELF_MODULE,
        "Kernel memory held by the sidecar's BPF maps.";
    HISTORY_BYTES = "sidecar_history_bytes", Gauge, SELF_MODULE,
        "Estimated bytes of the intervals retained for windows (bounded by limits.max_history_bytes).";
    HISTORY_INTERVALS = "sidecar_history_intervals", Gauge, SELF_MODULE,
        "Intervals retained for windows; older ones are merged to fit the byte budget.";
    BPF_RUN_SECONDS = "sidecar_bpf_program_run_seconds", Counter, SELF_MODULE,
        "CPU time spent in each BPF program (kernel BPF statistics; 0 unless bpf_stats is on).";
    BPF_RUNS = "sidecar_bpf_program_runs", Counter, SELF_MODULE,
        "Runs of each BPF program (kernel BPF statistics; 0 unless bpf_stats is on).";
    EXPORT_POINTS = "sidecar_export_points", Counter, SELF_MODULE,
        "Points sent to BanyanDB, by result: written (acknowledged), retried (a failed attempt, queued again), rejected (refused for good).";
    EXPORT_QUEUE_POINTS = "sidecar_export_queue_points", Gauge, SELF_MODULE,
        "Points waiting for delivery to BanyanDB, in memory and in the spool.";
    EXPORT_SPOOL_BYTES = "sidecar_export_spool_bytes", Gauge, SELF_MODULE,
        "Bytes of the BanyanDB exporter's on-disk spool.";
    EXPORT_DROPPED_POINTS = "sidecar_export_dropped_points", Counter, SELF_MODULE,
        "Points dropped undelivered: the oldest, when the spool was full.";
    EXPORT_SPOOL_CORRUPT_RECORDS = "sidecar_export_spool_corrupt_records", Counter, SELF_MODULE,
        "Spool records skipped because they were torn (a crash mid-write) or failed their CRC-32C.";
    EXPORT_CIRCUIT_STATE = "sidecar_export_circuit_state", Gauge, SELF_MODULE,
        "The BanyanDB exporter's circuit breaker: 0 closed, 1 open, 2 half-open.";
}

/// A sample's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Count(u64),
    Number(f64),
    /// Non-cumulative bucket counts by upper bound (the last is +Inf).
    Histogram {
        count: u64,
        sum: f64,
        buckets: Vec<(f64, u64)>,
    },
}

/// A label value. Shared, so that the same workload name in thousands of samples is one
/// allocation (a scrape at 1,000 workloads builds about 20,000 samples).
pub type LabelValue = Arc<str>;

/// A sample's labels, inline up to the two that per-workload families carry.
pub type Labels = smallvec::SmallVec<[(&'static str, LabelValue); 2]>;

/// Labels from borrowed values, for the families with a handful of samples.
fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k, Arc::from(v))).collect()
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: Value,
}

#[derive(Debug)]
pub struct Family {
    pub def: &'static FamilyDef,
    pub samples: Vec<Sample>,
}

/// Which families and series to build.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Module names; empty means all (the daemon's own metrics are module `self`).
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

fn sample(labels: Labels, value: Value) -> Sample {
    Sample { labels, value }
}

/// Prometheus bucket bounds (seconds) for the kernel's log2 ns buckets: the buckets below
/// ~1 µs fold into the first bound.
const FIRST_EXPORTED_BUCKET: u32 = 10;

fn latency_value(histogram: &LatencyHistogram) -> Value {
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

/// Families whose values come from the daemon's status, not from the store.
const STATUS_FAMILIES: [&FamilyDef; 8] = [
    &BUILD,
    &MODULE_ATTACHED,
    &KERNEL_MAP_BYTES,
    &EXPORT_POINTS,
    &EXPORT_QUEUE_POINTS,
    &EXPORT_SPOOL_BYTES,
    &EXPORT_DROPPED_POINTS,
    &EXPORT_CIRCUIT_STATE,
];

impl Part {
    fn includes(self, def: &'static FamilyDef) -> bool {
        let from_status = STATUS_FAMILIES.iter().any(|d| std::ptr::eq(*d, def));
        match self {
            Part::All => true,
            Part::Store => !from_status,
            Part::Status => from_status,
        }
    }
}

fn collect_part(store: &Store, status: &Status, filter: &Filter, part: Part) -> Vec<Family> {
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
    let mut families = Vec::new();
    let mut push = |def: &'static FamilyDef, samples: &dyn Fn() -> Vec<Sample>| {
        if filter.module(def.module) && part.includes(def) {
            families.push(Family {
                def,
                samples: samples(),
            });
        }
    };
    let per_workload = |value: &dyn Fn(WorkloadId) -> Option<Value>| -> Vec<Sample> {
        let mut samples = Vec::with_capacity(workloads.len());
        samples.extend(workloads.iter().filter_map(|(id, name)| {
            let value = value(*id)?;
            Some(sample(
                smallvec::smallvec![("workload", name.clone())],
                value,
            ))
        }));
        samples
    };
    let advice_labels = &advice_labels;
    let by_advice = |pick: fn(&sidecar_common::FadviseCounts) -> u64| -> Vec<Sample> {
        let mut samples = Vec::with_capacity(workloads.len() * Advice::COUNT);
        for (id, name) in &workloads {
            let totals = store.totals(*id);
            samples.extend(Advice::ALL.into_iter().map(|advice| {
                sample(
                    smallvec::smallvec![
                        ("workload", name.clone()),
                        ("advice", advice_labels[advice as usize].clone()),
                    ],
                    Value::Count(pick(&totals.fadvise[advice as usize])),
                )
            }));
        }
        samples
    };
    let host = store.host_totals();

    push(&FADVISE_CALLS, &|| by_advice(|c| c.calls));
    push(&FADVISE_SUCCESS, &|| by_advice(|c| c.successes));
    push(&FADVISE_SUCCESS_RATE, &|| {
        per_workload(&|id| rates::fadvise_success(last?.workload(id)).map(Value::Number))
    });
    let page_cache = |pick: fn(&sidecar_common::PageCacheCounts) -> u64| {
        per_workload(&|id| Some(Value::Count(pick(&store.totals(id).page_cache))))
    };
    push(&CACHE_READ_ATTEMPTS, &|| page_cache(|c| c.read_attempts));
    push(&CACHE_MISSES, &|| page_cache(|c| c.misses));
    push(&PAGE_CACHE_ADDS, &|| page_cache(|c| c.adds));
    push(&PAGE_CACHE_EVICTIONS, &|| page_cache(|c| c.evictions));
    push(&CACHE_HIT_RATE, &|| {
        per_workload(&|id| rates::cache_hit(last?.workload(id)).map(Value::Number))
    });
    push(&CACHE_MISS_RATE, &|| {
        per_workload(&|id| rates::cache_miss(last?.workload(id)).map(Value::Number))
    });

    let host_count = |value: u64| vec![sample(Labels::new(), Value::Count(value))];
    push(&LRU_SCANNED, &|| host_count(host.lru_pages_scanned));
    push(&LRU_RECLAIMED, &|| host_count(host.lru_pages_reclaimed));
    push(&KSWAPD_WAKEUPS, &|| host_count(host.kswapd_wakeups));
    push(&DIRECT_RECLAIM, &|| {
        per_workload(&|id| {
            Some(Value::Count(
                store.totals(id).reclaim[ReclaimKind::Direct as usize].count,
            ))
        })
    });
    for (def, kind) in [
        (&DIRECT_RECLAIM_SECONDS, ReclaimKind::Direct),
        (&MEMCG_RECLAIM_SECONDS, ReclaimKind::Memcg),
    ] {
        // A workload's histogram appears with its first stall: ~30 buckets of zeros for
        // every workload that never stalled would make most of a large scrape.
        push(def, &|| {
            per_workload(&|id| {
                let histogram = &store.totals(id).reclaim[kind as usize];
                (histogram.count > 0).then(|| latency_value(histogram))
            })
        });
    }
    push(&RECLAIM_EFFICIENCY, &|| {
        last.and_then(|l| rates::reclaim_efficiency(&l.host))
            .map(|v| sample(Labels::new(), Value::Number(v)))
            .into_iter()
            .collect()
    });
    push(&DIRECT_RECLAIM_PROCESSES, &|| {
        vec![sample(
            Labels::new(),
            Value::Number(last.map_or(0, |l| l.direct_reclaim_in_progress) as f64),
        )]
    });

    push(&BUILD, &|| {
        vec![sample(
            labels([
                ("version", env!("CARGO_PKG_VERSION")),
                ("kernel", &status.kernel().release),
            ]),
            Value::Number(1.0),
        )]
    });
    let modules = status.modules().unwrap_or_default();
    push(&MODULE_ATTACHED, &|| {
        Module::ALL
            .into_iter()
            .map(|module| {
                let attached = modules.get(&module) == Some(&ModuleState::Attached);
                sample(
                    labels([("module", module.name())]),
                    Value::Number(f64::from(u8::from(attached))),
                )
            })
            .collect()
    });
    push(&DRAINS, &|| host_count(store.drains()));
    let durations = store.drain_durations();
    push(&DRAIN_DURATION, &|| {
        vec![sample(
            Labels::new(),
            Value::Histogram {
                count: durations.count,
                sum: durations.sum_seconds,
                buckets: DRAIN_DURATION_BUCKETS
                    .iter()
                    .copied()
                    .chain(std::iter::once(f64::INFINITY))
                    .zip(durations.counts.iter().copied())
                    .collect(),
            },
        )]
    });
    let last_number = |value: &dyn Fn(&crate::store::Interval) -> f64| -> Vec<Sample> {
        last.map(|l| sample(Labels::new(), Value::Number(value(l))))
            .into_iter()
            .collect()
    };
    push(&LAST_DRAIN_TIMESTAMP, &|| {
        last_number(&|l| {
            l.at.duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        })
    });
    push(&LAST_DRAIN_SWITCH, &|| {
        last_number(&|l| l.drain.switch_duration.as_secs_f64())
    });
    push(&LAST_DRAIN_ENTRIES, &|| {
        last_number(&|l| l.drain.entries as f64)
    });
    push(&MAP_OVERFLOW, &|| {
        [
            ("fadvise", host.overflow.fadvise),
            ("page_cache", host.overflow.page_cache),
            ("reclaim", host.overflow.reclaim),
            ("processes", host.overflow.processes),
        ]
        .into_iter()
        .map(|(map, value)| sample(labels([("map", map)]), Value::Count(value)))
        .collect()
    });
    push(&FIELD_READ_ERRORS, &|| host_count(host.field_read_errors));
    push(&DROPPED_PROCESS_EVENTS, &|| {
        host_count(host.dropped_process_events)
    });
    push(&FADVISE_CALLS_SEEN, &|| host_count(host.fadvise_calls_seen));
    push(&TRACKED_PROCESSES, &|| {
        vec![sample(
            Labels::new(),
            Value::Number(store.tracked_processes() as f64),
        )]
    });
    push(&HISTORY_BYTES, &|| {
        vec![sample(
            Labels::new(),
            Value::Number(store.history_bytes() as f64),
        )]
    });
    push(&HISTORY_INTERVALS, &|| {
        vec![sample(
            Labels::new(),
            Value::Number(store.history_intervals() as f64),
        )]
    });
    push(&KERNEL_MAP_BYTES, &|| {
        vec![sample(
            Labels::new(),
            Value::Number(status.kernel_map_bytes() as f64),
        )]
    });
    let programs = store.programs();
    push(&BPF_RUN_SECONDS, &|| {
        programs
            .iter()
            .map(|p| {
                sample(
                    labels([("program", &p.name)]),
                    Value::Number(p.run_time.as_secs_f64()),
                )
            })
            .collect()
    });
    push(&BPF_RUNS, &|| {
        programs
            .iter()
            .map(|p| sample(labels([("program", &p.name)]), Value::Count(p.run_count)))
            .collect()
    });
    let exporters = status.exporters();
    push(&EXPORT_POINTS, &|| {
        exporters
            .iter()
            .flat_map(|e| {
                [
                    ("written", e.written),
                    ("retried", e.retried),
                    ("rejected", e.rejected),
                ]
            })
            .map(|(result, value)| sample(labels([("result", result)]), Value::Count(value)))
            .collect()
    });
    let exporter_value = |value: &dyn Fn(&crate::export::ExporterSnapshot) -> Value| {
        exporters
            .iter()
            .map(|e| sample(Labels::new(), value(e)))
            .collect::<Vec<_>>()
    };
    push(&EXPORT_QUEUE_POINTS, &|| {
        exporter_value(&|e| Value::Number(e.queue_points as f64))
    });
    push(&EXPORT_SPOOL_BYTES, &|| {
        exporter_value(&|e| Value::Number(e.spool_bytes as f64))
    });
    push(&EXPORT_DROPPED_POINTS, &|| {
        exporter_value(&|e| Value::Count(e.dropped))
    });
    push(&EXPORT_SPOOL_CORRUPT_RECORDS, &|| {
        exporter_value(&|e| Value::Count(e.spool_corrupt_records))
    });
    push(&EXPORT_CIRCUIT_STATE, &|| {
        exporter_value(&|e| Value::Number(f64::from(e.circuit as u8)))
    });
    // A family without samples is left out (rates are absent, not 0 or NaN).
    families.retain(|f| !f.samples.is_empty());
    families
}

/// One family, as prometheus-client sees it.
struct Exposition(Family);

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition")
            .field("family", &self.0.def.name)
            .field("samples", &self.0.samples.len())
            .finish()
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let family = &self.0;
        let def = family.def;
        let kind = match def.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        let mut metric = encoder.encode_descriptor(def.name, def.help, None, kind)?;
        let mut labels: Vec<(&str, &str)> = Vec::new();
        for sample in &family.samples {
            labels.clear();
            labels.extend(sample.labels.iter().map(|(k, v)| (*k, &**v)));
            if labels.is_empty() {
                encode_value(&mut metric, def.kind, &sample.value)?;
            } else {
                encode_value(
                    &mut metric.encode_family(&labels.as_slice())?,
                    def.kind,
                    &sample.value,
                )?;
            }
        }
        Ok(())
    }
}

fn encode_value(
    target: &mut prometheus_client::encoding::MetricEncoder<'_>,
    kind: Kind,
    value: &Value,
) -> Result<(), std::fmt::Error> {
    match (kind, value) {
        (Kind::Counter, Value::Count(v)) => target.encode_counter::<NoLabelSet, _, u64>(v, None),
        (Kind::Counter, Value::Number(v)) => target.encode_counter::<NoLabelSet, _, f64>(v, None),
        (_, Value::Count(v)) => target.encode_gauge(&(*v as f64)),
        (_, Value::Number(v)) => target.encode_gauge(v),
        (
            _,
            Value::Histogram {
                count,
                sum,
                buckets,
            },
        ) => target.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None),
    }
}

/// The exposition's size last time, so that the next one is allocated once.
static LAST_SIZE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(16 * 1024);

/// Encodes the filtered families as OpenMetrics text (ending with `# EOF`) or, with
/// `openmetrics` false, the Prometheus text format 0.0.4.
pub fn encode(
    store: &Arc<RwLock<Store>>,
    status: &Arc<Status>,
    filter: &Filter,
    openmetrics: bool,
) -> Result<String, std::fmt::Error> {
    use std::sync::atomic::Ordering;
    // Collected from a snapshot: the drain never waits for a scrape.
    let families = collect(&crate::store::snapshot(store), status, filter);
    let mut out = String::with_capacity(LAST_SIZE.load(Ordering::Relaxed) + 4096);
    encode_families(families, openmetrics, &mut out)?;
    if openmetrics {
        prometheus_client::encoding::text::encode_eof(&mut out)?;
    }
    LAST_SIZE.store(out.len(), Ordering::Relaxed);
    Ok(out)
}

/// Appends `families` to `out`, without the OpenMetrics `# EOF`.
///
/// prometheus-client writes OpenMetrics. The two formats differ only in a counter
/// family's descriptor (0.0.4 names the family `x_total`, as its samples are named), the
/// `# UNIT` lines (never written: no family has a unit) and `# EOF`. So each family is
/// encoded on its own and, for 0.0.4, a counter's two descriptor lines are written here
/// instead of prometheus-client's; samples are written as they are.
fn encode_families(
    families: Vec<Family>,
    openmetrics: bool,
    out: &mut String,
) -> Result<(), std::fmt::Error> {
    use std::fmt::Write as _;
    for family in families {
        let def = family.def;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposition(family)));
        if openmetrics || def.kind != Kind::Counter {
            prometheus_client::encoding::text::encode_registry(out, &registry)?;
            continue;
        }
        let name = def.exposed_name();
        writeln!(out, "# HELP {name} {}", def.help)?;
        writeln!(out, "# TYPE {name} counter")?;
        let mut samples = SkipLines { out, lines: 2 };
        prometheus_client::encoding::text::encode_registry(&mut samples, &registry)?;
    }
    Ok(())
}

/// How long after the last unfiltered scrape in a format its text is still rendered at
/// every drain. Past it, nobody is scraping that format, and rendering stops.
const KEEP_RENDERING: Duration = Duration::from_secs(600);

/// The store's families as text, rendered once per drain for each format that scrapers
/// ask for. The store changes only at a drain, so every scrape between two drains would
/// encode the same text; at 1,000 workloads that is about 19,000 series and milliseconds
/// of work per scrape. Rendering happens after each drain (`refresh`), off the request
/// path; a scrape that arrives before it renders the text itself. The daemon's status
/// families (exporter counters, module states) change at any time and are encoded at
/// every scrape. Filtered scrapes are encoded on demand.
#[derive(Debug, Default)]
pub struct ExpositionCache {
    /// Indexed by `openmetrics as usize`.
    formats: [Mutex<Rendered>; 2],
}

#[derive(Debug, Default)]
struct Rendered {
    /// The drain the text is of.
    drain: Option<u64>,
    text: Arc<String>,
    last_asked: Option<Instant>,
}

impl ExpositionCache {
    /// The unfiltered exposition in one format.
    pub fn scrape(
        &self,
        store: &Arc<RwLock<Store>>,
        status: &Arc<Status>,
        openmetrics: bool,
    ) -> Result<String, std::fmt::Error> {
        let slot = &self.formats[usize::from(openmetrics)];
        let drain = store.read().recover().drains();
        let cached = {
            let mut rendered = slot.lock().recover();
            rendered.last_asked = Some(Instant::now());
            (rendered.drain == Some(drain)).then(|| Arc::clone(&rendered.text))
        };
        let text = match cached {
            Some(text) => text,
            None => render(slot, store, status, openmetrics)?,
        };
        let status_families = collect_part(
            &crate::store::snapshot(store),
            status,
            &Filter::default(),
            Part::Status,
        );
        let mut out = String::with_capacity(text.len() + 8 * 1024);
        out.push_str(&text);
        encode_families(status_families, openmetrics, &mut out)?;
        if openmetrics {
            prometheus_client::encoding::text::encode_eof(&mut out)?;
        }
        Ok(out)
    }

    /// Renders, after a drain, the formats scraped within `KEEP_RENDERING`.
    pub fn refresh(&self, store: &Arc<RwLock<Store>>, status: &Arc<Status>) {
        for (index, slot) in self.formats.iter().enumerate() {
            let wanted = slot
                .lock()
                .recover()
                .last_asked
                .is_some_and(|at| at.elapsed() < KEEP_RENDERING);
            if wanted {
                // Encoding into a String cannot fail; a failure would leave the old text,
                // which a scrape then replaces.
                let _ = render(slot, store, status, index == 1);
            }
        }
    }
}

/// Encodes the store's families of the current drain into `slot`, unless a newer text is
/// already there.
fn render(
    slot: &Mutex<Rendered>,
    store: &Arc<RwLock<Store>>,
    status: &Arc<Status>,
    openmetrics: bool,
) -> Result<Arc<String>, std::fmt::Error> {
    let (drain, families) = {
        let store = crate::store::snapshot(store);
        let families = collect_part(&store, status, &Filter::default(), Part::Store);
        (store.drains(), families)
    };
    let mut text = String::with_capacity(slot.lock().map_or(0, |r| r.text.len()) + 4096);
    encode_families(families, openmetrics, &mut text)?;
    let text = Arc::new(text);
    let mut rendered = slot.lock().recover();
    if rendered.drain.is_none_or(|d| d < drain) {
        rendered.drain = Some(drain);
        rendered.text = Arc::clone(&text);
    }
    Ok(text)
}

/// Appends what is written to `out`, except the first `lines` lines (prometheus-client's
/// OpenMetrics descriptor of a counter family, replaced by the 0.0.4 one).
struct SkipLines<'a> {
    out: &'a mut String,
    lines: usize,
}

impl std::fmt::Write for SkipLines<'_> {
    fn write_str(&mut self, mut text: &str) -> std::fmt::Result {
        while self.lines > 0 {
            match text.split_once('\n') {
                Some((_, rest)) => {
                    self.lines -= 1;
                    text = rest;
                }
                None => return Ok(()),
            }
        }
        self.out.push_str(text);
        Ok(())
    }
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
        interval.workloads[0].page_cache.read_attempts = 100;
        interval.workloads[0].page_cache.misses = 10;
        interval.workloads[0].reclaim[ReclaimKind::Memcg as usize].record(3_000_000);
        interval.workloads[0].reclaim[ReclaimKind::Direct as usize].record(40_000);
        interval.host.lru_pages_scanned = 10;
        interval.host.lru_pages_reclaimed = 5;
        let programs = vec![crate::kernel::ProgramStats {
            name: "fadvise_exit".into(),
            run_time: std::time::Duration::from_micros(3),
            run_count: 5,
        }];
        store.apply(interval, programs, 1);
        let status = Status::new(KernelFacts::default());
        // The exporter's families exist only with an exporter.
        status.add_exporter(Arc::new(crate::export::banyandb::ExportStats::default()));
        (Arc::new(RwLock::new(store)), Arc::new(status))
    }

    /// A store and status with fixed counts in every family: several workloads, every
    /// advice, both reclaim histograms, host counters, program statistics, an exporter.
    fn golden_fixture() -> (Arc<RwLock<Store>>, Arc<Status>) {
        use std::sync::atomic::Ordering::Relaxed;
        let config = Config::parse(
            "workloads:\n  - name: jobs\n    pids: [1]\n  - name: sync\n    pids: [2]\n  - name: db\n    pids: [3]\n  - name: idle\n    pids: [4]\n",
            "t",
        )
        .unwrap();
        let names = WorkloadNames::from_config(&config);
        let mut store = Store::new(names.clone(), 10, true);
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s);
        for round in 1..=3u64 {
            let mut interval = Interval::empty(names.len(), at(round));
            interval.length = Duration::from_secs(1);
            interval.drain.duration = Duration::from_micros(700 * round);
            interval.drain.switch_duration = Duration::from_micros(500 * round);
            interval.drain.entries = 40 + round as usize;
            // workloads 0..3 and `other` (the last); `idle` counts nothing.
            for (w, counts) in interval.workloads.iter_mut().enumerate() {
                if w == 3 {
                    continue;
                }
                let w = w as u64 + 1;
                for advice in Advice::ALL {
                    let a = advice as u64 + 1;
                    counts.fadvise[advice as usize].calls = w * a * round;
                    counts.fadvise[advice as usize].successes = w * a * round - (a % 2);
                }
                counts.page_cache.read_attempts = 1000 * w + round;
                counts.page_cache.misses = 100 * w + round;
                counts.page_cache.adds = 200 * w;
                counts.page_cache.evictions = 50 * w * round;
                if w != 2 {
                    counts.reclaim[ReclaimKind::Direct as usize].record(40_000 * w * round);
                    counts.reclaim[ReclaimKind::Direct as usize].record(2_500_000);
                }
                if w == 1 {
                    counts.reclaim[ReclaimKind::Memcg as usize].record(3_000_000 * round);
                }
            }
            interval.host.lru_pages_scanned = 1000 * round;
            interval.host.lru_pages_reclaimed = 300 * round;
            interval.host.kswapd_wakeups = round;
            interval.host.overflow.fadvise = round;
            interval.host.overflow.page_cache = 2;
            interval.host.overflow.reclaim = 0;
            interval.host.overflow.processes = 1;
            interval.host.field_read_errors = 0;
            interval.host.dropped_process_events = 7;
            interval.host.fadvise_calls_seen = 100 * round;
            interval.direct_reclaim_in_progress = round as i64;
            let programs = vec![
                crate::kernel::ProgramStats {
                    name: "fadvise_exit".into(),
                    run_time: Duration::from_micros(30 * round),
                    run_count: 50 * round,
                },
                crate::kernel::ProgramStats {
                    name: "filemap_add".into(),
                    run_time: Duration::from_nanos(1_500 * round),
                    run_count: 9 * round,
                },
            ];
            store.apply(interval, programs, 12);
        }
        let status = Status::new(KernelFacts {
            release: "6.18.0-test".to_owned(),
            btf: true,
        });
        status.set_modules(
            [
                (Module::Fadvise, ModuleState::Attached),
                (Module::PageCache, ModuleState::Attached),
                (Module::Vmscan, ModuleState::Failed("refused".to_owned())),
            ]
            .into_iter()
            .collect(),
        );
        status.set_kernel_map_bytes(123_456);
        let exporter = Arc::new(crate::export::banyandb::ExportStats::default());
        exporter.written.store(900, Relaxed);
        exporter.retried.store(30, Relaxed);
        exporter.rejected.store(2, Relaxed);
        exporter.dropped.store(5, Relaxed);
        exporter.queue_points.store(77, Relaxed);
        exporter.spool_bytes.store(4096, Relaxed);
        exporter.spool_corrupt_records.store(1, Relaxed);
        exporter.circuit.store(2, Relaxed);
        status.add_exporter(exporter);
        (Arc::new(RwLock::new(store)), Arc::new(status))
    }

    /// `/metrics` stays byte-for-byte the same for the same counts. Regenerate the golden
    /// files (only when a change of output is intended) with `UPDATE_GOLDEN=1`.
    #[test]
    fn the_exposition_matches_the_golden_files() {
        let (store, status) = golden_fixture();
        let cache = ExpositionCache::default();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let filtered = Filter {
            modules: vec!["page_cache".into(), "self".into()],
            workloads: vec!["db".into()],
        };
        let outputs = [
            (
                "metrics.prom",
                cache.scrape(&store, &status, false).unwrap(),
            ),
            (
                "metrics.openmetrics",
                cache.scrape(&store, &status, true).unwrap(),
            ),
            (
                "metrics-all.prom",
                encode(&store, &status, &Filter::default(), false).unwrap(),
            ),
            (
                "metrics-filtered.openmetrics",
                encode(&store, &status, &filtered, true).unwrap(),
            ),
        ];
        for (file, text) in outputs {
            let path = dir.join(file);
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            let golden = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
            assert!(
                golden == text,
                "{file} differs from the exposition:\n{text}"
            );
        }
    }

    #[test]
    fn openmetrics_has_the_contract_names() {
        let (store, status) = fixture();
        let text = encode(&store, &status, &Filter::default(), true).unwrap();
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
            "sidecar_build_info{version=",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        // `other` had no events in the interval: no rate for it.
        assert!(!text.contains("ebpf_cache_hit_rate_percent{workload=\"other\"}"));
        assert!(text.contains("ebpf_cache_read_attempts_total{workload=\"other\"} 0"));
    }

    #[test]
    fn the_cached_exposition_matches_a_fresh_one_and_follows_drains() {
        let (store, status) = fixture();
        let cache = ExpositionCache::default();
        let sorted = |text: &str| {
            let mut lines: Vec<&str> = text.lines().collect();
            lines.sort_unstable();
            lines.join("\n")
        };
        for openmetrics in [false, true] {
            let fresh = encode(&store, &status, &Filter::default(), openmetrics).unwrap();
            let cached = cache.scrape(&store, &status, openmetrics).unwrap();
            assert_eq!(sorted(&fresh), sorted(&cached));
            assert_eq!(cached.ends_with("# EOF\n"), openmetrics);
        }
        let names = store.read().unwrap().names().clone();
        let mut interval = Interval::empty(names.len(), SystemTime::now());
        interval.workloads[0].page_cache.misses = 5;
        store.write().unwrap().apply(interval, Vec::new(), 1);
        // Rendered after the drain, and a scrape without the refresh is not stale either.
        let before_refresh = cache.scrape(&store, &status, true).unwrap();
        cache.refresh(&store, &status);
        let after_refresh = cache.scrape(&store, &status, false).unwrap();
        for text in [before_refresh, after_refresh] {
            assert!(text.contains("ebpf_cache_misses_total{workload=\"jobs\"} 15"));
            assert!(text.contains("sidecar_drains_total 2"));
        }
    }

    #[test]
    fn every_family_is_in_the_catalog() {
        let (store, status) = fixture();
        let store = store.read().unwrap();
        for family in collect(&store, &status, &Filter::default()) {
            assert!(CATALOG.iter().any(|d| std::ptr::eq(*d, family.def)));
        }
        let mut names: Vec<_> = CATALOG.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
    }

    /// A family in the catalog that `collect` never builds is a metric we document but
    /// never serve.
    #[test]
    fn every_catalog_family_is_collected() {
        let (store, status) = fixture();
        let store = store.read().unwrap();
        let families = collect(&store, &status, &Filter::default());
        for def in CATALOG {
            assert!(
                families.iter().any(|f| std::ptr::eq(*def, f.def)),
                "{} is never collected",
                def.name
            );
        }
    }

    #[test]
    fn latency_buckets_are_in_seconds() {
        let mut h = LatencyHistogram::default();
        h.record(500); // folds into the first exported bound
        h.record(3_000_000);
        let Value::Histogram { buckets, count, .. } = latency_value(&h) else {
            panic!("a histogram")
        };
        assert_eq!(count, 2);
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
        let text = encode(&store, &status, &filter, true).unwrap();
        assert!(text.contains("ebpf_cache_misses_total{workload=\"jobs\"}"));
        assert!(!text.contains("workload=\"other\""));
        assert!(!text.contains("ebpf_fadvise"));
        assert!(!text.contains("sidecar_"));
    }

    #[test]
    fn prometheus_text_renames_counter_families() {
        let (store, status) = fixture();
        let text = encode(&store, &status, &Filter::default(), false).unwrap();
        assert!(text.contains("# TYPE ebpf_fadvise_calls_total counter\n"));
        assert!(text.contains("# HELP ebpf_fadvise_calls_total posix_fadvise"));
        assert!(text.contains("sidecar_build_info{version="));
        assert!(!text.contains("# EOF"));
        assert!(text.contains("# TYPE ebpf_memory_memcg_reclaim_seconds histogram\n"));
        assert!(
            text.contains("\nebpf_fadvise_calls_total{workload=\"jobs\",advice=\"dontneed\"} 5\n")
        );
        // Same samples as OpenMetrics, line for line, apart from descriptors and EOF.
        let openmetrics = encode(&store, &status, &Filter::default(), true).unwrap();
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(samples(&text), samples(&openmetrics));
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# TYPE ")).count(),
            openmetrics
                .lines()
                .filter(|l| l.starts_with("# TYPE "))
                .count()
        );
    }
}
