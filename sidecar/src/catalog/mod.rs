//! Every metric the sidecar exports, declared once: its module, Prometheus name, type,
//! help, unit, labels, where its value comes from, and the BanyanDB field it is written to.
//!
//! The sinks derive what they show from this list and from nothing else: the Prometheus
//! families and their order (`metrics`), the names `GetMetrics` accepts (`grpc`), the
//! BanyanDB measures and the values of their points (`export::banyandb`), and the metric
//! tables in README.md and docs/ (`docs_table`, checked by a test). A new counter is one
//! entry here (and its kernel struct field): every sink follows.

mod docs;
mod measures;

pub use docs::{DocsTable, docs_table, with_docs_table};
pub use measures::{MeasureField, Scope, measure_fields};
use sidecar_common::{FadviseCounts, ReclaimKind};

use crate::{
    export::ExporterSnapshot,
    kernel::{ModuleState, modules::Module},
    metrics::{LabelValue, Labels, Sample, Value},
    status::Status,
    store::{
        DRAIN_DURATION_BUCKETS, HostCounts, Interval, LatencyHistogram, Store, WorkloadCounts,
        rates,
    },
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

impl Kind {
    pub const fn label(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Where a family's samples come from. The per-workload and host sources read the store's
/// cumulative totals for Prometheus and gRPC, and one drain's deltas for BanyanDB: the same
/// accessor serves both.
#[derive(Clone, Copy)]
pub enum Source {
    /// Per workload and advice (labels `workload`, `advice`): a field of the kernel's
    /// `FadviseCounts`.
    Advice(fn(&FadviseCounts) -> u64),
    /// Per workload (label `workload`): a count of the workload's counts.
    Workload(fn(&WorkloadCounts) -> u64),
    /// Per workload: a latency histogram (reclaim stalls, reads, syncs), present from the
    /// workload's first observation.
    Latency(fn(&WorkloadCounts) -> &LatencyHistogram),
    /// Per workload: a rate over the last interval, absent when it had no events.
    Rate(fn(&WorkloadCounts) -> Option<f64>),
    /// Host-wide: a counter of the host totals.
    Host(fn(&HostCounts) -> u64),
    /// Host-wide: a rate over the last interval's host counts, absent without events.
    HostRate(fn(&HostCounts) -> Option<f64>),
    /// One unlabelled sample about the store (drains, history); absent on `None`.
    Store(fn(&Store) -> Option<Value>),
    /// Labelled samples about the store (overflow by map, BPF programs).
    StoreSamples(fn(&Store) -> Vec<Sample>),
    /// One unlabelled sample per push exporter.
    Exporter(fn(&ExporterSnapshot) -> Value),
    /// Samples from the daemon's status, which changes at any time, not only at a drain.
    Status(fn(&Status, &[ExporterSnapshot]) -> Vec<Sample>),
}

impl Source {
    /// Whether the values change between drains (so /metrics cannot render them once per
    /// drain).
    pub const fn from_status(&self) -> bool {
        matches!(self, Source::Exporter(_) | Source::Status(_))
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Source::Advice(_) => "Advice",
            Source::Workload(_) => "Workload",
            Source::Latency(_) => "Latency",
            Source::Rate(_) => "Rate",
            Source::Host(_) => "Host",
            Source::HostRate(_) => "HostRate",
            Source::Store(_) => "Store",
            Source::StoreSamples(_) => "StoreSamples",
            Source::Exporter(_) => "Exporter",
            Source::Status(_) => "Status",
        };
        f.write_str(name)
    }
}

/// What a BanyanDB field holds of its family's source (one drain's delta).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// The count itself (`Advice`, `Workload`, `Host` sources).
    Count,
    /// A `Latency` source's observations (episodes, calls).
    Episodes,
    /// A `Latency` source's summed time, in nanoseconds.
    StalledNs,
}

/// A BanyanDB field written from a family. Families labelled by advice get one field per
/// advice, named `<advice>_<name>`.
#[derive(Clone, Copy, Debug)]
pub struct BanyanField {
    pub name: &'static str,
    /// The field's name in measures created by older sidecars, accepted as the same field.
    pub legacy: Option<&'static str>,
    /// Position in its measure (advice-major for per-advice fields). Fixed: points already
    /// spooled and measures already created follow it.
    pub order: u8,
    pub read: Read,
}

/// One metric family.
#[derive(Debug)]
pub struct FamilyDef {
    /// Without the `_total` suffix of counters.
    pub name: &'static str,
    pub kind: Kind,
    pub module: &'static str,
    pub help: &'static str,
    /// For the docs; the exposition writes no `# UNIT` lines.
    pub unit: &'static str,
    pub labels: &'static [&'static str],
    pub source: Source,
    pub banyandb: &'static [BanyanField],
}

