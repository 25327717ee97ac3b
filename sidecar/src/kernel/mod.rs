//! Everything that talks to the kernel: tracefs, loading and attaching the programs, and
//! draining their maps. Nothing outside this module touches a BPF map.

mod batch;
mod btf;
mod drain;
pub mod modules;
pub mod sizing;
#[cfg(test)]
mod spec_check;
pub mod tracefs;

use std::{
    collections::BTreeMap,
    fs,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, ArrayOfMaps, Map, MapData},
    programs::{BtfTracePoint, FExit, ProgramError, RawTracePoint, TracePoint},
};
use sidecar_common::{
    FadviseLayout, FilemapLayout, InodeLayout, IoLayout, OwnerLayout, PidNamespace, ProcessLayout,
    ReadHookLayout, SyscallReadLayout, VmscanLayout, global_names, map_names,
};

pub use self::drain::{KernelDelta, ProgramStats};
use self::{
    drain::EpochMaps,
    modules::{
        Candidate, Hook, Layouts, MemcgHook, Module, PROCESS_PROGRAMS, ProgramSpec, ReadHook,
    },
};

/// The eBPF object, built by `cargo xtask build-ebpf` and embedded by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SIDECAR_EBPF_OBJECT"));

/// The eBPF object the sidecar loads; `sidecar-load bpf-cost` loads its empty programs from it.
pub fn ebpf_object() -> &'static [u8] {
    EBPF_OBJECT
}

/// What became of a module at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleState {
    /// Turned off in the configuration.
    Disabled,
    /// All its programs are attached and counting.
    Attached,
    /// Loaded and verified but not attached (`sidecar check`).
    Verified,
    /// This kernel lacks a tracepoint or field the module needs.
    Unavailable(String),
    /// The kernel refused a program (verifier, attach, privileges).
    Failed(String),
}

impl ModuleState {
    pub const fn label(&self) -> &'static str {
        match self {
            ModuleState::Disabled => "disabled",
            ModuleState::Attached => "attached",
            ModuleState::Verified => "verified",
            ModuleState::Unavailable(_) => "unavailable",
            ModuleState::Failed(_) => "failed",
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            ModuleState::Unavailable(err) | ModuleState::Failed(err) => Some(err),
            _ => None,
        }
    }

    pub const fn is_usable(&self) -> bool {
        matches!(self, ModuleState::Attached | ModuleState::Verified)
    }
}

/// A failure of a kernel call. Every message names the map (or program) it concerns and
/// ends with the kernel's errno, e.g. `... bpf_map_update_elem failed: Invalid argument (os
/// error 22, EINVAL)`: the causes are part of the text, since logs print only the top error.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("loading the eBPF object: {}", chain(.0))]
    Load(aya::EbpfError),
    #[error("map {name}: {}", chain(.error))]
    Map {
        name: &'static str,
        error: aya::maps::MapError,
    },
    #[error("map {name} is missing from the eBPF object")]
    MissingMap { name: &'static str },
    #[error("map {name}: {message}")]
    MapShape { name: &'static str, message: String },
    #[error("draining {name}: {}", chain(.error))]
    Drain {
        name: &'static str,
        error: std::io::Error,
    },
    #[error("switching the epoch ({how}): {}", chain(.error))]
    Switch { how: String, error: std::io::Error },
}

impl From<aya::EbpfError> for KernelError {
    fn from(err: aya::EbpfError) -> Self {
        KernelError::Load(err)
    }
}

/// An error and all its causes on one line, with the symbolic name of an errno appended:
/// `Invalid argument (os error 22)` becomes `Invalid argument (os error 22, EINVAL)`.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = next {
        if !text.is_empty() {
            text.push_str(": ");
        }
        let own = cause.to_string();
        match cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            Some(errno) => text.push_str(&with_errno_name(&own, errno)),
            None => text.push_str(&own),
        }
        next = cause.source();
    }
    text
}

fn with_errno_name(text: &str, errno: i32) -> String {
    let name = errno_name(errno);
    let tag = format!("(os error {errno})");
    if text.contains(&tag) {
        text.replace(&tag, &format!("(os error {errno}, {name})"))
    } else {
        format!("{text} (errno {errno}, {name})")
    }
}

