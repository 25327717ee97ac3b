//! Page cache: pages requested by the read path, read misses, additions and evictions.
//!
//! A read misses when the reading thread itself adds pages of the file it reads: the kernel
//! adds them (synchronous or asynchronous readahead) inside filemap_get_pages before the
//! mm_filemap_get_pages event of that same call. So additions wait, per thread and file, as
//! "pending"; the next get_pages event on the same file turns them into misses, and an
//! addition for another file (a write, say) discards them.
//!
//! filemap_read calls filemap_get_pages once per batch of folios, each time with the
//! remaining range of the same read; those continuations (same file, same last index,
//! higher first index) are not counted again.

use aya_ebpf::{
    bindings::BPF_ANY, helpers::bpf_get_current_pid_tgid, macros::tracepoint,
    programs::TracePointContext,
};
use sidecar_common::{ABSENT_FIELD, FilemapLayout, HostCounter, ProcessKey, ReadState};

use crate::{
    counting::{count, field, field_or_return, report_field_error},
    maps::{READ_STATE, in_active_epoch},
    process::process_key,
};

#[unsafe(no_mangle)]
static FILEMAP_LAYOUT: aya_ebpf::Global<FilemapLayout> =
    aya_ebpf::Global::new(FilemapLayout::UNSET);

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
    let pid_tgid = bpf_get_current_pid_tgid();

    let mut requested = if last_index >= index {
        last_index - index + 1
    } else {
        0
    };
    let mut missed = 0;
    match READ_STATE.get_ptr_mut(&pid_tgid) {
        Some(state) => {
            // SAFETY: this thread's entry; only this thread writes it.
            let state = unsafe { &mut *state };
            if state.ino == ino && state.dev == dev {
                missed = state.pending_missed_pages;
                if state.last_index == last_index && index > state.index {
                    requested = 0;
                }
            }
            state.ino = ino;
            state.dev = dev;
            state.index = index;
            state.last_index = last_index;
            state.pending_missed_pages = 0;
        }
        None => {
            let state = ReadState {
                ino,
                dev,
                _pad: 0,
                index,
                last_index,
                pending_missed_pages: 0,
            };
            let _ = READ_STATE.insert(&pid_tgid, &state, u64::from(BPF_ANY));
        }
    }
    if requested == 0 && missed == 0 {
        return 0;
    }
    let tgid = process_key(pid_tgid);
    in_active_epoch!(|maps| count(
        &maps,
        maps.page_cache,
        &ProcessKey { tgid },
        pid_tgid,
        tgid,
        || maps.page_cache_overflow.get_ptr_mut(0),
        HostCounter::PageCacheOverflowEvents,
        |counts| {
            counts.requested_pages += requested;
            counts.missed_pages += missed;
        },
    ));
    0
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
            let state = unsafe { &mut *state };
            if state.ino == ino && state.dev == dev {
                state.pending_missed_pages += pages;
            } else {
                state.ino = ino;
                state.dev = dev;
                state.index = NO_INDEX;
                state.last_index = NO_INDEX;
                state.pending_missed_pages = pages;
            }
        }
        None => {
            let state = ReadState {
                ino,
                dev,
                _pad: 0,
                index: NO_INDEX,
                last_index: NO_INDEX,
                pending_missed_pages: pages,
            };
            let _ = READ_STATE.insert(&pid_tgid, &state, u64::from(BPF_ANY));
        }
    }
    let tgid = process_key(pid_tgid);
    in_active_epoch!(|maps| count(
        &maps,
        maps.page_cache,
        &ProcessKey { tgid },
        pid_tgid,
        tgid,
        || maps.page_cache_overflow.get_ptr_mut(0),
        HostCounter::PageCacheOverflowEvents,
        |counts| counts.added_pages += pages,
    ));
    0
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
    let tgid = process_key(pid_tgid);
    in_active_epoch!(|maps| count(
        &maps,
        maps.page_cache,
        &ProcessKey { tgid },
        pid_tgid,
        tgid,
        || maps.page_cache_overflow.get_ptr_mut(0),
        HostCounter::PageCacheOverflowEvents,
        |counts| counts.evicted_pages += pages,
    ));
    0
}
