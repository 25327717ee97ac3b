//! The observation modules: their programs, tracepoints and field layouts.

pub use sidecar_common::programs::{
    FADVISE_FEXIT_PROGRAMS, FADVISE_IO_URING_FUNCTION, FADVISE_PROGRAMS, FADVISE_REGS_PROGRAMS,
    FADVISE_SYSCALL_FUNCTION, Hook, IO_DIRTY_PROGRAMS, IO_SYSCALL_PROGRAMS, MEMCG_PROGRAMS, Module,
    PAGE_CACHE_PROGRAMS, PAGE_CACHE_SIZED_PROGRAMS, PAGE_CACHE_TYPED_PROGRAMS, PROCESS_PROGRAMS,
    ProgramSpec, READ_FEXIT_PROGRAM, READ_FUNCTIONS, REFAULT_FUNCTION, SYSCALL_READ_PROGRAMS,
    WRITEBACK_FUNCTIONS, WRITEBACK_PROGRAM,
};
use sidecar_common::{
    ABSENT_FIELD, FadviseLayout, FilemapLayout, InodeLayout, IoLayout, OwnerLayout, ProcessLayout,
    ReadHookLayout, SyscallReadLayout, VmscanLayout,
};

use super::{
    btf::{Btf, Signature, ValueType},
    tracefs::{EventFormat, Tracefs, TracefsError},
};

/// Where an IORING_OP_FADVISE request keeps its advice and its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoUringFadvise {
    /// `io_fadvise.advice` from the start of the `io_kiocb` (its command data comes first).
    pub advice: u32,
    /// `io_kiocb.cqe.res`.
    pub result: u32,
}

/// Where a syscall's fourth argument and its return value sit in the calling task's saved
/// registers (`struct pt_regs`), and the task's ids in `task_struct`, from BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallRegs {
    pub fourth_argument: u32,
    pub result: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
}

/// How the fadvise module can see calls on this kernel, as far as BTF tells; the kernel's
/// answer to loading decides between what is left (`candidates`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FadviseHook {
    /// Whether `ksys_fadvise64_64` has the signature `fadvise_syscall_exit` reads.
    pub syscall_fexit: Result<(), String>,
    /// Where io_fadvise's requests keep advice and result, or why io_uring's calls cannot
    /// be counted.
    pub io_uring: Result<IoUringFadvise, String>,
    /// Where the exit tracepoint alone finds the advice and the result, or why it cannot
    /// (then the entry tracepoint keeps the advice per thread). Whether the kernel has
    /// `bpf_task_pt_regs` (5.15+) is its answer to loading.
    pub task_regs: Result<SyscallRegs, String>,
}

impl FadviseHook {
    pub fn resolve(btf: Result<&Btf, &String>) -> FadviseHook {
        let btf = match btf {
            Ok(btf) => btf,
            Err(err) => return FadviseHook::unavailable(&format!("no kernel BTF: {err}")),
        };
        let task_regs = if std::env::var_os(FAULT_NO_TASK_REGS).is_some() {
            Err(format!("registers skipped ({FAULT_NO_TASK_REGS})"))
        } else {
            syscall_regs(btf)
        };
        if std::env::var_os(FAULT_NO_FEXIT).is_some() {
            return FadviseHook {
                task_regs,
                ..FadviseHook::unavailable(&format!("fexit skipped ({FAULT_NO_FEXIT})"))
            };
        }
        FadviseHook {
            task_regs,
            syscall_fexit: fits(
                btf,
                FADVISE_SYSCALL_FUNCTION,
                &[
                    ValueType::Int(4),
                    ValueType::Int(8),
                    ValueType::Int(8),
                    ValueType::Int(4),
                ],
            ),
            io_uring: fits(
                btf,
                FADVISE_IO_URING_FUNCTION,
                &[
                    ValueType::PointerTo("io_kiocb".to_owned()),
                    ValueType::Int(4),
                ],
            )
            .and_then(|()| io_uring_fadvise_layout(btf)),
        }
    }

    /// Nothing but the tracepoint pair, for `why`.
    pub fn unavailable(why: &str) -> FadviseHook {
        FadviseHook {
            syscall_fexit: Err(why.to_owned()),
            io_uring: Err(why.to_owned()),
            task_regs: Err(why.to_owned()),
        }
    }

    /// The ways to run the module, best first: fexit on the syscall and io_uring, fexit on
    /// the syscall alone, the exit tracepoint alone reading the task's registers, the
    /// tracepoint pair (`tracepoint`: whether tracefs gave their layout).
    pub fn candidates(&self, tracepoint: bool) -> Vec<Candidate> {
        let mut candidates = Vec::new();
        if self.syscall_fexit.is_ok() {
            if self.io_uring.is_ok() {
                candidates.push(Candidate {
                    programs: FADVISE_FEXIT_PROGRAMS.to_vec(),
                    hook: format!("fexit {FADVISE_SYSCALL_FUNCTION}, {FADVISE_IO_URING_FUNCTION}"),
                });
            }
            candidates.push(Candidate {
                programs: FADVISE_FEXIT_PROGRAMS[..1].to_vec(),
                hook: format!("fexit {FADVISE_SYSCALL_FUNCTION} (io_uring not seen)"),
            });
        }
        if tracepoint {
            if self.task_regs.is_ok() {
                candidates.push(Candidate {
                    programs: FADVISE_REGS_PROGRAMS.to_vec(),
                    hook: "tracepoint syscalls:sys_exit_fadvise64, arguments from pt_regs (io_uring not seen)"
                        .to_owned(),
                });
            }
            candidates.push(Candidate {
                programs: FADVISE_PROGRAMS.to_vec(),
                hook: "tracepoints syscalls:sys_enter_fadvise64 + sys_exit_fadvise64 (io_uring not seen)"
                    .to_owned(),
            });
        }
        candidates
    }

