//! `sidecar-load bpf-cost`: what the kernel spends in BPF programs per call, from its own
//! run-time statistics (run_time_ns / run_cnt of each program, the figures `bpftool prog
//! show` prints), around a loop of calls this process makes itself.
//!
//! With `--floor`, it first attaches the object's empty programs (`sidecar-ebpf/src/floor.rs`)
//! where asked and reports only those: the cost of a program that does nothing on that
//! hook. With `--owner PID`, the programs that process holds (its descriptors' `prog_id` in
//! /proc/PID/fdinfo: the sidecar's or bpftrace's, not another tracer's on the same machine).

use std::{
    collections::HashMap,
    fs::File,
    io::Write as _,
    os::{fd::AsRawFd as _, unix::fs::FileExt as _},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use aya::{Ebpf, programs::loaded_programs};
use clap::ValueEnum;
use serde_json::json;
use sidecar_common::programs::{FLOOR_ONE_CALL_PROGRAM, FLOOR_PROGRAMS, Hook, ProgramSpec};

#[derive(Clone, Copy, ValueEnum)]
pub enum Op {
    /// posix_fadvise(DONTNEED) of 4 KiB.
    Fadvise,
    /// pread of 4 KiB of a cached file.
    Pread,
    /// pwrite of 4 KiB at the start of a file, then fdatasync: one page dirtied per call
    /// (the sync cleans it for the next call).
    Write,
    /// pread of 4 KiB of a file, then POSIX_FADV_DONTNEED: one page added to the page cache
    /// and one removed per call.
    Cycle,
}

/// One empty program to attach: `tracepoint:CATEGORY:EVENT`, `raw_tracepoint:EVENT`,
/// `tp_btf:EVENT` or `fexit:FUNCTION`.
#[derive(Clone, Debug)]
pub struct Floor {
    hook: Hook,
    target: String,
    /// `tracepoint_call:`: the program that makes one helper call instead of an empty one.
    one_call: bool,
}

pub fn parse_floor(text: &str) -> Result<Floor, String> {
    let (kind, target) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected KIND:TARGET"))?;
    let hook = match kind {
        "tracepoint" | "tracepoint_call" if target.contains(':') => Hook::Tracepoint,
        "raw_tracepoint" => Hook::RawTracepoint,
        "tp_btf" => Hook::BtfTracepoint,
        "fexit" => Hook::FExit,
        _ => {
            return Err(format!(
                "{text:?}: expected tracepoint:CATEGORY:EVENT, tracepoint_call:CATEGORY:EVENT, raw_tracepoint:EVENT, tp_btf:EVENT or fexit:FUNCTION"
            ));
        }
    };
    Ok(Floor {
        hook,
        target: target.to_owned(),
        one_call: kind == "tracepoint_call",
    })
}

struct Sample {
    name: String,
    run_ns: u64,
    runs: u64,
}

fn snapshot() -> Result<HashMap<u32, Sample>> {
    let mut programs = HashMap::new();
    for info in loaded_programs() {
        let info = info.context("reading a loaded program's info")?;
        programs.insert(
            info.id(),
            Sample {
                name: info.name_as_str().unwrap_or("?").to_owned(),
                run_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                runs: info.run_count(),
            },
        );
    }
    Ok(programs)
}

/// Loads the object and attaches each floor's empty program, the way the sidecar attaches
/// its own (`sidecar::kernel::start_program`); returns the object (the programs stay
/// attached while it lives).
fn attach_floors(floors: &[Floor]) -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(sidecar::kernel::ebpf_object()).context("loading the eBPF object")?;
    for (index, floor) in floors.iter().enumerate() {
        // Classic and raw tracepoints attach one program anywhere, as often as asked; a
        // program typed by BTF loads for one target, so each floor of its kind takes the
        // next one.
        let nth = match floor.hook {
            Hook::BtfTracepoint | Hook::FExit => floors[..index]
                .iter()
                .filter(|f| f.hook == floor.hook)
                .count(),
            Hook::Tracepoint | Hook::RawTracepoint => 0,
        };
        let template = FLOOR_PROGRAMS
            .iter()
            .filter(|spec| {
                spec.hook == floor.hook
                    && (spec.program == FLOOR_ONE_CALL_PROGRAM) == floor.one_call
            })
            .nth(nth)
            .context("no (more) floor program for this hook")?;
        // A short-lived tool: the few target names it attaches to may live as long as it.
        let target: &'static str = Box::leak(floor.target.clone().into_boxed_str());
        let (category, event) = match floor.hook {
            Hook::Tracepoint => target.split_once(':').unwrap_or(("", target)),
            _ => ("", target),
        };
        let spec = ProgramSpec {
            category,
            event,
            ..*template
        };
        sidecar::kernel::start_program(&mut ebpf, &spec, true)
            .with_context(|| format!("{} on {}", spec.hook.label(), floor.target))?;
    }
    Ok(ebpf)
}

