//! The configuration file (`configs/sidecar.yaml` documents every key).
//!
//! Everything is checked while parsing, in serde visitors, so that an error carries the line
//! and column of the offending value: unknown keys, bad durations, bad addresses, bad regular
//! expressions, duplicate workload names. A file that fails here stops the sidecar before
//! anything is loaded into the kernel.

use std::{
    collections::HashSet,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use regex::Regex;
use serde::{
    Deserialize, Deserializer,
    de::{self, SeqAccess, Visitor},
};

/// The label value of processes that match no workload, and of overflowed events.
pub const OTHER_WORKLOAD: &str = "other";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How often the kernel maps are drained.
    pub interval: Interval,
    pub server: ServerConfig,
    pub modules: ModulesConfig,
    pub workloads: Workloads,
    pub unmatched: Unmatched,
    pub limits: Limits,
    pub tracefs: TracefsConfig,
    pub log: LogConfig,
    /// Push sinks: `export.banyandb`.
    pub export: ExportConfig,
    /// How long SIGTERM/SIGINT may take: the final drain, flushing exporters, stopping.
    pub shutdown_timeout: ShutdownTimeout,
    /// Switch on the kernel's BPF run-time statistics (host-wide, see configs/sidecar.yaml).
    pub bpf_stats: bool,
    /// Who the sidecar runs as once its programs are attached.
    pub privileges: PrivilegesConfig,
}

/// `privileges`: the unprivileged account the sidecar switches to after attaching.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivilegesConfig {
    /// A user name or numeric id; 0 (or root) keeps root, which is discouraged.
    pub user: Account,
    /// A group name or numeric id.
    pub group: Account,
}

impl Default for PrivilegesConfig {
    fn default() -> Self {
        // Numeric (nobody/nogroup on Debian): a FROM-scratch image has no /etc/passwd.
        PrivilegesConfig {
            user: Account::Id(65_534),
            group: Account::Id(65_534),
        }
    }
}

