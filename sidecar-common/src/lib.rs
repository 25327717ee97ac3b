//! Types shared by the sidecar daemon and its eBPF programs.
//!
//! Everything here crosses the kernel/user boundary through BPF maps or globals, so every type
//! is `#[repr(C)]` with explicit padding (no implicit holes whose contents the kernel would
//! compare or hash), and every map slot or counter index is an enum, never a bare number.
#![no_std]

pub mod duration;

/// Declares a struct of `u64` counters shared with the kernel (`#[repr(C)]`, no padding) and
/// derives its sum: each field is named once, so adding a counter cannot leave a sum behind.
macro_rules! counters {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* pub $field:ident: u64,)+ }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: u64,)+
        }

        impl core::ops::AddAssign for $name {
            #[inline(always)]
            fn add_assign(&mut self, other: $name) {
                $(self.$field += other.$field;)+
            }
        }

        impl core::ops::AddAssign<&$name> for $name {
            #[inline(always)]
            fn add_assign(&mut self, other: &$name) {
                *self += *other;
            }
        }
    };
}

pub mod programs;
pub use programs::Module;

/// Names of the maps in the eBPF object. The kernel truncates map names to 15 bytes, so they
/// are short; the eBPF crate declares each map with exactly these names.
pub mod map_names {
    /// `ArrayOfMaps` with one slot holding the active epoch (an `Array<u32, 1>`).
    pub const EPOCH: &str = "EPOCH";
    /// Per-process fadvise counters, one map per epoch.
    pub const FADVISE_COUNTS: [&str; 2] = ["FADV_CNT_0", "FADV_CNT_1"];
    pub const FADVISE_OVERFLOW: [&str; 2] = ["FADV_OVF_0", "FADV_OVF_1"];
    pub const PAGE_CACHE_COUNTS: [&str; 2] = ["PC_CNT_0", "PC_CNT_1"];
    pub const PAGE_CACHE_OVERFLOW: [&str; 2] = ["PC_OVF_0", "PC_OVF_1"];
    pub const RECLAIM_COUNTS: [&str; 2] = ["RCL_CNT_0", "RCL_CNT_1"];
    pub const RECLAIM_OVERFLOW: [&str; 2] = ["RCL_OVF_0", "RCL_OVF_1"];
    pub const HOST_COUNTERS: [&str; 2] = ["HOST_0", "HOST_1"];
    pub const PROCESSES: [&str; 2] = ["PROC_0", "PROC_1"];
    /// Processes recorded in `PROCESSES` in an earlier interval and still alive: not per
    /// interval, never drained (an entry goes when its process exits).
    pub const PROCESSES_SEEN: &str = "PROC_SEEN";
    /// Per-thread state, not per interval: never drained.
    pub const FADVISE_IN_FLIGHT: &str = "FADV_INFLIGHT";
    pub const READ_STATE: &str = "READ_STATE";
    pub const READ_IN_FLIGHT: &str = "RD_INFLIGHT";
    pub const RECLAIM_IN_FLIGHT: &str = "RCL_INFLIGHT";
    pub const GAUGES: &str = "GAUGES";
    /// Per-process file I/O counters (`IoKey` -> `IoCounts`), one map per epoch.
    pub const IO_COUNTS: [&str; 2] = ["IO_CNT_0", "IO_CNT_1"];
    pub const IO_OVERFLOW: [&str; 2] = ["IO_OVF_0", "IO_OVF_1"];
    /// Each thread's read or sync syscall in progress (`IoInFlight`), by pid_tgid.
    pub const IO_IN_FLIGHT: &str = "IO_INFLIGHT";
    /// Page-cache and refault counts by owning memory cgroup or acting process
    /// (`OwnerKey` -> `OwnerCounts`), one map per epoch.
    pub const OWNER_COUNTS: [&str; 2] = ["OWN_CNT_0", "OWN_CNT_1"];
    pub const OWNER_OVERFLOW: [&str; 2] = ["OWN_OVF_0", "OWN_OVF_1"];
}

/// Names of the globals (`.rodata`) that userspace sets before loading.
pub mod global_names {
    pub const FADVISE_LAYOUT: &str = "FADVISE_LAYOUT";
    pub const FILEMAP_LAYOUT: &str = "FILEMAP_LAYOUT";
    pub const VMSCAN_LAYOUT: &str = "VMSCAN_LAYOUT";
    pub const PROCESS_LAYOUT: &str = "PROCESS_LAYOUT";
    pub const PID_NAMESPACE: &str = "PID_NAMESPACE";
    pub const INODE_LAYOUT: &str = "INODE_LAYOUT";
    pub const READ_HOOK_LAYOUT: &str = "READ_HOOK_LAYOUT";
    pub const SYSCALL_READ_LAYOUT: &str = "SYSCALL_READ_LAYOUT";
    pub const IO_LAYOUT: &str = "IO_LAYOUT";
    pub const OWNER_LAYOUT: &str = "OWNER_LAYOUT";
}