    /// The io_uring offsets, for the `FADVISE_LAYOUT` global.
    pub fn apply(&self, layout: &mut FadviseLayout) {
        if let Ok(io_uring) = &self.io_uring {
            layout.io_uring_advice = io_uring.advice;
            layout.io_uring_result = io_uring.result;
        }
        if let Ok(regs) = &self.task_regs {
            layout.regs_advice = regs.fourth_argument;
            layout.regs_result = regs.result;
            layout.task_pid = regs.task_pid;
            layout.task_tgid = regs.task_tgid;
        }
    }
}

/// A syscall's fourth argument and return value in `struct pt_regs`, as the architecture's
/// syscall convention puts them (x86-64: `r10` and `ax`; arm64: `regs[3]` and `regs[0]`).
fn syscall_regs(btf: &Btf) -> Result<SyscallRegs, String> {
    let register = |name: &str| place(btf, "pt_regs", name, 8);
    let task_pid = place(btf, "task_struct", "pid", 4)?;
    let task_tgid = place(btf, "task_struct", "tgid", 4)?;
    if cfg!(target_arch = "x86_64") {
        Ok(SyscallRegs {
            fourth_argument: register("r10")?,
            result: register("ax")?,
            task_pid,
            task_tgid,
        })
    } else if cfg!(target_arch = "aarch64") {
        let regs = btf
            .member("pt_regs", "regs")
            .map_err(|err| err.to_string())?;
        if regs.size < 4 * 8 {
            return Err(format!("pt_regs.regs is {} bytes", regs.size));
        }
        Ok(SyscallRegs {
            fourth_argument: regs.offset + 3 * 8,
            result: regs.offset,
            task_pid,
            task_tgid,
        })
    } else {
        Err(format!(
            "syscall registers not known on {}",
            std::env::consts::ARCH
        ))
    }
}

/// Whether `function` is in BTF as `int (params)`.
fn fits(btf: &Btf, function: &str, params: &[ValueType]) -> Result<(), String> {
    let signature = btf.function(function).map_err(|err| err.to_string())?;
    if signature.params == params && signature.ret == ValueType::Int(4) {
        Ok(())
    } else {
        Err(format!(
            "{function} has an unexpected signature ({:?}) -> {:?}",
            signature.params, signature.ret
        ))
    }
}

/// The advice and result of an IORING_OP_FADVISE request, from BTF. The request's command
/// data (`struct io_fadvise`) sits at `io_kiocb.cmd` (6.0 on, the first member).
fn io_uring_fadvise_layout(btf: &Btf) -> Result<IoUringFadvise, String> {
    let member = |strukt: &str, member: &str| btf.member(strukt, member).map_err(|e| e.to_string());
    let command = member("io_kiocb", "cmd")?;
    let advice = place(btf, "io_fadvise", "advice", 4)?;
    if advice + 4 > command.size {
        return Err(format!(
            "io_fadvise.advice at {advice} lies outside io_kiocb.cmd ({} bytes)",
            command.size
        ));
    }
    Ok(IoUringFadvise {
        advice: command.offset + advice,
        result: member("io_kiocb", "cqe")?.offset + place(btf, "io_cqe", "res", 4)?,
    })
}

/// The offset of `strukt.member`, which the programs read as `size` bytes.
fn place(btf: &Btf, strukt: &str, member: &str, size: u32) -> Result<u32, String> {
    let place = btf.member(strukt, member).map_err(|err| err.to_string())?;
    if place.size != size {
        return Err(format!(
            "{strukt}.{member} is {} bytes, the program reads {size}",
            place.size
        ));
    }
    Ok(place.offset)
}

/// Offsets of a file's identity and size in kernel memory, from the kernel's BTF.
pub fn inode_layout(btf: &Btf) -> Result<InodeLayout, String> {
    let place = |strukt: &str, member: &str, size: u32| place(btf, strukt, member, size);
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page_shift = u64::try_from(page_size)
        .ok()
        .filter(|size| size.is_power_of_two())
        .map(u64::trailing_zeros)
        .ok_or_else(|| format!("odd page size {page_size}"))?;
    Ok(InodeLayout {
        mapping_host: place("address_space", "host", 8)?,
        inode_sb: place("inode", "i_sb", 8)?,
        inode_ino: place("inode", "i_ino", 8)?,
        inode_size: place("inode", "i_size", 8)?,
        sb_dev: place("super_block", "s_dev", 4)?,
        page_shift,
    })
}

/// Whether a read function has the signature `read_iter_exit` reads.
pub fn read_signature_fits(signature: &Signature) -> bool {
    signature.params
        == [
            ValueType::PointerTo("kiocb".to_owned()),
            ValueType::PointerTo("iov_iter".to_owned()),
            ValueType::Int(8),
        ]
        && signature.ret == ValueType::Int(8)
}

/// The fexit fallback for the read path on this kernel: the read functions whose BTF
/// signature fits (in order of preference) and where the request is in `struct kiocb` and
/// `struct iov_iter`; or why there is none.
pub fn read_fallback(btf: &Btf) -> Result<(Vec<&'static str>, ReadHookLayout), String> {
    let mut functions = Vec::new();
    let mut why = Vec::new();
    for function in READ_FUNCTIONS {
        match btf.function(function) {
            Ok(signature) if read_signature_fits(&signature) => functions.push(function),
            Ok(signature) => why.push(format!(
                "{function} has an unexpected signature ({:?}) -> {:?}",
                signature.params, signature.ret
            )),
            Err(err) => why.push(err.to_string()),
        }
    }
    if functions.is_empty() {
        return Err(why.join("; "));
    }
    let place = |strukt: &str, member: &str, size: u32| place(btf, strukt, member, size);
    let layout = ReadHookLayout {
        kiocb_filp: place("kiocb", "ki_filp", 8)?,
        kiocb_pos: place("kiocb", "ki_pos", 8)?,
        file_mapping: place("file", "f_mapping", 8)?,
        iter_count: place("iov_iter", "count", 8)?,
    };
    Ok((functions, layout))
}

