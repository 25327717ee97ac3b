//! Capabilities: what loading needs, and giving up what draining does not.
//!
//! Loading and attaching needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, which implies
//! both on the kernels we support); mounting tracefs needs CAP_SYS_ADMIN; raising the
//! memlock limit on old kernels needs CAP_SYS_RESOURCE. Once the programs are attached,
//! draining only uses the map and program file descriptors we already hold. Recent kernels
//! check no capability on those, so every capability is dropped then, from every set,
//! before any other thread exists: a bug in the HTTP or gRPC code can then do no more than
//! an unprivileged process could.
//!
//! Older kernels (Debian 11's 5.10, for one) refuse *every* bpf(2) command with EPERM when
//! `kernel.unprivileged_bpf_disabled` is set (Debian's default) and the caller lacks
//! CAP_BPF/CAP_SYS_ADMIN, map updates on descriptors already held included. Which kind of
//! kernel this is is found by trying, never from its version: [`drop_after_attach`] lowers
//! every capability, runs a drain-like probe, and only when that fails with EPERM keeps
//! CAP_BPF alone (nothing else) for the drainer.

use std::fmt;

/// The capabilities that matter here (bit numbers from linux/capability.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    SysAdmin = 21,
    SysResource = 24,
    Perfmon = 38,
    Bpf = 39,
}

impl Capability {
    pub const ALL: [Capability; 4] = [
        Capability::Bpf,
        Capability::Perfmon,
        Capability::SysAdmin,
        Capability::SysResource,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::SysAdmin => "CAP_SYS_ADMIN",
            Capability::SysResource => "CAP_SYS_RESOURCE",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::Bpf => "CAP_BPF",
        }
    }

    fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

/// A set of capabilities, as in /proc/PID/status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapabilitySet(pub u64);

impl CapabilitySet {
    /// The calling thread's effective set.
    pub fn effective() -> CapabilitySet {
        CapabilitySet(status_mask("CapEff:").unwrap_or(0))
    }

    pub fn has(self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }

    /// Whether programs can be loaded and attached with these capabilities.
    pub fn can_load(self) -> bool {
        self.has(Capability::SysAdmin)
            || (self.has(Capability::Bpf) && self.has(Capability::Perfmon))
    }
}

impl fmt::Display for CapabilitySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let described: Vec<String> = Capability::ALL
            .iter()
            .map(|&c| format!("{} {}", c.name(), if self.has(c) { "yes" } else { "no" }))
            .collect();
        f.write_str(&described.join(", "))
    }
}

fn status_mask(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix(field))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Why the sidecar cannot load its programs, or `None` when it can.
pub fn missing_load_privilege() -> Option<String> {
    let effective = CapabilitySet::effective();
    if effective.can_load() {
        return None;
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    Some(format!(
        "insufficient privilege: loading eBPF programs needs CAP_BPF and CAP_PERFMON (or root); running as uid {uid} with {effective}"
    ))
}

// capset(2) structures, version 3 (two 32-bit words per set).
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapUserHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapUserData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops every capability from the bounding, ambient, inheritable, permitted and effective
/// sets of the calling thread. Call it while the process has a single thread: threads
/// created afterwards inherit the empty sets, threads that already exist would not.
pub fn drop_all() -> std::io::Result<()> {
    drop_all_except(None)
}

/// Like [`drop_all`], but `keep` (when given) stays in the permitted and effective sets.
/// The bounding set is emptied all the same (it only limits what an execve could gain, and
/// emptying it later would need CAP_SETPCAP, which goes now).
pub fn drop_all_except(keep: Option<Capability>) -> std::io::Result<()> {
    // The bounding set first: that needs CAP_SETPCAP, which we are about to give up.
    // Bits past the kernel's last capability give EINVAL: that is the end of the set.
    for capability in 0..64 {
        // SAFETY: prctl with integer arguments.
        let dropped = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) };
        // EINVAL past the kernel's last capability; EPERM without CAP_SETPCAP, in which
        // case the bounding set stays and the other sets still go.
        if dropped != 0 {
            break;
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let kept = keep.map_or(0, Capability::bit);
    capset(kept, kept)
}

/// Sets the effective and permitted sets (inheritable empty).
fn capset(effective: u64, permitted: u64) -> std::io::Result<()> {
    let mut header = CapUserHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |mask: u64, half: u32| (mask >> (32 * half)) as u32;
    let data = [0, 1].map(|half| CapUserData {
        effective: word(effective, half),
        permitted: word(permitted, half),
        inheritable: 0,
    });
    // SAFETY: a v3 header and two data words, as capset(2) expects.
    let result = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What [`drop_after_attach`] left the process with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterAttach {
    /// Every capability is gone and draining works without them.
    DroppedAll,
    /// This kernel checks CAP_BPF on every bpf(2) call: only that one is kept.
    KeptForDrain { kept: Capability, why: String },
}

impl fmt::Display for AfterAttach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AfterAttach::DroppedAll => f.write_str("every capability dropped after attaching"),
            AfterAttach::KeptForDrain { kept, why } => write!(
                f,
                "{} kept, every other capability dropped: {why}",
                kept.name()
            ),
        }
    }
}

