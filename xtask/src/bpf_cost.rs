//! BPF run time per event from the kernel's own statistics (run_time_ns / run_cnt), in
//! interleaved rounds: the sidecar's programs against empty programs of the same attach
//! types, and against bpftrace doing the same job. Each measurement is one `sidecar-load
//! bpf-cost` loop (see that file); absolute nanoseconds move by ~30% between runs on a
//! shared VM, ratios within a run hold.
//!
//! Run on the host by `cargo xtask bench-bpf` (writes docs/bench/bpf-cost.md) and in each
//! kernel of the matrix by `cargo xtask vm-test` (the guest has no bpftrace; the sidecar
//! is already running there).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// One thing measured: which loop, with which empty programs (none: whatever is attached).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Setup {
    /// Two empty classic tracepoint programs on sys_enter/exit_fadvise64 (today's hook).
    FadviseFloorTracepoints,
    /// One empty fexit program on ksys_fadvise64_64.
    FadviseFloorFexit,
    /// One classic tracepoint program on sys_exit_fadvise64 that makes one helper call
    /// (bpf_get_current_pid_tgid) and nothing else: less half the empty pair, a call's cost.
    FadviseFloorOneCall,
    /// The sidecar's fadvise programs, whatever hook it chose.
    FadviseSidecar,
    /// The sidecar's fadvise tracepoint pair (entry keeps the advice per thread), forced by
    /// `SIDECAR_FAULT_NO_TASK_REGS`: where the kernel lacks `bpf_task_pt_regs`, and the hook
    /// this host ran before the exit tracepoint read the registers.
    FadviseSidecarPair,
    /// bpftrace doing the fadvise job (advice per thread at entry, count at exit).
    FadviseBpftrace,
    /// One empty raw tracepoint program on mm_filemap_get_pages.
    PreadFloorRawTracepoint,
    /// One empty BTF-typed raw tracepoint (tp_btf) on mm_filemap_get_pages.
    PreadFloorBtfTracepoint,
    /// One empty fexit program on filemap_read.
    PreadFloorFexit,
    /// The sidecar's page-cache programs on a cached 4 KiB pread.
    PreadSidecar,
    /// Two empty classic tracepoint programs on sys_enter/exit_pread64 (the io module's).
    IoReadFloorTracepoints,
    /// The sidecar's io programs on the same pread (the page-cache loop's report).
    IoReadSidecar,
    /// One empty tp_btf on writeback_dirty_folio.
    DirtyFloorBtfTracepoint,
    /// The sidecar's pages-dirtied program on a 4 KiB pwrite that dirties one page.
    DirtySidecar,
    /// The sidecar's written-back program (fexit) on the fdatasync after that pwrite, which
    /// starts the writeback of that page (the same loop's report).
    WritebackSidecar,
    /// Two empty tp_btf programs on mm_filemap_add_to_page_cache and _delete_from_.
    MemcgFloorBtfTracepoints,
    /// The sidecar's memcg programs on a pread that adds a page and a DONTNEED that
    /// removes it.
    MemcgSidecar,
}

