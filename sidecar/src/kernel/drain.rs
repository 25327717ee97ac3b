//! Reading and clearing one retired epoch's maps.

use std::{
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use aya::{
    Ebpf, Pod,
    maps::{Map, MapData},
};
use sidecar_common::{
    Advice, FadviseCounts, FadviseKey, GaugeSlot, HostCounter, IO_OVERFLOW_SLOTS, IoCounts, IoKey,
    OwnerBy, OwnerCounts, OwnerKey, PageCacheCounts, ProcessInfo, ProcessKey,
    RECLAIM_OVERFLOW_SLOTS, ReclaimCounts, ReclaimKey, map_names,
};

use super::{
    KernelError,
    batch::{self, Entries, MapShape},
    modules::Module,
};

/// One interval as the kernel counted it: per process (by tgid), summed over CPUs.
#[derive(Debug, Default, Clone)]
pub struct KernelDelta {
    pub fadvise: Vec<(FadviseKey, FadviseCounts)>,
    /// Indexed by advice slot.
    pub fadvise_overflow: Vec<FadviseCounts>,
    pub page_cache: Vec<(ProcessKey, PageCacheCounts)>,
    pub page_cache_overflow: PageCacheCounts,
    pub reclaim: Vec<(ReclaimKey, ReclaimCounts)>,
    /// Indexed by `reclaim_overflow_slot`.
    pub reclaim_overflow: Vec<ReclaimCounts>,
    pub io: Vec<(IoKey, IoCounts)>,
    /// Indexed by `io_overflow_slot`.
    pub io_overflow: Vec<IoCounts>,
    pub owner: Vec<(OwnerKey, OwnerCounts)>,
    /// Indexed by `OwnerBy`.
    pub owner_overflow: Vec<OwnerCounts>,
    /// Indexed by `HostCounter`.
    pub host: Vec<u64>,
    /// The comm the kernel saw for each process counted in the interval.
    pub processes: Vec<(ProcessKey, ProcessInfo)>,
    pub direct_reclaim_in_progress: i64,
    pub programs: Vec<ProgramStats>,
    /// Kernel map entries read (and removed) by this drain.
    pub entries: usize,
    /// Time spent waiting for the epoch switch (the RCU grace period).
    pub switch_duration: Duration,
    /// Time for the whole drain, switch included.
    pub drain_duration: Duration,
}

impl KernelDelta {
    pub fn host(&self, counter: HostCounter) -> u64 {
        self.host.get(counter as usize).copied().unwrap_or(0)
    }
}

/// Cumulative kernel statistics of one program (BPF_ENABLE_STATS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: String,
    pub run_time: Duration,
    pub run_count: u64,
}

/// Values that add up across CPUs.
pub(crate) trait Accumulate: Pod + Default {
    fn accumulate(&mut self, other: &Self);
}

impl Accumulate for u64 {
    fn accumulate(&mut self, other: &Self) {
        *self += other;
    }
}

impl Accumulate for i64 {
    fn accumulate(&mut self, other: &Self) {
        *self += other;
    }
}

impl Accumulate for FadviseCounts {
    fn accumulate(&mut self, other: &Self) {
        *self += other;
    }
}

impl Accumulate for PageCacheCounts {
    fn accumulate(&mut self, other: &Self) {
        *self += other;
    }
}

impl Accumulate for ReclaimCounts {
    fn accumulate(&mut self, other: &Self) {
        *self += other;
    }
}

impl Accumulate for IoCounts {
    fn accumulate(&mut self, other: &Self) {
        *self += other;
    }
}

impl Accumulate for OwnerCounts {
    fn accumulate(&mut self, other: &Self) {
        *self += other;
    }
}

