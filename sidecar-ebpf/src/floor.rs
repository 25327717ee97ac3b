//! Empty programs, one per attach type, that the sidecar never loads: `sidecar-load
//! bpf-cost` attaches them to measure what the kernel spends running a program that does
//! nothing on the same hooks (the floor the hot path's cost is compared with,
//! docs/BENCHMARKS.md).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, fexit, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, FExitContext, RawTracePointContext, TracePointContext},
};

#[tracepoint(category = "syscalls", name = "sys_enter_fadvise64")]
pub(crate) fn floor_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "mm_filemap_get_pages")]
pub(crate) fn floor_raw_tracepoint(_ctx: RawTracePointContext) -> u32 {
    0
}

#[fexit(function = "ksys_fadvise64_64")]
pub(crate) fn floor_fexit(_ctx: FExitContext) -> u32 {
    0
}

#[btf_tracepoint(function = "mm_filemap_get_pages")]
pub(crate) fn floor_btf_tracepoint(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// A second empty tp_btf: a BTF-typed program is loaded for one tracepoint, so measuring
/// two of them (page-cache additions and deletions) takes two programs.
#[btf_tracepoint(function = "mm_filemap_delete_from_page_cache")]
pub(crate) fn floor_btf_tracepoint_2(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// Not empty: one helper call and nothing else. Less an empty program on the same hook, it
/// is what one call and its return cost on this CPU, the unit every counting program pays
/// per helper (return-thunk mitigations make it most of a small program's time).
#[tracepoint(category = "syscalls", name = "sys_exit_fadvise64")]
pub(crate) fn floor_tracepoint_call(_ctx: TracePointContext) -> u32 {
    core::hint::black_box(bpf_get_current_pid_tgid());
    0
}