/// `posix_fadvise` advice, as the `advice` label reports it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Advice {
    Normal = 0,
    Random = 1,
    Sequential = 2,
    WillNeed = 3,
    DontNeed = 4,
    NoReuse = 5,
    /// Any value the kernel does not define (the call fails with EINVAL).
    Other = 6,
}

impl Advice {
    pub const COUNT: usize = 7;
    pub const ALL: [Advice; Self::COUNT] = [
        Advice::Normal,
        Advice::Random,
        Advice::Sequential,
        Advice::WillNeed,
        Advice::DontNeed,
        Advice::NoReuse,
        Advice::Other,
    ];

    /// Maps a raw `advice` argument (the syscall's register, or the kernel function's
    /// `int`, sign-extended). The numbering is include/uapi/linux/fadvise.h's; only s390x
    /// numbers DONTNEED and NOREUSE differently, and the object is built for bpfel alone.
    #[inline(always)]
    pub const fn from_raw(raw: u64) -> Advice {
        match raw {
            0 => Advice::Normal,
            1 => Advice::Random,
            2 => Advice::Sequential,
            3 => Advice::WillNeed,
            4 => Advice::DontNeed,
            5 => Advice::NoReuse,
            _ => Advice::Other,
        }
    }

    pub const fn from_slot(slot: u32) -> Option<Advice> {
        if (slot as usize) < Self::COUNT {
            Some(Self::ALL[slot as usize])
        } else {
            None
        }
    }

    /// The `advice` label value.
    pub const fn label(self) -> &'static str {
        match self {
            Advice::Normal => "normal",
            Advice::Random => "random",
            Advice::Sequential => "sequential",
            Advice::WillNeed => "willneed",
            Advice::DontNeed => "dontneed",
            Advice::NoReuse => "noreuse",
            Advice::Other => "other",
        }
    }
}

/// Key of the per-process fadvise map: one entry per (process, advice) seen in an interval.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FadviseKey {
    pub tgid: u32,
    /// An [`Advice`] slot.
    pub advice: u32,
}

counters! {
    pub struct FadviseCounts {
        pub calls: u64,
        /// Calls that returned 0.
        pub successes: u64,
    }
}

/// Key of the per-process maps that need nothing but the process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    pub tgid: u32,
}

counters! {
    pub struct PageCacheCounts {
        /// Pages the read path asked for (mm_filemap_get_pages ranges, one per read call).
        pub read_attempts: u64,
        /// Pages this process added to the cache for a file it then read: read misses.
        pub misses: u64,
        /// Every page this process added to the page cache (reads, writes, faults).
        pub adds: u64,
        /// Pages removed from the page cache while this process was running.
        pub evictions: u64,
    }
}

/// Which kind of reclaim stalled a task.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReclaimKind {
    /// Global direct reclaim (mm_vmscan_direct_reclaim_begin/end).
    Direct = 0,
    /// Reclaim of a memory cgroup at its limit (mm_vmscan_memcg_reclaim_begin/end).
    Memcg = 1,
}

impl ReclaimKind {
    pub const COUNT: usize = 2;
    pub const ALL: [ReclaimKind; Self::COUNT] = [ReclaimKind::Direct, ReclaimKind::Memcg];

    pub const fn from_raw(raw: u8) -> Option<ReclaimKind> {
        match raw {
            0 => Some(ReclaimKind::Direct),
            1 => Some(ReclaimKind::Memcg),
            _ => None,
        }
    }
}

/// Number of log2 latency buckets. Bucket `b` holds stalls of `[2^(b-1), 2^b)` ns (bucket 0
/// holds 0 ns); the last bucket also holds everything longer.
pub const LATENCY_BUCKETS: usize = 40;

/// The latency bucket of a stall of `ns` nanoseconds: its bit length, capped.
/// Written without loops or `leading_zeros` so that it compiles to a handful of BPF
/// instructions on every ISA version.
#[inline(always)]
pub const fn latency_bucket(ns: u64) -> u32 {
    let mut v = ns;
    let mut bits = 0u32;
    if v >= 1 << 32 {
        v >>= 32;
        bits += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        bits += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        bits += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        bits += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        bits += 2;
    }
    if v >= 1 << 1 {
        v >>= 1;
        bits += 1;
    }
    bits += v as u32;
    if bits as usize >= LATENCY_BUCKETS {
        (LATENCY_BUCKETS - 1) as u32
    } else {
        bits
    }
}