impl Setup {
    pub const fn label(self) -> &'static str {
        match self {
            Setup::FadviseFloorTracepoints => {
                "2 empty classic tracepoints (sys_enter/exit_fadvise64)"
            }
            Setup::FadviseFloorFexit => "1 empty fexit (ksys_fadvise64_64)",
            Setup::FadviseFloorOneCall => {
                "1 classic tracepoint making one helper call (sys_exit_fadvise64)"
            }
            Setup::FadviseSidecar => "sidecar",
            Setup::FadviseSidecarPair => "sidecar, tracepoint pair forced",
            Setup::FadviseBpftrace => "bpftrace, same job",
            Setup::PreadFloorRawTracepoint => "1 empty raw tracepoint (mm_filemap_get_pages)",
            Setup::PreadFloorBtfTracepoint => "1 empty tp_btf (mm_filemap_get_pages)",
            Setup::PreadFloorFexit => "1 empty fexit (filemap_read)",
            Setup::PreadSidecar => "sidecar (page_cache programs)",
            Setup::IoReadFloorTracepoints => "2 empty classic tracepoints (sys_enter/exit_pread64)",
            Setup::IoReadSidecar => "sidecar (io read programs)",
            Setup::DirtyFloorBtfTracepoint => "1 empty tp_btf (writeback_dirty_folio)",
            Setup::DirtySidecar => "sidecar (io pages-dirtied program)",
            Setup::WritebackSidecar => "sidecar (io written-back program, fexit)",
            Setup::MemcgFloorBtfTracepoints => {
                "2 empty tp_btf (mm_filemap_add_to/delete_from_page_cache)"
            }
            Setup::MemcgSidecar => "sidecar (memcg add and delete programs)",
        }
    }

    /// Whether a program that ran in this setup's loop is part of what it measures: the
    /// page-cache and io programs both run on a pread, and are told apart by name (the
    /// kernel keeps 15 bytes of it).
    fn counts(self, program: &str) -> bool {
        match self {
            Setup::PreadSidecar => !program.starts_with("io_"),
            Setup::IoReadSidecar => program.starts_with("io_read") || program == "io_exit",
            Setup::DirtySidecar => program.starts_with("io_dirty"),
            Setup::WritebackSidecar => program.starts_with("io_writeback"),
            Setup::MemcgSidecar => program.starts_with("memcg_"),
            _ => true,
        }
    }

    const fn op(self) -> &'static str {
        match self {
            Setup::FadviseFloorTracepoints
            | Setup::FadviseFloorFexit
            | Setup::FadviseFloorOneCall
            | Setup::FadviseSidecar
            | Setup::FadviseSidecarPair
            | Setup::FadviseBpftrace => "fadvise",
            Setup::DirtyFloorBtfTracepoint | Setup::DirtySidecar | Setup::WritebackSidecar => {
                "write"
            }
            Setup::MemcgFloorBtfTracepoints | Setup::MemcgSidecar => "cycle",
            _ => "pread",
        }
    }

    const fn floors(self) -> &'static [&'static str] {
        match self {
            Setup::FadviseFloorTracepoints => &[
                "tracepoint:syscalls:sys_enter_fadvise64",
                "tracepoint:syscalls:sys_exit_fadvise64",
            ],
            Setup::FadviseFloorFexit => &["fexit:ksys_fadvise64_64"],
            Setup::FadviseFloorOneCall => &["tracepoint_call:syscalls:sys_exit_fadvise64"],
            Setup::PreadFloorRawTracepoint => &["raw_tracepoint:mm_filemap_get_pages"],
            Setup::PreadFloorBtfTracepoint => &["tp_btf:mm_filemap_get_pages"],
            Setup::PreadFloorFexit => &["fexit:filemap_read"],
            Setup::IoReadFloorTracepoints => &[
                "tracepoint:syscalls:sys_enter_pread64",
                "tracepoint:syscalls:sys_exit_pread64",
            ],
            Setup::DirtyFloorBtfTracepoint => &["tp_btf:writeback_dirty_folio"],
            Setup::MemcgFloorBtfTracepoints => &[
                "tp_btf:mm_filemap_add_to_page_cache",
                "tp_btf:mm_filemap_delete_from_page_cache",
            ],
            _ => &[],
        }
    }
}

/// What the sidecar does for fadvise, as bpftrace would do it.
pub const BPFTRACE_FADVISE: &str = r#"
tracepoint:syscalls:sys_enter_fadvise64 { @adv[tid] = args->advice + 1; }
tracepoint:syscalls:sys_exit_fadvise64 /@adv[tid]/ {
  @calls[pid, @adv[tid] - 1, args->ret == 0] = count();
  delete(@adv[tid]);
}
BEGIN { printf("ready\n"); }
"#;