impl Accumulate for ProcessInfo {
    /// Not a per-CPU map: there is one value per key.
    fn accumulate(&mut self, other: &Self) {
        *self = *other;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Hash,
    Array { entries: u32 },
}

/// A map that the drainer reads, by file descriptor and shape.
pub(crate) struct DrainableMap {
    name: &'static str,
    data: MapData,
    shape: MapShape,
    layout: Layout,
    /// Set when this kernel turned out to lack batch operations for this (array) map type:
    /// it is then read and zeroed element by element.
    by_element: AtomicBool,
}

/// Entries asked for per batch syscall.
const BATCH_CHUNK: usize = 1024;

impl DrainableMap {
    fn take<K, V>(ebpf: &mut Ebpf, name: &'static str, per_cpu: bool) -> Result<Self, KernelError> {
        let map = ebpf
            .take_map(name)
            .ok_or(KernelError::MissingMap { name })?;
        let (data, layout_hint) = match map {
            Map::PerCpuHashMap(data) | Map::HashMap(data) | Map::LruHashMap(data) => (data, None),
            Map::PerCpuArray(data) | Map::Array(data) => (data, Some(())),
            other => {
                return Err(KernelError::MapShape {
                    name,
                    message: format!("unexpected map type {other:?}"),
                });
            }
        };
        let info = data
            .info()
            .map_err(|error| KernelError::Map { name, error })?;
        if info.key_size() as usize != size_of::<K>()
            || info.value_size() as usize != size_of::<V>()
        {
            return Err(KernelError::MapShape {
                name,
                message: format!(
                    "key/value sizes {}/{} differ from {}/{}",
                    info.key_size(),
                    info.value_size(),
                    size_of::<K>(),
                    size_of::<V>()
                ),
            });
        }
        let values_per_key = if per_cpu {
            aya::util::nr_cpus()
                .map_err(|(_, error)| KernelError::Drain { name, error })?
                .get() as usize
        } else {
            1
        };
        let layout = match layout_hint {
            Some(()) => Layout::Array {
                entries: info.max_entries(),
            },
            None => Layout::Hash,
        };
        Ok(DrainableMap {
            name,
            data,
            shape: MapShape {
                key_size: size_of::<K>(),
                value_size: size_of::<V>(),
                values_per_key,
            },
            layout,
            by_element: AtomicBool::new(false),
        })
    }

    pub(crate) fn take_gauges(ebpf: &mut Ebpf) -> Result<Self, KernelError> {
        Self::take::<u32, i64>(ebpf, map_names::GAUGES, true)
    }

    pub(crate) fn take_processes_seen(ebpf: &mut Ebpf) -> Result<Self, KernelError> {
        Self::take::<ProcessKey, u32>(ebpf, map_names::PROCESSES_SEEN, false)
    }

    /// Deletes every entry; returns how many there were.
    pub(crate) fn clear(&self) -> Result<usize, KernelError> {
        Ok(self.read(true)?.count)
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.data.fd().as_fd().as_raw_fd()
    }

    fn read(&self, delete: bool) -> Result<Entries, KernelError> {
        let fd = self.data.fd().as_fd();
        let result = match self.layout {
            Layout::Array { entries } if self.by_element.load(Ordering::Relaxed) => {
                batch::read_array_by_element(fd, self.shape, entries)
            }
            Layout::Array { entries } => match batch::read_all(fd, self.shape, delete, BATCH_CHUNK)
            {
                Err(err) if batch::batch_unsupported(&err) => {
                    self.fall_back_to_elements(&err);
                    batch::read_array_by_element(fd, self.shape, entries)
                }
                other => other,
            },
            Layout::Hash => batch::read_all(fd, self.shape, delete, BATCH_CHUNK),
        };
        result.map_err(|error| KernelError::Drain {
            name: self.name,
            error,
        })
    }

    /// Zeroes `keys` of an array, in one batch when the kernel can.
    fn zero(&self, keys: &[u32]) -> Result<(), KernelError> {
        let fd = self.data.fd().as_fd();
        let zero = vec![0u8; self.shape.value_stride()];
        let result = if self.by_element.load(Ordering::Relaxed) {
            batch::update_array_by_element(fd, self.shape, keys, &zero)
        } else {
            match batch::update_all(fd, self.shape, keys, &zero) {
                Err(err) if batch::batch_unsupported(&err) => {
                    self.fall_back_to_elements(&err);
                    batch::update_array_by_element(fd, self.shape, keys, &zero)
                }
                other => other,
            }
        };
        result.map_err(|error| KernelError::Drain {
            name: self.name,
            error,
        })
    }

