//! posix_fadvise calls and successes by advice, per process, whichever way they come.
//!
//! Where the kernel has BTF and BPF trampolines, one fexit program per call sees the
//! arguments and the result together: `fadvise_syscall_exit` on `ksys_fadvise64_64` (every
//! fadvise64 syscall, a bad descriptor included) and `fadvise_io_uring_exit` on `io_fadvise`
//! (IORING_OP_FADVISE; a function of its own from 6.0, inlined into io_issue_sqe before). `vfs_fadvise` would see
//! both at once, but readahead(2) and madvise(MADV_WILLNEED) call it too, and a bad
//! descriptor never reaches it.
//!
//! Elsewhere the syscall's exit tracepoint, whose event carries only the return value. Where
//! the kernel has `bpf_task_pt_regs` (5.15+) and BTF, `fadvise_exit_regs` alone counts the
//! call: the calling task's saved user registers still hold the syscall's arguments and its
//! return value there (the tracepoint fires before a tracer's exit stop could change them,
//! and 32-bit compat calls fire no syscall tracepoint). Older kernels pair the tracepoints:
//! the entry stores the advice per thread and the exit counts the call with it. A thread's slot
//! stays in the map between calls (it goes when the thread exits, `process.rs`): the entry
//! writes the advice into it and the exit marks it idle, both in place. Inserting and
//! deleting an LRU-hash element per call costs bucket locks and free-list operations; a
//! lookup and a store do not.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs,
    },
    macros::{fexit, tracepoint},
    programs::{FExitContext, TracePointContext},
};
use sidecar_common::{ABSENT_FIELD, Advice, FadviseKey, FadviseLayout, HostCounter};

use crate::{
    counting::{Caller, bump_host, count, field_or_return, report_field_error, typed_read},
    maps::{FADV_INFLIGHT, in_active_epoch},
};

#[unsafe(no_mangle)]
static FADVISE_LAYOUT: aya_ebpf::Global<FadviseLayout> =
    aya_ebpf::Global::new(FadviseLayout::UNSET);

/// A thread's slot between calls.
const NO_CALL_IN_FLIGHT: u32 = u32::MAX;

/// io_fadvise's answer when it cannot run without blocking: io_uring calls it again from a
/// worker, and that call is the one to count.
const EAGAIN: i32 = 11;

/// Counts one call of `advice` for the calling process.
#[inline(always)]
fn count_call(pid_tgid: u64, advice: u32, succeeded: bool) {
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
                if succeeded {
                    counts.successes += 1;
                }
            },
        );
    });
}

/// `int ksys_fadvise64_64(int fd, loff_t offset, loff_t len, int advice)`.
#[fexit(function = "ksys_fadvise64_64")]
pub(crate) fn fadvise_syscall_exit(ctx: FExitContext) -> u32 {
    // `int`s: the upper halves of their 64-bit slots are not theirs.
    let advice: i32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    count_call(
        bpf_get_current_pid_tgid(),
        Advice::from_raw(i64::from(advice) as u64) as u32,
        ret == 0,
    );
    0
}

/// `int io_fadvise(struct io_kiocb *req, unsigned int issue_flags)`: the result is in the
/// request (`cqe.res`); the return value says only whether the request ran. Workers of an
/// io_uring are threads of the process that submitted it, so the caller is the process.
#[fexit(function = "io_fadvise")]
pub(crate) fn fadvise_io_uring_exit(ctx: FExitContext) -> u32 {
    let ret: i32 = ctx.arg(2);
    if ret == -EAGAIN {
        return 0;
    }
    let layout = FADVISE_LAYOUT.load();
    if layout.io_uring_advice == ABSENT_FIELD || layout.io_uring_result == ABSENT_FIELD {
        return 0;
    }
    let request: u64 = ctx.arg(0);
    // SAFETY: bpf_probe_read_kernel checks the address; a bad offset yields an error.
    let read =
        |offset: u32| unsafe { bpf_probe_read_kernel((request + u64::from(offset)) as *const u32) };
    let (Ok(advice), Ok(result)) = (read(layout.io_uring_advice), read(layout.io_uring_result))
    else {
        report_field_error(&ctx, layout.io_uring_advice);
        return 0;
    };
    count_call(
        bpf_get_current_pid_tgid(),
        Advice::from_raw(u64::from(advice)) as u32,
        result == 0,
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_fadvise64")]
pub(crate) fn fadvise_enter(ctx: TracePointContext) -> u32 {
    let raw = field_or_return!(ctx, u64, FADVISE_LAYOUT.load().enter_advice);
    let advice = Advice::from_raw(raw) as u32;
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
    count_call(pid_tgid, advice, ret == 0);
    0
}

/// The syscall's exit alone: the arguments from the saved registers, the caller from the
/// task (offsets from BTF). Every helper call costs a call and a return, which on CPUs with
/// return-thunk mitigations is most of a program's time: this one makes two.
#[tracepoint(category = "syscalls", name = "sys_exit_fadvise64")]
pub(crate) fn fadvise_exit_regs(_ctx: TracePointContext) -> u32 {
    let layout = FADVISE_LAYOUT.load();
    if layout.regs_advice == ABSENT_FIELD
        || layout.regs_result == ABSENT_FIELD
        || layout.task_pid == ABSENT_FIELD
        || layout.task_tgid == ABSENT_FIELD
    {
        return 0;
    }
    // SAFETY: both helpers return BTF-typed pointers the verifier checks every load through.
    let task = unsafe { bpf_get_current_task_btf() };
    let regs = unsafe { bpf_task_pt_regs(task) } as u64;
    let task = task as u64;
    let advice: u64 = typed_read(regs, layout.regs_advice);
    let result: u64 = typed_read(regs, layout.regs_result);
    let pid: u32 = typed_read(task, layout.task_pid);
    let tgid: u32 = typed_read(task, layout.task_tgid);
    count_call(
        (u64::from(tgid) << 32) | u64::from(pid),
        Advice::from_raw(advice) as u32,
        result == 0,
    );
    0
}