/// Runs one `sidecar-load bpf-cost` loop; its report, or why it could not run.
/// `owner`: the process whose programs the sidecar and bpftrace setups measure.
pub fn measure(
    load: &Path,
    setup: Setup,
    calls: u64,
    owner: Option<u32>,
    file: Option<&Path>,
) -> Result<Value> {
    // A write is a pwrite and an fdatasync, a cycle a read from the disk: fewer of them.
    let calls = if matches!(setup.op(), "write" | "cycle") {
        (calls / 20).max(500)
    } else {
        calls
    };
    let mut cmd = Command::new(load);
    cmd.args([
        "bpf-cost",
        "--op",
        setup.op(),
        "--calls",
        &calls.to_string(),
    ]);
    for floor in setup.floors() {
        cmd.args(["--floor", floor]);
    }
    if let (true, Some(pid)) = (setup.floors().is_empty(), owner) {
        cmd.args(["--owner", &pid.to_string()]);
    }
    if let Some(file) = file.filter(|_| setup.op() != "fadvise") {
        cmd.arg("--file").arg(file);
    }
    let output = cmd.output().context("running sidecar-load bpf-cost")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // anyhow's report: "Error: context", then "Caused by:" and the causes, then a
        // backtrace; the context and the causes say why.
        let why: Vec<&str> = stderr
            .lines()
            .take_while(|l| !l.starts_with("Stack backtrace"))
            .map(|l| l.trim().trim_start_matches("Error: "))
            .filter(|l| !l.is_empty() && *l != "Caused by:")
            .map(|l| {
                l.trim_start_matches(|c: char| c.is_ascii_digit() || c == ':')
                    .trim()
            })
            .collect();
        bail!("{}", why.join(": "));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("report {line:?}"))
}

/// BPF ns per call of every round, per setup; or why a setup could not run.
#[derive(Default)]
pub struct Results {
    pub ns: BTreeMap<Setup, Vec<f64>>,
    pub wall: BTreeMap<Setup, Vec<f64>>,
    pub programs: BTreeMap<Setup, String>,
    pub unavailable: BTreeMap<Setup, String>,
}

impl Results {
    pub fn record(&mut self, setup: Setup, report: Result<Value>) {
        match report {
            Ok(report) => {
                let calls = report["calls"].as_f64().unwrap_or(f64::NAN);
                let own: Vec<&Value> = report["programs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| setup.counts(p["name"].as_str().unwrap_or_default()))
                    .collect();
                if own.is_empty() {
                    self.unavailable.insert(
                        setup,
                        "none of its programs ran (not attached on this kernel)".to_owned(),
                    );
                    return;
                }
                let ns: f64 = own.iter().filter_map(|p| p["ns"].as_f64()).sum();
                let wall = report["wall_ns_per_call"].as_f64().unwrap_or(f64::NAN);
                self.ns.entry(setup).or_default().push(ns / calls);
                self.wall.entry(setup).or_default().push(wall);
                let programs = own
                    .iter()
                    .filter_map(|p| p["name"].as_str())
                    .collect::<Vec<_>>()
                    .join(" + ");
                self.programs.insert(setup, programs);
            }
            Err(err) => {
                self.unavailable.insert(setup, format!("{err:#}"));
            }
        }
    }

    /// Medians of the per-round ratios `num / den` (each round's pair was measured
    /// back to back, which is what keeps a ratio steady when the machine is not).
    pub fn ratio(&self, num: Setup, den: Setup) -> Option<f64> {
        let (a, b) = (self.ns.get(&num)?, self.ns.get(&den)?);
        let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
        median(&ratios)
    }

    /// What one helper call costs: the one-call program less an empty one (half the empty
    /// pair measured in the same round), median over rounds.
    pub fn call_ns(&self) -> Option<f64> {
        let one_call = self.ns.get(&Setup::FadviseFloorOneCall)?;
        let pair = self.ns.get(&Setup::FadviseFloorTracepoints)?;
        let calls: Vec<f64> = one_call
            .iter()
            .zip(pair)
            .map(|(call, pair)| call - pair / 2.0)
            .collect();
        median(&calls)
    }

    /// A markdown table: setup, programs, median BPF ns per call (min-max), wall ns.
    pub fn table(&self, setups: &[Setup]) -> String {
        let mut out = String::from(
            "| op | setup | programs that ran | BPF ns per call, median (min-max) | wall ns per call, median (min-max) |\n|---|---|---|---|---|\n",
        );
        for &setup in setups {
            let cell = |values: Option<&Vec<f64>>| match values {
                Some(v) if !v.is_empty() => {
                    let (lo, hi) = v
                        .iter()
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                            (lo.min(*x), hi.max(*x))
                        });
                    format!("{:.0} ({lo:.0}-{hi:.0})", median(v).unwrap_or(f64::NAN))
                }
                _ => "-".to_owned(),
            };
            let programs = match self.unavailable.get(&setup) {
                Some(why) => format!("not measured: {why}"),
                None => self.programs.get(&setup).cloned().unwrap_or_default(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                setup.op(),
                setup.label(),
                programs,
                cell(self.ns.get(&setup)),
                cell(self.wall.get(&setup)),
            );
        }
        out
    }

