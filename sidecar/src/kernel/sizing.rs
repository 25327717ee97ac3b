//! How much kernel memory the per-process maps take, and how many processes fit a budget.
//!
//! The keyed maps are preallocated per-CPU hashes: every entry holds one value per possible
//! CPU, in both epochs. On a 2-CPU host a tracked process costs under 1 KiB; on a 256-CPU
//! host over 30 KiB. `limits.max_kernel_memory` caps the total, lowering the number of
//! tracked processes on big hosts rather than taking hundreds of MiB unasked.

use std::mem::size_of;

use sidecar_common::{
    FadviseCounts, IoCounts, OwnerCounts, PageCacheCounts, ProcessInfo, ReclaimCounts,
};

/// Per-entry overhead of a preallocated BPF hash map (element header, key, per-CPU
/// pointer), as measured from the maps' `memlock` on Linux 6.18.
pub const HASH_ENTRY_OVERHEAD: u64 = 80;

/// Entries of the io map per tracked process: its keys are (process, kind of call, latency
/// bucket), and a process that reads and syncs fills a few buckets of each.
pub const IO_ENTRIES_PER_PROCESS: u32 = 4;

/// Kernel bytes one tracked process costs across both epochs: a fadvise, a page-cache, a
/// reclaim and an owner entry and `IO_ENTRIES_PER_PROCESS` io entries, each with a value
/// per CPU, and a process record.
pub fn bytes_per_process(cpus: u64) -> u64 {
    let io = u64::from(IO_ENTRIES_PER_PROCESS);
    let per_cpu_values = (size_of::<FadviseCounts>()
        + size_of::<PageCacheCounts>()
        + size_of::<ReclaimCounts>()
        + size_of::<OwnerCounts>()) as u64
        + io * size_of::<IoCounts>() as u64;
    let per_epoch = (4 + io) * HASH_ENTRY_OVERHEAD
        + per_cpu_values * cpus
        + HASH_ENTRY_OVERHEAD
        + size_of::<ProcessInfo>() as u64;
    2 * per_epoch
}

/// The number of processes to track: as asked, unless that would exceed the budget.
pub fn fit_processes(requested: u32, budget_bytes: u64, cpus: u64) -> u32 {
    let affordable = budget_bytes / bytes_per_process(cpus).max(1);
    u32::try_from(affordable)
        .unwrap_or(u32::MAX)
        .min(requested)
        .max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_grows_with_cpus() {
        assert_eq!(
            bytes_per_process(2),
            2 * (9 * 80 + (64 + 32 + 4 * 32) * 2 + 24)
        );
        assert!(bytes_per_process(256) > 30 * 1024);
    }

    #[test]
    fn the_budget_caps_processes_on_big_hosts() {
        let budget = 256 << 20;
        assert_eq!(fit_processes(8192, budget, 2), 8192);
        assert_eq!(fit_processes(8192, budget, 64), 8192);
        let big = fit_processes(8192, budget, 512);
        assert!(big < 8192 && big > 1000, "{big}");
        assert!(u64::from(big) * bytes_per_process(512) <= budget);
        assert_eq!(fit_processes(8192, 0, 2), 16);
    }
}
