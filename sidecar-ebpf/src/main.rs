//! The sidecar's kernel programs.
//!
//! They do as little as possible: find the active epoch, bump a per-CPU counter keyed by the
//! process, and keep the per-thread state that pairs enter/exit and begin/end events.
//! Classification, aggregation and every rate are userspace's job.
#![no_std]
#![no_main]

mod counting;
mod fadvise;
mod filemap;
mod maps;
mod vmscan;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any program that could reach this; it exists for the linker.
    loop {}
}

/// bpf_probe_read_kernel is GPL-only: the kernel needs a GPL-compatible license string.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
