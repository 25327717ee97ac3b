//! Which workload a process belongs to.
//!
//! A process is classified the first time a drain sees it and the answer is cached. The
//! cache is bounded (`limits.max_tracked_processes`): entries not seen for a while go first.
//! A process whose comm, as the kernel saw it, changed since it was classified has exec'd
//! (or its PID was reused) and is classified again.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

/// A map keyed by tgid. A drain looks up every process it read (10,000 and more), so the
/// key is hashed with one multiplication instead of SipHash: tgids come from the kernel,
/// not from a party that could pick colliding keys.
pub type TgidMap<V> = HashMap<u32, V, std::hash::BuildHasherDefault<TgidHasher>>;

#[derive(Default)]
pub struct TgidHasher(u64);

impl std::hash::Hasher for TgidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8 | u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, tgid: u32) {
        // Fibonacci hashing: the high bits, which hashbrown uses, depend on every key bit.
        self.0 = u64::from(tgid).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

use crate::config::{Config, OTHER_WORKLOAD, Unmatched, WorkloadConfig};

/// Index of a workload: configured workloads in order, then `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadId(pub u16);

/// Where a process's events go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignment {
    Workload(WorkloadId),
    /// Unmatched, and the configuration says `unmatched: drop`.
    Dropped,
}

/// What a classifier can learn about a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessFacts {
    pub comm: Option<String>,
    pub cmdline: Option<String>,
    pub cgroups: Option<Vec<String>>,
}

impl ProcessFacts {
    /// What is known of a process without /proc: the comm the kernel recorded, if any.
    fn from_kernel(kernel_comm: Option<&[u8; 16]>) -> ProcessFacts {
        ProcessFacts {
            comm: kernel_comm.map(comm_string),
            cmdline: None,
            cgroups: None,
        }
    }
}

/// The workload label set, fixed by the configuration.
#[derive(Clone, Debug)]
pub struct WorkloadNames {
    names: Vec<std::sync::Arc<str>>,
}

impl WorkloadNames {
    pub fn from_config(config: &Config) -> WorkloadNames {
        let mut names: Vec<std::sync::Arc<str>> = config
            .workloads
            .0
            .iter()
            .map(|w| std::sync::Arc::from(w.name.0.as_str()))
            .collect();
        names.push(std::sync::Arc::from(OTHER_WORKLOAD));
        WorkloadNames { names }
    }

    /// Never zero: `other` is always there.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, id: WorkloadId) -> &str {
        &self.names[id.0 as usize]
    }

    /// The name as a shared string, for labels that repeat it.
    pub fn shared_name(&self, id: WorkloadId) -> std::sync::Arc<str> {
        self.names[id.0 as usize].clone()
    }

    pub fn other(&self) -> WorkloadId {
        WorkloadId((self.names.len() - 1) as u16)
    }

    pub fn ids(&self) -> impl Iterator<Item = WorkloadId> + use<> {
        // Ids are checked to fit 16 bits when the configuration is parsed (MAX_WORKLOADS).
        (0..self.names.len()).map(|i| WorkloadId(i as u16))
    }

    pub fn id(&self, name: &str) -> Option<WorkloadId> {
        self.names
            .iter()
            .position(|n| **n == *name)
            .map(|i| WorkloadId(i as u16))
    }
}

struct CacheEntry {
    assignment: Assignment,
    /// The kernel-reported comm when classified: a different one means exec.
    kernel_comm: [u8; 16],
    last_seen: u64,
}

pub struct Classifier {
    workloads: Vec<WorkloadConfig>,
    other: WorkloadId,
    unmatched: Unmatched,
    proc_root: PathBuf,
    cache: TgidMap<CacheEntry>,
    capacity: usize,
    drain: u64,
    /// The workloads of memory cgroups, for counts the kernel keys by cgroup id.
    owners: crate::memcg::MemcgOwners,
}

/// Drains an entry may go unseen before it is forgotten (so a reused PID is reclassified).
const FORGET_AFTER_DRAINS: u64 = 30;

impl Classifier {
    pub fn new(config: &Config, names: &WorkloadNames) -> Classifier {
        let mut classifier = Classifier::with_proc_root(config, names, Path::new("/proc"));
        classifier.owners = crate::memcg::MemcgOwners::new(config, names);
        classifier
    }

    pub fn with_proc_root(config: &Config, names: &WorkloadNames, proc_root: &Path) -> Classifier {
        Classifier {
            workloads: config.workloads.0.clone(),
            other: names.other(),
            unmatched: config.unmatched,
            proc_root: proc_root.to_owned(),
            cache: TgidMap::default(),
            capacity: config.limits.max_tracked_processes.0 as usize,
            drain: 0,
            owners: crate::memcg::MemcgOwners::with_root(config, names, None),
        }
    }

