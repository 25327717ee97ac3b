//! A memory cgroup with a limit, for forcing reclaim on a reader: v1's
//! `memory.limit_in_bytes` or v2's `memory.max`, made for one run and removed on drop.

use std::{
    ffi::CString,
    fs, io,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

/// Where memory cgroups can be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// A cgroup2 mount whose `cgroup.controllers` offers `memory`.
    V2(PathBuf),
    /// The v1 memory controller's mount.
    V1(PathBuf),
}

impl Hierarchy {
    /// The v1 memory controller at /sys/fs/cgroup/memory if mounted there (hosts booted
    /// with v1, such as Amazon Linux 2), else the first cgroup2 mount with the memory
    /// controller.
    pub fn find() -> Option<Hierarchy> {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        if v1.join("memory.limit_in_bytes").exists() {
            return Some(Hierarchy::V1(v1.to_owned()));
        }
        cgroup2_with_memory().map(Hierarchy::V2)
    }

    pub fn version(&self) -> u8 {
        match self {
            Hierarchy::V2(_) => 2,
            Hierarchy::V1(_) => 1,
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Hierarchy::V2(_) => "cgroup v2 memory.max",
            Hierarchy::V1(_) => "cgroup v1 memory.limit_in_bytes",
        }
    }

    fn root(&self) -> &Path {
        match self {
            Hierarchy::V2(root) | Hierarchy::V1(root) => root,
        }
    }
}

fn cgroup2_with_memory() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (_, rest) = line.split_once(" - ")?;
        if !rest.starts_with("cgroup2 ") {
            return None;
        }
        let mount_point = PathBuf::from(line.split_whitespace().nth(4)?);
        let controllers = fs::read_to_string(mount_point.join("cgroup.controllers")).ok()?;
        controllers
            .split_whitespace()
            .any(|c| c == "memory")
            .then_some(mount_point)
    })
}

/// A memory cgroup made for one run; removed when dropped.
#[derive(Debug)]
pub struct MemoryCgroup {
    path: PathBuf,
    hierarchy: Hierarchy,
}

impl MemoryCgroup {
    /// `name` with a limit of `limit_bytes`, under [`Hierarchy::find`].
    pub fn create(name: &str, limit_bytes: u64) -> io::Result<MemoryCgroup> {
        let hierarchy = Hierarchy::find().ok_or_else(|| {
            io::Error::other("no memory cgroup: neither v1's memory controller nor cgroup2 with it")
        })?;
        MemoryCgroup::create_in(&hierarchy, name, limit_bytes)
    }

    /// `name` with a limit of `limit_bytes`, directly under `hierarchy`'s root.
    pub fn create_in(
        hierarchy: &Hierarchy,
        name: &str,
        limit_bytes: u64,
    ) -> io::Result<MemoryCgroup> {
        let context = |what: String| {
            move |err: io::Error| io::Error::new(err.kind(), format!("{what}: {err}"))
        };
        let root = hierarchy.root();
        if let Hierarchy::V2(_) = hierarchy {
            // Children get the controller only when their parent delegates it; a root that
            // already does (or refuses, having processes of its own) is left as it is.
            let _ = fs::write(root.join("cgroup.subtree_control"), "+memory");
        }
        let path = root.join(name);
        fs::create_dir(&path).map_err(context(format!("creating {}", path.display())))?;
        let cgroup = MemoryCgroup {
            path,
            hierarchy: hierarchy.clone(),
        };
        let file = match hierarchy {
            Hierarchy::V2(_) => "memory.max",
            Hierarchy::V1(_) => "memory.limit_in_bytes",
        };
        fs::write(cgroup.path.join(file), limit_bytes.to_string())
            .map_err(context(format!("setting {}/{file}", cgroup.path.display())))?;
        if let Hierarchy::V2(_) = hierarchy {
            // Swap would let the reader avoid reclaiming its page cache.
            let _ = fs::write(cgroup.path.join("memory.swap.max"), "0");
        }
        Ok(cgroup)
    }

    /// A cgroup inside this one, without a limit of its own: its pages count against this
    /// cgroup's limit, and this cgroup's reclaim takes them. Dropped before its parent.
    pub fn child(&self, name: &str) -> io::Result<MemoryCgroup> {
        if let Hierarchy::V1(_) = self.hierarchy {
            // Before 5.11 a v1 child counts against its parent's limit only with this, set
            // before the first child exists; later kernels always do it and accept the write.
            let _ = fs::write(self.path.join("memory.use_hierarchy"), "1");
        }
        if let Hierarchy::V2(_) = self.hierarchy {
            fs::write(self.path.join("cgroup.subtree_control"), "+memory").map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("delegating memory below {}: {err}", self.path.display()),
                )
            })?;
        }
        let path = self.path.join(name);
        fs::create_dir(&path).map_err(|err| {
            io::Error::new(err.kind(), format!("creating {}: {err}", path.display()))
        })?;
        Ok(MemoryCgroup {
            path,
            hierarchy: self.hierarchy.clone(),
        })
    }

    /// The path workloads' `cgroup` conditions and /proc/PID/cgroup use: relative to the
    /// hierarchy's root, with a leading slash.
    pub fn cgroup_path(&self) -> String {
        let relative = self
            .path
            .strip_prefix(self.hierarchy.root())
            .unwrap_or(&self.path);
        format!("/{}", relative.display())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Makes `command` start inside this cgroup: its child joins between fork and exec, so
    /// that everything the program does is charged here.
    pub fn enter(&self, command: &mut Command) -> io::Result<()> {
        let procs = CString::new(
            self.path
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .map_err(|_| io::Error::other("a NUL byte in the cgroup's path"))?;
        // SAFETY: between fork and exec only async-signal-safe calls: open, write, close.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                let error = io::Error::last_os_error();
                libc::close(fd);
                if written != 1 {
                    return Err(error);
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// What the limit did: v1's `memory.failcnt` or v2's `memory.events`, as the kernel
    /// wrote it.
    pub fn stat(&self) -> String {
        let file = match self.hierarchy {
            Hierarchy::V2(_) => "memory.events",
            Hierarchy::V1(_) => "memory.failcnt",
        };
        fs::read_to_string(self.path.join(file))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The last member has exited, but its page cache may stay charged for a moment,
        // and v1 refuses to remove a cgroup that still holds charges.
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            if let Hierarchy::V1(_) = self.hierarchy {
                let _ = fs::write(self.path.join("memory.force_empty"), "0");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove the memory cgroup {}", self.path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As root with a memory controller: a child started inside is listed as a member.
    #[test]
    fn a_child_starts_inside_and_the_cgroup_goes_on_drop() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let Some(hierarchy) = Hierarchy::find().filter(|_| root) else {
            eprintln!("SKIP: not root, or no memory controller");
            return;
        };
        let name = format!("sidecar-testkit-{}", std::process::id());
        let cgroup = MemoryCgroup::create_in(&hierarchy, &name, 64 << 20).expect("create");
        let mut command = Command::new("cat");
        command.arg("/proc/self/cgroup");
        cgroup.enter(&mut command).expect("enter");
        let output = command.output().expect("cat");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(&name), "{text}");
        let path = cgroup.path().to_owned();
        drop(cgroup);
        assert!(!path.exists());
    }
}