/// Symbolic names of the errnos the bpf(2) syscall returns.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        // The kernel-internal ENOTSUPP leaks out of bpf(2) on some paths.
        524 => "ENOTSUPP",
        _ => "errno",
    }
}

/// How to size and what to load.
#[derive(Clone, Debug)]
pub struct KernelOptions {
    pub modules: BTreeMap<Module, bool>,
    pub max_tracked_processes: u32,
    pub max_tracked_threads: u32,
    /// Attach the programs (`run`), or only load and verify them (`check`).
    pub attach: bool,
    /// The PID namespace processes are reported in.
    pub pid_namespace: PidNamespace,
    /// Switch on the kernel's BPF run-time statistics while the sidecar runs.
    pub bpf_stats: bool,
}

/// The loaded programs and their maps.
pub struct Kernel {
    ebpf: Ebpf,
    epoch: EpochSwitch,
    epochs: [EpochMaps; 2],
    gauges: drain::DrainableMap,
    /// Processes recorded once per life (see `note_process` in the eBPF crate).
    processes_seen: drain::DrainableMap,
    modules: BTreeMap<Module, ModuleState>,
    /// What each usable module's programs attach to on this kernel (`describe_hooks`).
    hooks: BTreeMap<Module, String>,
    process_tracking: ModuleState,
    map_bytes: u64,
    /// Keeps the kernel's BPF run-time statistics on while we live.
    _stats: Option<OwnedFd>,
    stats_error: Option<String>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl Kernel {
    /// Loads the object, then each wanted module on its own: a module whose tracepoints are
    /// missing or whose programs the kernel refuses is reported and the others still load.
    pub fn load(options: &KernelOptions, layouts: &Layouts) -> Result<Kernel, KernelError> {
        raise_memlock_limit();
        let wanted = |module: Module| options.modules.get(&module).copied().unwrap_or(false);
        let usable = |module: Module| wanted(module) && layouts.error(module).is_none();

        // Sizes: modules that will not run get the smallest maps.
        let processes = options.max_tracked_processes;
        let threads = options.max_tracked_threads;
        let size_for = |module: Module, size: u32| if usable(module) { size } else { 1 };
        let mut sizes: Vec<(&'static str, u32)> = Vec::new();
        for epoch in 0..2 {
            sizes.push((
                map_names::FADVISE_COUNTS[epoch],
                size_for(Module::Fadvise, processes),
            ));
            sizes.push((
                map_names::PAGE_CACHE_COUNTS[epoch],
                size_for(Module::PageCache, processes),
            ));
            sizes.push((
                map_names::RECLAIM_COUNTS[epoch],
                size_for(Module::Vmscan, processes),
            ));
            sizes.push((
                map_names::IO_COUNTS[epoch],
                size_for(
                    Module::Io,
                    processes.saturating_mul(sizing::IO_ENTRIES_PER_PROCESS),
                ),
            ));
            sizes.push((map_names::PROCESSES[epoch], processes));
        }
        sizes.push((map_names::PROCESSES_SEEN, processes));
        sizes.push((
            map_names::FADVISE_IN_FLIGHT,
            size_for(Module::Fadvise, threads),
        ));
        sizes.push((map_names::READ_STATE, size_for(Module::PageCache, threads)));
        // Only the syscall fallback pairs enter and exit events.
        let syscall_reads = matches!(
            layouts.read_hook,
            ReadHook::Chain {
                syscalls: Some(_),
                ..
            }
        );
        sizes.push((
            map_names::READ_IN_FLIGHT,
            if syscall_reads {
                size_for(Module::PageCache, threads)
            } else {
                1
            },
        ));
        sizes.push((
            map_names::RECLAIM_IN_FLIGHT,
            size_for(Module::Vmscan, threads),
        ));
        sizes.push((map_names::IO_IN_FLIGHT, size_for(Module::Io, threads)));
        for epoch in 0..2 {
            sizes.push((
                map_names::OWNER_COUNTS[epoch],
                size_for(Module::Memcg, processes),
            ));
        }

        let mut fadvise_layout = layouts
            .fadvise
            .as_ref()
            .map_or(FadviseLayout::UNSET, |l| *l);
        layouts.fadvise_hook.apply(&mut fadvise_layout);
        let filemap_layout = layouts
            .filemap
            .as_ref()
            .map_or(FilemapLayout::UNSET, |l| *l);
        let vmscan_layout = layouts.vmscan.as_ref().map_or(VmscanLayout::UNSET, |l| *l);
        let mut process_layout = layouts
            .process
            .as_ref()
            .map_or(ProcessLayout::UNSET, |l| *l);
        if let Ok(leader_comm) = &layouts.leader_comm {
            leader_comm.apply(&mut process_layout);
        }
        let inode_layout = layouts.inode.as_ref().map_or(InodeLayout::UNSET, |l| *l);
        let (read_hook_layout, syscall_read_layout) = match &layouts.read_hook {
            ReadHook::Chain {
                fexit, syscalls, ..
            } => (
                fexit.as_ref().map_or(ReadHookLayout::UNSET, |(_, l)| *l),
                syscalls.unwrap_or(SyscallReadLayout::UNSET),
            ),
            _ => (ReadHookLayout::UNSET, SyscallReadLayout::UNSET),
        };
        let io_layout = layouts
            .io
            .as_ref()
            .map_or(IoLayout::UNSET, |hook| hook.layout);
        let owner_layout = layouts
            .memcg
            .as_ref()
            .map_or(OwnerLayout::UNSET, |hook| hook.layout);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(global_names::FADVISE_LAYOUT, &fadvise_layout, true)
            .override_global(global_names::FILEMAP_LAYOUT, &filemap_layout, true)
            .override_global(global_names::VMSCAN_LAYOUT, &vmscan_layout, true)
            .override_global(global_names::PROCESS_LAYOUT, &process_layout, true)
            .override_global(global_names::PID_NAMESPACE, &options.pid_namespace, true)
            .override_global(global_names::INODE_LAYOUT, &inode_layout, true)
            .override_global(global_names::IO_LAYOUT, &io_layout, true)
            .override_global(global_names::OWNER_LAYOUT, &owner_layout, true)
            .override_global(global_names::READ_HOOK_LAYOUT, &read_hook_layout, true)
            .override_global(
                global_names::SYSCALL_READ_LAYOUT,
                &syscall_read_layout,
                true,
            );
        for (name, size) in &sizes {
            loader.map_max_entries(name, *size);
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;

        let mut epoch = EpochSwitch::new(&mut ebpf)?;
        epoch.arm()?;
        let epochs = [
            EpochMaps::take(&mut ebpf, 0)?,
            EpochMaps::take(&mut ebpf, 1)?,
        ];
        let gauges = drain::DrainableMap::take_gauges(&mut ebpf)?;
        let processes_seen = drain::DrainableMap::take_processes_seen(&mut ebpf)?;

        let mut modules = BTreeMap::new();
        let mut hooks = BTreeMap::new();
        for module in Module::ALL {
            let state = if !wanted(module) {
                ModuleState::Disabled
            } else if let Some(err) = layouts.error(module) {
                ModuleState::Unavailable(err.to_string())
            } else {
                let candidates = match module {
                    Module::PageCache => {
                        if let (ReadHook::Tracepoint, Err(why)) =
                            (&layouts.read_hook, &layouts.inode)
                        {
                            tracing::warn!(
                                "page_cache: file sizes not located through BTF ({why}); reads past the end of a file count the pages asked for"
                            );
                        }
                        layouts.read_hook.candidates()
                    }
                    Module::Fadvise => layouts.fadvise_hook.candidates(layouts.fadvise.is_ok()),
                    Module::Io => {
                        let hook = layouts.io.as_ref().map(|hook| {
                            if let Some(why) = &hook.folio_error {
                                tracing::warn!(
                                    "io: a folio's size is not located through BTF ({why}); a large folio dirtied counts one page"
                                );
                            }
                            hook.candidates()
                        });
                        hook.unwrap_or_default()
                    }
                    Module::Memcg => layouts
                        .memcg
                        .as_ref()
                        .map(MemcgHook::candidates)
                        .unwrap_or_default(),
                    _ => vec![Candidate {
                        programs: module.programs().to_vec(),
                        hook: "tracepoint".to_owned(),
                    }],
                };
                // The first set of programs the kernel accepts; the errors of the others
                // are reported when none is.
                let mut errors = Vec::new();
                let mut state = None;
                for candidate in &candidates {
                    match start_programs(&mut ebpf, &candidate.programs, options.attach) {
                        Ok(()) => {
                            hooks.insert(module, candidate.hook.clone());
                            state = Some(if options.attach {
                                ModuleState::Attached
                            } else {
                                ModuleState::Verified
                            });
                            break;
                        }
                        Err(err) => {
                            if candidates.len() > 1 {
                                tracing::info!(
                                    module = module.name(),
                                    "{err}; trying the next hook"
                                );
                            }
                            errors.push(err);
                        }
                    }
                }
                state.unwrap_or_else(|| ModuleState::Failed(errors.join("; ")))
            };
            modules.insert(module, state);
        }
        let process_tracking = if !modules.values().any(ModuleState::is_usable) {
            ModuleState::Disabled
        } else if let Err(err) = &layouts.process {
            ModuleState::Unavailable(err.to_string())
        } else {
            match start_programs(&mut ebpf, &PROCESS_PROGRAMS, options.attach) {
                Ok(()) if options.attach => ModuleState::Attached,
                Ok(()) => ModuleState::Verified,
                Err(err) => ModuleState::Failed(err),
            }
        };

        let (stats, stats_error) = if options.bpf_stats {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => (Some(fd), None),
                Err(err) => (None, Some(err.to_string())),
            }
        } else {
            (None, None)
        };
        let logger = aya_log::EbpfLogger::init_with_logger(&mut ebpf, log::logger()).ok();
        let map_bytes = map_memory_bytes(&ebpf, &epochs, &[&gauges, &processes_seen]);

        Ok(Kernel {
            ebpf,
            epoch,
            epochs,
            gauges,
            processes_seen,
            modules,
            hooks,
            process_tracking,
            map_bytes,
            _stats: stats,
            stats_error,
            logger,
        })
    }

    /// Makes the bpf(2) calls a drain starts with (the epoch switch, there and back) and
    /// nothing else: whether draining works with the privileges the process holds now.
    /// Whatever programs count meanwhile stays in the maps for the next drains.
    pub fn probe_drain(&mut self) -> Result<(), KernelError> {
        self.epoch.switch()?;
        self.epoch.switch()?;
        Ok(())
    }

    /// How epochs are switched on this kernel, and why the preferred way was not used.
    pub fn switch_method(&self) -> (SwitchMethod, Option<&str>) {
        (self.epoch.method, self.epoch.slot_error.as_deref())
    }

    pub fn modules(&self) -> &BTreeMap<Module, ModuleState> {
        &self.modules
    }

    /// What each usable module's programs attach to on this kernel.
    pub fn hooks(&self) -> &BTreeMap<Module, String> {
        &self.hooks
    }

    /// Whether process life-cycle events (rename, exec, exit) reach the classifier.
    pub const fn process_tracking(&self) -> &ModuleState {
        &self.process_tracking
    }

    /// Kernel memory held by our maps (the kernel's own accounting, `memlock` in fdinfo).
    pub const fn map_bytes(&self) -> u64 {
        self.map_bytes
    }

    /// Why BPF run-time statistics are unavailable, if they are.
    pub fn stats_error(&self) -> Option<&str> {
        self.stats_error.as_deref()
    }

    /// The aya-log reader for the programs' log records; poll it when readable.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// Takes everything counted since the previous drain and leaves the kernel maps of that
    /// interval empty. Blocks for an RCU grace period: call it off async worker threads.
    pub fn drain(&mut self) -> Result<KernelDelta, KernelError> {
        let started = std::time::Instant::now();
        let retired = self.epoch.switch()?;
        let switch_duration = started.elapsed();
        let attached = |module| self.modules.get(&module) == Some(&ModuleState::Attached);
        let mut delta = self.epochs[retired].drain(attached)?;
        delta.direct_reclaim_in_progress = self.gauges.sum_gauge()?;
        // Without the exit tracepoint nothing removes a process from PROC_SEEN, and a PID
        // reused by another program would never be recorded: then every interval records
        // its processes afresh, as if each were new.
        if self.process_tracking != ModuleState::Attached {
            self.processes_seen.clear()?;
        }
        delta.programs = self.program_stats();
        delta.switch_duration = switch_duration;
        delta.drain_duration = started.elapsed();
        Ok(delta)
    }

    fn program_stats(&self) -> Vec<ProgramStats> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some(ProgramStats {
                    name: name.to_owned(),
                    run_time: info.run_time(),
                    run_count: info.run_count(),
                })
            })
            .collect()
    }
}

