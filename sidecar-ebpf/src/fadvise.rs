//! posix_fadvise calls and successes by advice, per process.
//!
//! The exit tracepoint carries only the return value, so the entry stores the advice per
//! thread and the exit counts the call with it.
//!
//! A thread's slot stays in the map between calls (it goes when the thread exits,
//! `process.rs`): the entry writes the advice into it and the exit marks it idle, both in
//! place. Inserting and deleting an LRU-hash element per call costs bucket locks and
//! free-list operations; a lookup and a store do not.

use aya_ebpf::{
    bindings::BPF_ANY, helpers::bpf_get_current_pid_tgid, macros::tracepoint,
    programs::TracePointContext,
};
use sidecar_common::{Advice, FadviseKey, FadviseLayout, HostCounter};

use crate::{
    counting::{Caller, bump_host, count, field_or_return},
    maps::{FADV_INFLIGHT, in_active_epoch},
};

#[unsafe(no_mangle)]
static FADVISE_LAYOUT: aya_ebpf::Global<FadviseLayout> =
    aya_ebpf::Global::new(FadviseLayout::UNSET);

/// A thread's slot between calls.
const NO_CALL_IN_FLIGHT: u32 = u32::MAX;

#[tracepoint(category = "syscalls", name = "sys_enter_fadvise64")]
pub(crate) fn fadvise_enter(ctx: TracePointContext) -> u32 {
    let layout = FADVISE_LAYOUT.load();
    let raw = field_or_return!(ctx, u64, layout.enter_advice);
    let advice = Advice::from_raw(raw, layout.s390x_numbering != 0) as u32;
    let pid_tgid = bpf_get_current_pid_tgid();
    match FADV_INFLIGHT.get_ptr_mut(&pid_tgid) {
        // SAFETY: this thread's slot; only this thread writes it.
        Some(slot) => unsafe { *slot = advice },
        // The thread's first call: an LRU map, so inserting never fails for lack of room.
        None => {
            let _ = FADV_INFLIGHT.insert(&pid_tgid, &advice, u64::from(BPF_ANY));
        }
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_fadvise64")]
pub(crate) fn fadvise_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // No slot, or an idle one: the call began before the programs were attached.
    let Some(slot) = FADV_INFLIGHT.get_ptr_mut(&pid_tgid) else {
        return 0;
    };
    // SAFETY: this thread's slot; only this thread writes it.
    let advice = unsafe { core::mem::replace(&mut *slot, NO_CALL_IN_FLIGHT) };
    if advice == NO_CALL_IN_FLIGHT {
        return 0;
    }

    let ret = field_or_return!(ctx, i64, FADVISE_LAYOUT.load().exit_ret);
    let caller = Caller::new(pid_tgid);
    let tgid = caller.process;
    in_active_epoch!(|maps| {
        bump_host(&maps, HostCounter::FadviseCallsSeen, 1);
        count(
            &maps,
            maps.fadvise,
            &FadviseKey { tgid, advice },
            &caller,
            || maps.fadvise_overflow.get_ptr_mut(advice),
            HostCounter::FadviseOverflowEvents,
            |counts| {
                counts.calls += 1;
                if ret == 0 {
                    counts.successes += 1;
                }
            },
        );
    });
    0
}