    fn fall_back_to_elements(&self, err: &std::io::Error) {
        if !self.by_element.swap(true, Ordering::Relaxed) {
            tracing::info!(
                map = self.name,
                "this kernel has no batch operations for this map type ({}): reading and clearing it element by element",
                super::chain(err)
            );
        }
    }

    /// Values of one entry, summed over CPUs.
    fn value<V: Accumulate>(&self, entries: &Entries, index: usize) -> V {
        let stride = self.shape.value_stride();
        let per_cpu = if self.shape.values_per_key > 1 {
            self.shape.value_size.next_multiple_of(8)
        } else {
            self.shape.value_size
        };
        let base = &entries.values[index * stride..(index + 1) * stride];
        let mut total = V::default();
        for cpu in 0..self.shape.values_per_key {
            let bytes = &base[cpu * per_cpu..cpu * per_cpu + size_of::<V>()];
            // SAFETY: `bytes` holds size_of::<V>() bytes of a Pod value the kernel wrote.
            let value: V = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            total.accumulate(&value);
        }
        total
    }

    fn key<K: Pod>(&self, entries: &Entries, index: usize) -> K {
        let bytes = &entries.keys[index * self.shape.key_size..(index + 1) * self.shape.key_size];
        // SAFETY: `bytes` holds one key of size_of::<K>() bytes the kernel wrote.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) }
    }

    /// Removes and returns every entry of a hash map.
    fn take_entries<K: Pod, V: Accumulate>(&self) -> Result<Vec<(K, V)>, KernelError> {
        debug_assert_eq!(self.layout, Layout::Hash);
        let entries = self.read(true)?;
        Ok((0..entries.count)
            .map(|i| (self.key(&entries, i), self.value(&entries, i)))
            .collect())
    }

    /// Returns every slot of an array, and zeroes the array if anything was counted.
    fn take_slots<V: Accumulate + PartialEq>(&self) -> Result<Vec<V>, KernelError> {
        let Layout::Array { entries: size } = self.layout else {
            unreachable!("take_slots on a hash map")
        };
        let entries = self.read(false)?;
        let mut slots = vec![V::default(); size as usize];
        for i in 0..entries.count {
            let index: u32 = self.key(&entries, i);
            if let Some(slot) = slots.get_mut(index as usize) {
                *slot = self.value(&entries, i);
            }
        }
        if slots.iter().any(|v| *v != V::default()) {
            let keys: Vec<u32> = (0..size).collect();
            self.zero(&keys)?;
        }
        Ok(slots)
    }

    /// A gauge array: read, never cleared.
    pub(crate) fn sum_gauge(&self) -> Result<i64, KernelError> {
        let entries = self.read(false)?;
        Ok((0..entries.count)
            .filter(|&i| self.key::<u32>(&entries, i) == GaugeSlot::DirectReclaimInProgress as u32)
            .map(|i| self.value::<i64>(&entries, i))
            .sum())
    }
}

/// The interval maps of one epoch.
pub(crate) struct EpochMaps {
    fadvise: DrainableMap,
    fadvise_overflow: DrainableMap,
    page_cache: DrainableMap,
    page_cache_overflow: DrainableMap,
    reclaim: DrainableMap,
    reclaim_overflow: DrainableMap,
    io: DrainableMap,
    io_overflow: DrainableMap,
    owner: DrainableMap,
    owner_overflow: DrainableMap,
    host: DrainableMap,
    processes: DrainableMap,
}

impl EpochMaps {
    pub(crate) fn take(ebpf: &mut Ebpf, epoch: usize) -> Result<EpochMaps, KernelError> {
        use map_names as n;
        Ok(EpochMaps {
            fadvise: DrainableMap::take::<FadviseKey, FadviseCounts>(
                ebpf,
                n::FADVISE_COUNTS[epoch],
                true,
            )?,
            fadvise_overflow: DrainableMap::take::<u32, FadviseCounts>(
                ebpf,
                n::FADVISE_OVERFLOW[epoch],
                true,
            )?,
            page_cache: DrainableMap::take::<ProcessKey, PageCacheCounts>(
                ebpf,
                n::PAGE_CACHE_COUNTS[epoch],
                true,
            )?,
            page_cache_overflow: DrainableMap::take::<u32, PageCacheCounts>(
                ebpf,
                n::PAGE_CACHE_OVERFLOW[epoch],
                true,
            )?,
            reclaim: DrainableMap::take::<ReclaimKey, ReclaimCounts>(
                ebpf,
                n::RECLAIM_COUNTS[epoch],
                true,
            )?,
            reclaim_overflow: DrainableMap::take::<u32, ReclaimCounts>(
                ebpf,
                n::RECLAIM_OVERFLOW[epoch],
                true,
            )?,
            io: DrainableMap::take::<IoKey, IoCounts>(ebpf, n::IO_COUNTS[epoch], true)?,
            io_overflow: DrainableMap::take::<u32, IoCounts>(ebpf, n::IO_OVERFLOW[epoch], true)?,
            owner: DrainableMap::take::<OwnerKey, OwnerCounts>(ebpf, n::OWNER_COUNTS[epoch], true)?,
            owner_overflow: DrainableMap::take::<u32, OwnerCounts>(
                ebpf,
                n::OWNER_OVERFLOW[epoch],
                true,
            )?,
            host: DrainableMap::take::<u32, u64>(ebpf, n::HOST_COUNTERS[epoch], true)?,
            processes: DrainableMap::take::<ProcessKey, ProcessInfo>(
                ebpf,
                n::PROCESSES[epoch],
                false,
            )?,
        })
    }

