//! The modules, and the programs of the eBPF object with what each attaches to: the one
//! table userspace loads from and a no-root test checks against the built object
//! (`sidecar/src/kernel/spec_check.rs`), so a rename fails at build-test time, not at load
//! time as root.

use core::fmt;

/// An observation module: a set of programs that works only whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Module {
    Fadvise,
    PageCache,
    Vmscan,
    /// File I/O: read and sync latency, bytes read, pages dirtied.
    Io,
    /// Page-cache additions, evictions and refaults by the memory cgroup that owns the
    /// page, and refaults by the acting process.
    Memcg,
}

impl Module {
    pub const ALL: [Module; 5] = [
        Module::Fadvise,
        Module::PageCache,
        Module::Vmscan,
        Module::Io,
        Module::Memcg,
    ];

    /// The name used in configuration, status and the `module` filters.
    pub const fn name(self) -> &'static str {
        match self {
            Module::Fadvise => "fadvise",
            Module::PageCache => "page_cache",
            Module::Vmscan => "vmscan",
            Module::Io => "io",
            Module::Memcg => "memcg",
        }
    }

    /// The module's classic-tracepoint programs: the set every kernel with tracefs can run
    /// (fadvise and page_cache prefer others where the kernel has them).
    pub const fn programs(self) -> &'static [ProgramSpec] {
        match self {
            Module::Fadvise => &FADVISE_PROGRAMS,
            Module::PageCache => &PAGE_CACHE_PROGRAMS,
            Module::Vmscan => &VMSCAN_PROGRAMS,
            Module::Io => &IO_PROGRAMS,
            Module::Memcg => &MEMCG_PROGRAMS,
        }
    }
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A tracepoint, through tracefs (the format file's fields).
    Tracepoint,
    /// A raw tracepoint (TP_PROTO arguments).
    RawTracepoint,
    /// fexit on the kernel function `event` (BTF; its arguments and return value).
    FExit,
    /// A BTF-typed raw tracepoint (`tp_btf`): the raw tracepoint's arguments with their
    /// kernel types, so fields behind them are plain loads. No BPF trampoline needed.
    BtfTracepoint,
}

impl Hook {
    pub const fn label(self) -> &'static str {
        match self {
            Hook::Tracepoint => "tracepoint",
            Hook::RawTracepoint => "raw_tracepoint",
            Hook::FExit => "fexit",
            Hook::BtfTracepoint => "tp_btf",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramSpec {
    /// The program's function name in the eBPF object.
    pub program: &'static str,
    /// The tracepoint's category (empty for a kernel function).
    pub category: &'static str,
    /// The tracepoint, or the kernel function.
    pub event: &'static str,
    pub hook: Hook,
}

impl ProgramSpec {
    pub const fn new(program: &'static str, category: &'static str, event: &'static str) -> Self {
        ProgramSpec {
            program,
            category,
            event,
            hook: Hook::Tracepoint,
        }
    }

    pub const fn raw(program: &'static str, category: &'static str, event: &'static str) -> Self {
        ProgramSpec {
            program,
            category,
            event,
            hook: Hook::RawTracepoint,
        }
    }

    pub const fn btf(program: &'static str, category: &'static str, event: &'static str) -> Self {
        ProgramSpec {
            program,
            category,
            event,
            hook: Hook::BtfTracepoint,
        }
    }

    pub const fn fexit(program: &'static str, function: &'static str) -> Self {
        ProgramSpec {
            program,
            category: "",
            event: function,
            hook: Hook::FExit,
        }
    }

    /// What it attaches to, for messages: `category:event` or the function.
    pub const fn target(&self) -> Target<'_> {
        Target(self)
    }
}

/// A program's attach point, displayed as `category:event` or the function's name.
pub struct Target<'a>(&'a ProgramSpec);

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.hook {
            Hook::FExit => f.write_str(self.0.event),
            _ => write!(f, "{}:{}", self.0.category, self.0.event),
        }
    }
}

