//! Counting into the active epoch's maps, with overflow instead of loss.
//!
//! Why two epochs: userspace must read and clear the counters without losing an increment
//! that lands between its read and its clear. Programs only ever write into the maps of the
//! active epoch. The drainer switches the epoch by replacing the slot of the `EPOCH`
//! map-of-maps; the kernel returns from that update only after an RCU grace period, and every
//! tracepoint program runs inside an RCU read-side section, so once the update returns no
//! program can still hold the old epoch. The drainer then owns the old epoch's maps alone.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_ANY, BPF_NOEXIST},
    btf_maps::PerCpuHashMap,
    helpers::{bpf_get_current_comm, bpf_get_current_task, bpf_probe_read_kernel},
    programs::TracePointContext,
};
use sidecar_common::{ABSENT_FIELD, HostCounter, OUTSIDE_NAMESPACE_TGID, ProcessInfo, ProcessKey};

use crate::maps::{EpochMaps, PROC_SEEN};

const EEXIST: i32 = 17;

/// This CPU's value for a key of a per-CPU hash map.
pub(crate) enum Slot<V> {
    /// The key was already counted in this interval.
    Existing(*mut V),
    /// This event created the key: the process is new in this interval.
    Created(*mut V),
    /// The map is full: count the event in the overflow slot instead.
    Full,
}

#[inline(always)]
pub(crate) fn slot<K, V: Default, const N: usize, const F: usize>(
    map: &PerCpuHashMap<K, V, N, F>,
    key: &K,
) -> Slot<V> {
    if let Some(value) = map.get_ptr_mut(key) {
        return Slot::Existing(value);
    }
    let created = match map.insert(key, &V::default(), u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        // Another CPU created it between our lookup and our insert.
        Err(err) if err == -EEXIST => false,
        Err(_) => return Slot::Full,
    };
    match map.get_ptr_mut(key) {
        Some(value) if created => Slot::Created(value),
        Some(value) => Slot::Existing(value),
        None => Slot::Full,
    }
}

#[inline(always)]
pub(crate) fn bump_host(maps: &EpochMaps, counter: HostCounter, by: u64) {
    if let Some(value) = maps.host.get_ptr_mut(counter as u32) {
        // SAFETY: this CPU's slot; tracepoint programs do not nest on a CPU.
        unsafe { *value += by };
    }
}

/// Records the comm of a process that created a counter in this interval, once per life:
/// a process already recorded in an earlier interval (`PROC_SEEN`) is known to userspace,
/// which keeps its classification until the process execs, renames itself or exits (each
/// of which records it again, `process.rs`). A drain of 10,000 long-lived processes then
/// reads their counters and no process records. The name is the main thread's (the
/// process's), even when another thread counts first.
#[inline(always)]
pub(crate) fn note_process(maps: &EpochMaps, pid_tgid: u64, key: u32) {
    if key == OUTSIDE_NAMESPACE_TGID {
        return;
    }
    let process = ProcessKey { tgid: key };
    if PROC_SEEN.get_ptr(&process).is_some() {
        return;
    }
    let main_thread = pid_tgid as u32 == tgid_of(pid_tgid);
    let comm = if main_thread {
        bpf_get_current_comm().unwrap_or_default()
    } else {
        leader_comm().unwrap_or_else(|| bpf_get_current_comm().unwrap_or_default())
    };
    let recorded = match maps.processes.get_ptr_mut(&process) {
        Some(info) => {
            if main_thread {
                // SAFETY: a valid map value; the flags beside the comm are left alone.
                unsafe { (*info).comm = comm };
            }
            true
        }
        None => {
            let info = ProcessInfo {
                comm,
                ..ProcessInfo::default()
            };
            match maps
                .processes
                .insert(&process, &info, u64::from(BPF_NOEXIST))
            {
                Ok(()) => true,
                Err(err) if err == -EEXIST => true,
                Err(_) => {
                    bump_host(maps, HostCounter::ProcessOverflowEvents, 1);
                    false
                }
            }
        }
    };
    if recorded {
        // An LRU map: inserting never fails for lack of room.
        let _ = PROC_SEEN.insert(&process, &0, u64::from(BPF_ANY));
    }
}

/// The comm of the calling thread's group leader (the process's name), where BTF gave its
/// place; paid once per process and interval, by a thread other than the main one.
#[inline(always)]
fn leader_comm() -> Option<[u8; 16]> {
    let layout = crate::process::PROCESS_LAYOUT.load();
    if layout.task_group_leader == ABSENT_FIELD || layout.task_comm == ABSENT_FIELD {
        return None;
    }
    // SAFETY: the helper only returns the current task's address; bpf_probe_read_kernel
    // checks every address read through it, and a bad one yields an error.
    unsafe {
        let task = bpf_get_current_task();
        let leader: u64 =
            bpf_probe_read_kernel((task + u64::from(layout.task_group_leader)) as *const u64)
                .ok()?;
        bpf_probe_read_kernel((leader + u64::from(layout.task_comm)) as *const [u8; 16]).ok()
    }
}