/// Where the page-cache module learns the pages a read asks for, on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadHook {
    /// The tracepoint mm_filemap_get_pages BTF-typed (tp_btf), else raw, with the range cut
    /// at the end of the file (BTF locates the file's size).
    RawTracepoint,
    /// The tracepoint mm_filemap_get_pages (no BTF: reads past the end count as asked).
    Tracepoint,
    /// In order of preference: fexit on the first read function the kernel accepts (it sees
    /// each read whole: from 6.12 on, `filemap_get_pages` returns some of its batches
    /// without firing mm_filemap_get_pages, so the tracepoint's first event of a read can
    /// start late and undercount); then the raw tracepoint, where the kernel has it
    /// (`raw_tracepoint`); then the read(2)/pread64(2) syscall tracepoints, where it has
    /// neither (kernels before 6.12 without BPF trampolines).
    Chain {
        fexit: Option<(Vec<&'static str>, ReadHookLayout)>,
        raw_tracepoint: bool,
        syscalls: Option<SyscallReadLayout>,
    },
}

/// One way to run a module: its programs, and what to call it in status output.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub programs: Vec<ProgramSpec>,
    /// The hook that sets it apart, e.g. `fexit filemap_read` (the page-cache module's
    /// add and delete tracepoints are always there), or `tracepoint`.
    pub hook: String,
}

/// Tests set this (to anything) to skip the fexit fallback, so that the syscall fallback
/// can be checked on kernels that accept fexit.
pub const FAULT_NO_FEXIT: &str = "SIDECAR_FAULT_NO_FEXIT";

/// Tests set this (to anything) to skip the fadvise exit tracepoint that reads the task's
/// registers, so that the tracepoint pair can be checked on kernels that have the helper.
pub const FAULT_NO_TASK_REGS: &str = "SIDECAR_FAULT_NO_TASK_REGS";

impl ReadHook {
    /// The page-cache programs to try, in order: the first set that loads is used. The
    /// read-path program comes first: when the kernel refuses it, nothing else of the set
    /// was loaded.
    pub fn candidates(&self) -> Vec<Candidate> {
        let with_add_delete = |read: &[ProgramSpec], hook: String| {
            let mut programs = read.to_vec();
            programs.extend_from_slice(&PAGE_CACHE_PROGRAMS[1..]);
            Candidate { programs, hook }
        };
        match self {
            ReadHook::RawTracepoint => vec![
                with_add_delete(
                    &PAGE_CACHE_TYPED_PROGRAMS[..1],
                    "tp_btf filemap:mm_filemap_get_pages".to_owned(),
                ),
                with_add_delete(
                    &PAGE_CACHE_SIZED_PROGRAMS[..1],
                    "raw_tracepoint filemap:mm_filemap_get_pages".to_owned(),
                ),
            ],
            ReadHook::Tracepoint => vec![with_add_delete(
                &PAGE_CACHE_PROGRAMS[..1],
                "tracepoint filemap:mm_filemap_get_pages".to_owned(),
            )],
            ReadHook::Chain {
                fexit,
                raw_tracepoint,
                syscalls,
            } => {
                let mut candidates: Vec<Candidate> = fexit
                    .iter()
                    .flat_map(|(functions, _)| functions)
                    .map(|function| {
                        with_add_delete(
                            &[ProgramSpec::fexit(READ_FEXIT_PROGRAM, function)],
                            format!("fexit {function}"),
                        )
                    })
                    .collect();
                if *raw_tracepoint {
                    candidates.extend(ReadHook::RawTracepoint.candidates());
                }
                if syscalls.is_some() {
                    candidates.push(with_add_delete(
                        &SYSCALL_READ_PROGRAMS,
                        "tracepoint syscalls:sys_exit_read, sys_exit_pread64".to_owned(),
                    ));
                }
                candidates
            }
        }
    }
}

/// The fields and offsets of the syscall fallback: the read(2)/pread64(2) tracepoints'
/// formats, and the way from a task to the file of a descriptor in the kernel's BTF.
pub fn syscall_read_layout(tracefs: &Tracefs, btf: &Btf) -> Result<SyscallReadLayout, String> {
    let formats = Formats::of(tracefs, &SYSCALL_READ_PROGRAMS).map_err(|err| err.to_string())?;
    let offset = |event: &str, field: &str| {
        formats
            .offset(event, field, 8)
            .map_err(|err| err.to_string())
    };
    let same = |a: u32, b: u32, what: &str| {
        if a == b {
            Ok(a)
        } else {
            Err(format!("read and pread64 put {what} at {a} and {b}"))
        }
    };
    let place = |strukt: &str, member: &str, size: u32| place(btf, strukt, member, size);
    Ok(SyscallReadLayout {
        enter_fd: same(
            offset("sys_enter_read", "fd")?,
            offset("sys_enter_pread64", "fd")?,
            "fd",
        )?,
        enter_count: same(
            offset("sys_enter_read", "count")?,
            offset("sys_enter_pread64", "count")?,
            "count",
        )?,
        enter_pos: offset("sys_enter_pread64", "pos")?,
        exit_ret: same(
            offset("sys_exit_read", "ret")?,
            offset("sys_exit_pread64", "ret")?,
            "ret",
        )?,
        task_files: place("task_struct", "files", 8)?,
        files_fdt: place("files_struct", "fdt", 8)?,
        fdt_fd: place("fdtable", "fd", 8)?,
        fdt_max_fds: place("fdtable", "max_fds", 4)?,
        file_pos: place("file", "f_pos", 8)?,
        file_flags: place("file", "f_flags", 4)?,
        file_mapping: place("file", "f_mapping", 8)?,
        o_direct: libc::O_DIRECT as u32,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("no tracefs: {0}")]
    NoTracefs(String),
    #[error("tracepoint {event} has no field {field}")]
    MissingField { event: String, field: String },
    #[error(
        "no hook for the pages a read asks for: {tracepoint}, and no BTF fallback ({fallback})"
    )]
    NoReadHook {
        tracepoint: TracefsError,
        fallback: String,
    },
    #[error("{0}")]
    Btf(String),
    #[error("tracepoint {event}: field {field} is {size} bytes, the program reads {expected}")]
    FieldSize {
        event: String,
        field: String,
        size: u32,
        expected: u32,
    },
}