    pub(crate) fn raw_fds(&self) -> [i32; 12] {
        [
            self.fadvise.raw_fd(),
            self.fadvise_overflow.raw_fd(),
            self.page_cache.raw_fd(),
            self.page_cache_overflow.raw_fd(),
            self.reclaim.raw_fd(),
            self.reclaim_overflow.raw_fd(),
            self.io.raw_fd(),
            self.io_overflow.raw_fd(),
            self.owner.raw_fd(),
            self.owner_overflow.raw_fd(),
            self.host.raw_fd(),
            self.processes.raw_fd(),
        ]
    }

    /// Empties this (retired) epoch. Maps of modules that are not attached stay empty and
    /// are skipped.
    pub(crate) fn drain(
        &self,
        attached: impl Fn(Module) -> bool,
    ) -> Result<KernelDelta, KernelError> {
        let mut delta = KernelDelta {
            fadvise_overflow: vec![FadviseCounts::default(); Advice::COUNT],
            reclaim_overflow: vec![ReclaimCounts::default(); RECLAIM_OVERFLOW_SLOTS],
            io_overflow: vec![IoCounts::default(); IO_OVERFLOW_SLOTS],
            owner_overflow: vec![OwnerCounts::default(); OwnerBy::COUNT],
            ..KernelDelta::default()
        };
        if attached(Module::Fadvise) {
            delta.fadvise = self.fadvise.take_entries()?;
            delta.fadvise_overflow = self.fadvise_overflow.take_slots()?;
        }
        if attached(Module::PageCache) {
            delta.page_cache = self.page_cache.take_entries()?;
            delta.page_cache_overflow = self
                .page_cache_overflow
                .take_slots()?
                .first()
                .copied()
                .unwrap_or_default();
        }
        if attached(Module::Vmscan) {
            delta.reclaim = self.reclaim.take_entries()?;
            delta.reclaim_overflow = self.reclaim_overflow.take_slots()?;
        }
        if attached(Module::Io) {
            delta.io = self.io.take_entries()?;
            delta.io_overflow = self.io_overflow.take_slots()?;
        }
        if attached(Module::Memcg) {
            delta.owner = self.owner.take_entries()?;
            delta.owner_overflow = self.owner_overflow.take_slots()?;
        }
        delta.host = self.host.take_slots()?;
        delta.processes = self.processes.take_entries()?;
        delta.entries = delta.fadvise.len()
            + delta.page_cache.len()
            + delta.reclaim.len()
            + delta.io.len()
            + delta.owner.len()
            + delta.processes.len();
        Ok(delta)
    }
}