/// Exclusive upper bound, in ns, of latency bucket `b` (`None` for the last, open bucket).
pub const fn latency_bucket_upper_ns(b: u32) -> Option<u64> {
    if (b as usize) + 1 >= LATENCY_BUCKETS {
        None
    } else {
        Some(1u64 << b)
    }
}

/// Key of the per-process reclaim map: sparse, one entry per (process, kind, bucket) used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReclaimKey {
    pub tgid: u32,
    /// A [`ReclaimKind`].
    pub kind: u8,
    /// A latency bucket, see [`latency_bucket`].
    pub bucket: u8,
    pub _pad: [u8; 2],
}

counters! {
    pub struct ReclaimCounts {
        pub episodes: u64,
        pub stalled_ns: u64,
    }
}

/// Index into the reclaim overflow array.
#[inline(always)]
pub const fn reclaim_overflow_slot(kind: ReclaimKind, bucket: u32) -> u32 {
    kind as u32 * LATENCY_BUCKETS as u32 + bucket
}

pub const RECLAIM_OVERFLOW_SLOTS: usize = ReclaimKind::COUNT * LATENCY_BUCKETS;

/// What a file I/O event of the `io` module is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoOp {
    /// read(2), pread64(2), readv(2), preadv(2): latency and bytes returned.
    Read = 0,
    /// fsync(2), fdatasync(2): latency.
    Sync = 1,
    /// Page-cache folios this process dirtied (writeback_dirty_folio / _page): pages. Never
    /// bucketed (bucket 0).
    Dirty = 2,
    /// Page-cache folios whose writeback this process started (fsync and the like; the
    /// flusher's are a kworker's): pages. Never bucketed.
    Writeback = 3,
}

impl IoOp {
    pub const COUNT: usize = 4;
    pub const ALL: [IoOp; Self::COUNT] = [IoOp::Read, IoOp::Sync, IoOp::Dirty, IoOp::Writeback];

    pub const fn from_raw(raw: u8) -> Option<IoOp> {
        match raw {
            0 => Some(IoOp::Read),
            1 => Some(IoOp::Sync),
            2 => Some(IoOp::Dirty),
            3 => Some(IoOp::Writeback),
            _ => None,
        }
    }
}

/// Key of the per-process I/O map: sparse, one entry per (process, op, latency bucket) used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IoKey {
    pub tgid: u32,
    /// An [`IoOp`].
    pub op: u8,
    /// A latency bucket, see [`latency_bucket`] (0 for [`IoOp::Dirty`]).
    pub bucket: u8,
    pub _pad: [u8; 2],
}

counters! {
    pub struct IoCounts {
        /// Syscalls that returned (read, sync), or folios dirtied.
        pub events: u64,
        /// Their summed latency, in nanoseconds (read, sync).
        pub ns: u64,
        /// Bytes the reads returned.
        pub bytes: u64,
        /// Pages dirtied (a folio counts `1 << order` pages).
        pub pages: u64,
    }
}

/// Index into the I/O overflow array.
#[inline(always)]
pub const fn io_overflow_slot(op: IoOp, bucket: u32) -> u32 {
    op as u32 * LATENCY_BUCKETS as u32 + bucket
}

pub const IO_OVERFLOW_SLOTS: usize = IoOp::COUNT * LATENCY_BUCKETS;

/// Who a page-cache or refault count of the `memcg` module is charged to.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OwnerBy {
    /// The process that was running (refaults only: its additions and evictions are the
    /// page_cache module's).
    Process = 0,
    /// The memory cgroup the page is charged to, by its cgroup id (the inode number of
    /// its directory in the memory controller's hierarchy; 0 for a page charged to none).
    MemoryCgroup = 1,
}

impl OwnerBy {
    pub const COUNT: usize = 2;

    pub const fn from_raw(raw: u32) -> Option<OwnerBy> {
        match raw {
            0 => Some(OwnerBy::Process),
            1 => Some(OwnerBy::MemoryCgroup),
            _ => None,
        }
    }
}

/// Key of the per-owner map: one entry per (owner, kind of owner) seen in an interval.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OwnerKey {
    /// A process key (tgid) or a cgroup id, see `by`.
    pub id: u64,
    /// An [`OwnerBy`].
    pub by: u32,
    pub _pad: u32,
}

