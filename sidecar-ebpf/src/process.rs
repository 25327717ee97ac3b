//! Process names: exec and prctl(PR_SET_NAME) rename a task (task:task_rename). When the
//! main thread of a process already counted in this interval renames itself, its recorded
//! comm follows, so that a process that exits before the drain is classified by the name it
//! ended with (a worker started by a shell wrapper, say).

use aya_ebpf::{
    bindings::BPF_EXIST, helpers::bpf_get_current_pid_tgid, macros::tracepoint,
    programs::TracePointContext,
};
use sidecar_common::{COMM_LEN, ProcessInfo, ProcessKey, RenameLayout};

use crate::{
    counting::{field_or_return, tgid_of},
    maps::in_active_epoch,
};

#[unsafe(no_mangle)]
static RENAME_LAYOUT: aya_ebpf::Global<RenameLayout> = aya_ebpf::Global::new(RenameLayout::UNSET);

#[tracepoint(category = "task", name = "task_rename")]
pub(crate) fn task_rename(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = tgid_of(pid_tgid);
    // A thread's name is not the process's.
    if pid_tgid as u32 != tgid {
        return 0;
    }
    let layout = RENAME_LAYOUT.load();
    let renamed = field_or_return!(ctx, i32, layout.pid);
    // Renaming another task (a write to /proc/PID/comm) says nothing about this process.
    if renamed as u32 != tgid {
        return 0;
    }
    let comm = field_or_return!(ctx, [u8; COMM_LEN], layout.newcomm);
    in_active_epoch!(|maps| {
        // Only processes already counted in this interval: the others will record their
        // comm when they first count.
        let _ = maps.processes.insert(
            &ProcessKey { tgid },
            &ProcessInfo { comm },
            u64::from(BPF_EXIST),
        );
    });
    0
}
