//! Page-cache additions, evictions and refaults charged to the memory cgroup that owns the
//! page, and refaults by the process that was running.
//!
//! The page_cache module counts by the acting task: when kswapd, a kworker or another
//! cgroup's reclaim does the work, the page's owner is not who is running. A page-cache
//! page is charged to its memory cgroup before it is added and until it is freed, so the
//! page (or folio) the BTF-typed tracepoints get says whose it is: `memcg_data` ->
//! `mem_cgroup.css.cgroup->kn->id`, the cgroup id userspace maps to a workload.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{btf_tracepoint, fexit},
    programs::{BtfTracePointContext, FExitContext},
};
use sidecar_common::{ABSENT_FIELD, HostCounter, OwnerBy, OwnerCounts, OwnerKey, OwnerLayout};

use crate::{
    counting::{Caller, Slot, bump_host, count, folio_pages, slot},
    maps::{EpochMaps, in_active_epoch},
};

#[unsafe(no_mangle)]
static OWNER_LAYOUT: aya_ebpf::Global<OwnerLayout> = aya_ebpf::Global::new(OwnerLayout::UNSET);

/// `TP_PROTO(struct folio *folio)` (`struct page *` before folios).
#[btf_tracepoint(function = "mm_filemap_add_to_page_cache")]
pub(crate) fn memcg_add(ctx: BtfTracePointContext) -> i32 {
    let page: u64 = ctx.arg(0);
    let page = Page::of(page);
    count_owner(page.memcg_id(), |counts| counts.adds += page.pages);
    0
}

#[btf_tracepoint(function = "mm_filemap_delete_from_page_cache")]
pub(crate) fn memcg_delete(ctx: BtfTracePointContext) -> i32 {
    let page: u64 = ctx.arg(0);
    let page = Page::of(page);
    count_owner(page.memcg_id(), |counts| counts.evictions += page.pages);
    0
}

/// `workingset_refault(folio, shadow)` runs for every page read back in (file) or swapped
/// back in (anonymous) while its shadow entry is still there: a refault. Counted for the
/// page's memory cgroup and for the process that was running.
#[fexit(function = "workingset_refault")]
pub(crate) fn memcg_refault(ctx: FExitContext) -> i32 {
    let page: u64 = ctx.arg(0);
    let page = Page::of(page);
    let anonymous = page.anonymous;
    let pages = page.pages;
    let update = move |counts: &mut OwnerCounts| {
        if anonymous {
            counts.anon_refaults += pages;
        } else {
            counts.file_refaults += pages;
        }
    };
    count_owner(page.memcg_id(), update);
    let caller = Caller::new(bpf_get_current_pid_tgid());
    let key = OwnerKey {
        id: u64::from(caller.process),
        by: OwnerBy::Process as u32,
        _pad: 0,
    };
    in_active_epoch!(|maps| count(
        &maps,
        maps.owner,
        &key,
        &caller,
        || maps.owner_overflow.get_ptr_mut(OwnerBy::Process as u32),
        HostCounter::OwnerOverflowEvents,
        update,
    ));
    0
}

/// What the programs need of a page: its memory cgroup, size and kind.
struct Page {
    memcg: u64,
    pages: u64,
    anonymous: bool,
}

impl Page {
    /// `page` is a typed argument (a `struct folio *` or `struct page *`): its own fields
    /// are plain loads, which the verifier checks against its BTF type.
    #[inline(always)]
    fn of(page: u64) -> Page {
        let layout = OWNER_LAYOUT.load();
        if page == 0 || layout.page_memcg == ABSENT_FIELD {
            return Page {
                memcg: 0,
                pages: 1,
                anonymous: false,
            };
        }
        // SAFETY: see above; the offsets are constants from the same BTF.
        let flags = unsafe { core::ptr::read_volatile(page as *const u64) };
        let at = page + u64::from(layout.page_memcg);
        let memcg = if layout.memcg_data_flags != 0 {
            // SAFETY: as above: `folio.memcg_data`, an `unsigned long`.
            let data = unsafe { core::ptr::read_volatile(at as *const u64) };
            data & !u64::from(layout.memcg_data_flags)
        } else {
            // SAFETY: bpf_probe_read_kernel checks the address; a bad one reads as 0.
            unsafe { bpf_probe_read_kernel(at as *const u64) }.unwrap_or(0)
        };
        Page {
            memcg,
            pages: folio_pages(page, flags, layout.folio_head_bit, layout.folio_order),
            anonymous: (flags >> (layout.swapbacked_bit & 63)) & 1 == 1,
        }
    }

    /// The cgroup id of the page's memory cgroup; 0 when it has none (memory cgroups off,
    /// or a page charged to no one).
    #[inline(always)]
    fn memcg_id(&self) -> u64 {
        if self.memcg == 0 {
            return 0;
        }
        let layout = OWNER_LAYOUT.load();
        let read = |base: u64, offset: u32| -> u64 {
            if base == 0 {
                return 0;
            }
            // SAFETY: bpf_probe_read_kernel checks the address; a bad one reads as 0.
            unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const u64) }.unwrap_or(0)
        };
        let cgroup = read(self.memcg, layout.memcg_cgroup);
        let kn = read(cgroup, layout.cgroup_kn);
        read(kn, layout.kn_id)
    }
}

/// Counts for the memory cgroup `id`. No process is noted: the key is not one.
#[inline(always)]
fn count_owner(id: u64, update: impl FnOnce(&mut OwnerCounts)) {
    let key = OwnerKey {
        id,
        by: OwnerBy::MemoryCgroup as u32,
        _pad: 0,
    };
    in_active_epoch!(|maps| count_memcg(&maps, &key, update));
}

#[inline(always)]
fn count_memcg(maps: &EpochMaps, key: &OwnerKey, update: impl FnOnce(&mut OwnerCounts)) {
    let value = match slot(maps.owner, key) {
        Slot::Existing(value) | Slot::Created(value) => value,
        Slot::Full => {
            bump_host(maps, HostCounter::OwnerOverflowEvents, 1);
            match maps
                .owner_overflow
                .get_ptr_mut(OwnerBy::MemoryCgroup as u32)
            {
                Some(value) => value,
                None => return,
            }
        }
    };
    // SAFETY: this CPU's value; programs do not nest on a CPU.
    update(unsafe { &mut *value });
}