/// Gives up every capability once the programs are attached, unless the drain (`probe`,
/// which must make the bpf(2) calls a drain makes) fails without them; then it keeps the
/// one capability the kernel asks for (CAP_BPF, or CAP_SYS_ADMIN on kernels without
/// CAP_BPF) in the permitted and effective sets only: the bounding, inheritable and
/// ambient sets end up empty either way. Call it while the process has a single thread. An error means the drain fails
/// even with that capability: `run` cannot work.
pub fn drop_after_attach<E: std::error::Error + 'static>(
    mut probe: impl FnMut() -> Result<(), E>,
) -> Result<AfterAttach, String> {
    let held = CapabilitySet::effective();
    let keep = if held.has(Capability::Bpf) {
        Capability::Bpf
    } else {
        Capability::SysAdmin
    };
    // Everything but `keep` goes for good; `keep` leaves the effective set for the probe.
    drop_all_except(Some(keep)).map_err(|err| format!("dropping capabilities: {err}"))?;
    capset(0, keep.bit()).map_err(|err| format!("lowering {}: {err}", keep.name()))?;
    let first = match probe() {
        Ok(()) => {
            drop_all().map_err(|err| format!("dropping capabilities: {err}"))?;
            return Ok(AfterAttach::DroppedAll);
        }
        Err(err) => crate::kernel::chain(&err),
    };
    capset(keep.bit(), keep.bit()).map_err(|err| format!("raising {}: {err}", keep.name()))?;
    match probe() {
        Ok(()) => {
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
                .map_or_else(|_| "?".to_owned(), |v| v.trim().to_owned());
            Ok(AfterAttach::KeptForDrain {
                kept: keep,
                why: format!(
                    "without it this kernel refuses the drain's bpf(2) calls \
                     (kernel.unprivileged_bpf_disabled={sysctl}): {first}"
                ),
            })
        }
        Err(err) => Err(format!(
            "the drain fails even with {}: {}",
            keep.name(),
            crate::kernel::chain(&err)
        )),
    }
}

/// The effective, permitted and bounding sets of the calling thread.
pub fn current_sets() -> (CapabilitySet, CapabilitySet, CapabilitySet) {
    (
        CapabilitySet(status_mask("CapEff:").unwrap_or(0)),
        CapabilitySet(status_mask("CapPrm:").unwrap_or(0)),
        CapabilitySet(status_mask("CapBnd:").unwrap_or(0)),
    )
}

/// The account to run as, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// Resolves `privileges.user` and `privileges.group` (names through the system's user
    /// database, which must then exist).
    pub fn resolve(config: &crate::config::PrivilegesConfig) -> Result<RunAs, String> {
        use crate::config::Account;
        let uid = match &config.user {
            Account::Id(id) => *id,
            Account::Name(name) => lookup(name, true)
                .ok_or_else(|| format!("privileges.user: no user {name:?} on this system"))?,
        };
        let gid = match &config.group {
            Account::Id(id) => *id,
            Account::Name(name) => lookup(name, false)
                .ok_or_else(|| format!("privileges.group: no group {name:?} on this system"))?,
        };
        Ok(RunAs { uid, gid })
    }

    pub fn is_root(self) -> bool {
        self.uid == 0
    }
}

/// A user's or group's id by name.
fn lookup(name: &str, user: bool) -> Option<u32> {
    if name == "root" {
        return Some(0);
    }
    let c_name = std::ffi::CString::new(name).ok()?;
    let mut buffer = vec![0 as libc::c_char; 16 << 10];
    // SAFETY: the reentrant lookups with a valid name, an output struct, a buffer of the
    // given length and a result pointer, as getpwnam_r(3) and getgrnam_r(3) describe.
    unsafe {
        if user {
            let mut entry: libc::passwd = std::mem::zeroed();
            let mut result = std::ptr::null_mut();
            let found = libc::getpwnam_r(
                c_name.as_ptr(),
                &raw mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &raw mut result,
            );
            (found == 0 && !result.is_null()).then_some(entry.pw_uid)
        } else {
            let mut entry: libc::group = std::mem::zeroed();
            let mut result = std::ptr::null_mut();
            let found = libc::getgrnam_r(
                c_name.as_ptr(),
                &raw mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &raw mut result,
            );
            (found == 0 && !result.is_null()).then_some(entry.gr_gid)
        }
    }
}

/// Switches the process to `run_as` with no supplementary groups, keeping its capabilities
/// (they are dropped next, by [`drop_after_attach`]): a uid-0 process without capabilities
/// could still read /etc/shadow and write into /etc. Call it while the process has a single
/// thread.
pub fn switch_user(run_as: RunAs) -> std::io::Result<()> {
    let check = |result: libc::c_int| {
        if result == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let (_, permitted, _) = current_sets();
    // SAFETY: prctl, setgroups, setresgid and setresuid with integer arguments (setgroups
    // with an empty list).
    unsafe {
        // Without KEEPCAPS, leaving uid 0 clears the permitted set.
        check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(run_as.gid, run_as.gid, run_as.gid))?;
        check(libc::setresuid(run_as.uid, run_as.uid, run_as.uid))?;
        check(libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0))?;
    }
    // The uid change emptied the effective set; the permitted set is still there.
    capset(permitted.0, permitted.0)
}

/// No execve can ever gain privileges again (setuid binaries, file capabilities).
pub fn no_new_privileges() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Gives `path` and everything in it to `run_as` (the spool, created as root).
pub fn give_to(path: &std::path::Path, run_as: RunAs) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(run_as.uid), Some(run_as.gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            give_to(&entry?.path(), run_as)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_needs_bpf_and_perfmon_or_sys_admin() {
        let bpf = Capability::Bpf.bit();
        let perfmon = Capability::Perfmon.bit();
        assert!(!CapabilitySet(bpf).can_load());
        assert!(CapabilitySet(bpf | perfmon).can_load());
        assert!(CapabilitySet(Capability::SysAdmin.bit()).can_load());
        assert!(!CapabilitySet(0).can_load());
    }

    #[test]
    fn display_names_each_capability() {
        let text = CapabilitySet(Capability::Bpf.bit()).to_string();
        assert!(text.starts_with("CAP_BPF yes, CAP_PERFMON no"), "{text}");
    }
}