    /// Processes with a cached classification.
    pub fn tracked(&self) -> usize {
        self.cache.len()
    }

    /// Starts a drain: entries touched from now on count as seen in it.
    pub fn begin_drain(&mut self) {
        self.drain += 1;
        self.owners.begin_drain();
    }

    /// The workload that owns the memory cgroup of cgroup id `id` (see `memcg.rs`).
    pub fn classify_memcg(&mut self, id: u64) -> Assignment {
        self.owners.assign(id)
    }

    /// Ends a drain: forgets stale entries and keeps the cache within its capacity.
    pub fn end_drain(&mut self) {
        let drain = self.drain;
        self.cache
            .retain(|_, entry| drain - entry.last_seen <= FORGET_AFTER_DRAINS);
        if self.cache.len() > self.capacity {
            let mut ages: Vec<(u64, u32)> = self
                .cache
                .iter()
                .map(|(tgid, e)| (e.last_seen, *tgid))
                .collect();
            ages.sort_unstable();
            let excess = self.cache.len() - self.capacity;
            for (_, tgid) in ages.into_iter().take(excess) {
                self.cache.remove(&tgid);
            }
        }
    }

    /// Drops what is cached of a process: it exec'd (classify it afresh) or exited.
    pub fn forget(&mut self, tgid: u32) {
        self.cache.remove(&tgid);
    }

    /// The assignment of process `tgid`; `kernel_comm` is what the kernel recorded for it in
    /// this interval, if anything. For a process the kernel saw exit in this interval
    /// (`exited`), its /proc entry is gone or a zombie's, or its PID already belongs to
    /// another process, so only the kernel's record of its comm is used (and no /proc open is
    /// paid per exited process, which is what a drain of thousands of short-lived processes
    /// spends its time on).
    pub fn classify_process(
        &mut self,
        tgid: u32,
        kernel_comm: Option<&[u8; 16]>,
        exited: bool,
    ) -> Assignment {
        // Tasks outside our PID namespace share one key and no /proc entry of ours.
        if tgid == sidecar_common::OUTSIDE_NAMESPACE_TGID {
            return self.unmatched();
        }
        // What follows the NUL is not the name: task_rename's `newcomm` keeps the old
        // name's tail there, while bpf_get_current_comm zero-fills.
        let kernel_comm = kernel_comm.map(|comm| comm_bytes(Some(&comm_string(comm))));
        let kernel_comm = kernel_comm.as_ref();
        let drain = self.drain;
        if let Some(entry) = self.cache.get_mut(&tgid)
            && kernel_comm.is_none_or(|comm| *comm == entry.kernel_comm)
        {
            entry.last_seen = drain;
            return entry.assignment;
        }
        let facts = if exited {
            ProcessFacts::from_kernel(kernel_comm)
        } else {
            self.read_facts(tgid, kernel_comm)
        };
        let assignment = self.assign(tgid, &facts);
        // The kernel records a process once per life, so most lookups come without its
        // comm; /proc's is the same 15 bytes, and a later record (its exit, a rename) is
        // compared with it.
        let kernel_comm = kernel_comm
            .copied()
            .unwrap_or_else(|| comm_bytes(facts.comm.as_deref()));
        self.cache.insert(
            tgid,
            CacheEntry {
                assignment,
                kernel_comm,
                last_seen: drain,
            },
        );
        assignment
    }

    /// Matches facts against the workloads, first match wins.
    pub fn assign(&self, tgid: u32, facts: &ProcessFacts) -> Assignment {
        for (index, workload) in self.workloads.iter().enumerate() {
            if matches(workload, tgid, facts) {
                return Assignment::Workload(WorkloadId(index as u16));
            }
        }
        self.unmatched()
    }

    const fn unmatched(&self) -> Assignment {
        match self.unmatched {
            Unmatched::Other => Assignment::Workload(self.other),
            Unmatched::Drop => Assignment::Dropped,
        }
    }

    /// /proc first (the process's own comm, not a thread's); the kernel's record of the comm
    /// when the process is already gone.
    fn read_facts(&self, tgid: u32, kernel_comm: Option<&[u8; 16]>) -> ProcessFacts {
        let dir = self.proc_root.join(tgid.to_string());
        let Ok(comm) = fs::read_to_string(dir.join("comm")) else {
            // Gone (most short-lived processes by the time of the drain): the other files
            // are gone too, and trying them costs two more failed opens per process.
            return ProcessFacts::from_kernel(kernel_comm);
        };
        let comm = Some(comm.trim_end_matches('\n').to_owned());
        let cmdline = fs::read(dir.join("cmdline")).ok().map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        });
        let cgroups = fs::read_to_string(dir.join("cgroup")).ok().map(|text| {
            text.lines()
                .filter_map(|line| line.splitn(3, ':').nth(2))
                .map(str::to_owned)
                .collect()
        });
        ProcessFacts {
            comm,
            cmdline,
            cgroups,
        }
    }
}

