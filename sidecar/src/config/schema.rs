//! The schema: every section and key of the file, with its default. How a value is written
//! and checked is its type's business (`bounded`, `units`, `names`, `workloads`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de};

use super::{
    bounded::{
        Bounded, BoundedDuration, BoundedSize, Capacity, HistoryBytes, Interval, Retention,
        ShutdownTimeout,
    },
    names::{Addr, Endpoint, SchemaName},
    units::{ByteSize, IntervalRule, IntervalUnit},
    workloads::{Unmatched, Workloads},
};

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
            interval: BoundedDuration(Duration::from_secs(10)),
            server: ServerConfig::default(),
            modules: ModulesConfig::default(),
            workloads: Workloads::default(),
            unmatched: Unmatched::Other,
            limits: Limits::default(),
            tracefs: TracefsConfig::default(),
            log: LogConfig::default(),
            export: ExportConfig::default(),
            shutdown_timeout: BoundedDuration(Duration::from_secs(10)),
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
            max_streams: Bounded(64),
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
    pub io: ModuleConfig,
    pub memcg: ModuleConfig,
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
            max_tracked_processes: Bounded(8192),
            max_tracked_threads: Bounded(16384),
            retention: BoundedDuration(Duration::from_secs(3600)),
            max_history_bytes: BoundedSize(crate::store::DEFAULT_MAX_HISTORY_BYTES as u64),
            max_kernel_memory: ByteSize(256 << 20),
        }
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

/// Push sinks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    pub banyandb: BanyanDbConfig,
}

/// `export.banyandb`: forwarding each drain's deltas to Apache SkyWalking BanyanDB.
#[derive(Debug, Clone, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct BanyanDbConfig {
    pub enabled: bool,
    /// BanyanDB's gRPC endpoint, `HOST:PORT`.
    pub addr: Endpoint,
    /// The `node` tag of every point; the host name when not given.
    #[serde(deserialize_with = "schema_name")]
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

impl BanyanDbConfig {
    fn check(&self) -> Result<(), String> {
        if self.password.is_some() && self.username.is_none() {
            return Err("password is set without username".to_owned());
        }
        if self.segment_interval.as_duration() > self.ttl.as_duration() {
            return Err(format!(
                "segment_interval ({}) is longer than ttl ({})",
                self.segment_interval, self.ttl
            ));
        }
        Ok(())
    }
}

/// As for [`ClientTls`]: the derived reading, then the checks across keys.
impl<'de> Deserialize<'de> for BanyanDbConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let config = BanyanDbConfig::deserialize(deserializer)?;
        config.check().map_err(de::Error::custom)?;
        Ok(config)
    }
}

/// `node` is checked as a [`SchemaName`] and kept as the string it is.
fn schema_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Option::<SchemaName>::deserialize(deserializer).map(|name| name.map(|name| name.0))
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
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ClientTls {
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl ClientTls {
    fn check(&self) -> Result<(), &'static str> {
        if self.ca.is_none() {
            return Err("give ca: the CA certificate that signed BanyanDB's (PEM)");
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err("give both cert and key (a client certificate), or neither");
        }
        Ok(())
    }
}

/// The derived reading (`remote = "Self"`), then the checks that involve several keys. Like
/// `try_from`, without a copy of every field in a raw twin; such an error names the
/// mapping, whose line [`super::locate`] finds. The derive's inherent
/// `ClientTls::deserialize` skips the checks: read through the `Deserialize` trait.
impl<'de> Deserialize<'de> for ClientTls {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let tls = ClientTls::deserialize(deserializer)?;
        tls.check().map_err(de::Error::custom)?;
        Ok(tls)
    }
}
