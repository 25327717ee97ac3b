//! `workloads` and `unmatched`: which processes make up each workload.

use std::{collections::HashSet, fmt};

use regex::Regex;
use serde::{
    Deserialize, Deserializer,
    de::{self, SeqAccess, Visitor},
};

use super::de::{deserialize_str, parse_str};

/// The label value of processes that match no workload, and of overflowed events.
pub const OTHER_WORKLOAD: &str = "other";

/// The most workloads a configuration may name: a workload's id is 16 bits wide, and the
/// unmatched workload takes one id after them.
pub const MAX_WORKLOADS: usize = u16::MAX as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Count unmatched processes under the workload `other`.
    Other,
    /// Do not report unmatched processes (host-wide metrics still include them).
    Drop,
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
    parse_str(deserializer, "a substring of a cgroup path", |text| {
        if text.is_empty() {
            return Err(
                "an empty substring matches every process: give one or leave the key out"
                    .to_owned(),
            );
        }
        Ok(Some(text.to_owned()))
    })
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

/// A sequence visitor of its own, not `Vec`'s: each element is checked against the ones
/// before it while it is deserialized, so that an error points at that workload, not at the
/// list.
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
                while let Some(workload) = seq.next_element_seed(CheckedWorkload {
                    names: &mut names,
                    index: workloads.len(),
                })? {
                    workloads.push(workload);
                }
                Ok(Workloads(workloads))
            }
        }
        deserializer.deserialize_seq(WorkloadsVisitor)
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

/// A workload name: becomes the `workload` label value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadName(pub String);

impl WorkloadName {
    pub fn parse(name: &str) -> Result<WorkloadName, String> {
        if name.is_empty() || name.len() > 64 {
            return Err("a workload name has 1 to 64 characters".to_owned());
        }
        if name == OTHER_WORKLOAD {
            return Err(format!(
                "{OTHER_WORKLOAD:?} is reserved for unmatched processes"
            ));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "workload name {name:?} may use only letters, digits, '-', '_' and '.'"
            ));
        }
        Ok(WorkloadName(name.to_owned()))
    }
}

deserialize_str!(WorkloadName, "a workload name", WorkloadName::parse);

/// A compiled regular expression.
#[derive(Debug, Clone)]
pub struct Pattern(pub Regex);

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Pattern, String> {
        if pattern.is_empty() {
            return Err(
                "an empty pattern matches every process: give a pattern or leave the key out"
                    .to_owned(),
            );
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
            format!("bad regular expression {pattern:?}: {detail}")
        })
    }
}

deserialize_str!(Pattern, "a regular expression", Pattern::parse);