counters! {
    pub struct OwnerCounts {
        /// Pages added to the page cache.
        pub adds: u64,
        /// Pages removed from the page cache.
        pub evictions: u64,
        /// Pages of files read back in after their eviction (workingset_refault).
        pub file_refaults: u64,
        /// Anonymous pages swapped back in after their eviction.
        pub anon_refaults: u64,
    }
}

/// Where the `memcg` programs find a page's owner and size (BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerLayout {
    /// `folio.memcg_data` (an `unsigned long` whose low bits are flags) or, before folios,
    /// `page.mem_cgroup`.
    pub page_memcg: u32,
    /// `mem_cgroup.css.cgroup`, from the start of the `struct mem_cgroup`.
    pub memcg_cgroup: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (a `u64`): the cgroup id.
    pub kn_id: u32,
    /// The bit of `PG_swapbacked` in the page's `flags` (at offset 0): an anonymous page.
    pub swapbacked_bit: u32,
    /// A large folio's size, as in [`IoLayout`] (`ABSENT_FIELD` before folios: one page).
    pub folio_head_bit: u32,
    pub folio_order: u32,
    /// The flag bits of `memcg_data` (MEMCG_DATA_*); 0 when the field is a typed pointer
    /// (`page.mem_cgroup`), which the verifier lets no program mask, so it is read with
    /// `bpf_probe_read_kernel` as a plain number instead.
    pub memcg_data_flags: u32,
}

impl OwnerLayout {
    pub const UNSET: OwnerLayout = OwnerLayout {
        page_memcg: ABSENT_FIELD,
        memcg_cgroup: ABSENT_FIELD,
        cgroup_kn: ABSENT_FIELD,
        kn_id: ABSENT_FIELD,
        swapbacked_bit: ABSENT_FIELD,
        folio_head_bit: ABSENT_FIELD,
        folio_order: ABSENT_FIELD,
        memcg_data_flags: 0,
    };
}

/// A read or sync syscall between its enter and exit events (IO_INFLIGHT, by pid_tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoInFlight {
    /// `bpf_ktime_get_ns` at entry; 0 when the slot is idle.
    pub start_ns: u64,
    /// An [`IoOp`].
    pub op: u32,
    pub _pad: u32,
}

/// Where the `io` programs find what they read: the syscall exit tracepoints' `ret` (format
/// files; the same offset in every sys_exit_* event) and, for the BTF-typed
/// writeback_dirty_folio program, a folio's size (BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoLayout {
    pub exit_ret: u32,
    /// `struct folio` -> `flags` (an `unsigned long`, read whole).
    pub folio_flags: u32,
    /// The bit of `PG_head` in `flags` (enum pageflags): set on a folio of more than one page.
    pub folio_head_bit: u32,
    /// The byte holding a large folio's order: `_folio_order` (6.1) or the low byte of
    /// `_flags_1` (later kernels).
    pub folio_order: u32,
    /// The bits of the writeback function's return value that say the folio was already
    /// under writeback (then it is not counted): 0xff for a `bool` (6.1), 0xffff_ffff for an
    /// `int` (5.10), 0 for a function that returns nothing (6.12 on).
    pub writeback_already_mask: u32,
    pub _pad: u32,
}

impl IoLayout {
    pub const UNSET: IoLayout = IoLayout {
        exit_ret: ABSENT_FIELD,
        folio_flags: ABSENT_FIELD,
        folio_head_bit: ABSENT_FIELD,
        folio_order: ABSENT_FIELD,
        writeback_already_mask: 0,
        _pad: 0,
    };
}

/// Host-wide counters, one slot each in the per-epoch `HOST_*` per-CPU arrays.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostCounter {
    /// Sum of nr_scanned over mm_vmscan_lru_shrink_inactive.
    LruPagesScanned = 0,
    /// Sum of nr_reclaimed over mm_vmscan_lru_shrink_inactive.
    LruPagesReclaimed = 1,
    KswapdWakeups = 2,
    /// Events counted in an overflow slot because their map was full.
    FadviseOverflowEvents = 3,
    PageCacheOverflowEvents = 4,
    ReclaimOverflowEvents = 5,
    /// Processes whose comm could not be recorded (the process map was full).
    ProcessOverflowEvents = 6,
    /// Tracepoint fields that could not be read (a layout bug; should stay 0).
    FieldReadErrors = 7,
    /// Every posix_fadvise call seen, whatever its process: the host total that the
    /// per-workload counts must add up to.
    FadviseCallsSeen = 8,
    IoOverflowEvents = 9,
    OwnerOverflowEvents = 10,
}