/// The field offsets of every module, each resolved on its own: one module's missing
/// tracepoint leaves the others usable.
#[derive(Debug)]
pub struct Layouts {
    /// The syscall tracepoints' fields (the fallback of `fadvise_hook`).
    pub fadvise: Result<FadviseLayout, LayoutError>,
    /// What fexit can hook for fadvise on this kernel.
    pub fadvise_hook: FadviseHook,
    pub filemap: Result<FilemapLayout, LayoutError>,
    pub vmscan: Result<VmscanLayout, LayoutError>,
    pub process: Result<ProcessLayout, LayoutError>,
    /// Where file sizes are; without it reads are counted as asked, not cut at EOF.
    pub inode: Result<InodeLayout, String>,
    /// How the page-cache module sees reads (meaningful when `filemap` is `Ok`).
    pub read_hook: ReadHook,
    /// Where a task's thread-group leader and comm are (BTF).
    pub leader_comm: Result<LeaderComm, String>,
    /// The io module's syscall fields and the hooks it can count dirtied pages with.
    pub io: Result<IoHook, LayoutError>,
    /// Where a page's memory cgroup is, and whether refaults can be seen.
    pub memcg: Result<MemcgHook, LayoutError>,
}

/// How the memcg module runs on this kernel: where a page's owner and size are (BTF), and
/// whether the refault function has the signature its fexit program reads.
#[derive(Clone, Debug)]
pub struct MemcgHook {
    pub layout: OwnerLayout,
    pub refault: Result<(), String>,
}

impl MemcgHook {
    fn resolve(btf: Result<&Btf, &String>) -> Result<MemcgHook, LayoutError> {
        let btf = btf.map_err(|err| LayoutError::Btf(format!("no kernel BTF: {err}")))?;
        let layout = owner_layout(btf).map_err(LayoutError::Btf)?;
        let page = if layout.folio_head_bit == ABSENT_FIELD {
            "page"
        } else {
            "folio"
        };
        let refault = if std::env::var_os(FAULT_NO_FEXIT).is_some() {
            Err(format!("fexit skipped ({FAULT_NO_FEXIT})"))
        } else {
            btf.function(REFAULT_FUNCTION)
                .map_err(|err| err.to_string())
                .and_then(|signature| {
                    let fits = signature.params
                        == [ValueType::PointerTo(page.to_owned()), ValueType::Pointer]
                        && signature.ret == ValueType::Void;
                    if fits {
                        Ok(())
                    } else {
                        Err(format!(
                            "{REFAULT_FUNCTION} has an unexpected signature ({:?}) -> {:?}",
                            signature.params, signature.ret
                        ))
                    }
                })
        };
        Ok(MemcgHook { layout, refault })
    }

    /// With refaults where fexit can run, else without them.
    pub fn candidates(&self) -> Vec<Candidate> {
        let typed = "tp_btf filemap:mm_filemap_{add_to,delete_from}_page_cache";
        let mut candidates = Vec::new();
        if self.refault.is_ok() {
            candidates.push(Candidate {
                programs: MEMCG_PROGRAMS.to_vec(),
                hook: format!("{typed} + fexit {REFAULT_FUNCTION}"),
            });
        }
        candidates.push(Candidate {
            programs: MEMCG_PROGRAMS[1..].to_vec(),
            hook: format!("{typed} (refaults not seen)"),
        });
        candidates
    }
}

/// A page's memory cgroup id (`memcg_data` or `mem_cgroup` -> `css.cgroup` -> `kn` ->
/// `id`), its kind and, with folios, its size, from BTF.
pub fn owner_layout(btf: &Btf) -> Result<OwnerLayout, String> {
    // The low bits of `memcg_data` are flags (MEMCG_DATA_*, two or three of them); a memory
    // cgroup is aligned well beyond them.
    const MEMCG_DATA_FLAGS: u32 = 0x7;
    let (page_memcg, memcg_data_flags, size) = match btf.member("folio", "memcg_data") {
        Ok(place) if place.size == 8 => (
            place.offset,
            MEMCG_DATA_FLAGS,
            Some(folio_size_layout(btf)?),
        ),
        _ => (place(btf, "page", "mem_cgroup", 8)?, 0, None),
    };
    let css = btf
        .member("mem_cgroup", "css")
        .map_err(|err| err.to_string())?;
    let swapbacked = btf
        .enumerator("PG_swapbacked")
        .map_err(|err| err.to_string())?;
    if !(0..64).contains(&swapbacked) {
        return Err(format!(
            "PG_swapbacked is bit {swapbacked} of a 64-bit word"
        ));
    }
    Ok(OwnerLayout {
        page_memcg,
        memcg_cgroup: css.offset + place(btf, "cgroup_subsys_state", "cgroup", 8)?,
        cgroup_kn: place(btf, "cgroup", "kn", 8)?,
        kn_id: place(btf, "kernfs_node", "id", 8)?,
        swapbacked_bit: swapbacked as u32,
        folio_head_bit: size.map_or(ABSENT_FIELD, |s| s.folio_head_bit),
        folio_order: size.map_or(ABSENT_FIELD, |s| s.folio_order),
        memcg_data_flags,
    })
}

/// How the io module runs on this kernel: the syscall exit's `ret`, where a folio's size is
/// (when BTF says), and the pages-dirtied hooks to try, best first.
#[derive(Clone, Debug)]
pub struct IoHook {
    pub layout: IoLayout,
    pub dirty: Vec<ProgramSpec>,
    /// Why the folio's size cannot be read (the typed hook is not tried), if it cannot.
    pub folio_error: Option<String>,
    /// The function whose fexit program counts writeback started, or why there is none.
    pub writeback: Result<&'static str, String>,
}

