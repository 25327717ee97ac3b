//! Per-workload counts: each drain's interval, and the cumulative totals since start.
//!
//! The kernel holds deltas; the store turns them into monotonic counters for Prometheus and
//! keeps the last interval for rates (and, bounded, recent intervals for the APIs).

use crate::sync::Recover as _;
use std::{
    collections::VecDeque,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use sidecar_common::{
    Advice, FadviseCounts, IoCounts, IoOp, LATENCY_BUCKETS, OwnerCounts, PageCacheCounts,
    ReclaimKind, latency_bucket,
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

/// What the io module counted for one workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoWorkloadCounts {
    /// read, pread64, readv, preadv: latency.
    pub read: LatencyHistogram,
    /// Bytes those reads returned.
    pub read_bytes: u64,
    /// fsync, fdatasync: latency.
    pub sync: LatencyHistogram,
    pub dirtied_pages: u64,
    /// Pages whose writeback the workload's processes started.
    pub written_back_pages: u64,
}

impl IoWorkloadCounts {
    pub fn add(&mut self, other: &IoWorkloadCounts) {
        self.read.add(&other.read);
        self.read_bytes += other.read_bytes;
        self.sync.add(&other.sync);
        self.dirtied_pages += other.dirtied_pages;
        self.written_back_pages += other.written_back_pages;
    }

    /// Adds what the kernel counted for one op and latency bucket.
    pub fn add_kernel(&mut self, op: IoOp, bucket: usize, counts: &IoCounts) {
        match op {
            IoOp::Read => {
                self.read.add_bucket(bucket, counts.events, counts.ns);
                self.read_bytes += counts.bytes;
            }
            IoOp::Sync => self.sync.add_bucket(bucket, counts.events, counts.ns),
            IoOp::Dirty => self.dirtied_pages += counts.pages,
            IoOp::Writeback => self.written_back_pages += counts.pages,
        }
    }
}

/// Everything counted for one workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadCounts {
    /// Indexed by advice slot.
    pub fadvise: [FadviseCounts; Advice::COUNT],
    pub page_cache: PageCacheCounts,
    /// Indexed by `ReclaimKind`.
    pub reclaim: [LatencyHistogram; ReclaimKind::COUNT],
    pub io: IoWorkloadCounts,
    /// Refaults by the processes that were running (their `adds` and `evictions` stay 0:
    /// those are `page_cache`'s).
    pub refaults: OwnerCounts,
    /// Page-cache additions, evictions and refaults of the pages this workload's memory
    /// cgroups own, whoever was running.
    pub memcg: OwnerCounts,
}

impl WorkloadCounts {
    pub fn add(&mut self, other: &WorkloadCounts) {
        for (mine, theirs) in self.fadvise.iter_mut().zip(other.fadvise.iter()) {
            *mine += theirs;
        }
        self.page_cache += other.page_cache;
        for (mine, theirs) in self.reclaim.iter_mut().zip(other.reclaim.iter()) {
            mine.add(theirs);
        }
        self.io.add(&other.io);
        self.refaults += other.refaults;
        self.memcg += other.memcg;
    }