/// A comm as the kernel keeps it: at most 15 bytes, NUL-padded.
fn comm_bytes(comm: Option<&str>) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if let Some(comm) = comm {
        let len = comm.len().min(15);
        bytes[..len].copy_from_slice(&comm.as_bytes()[..len]);
    }
    bytes
}

/// Every condition the workload gives must hold; a fact we cannot read does not match.
fn matches(workload: &WorkloadConfig, tgid: u32, facts: &ProcessFacts) -> bool {
    if let Some(pids) = &workload.pids
        && !pids.contains(&tgid)
    {
        return false;
    }
    if let Some(pattern) = &workload.comm
        && !facts.comm.as_deref().is_some_and(|c| pattern.0.is_match(c))
    {
        return false;
    }
    if let Some(pattern) = &workload.cmdline
        && !facts
            .cmdline
            .as_deref()
            .is_some_and(|c| pattern.0.is_match(c))
    {
        return false;
    }
    if let Some(needle) = &workload.cgroup
        && !facts
            .cgroups
            .as_ref()
            .is_some_and(|paths| paths.iter().any(|p| p.contains(needle.as_str())))
    {
        return false;
    }
    true
}

/// A kernel comm (NUL-padded) as text.
pub fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Classifier {
        /// A live process, as the tests ask.
        fn classify(&mut self, tgid: u32, kernel_comm: Option<&[u8; 16]>) -> Assignment {
            self.classify_process(tgid, kernel_comm, false)
        }
    }

    fn config(yaml: &str) -> Config {
        Config::parse(yaml, "test").unwrap()
    }

    fn comm(name: &str) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        bytes
    }

    fn fake_proc(root: &Path, tgid: u32, comm: &str, cmdline: &[&str], cgroup: &str) {
        let dir = root.join(tgid.to_string());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        let mut raw = Vec::new();
        for arg in cmdline {
            raw.extend_from_slice(arg.as_bytes());
            raw.push(0);
        }
        fs::write(dir.join("cmdline"), raw).unwrap();
        fs::write(dir.join("cgroup"), cgroup).unwrap();
    }

    const WORKLOADS: &str = r#"
workloads:
  - name: job-worker
    comm: "^job-worker$"
    cmdline: "jobs\\.toml"
  - name: sync-worker
    comm: "^sync"
    cgroup: "/kubepods/pod-sync/"
  - name: pinned
    pids: [42]
