//! Memory reclaim: host-wide LRU scan/reclaim totals and kswapd wakeups; per-process direct
//! and memcg reclaim episodes with their stall time in log2 buckets.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use sidecar_common::{
    GaugeSlot, HostCounter, ReclaimInFlightKey, ReclaimKey, ReclaimKind, VmscanLayout,
    latency_bucket, reclaim_overflow_slot,
};

use crate::{
    counting::{Caller, bump_host, count, field_or_return},
    maps::{GAUGES, RCL_INFLIGHT, in_active_epoch},
};

#[unsafe(no_mangle)]
static VMSCAN_LAYOUT: aya_ebpf::Global<VmscanLayout> = aya_ebpf::Global::new(VmscanLayout::UNSET);

#[tracepoint(category = "vmscan", name = "mm_vmscan_lru_shrink_inactive")]
pub(crate) fn vmscan_shrink_inactive(ctx: TracePointContext) -> u32 {
    let layout = VMSCAN_LAYOUT.load();
    let scanned = field_or_return!(ctx, u64, layout.shrink_nr_scanned);
    let reclaimed = field_or_return!(ctx, u64, layout.shrink_nr_reclaimed);
    in_active_epoch!(|maps| {
        bump_host(&maps, HostCounter::LruPagesScanned, scanned);
        bump_host(&maps, HostCounter::LruPagesReclaimed, reclaimed);
    });
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_kswapd_wake")]
pub(crate) fn vmscan_kswapd_wake(_ctx: TracePointContext) -> u32 {
    in_active_epoch!(|maps| bump_host(&maps, HostCounter::KswapdWakeups, 1));
    0
}

#[inline(always)]
fn add_to_gauge(slot: GaugeSlot, delta: i64) {
    if let Some(value) = GAUGES.get_ptr_mut(slot as u32) {
        // SAFETY: this CPU's slot; the gauge is the sum over CPUs.
        unsafe { *value += delta };
    }
}

#[inline(always)]
fn begin(kind: ReclaimKind) {
    let key = ReclaimInFlightKey {
        pid_tgid: bpf_get_current_pid_tgid(),
        kind: kind as u8,
        _pad: [0; 7],
    };
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match RCL_INFLIGHT.insert(&key, &now, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            if matches!(kind, ReclaimKind::Direct) {
                add_to_gauge(GaugeSlot::DirectReclaimInProgress, 1);
            }
        }
        // A begin without an end (cannot happen on a sane kernel): restart the episode.
        Err(_) => {
            let _ = RCL_INFLIGHT.insert(&key, &now, u64::from(BPF_ANY));
        }
    }
}

#[inline(always)]
fn end(kind: ReclaimKind) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = ReclaimInFlightKey {
        pid_tgid,
        kind: kind as u8,
        _pad: [0; 7],
    };
    // No entry: the episode began before the programs were attached.
    let Some(start) = RCL_INFLIGHT.get_ptr(&key) else {
        return;
    };
    // SAFETY: a valid map value; copied out before the entry is removed.
    let start = unsafe { *start };
    let _ = RCL_INFLIGHT.remove(&key);
    if matches!(kind, ReclaimKind::Direct) {
        add_to_gauge(GaugeSlot::DirectReclaimInProgress, -1);
    }
    // SAFETY: a helper without preconditions.
    let stalled_ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    let bucket = latency_bucket(stalled_ns);
    let caller = Caller::new(pid_tgid);
    let tgid = caller.process;
    in_active_epoch!(|maps| count(
        &maps,
        maps.reclaim,
        &ReclaimKey {
            tgid,
            kind: kind as u8,
            bucket: bucket as u8,
            _pad: [0; 2],
        },
        &caller,
        || maps
            .reclaim_overflow
            .get_ptr_mut(reclaim_overflow_slot(kind, bucket)),
        HostCounter::ReclaimOverflowEvents,
        |counts| {
            counts.episodes += 1;
            counts.stalled_ns += stalled_ns;
        },
    ));
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_begin")]
pub(crate) fn vmscan_direct_begin(_ctx: TracePointContext) -> u32 {
    begin(ReclaimKind::Direct);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_end")]
pub(crate) fn vmscan_direct_end(_ctx: TracePointContext) -> u32 {
    end(ReclaimKind::Direct);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_begin")]
pub(crate) fn vmscan_memcg_begin(_ctx: TracePointContext) -> u32 {
    begin(ReclaimKind::Memcg);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_end")]
pub(crate) fn vmscan_memcg_end(_ctx: TracePointContext) -> u32 {
    end(ReclaimKind::Memcg);
    0
}