/// Not a module: process life-cycle events that keep classification right. Renames (exec,
/// prctl(PR_SET_NAME)) keep the recorded comm current; exec marks a classification stale;
/// exit releases per-thread state and, after the last counts, the process's cache entry.
pub const PROCESS_PROGRAMS: [ProgramSpec; 3] = [
    ProgramSpec::new("task_rename", "task", "task_rename"),
    ProgramSpec::new("process_exec", "sched", "sched_process_exec"),
    ProgramSpec::new("process_exit", "sched", "sched_process_exit"),
];

/// The fadvise syscall's tracepoints: the entry keeps the advice, the exit counts.
pub const FADVISE_PROGRAMS: [ProgramSpec; 2] = [
    ProgramSpec::new("fadvise_enter", "syscalls", "sys_enter_fadvise64"),
    ProgramSpec::new("fadvise_exit", "syscalls", "sys_exit_fadvise64"),
];

/// One program per call on the syscall's exit tracepoint, where the kernel has
/// `bpf_task_pt_regs` (5.15+) and BTF: the advice and the result are read from the calling
/// task's saved registers, so no per-thread state is kept between entry and exit.
pub const FADVISE_REGS_PROGRAMS: [ProgramSpec; 1] = [ProgramSpec::new(
    "fadvise_exit_regs",
    "syscalls",
    "sys_exit_fadvise64",
)];

/// The kernel function every fadvise64 syscall goes through, a bad descriptor included:
/// `int ksys_fadvise64_64(int fd, loff_t offset, loff_t len, int advice)`.
pub const FADVISE_SYSCALL_FUNCTION: &str = "ksys_fadvise64_64";
/// io_uring's IORING_OP_FADVISE: `int io_fadvise(struct io_kiocb *req, unsigned int
/// issue_flags)`, a function of its own from 6.0 (inlined into `io_issue_sqe` before).
pub const FADVISE_IO_URING_FUNCTION: &str = "io_fadvise";

/// The fadvise programs where the kernel takes fexit: one program per call.
pub const FADVISE_FEXIT_PROGRAMS: [ProgramSpec; 2] = [
    ProgramSpec::fexit("fadvise_syscall_exit", FADVISE_SYSCALL_FUNCTION),
    ProgramSpec::fexit("fadvise_io_uring_exit", FADVISE_IO_URING_FUNCTION),
];

pub const PAGE_CACHE_PROGRAMS: [ProgramSpec; 3] = [
    ProgramSpec::new("filemap_get_pages", "filemap", "mm_filemap_get_pages"),
    ProgramSpec::new("filemap_add", "filemap", "mm_filemap_add_to_page_cache"),
    ProgramSpec::new(
        "filemap_delete",
        "filemap",
        "mm_filemap_delete_from_page_cache",
    ),
];

/// The page-cache programs when the kernel's BTF locates a file's size: the raw
/// get_pages program bounds each read's range by the file (see `filemap.rs`).
pub const PAGE_CACHE_SIZED_PROGRAMS: [ProgramSpec; 3] = [
    ProgramSpec::raw("filemap_get_pages_sized", "filemap", "mm_filemap_get_pages"),
    PAGE_CACHE_PROGRAMS[1],
    PAGE_CACHE_PROGRAMS[2],
];

/// The same with the tracepoint BTF-typed (`tp_btf`): the fields behind its `mapping` are
/// plain loads. Preferred to the raw tracepoint where the kernel loads it.
pub const PAGE_CACHE_TYPED_PROGRAMS: [ProgramSpec; 3] = [
    ProgramSpec::btf("filemap_get_pages_typed", "filemap", "mm_filemap_get_pages"),
    PAGE_CACHE_PROGRAMS[1],
    PAGE_CACHE_PROGRAMS[2],
];

/// The read functions the page cache's fexit hook can attach to, in order of preference:
/// `filemap_read` (5.12+) and its predecessor `generic_file_buffered_read` (5.10). Both
/// are `ssize_t (struct kiocb *, struct iov_iter *, ssize_t already_read)`.
pub const READ_FUNCTIONS: [&str; 2] = ["filemap_read", "generic_file_buffered_read"];