/// Loads (verifies) and optionally attaches programs; on any failure, unloads the ones
/// already done so that a module is all or nothing.
/// Loads (verifies) one program for its hook and optionally attaches it. A program already
/// loaded is attached again (one classic tracepoint program on several events).
pub fn start_program(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
    attach: bool,
) -> Result<(), ProgramError> {
    let program = ebpf
        .program_mut(spec.program)
        .ok_or(ProgramError::UnexpectedProgramType)?;
    match spec.hook {
        Hook::Tracepoint => {
            let program: &mut TracePoint = program.try_into()?;
            if program.fd().is_err() {
                program.load()?;
            }
            if attach {
                program.attach(spec.category, spec.event)?;
            }
        }
        Hook::RawTracepoint => {
            let program: &mut RawTracePoint = program.try_into()?;
            if program.fd().is_err() {
                program.load()?;
            }
            if attach {
                program.attach(spec.event)?;
            }
        }
        Hook::FExit => {
            let program: &mut FExit = program.try_into()?;
            program.load(spec.event, &aya::Btf::from_sys_fs()?)?;
            if attach {
                program.attach()?;
            }
        }
        Hook::BtfTracepoint => {
            let program: &mut BtfTracePoint = program.try_into()?;
            program.load(spec.event, &aya::Btf::from_sys_fs()?)?;
            if attach {
                program.attach()?;
            }
        }
    }
    Ok(())
}