    /// One line: the sidecar's BPF ns per call and its ratio to each floor (medians).
    pub fn summary(&self) -> String {
        let ns = |setup: Setup| {
            self.ns
                .get(&setup)
                .and_then(|v| median(v))
                .map_or("-".to_owned(), |v| format!("{v:.0} ns"))
        };
        let ratio = |num: Setup, den: Setup| {
            self.ratio(num, den)
                .map_or("-".to_owned(), |r| format!("{r:.2}x"))
        };
        let mut line = format!(
            "fadvise {} = {} two empty classic tracepoints ({}), {} one empty fexit ({})",
            ns(Setup::FadviseSidecar),
            ratio(Setup::FadviseSidecar, Setup::FadviseFloorTracepoints),
            ns(Setup::FadviseFloorTracepoints),
            ratio(Setup::FadviseSidecar, Setup::FadviseFloorFexit),
            ns(Setup::FadviseFloorFexit),
        );
        if self.ns.contains_key(&Setup::FadviseBpftrace) {
            let _ = write!(
                line,
                ", {} bpftrace ({})",
                ratio(Setup::FadviseSidecar, Setup::FadviseBpftrace),
                ns(Setup::FadviseBpftrace)
            );
        }
        if self.ns.contains_key(&Setup::FadviseSidecarPair) {
            let _ = write!(
                line,
                "; fadvise with the tracepoint pair forced {} = {} two empty classic tracepoints{}",
                ns(Setup::FadviseSidecarPair),
                ratio(Setup::FadviseSidecarPair, Setup::FadviseFloorTracepoints),
                if self.ns.contains_key(&Setup::FadviseBpftrace) {
                    format!(
                        ", {} bpftrace",
                        ratio(Setup::FadviseSidecarPair, Setup::FadviseBpftrace)
                    )
                } else {
                    String::new()
                },
            );
        }
        if let Some(call) = self.call_ns() {
            let _ = write!(line, "; one helper call and its return {call:.0} ns");
        }
        let _ = write!(
            line,
            "; cached pread {} = {} an empty raw tracepoint ({}), {} an empty tp_btf ({}), {} an empty fexit ({})",
            ns(Setup::PreadSidecar),
            ratio(Setup::PreadSidecar, Setup::PreadFloorRawTracepoint),
            ns(Setup::PreadFloorRawTracepoint),
            ratio(Setup::PreadSidecar, Setup::PreadFloorBtfTracepoint),
            ns(Setup::PreadFloorBtfTracepoint),
            ratio(Setup::PreadSidecar, Setup::PreadFloorFexit),
            ns(Setup::PreadFloorFexit),
        );
        let _ = write!(
            line,
            "; io per read call {} = {} two empty classic tracepoints ({}); io per page dirtied {} = {} an empty tp_btf ({}); io per page written back {}",
            ns(Setup::IoReadSidecar),
            ratio(Setup::IoReadSidecar, Setup::IoReadFloorTracepoints),
            ns(Setup::IoReadFloorTracepoints),
            ns(Setup::DirtySidecar),
            ratio(Setup::DirtySidecar, Setup::DirtyFloorBtfTracepoint),
            ns(Setup::DirtyFloorBtfTracepoint),
            ns(Setup::WritebackSidecar),
        );
        let _ = write!(
            line,
            "; memcg per page added and removed {} = {} two empty tp_btf ({})",
            ns(Setup::MemcgSidecar),
            ratio(Setup::MemcgSidecar, Setup::MemcgFloorBtfTracepoints),
            ns(Setup::MemcgFloorBtfTracepoints),
        );
        line
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        f64::midpoint(sorted[mid - 1], sorted[mid])
    } else {
        sorted[mid]
    })
}

