//! Page cache: pages requested by the read path, read misses, additions and evictions.
//!
//! A read misses when the reading thread itself adds pages of the file it reads: the kernel
//! adds them (synchronous or asynchronous readahead) inside filemap_get_pages before the
//! mm_filemap_get_pages event of that same call. So additions wait, per thread and file, as
//! "pending"; the next get_pages event on the same file turns them into misses, and an
//! addition for another file on the same device (a write, say) discards them. Additions for
//! a file on another device (the metadata a filesystem reads for that read, which goes to
//! the block device's mapping) wait in a second slot instead (see [`ReadState`]).
//!
//! filemap_read calls filemap_get_pages once per batch of folios, each time with the
//! remaining range of the same read; those continuations (same file, same last index,
//! higher first index) are not counted again.
//!
//! Kernels without the mm_filemap_get_pages tracepoint (before 6.12) get the same event from
//! an fexit program on the read function (`read_iter_exit`), once per read call.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel},
    macros::{btf_tracepoint, fexit, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, FExitContext, RawTracePointContext, TracePointContext},
};
use sidecar_common::{
    ABSENT_FIELD, FilemapLayout, HostCounter, InodeLayout, ProcessKey, ReadHookLayout,
    ReadInFlight, ReadState, SyscallReadLayout,
};

use crate::{
    counting::{Caller, count, field, field_or_return, report_field_error, typed_read},
    maps::{RD_INFLIGHT, READ_STATE, in_active_epoch},
};

#[unsafe(no_mangle)]
static FILEMAP_LAYOUT: aya_ebpf::Global<FilemapLayout> =
    aya_ebpf::Global::new(FilemapLayout::UNSET);

#[unsafe(no_mangle)]
static INODE_LAYOUT: aya_ebpf::Global<InodeLayout> = aya_ebpf::Global::new(InodeLayout::UNSET);

#[unsafe(no_mangle)]
static READ_HOOK_LAYOUT: aya_ebpf::Global<ReadHookLayout> =
    aya_ebpf::Global::new(ReadHookLayout::UNSET);

/// No previous range: the next get_pages event is never a continuation.
const NO_INDEX: u64 = u64::MAX;

/// Pages in the folio of an add/delete event; kernels without the `order` field add pages.
#[inline(always)]
fn folio_pages(ctx: &TracePointContext, order_offset: u32) -> Result<u64, u32> {
    if order_offset == ABSENT_FIELD {
        return Ok(1);
    }
    // Bound the shift so that a corrupt value cannot produce a huge count.
    field::<u8>(ctx, order_offset).map(|order| 1u64 << (order & 31))
}