fn start_programs(ebpf: &mut Ebpf, programs: &[ProgramSpec], attach: bool) -> Result<(), String> {
    let mut done: Vec<&'static str> = Vec::new();
    let mut result = Ok(());
    for spec in programs {
        let step = start_program(ebpf, spec, attach);
        match step {
            Ok(()) => done.push(spec.program),
            Err(err) => {
                result = Err(format!(
                    "program {} on {} {}: {}",
                    spec.program,
                    spec.hook.label(),
                    spec.target(),
                    error_chain(&err)
                ));
                // A program that loaded but did not attach is unloaded too.
                if let Some(program) = ebpf.program_mut(spec.program) {
                    unload(program);
                }
                break;
            }
        }
    }
    if result.is_err() {
        for name in done {
            if let Some(program) = ebpf.program_mut(name) {
                unload(program);
            }
        }
    }
    result
}

fn unload(program: &mut aya::programs::Program) {
    if let Ok(program) = <&mut TracePoint>::try_from(&mut *program) {
        let _ = program.unload();
    } else if let Ok(program) = <&mut RawTracePoint>::try_from(&mut *program) {
        let _ = program.unload();
    } else if let Ok(program) = <&mut FExit>::try_from(&mut *program) {
        let _ = program.unload();
    } else if let Ok(program) = <&mut BtfTracePoint>::try_from(program) {
        let _ = program.unload();
    }
}