impl FamilyDef {
    /// The name samples carry on /metrics and in `GetMetrics`: counters end in `_total`.
    pub fn exposed_name(&self) -> String {
        match self.kind {
            Kind::Counter => format!("{}_total", self.name),
            Kind::Gauge | Kind::Histogram => self.name.to_owned(),
        }
    }
}

const FADVISE: &str = "fadvise";
const PAGE_CACHE: &str = "page_cache";
const VMSCAN: &str = "vmscan";
const IO: &str = "io";
const MEMCG: &str = "memcg";

const fn field(name: &'static str, order: u8) -> BanyanField {
    BanyanField {
        name,
        legacy: None,
        order,
        read: Read::Count,
    }
}

const fn renamed(name: &'static str, legacy: &'static str, order: u8) -> BanyanField {
    BanyanField {
        name,
        legacy: Some(legacy),
        order,
        read: Read::Count,
    }
}

const fn latency(name: &'static str, order: u8, read: Read) -> BanyanField {
    BanyanField {
        name,
        legacy: None,
        order,
        read,
    }
}

const WORKLOAD: &[&str] = &["workload"];
const WORKLOAD_ADVICE: &[&str] = &["workload", "advice"];
const NONE: &[&str] = &[];

macro_rules! families {
    ($($id:ident {
        $name:literal, $kind:ident, $module:expr, unit: $unit:literal, labels: $labels:expr,
        $source:expr, banyandb: $banyandb:expr,
        $help:literal $(,)?
    })*) => {
        $(pub static $id: FamilyDef = FamilyDef {
            name: $name,
            kind: Kind::$kind,
            module: $module,
            help: $help,
            unit: $unit,
            labels: $labels,
            source: $source,
            banyandb: $banyandb,
        };)*
        /// Every family the sidecar can export, in exposition order.
        pub const CATALOG: &[&FamilyDef] = &[$(&$id),*];
    };
}