impl HostCounter {
    pub const COUNT: usize = 11;
    pub const ALL: [HostCounter; Self::COUNT] = [
        HostCounter::LruPagesScanned,
        HostCounter::LruPagesReclaimed,
        HostCounter::KswapdWakeups,
        HostCounter::FadviseOverflowEvents,
        HostCounter::PageCacheOverflowEvents,
        HostCounter::ReclaimOverflowEvents,
        HostCounter::ProcessOverflowEvents,
        HostCounter::FieldReadErrors,
        HostCounter::FadviseCallsSeen,
        HostCounter::IoOverflowEvents,
        HostCounter::OwnerOverflowEvents,
    ];
}

/// Gauges, in a per-CPU array that is never cleared: the sum over CPUs is the value (an
/// increment and its decrement may land on different CPUs).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GaugeSlot {
    DirectReclaimInProgress = 0,
}

impl GaugeSlot {
    pub const COUNT: usize = 1;
}

pub const COMM_LEN: usize = 16;

/// What the kernel recorded of a process in an interval: its name, so that processes that
/// exit before the drain can still be classified by `comm`, and whether it exec'd (its
/// classification is stale) or exited (its cached state can go once its counts are in).
/// The flags are bytes that programs only ever set to 1: no read-modify-write races.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub comm: [u8; COMM_LEN],
    pub execed: u8,
    pub exited: u8,
    pub _pad: [u8; 6],
}

/// The process key of tasks outside the sidecar's PID namespace: they are unmatched.
pub const OUTSIDE_NAMESPACE_TGID: u32 = 0;

/// The PID namespace processes are reported in: the sidecar's own. In the initial
/// namespace (`translate` = 0) the kernel's tgid is used as it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PidNamespace {
    /// The namespace file's device, in the kernel's encoding (major << 20 | minor).
    pub dev: u64,
    pub ino: u64,
    pub translate: u32,
    pub _pad: u32,
}

impl PidNamespace {
    pub const HOST: PidNamespace = PidNamespace {
        dev: 0,
        ino: 0,
        translate: 0,
        _pad: 0,
    };
    /// The inode of the initial PID namespace (PROC_PID_INIT_INO).
    pub const INIT_INO: u64 = 0xEFFF_FFFC;
}

/// Per-thread read-path state (READ_STATE), keyed by pid_tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadState {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
    /// The last mm_filemap_get_pages range of this thread; `u64::MAX` when none.
    pub index: u64,
    pub last_index: u64,
    /// Pages this thread added for `ino` since its last get_pages on that file.
    pub pending_missed_pages: u64,
    /// The `struct address_space` of `ino` when the raw tracepoint saw it (0 otherwise): a
    /// thread that reads the same file again skips reading the file's identity.
    pub mapping: u64,
    /// A second pending slot, for additions to a file on another device than `ino`'s while
    /// `ino` is being read: the metadata a filesystem reads for that read (ext4's extent
    /// blocks go to the block device's mapping) must not discard the read's pending misses.
    /// A read of `aux_ino` itself takes them as its misses.
    pub aux_ino: u64,
    pub aux_dev: u32,
    pub _aux_pad: u32,
    pub aux_pending_pages: u64,
}

/// Key of RECLAIM_IN_FLIGHT: a thread inside a reclaim episode of one kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReclaimInFlightKey {
    pub pid_tgid: u64,
    pub kind: u8,
    pub _pad: [u8; 7],
}

/// Marks a tracepoint field that this kernel does not have.
pub const ABSENT_FIELD: u32 = u32::MAX;

/// Offsets of the fields the fadvise programs read: the syscall tracepoints' (tracefs format
/// files) and, for io_uring, those of `struct io_kiocb` (BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FadviseLayout {
    /// sys_enter_fadvise64 `advice`.
    pub enter_advice: u32,
    /// sys_exit_fadvise64 `ret`.
    pub exit_ret: u32,
    /// The advice of an IORING_OP_FADVISE request: `io_fadvise.advice`, from the start of its
    /// `io_kiocb` (the command data is the request's first member).
    pub io_uring_advice: u32,
    /// The request's result: `io_kiocb.cqe.res`.
    pub io_uring_result: u32,
    /// The syscall's fourth argument (the advice) in `struct pt_regs` at the exit
    /// tracepoint: `r10` on x86-64, `regs[3]` on arm64.
    pub regs_advice: u32,
    /// The syscall's return value in `struct pt_regs`: `ax` on x86-64, `regs[0]` on arm64.
    pub regs_result: u32,
    /// `task_struct.pid` and `.tgid`: the exit tracepoint has the task's BTF pointer, and
    /// two loads cost less than the bpf_get_current_pid_tgid call.
    pub task_pid: u32,
    pub task_tgid: u32,
}

