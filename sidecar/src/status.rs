//! The daemon's own state: start-up progress, each module's fate, the kernel it runs on.

use crate::sync::Recover as _;
use std::{
    collections::BTreeMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use crate::{
    export::{ExporterSnapshot, PublishState},
    kernel::{ModuleState, modules::Module},
};

#[derive(Debug)]
pub struct Status {
    started: Instant,
    startup_done: AtomicBool,
    /// `None` until the kernel programs have been loaded.
    modules: RwLock<Option<BTreeMap<Module, ModuleState>>>,
    /// What each usable module's programs attach to.
    hooks: RwLock<BTreeMap<Module, String>>,
    process_tracking: RwLock<Option<ModuleState>>,
    kernel: KernelFacts,
    tracefs: RwLock<Option<String>>,
    kernel_map_bytes: RwLock<u64>,
    /// Push exporters (`export.*`), which publish their counters and state.
    exporters: RwLock<Vec<Arc<dyn PublishState>>>,
}

/// Facts about the host kernel, for status output.
#[derive(Clone, Debug, Default)]
pub struct KernelFacts {
    pub release: String,
    pub btf: bool,
}

impl KernelFacts {
    pub fn probe() -> KernelFacts {
        KernelFacts {
            release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned()),
            btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        }
    }
}

impl Status {
    pub fn new(kernel: KernelFacts) -> Status {
        Status {
            started: Instant::now(),
            startup_done: AtomicBool::new(false),
            modules: RwLock::new(None),
            hooks: RwLock::new(BTreeMap::new()),
            process_tracking: RwLock::new(None),
            kernel,
            tracefs: RwLock::new(None),
            kernel_map_bytes: RwLock::new(0),
            exporters: RwLock::new(Vec::new()),
        }
    }

    pub fn set_modules(&self, modules: BTreeMap<Module, ModuleState>) {
        *self.modules.write().recover() = Some(modules);
    }

    pub fn modules(&self) -> Option<BTreeMap<Module, ModuleState>> {
        self.modules.read().recover().clone()
    }

    pub fn set_hooks(&self, hooks: BTreeMap<Module, String>) {
        *self.hooks.write().recover() = hooks;
    }

    /// What `module`'s programs attach to, when it is usable.
    pub fn hook(&self, module: Module) -> Option<String> {
        self.hooks.read().recover().get(&module).cloned()
    }

    pub fn set_process_tracking(&self, state: ModuleState) {
        *self.process_tracking.write().recover() = Some(state);
    }

    /// Whether exec/PR_SET_NAME renames reach the classifier (`None` while starting).
    pub fn process_tracking(&self) -> Option<ModuleState> {
        self.process_tracking.read().recover().clone()
    }

    pub fn set_tracefs(&self, description: String) {
        *self.tracefs.write().recover() = Some(description);
    }

    pub fn tracefs(&self) -> Option<String> {
        self.tracefs.read().recover().clone()
    }

    pub fn set_kernel_map_bytes(&self, bytes: u64) {
        *self.kernel_map_bytes.write().recover() = bytes;
    }

    pub fn kernel_map_bytes(&self) -> u64 {
        *self.kernel_map_bytes.read().recover()
    }

    pub fn add_exporter(&self, exporter: Arc<dyn PublishState>) {
        self.exporters.write().recover().push(exporter);
    }

    /// Each exporter's state now.
    pub fn exporters(&self) -> Vec<ExporterSnapshot> {
        self.exporters
            .read()
            .recover()
            .iter()
            .map(|e| e.snapshot())
            .collect()
    }

    pub fn finish_startup(&self) {
        self.startup_done.store(true, Ordering::Release);
    }

    pub fn startup_done(&self) -> bool {
        self.startup_done.load(Ordering::Acquire)
    }

    pub const fn kernel(&self) -> &KernelFacts {
        &self.kernel
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub fn attached_modules(&self) -> usize {
        self.modules().map_or(0, |m| {
            m.values().filter(|s| **s == ModuleState::Attached).count()
        })
    }
}
