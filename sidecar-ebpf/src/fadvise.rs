//! posix_fadvise calls and successes by advice, per process.
//!
//! The exit tracepoint carries only the return value, so the entry stores the advice per
//! thread and the exit counts the call with it.

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

#[tracepoint(category = "syscalls", name = "sys_enter_fadvise64")]
pub(crate) fn fadvise_enter(ctx: TracePointContext) -> u32 {
    let layout = FADVISE_LAYOUT.load();
    let raw = field_or_return!(ctx, u64, layout.enter_advice);
    let advice = Advice::from_raw(raw, layout.s390x_numbering != 0) as u32;
    // An LRU map: inserting never fails for lack of room.
    let _ = FADV_INFLIGHT.insert(&bpf_get_current_pid_tgid(), &advice, u64::from(BPF_ANY));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_fadvise64")]
pub(crate) fn fadvise_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // No entry: the call began before the programs were attached.
    let Some(advice) = FADV_INFLIGHT.get_ptr(&pid_tgid) else {
        return 0;
    };
    // SAFETY: a valid map value; copied out before the entry is removed.
    let advice = unsafe { *advice };
    let _ = FADV_INFLIGHT.remove(&pid_tgid);

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