/// An error and its causes on one line (the verifier log can be long: keep its last lines).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let text = chain(err);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() > 6 {
        format!("{} ... {}", lines[0], lines[lines.len() - 5..].join(" | "))
    } else {
        lines.join(" | ")
    }
}

/// The PID namespace the sidecar runs in: processes are reported as it sees them. In the
/// initial namespace (a host process, a DaemonSet with hostPID) nothing is translated.
pub fn own_pid_namespace() -> std::io::Result<PidNamespace> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::metadata("/proc/self/ns/pid")?;
    if meta.ino() == PidNamespace::INIT_INO {
        return Ok(PidNamespace::HOST);
    }
    let dev = meta.dev();
    // The helper compares with the kernel's dev_t encoding, not the one stat(2) returns.
    let kernel_dev = (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev));
    Ok(PidNamespace {
        dev: kernel_dev,
        ino: meta.ino(),
        translate: 1,
        _pad: 0,
    })
}

/// Older kernels charge BPF memory to RLIMIT_MEMLOCK; newer ones to the memory cgroup.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit; failure only matters on old kernels and shows up at load time.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) };
}

fn map_memory_bytes(ebpf: &Ebpf, epochs: &[EpochMaps; 2], others: &[&drain::DrainableMap]) -> u64 {
    let remaining = ebpf.maps().map(|(_, map)| map_fd_memlock(map));
    let drained = epochs
        .iter()
        .flat_map(EpochMaps::raw_fds)
        .chain(others.iter().map(|map| map.raw_fd()))
        .map(fd_memlock);
    remaining.chain(drained).sum()
}

