//! The sidecar's kernel programs.
//!
//! They do as little as possible: find the active epoch, bump a per-CPU counter keyed by the
//! process, and keep the per-thread state that pairs enter/exit and begin/end events.
//! Classification, aggregation and every rate are userspace's job.
// Built for bpfel-unknown-none; on the host (`cargo check --workspace`) it is an empty
// program, so that workspace-wide commands work.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod counting;
mod fadvise;
mod filemap;
mod floor;
mod io;
mod maps;
mod memcg;
mod process;
mod vmscan;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any program that could reach this; it exists for the linker.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("sidecar-ebpf runs in the kernel: build it with `cargo xtask build-ebpf`");
}

/// bpf_probe_read_kernel is GPL-only: the kernel needs a GPL-compatible license string.
#[cfg_attr(target_arch = "bpf", unsafe(link_section = "license"))]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
