//! Which workload owns a memory cgroup: the kernel reports page-cache counts by cgroup id
//! (the inode number of the cgroup's directory in the memory controller's hierarchy), and
//! a workload claims the cgroups whose path its `cgroup` condition matches.
//!
//! The path is relative to the hierarchy's mount, as /proc/PID/cgroup shows it, so one
//! `cgroup` condition means the same thing for a process and for the pages it owns. Only a
//! workload whose one condition is `cgroup` owns memory cgroups: comm, cmdline and pids are
//! about processes and say nothing about a page, and a workload that adds them to a broad
//! `cgroup` ("kubepods" and a comm, say) means some processes of those cgroups, not every
//! page charged there.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::{
    config::{Config, Unmatched, WorkloadConfig},
    workload::{Assignment, WorkloadId, WorkloadNames},
};

/// Directories visited per walk at most: a walk is paid on a drain that meets an unknown
/// cgroup id, so a host with a huge hierarchy costs a bounded amount per drain.
const WALK_LIMIT: usize = 100_000;

/// Assignments of cgroup ids kept; past it the cache starts over (ids are never reused, so
/// a stale entry is only ever a deleted cgroup's).
const CACHE_LIMIT: usize = 65_536;

pub struct MemcgOwners {
    workloads: Vec<WorkloadConfig>,
    other: WorkloadId,
    unmatched: Unmatched,
    /// The memory controller's mount, or why there is none (looked up once).
    root: Option<PathBuf>,
    cache: HashMap<u64, Assignment>,
    /// The drain in which the hierarchy was last walked: at most one walk per drain.
    walked_in: Option<u64>,
    drain: u64,
}

impl MemcgOwners {
    pub fn new(config: &Config, names: &WorkloadNames) -> MemcgOwners {
        MemcgOwners::with_root(config, names, memory_hierarchy_root())
    }

    pub fn with_root(config: &Config, names: &WorkloadNames, root: Option<PathBuf>) -> MemcgOwners {
        MemcgOwners {
            workloads: config.workloads.0.clone(),
            other: names.other(),
            unmatched: config.unmatched,
            root,
            cache: HashMap::new(),
            walked_in: None,
            drain: 0,
        }
    }

    pub fn begin_drain(&mut self) {
        self.drain += 1;
    }

    /// The workload that owns memory cgroup `id` (0: a page charged to no cgroup).
    pub fn assign(&mut self, id: u64) -> Assignment {
        if let Some(assignment) = self.cache.get(&id) {
            return *assignment;
        }
        if id == 0 || self.root.is_none() || self.walked_in == Some(self.drain) {
            // Unknown until the next walk: counted as unmatched this time, not cached.
            return self.unmatched();
        }
        self.walk();
        self.cache
            .get(&id)
            .copied()
            .unwrap_or_else(|| self.unmatched())
    }

    /// Assigns every cgroup of the hierarchy.
    fn walk(&mut self) {
        self.walked_in = Some(self.drain);
        let Some(root) = self.root.clone() else {
            return;
        };
        if self.cache.len() > CACHE_LIMIT {
            self.cache.clear();
        }
        let mut stack = vec![(root, String::from("/"))];
        let mut visited = 0;
        while let Some((dir, path)) = stack.pop() {
            visited += 1;
            if visited > WALK_LIMIT {
                tracing::warn!(
                    "memcg: more than {WALK_LIMIT} memory cgroups; the rest are unmatched until the next walk"
                );
                break;
            }
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            let assignment = self.match_path(&path);
            self.cache.insert(meta.ino(), assignment);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let child = if path == "/" {
                        format!("/{name}")
                    } else {
                        format!("{path}/{name}")
                    };
                    stack.push((entry.path(), child));
                }
            }
        }
    }

    /// The first workload defined by its cgroup alone whose `cgroup` condition the path
    /// contains.
    fn match_path(&self, path: &str) -> Assignment {
        self.workloads
            .iter()
            .position(|w| {
                let by_cgroup_alone = w.comm.is_none() && w.cmdline.is_none() && w.pids.is_none();
                by_cgroup_alone
                    && w.cgroup
                        .as_deref()
                        .is_some_and(|needle| path.contains(needle))
            })
            .map_or_else(
                || self.unmatched(),
                |index| Assignment::Workload(WorkloadId(index as u16)),
            )
    }

    const fn unmatched(&self) -> Assignment {
        match self.unmatched {
            Unmatched::Other => Assignment::Workload(self.other),
            Unmatched::Drop => Assignment::Dropped,
        }
    }
}

/// The memory controller's hierarchy: v1's `memory` mount if there is one (a host booted
/// with v1 keeps its memory cgroups there), else the cgroup2 mount.
pub fn memory_hierarchy_root() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut v2 = None;
    for line in mounts.lines() {
        let Some((fields, rest)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = fields.split_whitespace().nth(4) else {
            continue;
        };
        let mut rest = rest.split_whitespace();
        let fs_type = rest.next().unwrap_or_default();
        let options = rest.nth(1).unwrap_or_default();
        if fs_type == "cgroup" && options.split(',').any(|o| o == "memory") {
            return Some(PathBuf::from(mount_point));
        }
        if fs_type == "cgroup2" && v2.is_none() {
            v2 = Some(PathBuf::from(mount_point));
        }
    }
    v2.filter(|root: &PathBuf| Path::new(root).is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_are_owned_by_the_first_cgroup_only_workload_that_matches() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("kubepods/pod-a/inner")).unwrap();
        fs::create_dir_all(root.join("kubepods/pod-b")).unwrap();
        fs::create_dir_all(root.join("system.slice")).unwrap();
        let config = Config::parse(
            r#"
workloads:
  - name: by-comm
    comm: "^x$"
  - name: comm-in-pods
    comm: "^x$"
    cgroup: "/kubepods/"
  - name: a
    cgroup: "/kubepods/pod-a"
  - name: pods
    cgroup: "/kubepods/"
unmatched: other
"#,
            "test.yaml",
        )
        .unwrap();
        let names = WorkloadNames::from_config(&config);
        let mut owners = MemcgOwners::with_root(&config, &names, Some(root.to_owned()));
        owners.begin_drain();
        let ino = |p: &str| fs::metadata(root.join(p)).unwrap().ino();
        let named = |a: Assignment| match a {
            Assignment::Workload(id) => names.name(id).to_owned(),
            Assignment::Dropped => "(dropped)".to_owned(),
        };
        assert_eq!(named(owners.assign(ino("kubepods/pod-a/inner"))), "a");
        assert_eq!(named(owners.assign(ino("kubepods/pod-b"))), "pods");
        assert_eq!(named(owners.assign(ino("system.slice"))), "other");
        assert_eq!(named(owners.assign(0)), "other");
        // A cgroup made after the walk is found by the next drain's walk.
        fs::create_dir_all(root.join("kubepods/pod-a/late")).unwrap();
        assert_eq!(named(owners.assign(ino("kubepods/pod-a/late"))), "other");
        owners.begin_drain();
        assert_eq!(named(owners.assign(ino("kubepods/pod-a/late"))), "a");
    }
}