impl IoHook {
    fn resolve(tracefs: &Tracefs, btf: Result<&Btf, &String>) -> Result<IoHook, LayoutError> {
        let formats = Formats::of(tracefs, &IO_SYSCALL_PROGRAMS)?;
        // Every syscall exit event has the same layout; the one program reads all six.
        let mut exit_ret = None;
        for spec in IO_SYSCALL_PROGRAMS
            .iter()
            .filter(|s| s.program == "io_exit")
        {
            let offset = formats.offset(spec.event, "ret", 8)?;
            if exit_ret.is_some_and(|first| first != offset) {
                return Err(LayoutError::MissingField {
                    event: spec.event.to_owned(),
                    field: format!("ret at the offset of sys_exit_read's ({exit_ret:?})"),
                });
            }
            exit_ret = Some(offset);
        }
        let mut layout = IoLayout {
            exit_ret: exit_ret.unwrap_or(ABSENT_FIELD),
            ..IoLayout::UNSET
        };
        let has = |spec: &ProgramSpec| tracefs.event_format(spec.category, spec.event);
        let [typed, folio, page] = IO_DIRTY_PROGRAMS;
        let mut dirty = Vec::new();
        let mut folio_error = None;
        match has(&folio) {
            Ok(_) => {
                match btf.map_err(Clone::clone).and_then(folio_size_layout) {
                    Ok(size) => {
                        layout.folio_flags = size.folio_flags;
                        layout.folio_head_bit = size.folio_head_bit;
                        layout.folio_order = size.folio_order;
                        dirty.push(typed);
                    }
                    Err(err) => folio_error = Some(err),
                }
                dirty.push(folio);
            }
            Err(TracefsError::MissingEvent { .. }) => {
                has(&page)?;
                dirty.push(page);
            }
            Err(err) => return Err(err.into()),
        }
        let writeback = if std::env::var_os(FAULT_NO_FEXIT).is_some() {
            Err(format!("fexit skipped ({FAULT_NO_FEXIT})"))
        } else {
            btf.map_err(Clone::clone).and_then(writeback_function)
        };
        if let Ok((_, mask)) = &writeback {
            layout.writeback_already_mask = *mask;
        }
        Ok(IoHook {
            layout,
            dirty,
            folio_error,
            writeback: writeback.map(|(function, _)| function),
        })
    }

    /// The io programs to try, in order: each pages-dirtied hook with the syscall
    /// programs, the dirtied hook first (when the kernel refuses it, nothing else of the
    /// set was loaded).
    pub fn candidates(&self) -> Vec<Candidate> {
        let mut candidates = Vec::new();
        for spec in &self.dirty {
            let dirty = match spec.hook {
                Hook::BtfTracepoint => format!("tp_btf {}", spec.target()),
                _ if spec.event == IO_DIRTY_PROGRAMS[1].event => {
                    format!("tracepoint {} (one page per folio)", spec.target())
                }
                _ => format!("tracepoint {}", spec.target()),
            };
            let mut programs = vec![*spec];
            programs.extend_from_slice(&IO_SYSCALL_PROGRAMS);
            // Writeback first: where the kernel refuses fexit, the same set without it.
            if let Ok(function) = self.writeback {
                let mut with_writeback = vec![ProgramSpec::fexit(WRITEBACK_PROGRAM, function)];
                with_writeback.extend_from_slice(&programs);
                candidates.push(Candidate {
                    programs: with_writeback,
                    hook: format!("{dirty} + syscall tracepoints + fexit {function}"),
                });
            }
            candidates.push(Candidate {
                programs,
                hook: format!("{dirty} + syscall tracepoints (written back not seen)"),
            });
        }
        candidates
    }
}

/// The first of `WRITEBACK_FUNCTIONS` with a signature the writeback program reads, and the
/// bits of its return value that say the folio was already under writeback.
fn writeback_function(btf: &Btf) -> Result<(&'static str, u32), String> {
    let mut why = Vec::new();
    for (function, page) in WRITEBACK_FUNCTIONS.into_iter().zip(["folio", "page"]) {
        match btf.function(function) {
            Ok(signature)
                if signature.params
                    == [ValueType::PointerTo(page.to_owned()), ValueType::Int(1)] =>
            {
                match signature.ret {
                    ValueType::Void => return Ok((function, 0)),
                    ValueType::Int(1) => return Ok((function, 0xff)),
                    ValueType::Int(4) => return Ok((function, 0xffff_ffff)),
                    ret => why.push(format!("{function} returns {ret:?}")),
                }
            }
            Ok(signature) => why.push(format!(
                "{function} has an unexpected signature ({:?})",
                signature.params
            )),
            Err(err) => why.push(err.to_string()),
        }
    }
    Err(why.join("; "))
}

/// Where a folio's flags, head bit and order are, from BTF: a large folio (`PG_head` set)
/// holds `1 << order` pages. The order is `_folio_order` on 6.1 and the low byte of
/// `_flags_1` from 6.9 or so (`folio_large_order`); little-endian only, like the object.
pub fn folio_size_layout(btf: &Btf) -> Result<IoLayout, String> {
    let head = btf.enumerator("PG_head").map_err(|e| e.to_string())?;
    if !(0..64).contains(&head) {
        return Err(format!("PG_head is bit {head} of a 64-bit word"));
    }
    let order = match btf.member("folio", "_folio_order") {
        Ok(place) if place.size == 1 => place.offset,
        _ => place(btf, "folio", "_flags_1", 8)?,
    };
    Ok(IoLayout {
        folio_flags: place(btf, "folio", "flags", 8)?,
        folio_head_bit: head as u32,
        folio_order: order,
        ..IoLayout::UNSET
    })
}

/// `task_struct.group_leader` and `task_struct.comm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderComm {
    pub group_leader: u32,
    pub comm: u32,
}

impl LeaderComm {
    fn resolve(btf: &Btf) -> Result<LeaderComm, String> {
        Ok(LeaderComm {
            group_leader: place(btf, "task_struct", "group_leader", 8)?,
            comm: place(btf, "task_struct", "comm", 16)?,
        })
    }

