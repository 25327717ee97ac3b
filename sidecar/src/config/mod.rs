//! The configuration file (`configs/sidecar.yaml` documents every key).
//!
//! Everything is checked while parsing, in serde visitors, so that an error carries the line
//! and column of the offending value: unknown keys, bad durations, bad addresses, bad regular
//! expressions, duplicate workload names. A file that fails here stops the sidecar before
//! anything is loaded into the kernel.
//!
//! - [`schema`]: the sections and keys, with their defaults;
//! - [`workloads`]: the workload list and its matchers;
//! - [`bounded`]: integers, durations and sizes within bounds;
//! - [`units`]: the grammars of durations, sizes and BanyanDB interval rules;
//! - [`names`]: addresses and schema names;
//! - [`error`]: the error, and where in the file it is;
//! - `paths`: the checks that need the file system, after parsing.

mod bounded;
mod de;
mod error;
mod names;
mod paths;
mod schema;
mod units;
mod workloads;

use std::path::Path;

pub use bounded::{
    Bounded, BoundedDuration, BoundedSize, Capacity, HistoryBytes, Interval, Retention,
    ShutdownTimeout,
};
pub use error::{ConfigError, MAX_NESTING, locate};
pub use names::{Addr, Endpoint, SchemaName};
pub use schema::{
    Account, BanyanDbConfig, ClientTls, Config, ExportConfig, Limits, LogConfig, LogFormat,
    LogLevel, ModuleConfig, ModulesConfig, PrivilegesConfig, ServerConfig, SpoolConfig,
    TracefsConfig,
};
pub use units::{ByteSize, IntervalRule, IntervalUnit, parse_duration};
pub use workloads::{
    MAX_WORKLOADS, OTHER_WORKLOAD, Pattern, Unmatched, WorkloadConfig, WorkloadName, Workloads,
};

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
        if let Some(err) = ConfigError::too_deep(text, file) {
            return Err(err);
        }
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer)
            .map_err(|err| ConfigError::from_yaml(&err, text, file))
    }
}

#[cfg(test)]
mod tests;