"#;

    #[test]
    fn every_condition_must_hold_and_first_match_wins() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_proc(
            root,
            10,
            "job-worker",
            &["job-worker", "--config", "jobs.toml"],
            "0::/\n",
        );
        fake_proc(
            root,
            11,
            "job-worker",
            &["job-worker", "--config", "other.toml"],
            "0::/\n",
        );
        fake_proc(
            root,
            12,
            "sync-worker",
            &["sync"],
            "12:memory:/kubepods/pod-sync/abc\n0::/\n",
        );
        fake_proc(
            root,
            13,
            "sync-worker",
            &["sync"],
            "12:memory:/kubepods/pod-x/abc\n",
        );
        fake_proc(
            root,
            42,
            "job-worker",
            &["job-worker", "jobs.toml"],
            "0::/\n",
        );
        let config = config(WORKLOADS);
        let names = WorkloadNames::from_config(&config);
        let mut classifier = Classifier::with_proc_root(&config, &names, root);
        classifier.begin_drain();
        let id = |n| Assignment::Workload(names.id(n).unwrap());
        assert_eq!(classifier.classify(10, None), id("job-worker"));
        assert_eq!(classifier.classify(11, None), id("other"));
        assert_eq!(classifier.classify(12, None), id("sync-worker"));
        assert_eq!(classifier.classify(13, None), id("other"));
        // Matches job-worker first even though its PID is pinned below.
        assert_eq!(classifier.classify(42, None), id("job-worker"));
        assert_eq!(classifier.tracked(), 5);
    }

    #[test]
    fn a_process_recorded_once_keeps_its_class_until_it_exits() {
        // Recorded by its exec (task_rename's name keeps the old name's tail after the NUL),
        // then counting for intervals without a record, then its exit (a clean name): the
        // cmdline match made from /proc at the start holds to the end.
        let dir = tempfile::tempdir().unwrap();
        fake_proc(
            dir.path(),
            7,
            "wrk",
            &["/bin/load", "--comm", "wrk"],
            "0::/\n",
        );
        let config =
            config("workloads:\n  - name: worker\n    cmdline: \"^/bin/load --comm wrk\"\n");
        let names = WorkloadNames::from_config(&config);
        let mut classifier = Classifier::with_proc_root(&config, &names, dir.path());
        let renamed = *b"wrk\0car-load\0\0\0\0";
        classifier.begin_drain();
        let first = classifier.classify(7, Some(&renamed));
        assert_ne!(first, Assignment::Workload(names.other()));
        classifier.end_drain();
        classifier.begin_drain();
        assert_eq!(classifier.classify(7, None), first);
        classifier.end_drain();
        std::fs::remove_dir_all(dir.path().join("7")).unwrap();
        classifier.begin_drain();
        assert_eq!(
            classifier.classify_process(7, Some(&comm("wrk")), true),
            first
        );
    }

    #[test]
    fn exited_processes_are_classified_by_the_kernel_comm() {
        let dir = tempfile::tempdir().unwrap();
        let config = config("workloads:\n  - name: jobs\n    comm: \"^job\"\n");
        let names = WorkloadNames::from_config(&config);
        let mut classifier = Classifier::with_proc_root(&config, &names, dir.path());
        classifier.begin_drain();
        assert_eq!(
            classifier.classify(7, Some(&comm("job-1"))),
            Assignment::Workload(WorkloadId(0))
        );
        // A condition needing /proc cannot match a process that is gone.
        let config = config_with_cmdline();
        let names = WorkloadNames::from_config(&config);
        let mut classifier = Classifier::with_proc_root(&config, &names, dir.path());
        assert_eq!(
            classifier.classify(7, Some(&comm("job-1"))),
            Assignment::Workload(names.other())
        );
    }

    fn config_with_cmdline() -> Config {
        config("workloads:\n  - name: jobs\n    comm: \"^job\"\n    cmdline: x\n")
    }

    #[test]
    fn a_process_that_exited_is_not_looked_up_in_proc() {
        // PID 7 was reused by a process that matches; the one the kernel saw exit did not.
        let dir = tempfile::tempdir().unwrap();
        fake_proc(dir.path(), 7, "job-new", &["job-new"], "0::/\n");
        let config = config("workloads:\n  - name: jobs\n    comm: \"^job\"\n");
        let names = WorkloadNames::from_config(&config);
        let mut classifier = Classifier::with_proc_root(&config, &names, dir.path());
        classifier.begin_drain();
        assert_eq!(
            classifier.classify_process(7, Some(&comm("sh")), true),
            Assignment::Workload(names.other())
        );
        classifier.forget(7);
        assert_eq!(
            classifier.classify_process(7, Some(&comm("sh")), false),
            Assignment::Workload(WorkloadId(0))
        );
    }

    #[test]
    fn exec_is_reclassified() {
        let dir = tempfile::tempdir().unwrap();
        let config = config("workloads:\n  - name: jobs\n    comm: \"^job\"\n");
        let names = WorkloadNames::from_config(&config);
        let mut classifier = Classifier::with_proc_root(&config, &names, dir.path());
        classifier.begin_drain();
        assert_eq!(
            classifier.classify(7, Some(&comm("sh"))),
            Assignment::Workload(names.other())
        );
        // Cached: no kernel comm this interval.
        assert_eq!(
            classifier.classify(7, None),
            Assignment::Workload(names.other())
        );
        assert_eq!(
            classifier.classify(7, Some(&comm("job-worker"))),
            Assignment::Workload(WorkloadId(0))
        );
    }

    #[test]
    fn processes_outside_the_namespace_are_unmatched() {
        let dir = tempfile::tempdir().unwrap();
        let config = config("workloads:\n  - name: jobs\n    comm: \"^job\"\n");
        let names = WorkloadNames::from_config(&config);
        let mut classifier = Classifier::with_proc_root(&config, &names, dir.path());
        assert_eq!(
            classifier.classify(sidecar_common::OUTSIDE_NAMESPACE_TGID, Some(&comm("job-1"))),
            Assignment::Workload(names.other())
        );
        assert_eq!(classifier.tracked(), 0);
    }

    #[test]
    fn unmatched_drop() {
        let dir = tempfile::tempdir().unwrap();
        let config = config("unmatched: drop\n");
        let names = WorkloadNames::from_config(&config);
        let mut classifier = Classifier::with_proc_root(&config, &names, dir.path());
        assert_eq!(
            classifier.classify(1, Some(&comm("x"))),
            Assignment::Dropped
        );
    }

    #[test]
    fn the_cache_is_bounded_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let config = config("limits:\n  max_tracked_processes: 16\n");
        let names = WorkloadNames::from_config(&config);
        let mut classifier = Classifier::with_proc_root(&config, &names, dir.path());
        classifier.begin_drain();
        for tgid in 0..100 {
            classifier.classify(tgid, None);
        }
        classifier.end_drain();
        assert_eq!(classifier.tracked(), 16);
        for _ in 0..=FORGET_AFTER_DRAINS {
            classifier.begin_drain();
            classifier.end_drain();
        }
        assert_eq!(classifier.tracked(), 0);
    }
}
