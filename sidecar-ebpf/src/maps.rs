//! Every map of the object. Names are `sidecar_common::map_names`.
//!
//! Interval counters exist twice, one per epoch: programs write into the map of the active
//! epoch, and the drainer empties the other one after switching epochs (see `counting.rs`).
//! Capacities here are placeholders: userspace sizes every map from its configuration.

use aya_ebpf::{
    btf_maps::{Array, ArrayOfMaps, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    macros::btf_map,
};
use sidecar_common::{
    Advice, FadviseCounts, FadviseKey, GaugeSlot, HostCounter, IO_OVERFLOW_SLOTS, IoCounts,
    IoInFlight, IoKey, OwnerBy, OwnerCounts, OwnerKey, PageCacheCounts, ProcessInfo, ProcessKey,
    RECLAIM_OVERFLOW_SLOTS, ReadInFlight, ReadState, ReclaimCounts, ReclaimInFlightKey, ReclaimKey,
};

const PROCESSES: usize = 8192;
const THREADS: usize = 16384;

/// One slot, holding one of two single-element arrays whose value is 0 or 1. Replacing the
/// slot from userspace returns only after an RCU grace period, which is what makes the
/// epoch switch a barrier.
#[btf_map(name = "EPOCH")]
pub(crate) static EPOCH: ArrayOfMaps<Array<u32, 1>, 1> = ArrayOfMaps::new();

#[btf_map(name = "FADV_CNT_0")]
pub(crate) static FADV_CNT_0: PerCpuHashMap<FadviseKey, FadviseCounts, PROCESSES> =
    PerCpuHashMap::new();
#[btf_map(name = "FADV_CNT_1")]
pub(crate) static FADV_CNT_1: PerCpuHashMap<FadviseKey, FadviseCounts, PROCESSES> =
    PerCpuHashMap::new();
#[btf_map(name = "FADV_OVF_0")]
pub(crate) static FADV_OVF_0: PerCpuArray<FadviseCounts, { Advice::COUNT }> = PerCpuArray::new();
#[btf_map(name = "FADV_OVF_1")]
pub(crate) static FADV_OVF_1: PerCpuArray<FadviseCounts, { Advice::COUNT }> = PerCpuArray::new();

#[btf_map(name = "PC_CNT_0")]
pub(crate) static PC_CNT_0: PerCpuHashMap<ProcessKey, PageCacheCounts, PROCESSES> =
    PerCpuHashMap::new();
#[btf_map(name = "PC_CNT_1")]
pub(crate) static PC_CNT_1: PerCpuHashMap<ProcessKey, PageCacheCounts, PROCESSES> =
    PerCpuHashMap::new();
#[btf_map(name = "PC_OVF_0")]
pub(crate) static PC_OVF_0: PerCpuArray<PageCacheCounts, 1> = PerCpuArray::new();
#[btf_map(name = "PC_OVF_1")]
pub(crate) static PC_OVF_1: PerCpuArray<PageCacheCounts, 1> = PerCpuArray::new();

#[btf_map(name = "RCL_CNT_0")]
pub(crate) static RCL_CNT_0: PerCpuHashMap<ReclaimKey, ReclaimCounts, PROCESSES> =
    PerCpuHashMap::new();
#[btf_map(name = "RCL_CNT_1")]
pub(crate) static RCL_CNT_1: PerCpuHashMap<ReclaimKey, ReclaimCounts, PROCESSES> =
    PerCpuHashMap::new();
#[btf_map(name = "RCL_OVF_0")]
pub(crate) static RCL_OVF_0: PerCpuArray<ReclaimCounts, RECLAIM_OVERFLOW_SLOTS> =
    PerCpuArray::new();
#[btf_map(name = "RCL_OVF_1")]
pub(crate) static RCL_OVF_1: PerCpuArray<ReclaimCounts, RECLAIM_OVERFLOW_SLOTS> =
    PerCpuArray::new();

#[btf_map(name = "IO_CNT_0")]
pub(crate) static IO_CNT_0: PerCpuHashMap<IoKey, IoCounts, PROCESSES> = PerCpuHashMap::new();
#[btf_map(name = "IO_CNT_1")]
pub(crate) static IO_CNT_1: PerCpuHashMap<IoKey, IoCounts, PROCESSES> = PerCpuHashMap::new();
#[btf_map(name = "IO_OVF_0")]
pub(crate) static IO_OVF_0: PerCpuArray<IoCounts, IO_OVERFLOW_SLOTS> = PerCpuArray::new();
#[btf_map(name = "IO_OVF_1")]
pub(crate) static IO_OVF_1: PerCpuArray<IoCounts, IO_OVERFLOW_SLOTS> = PerCpuArray::new();

#[btf_map(name = "OWN_CNT_0")]
pub(crate) static OWN_CNT_0: PerCpuHashMap<OwnerKey, OwnerCounts, PROCESSES> = PerCpuHashMap::new();
#[btf_map(name = "OWN_CNT_1")]
pub(crate) static OWN_CNT_1: PerCpuHashMap<OwnerKey, OwnerCounts, PROCESSES> = PerCpuHashMap::new();
#[btf_map(name = "OWN_OVF_0")]
pub(crate) static OWN_OVF_0: PerCpuArray<OwnerCounts, { OwnerBy::COUNT }> = PerCpuArray::new();
#[btf_map(name = "OWN_OVF_1")]
pub(crate) static OWN_OVF_1: PerCpuArray<OwnerCounts, { OwnerBy::COUNT }> = PerCpuArray::new();

#[btf_map(name = "HOST_0")]
pub(crate) static HOST_0: PerCpuArray<u64, { HostCounter::COUNT }> = PerCpuArray::new();
#[btf_map(name = "HOST_1")]
pub(crate) static HOST_1: PerCpuArray<u64, { HostCounter::COUNT }> = PerCpuArray::new();

/// The comm of each process counted in an interval (not per CPU: written once per process).
#[btf_map(name = "PROC_0")]
pub(crate) static PROC_0: HashMap<ProcessKey, ProcessInfo, PROCESSES> = HashMap::new();
#[btf_map(name = "PROC_1")]
pub(crate) static PROC_1: HashMap<ProcessKey, ProcessInfo, PROCESSES> = HashMap::new();

/// Processes whose name userspace has from an earlier interval (see `note_process`). LRU:
/// a process whose exit was missed cannot pin an entry.
#[btf_map(name = "PROC_SEEN")]
pub(crate) static PROC_SEEN: LruHashMap<ProcessKey, u32, PROCESSES> = LruHashMap::new();

/// Advice slot of each thread inside posix_fadvise, by pid_tgid. LRU so that a thread that
/// never returns (or entered before we attached) cannot pin an entry forever.
#[btf_map(name = "FADV_INFLIGHT")]
pub(crate) static FADV_INFLIGHT: LruHashMap<u64, u32, THREADS> = LruHashMap::new();

/// Each thread's last read-path range and its pending misses, by pid_tgid.
#[btf_map(name = "READ_STATE")]
pub(crate) static READ_STATE: LruHashMap<u64, ReadState, THREADS> = LruHashMap::new();

/// Each thread's read(2)/pread64(2) in progress, for the syscall fallback of the read path.
#[btf_map(name = "RD_INFLIGHT")]
pub(crate) static RD_INFLIGHT: LruHashMap<u64, ReadInFlight, THREADS> = LruHashMap::new();

/// Start time (ns) of each thread's reclaim episode in progress.
#[btf_map(name = "RCL_INFLIGHT")]
pub(crate) static RCL_INFLIGHT: HashMap<ReclaimInFlightKey, u64, THREADS> = HashMap::new();

/// Start time and kind of each thread's read or sync syscall in progress.
#[btf_map(name = "IO_INFLIGHT")]
pub(crate) static IO_INFLIGHT: LruHashMap<u64, IoInFlight, THREADS> = LruHashMap::new();

/// Never cleared: the sum over CPUs is the gauge.
#[btf_map(name = "GAUGES")]
pub(crate) static GAUGES: PerCpuArray<i64, { GaugeSlot::COUNT }> = PerCpuArray::new();

/// The maps of one epoch, so that programs name the epoch once.
pub(crate) struct EpochMaps {
    pub(crate) fadvise: &'static PerCpuHashMap<FadviseKey, FadviseCounts, PROCESSES>,
    pub(crate) fadvise_overflow: &'static PerCpuArray<FadviseCounts, { Advice::COUNT }>,
    pub(crate) page_cache: &'static PerCpuHashMap<ProcessKey, PageCacheCounts, PROCESSES>,
    pub(crate) page_cache_overflow: &'static PerCpuArray<PageCacheCounts, 1>,
    pub(crate) reclaim: &'static PerCpuHashMap<ReclaimKey, ReclaimCounts, PROCESSES>,
    pub(crate) reclaim_overflow: &'static PerCpuArray<ReclaimCounts, RECLAIM_OVERFLOW_SLOTS>,
    pub(crate) io: &'static PerCpuHashMap<IoKey, IoCounts, PROCESSES>,
    pub(crate) io_overflow: &'static PerCpuArray<IoCounts, IO_OVERFLOW_SLOTS>,
    pub(crate) owner: &'static PerCpuHashMap<OwnerKey, OwnerCounts, PROCESSES>,
    pub(crate) owner_overflow: &'static PerCpuArray<OwnerCounts, { OwnerBy::COUNT }>,
    pub(crate) host: &'static PerCpuArray<u64, { HostCounter::COUNT }>,
    pub(crate) processes: &'static HashMap<ProcessKey, ProcessInfo, PROCESSES>,
}

/// The active epoch, or `None` before userspace has armed it.
#[inline(always)]
pub(crate) fn active_epoch() -> Option<u32> {
    EPOCH.get_value(0, &0).copied()
}

/// Runs `$body` with `$maps` bound to the [`EpochMaps`] of the active epoch; does nothing
/// before userspace has armed the epoch. Each arm builds its maps from constants: the
/// verifier must see which map every helper call touches, so the choice is a branch around
/// the whole body, never a pointer loaded from memory.
macro_rules! in_active_epoch {
    (|$maps:ident| $body:expr) => {
        match $crate::maps::active_epoch() {
            Some(0) => {
                let $maps = $crate::maps::EpochMaps {
                    fadvise: &$crate::maps::FADV_CNT_0,
                    fadvise_overflow: &$crate::maps::FADV_OVF_0,
                    page_cache: &$crate::maps::PC_CNT_0,
                    page_cache_overflow: &$crate::maps::PC_OVF_0,
                    reclaim: &$crate::maps::RCL_CNT_0,
                    reclaim_overflow: &$crate::maps::RCL_OVF_0,
                    io: &$crate::maps::IO_CNT_0,
                    io_overflow: &$crate::maps::IO_OVF_0,
                    owner: &$crate::maps::OWN_CNT_0,
                    owner_overflow: &$crate::maps::OWN_OVF_0,
                    host: &$crate::maps::HOST_0,
                    processes: &$crate::maps::PROC_0,
                };
                $body
            }
            Some(_) => {
                let $maps = $crate::maps::EpochMaps {
                    fadvise: &$crate::maps::FADV_CNT_1,
                    fadvise_overflow: &$crate::maps::FADV_OVF_1,
                    page_cache: &$crate::maps::PC_CNT_1,
                    page_cache_overflow: &$crate::maps::PC_OVF_1,
                    reclaim: &$crate::maps::RCL_CNT_1,
                    reclaim_overflow: &$crate::maps::RCL_OVF_1,
                    io: &$crate::maps::IO_CNT_1,
                    io_overflow: &$crate::maps::IO_OVF_1,
                    owner: &$crate::maps::OWN_CNT_1,
                    owner_overflow: &$crate::maps::OWN_OVF_1,
                    host: &$crate::maps::HOST_1,
                    processes: &$crate::maps::PROC_1,
                };
                $body
            }
            None => {}
        }
    };
}
pub(crate) use in_active_epoch;