families! {
    FADVISE_CALLS {
        "ebpf_fadvise_calls", Counter, FADVISE, unit: "calls", labels: WORKLOAD_ADVICE,
        Source::Advice(|c| c.calls), banyandb: &[field("calls", 0)],
        "posix_fadvise calls, by workload and advice."
    }
    FADVISE_SUCCESS {
        "ebpf_fadvise_success", Counter, FADVISE, unit: "calls", labels: WORKLOAD_ADVICE,
        Source::Advice(|c| c.successes), banyandb: &[field("successes", 1)],
        "posix_fadvise calls that returned 0, by workload and advice."
    }
    FADVISE_SUCCESS_RATE {
        "ebpf_fadvise_success_rate_percent", Gauge, FADVISE, unit: "percent", labels: WORKLOAD,
        Source::Rate(rates::fadvise_success), banyandb: &[],
        "Share of posix_fadvise calls that succeeded over the last interval."
    }
    CACHE_READ_ATTEMPTS {
        "ebpf_cache_read_attempts", Counter, PAGE_CACHE, unit: "pages", labels: WORKLOAD,
        Source::Workload(|c| c.page_cache.read_attempts),
        banyandb: &[renamed("read_attempts", "requested_pages", 0)],
        "Pages requested by the read path."
    }
    CACHE_MISSES {
        "ebpf_cache_misses", Counter, PAGE_CACHE, unit: "pages", labels: WORKLOAD,
        Source::Workload(|c| c.page_cache.misses),
        banyandb: &[renamed("misses", "missed_pages", 1)],
        "Requested pages that were not cached (added to the cache by the reader)."
    }
    PAGE_CACHE_ADDS {
        "ebpf_page_cache_adds", Counter, PAGE_CACHE, unit: "pages", labels: WORKLOAD,
        Source::Workload(|c| c.page_cache.adds),
        banyandb: &[renamed("adds", "added_pages", 2)],
        "Pages added to the page cache."
    }
    PAGE_CACHE_EVICTIONS {
        "ebpf_page_cache_evictions", Counter, PAGE_CACHE, unit: "pages", labels: WORKLOAD,
        Source::Workload(|c| c.page_cache.evictions),
        banyandb: &[renamed("evictions", "evicted_pages", 3)],
        "Pages removed from the page cache while the workload was running."
    }
    CACHE_HIT_RATE {
        "ebpf_cache_hit_rate_percent", Gauge, PAGE_CACHE, unit: "percent", labels: WORKLOAD,
        Source::Rate(rates::cache_hit), banyandb: &[],
        "Share of requested pages that were cached, over the last interval."
    }
    CACHE_MISS_RATE {
        "ebpf_cache_miss_rate_percent", Gauge, PAGE_CACHE, unit: "percent", labels: WORKLOAD,
        Source::Rate(rates::cache_miss), banyandb: &[],
        "Share of requested pages that were not cached, over the last interval."
    }
    LRU_SCANNED {
        "ebpf_memory_lru_pages_scanned", Counter, VMSCAN, unit: "pages", labels: NONE,
        Source::Host(|h| h.lru_pages_scanned), banyandb: &[field("lru_pages_scanned", 4)],
        "Pages scanned by LRU shrinking, host-wide."
    }
    LRU_RECLAIMED {
        "ebpf_memory_lru_pages_reclaimed", Counter, VMSCAN, unit: "pages", labels: NONE,
        Source::Host(|h| h.lru_pages_reclaimed),
        banyandb: &[field("lru_pages_reclaimed", 5)],
        "Pages reclaimed by LRU shrinking, host-wide."
    }
    KSWAPD_WAKEUPS {
        "ebpf_memory_kswapd_wakeups", Counter, VMSCAN, unit: "wakeups", labels: NONE,
        Source::Host(|h| h.kswapd_wakeups), banyandb: &[field("kswapd_wakeups", 6)],
        "kswapd wakeups, host-wide."
    }
    DIRECT_RECLAIM {
        "ebpf_memory_direct_reclaim", Counter, VMSCAN, unit: "episodes", labels: WORKLOAD,
        Source::Workload(|c| c.reclaim[ReclaimKind::Direct as usize].count),
        banyandb: &[field("direct_reclaim_episodes", 0)],
        "Direct-reclaim episodes."
    }
    DIRECT_RECLAIM_SECONDS {
        "ebpf_memory_direct_reclaim_seconds", Histogram, VMSCAN, unit: "seconds",
        labels: WORKLOAD, Source::Latency(|c| &c.reclaim[ReclaimKind::Direct as usize]),
        banyandb: &[latency("direct_reclaim_stall_ns", 1, Read::StalledNs)],
        "Time tasks stalled in direct reclaim."
    }
    MEMCG_RECLAIM_SECONDS {
        "ebpf_memory_memcg_reclaim_seconds", Histogram, VMSCAN, unit: "seconds",
        labels: WORKLOAD, Source::Latency(|c| &c.reclaim[ReclaimKind::Memcg as usize]),
        banyandb: &[
            latency("memcg_reclaim_episodes", 2, Read::Episodes),
            latency("memcg_reclaim_stall_ns", 3, Read::StalledNs),
        ],
        "Time tasks stalled in memory-cgroup reclaim."
    }
    RECLAIM_EFFICIENCY {
        "ebpf_memory_reclaim_efficiency_percent", Gauge, VMSCAN, unit: "percent", labels: NONE,
        Source::HostRate(rates::reclaim_efficiency), banyandb: &[],
        "Pages reclaimed per page scanned over the last interval, host-wide."
    }
    DIRECT_RECLAIM_PROCESSES {
        "ebpf_memory_direct_reclaim_processes", Gauge, VMSCAN, unit: "tasks", labels: NONE,
        Source::Store(|s| Some(number(s.last().map_or(0, |l| l.direct_reclaim_in_progress) as f64))),
        banyandb: &[],
        "Tasks in direct reclaim at the last drain."
    }
    IO_READ_SECONDS {
        "ebpf_io_read_seconds", Histogram, IO, unit: "seconds", labels: WORKLOAD,
        Source::Latency(|c| &c.io.read),
        banyandb: &[
            latency("read_calls", 0, Read::Episodes),
            latency("read_ns", 1, Read::StalledNs),
        ],
        "Latency of read, pread64, readv and preadv calls."
    }
    IO_READ_BYTES {
        "ebpf_io_read_bytes", Counter, IO, unit: "bytes", labels: WORKLOAD,
        Source::Workload(|c| c.io.read_bytes), banyandb: &[field("read_bytes", 2)],
        "Bytes returned by read, pread64, readv and preadv, from the page cache or the disk."
    }
    IO_SYNC_SECONDS {
        "ebpf_io_fsync_seconds", Histogram, IO, unit: "seconds", labels: WORKLOAD,
        Source::Latency(|c| &c.io.sync),
        banyandb: &[
            latency("fsync_calls", 3, Read::Episodes),
            latency("fsync_ns", 4, Read::StalledNs),
        ],
        "Latency of fsync and fdatasync calls."
    }
    IO_DIRTIED_PAGES {
        "ebpf_io_dirtied_pages", Counter, IO, unit: "pages", labels: WORKLOAD,
        Source::Workload(|c| c.io.dirtied_pages), banyandb: &[field("dirtied_pages", 5)],
        "Page-cache pages the workload dirtied (writes and writes through mappings)."
    }
    IO_WRITTEN_BACK_PAGES {
        "ebpf_io_written_back_pages", Counter, IO, unit: "pages", labels: WORKLOAD,
        Source::Workload(|c| c.io.written_back_pages),
        banyandb: &[field("written_back_pages", 6)],
        "Page-cache pages whose writeback the workload started (fsync, fdatasync, sync_file_range); the flusher's background writeback counts under other."
    }
    FILE_REFAULTS {
        "ebpf_memory_file_refaults", Counter, MEMCG, unit: "pages", labels: WORKLOAD,
        Source::Workload(|c| c.refaults.file_refaults), banyandb: &[field("file_refaults", 0)],
        "File pages read back in after their eviction while the workload was running: its page cache is too small (the kernel's workingset_refault_file)."
    }
    ANON_REFAULTS {
        "ebpf_memory_anon_refaults", Counter, MEMCG, unit: "pages", labels: WORKLOAD,
        Source::Workload(|c| c.refaults.anon_refaults), banyandb: &[field("anon_refaults", 1)],
        "Anonymous pages swapped back in after their eviction while the workload was running."
    }
    MEMCG_ADDS {
        "ebpf_memcg_page_cache_adds", Counter, MEMCG, unit: "pages", labels: WORKLOAD,
        Source::Workload(|c| c.memcg.adds), banyandb: &[field("owned_adds", 2)],
        "Pages added to the page cache that the workload's memory cgroups own, whoever added them."
    }
    MEMCG_EVICTIONS {
        "ebpf_memcg_page_cache_evictions", Counter, MEMCG, unit: "pages", labels: WORKLOAD,
        Source::Workload(|c| c.memcg.evictions), banyandb: &[field("owned_evictions", 3)],
        "Pages removed from the page cache that the workload's memory cgroups owned, whoever removed them (kswapd, another cgroup's reclaim)."
    }
    MEMCG_FILE_REFAULTS {
        "ebpf_memcg_file_refaults", Counter, MEMCG, unit: "pages", labels: WORKLOAD,
        Source::Workload(|c| c.memcg.file_refaults),
        banyandb: &[field("owned_file_refaults", 4)],
        "File refaults of pages the workload's memory cgroups own."
    }
    MEMCG_ANON_REFAULTS {
        "ebpf_memcg_anon_refaults", Counter, MEMCG, unit: "pages", labels: WORKLOAD,
        Source::Workload(|c| c.memcg.anon_refaults),
        banyandb: &[field("owned_anon_refaults", 5)],
        "Anonymous refaults of pages the workload's memory cgroups own."
    }
    BUILD {
        "sidecar_build_info", Gauge, SELF_MODULE, unit: "", labels: &["version", "kernel"],
        Source::Status(build_info), banyandb: &[],
        "Build information; the value is always 1."
    }
    MODULE_ATTACHED {
        "sidecar_module_attached", Gauge, SELF_MODULE, unit: "", labels: &["module"],
        Source::Status(module_attached), banyandb: &[],
        "1 when every program of the module is attached, else 0."
    }
    DRAINS {
        "sidecar_drains", Counter, SELF_MODULE, unit: "drains", labels: NONE,
        Source::Store(|s| Some(Value::Count(s.drains()))), banyandb: &[],
        "Drains of the kernel maps."
    }
    DRAIN_DURATION {
        "sidecar_drain_duration_seconds", Histogram, SELF_MODULE, unit: "seconds", labels: NONE,
        Source::Store(drain_durations), banyandb: &[],
        "Time to switch epochs and read and clear the kernel maps."
    }
    LAST_DRAIN_TIMESTAMP {
        "sidecar_last_drain_timestamp_seconds", Gauge, SELF_MODULE, unit: "seconds",
        labels: NONE,
        Source::Store(|s| last(s, |l| {
            l.at.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
        })),
        banyandb: &[],
        "When the last drain ended (Unix time)."
    }
    LAST_DRAIN_SWITCH {
        "sidecar_last_drain_switch_seconds", Gauge, SELF_MODULE, unit: "seconds", labels: NONE,
        Source::Store(|s| last(s, |l| l.drain.switch_duration.as_secs_f64())), banyandb: &[],
        "Time the last drain waited for the epoch switch (an RCU grace period)."
    }
    LAST_DRAIN_ENTRIES {
        "sidecar_last_drain_entries", Gauge, SELF_MODULE, unit: "entries", labels: NONE,
        Source::Store(|s| last(s, |l| l.drain.entries as f64)), banyandb: &[],
        "Kernel map entries read and removed by the last drain."
    }
    MAP_OVERFLOW {
        "sidecar_map_overflow", Counter, SELF_MODULE, unit: "events", labels: &["map"],
        Source::StoreSamples(map_overflow), banyandb: &[],
        "Events counted under workload \"other\" because a kernel map was full."
    }
    FIELD_READ_ERRORS {
        "sidecar_bpf_field_read_errors", Counter, SELF_MODULE, unit: "reads", labels: NONE,
        Source::Host(|h| h.field_read_errors), banyandb: &[],
        "Tracepoint fields the programs could not read (should stay 0)."
    }
    DROPPED_PROCESS_EVENTS {
        "sidecar_dropped_process_events", Counter, SELF_MODULE, unit: "events", labels: NONE,
        Source::Host(|h| h.dropped_process_events), banyandb: &[],
        "Events of processes that matched no workload, dropped (unmatched: drop)."
    }
    FADVISE_CALLS_SEEN {
        "sidecar_fadvise_calls_seen", Counter, SELF_MODULE, unit: "calls", labels: NONE,
        Source::Host(|h| h.fadvise_calls_seen), banyandb: &[],
        "posix_fadvise calls seen host-wide: the per-workload calls add up to this."
    }
    TRACKED_PROCESSES {
        "sidecar_tracked_processes", Gauge, SELF_MODULE, unit: "processes", labels: NONE,
        Source::Store(|s| Some(number(s.tracked_processes() as f64))), banyandb: &[],
        "Processes with a cached workload classification."
    }
    HISTORY_BYTES {
        "sidecar_history_bytes", Gauge, SELF_MODULE, unit: "bytes", labels: NONE,
        Source::Store(|s| Some(number(s.history_bytes() as f64))), banyandb: &[],
        "Estimated bytes of the intervals retained for windows (bounded by limits.max_history_bytes)."
    }
    HISTORY_INTERVALS {
        "sidecar_history_intervals", Gauge, SELF_MODULE, unit: "intervals", labels: NONE,
        Source::Store(|s| Some(number(s.history_intervals() as f64))), banyandb: &[],
        "Intervals retained for windows; older ones are merged to fit the byte budget."
    }
    KERNEL_MAP_BYTES {
        "sidecar_kernel_map_bytes", Gauge, SELF_MODULE, unit: "bytes", labels: NONE,
        Source::Status(|status, _| vec![unlabelled(number(status.kernel_map_bytes() as f64))]),
        banyandb: &[],
        "Kernel memory held by the sidecar's BPF maps."
    }
    BPF_RUN_SECONDS {
        "sidecar_bpf_program_run_seconds", Counter, SELF_MODULE, unit: "seconds",
        labels: &["program"],
        Source::StoreSamples(|s| programs(s, |p| number(p.run_time.as_secs_f64()))),
        banyandb: &[],
        "CPU time spent in each BPF program (kernel BPF statistics; 0 unless bpf_stats is on)."
    }
    BPF_RUNS {
        "sidecar_bpf_program_runs", Counter, SELF_MODULE, unit: "runs", labels: &["program"],
        Source::StoreSamples(|s| programs(s, |p| Value::Count(p.run_count))), banyandb: &[],
        "Runs of each BPF program (kernel BPF statistics; 0 unless bpf_stats is on)."
    }
    EXPORT_POINTS {
        "sidecar_export_points", Counter, SELF_MODULE, unit: "points", labels: &["result"],
        Source::Status(export_points), banyandb: &[],
        "Points sent to BanyanDB, by result: written (acknowledged), retried (a failed attempt, queued again), rejected (refused for good)."
    }
    EXPORT_QUEUE_POINTS {
        "sidecar_export_queue_points", Gauge, SELF_MODULE, unit: "points", labels: NONE,
        Source::Exporter(|e| number(e.queue_points as f64)), banyandb: &[],
        "Points waiting for delivery to BanyanDB, in memory and in the spool."
    }
    EXPORT_SPOOL_BYTES {
        "sidecar_export_spool_bytes", Gauge, SELF_MODULE, unit: "bytes", labels: NONE,
        Source::Exporter(|e| number(e.spool_bytes as f64)), banyandb: &[],
        "Bytes of the BanyanDB exporter's on-disk spool."
    }
    EXPORT_DROPPED_POINTS {
        "sidecar_export_dropped_points", Counter, SELF_MODULE, unit: "points", labels: NONE,
        Source::Exporter(|e| Value::Count(e.dropped)), banyandb: &[],
        "Points dropped undelivered: the oldest, when the spool was full."
    }
    EXPORT_SPOOL_CORRUPT_RECORDS {
        "sidecar_export_spool_corrupt_records", Counter, SELF_MODULE, unit: "records",
        labels: NONE,
        Source::Exporter(|e| Value::Count(e.spool_corrupt_records)), banyandb: &[],
        "Spool records skipped because they were torn (a crash mid-write) or failed their CRC-32C."
    }
    EXPORT_CIRCUIT_STATE {
        "sidecar_export_circuit_state", Gauge, SELF_MODULE, unit: "", labels: NONE,
        Source::Exporter(|e| number(f64::from(e.circuit as u8))), banyandb: &[],
        "The BanyanDB exporter's circuit breaker: 0 closed, 1 open, 2 half-open."
    }
}