impl FadviseLayout {
    pub const UNSET: FadviseLayout = FadviseLayout {
        enter_advice: ABSENT_FIELD,
        exit_ret: ABSENT_FIELD,
        io_uring_advice: ABSENT_FIELD,
        io_uring_result: ABSENT_FIELD,
        regs_advice: ABSENT_FIELD,
        regs_result: ABSENT_FIELD,
        task_pid: ABSENT_FIELD,
        task_tgid: ABSENT_FIELD,
    };
}

/// Offsets of the filemap tracepoint fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilemapLayout {
    pub get_pages_ino: u32,
    pub get_pages_dev: u32,
    pub get_pages_index: u32,
    pub get_pages_last_index: u32,
    pub add_ino: u32,
    pub add_dev: u32,
    /// `ABSENT_FIELD` on kernels whose event predates large folios (one page per event).
    pub add_order: u32,
    pub delete_order: u32,
}

impl FilemapLayout {
    pub const UNSET: FilemapLayout = FilemapLayout {
        get_pages_ino: ABSENT_FIELD,
        get_pages_dev: ABSENT_FIELD,
        get_pages_index: ABSENT_FIELD,
        get_pages_last_index: ABSENT_FIELD,
        add_ino: ABSENT_FIELD,
        add_dev: ABSENT_FIELD,
        add_order: ABSENT_FIELD,
        delete_order: ABSENT_FIELD,
    };
}

/// Where a file's identity and size are in kernel memory (from the kernel's BTF), so that
/// the raw mm_filemap_get_pages program can bound a read's page range by the file's size:
/// a read asks for as many bytes as its buffer holds, however small the file.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InodeLayout {
    /// `struct address_space` -> `host` (`struct inode *`).
    pub mapping_host: u32,
    /// `struct inode` -> `i_sb` (`struct super_block *`).
    pub inode_sb: u32,
    /// `struct inode` -> `i_ino`.
    pub inode_ino: u32,
    /// `struct inode` -> `i_size` (`loff_t`).
    pub inode_size: u32,
    /// `struct super_block` -> `s_dev`.
    pub sb_dev: u32,
    /// log2 of the page size.
    pub page_shift: u32,
}

impl InodeLayout {
    pub const UNSET: InodeLayout = InodeLayout {
        mapping_host: ABSENT_FIELD,
        inode_sb: ABSENT_FIELD,
        inode_ino: ABSENT_FIELD,
        inode_size: ABSENT_FIELD,
        sb_dev: ABSENT_FIELD,
        page_shift: 12,
    };
}

/// Where a read's request is, for the BTF fallback of mm_filemap_get_pages: an fexit program
/// on a read function `(struct kiocb *, struct iov_iter *, ssize_t)` (`filemap_read`, or
/// `generic_file_buffered_read` before 5.12). Offsets from the kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadHookLayout {
    /// `struct kiocb` -> `ki_filp` (`struct file *`).
    pub kiocb_filp: u32,
    /// `struct kiocb` -> `ki_pos` (`loff_t`).
    pub kiocb_pos: u32,
    /// `struct file` -> `f_mapping` (`struct address_space *`).
    pub file_mapping: u32,
    /// `struct iov_iter` -> `count` (`size_t`).
    pub iter_count: u32,
}

impl ReadHookLayout {
    pub const UNSET: ReadHookLayout = ReadHookLayout {
        kiocb_filp: ABSENT_FIELD,
        kiocb_pos: ABSENT_FIELD,
        file_mapping: ABSENT_FIELD,
        iter_count: ABSENT_FIELD,
    };
}

/// Where a read(2)/pread64(2) request is, for the last fallback of mm_filemap_get_pages
/// (kernels without it where BPF trampolines are not available either): the syscall
/// tracepoints' fields (format files) and the way from the current task to the file of a
/// descriptor (BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallReadLayout {
    /// sys_enter_read/sys_enter_pread64 `fd` and `count` (the same offsets in both).
    pub enter_fd: u32,
    pub enter_count: u32,
    /// sys_enter_pread64 `pos`.
    pub enter_pos: u32,
    /// sys_exit_read/sys_exit_pread64 `ret`.
    pub exit_ret: u32,
    /// `struct task_struct` -> `files`, `struct files_struct` -> `fdt`,
    /// `struct fdtable` -> `fd` (`struct file **`) and `max_fds`.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub fdt_max_fds: u32,
    /// `struct file` -> `f_pos`, `f_flags`, `f_mapping`.
    pub file_pos: u32,
    pub file_flags: u32,
    pub file_mapping: u32,
    /// The O_DIRECT flag on this architecture: such reads bypass the page cache.
    pub o_direct: u32,
}