    /// Sets the offsets in the `PROCESS_LAYOUT` global.
    pub fn apply(&self, layout: &mut ProcessLayout) {
        layout.task_group_leader = self.group_leader;
        layout.task_comm = self.comm;
    }
}

impl Layouts {
    pub fn resolve(tracefs: &Tracefs) -> Layouts {
        let btf = Btf::from_sys_fs().map_err(|err| err.to_string());
        let inode = btf.as_ref().map_err(Clone::clone).and_then(inode_layout);
        let (filemap, read_hook) = match filemap_layout(tracefs) {
            Err(err) => (Err(err), ReadHook::Tracepoint),
            Ok((layout, None)) if inode.is_ok() => {
                let fexit = match &btf {
                    Ok(btf) if std::env::var_os(FAULT_NO_FEXIT).is_none() => {
                        read_fallback(btf).ok()
                    }
                    _ => None,
                };
                let hook = match fexit {
                    Some(fexit) => ReadHook::Chain {
                        fexit: Some(fexit),
                        raw_tracepoint: true,
                        syscalls: None,
                    },
                    None => ReadHook::RawTracepoint,
                };
                (Ok(layout), hook)
            }
            Ok((layout, None)) => (Ok(layout), ReadHook::Tracepoint),
            Ok((layout, Some(missing))) => {
                let (fexit, syscalls) = match (&btf, &inode) {
                    (Err(err), _) => {
                        let why = format!("no kernel BTF: {err}");
                        (Err(why.clone()), Err(why))
                    }
                    (Ok(_), Err(err)) => (Err(err.clone()), Err(err.clone())),
                    (Ok(btf), Ok(_)) => (
                        if std::env::var_os(FAULT_NO_FEXIT).is_some() {
                            Err(format!("fexit skipped ({FAULT_NO_FEXIT})"))
                        } else {
                            read_fallback(btf)
                        },
                        syscall_read_layout(tracefs, btf),
                    ),
                };
                match (fexit, syscalls) {
                    (Err(fexit), Err(syscalls)) => (
                        Err(LayoutError::NoReadHook {
                            tracepoint: missing,
                            fallback: format!("fexit: {fexit}; syscalls: {syscalls}"),
                        }),
                        ReadHook::Tracepoint,
                    ),
                    (fexit, syscalls) => (
                        Ok(layout),
                        ReadHook::Chain {
                            fexit: fexit.ok(),
                            raw_tracepoint: false,
                            syscalls: syscalls.ok(),
                        },
                    ),
                }
            }
        };
        Layouts {
            fadvise: fadvise_layout(tracefs),
            fadvise_hook: FadviseHook::resolve(btf.as_ref()),
            filemap,
            vmscan: vmscan_layout(tracefs),
            process: process_layout(tracefs),
            inode,
            read_hook,
            leader_comm: btf
                .as_ref()
                .map_err(Clone::clone)
                .and_then(LeaderComm::resolve),
            io: IoHook::resolve(tracefs, btf.as_ref()),
            memcg: MemcgHook::resolve(btf.as_ref()),
        }
    }

    /// Every module unavailable because tracefs is.
    pub fn unavailable(err: &TracefsError) -> Layouts {
        fn reason<T>(err: &TracefsError) -> Result<T, LayoutError> {
            Err(LayoutError::NoTracefs(err.to_string()))
        }
        let why = format!("no tracefs: {err}");
        Layouts {
            fadvise: reason(err),
            fadvise_hook: FadviseHook::unavailable(&why),
            filemap: reason(err),
            vmscan: reason(err),
            process: reason(err),
            inode: Err("no tracefs".to_owned()),
            read_hook: ReadHook::Tracepoint,
            leader_comm: Err("no tracefs".to_owned()),
            io: reason(err),
            memcg: reason(err),
        }
    }

    pub fn error(&self, module: Module) -> Option<&LayoutError> {
        match module {
            // fexit needs no tracefs: the tracepoints' absence matters only without it.
            Module::Fadvise if self.fadvise_hook.syscall_fexit.is_ok() => None,
            Module::Fadvise => self.fadvise.as_ref().err(),
            Module::PageCache => self.filemap.as_ref().err(),
            Module::Vmscan => self.vmscan.as_ref().err(),
            Module::Io => self.io.as_ref().err(),
            Module::Memcg => self.memcg.as_ref().err(),
        }
    }
}

/// A module's tracepoint formats, by event name; fails on the first missing tracepoint.
struct Formats {
    formats: Vec<(&'static str, EventFormat)>,
}

impl Formats {
    fn of(tracefs: &Tracefs, programs: &[ProgramSpec]) -> Result<Formats, LayoutError> {
        let formats = programs
            .iter()
            .map(|spec| Ok((spec.event, tracefs.event_format(spec.category, spec.event)?)))
            .collect::<Result<_, TracefsError>>()?;
        Ok(Formats { formats })
    }

    fn format(&self, event: &str) -> &EventFormat {
        self.formats
            .iter()
            .find(|(name, _)| *name == event)
            .map(|(_, format)| format)
            .unwrap_or_else(|| panic!("{event} is not a tracepoint of this module"))
    }

    /// Offset of a field that must exist with the given size.
    fn offset(&self, event: &str, field: &str, size: u32) -> Result<u32, LayoutError> {
        let found = self
            .format(event)
            .field(field)
            .ok_or_else(|| LayoutError::MissingField {
                event: event.to_owned(),
                field: field.to_owned(),
            })?;
        if found.size != size {
            return Err(LayoutError::FieldSize {
                event: event.to_owned(),
                field: field.to_owned(),
                size: found.size,
                expected: size,
            });
        }
        Ok(found.offset)
    }