const fn number(value: f64) -> Value {
    Value::Number(value)
}

fn unlabelled(value: Value) -> Sample {
    Sample {
        labels: Labels::new(),
        value,
    }
}

fn labelled<const N: usize>(pairs: [(&'static str, &str); N], value: Value) -> Sample {
    Sample {
        labels: pairs
            .into_iter()
            .map(|(k, v)| (k, LabelValue::from(v)))
            .collect(),
        value,
    }
}

/// A value of the last interval; absent before the first drain.
fn last(store: &Store, value: fn(&Interval) -> f64) -> Option<Value> {
    store.last().map(|l| number(value(l)))
}

fn drain_durations(store: &Store) -> Option<Value> {
    let durations = store.drain_durations();
    Some(Value::Histogram {
        count: durations.count,
        sum: durations.sum_seconds,
        buckets: DRAIN_DURATION_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(durations.counts.iter().copied())
            .collect(),
    })
}

fn map_overflow(store: &Store) -> Vec<Sample> {
    let overflow = store.host_totals().overflow;
    [
        ("fadvise", overflow.fadvise),
        ("page_cache", overflow.page_cache),
        ("reclaim", overflow.reclaim),
        ("processes", overflow.processes),
        ("io", overflow.io),
        ("memcg", overflow.memcg),
    ]
    .into_iter()
    .map(|(map, value)| labelled([("map", map)], Value::Count(value)))
    .collect()
}

fn programs(store: &Store, value: fn(&crate::kernel::ProgramStats) -> Value) -> Vec<Sample> {
    store
        .programs()
        .iter()
        .map(|p| labelled([("program", &p.name)], value(p)))
        .collect()
}

fn build_info(status: &Status, _: &[ExporterSnapshot]) -> Vec<Sample> {
    vec![labelled(
        [
            ("version", env!("CARGO_PKG_VERSION")),
            ("kernel", &status.kernel().release),
        ],
        number(1.0),
    )]
}

fn module_attached(status: &Status, _: &[ExporterSnapshot]) -> Vec<Sample> {
    let modules = status.modules().unwrap_or_default();
    Module::ALL
        .into_iter()
        .map(|module| {
            let attached = modules.get(&module) == Some(&ModuleState::Attached);
            labelled(
                [("module", module.name())],
                number(f64::from(u8::from(attached))),
            )
        })
        .collect()
}

fn export_points(_: &Status, exporters: &[ExporterSnapshot]) -> Vec<Sample> {
    exporters
        .iter()
        .flat_map(|e| {
            [
                ("written", e.written),
                ("retried", e.retried),
                ("rejected", e.rejected),
            ]
        })
        .map(|(result, value)| labelled([("result", result)], Value::Count(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_banyandb_fields_fit_their_source() {
        let mut names: Vec<_> = CATALOG.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
        for def in CATALOG {
            assert!(
                module_names().any(|m| m == def.module),
                "{}: module {}",
                def.name,
                def.module
            );
            for field in def.banyandb {
                let fits = match def.source {
                    Source::Latency(_) => field.read != Read::Count,
                    Source::Advice(_) | Source::Workload(_) | Source::Host(_) => {
                        field.read == Read::Count
                    }
                    _ => false,
                };
                assert!(
                    fits,
                    "{}: BanyanDB field {} reads nothing",
                    def.name, field.name
                );
            }
        }
        for module in Module::ALL {
            let fields = measure_fields(module);
            let mut seen: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(
                seen.len(),
                fields.len(),
                "{} repeats a field",
                module.name()
            );
            let mut orders: Vec<u8> = CATALOG
                .iter()
                .filter(|d| d.module == module.name())
                .flat_map(|d| d.banyandb.iter().map(|f| f.order))
                .collect();
            orders.sort_unstable();
            assert_eq!(
                orders,
                (0..orders.len() as u8).collect::<Vec<_>>(),
                "{}: field orders must be 0.. without gaps or repeats",
                module.name()
            );
        }
    }
}
