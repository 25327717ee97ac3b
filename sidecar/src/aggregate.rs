//! From the kernel's per-process counts to per-workload intervals.

use std::time::{Duration, SystemTime};

use sidecar_common::{
    Advice, HostCounter, IoOp, LATENCY_BUCKETS, OwnerBy, ProcessInfo, ReclaimKind,
};

use crate::{
    kernel::KernelDelta,
    store::{DrainInfo, HostCounts, Interval, Overflow, WorkloadCounts},
    workload::{Assignment, Classifier, TgidMap, WorkloadNames},
};

/// Classifies every process of `delta` and sums its counts into its workload. Overflowed
/// events (a kernel map was full) go to `other`.
pub fn aggregate(
    delta: &KernelDelta,
    classifier: &mut Classifier,
    names: &WorkloadNames,
    at: SystemTime,
    length: Duration,
) -> Interval {
    let mut interval = Interval::empty(names.len(), at);
    interval.length = length;
    let seen: TgidMap<&ProcessInfo> = delta
        .processes
        .iter()
        .map(|(key, info)| (key.tgid, info))
        .collect();
    let mut dropped_events = 0u64;
    classifier.begin_drain();
    // A process that exec'd is another program now: classify it afresh.
    for (key, info) in &delta.processes {
        if info.execed != 0 {
            classifier.forget(key.tgid);
        }
    }
    let mut workload_of = |tgid: u32| -> Option<usize> {
        let info = seen.get(&tgid);
        match classifier.classify_process(
            tgid,
            info.map(|info| &info.comm),
            info.is_some_and(|info| info.exited != 0),
        ) {
            Assignment::Workload(id) => Some(id.0 as usize),
            Assignment::Dropped => None,
        }
    };

    for (key, counts) in &delta.fadvise {
        let Some(workload) = workload_of(key.tgid) else {
            dropped_events += counts.calls;
            continue;
        };
        if let Some(slot) = interval.workloads[workload]
            .fadvise
            .get_mut(key.advice as usize)
        {
            *slot += counts;
        }
    }
    for (key, counts) in &delta.page_cache {
        let Some(workload) = workload_of(key.tgid) else {
            dropped_events += 1;
            continue;
        };
        interval.workloads[workload].page_cache += counts;
    }
    for (key, counts) in &delta.reclaim {
        let Some(kind) = ReclaimKind::from_raw(key.kind) else {
            continue;
        };
        let Some(workload) = workload_of(key.tgid) else {
            dropped_events += counts.episodes;
            continue;
        };
        interval.workloads[workload].reclaim[kind as usize].add_bucket(
            key.bucket as usize,
            counts.episodes,
            counts.stalled_ns,
        );
    }
    for (key, counts) in &delta.io {
        let Some(op) = IoOp::from_raw(key.op) else {
            continue;
        };
        let Some(workload) = workload_of(key.tgid) else {
            dropped_events += counts.events;
            continue;
        };
        interval.workloads[workload]
            .io
            .add_kernel(op, key.bucket as usize, counts);
    }
    for (key, counts) in &delta.owner {
        if OwnerBy::from_raw(key.by) != Some(OwnerBy::Process) {
            continue;
        }
        match u32::try_from(key.id).ok().and_then(&mut workload_of) {
            Some(workload) => interval.workloads[workload].refaults += counts,
            None => dropped_events += counts.file_refaults + counts.anon_refaults,
        }
    }
    // Exited processes had their last counts classified just above: forget them now.
    for (key, info) in &delta.processes {
        if info.exited != 0 {
            classifier.forget(key.tgid);
        }
    }
    // Pages by the memory cgroup that owns them: no process involved.
    for (key, counts) in &delta.owner {
        if OwnerBy::from_raw(key.by) != Some(OwnerBy::MemoryCgroup) {
            continue;
        }
        match classifier.classify_memcg(key.id) {
            Assignment::Workload(id) => interval.workloads[id.0 as usize].memcg += counts,
            Assignment::Dropped => {
                dropped_events +=
                    counts.adds + counts.evictions + counts.file_refaults + counts.anon_refaults;
            }
        }
    }
    classifier.end_drain();

    let other = &mut interval.workloads[names.other().0 as usize];
    add_overflow(other, delta);

    interval.host = HostCounts {
        lru_pages_scanned: delta.host(HostCounter::LruPagesScanned),
        lru_pages_reclaimed: delta.host(HostCounter::LruPagesReclaimed),
        kswapd_wakeups: delta.host(HostCounter::KswapdWakeups),
        overflow: Overflow {
            fadvise: delta.host(HostCounter::FadviseOverflowEvents),
            page_cache: delta.host(HostCounter::PageCacheOverflowEvents),
            reclaim: delta.host(HostCounter::ReclaimOverflowEvents),
            processes: delta.host(HostCounter::ProcessOverflowEvents),
            io: delta.host(HostCounter::IoOverflowEvents),
            memcg: delta.host(HostCounter::OwnerOverflowEvents),
        },
        field_read_errors: delta.host(HostCounter::FieldReadErrors),
        fadvise_calls_seen: delta.host(HostCounter::FadviseCallsSeen),
        dropped_process_events: dropped_events,
    };
    interval.direct_reclaim_in_progress = delta.direct_reclaim_in_progress;
    interval.drain = DrainInfo {
        duration: delta.drain_duration,
        switch_duration: delta.switch_duration,
        entries: delta.entries,
    };
    interval
}