fn map_fd_memlock(map: &Map) -> u64 {
    let data: &MapData = match map {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::RingBuf(d) => d,
        _ => return 0,
    };
    fd_memlock(data.fd().as_fd().as_raw_fd())
}

fn fd_memlock(fd: i32) -> u64 {
    fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// How the drainer switches epochs; chosen at load time by trying, never by kernel version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchMethod {
    /// Replace the `EPOCH` slot with the other epoch's inner array. The kernel waits for an
    /// RCU grace period before `bpf_map_update_elem` returns.
    Slot,
    /// Keep the slot; write the new epoch into the inner array it points to, then wait for an
    /// RCU grace period with `membarrier(MEMBARRIER_CMD_GLOBAL)` (`synchronize_rcu()`). For
    /// kernels that refuse to replace the slot from userspace.
    ValueAndMembarrier,
}

impl SwitchMethod {
    pub const fn describe(self) -> &'static str {
        match self {
            SwitchMethod::Slot => "map-in-map slot replacement (the kernel waits for RCU)",
            SwitchMethod::ValueAndMembarrier => {
                "epoch value write + membarrier(MEMBARRIER_CMD_GLOBAL) for the RCU wait"
            }
        }
    }
}

/// The `EPOCH` map-of-maps and the two single-value arrays it switches between.
struct EpochSwitch {
    selector: ArrayOfMaps<MapData, Array<MapData, u32>>,
    values: [Array<MapData, u32>; 2],
    active: usize,
    method: SwitchMethod,
    /// Why the slot method was not usable, when it was not.
    slot_error: Option<String>,
}

const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;