    /// Offset of a field that older kernels lack.
    fn optional_offset(&self, event: &str, field: &str, size: u32) -> Result<u32, LayoutError> {
        match self.offset(event, field, size) {
            Err(LayoutError::MissingField { .. }) => Ok(ABSENT_FIELD),
            other => other,
        }
    }
}

fn fadvise_layout(tracefs: &Tracefs) -> Result<FadviseLayout, LayoutError> {
    let formats = Formats::of(tracefs, Module::Fadvise.programs())?;
    Ok(FadviseLayout {
        // Syscall tracepoints store every argument as an 8-byte slot.
        enter_advice: formats.offset("sys_enter_fadvise64", "advice", 8)?,
        exit_ret: formats.offset("sys_exit_fadvise64", "ret", 8)?,
        ..FadviseLayout::UNSET
    })
}

/// The filemap offsets, and why mm_filemap_get_pages cannot be used when it cannot (a
/// kernel before 6.12: the caller looks for the BTF fallback). The add and delete
/// tracepoints exist on every kernel we support: without them the module is unavailable.
fn filemap_layout(tracefs: &Tracefs) -> Result<(FilemapLayout, Option<TracefsError>), LayoutError> {
    const GET_PAGES: &str = "mm_filemap_get_pages";
    const ADD: &str = "mm_filemap_add_to_page_cache";
    const DELETE: &str = "mm_filemap_delete_from_page_cache";
    let formats = Formats::of(tracefs, &PAGE_CACHE_PROGRAMS[1..])?;
    let mut layout = FilemapLayout {
        add_ino: formats.offset(ADD, "i_ino", 8)?,
        add_dev: formats.offset(ADD, "s_dev", 4)?,
        add_order: formats.optional_offset(ADD, "order", 1)?,
        delete_order: formats.optional_offset(DELETE, "order", 1)?,
        ..FilemapLayout::UNSET
    };
    let get_pages = match Formats::of(tracefs, &PAGE_CACHE_PROGRAMS[..1]) {
        Ok(formats) => formats,
        Err(LayoutError::Tracefs(missing @ TracefsError::MissingEvent { .. })) => {
            return Ok((layout, Some(missing)));
        }
        Err(err) => return Err(err),
    };
    layout.get_pages_ino = get_pages.offset(GET_PAGES, "i_ino", 8)?;
    layout.get_pages_dev = get_pages.offset(GET_PAGES, "s_dev", 4)?;
    layout.get_pages_index = get_pages.offset(GET_PAGES, "index", 8)?;
    layout.get_pages_last_index = get_pages.offset(GET_PAGES, "last_index", 8)?;
    Ok((layout, None))
}

fn vmscan_layout(tracefs: &Tracefs) -> Result<VmscanLayout, LayoutError> {
    let formats = Formats::of(tracefs, Module::Vmscan.programs())?;
    const SHRINK: &str = "mm_vmscan_lru_shrink_inactive";
    Ok(VmscanLayout {
        shrink_nr_scanned: formats.offset(SHRINK, "nr_scanned", 8)?,
        shrink_nr_reclaimed: formats.offset(SHRINK, "nr_reclaimed", 8)?,
    })
}

fn process_layout(tracefs: &Tracefs) -> Result<ProcessLayout, LayoutError> {
    let formats = Formats::of(tracefs, &PROCESS_PROGRAMS)?;
    Ok(ProcessLayout {
        rename_pid: formats.offset("task_rename", "pid", 4)?,
        rename_newcomm: formats.offset("task_rename", "newcomm", 16)?,
        exit_group_dead: formats.optional_offset("sched_process_exit", "group_dead", 1)?,
        ..ProcessLayout::UNSET
    })
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    use super::*;

    fn write_event(root: &Path, category: &str, event: &str, fields: &[(&str, u32, u32)]) {
        let dir = root.join("events").join(category).join(event);
        fs::create_dir_all(&dir).unwrap();
        let mut text = format!("name: {event}\nID: 1\nformat:\n");
        for (decl, offset, size) in fields {
            text.push_str(&format!(
                "\tfield:{decl};\toffset:{offset};\tsize:{size};\tsigned:0;\n"
            ));
        }
        fs::write(dir.join("format"), text).unwrap();
    }

    #[test]
    fn layouts_come_from_the_format_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_event(
            root,
            "syscalls",
            "sys_enter_fadvise64",
            &[("int advice", 48, 8)],
        );
        write_event(
            root,
            "syscalls",
            "sys_exit_fadvise64",
            &[("long ret", 24, 8)],
        );
        // An older kernel: no `order` field.
        write_event(
            root,
            "filemap",
            "mm_filemap_get_pages",
            &[
                ("unsigned long i_ino", 8, 8),
                ("dev_t s_dev", 16, 4),
                ("unsigned long index", 24, 8),
                ("unsigned long last_index", 32, 8),
            ],
        );
        write_event(
            root,
            "filemap",
            "mm_filemap_add_to_page_cache",
            &[("unsigned long i_ino", 16, 8), ("dev_t s_dev", 32, 4)],
        );
        write_event(root, "filemap", "mm_filemap_delete_from_page_cache", &[]);
        let tracefs = Tracefs::at(root);
        let layouts = Layouts::resolve(&tracefs);

        let fadvise = layouts.fadvise.unwrap();
        assert_eq!((fadvise.enter_advice, fadvise.exit_ret), (48, 24));
        let filemap = layouts.filemap.unwrap();
        assert_eq!(filemap.add_order, ABSENT_FIELD);
        assert_eq!(filemap.get_pages_last_index, 32);
        // No vmscan events at all: that module alone is unavailable.
        let err = layouts.vmscan.unwrap_err().to_string();
        assert!(
            err.contains("vmscan:mm_vmscan_lru_shrink_inactive does not exist"),
            "{err}"
        );
    }

