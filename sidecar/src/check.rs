//! `sidecar check`: what this kernel and these privileges support, module by module.
//!
//! It does what `run` does up to attaching: finds (or mounts) tracefs, reads the tracepoint
//! formats, and loads every program through the verifier. Exit status 0 means `run` can
//! attach at least one module.

use std::process::ExitCode;

use crate::{
    config::Config,
    kernel::modules::Module,
    privilege::CapabilitySet,
    startup::{EXIT_NO_MODULE, EXIT_PRIVILEGE, start_kernel},
    status::KernelFacts,
};

pub fn check(config: &Config) -> ExitCode {
    let facts = KernelFacts::probe();
    println!("kernel        {}", facts.release);
    println!(
        "btf           {}",
        if facts.btf {
            "/sys/kernel/btf/vmlinux present"
        } else {
            // The page-cache module uses BTF to cut reads at the end of a file, and to
            // find the read path where mm_filemap_get_pages is missing (before 6.12).
            "absent (page_cache: reads past the end of a file count as asked; \
             before 6.12, no read hook)"
        }
    );
    println!("capabilities  {}", CapabilitySet::effective());
    // One line, as `run` prints, instead of every map's creation failing in turn.
    if let Some(why) = crate::privilege::missing_load_privilege() {
        println!("result        run cannot work: {why}");
        return ExitCode::from(EXIT_PRIVILEGE);
    }
    // `check` reports; it does not change the host. A tracefs it must mount for the
    // tracepoint formats is mounted in a mount namespace of its own, gone when it exits.
    let private_mounts = private_mount_namespace();

    let (kernel, tracefs) = match start_kernel(config, false) {
        Ok(loaded) => loaded,
        Err(err) => {
            println!("result        run cannot work: {err:#}");
            return ExitCode::from(EXIT_NO_MODULE);
        }
    };
    let private_note = if private_mounts && tracefs.description.contains("mounted by the sidecar") {
        " (privately, for this check: `run` mounts it for real)"
    } else {
        ""
    };
    println!("tracefs       {}{private_note}", tracefs.description);
    // Loading already tried the epoch switch both ways: a kernel where neither works fails
    // above ("run cannot work"), since `run` could not drain there.
    match kernel.switch_method() {
        (method, None) => println!("epoch switch  {}", method.describe()),
        (method, Some(why)) => println!(
            "epoch switch  {} (slot replacement refused: {why})",
            method.describe()
        ),
    }
    let mut usable = 0;
    for module in Module::ALL {
        let state = &kernel.modules()[&module];
        if state.is_usable() {
            usable += 1;
        }
        let detail = match state.error() {
            Some(err) => err.to_owned(),
            None => kernel
                .hooks()
                .get(&module)
                .map_or_else(String::new, |hook| format!("hook: {hook}")),
        };
        println!(
            "module        {:<11} {:<12} {detail}",
            module.name(),
            state.label()
        );
    }
    let tracking = kernel.process_tracking();
    println!(
        "process tracking {:<24} {}",
        tracking.label(),
        tracking.error().unwrap_or("task:task_rename")
    );
    if let Some(err) = kernel.stats_error() {
        println!("bpf stats     unavailable: {err}");
    }
    // What `run` does after attaching: give up the capabilities, then drain. A kernel that
    // refuses the drain without them gets CAP_BPF kept; one that refuses it anyway cannot run.
    let mut kernel = kernel;
    let drain = if usable == 0 {
        None
    } else {
        Some(crate::privilege::drop_after_attach(|| kernel.probe_drain()))
    };
    match &drain {
        Some(Ok(after)) => println!("privileges    {after}"),
        Some(Err(err)) => {
            println!("result        run cannot work: {err}");
            return ExitCode::from(EXIT_NO_MODULE);
        }
        None => {}
    }
    if usable == 0 {
        println!("result        run cannot work: no module can attach");
        ExitCode::from(EXIT_NO_MODULE)
    } else {
        println!(
            "result        run can work ({usable} of {} modules)",
            Module::ALL.len()
        );
        ExitCode::SUCCESS
    }
}

/// Moves this process into a mount namespace of its own whose mounts do not propagate back:
/// whatever it mounts is gone when it exits. False when that is not possible (no
/// CAP_SYS_ADMIN: then it cannot mount tracefs either).
fn private_mount_namespace() -> bool {
    // SAFETY: unshare and mount with valid, NUL-terminated arguments; the process is still
    // single-threaded here (unshare(CLONE_NEWNS) requires it).
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return false;
        }
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) == 0
    }
}
