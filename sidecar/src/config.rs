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
    /// A file holding the bearer token that /metrics and the gRPC API then require.
    pub token_file: Option<crate::auth::BearerToken>,
    /// TLS for both servers (cert, key, optional client_ca), PEM files.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            metrics_addr: Addr(SocketAddr::from(([127, 0, 0, 1], 9464))),
            grpc_addr: Addr(SocketAddr::from(([127, 0, 0, 1], 50051))),
            max_streams: Capacity(64),
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
    /// How far back GetIOStats windows reach (at most `MAX_RETAINED_INTERVALS` intervals).
    pub retention: Retention,
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

/// Intervals the store keeps at most, whatever the retention: memory stays bounded.
pub const MAX_RETAINED_INTERVALS: usize = 3600;

impl Config {
    /// Intervals kept for windows: the retention at the drain interval, bounded.
    pub fn retained_intervals(&self) -> usize {
        let intervals = self.limits.retention.0.as_nanos() / self.interval.0.as_nanos().max(1);
        (intervals.max(1) as usize).min(MAX_RETAINED_INTERVALS)
    }
}

/// How long recent intervals are kept: `1h`, `15m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Duration);

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
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Explicit process ids, as the sidecar sees them.
    #[serde(default)]
    pub pids: Option<Vec<u32>>,
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
                while let Some(workload) = seq.next_element::<WorkloadConfig>()? {
                    if !workload.has_condition() {
                        return Err(de::Error::custom(format!(
                            "workload {:?} has no condition: give at least one of comm, cmdline, cgroup, pids",
                            workload.name.0
                        )));
                    }
                    if !names.insert(workload.name.0.clone()) {
                        return Err(de::Error::custom(format!(
                            "workload name {:?} is used twice",
                            workload.name.0
                        )));
                    }
                    workloads.push(workload);
                }
                Ok(Workloads(workloads))
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

/// Parses `10s`, `500ms`, `1m`, `1h`: a number and a unit, nothing implicit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "bad duration {text:?}: give a unit, as in 10s or 500ms"
        ));
    }
    humantime::parse_duration(trimmed).map_err(|err| format!("bad duration {text:?}: {err}"))
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
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses a configuration; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        // An empty file is the default configuration, not a YAML error.
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let deserializer = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = match err.path().to_string() {
                path if path == "." => "(top level)".to_owned(),
                path => path,
            };
            let inner = err.inner();
            let (line, column) = inner
                .location()
                .map_or((0, 0), |location| (location.line(), location.column()));
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