    pub fn fadvise_totals(&self) -> FadviseCounts {
        self.fadvise
            .iter()
            .fold(FadviseCounts::default(), |mut sum, counts| {
                sum += counts;
                sum
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
    pub io: u64,
    pub memcg: u64,
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
        self.overflow.io += other.overflow.io;
        self.overflow.memcg += other.overflow.memcg;
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
    /// Of the last drain in the interval.
    pub drain: DrainInfo,
    /// Drains summed into this interval: 1 as drained, more once older history is merged.
    pub drains: u64,
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
            drains: 1,
        }
    }

    /// What the store allocates to keep this interval: the interval, its counts, its
    /// reference count and its slot in the history.
    pub fn estimated_bytes(&self) -> usize {
        std::mem::size_of::<Interval>()
            + 2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<Arc<Interval>>()
            + self.workloads.capacity() * std::mem::size_of::<WorkloadCounts>()
    }

    /// `self` followed by `newer`, as one interval: counts summed, spanning both; the
    /// gauges and drain facts are those at its end (`newer`'s).
    fn merged(mut self, newer: &Interval) -> Interval {
        for (total, delta) in self.workloads.iter_mut().zip(&newer.workloads) {
            total.add(delta);
        }
        self.host.add(&newer.host);
        self.at = newer.at;
        self.length += newer.length;
        self.direct_reclaim_in_progress = newer.direct_reclaim_in_progress;
        self.drain = newer.drain;
        self.drains += newer.drains;
        self
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
    /// Drains covered (a merged interval counts the drains it holds).
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
            intervals: usize::try_from(first.drains).unwrap_or(usize::MAX),
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
            period.intervals = period
                .intervals
                .saturating_add(usize::try_from(interval.drains).unwrap_or(usize::MAX));
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

/// Default of `limits.max_history_bytes`.
pub const DEFAULT_MAX_HISTORY_BYTES: usize = 64 << 20;

/// Intervals the history holds at most, whatever the budget: a window sums at most this
/// many. Past it, older intervals are merged as when over the byte budget.
pub const MAX_HISTORY_INTERVALS: usize = 3600;

/// The retained intervals, oldest first. Immutable once published: the drain builds the
/// next history beside it (sharing every interval through its `Arc`), so a reader's copy
/// stays valid and costs the drain nothing.
#[derive(Clone, Debug, Default)]
struct History {
    intervals: VecDeque<Arc<Interval>>,
    /// Sum of `Interval::estimated_bytes`.
    bytes: usize,
    /// Sum of `Interval::drains`.
    drains: u64,
}

impl History {
    fn push(&mut self, interval: Interval) {
        self.bytes += interval.estimated_bytes();
        self.drains += interval.drains;
        self.intervals.push_back(Arc::new(interval));
    }

    fn pop_front(&mut self) {
        if let Some(oldest) = self.intervals.pop_front() {
            self.bytes -= oldest.estimated_bytes();
            self.drains -= oldest.drains;
        }
    }

    /// Merges one adjacent pair of intervals, never the newest one (rates over the last
    /// interval stay as drained). Intervals hold drains in powers of two, fewer toward
    /// the newest end; the pair merged is the two oldest of the size that has the most
    /// intervals (the smaller size on a tie), so every size keeps about as many intervals
    /// as the others: recent history at full resolution, older history coarser and
    /// coarser. False when there is no pair to merge (fewer than three intervals).
    fn merge_one(&mut self) -> bool {
        // The newest interval is not a candidate.
        let candidates = self.intervals.len().saturating_sub(1);
        if candidates < 2 {
            return false;
        }
        // Runs of equal sizes: (size, first index, length), oldest first.
        let mut runs: Vec<(u64, usize, usize)> = Vec::new();
        for (index, interval) in self.intervals.iter().take(candidates).enumerate() {
            match runs.last_mut() {
                Some((size, _, length)) if *size == interval.drains => *length += 1,
                _ => runs.push((interval.drains, index, 1)),
            }
        }
        let pair = runs
            .iter()
            .filter(|(_, _, length)| *length >= 2)
            .max_by(|a, b| a.2.cmp(&b.2).then(b.0.cmp(&a.0)))
            .map(|&(_, first, _)| first)
            // No two of a size (after a retention cut): the smallest adjacent pair.
            .or_else(|| {
                (0..candidates - 1)
                    .min_by_key(|&i| self.intervals[i].drains + self.intervals[i + 1].drains)
            });
        let Some(first) = pair else {
            return false;
        };
        let (Some(older), Some(newer)) =
            (self.intervals.remove(first), self.intervals.remove(first))
        else {
            return false;
        };
        self.bytes -= older.estimated_bytes() + newer.estimated_bytes();
        let merged = Arc::unwrap_or_clone(older).merged(&newer);
        self.bytes += merged.estimated_bytes();
        self.intervals.insert(first, Arc::new(merged));
        true
    }
}

/// Cumulative totals plus recent intervals.
///
/// Cloning is cheap (the totals, history and names are shared `Arc`s), and a clone is a
/// consistent snapshot: readers clone the shared store under its lock (`snapshot`) and
/// compute on the clone, so the drain never waits for a request; the drain publishes the
/// next store in one assignment.
#[derive(Clone, Debug)]
pub struct Store {
    names: Arc<WorkloadNames>,
    started: SystemTime,
    totals: Arc<Vec<WorkloadCounts>>,
    host: HostCounts,
    recent: Arc<History>,
    /// Drains a window can reach back (`limits.retention` at the interval).
    retain: u64,
    /// Bytes the history may take (`limits.max_history_bytes`).
    max_history_bytes: usize,
    drains: u64,
    drain_durations: DurationHistogram,
    programs: Arc<Vec<ProgramStats>>,
    tracked_processes: usize,
    /// Report `other` even when nothing was counted there (unmatched: other).
    always_report_other: bool,
}

/// A copy of the shared store to read from; the lock is held only to clone a few `Arc`s.
pub fn snapshot(store: &RwLock<Store>) -> Store {
    store.read().recover().clone()
}

/// Applies one drain to the shared store without making readers wait: the next store is
/// built beside the published one and replaces it under the write lock, which is held
/// for a move. Returns the drain count. (The drain thread is the only writer.)
pub fn publish(
    store: &RwLock<Store>,
    interval: Interval,
    programs: Vec<ProgramStats>,
    tracked: usize,
) -> u64 {
    let mut next = snapshot(store);
    next.apply(interval, programs, tracked);
    let drains = next.drains();
    let previous = std::mem::replace(&mut *store.write().recover(), next);
    // Intervals no reader holds any more are freed here, outside the lock.
    drop(previous);
    drains
}

impl Store {
    /// `retain`: drains a window may reach back. The history is bounded by
    /// `DEFAULT_MAX_HISTORY_BYTES` (see `with_max_history_bytes`).
    pub fn new(names: WorkloadNames, retain: usize, always_report_other: bool) -> Store {
        Store {
            totals: Arc::new(vec![WorkloadCounts::default(); names.len()]),
            names: Arc::new(names),
            started: SystemTime::now(),
            host: HostCounts::default(),
            recent: Arc::default(),
            retain: u64::try_from(retain.max(1)).unwrap_or(u64::MAX),
            max_history_bytes: DEFAULT_MAX_HISTORY_BYTES,
            drains: 0,
            drain_durations: DurationHistogram::default(),
            programs: Arc::default(),
            tracked_processes: 0,
            always_report_other,
        }
    }

    /// Bounds the retained intervals by their estimated bytes.
    #[must_use]
    pub fn with_max_history_bytes(mut self, bytes: usize) -> Store {
        self.max_history_bytes = bytes;
        self
    }

    pub fn apply(&mut self, interval: Interval, programs: Vec<ProgramStats>, tracked: usize) {
        let totals = Arc::make_mut(&mut self.totals);
        for (total, delta) in totals.iter_mut().zip(interval.workloads.iter()) {
            total.add(delta);
        }
        self.host.add(&interval.host);
        self.drains += 1;
        self.drain_durations.observe(interval.drain.duration);
        self.programs = Arc::new(programs);
        self.tracked_processes = tracked;
        let history = Arc::make_mut(&mut self.recent);
        history.push(interval);
        // Retention: the oldest interval goes once the others cover the retained drains.
        while let Some(oldest) = history.intervals.front() {
            if history.intervals.len() > 1 && history.drains - oldest.drains >= self.retain {
                history.pop_front();
            } else {
                break;
            }
        }
        // The budget: merge older intervals; drop the oldest only when merging cannot
        // get under it. The newest interval stays, whatever its size.
        while history.bytes > self.max_history_bytes
            || history.intervals.len() > MAX_HISTORY_INTERVALS
        {
            if !history.merge_one() {
                if history.intervals.len() > 1 {
                    history.pop_front();
                } else {
                    break;
                }
            }
        }
    }

    pub fn names(&self) -> &WorkloadNames {
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
        self.recent.intervals.back().map(|i| &**i)
    }

    pub fn recent(&self) -> impl DoubleEndedIterator<Item = &Interval> {
        self.recent.intervals.iter().map(|i| &**i)
    }

    /// Drains a window may reach back (`limits.retention` at the drain interval).
    pub fn retained(&self) -> usize {
        usize::try_from(self.retain).unwrap_or(usize::MAX)
    }

    /// Estimated bytes of the retained intervals (at most `max_history_bytes`, unless a
    /// single interval is larger).
    pub fn history_bytes(&self) -> usize {
        self.recent.bytes
    }

    /// Intervals held, merged ones counting once.
    pub fn history_intervals(&self) -> usize {
        self.recent.intervals.len()
    }

    pub const fn max_history_bytes(&self) -> usize {
        self.max_history_bytes
    }

    /// The last interval (`window` = None), or the sum of the retained intervals that
    /// ended within `window` of the last drain. A merged interval is taken whole, so a
    /// window over older history may start earlier than asked (`Period::start` says where).
    /// `None` before the first drain.
    pub fn period(&self, window: Option<Duration>) -> Option<Period> {
        let recent = &self.recent.intervals;
        let last = recent.back()?;
        match window {
            None => Period::from_intervals(std::iter::once(&**last)),
            Some(window) => {
                let since = last.at.checked_sub(window).unwrap_or(std::time::UNIX_EPOCH);
                let first = recent
                    .iter()
                    .position(|i| i.at > since)
                    .unwrap_or(recent.len() - 1);
                Period::from_intervals(recent.range(first..).map(|i| &**i))
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
        let hits = pc.read_attempts.saturating_sub(pc.misses);
        percent(hits, pc.read_attempts)
    }

    pub fn cache_miss(counts: &WorkloadCounts) -> Option<f64> {
        let pc = &counts.page_cache;
        percent(pc.misses, pc.read_attempts)
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
        counts.page_cache.read_attempts = 200;
        counts.page_cache.misses = 50;
        assert_eq!(rates::cache_hit(&counts), Some(75.0));
        assert_eq!(rates::cache_miss(&counts), Some(25.0));
        counts.page_cache.misses = 500;
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
            interval.workloads[0].page_cache.read_attempts = i;
            store.apply(interval, Vec::new(), 0);
        }
        let last = store.period(None).unwrap();
        assert_eq!(last.intervals, 1);
        assert_eq!(last.workload(WorkloadId(0)).page_cache.read_attempts, 10);
        let window = store.period(Some(Duration::from_secs(3))).unwrap();
        assert_eq!(window.intervals, 3);
        assert_eq!(
            window.workload(WorkloadId(0)).page_cache.read_attempts,
            8 + 9 + 10
        );
        assert_eq!(
            window.end.duration_since(window.start).unwrap(),
            Duration::from_secs(3)
        );
        let all = store.period(Some(Duration::from_secs(3600))).unwrap();
        assert_eq!(all.intervals, 10);
    }

    fn many_names(workloads: usize) -> WorkloadNames {
        let mut yaml = String::from("workloads:\n");
        for i in 0..workloads {
            yaml.push_str(&format!("  - name: w{i}\n    pids: [{}]\n", i + 1));
        }
        WorkloadNames::from_config(&Config::parse(&yaml, "t").unwrap())
    }

    /// One drain: workload `w` read `w + n` pages, and one reclaim episode for every tenth.
    fn drained(names: &WorkloadNames, n: u64, start: SystemTime) -> Interval {
        let mut interval = Interval::empty(names.len(), start + Duration::from_millis(50 * n));
        interval.length = Duration::from_millis(50);
        for (w, counts) in interval.workloads.iter_mut().enumerate() {
            counts.page_cache.read_attempts = w as u64 + n;
            counts.fadvise[Advice::DontNeed as usize].calls = 1;
            if (w as u64 + n).is_multiple_of(10) {
                counts.reclaim[ReclaimKind::Direct as usize].record(1000 * n);
            }
        }
        interval.host.lru_pages_scanned = n;
        interval.direct_reclaim_in_progress = n as i64;
        interval
    }

    #[test]
    fn a_thousand_workloads_stay_within_the_history_budget() {
        let names = many_names(1000);
        let budget = DEFAULT_MAX_HISTORY_BYTES;
        let mut store = Store::new(names.clone(), 36_000, false);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let one = Interval::empty(names.len(), start).estimated_bytes();
        let pushed = 400u64;
        let mut expected = vec![WorkloadCounts::default(); names.len()];
        let mut most = 0;
        for n in 1..=pushed {
            let interval = drained(&names, n, start);
            for (total, delta) in expected.iter_mut().zip(&interval.workloads) {
                total.add(delta);
            }
            store.apply(interval, Vec::new(), 0);
            most = most.max(store.history_bytes());
            assert!(
                store.history_bytes() <= budget,
                "after {n}: {}",
                store.history_bytes()
            );
        }
        // Unbounded, the history would have taken `pushed` intervals.
        let sizes: Vec<u64> = store.recent().map(|i| i.drains).collect();
        println!(
            "1000 workloads: {one} B per interval, {pushed} drains ({} MiB unbounded) kept in {} \
             intervals, {} B (at most {most} B; budget {budget} B); drains per interval, oldest \
             first: {sizes:?}",
            (one as u64 * pushed) >> 20,
            store.history_intervals(),
            store.history_bytes(),
        );
        assert!(one as u64 * pushed > budget as u64 * 4);
        assert_eq!(sizes.iter().sum::<u64>(), pushed, "nothing dropped");
        // Older history is coarser: sizes never grow toward the newest, which is as drained.
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        assert_eq!(sizes.last(), Some(&1));
        assert!(sizes[0] > 1);
        // A window over everything sums exactly to what was pushed.
        let all = store.period(Some(Duration::from_secs(3600))).unwrap();
        assert_eq!(all.intervals as u64, pushed);
        assert_eq!(all.workloads, expected);
        assert_eq!(all.host.lru_pages_scanned, (1..=pushed).sum::<u64>());
        assert_eq!(all.start, start);
        assert_eq!(all.end, start + Duration::from_millis(50 * pushed));
        assert_eq!(all.direct_reclaim_in_progress, pushed as i64);
        // The last interval (rates) is the last drain, untouched.
        let last = store.period(None).unwrap();
        assert_eq!(last.intervals, 1);
        assert_eq!(last.workloads, drained(&names, pushed, start).workloads);
        // Totals are exact too.
        for id in names.ids() {
            assert_eq!(store.totals(id), &expected[id.0 as usize]);
        }
    }

    #[test]
    fn retention_and_an_interval_larger_than_the_budget() {
        let names = many_names(1000);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // Retention 100 drains, budget for about 20 intervals: merged, then cut by age.
        let one = Interval::empty(names.len(), start).estimated_bytes();
        let mut store = Store::new(names.clone(), 100, false).with_max_history_bytes(20 * one);
        for n in 1..=300 {
            store.apply(drained(&names, n, start), Vec::new(), 0);
            assert!(store.history_bytes() <= 20 * one);
            let covered: u64 = store.recent().map(|i| i.drains).sum();
            assert!(covered >= 100.min(n), "after {n}: {covered}");
        }
        let covered: u64 = store.recent().map(|i| i.drains).sum();
        let window = store.period(Some(Duration::from_secs(3600))).unwrap();
        assert_eq!(window.intervals as u64, covered);
        let first = 300 - covered + 1;
        assert_eq!(
            window.workload(WorkloadId(0)).page_cache.read_attempts,
            (first..=300).sum::<u64>()
        );
        // A budget below one interval keeps the newest interval alone.
        let mut store = Store::new(names.clone(), 100, false).with_max_history_bytes(one / 2);
        for n in 1..=3 {
            store.apply(drained(&names, n, start), Vec::new(), 0);
        }
        assert_eq!(store.history_intervals(), 1);
        assert_eq!(
            store.period(None).unwrap().workloads,
            drained(&names, 3, start).workloads
        );
    }

    #[test]
    fn snapshots_do_not_change_when_the_drain_publishes() {
        let names = names();
        let shared = RwLock::new(Store::new(names.clone(), 10, false));
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            publish(&shared, drained(&names, 1, start), Vec::new(), 0),
            1
        );
        let before = snapshot(&shared);
        assert_eq!(
            publish(&shared, drained(&names, 2, start), Vec::new(), 0),
            2
        );
        assert_eq!(before.drains(), 1);
        assert_eq!(before.history_intervals(), 1);
        assert_eq!(before.totals(WorkloadId(0)).page_cache.read_attempts, 1);
        let after = snapshot(&shared);
        assert_eq!(after.drains(), 2);
        assert_eq!(after.totals(WorkloadId(0)).page_cache.read_attempts, 3);
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
