//! Per-workload counts: each drain's interval, and the cumulative totals since start.
//!
//! The kernel holds deltas; the store turns them into monotonic counters for Prometheus and
//! keeps the last interval for rates (and, bounded, recent intervals for the APIs).

use std::{
    collections::VecDeque,
    time::{Duration, SystemTime},
};

use sidecar_common::{
    Advice, FadviseCounts, LATENCY_BUCKETS, PageCacheCounts, ReclaimKind, latency_bucket,
};

use crate::{
    kernel::ProgramStats,
    workload::{WorkloadId, WorkloadNames},
};

/// Stall times in the kernel's log2 buckets (see `sidecar_common::latency_bucket`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    pub buckets: [u64; LATENCY_BUCKETS],
    pub count: u64,
    pub sum_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: [0; LATENCY_BUCKETS],
            count: 0,
            sum_ns: 0,
        }
    }
}

impl LatencyHistogram {
    /// Upper bound (seconds) of the bucket holding the `q` quantile; `None` when empty.
    /// The last bucket is open: its lower bound is returned instead.
    pub fn quantile_seconds(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_bound_seconds(bucket));
            }
        }
        None
    }

    /// Upper bound (seconds) of the highest non-empty bucket.
    pub fn max_seconds(&self) -> Option<f64> {
        self.buckets
            .iter()
            .rposition(|&c| c > 0)
            .map(bucket_bound_seconds)
    }

    pub fn mean_seconds(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / self.count as f64 / 1e9)
    }

    pub fn add_bucket(&mut self, bucket: usize, episodes: u64, stalled_ns: u64) {
        let bucket = bucket.min(LATENCY_BUCKETS - 1);
        self.buckets[bucket] += episodes;
        self.count += episodes;
        self.sum_ns += stalled_ns;
    }

    pub fn record(&mut self, stalled_ns: u64) {
        self.add_bucket(latency_bucket(stalled_ns) as usize, 1, stalled_ns);
    }

    pub fn add(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
    }
}

fn bucket_bound_seconds(bucket: usize) -> f64 {
    let bucket = bucket as u32;
    let ns =
        sidecar_common::latency_bucket_upper_ns(bucket).unwrap_or(1u64 << bucket.saturating_sub(1));
    ns as f64 / 1e9
}

/// Everything counted for one workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadCounts {
    /// Indexed by advice slot.
    pub fadvise: [FadviseCounts; Advice::COUNT],
    pub page_cache: PageCacheCounts,
    /// Indexed by `ReclaimKind`.
    pub reclaim: [LatencyHistogram; ReclaimKind::COUNT],
}

impl WorkloadCounts {
    pub fn add(&mut self, other: &WorkloadCounts) {
        for (mine, theirs) in self.fadvise.iter_mut().zip(other.fadvise.iter()) {
            mine.calls += theirs.calls;
            mine.successes += theirs.successes;
        }
        let (mine, theirs) = (&mut self.page_cache, &other.page_cache);
        mine.requested_pages += theirs.requested_pages;
        mine.missed_pages += theirs.missed_pages;
        mine.added_pages += theirs.added_pages;
        mine.evicted_pages += theirs.evicted_pages;
        for (mine, theirs) in self.reclaim.iter_mut().zip(other.reclaim.iter()) {
            mine.add(theirs);
        }
    }

    pub fn fadvise_totals(&self) -> FadviseCounts {
        self.fadvise
            .iter()
            .fold(FadviseCounts::default(), |acc, c| FadviseCounts {
                calls: acc.calls + c.calls,
                successes: acc.successes + c.successes,
            })
    }

    pub fn is_empty(&self) -> bool {
        *self == WorkloadCounts::default()
    }
}

/// Events that had to go to an overflow slot because a kernel map was full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overflow {
    pub fadvise: u64,
    pub page_cache: u64,
    pub reclaim: u64,
    pub processes: u64,
}

/// Host-wide counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCounts {
    pub lru_pages_scanned: u64,
    pub lru_pages_reclaimed: u64,
    pub kswapd_wakeups: u64,
    pub overflow: Overflow,
    pub field_read_errors: u64,
    /// Events of processes dropped by `unmatched: drop` (still in host totals).
    pub dropped_process_events: u64,
    /// Every fadvise call the kernel saw, whatever its workload.
    pub fadvise_calls_seen: u64,
}