/// A user or group, by name (looked up when the sidecar starts) or by numeric id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Account {
    Id(u32),
    Name(String),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Interval(Duration::from_secs(10)),
            server: ServerConfig::default(),
            modules: ModulesConfig::default(),
            workloads: Workloads::default(),
            unmatched: Unmatched::Other,
            limits: Limits::default(),
            tracefs: TracefsConfig::default(),
            log: LogConfig::default(),
            export: ExportConfig::default(),
            shutdown_timeout: ShutdownTimeout(Duration::from_secs(10)),
            bpf_stats: false,
            privileges: PrivilegesConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP: /metrics and /health/*.
    pub metrics_addr: Addr,
    /// gRPC API.
    pub grpc_addr: Addr,
    /// Concurrent WatchIOStats streams; more get RESOURCE_EXHAUSTED.
    pub max_streams: Capacity,
    /// Open connections per server; more are closed at once.
    pub max_connections: Bounded<1, 65_536>,
    /// From accept until a complete request (or TLS handshake) has been answered.
    pub handshake_timeout: BoundedDuration<100, 300_000>,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: BoundedDuration<1_000, 86_400_000>,
    /// A file holding the bearer token that /metrics and the gRPC API then require.
    pub token_file: Option<crate::auth::BearerToken>,
    /// TLS for both servers (cert, key, optional client_ca), PEM files.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl ServerConfig {
    pub fn connection_limits(&self) -> crate::conn::Limits {
        crate::conn::Limits {
            max_connections: self.max_connections.0 as usize,
            handshake_timeout: self.handshake_timeout.0,
            idle_timeout: self.idle_timeout.0,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            metrics_addr: Addr(SocketAddr::from(([127, 0, 0, 1], 9464))),
            grpc_addr: Addr(SocketAddr::from(([127, 0, 0, 1], 50051))),
            max_streams: Capacity(64),
            max_connections: Bounded(256),
            handshake_timeout: BoundedDuration(Duration::from_secs(10)),
            idle_timeout: BoundedDuration(Duration::from_secs(300)),
            token_file: None,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModulesConfig {
    pub fadvise: ModuleConfig,
    pub page_cache: ModuleConfig,
    pub vmscan: ModuleConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModuleConfig {
    pub enabled: bool,
}

impl Default for ModuleConfig {
    fn default() -> Self {
        ModuleConfig { enabled: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Count unmatched processes under the workload `other`.
    Other,
    /// Do not report unmatched processes (host-wide metrics still include them).
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Processes counted per interval in each kernel map, and cached classifications.
    pub max_tracked_processes: Capacity,
    /// Threads with an fadvise call, a read or a reclaim episode in flight.
    pub max_tracked_threads: Capacity,
    /// How far back GetIOStats windows reach.
    pub retention: Retention,
    /// Bytes the retained intervals may take; older ones are merged to fit.
    pub max_history_bytes: HistoryBytes,
    /// Kernel memory the per-process maps may take; on hosts with many CPUs the number of
    /// tracked processes is lowered to fit (per-CPU maps cost memory per CPU).
    pub max_kernel_memory: ByteSize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tracked_processes: Capacity(8192),
            max_tracked_threads: Capacity(16384),
            retention: Retention(Duration::from_secs(3600)),
            max_history_bytes: HistoryBytes(crate::store::DEFAULT_MAX_HISTORY_BYTES as u64),
            max_kernel_memory: ByteSize(256 << 20),
        }
    }
}

/// A size in bytes: `256MiB`, `1GiB`, `65536`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("bad size {text:?}: expected a number and KiB, MiB or GiB"))?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "KiB" => 10,
            "MiB" => 20,
            "GiB" => 30,
            other => {
                return Err(format!(
                    "bad size {text:?}: unknown unit {other:?} (use B, KiB, MiB or GiB)"
                ));
            }
        };
        number
            .checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 256MiB")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                ByteSize::parse(text).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(value))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// `limits.max_history_bytes`: 1MiB..=16GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryBytes(pub u64);

impl HistoryBytes {
    pub const MIN: u64 = 1 << 20;
    pub const MAX: u64 = 16 << 30;

    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for HistoryBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ByteSize(bytes) = ByteSize::deserialize(deserializer)?;
        if !(HistoryBytes::MIN..=HistoryBytes::MAX).contains(&bytes) {
            return Err(de::Error::custom(format!(
                "{bytes} bytes is outside 1MiB..=16GiB"
            )));
        }
        Ok(HistoryBytes(bytes))
    }
}

impl Config {
    /// Drains a window may reach back: the retention at the drain interval. The memory
    /// this takes is bounded by `limits.max_history_bytes`, not by this number: older
    /// intervals are merged to fit.
    pub fn retained_intervals(&self) -> usize {
        let intervals = self.limits.retention.0.as_nanos() / self.interval.0.as_nanos().max(1);
        usize::try_from(intervals.max(1)).unwrap_or(usize::MAX)
    }
}

/// How long recent intervals are kept: `1h`, `15m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Duration);

/// `shutdown_timeout`: 1s..=5m.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownTimeout(pub Duration);

impl<'de> Deserialize<'de> for ShutdownTimeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let duration = parse_duration(&text).map_err(de::Error::custom)?;
        if duration < Duration::from_secs(1) || duration > Duration::from_secs(300) {
            return Err(de::Error::custom(format!(
                "shutdown_timeout {text:?} is outside 1s..=5m"
            )));
        }
        Ok(ShutdownTimeout(duration))
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RetentionVisitor;
        impl Visitor<'_> for RetentionVisitor {
            type Value = Retention;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 1h or 15m")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Retention, E> {
                let duration = parse_duration(text).map_err(E::custom)?;
                if duration < Duration::from_secs(1) || duration > Duration::from_secs(7 * 86400) {
                    return Err(E::custom(format!("retention {text:?} is outside 1s..=7d")));
                }
                Ok(Retention(duration))
            }
        }
        deserializer.deserialize_str(RetentionVisitor)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracefsConfig {
    /// Mount tracefs at /sys/kernel/tracing when it is not mounted (needs CAP_SYS_ADMIN).
    pub mount: bool,
}

impl Default for TracefsConfig {
    fn default() -> Self {
        TracefsConfig { mount: true }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: LogLevel::Info,
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// One workload: a named set of processes. Every condition given must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    pub name: WorkloadName,
    /// Regex on /proc/PID/comm.
    #[serde(default)]
    pub comm: Option<Pattern>,
    /// Regex on the command line, arguments joined by spaces.
    #[serde(default)]
    pub cmdline: Option<Pattern>,
    /// Substring of one of the process's cgroup paths (/proc/PID/cgroup).
    #[serde(default, deserialize_with = "non_empty_substring")]
    pub cgroup: Option<String>,
    /// Explicit process ids, as the sidecar sees them.
    #[serde(default)]
    pub pids: Option<Vec<u32>>,
}

/// A substring matcher: an empty one would match every process.
fn non_empty_substring<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Err(de::Error::custom(
            "an empty substring matches every process: give one or leave the key out",
        ));
    }
    Ok(Some(text))
}

impl WorkloadConfig {
    fn has_condition(&self) -> bool {
        self.comm.is_some()
            || self.cmdline.is_some()
            || self.cgroup.is_some()
            || self.pids.is_some()
    }
}

/// The workloads, in matching order (first match wins).
#[derive(Debug, Clone, Default)]
pub struct Workloads(pub Vec<WorkloadConfig>);

/// The most workloads a configuration may name: a workload's id is 16 bits wide, and the
/// unmatched workload takes one id after them.
pub const MAX_WORKLOADS: usize = u16::MAX as usize;

impl<'de> Deserialize<'de> for Workloads {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WorkloadsVisitor;
        impl<'de> Visitor<'de> for WorkloadsVisitor {
            type Value = Workloads;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of workloads")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Workloads, A::Error> {
                let mut workloads: Vec<WorkloadConfig> = Vec::new();
                let mut names = HashSet::new();
                // Each element is checked while it is deserialized, so that an error points
                // at that workload, not at the list.
                while let Some(workload) = seq.next_element_seed(CheckedWorkload {
                    names: &mut names,
                    index: workloads.len(),
                })? {
                    workloads.push(workload);
                }
                Ok(Workloads(workloads))
            }
        }
        /// One workload, checked against the ones before it.
        struct CheckedWorkload<'a> {
            names: &'a mut HashSet<String>,
            index: usize,
        }
        impl<'de> de::DeserializeSeed<'de> for CheckedWorkload<'_> {
            type Value = WorkloadConfig;
            fn deserialize<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<WorkloadConfig, D::Error> {
                let workload = WorkloadConfig::deserialize(deserializer)?;
                if self.index == MAX_WORKLOADS {
                    return Err(de::Error::custom(format!(
                        "more than {MAX_WORKLOADS} workloads (a workload id is 16 bits)"
                    )));
                }
                if !workload.has_condition() {
                    return Err(de::Error::custom(format!(
                        "workload {:?} has no condition: give at least one of comm, cmdline, cgroup, pids",
                        workload.name.0
                    )));
                }
                if !self.names.insert(workload.name.0.clone()) {
                    return Err(de::Error::custom(format!(
                        "workload name {:?} is used twice",
                        workload.name.0
                    )));
                }
                Ok(workload)
            }
        }
        deserializer.deserialize_seq(WorkloadsVisitor)
    }
}

/// A workload name: becomes the `workload` label value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadName(pub String);

impl<'de> Deserialize<'de> for WorkloadName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = WorkloadName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a workload name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<WorkloadName, E> {
                if name.is_empty() || name.len() > 64 {
                    return Err(E::custom("a workload name has 1 to 64 characters"));
                }
                if name == OTHER_WORKLOAD {
                    return Err(E::custom(format!(
                        "{OTHER_WORKLOAD:?} is reserved for unmatched processes"
                    )));
                }
                if !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(E::custom(format!(
                        "workload name {name:?} may use only letters, digits, '-', '_' and '.'"
                    )));
                }
                Ok(WorkloadName(name.to_owned()))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// A compiled regular expression.
#[derive(Debug, Clone)]
pub struct Pattern(pub Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PatternVisitor;
        impl Visitor<'_> for PatternVisitor {
            type Value = Pattern;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a regular expression")
            }
            fn visit_str<E: de::Error>(self, pattern: &str) -> Result<Pattern, E> {
                if pattern.is_empty() {
                    return Err(E::custom(
                        "an empty pattern matches every process: give a pattern or leave the key out",
                    ));
                }
                Regex::new(pattern).map(Pattern).map_err(|err| {
                    // The regex crate's message spans several lines; keep the error on one.
                    let detail = err
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim()
                        .to_owned();
                    E::custom(format!("bad regular expression {pattern:?}: {detail}"))
                })
            }
        }
        deserializer.deserialize_str(PatternVisitor)
    }
}

/// A drain interval: `10s`, `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Duration);

impl Interval {
    pub const MIN: Duration = Duration::from_millis(50);
    pub const MAX: Duration = Duration::from_secs(3600);

    pub fn parse(text: &str) -> Result<Interval, String> {
        let duration = parse_duration(text)?;
        if duration < Self::MIN || duration > Self::MAX {
            return Err(format!(
                "interval {text:?} is outside {}..={}",
                humantime::format_duration(Self::MIN),
                humantime::format_duration(Self::MAX)
            ));
        }
        Ok(Interval(duration))
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntervalVisitor;
        impl Visitor<'_> for IntervalVisitor {
            type Value = Interval;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 10s or 500ms")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Interval, E> {
                Interval::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(IntervalVisitor)
    }
}

/// Parses `10s`, `500ms`, `1m`, `1h`: a number and a unit, nothing implicit (the grammar is
/// [`sidecar_common::duration`]); the message quotes the text.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    sidecar_common::duration::parse(text).map_err(|err| format!("bad duration {text:?}: {err}"))
}

/// A listen address, `IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AddrVisitor;
        impl Visitor<'_> for AddrVisitor {
            type Value = Addr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address such as 127.0.0.1:9464")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Addr, E> {
                text.parse()
                    .map(Addr)
                    .map_err(|_| E::custom(format!("bad address {text:?}: expected IP:PORT")))
            }
        }
        deserializer.deserialize_str(AddrVisitor)
    }
}

/// A map or cache size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity(pub u32);

impl Capacity {
    const MIN: u32 = 16;
    const MAX: u32 = 1 << 22;
}

impl<'de> Deserialize<'de> for Capacity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CapacityVisitor;
        impl Visitor<'_> for CapacityVisitor {
            type Value = Capacity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an integer in {}..={}", Capacity::MIN, Capacity::MAX)
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Capacity, E> {
                match u32::try_from(value) {
                    Ok(value) if (Capacity::MIN..=Capacity::MAX).contains(&value) => {
                        Ok(Capacity(value))
                    }
                    _ => Err(E::custom(format!(
                        "{value} is outside {}..={}",
                        Capacity::MIN,
                        Capacity::MAX
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Capacity, E> {
                u64::try_from(value)
                    .map_err(|_| E::custom(format!("{value} is negative")))
                    .and_then(|value| self.visit_u64(value))
            }
        }
        deserializer.deserialize_u64(CapacityVisitor)
    }
}

/// Push sinks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    pub banyandb: BanyanDbConfig,
}

/// `export.banyandb`: forwarding each drain's deltas to Apache SkyWalking BanyanDB.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawBanyanDbConfig")]
pub struct BanyanDbConfig {
    pub enabled: bool,
    /// BanyanDB's gRPC endpoint, `HOST:PORT`.
    pub addr: Endpoint,
    /// The `node` tag of every point; the host name when not given.
    pub node: Option<String>,
    /// The group the sidecar creates (catalog MEASURE) and writes into.
    pub group: SchemaName,
    /// How long BanyanDB keeps the data: whole hours or days.
    pub ttl: IntervalRule,
    /// The group's segment interval: whole hours or days.
    pub segment_interval: IntervalRule,
    pub shard_num: Bounded<1, 1024>,
    /// Points per Write stream at most.
    pub batch_size: Bounded<1, 100_000>,
    /// How often queued points are written.
    pub flush_interval: BoundedDuration<10, 60_000>,
    /// Deadline of each registry call and Write stream.
    pub timeout: BoundedDuration<100, 300_000>,
    pub spool: SpoolConfig,
    pub tls: Option<ClientTls>,
    /// Sent as BanyanDB's `username`/`password` gRPC metadata.
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Default for BanyanDbConfig {
    fn default() -> Self {
        BanyanDbConfig {
            enabled: false,
            addr: Endpoint("127.0.0.1:17912".to_owned()),
            node: None,
            group: SchemaName("sidecar".to_owned()),
            ttl: IntervalRule {
                unit: IntervalUnit::Day,
                num: 7,
            },
            segment_interval: IntervalRule {
                unit: IntervalUnit::Day,
                num: 1,
            },
            shard_num: Bounded(1),
            batch_size: Bounded(1000),
            flush_interval: BoundedDuration(Duration::from_secs(1)),
            timeout: BoundedDuration(Duration::from_secs(5)),
            spool: SpoolConfig::default(),
            tls: None,
            username: None,
            password: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBanyanDbConfig {
    enabled: bool,
    addr: Endpoint,
    node: Option<SchemaName>,
    group: SchemaName,
    ttl: IntervalRule,
    segment_interval: IntervalRule,
    shard_num: Bounded<1, 1024>,
    batch_size: Bounded<1, 100_000>,
    flush_interval: BoundedDuration<10, 60_000>,
    timeout: BoundedDuration<100, 300_000>,
    spool: SpoolConfig,
    tls: Option<ClientTls>,
    username: Option<String>,
    password: Option<String>,
}

impl Default for RawBanyanDbConfig {
    fn default() -> Self {
        let d = BanyanDbConfig::default();
        RawBanyanDbConfig {
            enabled: d.enabled,
            addr: d.addr,
            node: None,
            group: d.group,
            ttl: d.ttl,
            segment_interval: d.segment_interval,
            shard_num: d.shard_num,
            batch_size: d.batch_size,
            flush_interval: d.flush_interval,
            timeout: d.timeout,
            spool: d.spool,
            tls: d.tls,
            username: d.username,
            password: d.password,
        }
    }
}

impl TryFrom<RawBanyanDbConfig> for BanyanDbConfig {
    type Error = String;
    fn try_from(raw: RawBanyanDbConfig) -> Result<Self, String> {
        if raw.password.is_some() && raw.username.is_none() {
            return Err("password is set without username".to_owned());
        }
        if raw.segment_interval.as_duration() > raw.ttl.as_duration() {
            return Err(format!(
                "segment_interval ({}) is longer than ttl ({})",
                raw.segment_interval, raw.ttl
            ));
        }
        Ok(BanyanDbConfig {
            enabled: raw.enabled,
            addr: raw.addr,
            node: raw.node.map(|n| n.0),
            group: raw.group,
            ttl: raw.ttl,
            segment_interval: raw.segment_interval,
            shard_num: raw.shard_num,
            batch_size: raw.batch_size,
            flush_interval: raw.flush_interval,
            timeout: raw.timeout,
            spool: raw.spool,
            tls: raw.tls,
            username: raw.username,
            password: raw.password,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Where points wait on disk while BanyanDB is away; survives restarts.
    pub dir: PathBuf,
    /// The spool's cap; beyond it the oldest points are dropped (and counted).
    pub max_bytes: ByteSize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: PathBuf::from("/var/lib/sidecar/banyandb-spool"),
            max_bytes: ByteSize(256 << 20),
        }
    }
}

/// TLS towards BanyanDB: the CA that signed its certificate, and an optional client
/// certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawClientTls")]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientTls {
    #[serde(default)]
    ca: Option<PathBuf>,
    #[serde(default)]
    cert: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
}

impl TryFrom<RawClientTls> for ClientTls {
    type Error = String;
    fn try_from(raw: RawClientTls) -> Result<Self, String> {
        if raw.ca.is_none() {
            return Err("give ca: the CA certificate that signed BanyanDB's (PEM)".to_owned());
        }
        if raw.cert.is_some() != raw.key.is_some() {
            return Err("give both cert and key (a client certificate), or neither".to_owned());
        }
        Ok(ClientTls {
            ca: raw.ca,
            cert: raw.cert,
            key: raw.key,
        })
    }
}

/// A gRPC endpoint, `HOST:PORT` (a name or an IP address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(pub String);

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_str(deserializer, "an address such as 127.0.0.1:17912", |text| {
            let valid = text.parse::<SocketAddr>().is_ok()
                || text.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty()
                        && host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
                        && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
            if valid {
                Ok(Endpoint(text.to_owned()))
            } else {
                Err(format!("bad address {text:?}: expected HOST:PORT"))
            }
        })
    }
}

/// Deserializes a string with `parse`, so that errors point at the value.
fn parse_str<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct StrVisitor<F>(&'static str, F);
    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StrVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            (self.1)(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(StrVisitor(expecting, parse))
}

/// A BanyanDB group name or tag value we choose: 1 to 64 of letters, digits, '-', '_', '.'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaName(pub String);

impl<'de> Deserialize<'de> for SchemaName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_str(deserializer, "a name", |text| {
            if text.is_empty()
                || text.len() > 64
                || !text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(format!(
                    "bad name {text:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
                ));
            }
            Ok(SchemaName(text.to_owned()))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalUnit {
    Hour,
    Day,
}

/// A BanyanDB interval rule: a whole number of hours or days, `12h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalRule {
    pub unit: IntervalUnit,
    pub num: u32,
}

impl IntervalRule {
    pub fn as_duration(self) -> Duration {
        let unit = match self.unit {
            IntervalUnit::Hour => 3600,
            IntervalUnit::Day => 86400,
        };
        Duration::from_secs(unit * u64::from(self.num))
    }

    pub fn parse(text: &str) -> Result<IntervalRule, String> {
        let text = text.trim();
        let bad =
            || format!("bad interval {text:?}: expected whole hours or days, as in 12h or 7d");
        let (number, unit) = if let Some(number) = text.strip_suffix('h') {
            (number, IntervalUnit::Hour)
        } else if let Some(number) = text.strip_suffix('d') {
            (number, IntervalUnit::Day)
        } else {
            return Err(bad());
        };
        match number.parse::<u32>() {
            Ok(num) if (1..=100_000).contains(&num) => Ok(IntervalRule { unit, num }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for IntervalRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            IntervalUnit::Hour => 'h',
            IntervalUnit::Day => 'd',
        };
        write!(f, "{}{unit}", self.num)
    }
}

impl<'de> Deserialize<'de> for IntervalRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_str(
            deserializer,
            "whole hours or days, as in 7d",
            IntervalRule::parse,
        )
    }
}

/// An integer in `MIN..=MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded<const MIN: u32, const MAX: u32>(pub u32);

impl<'de, const MIN: u32, const MAX: u32> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoundedVisitor<const MIN: u32, const MAX: u32>;
        impl<const MIN: u32, const MAX: u32> Visitor<'_> for BoundedVisitor<MIN, MAX> {
            type Value = Bounded<MIN, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an integer in {MIN}..={MAX}")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                match u32::try_from(value) {
                    Ok(value) if (MIN..=MAX).contains(&value) => Ok(Bounded(value)),
                    _ => Err(E::custom(format!("{value} is outside {MIN}..={MAX}"))),
                }
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
                self.visit_i64(i64::try_from(value).unwrap_or(i64::MAX))
            }
        }
        deserializer.deserialize_i64(BoundedVisitor::<MIN, MAX>)
    }
}

/// A duration in `MIN_MS..=MAX_MS` milliseconds: `1s`, `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundedDuration<const MIN_MS: u64, const MAX_MS: u64>(pub Duration);

impl<'de, const MIN_MS: u64, const MAX_MS: u64> Deserialize<'de>
    for BoundedDuration<MIN_MS, MAX_MS>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_str(deserializer, "a duration such as 1s or 500ms", |text| {
            let duration = parse_duration(text)?;
            let (min, max) = (Duration::from_millis(MIN_MS), Duration::from_millis(MAX_MS));
            if duration < min || duration > max {
                return Err(format!(
                    "{text:?} is outside {}..={}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ));
            }
            Ok(BoundedDuration(duration))
        })
    }
}

/// A configuration error, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        /// The dotted key path, e.g. `workloads[1].comm`.
        key: String,
        message: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = crate::files::read_regular_text(path, crate::files::MAX_CONFIG_BYTES).map_err(
            |source| ConfigError::Read {
                path: path.to_owned(),
                source,
            },
        )?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses a configuration; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        // An empty file is the default configuration, not a YAML error.
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        if let Some((line, column)) = too_deep(text) {
            return Err(ConfigError::Invalid {
                file: file.to_owned(),
                line,
                column,
                key: "(top level)".to_owned(),
                message: format!("nested deeper than {MAX_NESTING} levels"),
            });
        }
        let deserializer = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = match err.path().to_string() {
                path if path == "." => "(top level)".to_owned(),
                path => path,
            };
            let inner = err.inner();
            let reported = inner
                .location()
                .map(|location| (location.line(), location.column()));
            // serde_yaml places errors raised after a value was read (a visitor's checks) at
            // an enclosing container: the key's own line is better when it comes after that.
            let message = inner.to_string();
            let located = duplicate_key(text, &key, &message)
                .or_else(|| second_document(text, &message))
                .or_else(|| locate(text, &key));
            let (line, column) = match (reported, located) {
                (Some(reported), Some(located)) if located.0 > reported.0 => located,
                (Some(reported), _) => reported,
                (None, located) => located.unwrap_or((1, 1)),
            };
            ConfigError::Invalid {
                file: file.to_owned(),
                line,
                column,
                message: bare_message(&inner.to_string(), &key),
                key,
            }
        })
    }
}

impl Config {
    /// Checks what parsing cannot: the places on disk the configuration names. Run before
    /// anything is attached. `text` is the file's text (for the error's line and column).
    pub fn check_paths(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let banyandb = &self.export.banyandb;
        if banyandb.enabled
            && let Err(err) = crate::export::banyandb::queue::Spool::check_dir(&banyandb.spool.dir)
        {
            let key = "export.banyandb.spool.dir";
            let (line, column) = locate(text, key).unwrap_or((0, 0));
            return Err(ConfigError::Invalid {
                file: file.to_owned(),
                line,
                column,
                key: key.to_owned(),
                message: format!("{}: {err}", banyandb.spool.dir.display()),
            });
        }
        Ok(())
    }
}

/// Where a key path (`export.banyandb.spool.dir`, `workloads[1].comm`) is written in
/// block-style YAML: the 1-based line and column of its value, or of the list item for an
/// index. `None` when it is not written (a default) or sits inside flow style. Used for
/// errors found after parsing, and where serde_yaml can only name an enclosing container.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    /// A meaningful line: its key column, its text from there, and its dash column when it
    /// starts a list item (`- key: value`).
    struct Line<'t> {
        number: usize,
        indent: usize,
        content: &'t str,
        dash: Option<usize>,
    }
    let lines: Vec<Line> = text
        .lines()
        .enumerate()
        .filter_map(|(number, raw)| {
            let content = raw.trim_start();
            if content.is_empty() || content.starts_with('#') || content.starts_with("---") {
                return None;
            }
            let indent = raw.len() - content.len();
            Some(match content.strip_prefix("- ") {
                Some(item) => {
                    let inner = item.trim_start();
                    Line {
                        number,
                        indent: indent + 2 + (item.len() - inner.len()),
                        content: inner,
                        dash: Some(indent),
                    }
                }
                None => Line {
                    number,
                    indent,
                    content,
                    dash: None,
                },
            })
        })
        .collect();
    let segments = path.split('.').flat_map(|part| {
        let (key, indexes) = part
            .split_once('[')
            .map_or((part, ""), |(k, rest)| (k, rest));
        let indexes = indexes
            .split('[')
            .filter_map(|i| i.trim_end_matches(']').parse::<usize>().ok())
            .map(Err);
        std::iter::once(Ok(key))
            .filter(|k| k != &Ok(""))
            .chain(indexes)
    });
    let (mut cursor, mut parent): (usize, Option<usize>) = (0, None);
    let mut found = None;
    // Whether `line` (not the cursor's own line) leaves the block under `parent`.
    let leaves = |line: &Line, parent: Option<usize>| {
        parent.is_some_and(|p| line.indent <= p || line.dash.is_some_and(|d| d <= p))
    };
    for segment in segments {
        match segment {
            Ok(key) => {
                let at = (cursor..lines.len())
                    .take_while(|&i| i == cursor || !leaves(&lines[i], parent))
                    .find(|&i| {
                        let line = &lines[i];
                        let name = line.content.split(':').next().unwrap_or("");
                        parent.is_none_or(|p| line.indent > p)
                            && name.trim().trim_matches(['"', '\'']) == key
                            && line.content[name.len()..].starts_with(':')
                    })?;
                let line = &lines[at];
                let after = line.content.find(':')? + 1;
                let value = &line.content[after..];
                let column = line.indent + after + (value.len() - value.trim_start().len());
                found = Some((line.number + 1, column + 1));
                (cursor, parent) = (at + 1, Some(line.indent));
            }
            Err(index) => {
                let mut items = (cursor..lines.len())
                    .take_while(|&i| !leaves(&lines[i], parent))
                    .filter(|&i| lines[i].dash.is_some());
                let first = items.next()?;
                let dash = lines[first].dash?;
                let at = std::iter::once(first)
                    .chain(items.filter(|&i| lines[i].dash == Some(dash)))
                    .nth(index)?;
                found = Some((lines[at].number + 1, dash + 1));
                (cursor, parent) = (at, Some(dash));
            }
        }
    }
    found
}

/// How deep a configuration may nest flow collections (`[`, `{`). Ours needs three; the
/// parser's time grows with depth (100,000 levels took 55 s).
pub const MAX_NESTING: usize = 64;

/// Where flow nesting first passes [`MAX_NESTING`], if it does (quotes and comments aside).
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    for (number, line) in text.lines().enumerate() {
        let mut quote = None;
        for (column, c) in line.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') if column == 0 || line[..column].ends_with([' ', '\t']) => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some((number + 1, column + 1));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// For "duplicate field `x`": where the second `x` of that mapping is written.
fn duplicate_key(text: &str, key: &str, message: &str) -> Option<(usize, usize)> {
    let field = message
        .split("duplicate field `")
        .nth(1)?
        .split('`')
        .next()?;
    let parent = key.trim_start_matches("(top level)");
    let path = |p: &str| {
        if p.is_empty() {
            field.to_owned()
        } else {
            format!("{p}.{field}")
        }
    };
    let (first_line, first_column) = locate(text, &path(parent))?;
    // The same key at the same column further down, before the mapping ends.
    let lines: Vec<&str> = text.lines().collect();
    let indent = lines.get(first_line - 1)?.find(field)?;
    for (number, line) in lines.iter().enumerate().skip(first_line) {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let at = line.len() - content.len();
        if at < indent {
            break;
        }
        if at == indent
            && content.starts_with(field)
            && content[field.len()..].trim_start().starts_with(':')
        {
            let value = line[at + field.len()..].find(':')? + at + field.len() + 1;
            let rest = &line[value..];
            return Some((
                number + 1,
                value + (rest.len() - rest.trim_start().len()) + 1,
            ));
        }
    }
    let _ = first_column;
    None
}

/// For a file of several YAML documents: where the second one starts.
fn second_document(text: &str, message: &str) -> Option<(usize, usize)> {
    if !message.contains("more than one document") {
        return None;
    }
    let mut seen_content = false;
    for (number, line) in text.lines().enumerate() {
        if line.starts_with("---") && seen_content {
            return Some((number + 1, 1));
        }
        seen_content |= !line.trim().is_empty()
            && !line.trim_start().starts_with('#')
            && !line.starts_with("---");
    }
    None
}

/// serde_yaml's message without the key prefix and location suffix we print ourselves.
fn bare_message(message: &str, key: &str) -> String {
    // serde_yaml prefixes the path of the mapping it was in, a prefix of our key path.
    let message = match message.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && key.starts_with(path) => rest,
        _ => message,
    };
    let message = match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => &message[..at],
        _ => message,
    };
    message.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        Config::parse(text, "test.yaml").unwrap_err().to_string()
    }

    #[test]
    fn the_shipped_config_parses() {
        let text = include_str!("../../configs/sidecar.yaml");
        let config = Config::parse(text, "configs/sidecar.yaml").unwrap();
        assert!(config.server.metrics_addr.0.ip().is_loopback());
        assert!(config.server.grpc_addr.0.ip().is_loopback());
    }

    #[test]
    fn a_workload_error_points_at_that_workload() {
        let err = error_of(
            "interval: 1s\nworkloads:\n  - name: a\n    pids: [1]\n  - name: a\n    comm: x\n",
        );
        assert!(err.starts_with("test.yaml:5:"), "{err}");
        assert!(
            err.contains("workloads[1]: workload name \"a\" is used twice"),
            "{err}"
        );
        let err = error_of("workloads:\n  - name: a\n    pids: [1]\n  - name: b\n");
        assert!(err.starts_with("test.yaml:4:"), "{err}");
        assert!(
            err.contains("workloads[1]: workload \"b\" has no condition"),
            "{err}"
        );
    }

    /// Each kind of error points at the offending key or value (issue 12.8 listed where
    /// they pointed before: 3:3, 2:3, 2:3, 1:1, 1:1 and 0:0).
    #[test]
    fn errors_point_at_the_offending_place() {
        let cases = [
            (
                "interval: 1s\nserver:\n  metrics_addr: 127.0.0.1:1\n  grpc_addr: 127.0.0.1:2\n  tls:\n    cert: /c.pem\n",
                "test.yaml:6:5: server.tls: missing field `key`",
            ),
            (
                "interval: 1s\nlog:\n  level: info\nshutdown_timeout: 99h\n",
                "test.yaml:4:19: shutdown_timeout:",
            ),
            (
                "interval: 1s\nlog:\n  level: info\ninterval: 2s\n",
                "test.yaml:4:11: (top level): duplicate field `interval`",
            ),
            (
                "log:\n  level: info\n  format: text\n  level: debug\n",
                "test.yaml:4:10: log: duplicate field `level`",
            ),
            (
                "interval: 1s\n---\ninterval: 2s\n",
                "test.yaml:2:1: (top level): deserializing from YAML containing more than one document",
            ),
            (
                "workloads:\n  - name: a\n    pids: [1]\n  - name: a\n    comm: x\n",
                "test.yaml:4:3: workloads[1]: workload name \"a\" is used twice",
            ),
        ];
        for (text, expected) in cases {
            let err = error_of(text);
            assert!(err.starts_with(expected), "{err}\nexpected: {expected}");
        }
    }

    #[test]
    fn deep_nesting_and_empty_matchers_are_refused() {
        let deep = format!(
            "interval: {}1{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let started = std::time::Instant::now();
        let err = error_of(&deep);
        assert!(
            err.starts_with("test.yaml:1:75: (top level): nested deeper than 64"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        for (matcher, what) in [
            ("cgroup: \"\"", "empty substring"),
            ("comm: \"\"", "empty pattern"),
            ("cmdline: ''", "empty pattern"),
        ] {
            let err = error_of(&format!("workloads:\n  - name: a\n    {matcher}\n"));
            assert!(err.starts_with("test.yaml:3:"), "{err}");
            assert!(err.contains(what), "{err}");
        }
    }

    #[test]
    fn more_workloads_than_ids_are_refused() {
        let mut text = String::from("workloads:\n");
        for i in 0..MAX_WORKLOADS {
            text.push_str(&format!("  - {{name: w{i}, pids: [{}]}}\n", i + 1));
        }
        let config = Config::parse(&text, "t.yaml").unwrap();
        let names = crate::workload::WorkloadNames::from_config(&config);
        assert_eq!(names.name(names.other()), "other");
        assert_eq!(
            names.name(names.ids().nth(MAX_WORKLOADS - 1).unwrap()),
            "w65534"
        );
        text.push_str("  - {name: one-too-many, pids: [1]}\n");
        let err = error_of(&text);
        assert!(
            err.starts_with(&format!("test.yaml:{}:", MAX_WORKLOADS + 2)),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "workloads[{MAX_WORKLOADS}]: more than {MAX_WORKLOADS} workloads"
            )),
            "{err}"
        );
    }

    #[test]
    fn a_key_is_located_for_errors_found_after_parsing() {
        let text = "interval: 1s\nexport:\n  # the sink\n  banyandb:\n    enabled: true\n    spool:\n      max_bytes: 1MiB\n      dir: /nope\n";
        assert_eq!(locate(text, "export.banyandb.spool.dir"), Some((8, 12)));
        assert_eq!(locate(text, "export.banyandb.enabled"), Some((5, 14)));
        assert_eq!(locate(text, "export.banyandb.addr"), None);
        let text = "workloads:\n  - name: a\n    pids: [1]\n  -   name: b\n    comm: x\n  - {name: c}\nunmatched: other\n";
        assert_eq!(locate(text, "workloads[0]"), Some((2, 3)));
        assert_eq!(locate(text, "workloads[1].comm"), Some((5, 11)));
        assert_eq!(locate(text, "workloads[1].name"), Some((4, 13)));
        assert_eq!(locate(text, "workloads[0].comm"), None);
        assert_eq!(locate(text, "workloads[2]"), Some((6, 3)));
        assert_eq!(locate(text, "workloads[3]"), None);
        assert_eq!(locate(text, "unmatched"), Some((7, 12)));
        // A key of the same name in another block is not taken for it.
        let text = "modules:\n  dir: x\nexport:\n  banyandb:\n    addr: a:1\n";
        assert_eq!(locate(text, "export.banyandb.dir"), None);
    }

    #[test]
    fn empty_file_is_the_default() {
        let config = Config::parse("\n# nothing\n", "x").unwrap();
        assert_eq!(config.interval.0, Duration::from_secs(10));
        assert_eq!(config.unmatched, Unmatched::Other);
        assert!(config.modules.page_cache.enabled);
    }

    #[test]
    fn unknown_key_names_key_line_and_column() {
        let err = error_of("interval: 1s\nmodules:\n  fadvise:\n    enabeld: true\n");
        assert_eq!(
            err,
            "test.yaml:4:5: modules.fadvise.enabeld: unknown field `enabeld`, expected `enabled`"
        );
    }

    #[test]
    fn bad_duration_points_at_the_value() {
        let err = error_of("log:\n  level: info\ninterval: 10x\n");
        assert!(
            err.starts_with("test.yaml:3:11: interval: bad duration \"10x\""),
            "{err}"
        );
        let err = error_of("interval: 10\n");
        assert!(err.contains("give a unit"), "{err}");
        let err = error_of("interval: 1ms\n");
        assert!(err.contains("outside"), "{err}");
    }

    #[test]
    fn bad_regex_points_at_the_value() {
        let err = error_of("workloads:\n  - name: jobs\n    comm: \"^job(\"\n");
        assert!(
            err.starts_with("test.yaml:3:11: workloads[0].comm: bad regular expression \"^job(\""),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn bad_yaml_is_located() {
        let err = error_of("interval: 1s\nserver: [\n  metrics_addr: x\n");
        assert!(err.starts_with("test.yaml:"), "{err}");
        assert!(!err.starts_with("test.yaml:0:0"), "{err}");
    }

    #[test]
    fn workload_rules() {
        let err = error_of("workloads:\n  - name: other\n    comm: x\n");
        assert!(err.contains("reserved"), "{err}");
        let err = error_of("workloads:\n  - name: a\n");
        assert!(err.contains("no condition"), "{err}");
        let err = error_of("workloads:\n  - name: a\n    pids: [1]\n  - name: a\n    comm: x\n");
        assert!(err.contains("used twice"), "{err}");
        let err = error_of("workloads:\n  - name: \"a b\"\n    pids: [1]\n");
        assert!(err.contains("may use only"), "{err}");
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("256MiB"), Ok(ByteSize(256 << 20)));
        assert_eq!(ByteSize::parse("1GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert!(ByteSize::parse("12MB").is_err());
        assert!(ByteSize::parse("MiB").is_err());
        let err = error_of("limits:\n  max_kernel_memory: 3 parsecs\n");
        assert!(
            err.starts_with("test.yaml:2:22: limits.max_kernel_memory: bad size"),
            "{err}"
        );
        let config = Config::parse("limits:\n  max_kernel_memory: 64MiB\n", "t").unwrap();
        assert_eq!(config.limits.max_kernel_memory, ByteSize(64 << 20));
        assert_eq!(
            Config::parse("", "t").unwrap().limits.max_history_bytes,
            HistoryBytes(64 << 20)
        );
        let config = Config::parse("limits:\n  max_history_bytes: 1GiB\n", "t").unwrap();
        assert_eq!(config.limits.max_history_bytes.bytes(), 1 << 30);
        for bad in ["1KiB", "17GiB"] {
            let err = error_of(&format!("limits:\n  max_history_bytes: {bad}\n"));
            assert!(
                err.contains("limits.max_history_bytes") && err.contains("outside"),
                "{err}"
            );
        }
    }

    #[test]
    fn banyandb_export() {
        let config = Config::parse("", "t").unwrap();
        let b = &config.export.banyandb;
        assert!(!b.enabled);
        assert_eq!(b.addr.0, "127.0.0.1:17912");
        assert_eq!(b.ttl.to_string(), "7d");
        assert_eq!(b.segment_interval.as_duration(), Duration::from_secs(86400));
        let text = "export:\n  banyandb:\n    enabled: true\n    addr: banyandb.svc:17912\n    group: g1\n    ttl: 36h\n    segment_interval: 12h\n    shard_num: 2\n    batch_size: 10\n    flush_interval: 200ms\n    timeout: 2s\n    spool:\n      dir: /tmp/s\n      max_bytes: 1MiB\n    tls:\n      ca: /ca.pem\n    username: u\n    password: p\n";
        let config = Config::parse(text, "t").unwrap();
        let b = &config.export.banyandb;
        assert!(b.enabled);
        assert_eq!(b.addr.0, "banyandb.svc:17912");
        assert_eq!((b.ttl.unit, b.ttl.num), (IntervalUnit::Hour, 36));
        assert_eq!(b.shard_num.0, 2);
        assert_eq!(b.flush_interval.0, Duration::from_millis(200));
        assert_eq!(b.spool.max_bytes, ByteSize(1 << 20));
        assert_eq!(
            b.tls.as_ref().unwrap().ca.as_deref(),
            Some(Path::new("/ca.pem"))
        );
        for (yaml, expected) in [
            (
                "ttl: 5m",
                "test.yaml:3:10: export.banyandb.ttl: bad interval",
            ),
            (
                "shard_num: 0",
                "test.yaml:3:16: export.banyandb.shard_num: 0 is outside",
            ),
            (
                "batch_size: -1",
                "export.banyandb.batch_size: -1 is outside",
            ),
            (
                "flush_interval: 1h",
                "export.banyandb.flush_interval: \"1h\" is outside",
            ),
            ("timeout: 10", "export.banyandb.timeout: bad duration"),
            ("addr: nowhere", "export.banyandb.addr: bad address"),
            ("group: \"a b\"", "export.banyandb.group: bad name"),
            (
                "spool: { max_bytes: 1XB }",
                "export.banyandb.spool.max_bytes: bad size",
            ),
            (
                "spool: { dri: x }",
                "export.banyandb.spool.dri: unknown field",
            ),
            (
                "tls: { ca: /a, cert: /c.pem }",
                "export.banyandb.tls: give both cert and key",
            ),
            ("tls: { cert: /c, key: /k }", "export.banyandb.tls: give ca"),
            (
                "password: p",
                "export.banyandb: password is set without username",
            ),
            (
                "ttl: 1d\n    segment_interval: 2d",
                "export.banyandb: segment_interval (2d) is longer than ttl (1d)",
            ),
            ("enable: true", "export.banyandb.enable: unknown field"),
        ] {
            let err = error_of(&format!("export:\n  banyandb:\n    {yaml}\n"));
            assert!(err.contains(expected), "{yaml}: {err}");
        }
    }

    #[test]
    fn full_config() {
        let text = r#"
interval: 500ms
server:
  metrics_addr: 127.0.0.1:19464
  grpc_addr: "[::1]:50051"
modules:
  vmscan: { enabled: false }
workloads:
  - name: job-worker
    comm: "^job-worker$"
    cmdline: "jobs\\.toml"
    cgroup: /kubepods/
  - name: banyandb
    pids: [1, 2]
unmatched: drop
limits:
  max_tracked_processes: 100
log:
  format: json
"#;
        let config = Config::parse(text, "x").unwrap();
        assert_eq!(config.interval.0, Duration::from_millis(500));
        assert!(!config.modules.vmscan.enabled);
        assert!(config.modules.fadvise.enabled);
        assert_eq!(config.workloads.0.len(), 2);
        assert_eq!(config.workloads.0[0].name.0, "job-worker");
        assert!(
            config.workloads.0[0]
                .cmdline
                .as_ref()
                .unwrap()
                .0
                .is_match("run jobs.toml")
        );
        assert_eq!(config.unmatched, Unmatched::Drop);
        assert_eq!(config.limits.max_tracked_processes.0, 100);
        assert_eq!(config.limits.max_tracked_threads.0, 16384);
        assert_eq!(config.log.format, LogFormat::Json);
        let err = error_of("limits:\n  max_tracked_processes: 3\n");
        assert!(
            err.starts_with("test.yaml:2:26: limits.max_tracked_processes:"),
            "{err}"
        );
    }
}
