//! Start-up shared by `sidecar run` and `sidecar check`: the exit statuses, and loading the
//! programs as far as each of them goes (`check` stops before attaching).

use anyhow::Context as _;
use tracing::{info, warn};

use crate::{
    config::Config,
    kernel::{
        Kernel, KernelOptions,
        modules::{Layouts, Module},
        sizing,
        tracefs::{Mounted, Tracefs},
    },
};

// Exit statuses (0 is success), documented in docs/operations.md.
/// Start-up failures not listed below (a port in use, ...).
pub const EXIT_FAILURE: u8 = 1;
/// A configuration that does not parse, or names a path that cannot be used.
pub const EXIT_CONFIG: u8 = 2;
/// No module could be attached.
pub const EXIT_NO_MODULE: u8 = 3;
/// Without the privileges to load programs.
pub const EXIT_PRIVILEGE: u8 = 4;
/// Tracefs is neither mounted nor mountable.
pub const EXIT_NO_TRACEFS: u8 = 5;

/// Whether the configuration enables `module` (`modules.<name>.enabled`).
pub fn module_enabled(config: &Config, module: Module) -> bool {
    match module {
        Module::Fadvise => config.modules.fadvise.enabled,
        Module::PageCache => config.modules.page_cache.enabled,
        Module::Vmscan => config.modules.vmscan.enabled,
        Module::Io => config.modules.io.enabled,
        Module::Memcg => config.modules.memcg.enabled,
    }
}

/// Where tracefs is, as `start_kernel` found it.
pub struct TracefsFound {
    /// False when it is neither mounted nor mountable.
    pub available: bool,
    pub description: String,
}

/// Everything `run` and `check` need from the kernel side.
pub fn start_kernel(config: &Config, attach: bool) -> anyhow::Result<(Kernel, TracefsFound)> {
    let (layouts, tracefs_description) = match Tracefs::locate(config.tracefs.mount) {
        Ok((tracefs, mounted)) => {
            let description = match mounted {
                Mounted::AlreadyMounted => format!("{} (mounted)", tracefs.root().display()),
                Mounted::MountedBySidecar => {
                    format!("{} (mounted by the sidecar)", tracefs.root().display())
                }
            };
            if mounted == Mounted::MountedBySidecar {
                info!(path = %tracefs.root().display(), "tracefs was not mounted: mounted it");
            }
            let found = TracefsFound {
                available: true,
                description,
            };
            (Layouts::resolve(&tracefs), found)
        }
        // Without tracefs no module can attach; each reports why.
        Err(err) => {
            let found = TracefsFound {
                available: false,
                description: format!("unavailable: {err}"),
            };
            (Layouts::unavailable(&err), found)
        }
    };
    let modules = Module::ALL
        .into_iter()
        .map(|module| (module, module_enabled(config, module)))
        .collect();
    let pid_namespace = match crate::kernel::own_pid_namespace() {
        Ok(namespace) => namespace,
        Err(err) => {
            warn!("cannot read /proc/self/ns/pid ({err}); reporting host PIDs");
            sidecar_common::PidNamespace::HOST
        }
    };
    if pid_namespace.translate != 0 {
        info!(
            inode = pid_namespace.ino,
            "in a PID namespace: processes are reported by their PIDs in it; others are unmatched"
        );
    }
    let cpus = aya::util::nr_cpus().map_or(1, |n| u64::from(n.get()));
    let requested = config.limits.max_tracked_processes.0;
    let processes = sizing::fit_processes(requested, config.limits.max_kernel_memory.0, cpus);
    if processes < requested {
        warn!(
            requested,
            tracked = processes,
            cpus,
            bytes_per_process = sizing::bytes_per_process(cpus),
            "limits.max_tracked_processes lowered to fit limits.max_kernel_memory on this many CPUs"
        );
    }
    let options = KernelOptions {
        modules,
        max_tracked_processes: processes,
        max_tracked_threads: config.limits.max_tracked_threads.0,
        attach,
        pid_namespace,
        bpf_stats: config.bpf_stats,
    };
    let kernel = Kernel::load(&options, &layouts).context("loading the eBPF programs")?;
    Ok((kernel, tracefs_description))
}