/// A 4 KiB file for the loop: a temporary one for fadvise; for pread the given one, or one
/// created in `dir` (not tmpfs, whose reads bypass the page cache's read path), read once
/// so that it is cached.
fn target_file(op: Op, file: Option<&Path>) -> Result<(File, Option<tempfile::TempPath>)> {
    if let Some(path) = file.filter(|_| !matches!(op, Op::Write | Op::Cycle)) {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        return Ok((file, None));
    }
    let dir = match (op, file) {
        (Op::Fadvise, _) => std::env::temp_dir(),
        // Next to the given file: a disk filesystem, whose pages are accounted dirty and
        // read through the page cache.
        (Op::Write | Op::Cycle, Some(path)) => path
            .parent()
            .map_or_else(|| PathBuf::from("/var/tmp"), Path::to_owned),
        (Op::Pread | Op::Write | Op::Cycle, _) => PathBuf::from("/var/tmp"),
    };
    let mut temp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    temp.write_all(&[1u8; 4096])?;
    temp.as_file().sync_all()?;
    let (file, path) = temp.into_parts();
    Ok((file, Some(path)))
}

/// The ids of the BPF programs process `pid` holds a descriptor of.
fn programs_of(pid: u32) -> Result<Vec<u32>> {
    let dir = PathBuf::from(format!("/proc/{pid}/fdinfo"));
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        ids.extend(
            text.lines()
                .filter_map(|line| line.strip_prefix("prog_id:"))
                .filter_map(|id| id.trim().parse::<u32>().ok()),
        );
    }
    if ids.is_empty() {
        bail!("process {pid} holds no BPF program");
    }
    Ok(ids)
}

pub fn bpf_cost(
    op: Op,
    calls: u64,
    floors: &[Floor],
    owner: Option<u32>,
    file: Option<&Path>,
) -> Result<serde_json::Value> {
    if calls == 0 {
        bail!("--calls must be at least 1");
    }
    if floors.is_empty() == owner.is_none() {
        bail!("give either --floor (empty programs to attach) or --owner (whose programs)");
    }
    let (file, _keep) = target_file(op, file)?;
    let fd = file.as_raw_fd();
    let mut buffer = [0u8; 4096];
    let mut call = || -> Result<()> {
        match op {
            Op::Fadvise => {
                // SAFETY: a plain syscall on a descriptor we own.
                let ret = unsafe { libc::posix_fadvise(fd, 0, 4096, libc::POSIX_FADV_DONTNEED) };
                if ret != 0 {
                    bail!("posix_fadvise: {}", std::io::Error::from_raw_os_error(ret));
                }
            }
            Op::Pread => {
                file.read_exact_at(&mut buffer, 0).context("pread")?;
            }
            Op::Write => {
                file.write_all_at(&buffer, 0).context("pwrite")?;
                file.sync_data().context("fdatasync")?;
            }
            Op::Cycle => {
                file.read_exact_at(&mut buffer, 0).context("pread")?;
                // SAFETY: a plain syscall on a descriptor we own.
                let ret = unsafe { libc::posix_fadvise(fd, 0, 4096, libc::POSIX_FADV_DONTNEED) };
                if ret != 0 {
                    bail!("posix_fadvise: {}", std::io::Error::from_raw_os_error(ret));
                }
            }
        }
        Ok(())
    };
    // Warm: the file cached, the code paths faulted in.
    for _ in 0..1000 {
        call()?;
    }
    let floor = if floors.is_empty() {
        None
    } else {
        Some(attach_floors(floors)?)
    };
    let own: Vec<u32> = match (&floor, owner) {
        (Some(ebpf), _) => ebpf
            .programs()
            .filter_map(|(_, p)| p.info().ok().map(|i| i.id()))
            .collect(),
        (None, Some(pid)) => programs_of(pid)?,
        (None, None) => Vec::new(),
    };
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run-time statistics")?;
    let before = snapshot()?;
    let started = Instant::now();
    for _ in 0..calls {
        call()?;
    }
    let wall = started.elapsed();
    let after = snapshot()?;
    let mut programs = Vec::new();
    let (mut total_ns, mut total_runs) = (0u64, 0u64);
    for (id, now) in &after {
        let was = before.get(id);
        let runs = now.runs - was.map_or(0, |w| w.runs);
        let run_ns = now.run_ns - was.map_or(0, |w| w.run_ns);
        // Programs that did not run during the loop (vmscan's, the process tracker's)
        // are left out of the list; they add nothing to the sum.
        if !own.contains(id) || runs == 0 {
            continue;
        }
        total_ns += run_ns;
        total_runs += runs;
        programs.push(json!({ "id": id, "name": now.name, "runs": runs, "ns": run_ns }));
    }
    Ok(json!({
        "op": match op {
            Op::Fadvise => "fadvise",
            Op::Pread => "pread",
            Op::Write => "write",
            Op::Cycle => "cycle",
        },
        "calls": calls,
        "floor": floors.iter().map(|f| format!("{:?} {}", f.hook, f.target)).collect::<Vec<_>>(),
        "programs": programs,
        "bpf_ns_per_call": total_ns as f64 / calls as f64,
        "runs_per_call": total_runs as f64 / calls as f64,
        "wall_ns_per_call": wall.as_nanos() as f64 / calls as f64,
    }))
}