impl HostCounts {
    pub fn add(&mut self, other: &HostCounts) {
        self.lru_pages_scanned += other.lru_pages_scanned;
        self.lru_pages_reclaimed += other.lru_pages_reclaimed;
        self.kswapd_wakeups += other.kswapd_wakeups;
        self.overflow.fadvise += other.overflow.fadvise;
        self.overflow.page_cache += other.overflow.page_cache;
        self.overflow.reclaim += other.overflow.reclaim;
        self.overflow.processes += other.overflow.processes;
        self.field_read_errors += other.field_read_errors;
        self.dropped_process_events += other.dropped_process_events;
        self.fadvise_calls_seen += other.fadvise_calls_seen;
    }
}

/// How a drain went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainInfo {
    pub duration: Duration,
    /// Of which waiting for the epoch switch.
    pub switch_duration: Duration,
    /// Kernel map entries read and removed.
    pub entries: usize,
}

/// One drain's worth of counts.
#[derive(Clone, Debug)]
pub struct Interval {
    /// When the drain switched epochs: the end of the interval.
    pub at: SystemTime,
    /// Time since the previous drain.
    pub length: Duration,
    /// Indexed by `WorkloadId`.
    pub workloads: Vec<WorkloadCounts>,
    pub host: HostCounts,
    pub direct_reclaim_in_progress: i64,
    pub drain: DrainInfo,
}

impl Interval {
    pub fn empty(workloads: usize, at: SystemTime) -> Interval {
        Interval {
            at,
            length: Duration::ZERO,
            workloads: vec![WorkloadCounts::default(); workloads],
            host: HostCounts::default(),
            direct_reclaim_in_progress: 0,
            drain: DrainInfo::default(),
        }
    }

    pub fn workload(&self, id: WorkloadId) -> &WorkloadCounts {
        &self.workloads[id.0 as usize]
    }
}

/// Counts summed over consecutive intervals.
#[derive(Clone, Debug)]
pub struct Period {
    pub start: SystemTime,
    pub end: SystemTime,
    pub intervals: usize,
    /// Indexed by `WorkloadId`.
    pub workloads: Vec<WorkloadCounts>,
    pub host: HostCounts,
    /// At the end of the period.
    pub direct_reclaim_in_progress: i64,
}

impl Period {
    fn from_intervals<'a>(mut intervals: impl Iterator<Item = &'a Interval>) -> Option<Period> {
        let first = intervals.next()?;
        let mut period = Period {
            start: first.at.checked_sub(first.length).unwrap_or(first.at),
            end: first.at,
            intervals: 1,
            workloads: first.workloads.clone(),
            host: first.host,
            direct_reclaim_in_progress: first.direct_reclaim_in_progress,
        };
        for interval in intervals {
            for (total, delta) in period.workloads.iter_mut().zip(&interval.workloads) {
                total.add(delta);
            }
            period.host.add(&interval.host);
            period.end = interval.at;
            period.intervals += 1;
            period.direct_reclaim_in_progress = interval.direct_reclaim_in_progress;
        }
        Some(period)
    }

    pub fn workload(&self, id: WorkloadId) -> &WorkloadCounts {
        &self.workloads[id.0 as usize]
    }
}

/// Drain durations, for `sidecar_drain_duration_seconds`.
pub const DRAIN_DURATION_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Clone, Debug, Default)]
pub struct DurationHistogram {
    /// Non-cumulative counts per bucket of `DRAIN_DURATION_BUCKETS`, then +Inf.
    pub counts: [u64; DRAIN_DURATION_BUCKETS.len() + 1],
    pub sum_seconds: f64,
    pub count: u64,
}