/// The eBPF program of the read path's fexit hook (attached to one of `READ_FUNCTIONS`).
pub const READ_FEXIT_PROGRAM: &str = "read_iter_exit";

/// The read(2)/pread64(2) programs of the syscall fallback.
pub const SYSCALL_READ_PROGRAMS: [ProgramSpec; 4] = [
    ProgramSpec::new("read_sys_enter", "syscalls", "sys_enter_read"),
    ProgramSpec::new("read_sys_exit", "syscalls", "sys_exit_read"),
    ProgramSpec::new("pread_sys_enter", "syscalls", "sys_enter_pread64"),
    ProgramSpec::new("pread_sys_exit", "syscalls", "sys_exit_pread64"),
];

pub const VMSCAN_PROGRAMS: [ProgramSpec; 6] = [
    ProgramSpec::new(
        "vmscan_shrink_inactive",
        "vmscan",
        "mm_vmscan_lru_shrink_inactive",
    ),
    ProgramSpec::new(
        "vmscan_direct_begin",
        "vmscan",
        "mm_vmscan_direct_reclaim_begin",
    ),
    ProgramSpec::new(
        "vmscan_direct_end",
        "vmscan",
        "mm_vmscan_direct_reclaim_end",
    ),
    ProgramSpec::new(
        "vmscan_memcg_begin",
        "vmscan",
        "mm_vmscan_memcg_reclaim_begin",
    ),
    ProgramSpec::new("vmscan_memcg_end", "vmscan", "mm_vmscan_memcg_reclaim_end"),
    ProgramSpec::new("vmscan_kswapd_wake", "vmscan", "mm_vmscan_kswapd_wake"),
];

/// The `io` module's syscalls: one entry program per kind of call (it keeps the start time
/// and the kind), one exit program for all of them (it counts). Each program is loaded once
/// and attached to every event of its name.
pub const IO_SYSCALL_PROGRAMS: [ProgramSpec; 12] = [
    ProgramSpec::new("io_read_enter", "syscalls", "sys_enter_read"),
    ProgramSpec::new("io_read_enter", "syscalls", "sys_enter_pread64"),
    ProgramSpec::new("io_read_enter", "syscalls", "sys_enter_readv"),
    ProgramSpec::new("io_read_enter", "syscalls", "sys_enter_preadv"),
    ProgramSpec::new("io_sync_enter", "syscalls", "sys_enter_fsync"),
    ProgramSpec::new("io_sync_enter", "syscalls", "sys_enter_fdatasync"),
    ProgramSpec::new("io_exit", "syscalls", "sys_exit_read"),
    ProgramSpec::new("io_exit", "syscalls", "sys_exit_pread64"),
    ProgramSpec::new("io_exit", "syscalls", "sys_exit_readv"),
    ProgramSpec::new("io_exit", "syscalls", "sys_exit_preadv"),
    ProgramSpec::new("io_exit", "syscalls", "sys_exit_fsync"),
    ProgramSpec::new("io_exit", "syscalls", "sys_exit_fdatasync"),
];

/// Pages dirtied, in order of preference: the BTF-typed tracepoint, which reads the folio's
/// size; the classic tracepoint on folios (one page per event: exact only where files have
/// no large folios); its predecessor on pages (before 5.17, one page each).
pub const IO_DIRTY_PROGRAMS: [ProgramSpec; 3] = [
    ProgramSpec::btf("io_dirty_folio_typed", "writeback", "writeback_dirty_folio"),
    ProgramSpec::new("io_dirty", "writeback", "writeback_dirty_folio"),
    ProgramSpec::new("io_dirty", "writeback", "writeback_dirty_page"),
];

/// The functions that start a page-cache folio's writeback, in order of preference:
/// `__folio_start_writeback(struct folio *, bool keep_write)` (returning `bool` on 6.1,
/// nothing from 6.8 or so) and, before folios, `int __test_set_page_writeback(struct page
/// *, bool keep_write)`.
pub const WRITEBACK_FUNCTIONS: [&str; 2] = ["__folio_start_writeback", "__test_set_page_writeback"];