/// `membarrier(2)`: with MEMBARRIER_CMD_GLOBAL the kernel runs `synchronize_rcu()`, which
/// waits until every CPU has left the RCU read sections (BPF tracepoint programs) it was in.
fn membarrier(cmd: libc::c_int) -> std::io::Result<libc::c_long> {
    // SAFETY: membarrier takes two integers and touches no user memory.
    let ret = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_uint) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl EpochSwitch {
    fn new(ebpf: &mut Ebpf) -> Result<EpochSwitch, KernelError> {
        let name = map_names::EPOCH;
        let map = ebpf
            .take_map(name)
            .ok_or(KernelError::MissingMap { name })?;
        let selector =
            ArrayOfMaps::try_from(map).map_err(|error| KernelError::Map { name, error })?;
        let make = |value: u32| -> Result<Array<MapData, u32>, KernelError> {
            let inner = if value == 0 {
                "EPOCH inner array 0"
            } else {
                "EPOCH inner array 1"
            };
            let mut array = Array::<MapData, u32>::create(1, 0)
                .map_err(|error| KernelError::Map { name: inner, error })?;
            array
                .set(0, &value, 0)
                .map_err(|error| KernelError::Map { name: inner, error })?;
            Ok(array)
        };
        Ok(EpochSwitch {
            selector,
            values: [make(0)?, make(1)?],
            active: 0,
            method: SwitchMethod::Slot,
            slot_error: None,
        })
    }

    /// Points the slot at epoch 0's array, then finds out how this kernel lets us switch:
    /// replacing the slot (tried twice, there and back), or else writing the value with a
    /// membarrier. Fails when neither works: a sidecar that cannot drain must not start.
    fn arm(&mut self) -> Result<(), KernelError> {
        self.set_slot(0).map_err(|error| KernelError::Switch {
            how: format!("arming: {}", self.slot_text(0)),
            error,
        })?;
        let probe = if std::env::var_os("SIDECAR_FAULT_NO_SLOT_SWITCH").is_some() {
            Err(std::io::Error::other(
                "refused by SIDECAR_FAULT_NO_SLOT_SWITCH (test fault)",
            ))
        } else {
            self.set_slot(1).and_then(|()| self.set_slot(0))
        };
        let Err(slot_error) = probe else {
            return Ok(());
        };
        let slot_error = format!(
            "{}: bpf_map_update_elem failed: {}",
            self.slot_text(1),
            chain(&slot_error)
        );
        // The slot points at epoch 0's array whatever happened (the first step failed, or
        // the way back did): re-arm it to be sure, then try the value write.
        let _ = self.set_slot(0);
        let supported = membarrier(MEMBARRIER_CMD_QUERY).map_err(|error| KernelError::Switch {
            how: format!("{slot_error}; and membarrier(MEMBARRIER_CMD_QUERY) failed"),
            error,
        })?;
        if supported & libc::c_long::from(MEMBARRIER_CMD_GLOBAL) == 0 {
            return Err(KernelError::Switch {
                how: format!("{slot_error}; and membarrier lacks MEMBARRIER_CMD_GLOBAL"),
                error: std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            });
        }
        self.method = SwitchMethod::ValueAndMembarrier;
        self.slot_error = Some(slot_error.clone());
        let probe = self.write_value(1).and_then(|()| self.write_value(0));
        probe.map_err(|error| KernelError::Switch {
            how: format!("{slot_error}; and the fallback (value write + membarrier)"),
            error,
        })
    }

    fn slot_text(&self, epoch: usize) -> String {
        format!("{} slot 0 -> EPOCH inner array {epoch}", map_names::EPOCH)
    }

    fn set_slot(&mut self, epoch: usize) -> std::io::Result<()> {
        self.selector
            .set(0, &self.values[epoch], 0)
            .map_err(|err| match err {
                aya::maps::MapError::SyscallError(sys) => sys.io_error,
                other => std::io::Error::other(other.to_string()),
            })
    }

    /// The fallback's switch: the inner array of epoch 0 (the one the slot holds) gets the
    /// new epoch's number, then a grace period passes.
    fn write_value(&mut self, epoch: usize) -> std::io::Result<()> {
        let value = u32::try_from(epoch).unwrap_or(0);
        self.values[0].set(0, &value, 0).map_err(|err| match err {
            aya::maps::MapError::SyscallError(sys) => sys.io_error,
            other => std::io::Error::other(other.to_string()),
        })?;
        membarrier(MEMBARRIER_CMD_GLOBAL).map(drop)
    }

    /// Makes the other epoch active and returns the retired one. When this returns, an RCU
    /// grace period has passed since the switch (the kernel waits for one when a slot of a
    /// map-of-maps is replaced; membarrier waits for one in the fallback), so no program
    /// still writes into the retired epoch's maps.
    fn switch(&mut self) -> Result<usize, KernelError> {
        let next = 1 - self.active;
        let result = match self.method {
            SwitchMethod::Slot => self.set_slot(next).map_err(|error| KernelError::Switch {
                how: format!("{}: bpf_map_update_elem", self.slot_text(next)),
                error,
            }),
            SwitchMethod::ValueAndMembarrier => {
                self.write_value(next).map_err(|error| KernelError::Switch {
                    how: format!("EPOCH inner array 0 := {next}, then membarrier"),
                    error,
                })
            }
        };
        result?;
        let retired = self.active;
        self.active = next;
        Ok(retired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_errors_name_the_map_the_call_and_the_errno() {
        let err = KernelError::Map {
            name: "FADV_CNT_0",
            error: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_update_elem",
                io_error: std::io::Error::from_raw_os_error(libc::EINVAL),
            }),
        };
        let text = err.to_string();
        assert!(text.starts_with("map FADV_CNT_0: "), "{text}");
        assert!(text.contains("bpf_map_update_elem"), "{text}");
        assert!(text.contains("(os error 22, EINVAL)"), "{text}");
    }

    #[test]
    fn switch_and_drain_errors_carry_the_errno() {
        let err = KernelError::Switch {
            how: "EPOCH slot 0 -> EPOCH inner array 1: bpf_map_update_elem".to_owned(),
            error: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        let text = err.to_string();
        assert!(text.contains("EPOCH inner array 1"), "{text}");
        assert!(text.ends_with("(os error 1, EPERM)"), "{text}");
        let err = KernelError::Drain {
            name: "HOST_0",
            error: std::io::Error::from_raw_os_error(524),
        };
        assert!(err.to_string().contains("HOST_0"), "{err}");
        assert!(err.to_string().contains("ENOTSUPP"), "{err}");
    }
}