#[tracepoint(category = "filemap", name = "mm_filemap_get_pages")]
pub(crate) fn filemap_get_pages(ctx: TracePointContext) -> u32 {
    let layout = FILEMAP_LAYOUT.load();
    let ino = field_or_return!(ctx, u64, layout.get_pages_ino);
    let dev = field_or_return!(ctx, u32, layout.get_pages_dev);
    let index = field_or_return!(ctx, u64, layout.get_pages_index);
    let last_index = field_or_return!(ctx, u64, layout.get_pages_last_index);
    let requested = if last_index >= index {
        last_index - index + 1
    } else {
        0
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let request = Request {
        ino,
        dev,
        mapping: 0,
        index,
        last_index,
        requested,
    };
    on_get_pages(pid_tgid, READ_STATE.get_ptr_mut(&pid_tgid), &request);
    0
}

/// The same event as a raw tracepoint, used when the kernel's BTF says where the file's size
/// is: `TP_PROTO(struct address_space *mapping, pgoff_t index, pgoff_t last_index)`. The
/// range is cut at the end of the file, so that a 4 KiB file read through a 128 KiB buffer
/// counts one page requested, not 32.
#[raw_tracepoint(tracepoint = "mm_filemap_get_pages")]
pub(crate) fn filemap_get_pages_sized(ctx: RawTracePointContext) -> u32 {
    let mapping: u64 = ctx.arg(0);
    let index: u64 = ctx.arg(1);
    let last_index: u64 = ctx.arg(2);
    on_sized_request::<_, false>(&ctx, mapping, index, last_index);
    0
}

/// The same as a BTF-typed raw tracepoint (`tp_btf`): `mapping` has its kernel type, so the
/// file's identity and size are plain loads instead of helper calls. Like the raw
/// tracepoint it needs no BPF trampoline.
#[btf_tracepoint(function = "mm_filemap_get_pages")]
pub(crate) fn filemap_get_pages_typed(ctx: BtfTracePointContext) -> i32 {
    let mapping: u64 = ctx.arg(0);
    let index: u64 = ctx.arg(1);
    let last_index: u64 = ctx.arg(2);
    on_sized_request::<_, true>(&ctx, mapping, index, last_index);
    0
}

/// The fallback of the mm_filemap_get_pages event where the tracepoint does not exist: fexit
/// on the read function, `filemap_read` (5.12+) or `generic_file_buffered_read` (older),
/// both `(struct kiocb *iocb, struct iov_iter *iter, ssize_t already_read) -> ssize_t`.
/// Userspace checks that signature in the kernel's BTF and picks the function at load time.
/// At exit `iocb->ki_pos` and `iter->count` have moved by the bytes this call copied (its
/// return value minus `already_read`), which gives back the range the caller asked for. One
/// event per read call, after the pages it added: no continuations to skip.
#[fexit(function = "filemap_read")]
pub(crate) fn read_iter_exit(ctx: FExitContext) -> u32 {
    let hook = READ_HOOK_LAYOUT.load();
    let iocb: u64 = ctx.arg(0);
    let iter: u64 = ctx.arg(1);
    let already_read: i64 = ctx.arg(2);
    let ret: i64 = ctx.arg(3);
    // The arguments are typed (BTF): plain loads, no helper call each.
    let pos = typed_read::<i64>(iocb, hook.kiocb_pos);
    let remaining = typed_read::<u64>(iter, hook.iter_count);
    let file = typed_read::<u64>(iocb, hook.kiocb_filp);
    let mapping = typed_read::<u64>(file, hook.file_mapping);
    let copied = if ret > already_read && already_read >= 0 {
        (ret - already_read) as u64
    } else {
        0
    };
    let count = remaining + copied;
    let start = (pos.max(0) as u64).saturating_sub(copied);
    if count == 0 {
        return 0;
    }
    let shift = INODE_LAYOUT.load().page_shift & 31;
    on_sized_request::<_, true>(&ctx, mapping, start >> shift, (start + count - 1) >> shift);
    0
}

#[unsafe(no_mangle)]
static SYSCALL_READ_LAYOUT: aya_ebpf::Global<SyscallReadLayout> =
    aya_ebpf::Global::new(SyscallReadLayout::UNSET);

/// The last fallback of the mm_filemap_get_pages event, for kernels without it where BPF
/// trampolines (fexit) are not available either: read(2) and pread64(2). The enter event
/// finds the descriptor's file (task->files->fdt->fd[fd], offsets from BTF) and keeps the
/// request; the exit event counts it, after the pages the call added. Reads that do not go
/// through these two syscalls (readv, io_uring, splice) are not seen.
#[tracepoint(category = "syscalls", name = "sys_enter_read")]
pub(crate) fn read_sys_enter(ctx: TracePointContext) -> u32 {
    on_read_enter(&ctx, false);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_pread64")]
pub(crate) fn pread_sys_enter(ctx: TracePointContext) -> u32 {
    on_read_enter(&ctx, true);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub(crate) fn read_sys_exit(ctx: TracePointContext) -> u32 {
    on_read_exit(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_pread64")]
pub(crate) fn pread_sys_exit(ctx: TracePointContext) -> u32 {
    on_read_exit(&ctx);
    0
}

#[inline(always)]
fn on_read_enter(ctx: &TracePointContext, positioned: bool) {
    let layout = SYSCALL_READ_LAYOUT.load();
    let (Ok(fd), Ok(count)) = (
        field::<u64>(ctx, layout.enter_fd),
        field::<u64>(ctx, layout.enter_count),
    ) else {
        report_field_error(ctx, layout.enter_fd);
        return;
    };
    let fd = fd as u32;
    // SAFETY: the helper has no preconditions; the pointer is only read through
    // bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    let file = kernel_read::<u64>(task, layout.task_files)
        .and_then(|files| kernel_read::<u64>(files, layout.files_fdt))
        .and_then(|fdt| {
            let max_fds = kernel_read::<u32>(fdt, layout.fdt_max_fds)?;
            if fd >= max_fds {
                return Err(0);
            }
            let fds = kernel_read::<u64>(fdt, layout.fdt_fd)?;
            kernel_read::<u64>(fds + u64::from(fd) * 8, 0)
        });
    // A closed or bad descriptor: the read fails, nothing to count.
    let Ok(file) = file else {
        return;
    };
    let Ok(flags) = kernel_read::<u32>(file, layout.file_flags) else {
        return;
    };
    if flags & layout.o_direct != 0 {
        return;
    }
    let pos = if positioned {
        field::<u64>(ctx, layout.enter_pos).map_err(|_| 0)
    } else {
        kernel_read::<u64>(file, layout.file_pos)
    };
    let (Ok(pos), Ok(mapping)) = (pos, kernel_read::<u64>(file, layout.file_mapping)) else {
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let request = ReadInFlight {
        mapping,
        pos,
        count,
    };
    match RD_INFLIGHT.get_ptr_mut(&pid_tgid) {
        // SAFETY: this thread's entry; only this thread writes it.
        Some(slot) => unsafe { *slot = request },
        None => {
            let _ = RD_INFLIGHT.insert(&pid_tgid, &request, u64::from(BPF_ANY));
        }
    }
}

#[inline(always)]
fn on_read_exit(ctx: &TracePointContext) {
    let layout = SYSCALL_READ_LAYOUT.load();
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(slot) = RD_INFLIGHT.get_ptr_mut(&pid_tgid) else {
        return;
    };
    // SAFETY: this thread's entry; only this thread writes it. The slot stays (idle) so
    // that the next read is a store, not an insert.
    let request = unsafe { core::ptr::replace(slot, ReadInFlight::default()) };
    let Ok(ret) = field::<i64>(ctx, layout.exit_ret) else {
        report_field_error(ctx, layout.exit_ret);
        return;
    };
    if request.mapping == 0 || request.count == 0 || ret < 0 {
        return;
    }
    let shift = INODE_LAYOUT.load().page_shift & 31;
    let last = request.pos.saturating_add(request.count - 1);
    on_sized_request::<_, false>(ctx, request.mapping, request.pos >> shift, last >> shift);
}

/// A read of `index..=last_index` of the file of `mapping` (a `struct address_space *`),
/// cut at the end of the file (userspace found where the size is in the kernel's BTF), so
/// that a 4 KiB file read through a 128 KiB buffer counts one page requested, not 32.
/// `TYPED`: `mapping` came from an fexit program's arguments, so the verifier knows its BTF
/// type and the fields behind it are plain loads (see `typed_read`); otherwise each is a
/// `bpf_probe_read_kernel` call.
#[inline(always)]
fn on_sized_request<C: EbpfContext, const TYPED: bool>(
    ctx: &C,
    mapping: u64,
    index: u64,
    last_index: u64,
) {
    let layout = INODE_LAYOUT.load();
    let pid_tgid = bpf_get_current_pid_tgid();
    let state = READ_STATE.get_ptr_mut(&pid_tgid);
    let read = |base: u64, offset: u32| -> Result<u64, u32> {
        if TYPED {
            Ok(typed_read::<u64>(base, offset))
        } else {
            kernel_read::<u64>(base, offset).map_err(|_| offset)
        }
    };
    // The size can change between reads; the file's identity cannot while its mapping
    // lives, so a thread reading the same file again (the common case) reads two fields,
    // not five.
    let known = state.and_then(|state| {
        // SAFETY: this thread's entry; only this thread writes it.
        let state = unsafe { &*state };
        (mapping != 0 && state.mapping == mapping).then_some((state.ino, state.dev))
    });
    let fields = read(mapping, layout.mapping_host).and_then(|host| {
        let size = read(host, layout.inode_size)? as i64;
        let (ino, dev) = match known {
            Some(identity) => identity,
            None => {
                let sb = read(host, layout.inode_sb)?;
                let dev = if TYPED {
                    typed_read::<u32>(sb, layout.sb_dev)
                } else {
                    kernel_read::<u32>(sb, layout.sb_dev).map_err(|_| layout.sb_dev)?
                };
                (read(host, layout.inode_ino)?, dev)
            }
        };
        Ok((size, ino, dev))
    });
    let (size, ino, dev) = match fields {
        Ok(fields) => fields,
        Err(offset) => {
            report_field_error(ctx, offset);
            return;
        }
    };
    let page_size = 1u64 << (layout.page_shift & 31);
    let file_pages = (size.max(0) as u64).div_ceil(page_size);
    let last_index = if file_pages == 0 {
        0
    } else {
        last_index.min(file_pages - 1)
    };
    let requested = if file_pages > 0 && last_index >= index {
        last_index - index + 1
    } else {
        0
    };
    let request = Request {
        ino,
        dev,
        mapping,
        index,
        last_index,
        requested,
    };
    on_get_pages(pid_tgid, state, &request);
}

#[inline(always)]
fn kernel_read<T>(base: u64, offset: u32) -> Result<T, i64> {
    if base == 0 {
        return Err(0);
    }
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.map_err(i64::from)
}

/// A read-path request of `requested` pages for the range `index..=last_index` of a file.
struct Request {
    ino: u64,
    dev: u32,
    /// The file's `struct address_space`, when the program saw it (0 otherwise).
    mapping: u64,
    index: u64,
    last_index: u64,
    requested: u64,
}

/// Counts a request of the thread `pid_tgid`, whose READ_STATE entry is `state`.
#[inline(always)]
fn on_get_pages(pid_tgid: u64, state: Option<*mut ReadState>, request: &Request) {
    let Request {
        ino,
        dev,
        mapping,
        index,
        last_index,
        mut requested,
    } = *request;
    let mut missed = 0;
    match state {
        Some(state) => {
            // SAFETY: this thread's entry; only this thread writes it.
            let state = unsafe { &mut *state };
            let aux = state.aux_ino == ino && state.aux_dev == dev;
            if state.ino == ino && state.dev == dev {
                missed = state.pending_missed_pages;
                if state.last_index == last_index && index > state.index {
                    requested = 0;
                }
            } else if aux {
                missed = state.aux_pending_pages;
            }
            if aux {
                state.aux_ino = 0;
                state.aux_dev = 0;
                state.aux_pending_pages = 0;
            }
            state.ino = ino;
            state.dev = dev;
            state.mapping = mapping;
            state.index = index;
            state.last_index = last_index;
            state.pending_missed_pages = 0;
        }
        None => {
            let state = ReadState {
                ino,
                dev,
                index,
                last_index,
                mapping,
                ..ReadState::default()
            };
            let _ = READ_STATE.insert(&pid_tgid, &state, u64::from(BPF_ANY));
        }
    }
    if requested == 0 && missed == 0 {
        return;
    }
    let caller = Caller::new(pid_tgid);
    let tgid = caller.process;
    in_active_epoch!(|maps| count(
        &maps,
        maps.page_cache,
        &ProcessKey { tgid },
        &caller,
        || maps.page_cache_overflow.get_ptr_mut(0),
        HostCounter::PageCacheOverflowEvents,
        |counts| {
            counts.read_attempts += requested;
            counts.misses += missed;
        },
    ));
}

#[tracepoint(category = "filemap", name = "mm_filemap_add_to_page_cache")]
pub(crate) fn filemap_add(ctx: TracePointContext) -> u32 {
    let layout = FILEMAP_LAYOUT.load();
    let ino = field_or_return!(ctx, u64, layout.add_ino);
    let dev = field_or_return!(ctx, u32, layout.add_dev);
    let pages = match folio_pages(&ctx, layout.add_order) {
        Ok(pages) => pages,
        Err(offset) => {
            report_field_error(&ctx, offset);
            return 0;
        }
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    match READ_STATE.get_ptr_mut(&pid_tgid) {
        Some(state) => {
            // SAFETY: this thread's entry; only this thread writes it.
            on_add(unsafe { &mut *state }, ino, dev, pages);
        }
        None => {
            let state = ReadState {
                ino,
                dev,
                index: NO_INDEX,
                last_index: NO_INDEX,
                pending_missed_pages: pages,
                ..ReadState::default()
            };
            let _ = READ_STATE.insert(&pid_tgid, &state, u64::from(BPF_ANY));
        }
    }
    let caller = Caller::new(pid_tgid);
    let tgid = caller.process;
    in_active_epoch!(|maps| count(
        &maps,
        maps.page_cache,
        &ProcessKey { tgid },
        &caller,
        || maps.page_cache_overflow.get_ptr_mut(0),
        HostCounter::PageCacheOverflowEvents,
        |counts| counts.adds += pages,
    ));
    0
}

/// Keeps `pages` added by this thread to file (`ino`, `dev`) pending in its read state.
///
/// - The file of the primary slot (the file read last, or added to last): pending there.
/// - The file of the second slot: pending there.
/// - A file on another device than the primary's: the second slot. That is where the
///   metadata a filesystem reads on behalf of a read goes (ext4's extent and index blocks
///   are added to the block device's mapping), so it does not discard the read's pending
///   misses. When the second slot already holds another file, that file was a new read
///   (its additions came first), so it becomes the primary.
/// - Another file on the same device (a write, another file read): it becomes the primary,
///   and the previous file's pending pages are discarded.
#[inline(always)]
fn on_add(state: &mut ReadState, ino: u64, dev: u32, pages: u64) {
    if state.ino == ino && state.dev == dev {
        state.pending_missed_pages += pages;
    } else if state.aux_ino == ino && state.aux_dev == dev {
        state.aux_pending_pages += pages;
    } else if state.dev != dev {
        if state.aux_ino != 0 || state.aux_dev != 0 {
            state.ino = state.aux_ino;
            state.dev = state.aux_dev;
            state.mapping = 0;
            state.index = NO_INDEX;
            state.last_index = NO_INDEX;
            state.pending_missed_pages = state.aux_pending_pages;
        }
        state.aux_ino = ino;
        state.aux_dev = dev;
        state.aux_pending_pages = pages;
    } else {
        state.ino = ino;
        state.dev = dev;
        state.mapping = 0;
        state.index = NO_INDEX;
        state.last_index = NO_INDEX;
        state.pending_missed_pages = pages;
    }
}

#[tracepoint(category = "filemap", name = "mm_filemap_delete_from_page_cache")]
pub(crate) fn filemap_delete(ctx: TracePointContext) -> u32 {
    let pages = match folio_pages(&ctx, FILEMAP_LAYOUT.load().delete_order) {
        Ok(pages) => pages,
        Err(offset) => {
            report_field_error(&ctx, offset);
            return 0;
        }
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let caller = Caller::new(pid_tgid);
    let tgid = caller.process;
    in_active_epoch!(|maps| count(
        &maps,
        maps.page_cache,
        &ProcessKey { tgid },
        &caller,
        || maps.page_cache_overflow.get_ptr_mut(0),
        HostCounter::PageCacheOverflowEvents,
        |counts| counts.evictions += pages,
    ));
    0
}