/// The io module's fexit program on one of `WRITEBACK_FUNCTIONS`.
pub const WRITEBACK_PROGRAM: &str = "io_writeback_start";

/// The `io` module's classic-tracepoint set (see `Module::programs`).
pub const IO_PROGRAMS: [ProgramSpec; 13] = [
    IO_DIRTY_PROGRAMS[1],
    IO_SYSCALL_PROGRAMS[0],
    IO_SYSCALL_PROGRAMS[1],
    IO_SYSCALL_PROGRAMS[2],
    IO_SYSCALL_PROGRAMS[3],
    IO_SYSCALL_PROGRAMS[4],
    IO_SYSCALL_PROGRAMS[5],
    IO_SYSCALL_PROGRAMS[6],
    IO_SYSCALL_PROGRAMS[7],
    IO_SYSCALL_PROGRAMS[8],
    IO_SYSCALL_PROGRAMS[9],
    IO_SYSCALL_PROGRAMS[10],
    IO_SYSCALL_PROGRAMS[11],
];

/// The kernel function that counts a refault: `void workingset_refault(struct folio *,
/// void *shadow)` (`struct page *` before folios).
pub const REFAULT_FUNCTION: &str = "workingset_refault";

/// The memcg module: BTF-typed page-cache tracepoints (their page or folio says which
/// memory cgroup it is charged to) and, where BPF trampolines are allowed, fexit on the
/// refault function.
pub const MEMCG_PROGRAMS: [ProgramSpec; 3] = [
    ProgramSpec::fexit("memcg_refault", REFAULT_FUNCTION),
    ProgramSpec::btf("memcg_add", "filemap", "mm_filemap_add_to_page_cache"),
    ProgramSpec::btf(
        "memcg_delete",
        "filemap",
        "mm_filemap_delete_from_page_cache",
    ),
];

/// Empty programs, one per attach type, for measuring the floor (`sidecar-load bpf-cost`);
/// the sidecar never loads them. Each attaches wherever the measurement says.
pub const FLOOR_PROGRAMS: [ProgramSpec; 6] = [
    ProgramSpec::new("floor_tracepoint", "syscalls", "sys_enter_fadvise64"),
    ProgramSpec::raw("floor_raw_tracepoint", "filemap", "mm_filemap_get_pages"),
    ProgramSpec::fexit("floor_fexit", FADVISE_SYSCALL_FUNCTION),
    ProgramSpec::btf("floor_btf_tracepoint", "filemap", "mm_filemap_get_pages"),
    ProgramSpec::btf(
        "floor_btf_tracepoint_2",
        "filemap",
        "mm_filemap_delete_from_page_cache",
    ),
    ProgramSpec::new(FLOOR_ONE_CALL_PROGRAM, "syscalls", "sys_exit_fadvise64"),
];

/// The floor program that makes one helper call (the cost of a call, not of a hook).
pub const FLOOR_ONE_CALL_PROGRAM: &str = "floor_tracepoint_call";

/// Every program the object must have, each with the hook type it is built for (the read
/// path's fexit program once, under its preferred function).
pub const ALL_PROGRAMS: [&[ProgramSpec]; 15] = [
    &[ProgramSpec::fexit(
        WRITEBACK_PROGRAM,
        WRITEBACK_FUNCTIONS[0],
    )],
    &MEMCG_PROGRAMS,
    &IO_SYSCALL_PROGRAMS,
    &IO_DIRTY_PROGRAMS,
    &FLOOR_PROGRAMS,
    &PAGE_CACHE_TYPED_PROGRAMS,
    &PROCESS_PROGRAMS,
    &FADVISE_PROGRAMS,
    &FADVISE_FEXIT_PROGRAMS,
    &FADVISE_REGS_PROGRAMS,
    &PAGE_CACHE_PROGRAMS,
    &PAGE_CACHE_SIZED_PROGRAMS,
    &[ProgramSpec::fexit(READ_FEXIT_PROGRAM, READ_FUNCTIONS[0])],
    &SYSCALL_READ_PROGRAMS,
    &VMSCAN_PROGRAMS,
];