    #[test]
    fn read_functions_of_every_kernel_fit_and_others_do_not() {
        let pointer = |name: &str| ValueType::PointerTo(name.to_owned());
        // filemap_read (5.12+) and generic_file_buffered_read (5.10).
        let read = Signature {
            params: vec![pointer("kiocb"), pointer("iov_iter"), ValueType::Int(8)],
            ret: ValueType::Int(8),
        };
        assert!(read_signature_fits(&read));
        // filemap_get_pages of 6.1 and of 6.12: not what read_iter_exit reads.
        let get_pages_6_1 = Signature {
            params: vec![
                pointer("kiocb"),
                pointer("iov_iter"),
                pointer("folio_batch"),
            ],
            ret: ValueType::Int(4),
        };
        let get_pages_6_12 = Signature {
            params: vec![
                pointer("kiocb"),
                ValueType::Int(8),
                pointer("folio_batch"),
                ValueType::Int(1),
            ],
            ret: ValueType::Int(4),
        };
        assert!(!read_signature_fits(&get_pages_6_1));
        assert!(!read_signature_fits(&get_pages_6_12));
    }

    /// Without mm_filemap_get_pages the module stays available through the BTF fallback
    /// (on a kernel with BTF); without the add tracepoint it is unavailable.
    #[test]
    fn a_missing_get_pages_tracepoint_means_the_fallback() {
        if Btf::from_sys_fs().is_err() {
            eprintln!("no /sys/kernel/btf/vmlinux here: nothing to check");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_event(
            root,
            "filemap",
            "mm_filemap_add_to_page_cache",
            &[("unsigned long i_ino", 16, 8), ("dev_t s_dev", 32, 4)],
        );
        write_event(root, "filemap", "mm_filemap_delete_from_page_cache", &[]);
        let layouts = Layouts::resolve(&Tracefs::at(root));
        assert!(layouts.filemap.is_ok(), "{:?}", layouts.filemap);
        let ReadHook::Chain {
            fexit, syscalls, ..
        } = &layouts.read_hook
        else {
            panic!("{:?}", layouts.read_hook);
        };
        // No syscall tracepoints in this tracefs: fexit alone.
        assert!(syscalls.is_none());
        let candidates = layouts.read_hook.candidates();
        assert_eq!(candidates.len(), fexit.as_ref().unwrap().0.len());
        assert_eq!(candidates[0].hook, "fexit filemap_read");
        assert_eq!(candidates[0].programs[0].program, READ_FEXIT_PROGRAM);

        fs::remove_dir_all(root.join("events/filemap/mm_filemap_add_to_page_cache")).unwrap();
        let err = Layouts::resolve(&Tracefs::at(root))
            .filemap
            .unwrap_err()
            .to_string();
        assert!(err.contains("mm_filemap_add_to_page_cache"), "{err}");
    }

    /// On this machine's kernel (if it has BTF): the fallbacks resolve.
    #[test]
    fn fallbacks_resolve_on_the_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no /sys/kernel/btf/vmlinux here: nothing to check");
            return;
        };
        let (functions, layout) = read_fallback(&btf).unwrap();
        assert_eq!(functions, ["filemap_read"]);
        assert_ne!(layout.kiocb_pos, layout.kiocb_filp);
        if let Ok((tracefs, _)) = Tracefs::locate(false) {
            let syscalls = syscall_read_layout(&tracefs, &btf).unwrap();
            assert_eq!(syscalls.enter_fd, 16);
            assert_ne!(syscalls.file_mapping, ABSENT_FIELD);
        }
    }

    /// The fadvise exit tracepoint's registers on this kernel: where the ptrace ABI
    /// (`struct user_regs_struct`, which x86-64's `pt_regs` mirrors) puts r10 and rax.
    #[test]
    fn syscall_registers_resolve_on_the_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no /sys/kernel/btf/vmlinux here: nothing to check");
            return;
        };
        let regs = syscall_regs(&btf).unwrap();
        if cfg!(target_arch = "x86_64") {
            assert_eq!((regs.fourth_argument, regs.result), (7 * 8, 10 * 8));
        }
        assert_ne!(regs.task_pid, regs.task_tgid);
        let mut layout = FadviseLayout::UNSET;
        FadviseHook {
            task_regs: Ok(regs),
            ..FadviseHook::unavailable("test")
        }
        .apply(&mut layout);
        assert_eq!(layout.regs_advice, regs.fourth_argument);
        let hooks: Vec<String> = FadviseHook::resolve(Ok(&btf))
            .candidates(true)
            .into_iter()
            .map(|c| c.hook)
            .collect();
        let regs_hook = hooks.iter().position(|h| h.contains("pt_regs"));
        let pair_hook = hooks.iter().position(|h| h.contains("sys_enter_fadvise64"));
        assert!(regs_hook.is_some() && regs_hook < pair_hook, "{hooks:?}");
    }

    /// The memcg and io modules' BTF layouts on this kernel (the VM matrix loads them on
    /// 5.10, 6.1 and 6.12): a folio kernel has `memcg_data` with flags and a folio order.
    #[test]
    fn owner_and_folio_layouts_resolve_on_the_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no /sys/kernel/btf/vmlinux here: nothing to check");
            return;
        };
        let owner = owner_layout(&btf).unwrap();
        assert_ne!(owner.kn_id, ABSENT_FIELD);
        assert_ne!(owner.swapbacked_bit, ABSENT_FIELD);
        if btf.member("folio", "memcg_data").is_ok() {
            assert_eq!(owner.memcg_data_flags, 0x7);
            let folio = folio_size_layout(&btf).unwrap();
            assert_eq!(folio.folio_head_bit, owner.folio_head_bit);
            assert_eq!(folio.folio_order, owner.folio_order);
            // The order byte lies past the head page's 64 bytes: in the second page.
            assert!(folio.folio_order >= 64, "{folio:?}");
        }
    }

    #[test]
    fn a_field_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_event(
            dir.path(),
            "syscalls",
            "sys_enter_fadvise64",
            &[("int advice", 16, 4)],
        );
        write_event(
            dir.path(),
            "syscalls",
            "sys_exit_fadvise64",
            &[("long ret", 16, 8)],
        );
        let err = fadvise_layout(&Tracefs::at(dir.path()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "tracepoint sys_enter_fadvise64: field advice is 4 bytes, the program reads 8"
        );
    }
}