impl DurationHistogram {
    pub fn observe(&mut self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = DRAIN_DURATION_BUCKETS
            .iter()
            .position(|&upper| seconds <= upper)
            .unwrap_or(DRAIN_DURATION_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

/// Cumulative totals plus recent intervals.
#[derive(Debug)]
pub struct Store {
    names: WorkloadNames,
    started: SystemTime,
    totals: Vec<WorkloadCounts>,
    host: HostCounts,
    recent: VecDeque<Interval>,
    retain: usize,
    drains: u64,
    drain_durations: DurationHistogram,
    programs: Vec<ProgramStats>,
    tracked_processes: usize,
    /// Report `other` even when nothing was counted there (unmatched: other).
    always_report_other: bool,
}

impl Store {
    pub fn new(names: WorkloadNames, retain: usize, always_report_other: bool) -> Store {
        Store {
            totals: vec![WorkloadCounts::default(); names.len()],
            names,
            started: SystemTime::now(),
            host: HostCounts::default(),
            recent: VecDeque::new(),
            retain: retain.max(1),
            drains: 0,
            drain_durations: DurationHistogram::default(),
            programs: Vec::new(),
            tracked_processes: 0,
            always_report_other,
        }
    }

    pub fn apply(&mut self, interval: Interval, programs: Vec<ProgramStats>, tracked: usize) {
        for (total, delta) in self.totals.iter_mut().zip(interval.workloads.iter()) {
            total.add(delta);
        }
        self.host.add(&interval.host);
        self.drains += 1;
        self.drain_durations.observe(interval.drain.duration);
        self.programs = programs;
        self.tracked_processes = tracked;
        if self.recent.len() == self.retain {
            self.recent.pop_front();
        }
        self.recent.push_back(interval);
    }

    pub const fn names(&self) -> &WorkloadNames {
        &self.names
    }

    pub const fn started(&self) -> SystemTime {
        self.started
    }

    /// Workloads to report: all configured ones, and `other` when it is in use.
    pub fn reported_workloads(&self) -> Vec<WorkloadId> {
        let other = self.names.other();
        self.names
            .ids()
            .filter(|&id| id != other || self.always_report_other || !self.totals(id).is_empty())
            .collect()
    }

    pub fn totals(&self, id: WorkloadId) -> &WorkloadCounts {
        &self.totals[id.0 as usize]
    }

    pub const fn host_totals(&self) -> &HostCounts {
        &self.host
    }

    pub fn last(&self) -> Option<&Interval> {
        self.recent.back()
    }

    pub fn recent(&self) -> impl DoubleEndedIterator<Item = &Interval> {
        self.recent.iter()
    }

    /// Intervals kept for windows.
    pub fn retained(&self) -> usize {
        self.retain
    }

    /// The last interval (`window` = None), or the sum of the retained intervals that
    /// ended within `window` of the last drain. `None` before the first drain.
    pub fn period(&self, window: Option<Duration>) -> Option<Period> {
        let last = self.recent.back()?;
        match window {
            None => Period::from_intervals(std::iter::once(last)),
            Some(window) => {
                let since = last.at.checked_sub(window).unwrap_or(std::time::UNIX_EPOCH);
                let first = self
                    .recent
                    .iter()
                    .position(|i| i.at > since)
                    .unwrap_or(self.recent.len() - 1);
                Period::from_intervals(self.recent.range(first..))
            }
        }
    }

    pub const fn drains(&self) -> u64 {
        self.drains
    }

    pub const fn drain_durations(&self) -> &DurationHistogram {
        &self.drain_durations
    }

    pub fn programs(&self) -> &[ProgramStats] {
        &self.programs
    }

    pub const fn tracked_processes(&self) -> usize {
        self.tracked_processes
    }
}

/// Percentages over one interval; `None` when the interval had nothing to divide by.
pub mod rates {
    use super::*;

    fn percent(part: u64, whole: u64) -> Option<f64> {
        (whole > 0).then(|| (part.min(whole) as f64 / whole as f64) * 100.0)
    }

    pub fn fadvise_success(counts: &WorkloadCounts) -> Option<f64> {
        let totals = counts.fadvise_totals();
        percent(totals.successes, totals.calls)
    }

    /// Requested pages that were cached. Readahead can add more pages than one interval's
    /// reads request, so misses are capped at the requests.
    pub fn cache_hit(counts: &WorkloadCounts) -> Option<f64> {
        let pc = &counts.page_cache;
        let hits = pc.requested_pages.saturating_sub(pc.missed_pages);
        percent(hits, pc.requested_pages)
    }

    pub fn cache_miss(counts: &WorkloadCounts) -> Option<f64> {
        let pc = &counts.page_cache;
        percent(pc.missed_pages, pc.requested_pages)
    }

    pub fn reclaim_efficiency(host: &HostCounts) -> Option<f64> {
        percent(host.lru_pages_reclaimed, host.lru_pages_scanned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn names() -> WorkloadNames {
        let config = Config::parse("workloads:\n  - name: a\n    pids: [1]\n", "t").unwrap();
        WorkloadNames::from_config(&config)
    }

    #[test]
    fn totals_accumulate_and_recent_is_bounded() {
        let names = names();
        let mut store = Store::new(names.clone(), 3, false);
        for i in 0..5u64 {
            let mut interval = Interval::empty(names.len(), SystemTime::now());
            interval.workloads[0].fadvise[Advice::DontNeed as usize].calls = i;
            interval.host.lru_pages_scanned = 10;
            store.apply(interval, Vec::new(), 0);
        }
        assert_eq!(
            store.totals(WorkloadId(0)).fadvise[Advice::DontNeed as usize].calls,
            10
        );
        assert_eq!(store.host_totals().lru_pages_scanned, 50);
        assert_eq!(store.recent().count(), 3);
        assert_eq!(store.drains(), 5);
        // `other` has nothing and is not always reported.
        assert_eq!(store.reported_workloads(), vec![WorkloadId(0)]);
    }

    #[test]
    fn rates_are_absent_without_events() {
        let mut counts = WorkloadCounts::default();
        assert_eq!(rates::cache_hit(&counts), None);
        assert_eq!(rates::fadvise_success(&counts), None);
        counts.page_cache.requested_pages = 200;
        counts.page_cache.missed_pages = 50;
        assert_eq!(rates::cache_hit(&counts), Some(75.0));
        assert_eq!(rates::cache_miss(&counts), Some(25.0));
        counts.page_cache.missed_pages = 500;
        assert_eq!(rates::cache_hit(&counts), Some(0.0));
        assert_eq!(rates::cache_miss(&counts), Some(100.0));
    }

    #[test]
    fn latency_histogram_records_into_log2_buckets() {
        let mut h = LatencyHistogram::default();
        h.record(1500);
        h.record(1024);
        assert_eq!(h.count, 2);
        assert_eq!(h.buckets[11], 2);
        assert_eq!(h.sum_ns, 2524);
    }

    #[test]
    fn periods_sum_the_window() {
        let names = names();
        let mut store = Store::new(names.clone(), 100, false);
        assert!(store.period(None).is_none());
        let start = SystemTime::now();
        for i in 1..=10u64 {
            let mut interval = Interval::empty(names.len(), start + Duration::from_secs(i));
            interval.length = Duration::from_secs(1);
            interval.workloads[0].page_cache.requested_pages = i;
            store.apply(interval, Vec::new(), 0);
        }
        let last = store.period(None).unwrap();
        assert_eq!(last.intervals, 1);
        assert_eq!(last.workload(WorkloadId(0)).page_cache.requested_pages, 10);
        let window = store.period(Some(Duration::from_secs(3))).unwrap();
        assert_eq!(window.intervals, 3);
        assert_eq!(
            window.workload(WorkloadId(0)).page_cache.requested_pages,
            8 + 9 + 10
        );
        assert_eq!(
            window.end.duration_since(window.start).unwrap(),
            Duration::from_secs(3)
        );
        let all = store.period(Some(Duration::from_secs(3600))).unwrap();
        assert_eq!(all.intervals, 10);
    }

    #[test]
    fn latency_summaries() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_seconds(0.5), None);
        for _ in 0..99 {
            h.record(1000); // bucket 10: [512, 1024) ns
        }
        h.record(5_000_000); // bucket 23
        assert_eq!(h.quantile_seconds(0.5), Some(1024e-9));
        assert_eq!(h.quantile_seconds(0.99), Some(1024e-9));
        assert_eq!(h.quantile_seconds(1.0), Some((1u64 << 23) as f64 / 1e9));
        assert_eq!(h.max_seconds(), Some((1u64 << 23) as f64 / 1e9));
        assert!((h.mean_seconds().unwrap() - (99_000.0 + 5e6) / 100.0 / 1e9).abs() < 1e-15);
    }

    #[test]
    fn drain_duration_buckets() {
        let mut h = DurationHistogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_secs(5));
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[DRAIN_DURATION_BUCKETS.len()], 1);
    }
}