impl SyscallReadLayout {
    pub const UNSET: SyscallReadLayout = SyscallReadLayout {
        enter_fd: ABSENT_FIELD,
        enter_count: ABSENT_FIELD,
        enter_pos: ABSENT_FIELD,
        exit_ret: ABSENT_FIELD,
        task_files: ABSENT_FIELD,
        files_fdt: ABSENT_FIELD,
        fdt_fd: ABSENT_FIELD,
        fdt_max_fds: ABSENT_FIELD,
        file_pos: ABSENT_FIELD,
        file_flags: ABSENT_FIELD,
        file_mapping: ABSENT_FIELD,
        o_direct: 0,
    };
}

/// A read(2)/pread64(2) between its enter and exit events (RD_INFLIGHT, by pid_tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadInFlight {
    /// The file's `struct address_space *`; 0 when the slot is idle.
    pub mapping: u64,
    pub pos: u64,
    pub count: u64,
}

/// Offsets of the vmscan tracepoint fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmscanLayout {
    pub shrink_nr_scanned: u32,
    pub shrink_nr_reclaimed: u32,
}

impl VmscanLayout {
    pub const UNSET: VmscanLayout = VmscanLayout {
        shrink_nr_scanned: ABSENT_FIELD,
        shrink_nr_reclaimed: ABSENT_FIELD,
    };
}

/// Offsets of the process life-cycle tracepoint fields (task:task_rename,
/// sched:sched_process_exit).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessLayout {
    pub rename_pid: u32,
    pub rename_newcomm: u32,
    /// `ABSENT_FIELD` on kernels without it: the leader's exit stands for the group's.
    pub exit_group_dead: u32,
    /// `task_struct.group_leader` and `task_struct.comm` (BTF; `ABSENT_FIELD` without it):
    /// a process is recorded under its main thread's name even when another thread (an
    /// io_uring worker, a named worker thread) is the first to count.
    pub task_group_leader: u32,
    pub task_comm: u32,
    pub _pad: u32,
}

impl ProcessLayout {
    pub const UNSET: ProcessLayout = ProcessLayout {
        rename_pid: ABSENT_FIELD,
        rename_newcomm: ABSENT_FIELD,
        exit_group_dead: ABSENT_FIELD,
        task_group_leader: ABSENT_FIELD,
        task_comm: ABSENT_FIELD,
        _pad: 0,
    };
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: all of these are #[repr(C)] plain data with explicit padding and no pointers.
    unsafe impl aya::Pod for FadviseKey {}
    unsafe impl aya::Pod for FadviseCounts {}
    unsafe impl aya::Pod for ProcessKey {}
    unsafe impl aya::Pod for PageCacheCounts {}
    unsafe impl aya::Pod for ReclaimKey {}
    unsafe impl aya::Pod for ReclaimCounts {}
    unsafe impl aya::Pod for ProcessInfo {}
    unsafe impl aya::Pod for ReadState {}
    unsafe impl aya::Pod for ReclaimInFlightKey {}
    unsafe impl aya::Pod for FadviseLayout {}
    unsafe impl aya::Pod for FilemapLayout {}
    unsafe impl aya::Pod for VmscanLayout {}
    unsafe impl aya::Pod for ProcessLayout {}
    unsafe impl aya::Pod for PidNamespace {}
    unsafe impl aya::Pod for InodeLayout {}
    unsafe impl aya::Pod for ReadHookLayout {}
    unsafe impl aya::Pod for SyscallReadLayout {}
    unsafe impl aya::Pod for ReadInFlight {}
    unsafe impl aya::Pod for IoKey {}
    unsafe impl aya::Pod for IoCounts {}
    unsafe impl aya::Pod for IoInFlight {}
    unsafe impl aya::Pod for IoLayout {}
    unsafe impl aya::Pod for OwnerKey {}
    unsafe impl aya::Pod for OwnerCounts {}
    unsafe impl aya::Pod for OwnerLayout {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn derived_sums_add_every_field() {
        let mut pc = PageCacheCounts {
            read_attempts: 1,
            misses: 2,
            adds: 3,
            evictions: 4,
        };
        pc += PageCacheCounts {
            read_attempts: 10,
            misses: 20,
            adds: 30,
            evictions: 40,
        };
        assert_eq!(
            pc,
            PageCacheCounts {
                read_attempts: 11,
                misses: 22,
                adds: 33,
                evictions: 44,
            }
        );
        let mut fadvise = FadviseCounts {
            calls: 5,
            successes: 4,
        };
        fadvise += &FadviseCounts {
            calls: 1,
            successes: 1,
        };
        assert_eq!((fadvise.calls, fadvise.successes), (6, 5));
        let mut reclaim = ReclaimCounts::default();
        reclaim += ReclaimCounts {
            episodes: 2,
            stalled_ns: 7,
        };
        assert_eq!((reclaim.episodes, reclaim.stalled_ns), (2, 7));
    }