fn add_overflow(other: &mut WorkloadCounts, delta: &KernelDelta) {
    for (slot, counts) in other.fadvise.iter_mut().zip(&delta.fadvise_overflow) {
        *slot += counts;
    }
    other.page_cache += delta.page_cache_overflow;
    for (slot, counts) in delta.reclaim_overflow.iter().enumerate() {
        if counts.episodes == 0 {
            continue;
        }
        let (kind, bucket) = (slot / LATENCY_BUCKETS, slot % LATENCY_BUCKETS);
        if let Some(histogram) = other.reclaim.get_mut(kind) {
            histogram.add_bucket(bucket, counts.episodes, counts.stalled_ns);
        }
    }
    for (slot, counts) in delta.io_overflow.iter().enumerate() {
        if counts.events == 0 {
            continue;
        }
        if let Some(op) = IoOp::from_raw((slot / LATENCY_BUCKETS) as u8) {
            other.io.add_kernel(op, slot % LATENCY_BUCKETS, counts);
        }
    }
    if let [by_process, by_memcg] = delta.owner_overflow.as_slice() {
        other.refaults += by_process;
        other.memcg += by_memcg;
    }
    debug_assert_eq!(delta.fadvise_overflow.len(), Advice::COUNT);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sidecar_common::{
        FadviseCounts, FadviseKey, PageCacheCounts, ProcessInfo, ProcessKey, ReclaimCounts,
        ReclaimKey, reclaim_overflow_slot,
    };

    use super::*;
    use crate::config::Config;

    fn comm(name: &str) -> ProcessInfo {
        let mut info = ProcessInfo::default();
        info.comm[..name.len()].copy_from_slice(name.as_bytes());
        info
    }

    #[test]
    fn per_process_counts_become_per_workload_and_overflow_goes_to_other() {
        let config = Config::parse(
            "workloads:\n  - name: jobs\n    comm: \"^job\"\n  - name: sync\n    comm: \"^sync\"\n",
            "t",
        )
        .unwrap();
        let names = WorkloadNames::from_config(&config);
        let mut classifier = Classifier::with_proc_root(&config, &names, Path::new("/nonexistent"));
        let mut delta = KernelDelta {
            fadvise_overflow: vec![FadviseCounts::default(); Advice::COUNT],
            reclaim_overflow: vec![
                ReclaimCounts::default();
                sidecar_common::RECLAIM_OVERFLOW_SLOTS
            ],
            host: vec![0; HostCounter::COUNT],
            ..KernelDelta::default()
        };
        let dontneed = Advice::DontNeed as u32;
        delta.fadvise = vec![
            (
                FadviseKey {
                    tgid: 1,
                    advice: dontneed,
                },
                FadviseCounts {
                    calls: 3,
                    successes: 2,
                },
            ),
            (
                FadviseKey {
                    tgid: 2,
                    advice: dontneed,
                },
                FadviseCounts {
                    calls: 4,
                    successes: 4,
                },
            ),
            (
                FadviseKey {
                    tgid: 3,
                    advice: dontneed,
                },
                FadviseCounts {
                    calls: 5,
                    successes: 5,
                },
            ),
        ];
        delta.processes = vec![
            (ProcessKey { tgid: 1 }, comm("job-a")),
            (ProcessKey { tgid: 2 }, comm("job-b")),
            (ProcessKey { tgid: 3 }, comm("sync-1")),
            // Exited in this interval: classified for its counts, then forgotten.
            (
                ProcessKey { tgid: 9 },
                ProcessInfo {
                    exited: 1,
                    ..comm("job-x")
                },
            ),
        ];
        delta.fadvise.push((
            FadviseKey {
                tgid: 9,
                advice: dontneed,
            },
            FadviseCounts {
                calls: 1,
                successes: 1,
            },
        ));
        delta.page_cache = vec![(
            ProcessKey { tgid: 3 },
            PageCacheCounts {
                read_attempts: 10,
                misses: 4,
                adds: 4,
                evictions: 1,
            },
        )];
        delta.reclaim = vec![(
            ReclaimKey {
                tgid: 1,
                kind: ReclaimKind::Memcg as u8,
                bucket: 20,
                _pad: [0; 2],
            },
            ReclaimCounts {
                episodes: 2,
                stalled_ns: 3_000_000,
            },
        )];
        delta.fadvise_overflow[dontneed as usize] = FadviseCounts {
            calls: 7,
            successes: 7,
        };
        delta.reclaim_overflow[reclaim_overflow_slot(ReclaimKind::Direct, 5) as usize] =
            ReclaimCounts {
                episodes: 1,
                stalled_ns: 20,
            };
        delta.host[HostCounter::LruPagesScanned as usize] = 99;
        delta.host[HostCounter::FadviseOverflowEvents as usize] = 7;

        let interval = aggregate(
            &delta,
            &mut classifier,
            &names,
            SystemTime::now(),
            Duration::from_secs(1),
        );
        let jobs = interval.workload(names.id("jobs").unwrap());
        assert_eq!(
            jobs.fadvise[dontneed as usize],
            FadviseCounts {
                calls: 8,
                successes: 7
            }
        );
        assert_eq!(jobs.reclaim[ReclaimKind::Memcg as usize].count, 2);
        assert_eq!(jobs.reclaim[ReclaimKind::Memcg as usize].buckets[20], 2);
        let sync = interval.workload(names.id("sync").unwrap());
        assert_eq!(sync.fadvise[dontneed as usize].calls, 5);
        assert_eq!(sync.page_cache.read_attempts, 10);
        let other = interval.workload(names.other());
        assert_eq!(other.fadvise[dontneed as usize].calls, 7);
        assert_eq!(other.reclaim[ReclaimKind::Direct as usize].buckets[5], 1);
        assert_eq!(interval.host.lru_pages_scanned, 99);
        assert_eq!(interval.host.overflow.fadvise, 7);
        // Nothing is lost: the sum over workloads is every call the kernel counted.
        let total: u64 = interval
            .workloads
            .iter()
            .map(|w| w.fadvise_totals().calls)
            .sum();
        assert_eq!(total, 3 + 4 + 5 + 7 + 1);
        // The exited process is no longer cached; the others are.
        assert_eq!(classifier.tracked(), 3);
    }
}
