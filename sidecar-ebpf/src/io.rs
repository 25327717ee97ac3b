//! File I/O: latency of reads and syncs and the bytes reads return, per process, and the
//! pages each process dirties in the page cache.
//!
//! Reads and syncs are syscall tracepoints: the entry program notes the time and the kind of
//! call per thread, the exit program (one for every call) counts it in its latency bucket.
//! A call that entered before the programs were attached has no entry and is not counted.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns},
    macros::{btf_tracepoint, fexit, tracepoint},
    programs::{BtfTracePointContext, FExitContext, TracePointContext},
};
use sidecar_common::{
    ABSENT_FIELD, HostCounter, IoInFlight, IoKey, IoLayout, IoOp, io_overflow_slot, latency_bucket,
};

use crate::{
    counting::{self, Caller, count, field_or_return},
    maps::{IO_INFLIGHT, in_active_epoch},
};

#[unsafe(no_mangle)]
static IO_LAYOUT: aya_ebpf::Global<IoLayout> = aya_ebpf::Global::new(IoLayout::UNSET);

/// read(2), pread64(2), readv(2) and preadv(2) enter here.
#[tracepoint(category = "syscalls", name = "sys_enter_read")]
pub(crate) fn io_read_enter(_ctx: TracePointContext) -> u32 {
    enter(IoOp::Read);
    0
}

/// fsync(2) and fdatasync(2) enter here.
#[tracepoint(category = "syscalls", name = "sys_enter_fsync")]
pub(crate) fn io_sync_enter(_ctx: TracePointContext) -> u32 {
    enter(IoOp::Sync);
    0
}

#[inline(always)]
fn enter(op: IoOp) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let call = IoInFlight {
        // SAFETY: a helper without preconditions.
        start_ns: unsafe { bpf_ktime_get_ns() },
        op: op as u32,
        _pad: 0,
    };
    match IO_INFLIGHT.get_ptr_mut(&pid_tgid) {
        // SAFETY: this thread's entry; only this thread writes it.
        Some(slot) => unsafe { *slot = call },
        None => {
            let _ = IO_INFLIGHT.insert(&pid_tgid, &call, u64::from(BPF_ANY));
        }
    }
}

/// The exit of every call `enter` saw: its latency, and for reads the bytes returned.
#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub(crate) fn io_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(slot) = IO_INFLIGHT.get_ptr_mut(&pid_tgid) else {
        return 0;
    };
    // SAFETY: this thread's entry; only this thread writes it. The slot stays (idle) so
    // that the next call is a store, not an insert.
    let call = unsafe { core::ptr::replace(slot, IoInFlight::default()) };
    if call.start_ns == 0 {
        return 0;
    }
    let ret = field_or_return!(ctx, i64, IO_LAYOUT.load().exit_ret);
    // SAFETY: a helper without preconditions.
    let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(call.start_ns);
    let bucket = latency_bucket(ns);
    let op = if call.op == IoOp::Sync as u32 {
        IoOp::Sync
    } else {
        IoOp::Read
    };
    let bytes = if matches!(op, IoOp::Read) && ret > 0 {
        ret as u64
    } else {
        0
    };
    count_io(pid_tgid, op, bucket, |counts| {
        counts.events += 1;
        counts.ns += ns;
        counts.bytes += bytes;
    });
    0
}

/// writeback_dirty_folio as a BTF-typed tracepoint: `TP_PROTO(struct folio *folio, struct
/// address_space *mapping)`. The folio is typed, so its flags and order are plain loads, and
/// a large folio counts all its pages.
#[btf_tracepoint(function = "writeback_dirty_folio")]
pub(crate) fn io_dirty_folio_typed(ctx: BtfTracePointContext) -> i32 {
    let folio: u64 = ctx.arg(0);
    let pages = folio_pages(folio, &IO_LAYOUT.load());
    count_dirty(&ctx, pages);
    0
}

/// writeback_dirty_folio or (before folios) writeback_dirty_page as a classic tracepoint:
/// one page per event.
#[tracepoint(category = "writeback", name = "writeback_dirty_folio")]
pub(crate) fn io_dirty(ctx: TracePointContext) -> u32 {
    count_dirty(&ctx, 1);
    0
}

/// Writeback started on a folio: fexit on `__folio_start_writeback` (or, before folios,
/// `__test_set_page_writeback`), in the task that started it. Its first argument is the
/// typed folio (or page); a function that returns whether the folio was already under
/// writeback is counted only when it was not.
#[fexit(function = "__folio_start_writeback")]
pub(crate) fn io_writeback_start(ctx: FExitContext) -> i32 {
    let layout = IO_LAYOUT.load();
    if layout.writeback_already_mask != 0 {
        let already: u64 = ctx.arg(2);
        if already & u64::from(layout.writeback_already_mask) != 0 {
            return 0;
        }
    }
    let folio: u64 = ctx.arg(0);
    let pages = folio_pages(folio, &layout);
    count_io(bpf_get_current_pid_tgid(), IoOp::Writeback, 0, |counts| {
        counts.events += 1;
        counts.pages += pages;
    });
    0
}

/// Pages of a typed folio, where BTF gave a folio layout (one page before folios).
#[inline(always)]
fn folio_pages(folio: u64, layout: &IoLayout) -> u64 {
    if layout.folio_flags == ABSENT_FIELD || folio == 0 {
        return 1;
    }
    // SAFETY: `folio` is a typed argument; the verifier checks this load against
    // `struct folio` (the offset is a constant from the same BTF) and makes it
    // fault-tolerant.
    let flags =
        unsafe { core::ptr::read_volatile((folio + u64::from(layout.folio_flags)) as *const u64) };
    counting::folio_pages(folio, flags, layout.folio_head_bit, layout.folio_order)
}

#[inline(always)]
fn count_dirty<C: EbpfContext>(_ctx: &C, pages: u64) {
    count_io(bpf_get_current_pid_tgid(), IoOp::Dirty, 0, |counts| {
        counts.events += 1;
        counts.pages += pages;
    });
}

#[inline(always)]
fn count_io(
    pid_tgid: u64,
    op: IoOp,
    bucket: u32,
    update: impl FnOnce(&mut sidecar_common::IoCounts),
) {
    let caller = Caller::new(pid_tgid);
    let key = IoKey {
        tgid: caller.process,
        op: op as u8,
        bucket: bucket as u8,
        _pad: [0; 2],
    };
    in_active_epoch!(|maps| count(
        &maps,
        maps.io,
        &key,
        &caller,
        || maps.io_overflow.get_ptr_mut(io_overflow_slot(op, bucket)),
        HostCounter::IoOverflowEvents,
        update,
    ));
}
