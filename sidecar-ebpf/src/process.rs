//! Processes as userspace sees them: the key of a process (its tgid in the sidecar's PID
//! namespace), and the life-cycle events that keep userspace's classification right.
//!
//! - task:task_rename: exec and prctl(PR_SET_NAME) rename a task; when a process's main
//!   thread is renamed, its recorded comm follows, so that a process that exits before the
//!   drain is classified by the name it ended with.
//! - sched:sched_process_exec: the process's classification is stale (`execed`).
//! - sched:sched_process_exit: per-thread state goes at once; when the whole process is
//!   gone, `exited` tells userspace to forget it once this interval's counts are in.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, bpf_pidns_info},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_ns_current_pid_tgid,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use sidecar_common::{
    ABSENT_FIELD, COMM_LEN, OUTSIDE_NAMESPACE_TGID, PidNamespace, ProcessInfo, ProcessKey,
    ProcessLayout,
};

use crate::{
    counting::{field_or_return, tgid_of},
    maps::{EpochMaps, FADV_INFLIGHT, PROC_SEEN, RD_INFLIGHT, READ_STATE, in_active_epoch},
};

#[unsafe(no_mangle)]
pub(crate) static PROCESS_LAYOUT: aya_ebpf::Global<ProcessLayout> =
    aya_ebpf::Global::new(ProcessLayout::UNSET);

#[unsafe(no_mangle)]
static PID_NAMESPACE: aya_ebpf::Global<PidNamespace> = aya_ebpf::Global::new(PidNamespace::HOST);

/// The current process's key: its tgid as the sidecar's PID namespace sees it, or
/// `OUTSIDE_NAMESPACE_TGID` for tasks that namespace cannot see.
#[inline(always)]
pub(crate) fn process_key(pid_tgid: u64) -> u32 {
    let namespace = PID_NAMESPACE.load();
    if namespace.translate == 0 {
        return tgid_of(pid_tgid);
    }
    let mut seen = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: `seen` is a valid bpf_pidns_info the helper fills.
    let ret = unsafe {
        bpf_get_ns_current_pid_tgid(
            namespace.dev,
            namespace.ino,
            &raw mut seen,
            size_of::<bpf_pidns_info>() as u32,
        )
    };
    if ret == 0 {
        seen.tgid
    } else {
        OUTSIDE_NAMESPACE_TGID
    }
}

/// Updates this interval's record of a process in place, or creates it.
#[inline(always)]
fn update_record(maps: &EpochMaps, key: u32, update: impl Fn(&mut ProcessInfo)) {
    let key = ProcessKey { tgid: key };
    if let Some(info) = maps.processes.get_ptr_mut(&key) {
        // SAFETY: a valid map value; the fields written are bytes set to fixed values.
        update(unsafe { &mut *info });
        return;
    }
    let mut info = ProcessInfo {
        comm: bpf_get_current_comm().unwrap_or_default(),
        ..ProcessInfo::default()
    };
    update(&mut info);
    // Losing a race with another CPU only loses this comm or flag, never a count.
    let _ = maps.processes.insert(&key, &info, u64::from(BPF_NOEXIST));
}

#[tracepoint(category = "task", name = "task_rename")]
pub(crate) fn task_rename(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = tgid_of(pid_tgid);
    // A thread's name is not the process's.
    if pid_tgid as u32 != tgid {
        return 0;
    }
    let layout = PROCESS_LAYOUT.load();
    let renamed = field_or_return!(ctx, i32, layout.rename_pid);
    // Renaming another task (a write to /proc/PID/comm) says nothing about this process.
    if renamed as u32 != tgid {
        return 0;
    }
    let comm = field_or_return!(ctx, [u8; COMM_LEN], layout.rename_newcomm);
    let key = process_key(pid_tgid);
    if key == OUTSIDE_NAMESPACE_TGID {
        return 0;
    }
    let process = ProcessKey { tgid: key };
    in_active_epoch!(|maps| {
        if let Some(info) = maps.processes.get_ptr_mut(&process) {
            // SAFETY: a valid map value.
            unsafe { (*info).comm = comm };
        } else if PROC_SEEN.get_ptr(&process).is_some() {
            // Known to userspace under its old name: record the new one. Processes never
            // recorded record their comm when they first count.
            update_record(&maps, key, |info| info.comm = comm);
        }
    });
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub(crate) fn process_exec(_ctx: TracePointContext) -> u32 {
    let key = process_key(bpf_get_current_pid_tgid());
    if key == OUTSIDE_NAMESPACE_TGID {
        return 0;
    }
    // The comm is already the new program's.
    let comm = bpf_get_current_comm().unwrap_or_default();
    in_active_epoch!(|maps| update_record(&maps, key, |info| {
        info.comm = comm;
        info.execed = 1;
    }));
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub(crate) fn process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // The thread's pairing state dies with it, not when the LRU gets round to it.
    let _ = READ_STATE.remove(&pid_tgid);
    let _ = RD_INFLIGHT.remove(&pid_tgid);
    let _ = FADV_INFLIGHT.remove(&pid_tgid);

    let offset = PROCESS_LAYOUT.load().exit_group_dead;
    let group_dead = if offset == ABSENT_FIELD {
        pid_tgid as u32 == tgid_of(pid_tgid)
    } else {
        field_or_return!(ctx, u8, offset) != 0
    };
    if !group_dead {
        return 0;
    }
    let key = process_key(pid_tgid);
    if key == OUTSIDE_NAMESPACE_TGID {
        return 0;
    }
    // Its next life under this PID (a reused one) is recorded afresh.
    let _ = PROC_SEEN.remove(&ProcessKey { tgid: key });
    in_active_epoch!(|maps| update_record(&maps, key, |info| info.exited = 1));
    0
}