/// Who an event belongs to: the thread (for the main-thread check) and the process key.
pub(crate) struct Caller {
    pub(crate) pid_tgid: u64,
    pub(crate) process: u32,
}

impl Caller {
    #[inline(always)]
    pub(crate) fn new(pid_tgid: u64) -> Caller {
        Caller {
            pid_tgid,
            process: crate::process::process_key(pid_tgid),
        }
    }
}

/// Bumps a per-process counter, creating the entry (and noting the process) on first use,
/// or bumps the overflow slot when the map is full.
#[inline(always)]
pub(crate) fn count<K, V: Default, const N: usize, const F: usize>(
    maps: &EpochMaps,
    map: &PerCpuHashMap<K, V, N, F>,
    key: &K,
    caller: &Caller,
    overflow: impl FnOnce() -> Option<*mut V>,
    overflow_counter: HostCounter,
    update: impl FnOnce(&mut V),
) {
    let value = match slot(map, key) {
        Slot::Existing(value) => value,
        Slot::Created(value) => {
            note_process(maps, caller.pid_tgid, caller.process);
            value
        }
        Slot::Full => {
            bump_host(maps, overflow_counter, 1);
            match overflow() {
                Some(value) => value,
                None => return,
            }
        }
    };
    // SAFETY: a per-CPU value of this CPU; tracepoint programs do not nest on a CPU (the
    // kernel's bpf_prog_active guard), so nothing else writes it while we do.
    update(unsafe { &mut *value });
}

/// Reads a tracepoint field at an offset userspace found in the format file.
#[inline(always)]
pub(crate) fn field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, u32> {
    if offset == ABSENT_FIELD {
        return Err(offset);
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad offset yields an error.
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(|_| offset)
}

/// A field that should exist could not be read: the layout userspace computed is wrong for
/// this kernel. Counted (sidecar_bpf_field_read_errors_total) and logged, never silent.
#[inline(always)]
pub(crate) fn report_field_error<C: EbpfContext>(ctx: &C, offset: u32) {
    aya_log_ebpf::warn!(ctx, "cannot read a field at offset {}", offset);
    crate::maps::in_active_epoch!(|maps| bump_host(&maps, HostCounter::FieldReadErrors, 1));
}

/// Reads a field or, when it cannot be read, reports it and ends the program.
macro_rules! field_or_return {
    ($ctx:expr, $ty:ty, $offset:expr) => {
        match $crate::counting::field::<$ty>(&$ctx, $offset) {
            Ok(value) => value,
            Err(offset) => {
                $crate::counting::report_field_error(&$ctx, offset);
                return 0;
            }
        }
    };
}
pub(crate) use field_or_return;

#[inline(always)]
pub(crate) fn tgid_of(pid_tgid: u64) -> u32 {
    (pid_tgid >> 32) as u32
}

/// A field of a kernel object reached through a BTF-typed pointer (an fexit or tp_btf
/// program's arguments, a helper returning one, or such loads): a plain load, which the
/// verifier checks against the object's BTF type (the offset is a constant of `.rodata`,
/// set from the same BTF) and turns into a fault-tolerant one (a bad address reads 0).
#[inline(always)]
pub(crate) fn typed_read<T: Copy>(base: u64, offset: u32) -> T {
    // SAFETY: see above; the kernel's exception table covers the load.
    unsafe { core::ptr::read_volatile((base + u64::from(offset)) as *const T) }
}

/// Pages of a typed folio whose `flags` word has been read: `1 << order` when it is large
/// (`PG_head` set at `head_bit`), else 1. `ABSENT_FIELD` for `head_bit` (pages before
/// folios) means one page. `folio` must be a BTF-typed argument: the order byte is a plain
/// load, which the verifier checks against `struct folio` and makes fault-tolerant.
#[inline(always)]
pub(crate) fn folio_pages(folio: u64, flags: u64, head_bit: u32, order_offset: u32) -> u64 {
    if head_bit == ABSENT_FIELD || (flags >> (head_bit & 63)) & 1 == 0 {
        return 1;
    }
    // SAFETY: see above; the offset is a constant from the same BTF.
    let order = unsafe { core::ptr::read_volatile((folio + u64::from(order_offset)) as *const u8) };
    1u64 << (order & 31)
}