/// The floors, in the order each round runs them (the sidecar and bpftrace rounds are run
/// by the caller, which starts and stops them).
pub const FLOORS: [Setup; 9] = [
    Setup::FadviseFloorTracepoints,
    Setup::FadviseFloorFexit,
    Setup::FadviseFloorOneCall,
    Setup::PreadFloorRawTracepoint,
    Setup::PreadFloorBtfTracepoint,
    Setup::PreadFloorFexit,
    Setup::IoReadFloorTracepoints,
    Setup::DirtyFloorBtfTracepoint,
    Setup::MemcgFloorBtfTracepoints,
];

/// The sidecar's setups, each with the setups recorded from the same loop's report (the
/// page-cache and io programs run on the same pread).
pub const SIDECAR: [(Setup, &[Setup]); 4] = [
    (Setup::FadviseSidecar, &[]),
    (Setup::PreadSidecar, &[Setup::IoReadSidecar]),
    (Setup::DirtySidecar, &[Setup::WritebackSidecar]),
    (Setup::MemcgSidecar, &[]),
];

/// Every setup, in table order.
pub const ALL: [Setup; 17] = [
    Setup::FadviseFloorTracepoints,
    Setup::FadviseFloorFexit,
    Setup::FadviseFloorOneCall,
    Setup::FadviseBpftrace,
    Setup::FadviseSidecarPair,
    Setup::FadviseSidecar,
    Setup::PreadFloorRawTracepoint,
    Setup::PreadFloorBtfTracepoint,
    Setup::PreadFloorFexit,
    Setup::PreadSidecar,
    Setup::IoReadFloorTracepoints,
    Setup::IoReadSidecar,
    Setup::DirtyFloorBtfTracepoint,
    Setup::DirtySidecar,
    Setup::WritebackSidecar,
    Setup::MemcgFloorBtfTracepoints,
    Setup::MemcgSidecar,
];

impl Results {
    /// Measures one sidecar setup and records it with the setups read from the same loop.
    pub fn measure_sidecar(
        &mut self,
        load: &Path,
        (setup, also): (Setup, &[Setup]),
        calls: u64,
        sidecar: u32,
        file: &Path,
    ) {
        match measure(load, setup, calls, Some(sidecar), Some(file)) {
            Ok(report) => {
                for &other in also {
                    self.record(other, Ok(report.clone()));
                }
                self.record(setup, Ok(report));
            }
            Err(err) => {
                for &other in also {
                    self.record(other, Err(anyhow::anyhow!("{err:#}")));
                }
                self.record(setup, Err(err));
            }
        }
    }
}

/// A file on a disk filesystem for the pread loop (tmpfs bypasses the read path).
pub fn pread_file(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("bpf-cost-pread");
    std::fs::write(&path, vec![1u8; 4096])?;
    Ok(path)
}