    #[test]
    fn shared_types_have_no_implicit_padding() {
        assert_eq!(size_of::<FadviseKey>(), 8);
        assert_eq!(size_of::<FadviseCounts>(), 16);
        assert_eq!(size_of::<ProcessKey>(), 4);
        assert_eq!(size_of::<PageCacheCounts>(), 32);
        assert_eq!(size_of::<ReclaimKey>(), 8);
        assert_eq!(size_of::<ReclaimCounts>(), 16);
        assert_eq!(size_of::<ReadState>(), 72);
        assert_eq!(size_of::<ReadHookLayout>(), 16);
        assert_eq!(size_of::<SyscallReadLayout>(), 48);
        assert_eq!(size_of::<ReadInFlight>(), 24);
        assert_eq!(size_of::<ReclaimInFlightKey>(), 16);
        assert_eq!(size_of::<FadviseLayout>(), 32);
        assert_eq!(size_of::<FilemapLayout>(), 32);
        assert_eq!(size_of::<VmscanLayout>(), 8);
        assert_eq!(size_of::<ProcessLayout>(), 24);
        assert_eq!(size_of::<PidNamespace>(), 24);
        assert_eq!(size_of::<InodeLayout>(), 24);
        assert_eq!(size_of::<ProcessInfo>(), 24);
        assert_eq!(size_of::<IoKey>(), 8);
        assert_eq!(size_of::<IoCounts>(), 32);
        assert_eq!(size_of::<IoInFlight>(), 16);
        assert_eq!(size_of::<IoLayout>(), 24);
        assert_eq!(size_of::<OwnerKey>(), 16);
        assert_eq!(size_of::<OwnerCounts>(), 32);
        assert_eq!(size_of::<OwnerLayout>(), 32);
        assert!(align_of::<ReadState>() <= 8);
    }

    #[test]
    fn latency_bucket_is_bit_length() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 1);
        assert_eq!(latency_bucket(2), 2);
        assert_eq!(latency_bucket(3), 2);
        assert_eq!(latency_bucket(4), 3);
        assert_eq!(latency_bucket(1023), 10);
        assert_eq!(latency_bucket(1024), 11);
        for shift in 0..39u32 {
            let ns = 1u64 << shift;
            assert_eq!(latency_bucket(ns), shift + 1, "2^{shift}");
            assert_eq!(latency_bucket(ns * 2 - 1), shift + 1, "2^{}-1", shift + 1);
        }
        assert_eq!(latency_bucket(u64::MAX), (LATENCY_BUCKETS - 1) as u32);
    }

    #[test]
    fn bucket_bounds_contain_their_values() {
        for ns in [0u64, 1, 7, 1000, 123_456_789, 1 << 37] {
            let b = latency_bucket(ns);
            if let Some(upper) = latency_bucket_upper_ns(b) {
                assert!(ns < upper, "{ns} < {upper}");
            }
            if b > 0 {
                let lower = latency_bucket_upper_ns(b - 1).unwrap();
                assert!(ns >= lower, "{ns} >= {lower}");
            }
        }
    }

    #[test]
    fn advice_numbering_follows_the_kernel() {
        assert_eq!(Advice::from_raw(4), Advice::DontNeed);
        assert_eq!(Advice::from_raw(5), Advice::NoReuse);
        assert_eq!(Advice::from_raw(6), Advice::Other);
        // An `int` advice of -1, sign-extended.
        assert_eq!(Advice::from_raw(-1i64 as u64), Advice::Other);
        for (slot, advice) in Advice::ALL.iter().enumerate() {
            assert_eq!(*advice as usize, slot);
            assert_eq!(Advice::from_slot(slot as u32), Some(*advice));
        }
    }
}
