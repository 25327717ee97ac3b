//! `cargo xtask`: the project's build steps that cargo alone cannot express.
use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod bpf_cost;
mod load;
mod svg;
mod vm;

#[derive(Parser)]
#[command(about = "sidecar build tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF object (embedded into the sidecar binary by its build script).
    BuildEbpf {
        /// Print only the object's path on stdout.
        #[arg(long)]
        print_path: bool,
    },
    /// Run clippy on the eBPF crate for its real target (`-D warnings`).
    ClippyEbpf,
    /// Run the workload generator (target/release/sidecar-load) and print its JSON report.
    Load(load::LoadArgs),
    /// Measure the sidecar's cost; writes docs/BENCHMARKS.md and docs/bench/*.svg (root).
    Bench(bench::BenchArgs),
    /// BPF time per event (kernel statistics) against empty programs and bpftrace, in
    /// interleaved rounds; writes docs/bench/bpf-cost.md (root).
    BenchBpf(bench::BenchBpfArgs),
    /// Boot Debian's 5.10, 6.1 and 6.12 kernels in QEMU and run the ground-truth checks in
    /// each; writes docs/kernels.md.
    VmTest(vm::VmTestArgs),
    /// The in-VM side of `vm-test` (started by the initramfs's /init).
    #[command(hide = true)]
    VmGuest,
    /// The benchmark's timing loop (run by `bench` in a child process).
    #[command(hide = true)]
    BenchLoop(bench::LoopArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::BuildEbpf { print_path } => {
            let object = build_ebpf(&root)?;
            if print_path {
                println!("{}", object.display());
            } else {
                eprintln!("eBPF object: {}", object.display());
            }
        }
        Task::ClippyEbpf => clippy_ebpf(&root)?,
        Task::Load(args) => load::load(&root, args)?,
        Task::Bench(args) => bench::bench(&root, &args)?,
        Task::BenchBpf(args) => bench::bench_bpf(&root, &args)?,
        Task::BenchLoop(args) => bench::bench_loop(&args)?,
        Task::VmTest(args) => vm::vm_test(&root, &args)?,
        Task::VmGuest => vm::vm_guest()?,
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.clone(), Path::to_path_buf)
}

const EBPF_TARGET: &str = "bpfel-unknown-none";
const EBPF_PACKAGE: &str = "sidecar-ebpf";

/// Where the eBPF build keeps its own artifacts: apart from the host build, because it runs
/// with RUSTC_BOOTSTRAP=1, which would otherwise invalidate host build scripts each time.
pub fn ebpf_target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("ebpf")
}

/// A `cargo` command for the eBPF crate with everything its target needs.
fn ebpf_cargo(root: &Path, subcommand: &str) -> Result<Command> {
    let linker_dir = bpf_linker_dir(root)?;
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([subcommand, "--package", EBPF_PACKAGE, "--release"])
        .args(["--target", EBPF_TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(ebpf_target_dir(root))
        // The pinned compiler is a stable release; -Z build-std needs the unstable gate
        // opened for this one build, as the Linux kernel itself does for its Rust code.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", ebpf_rustflags());
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    if let Some(dir) = linker_dir {
        let mut path = OsString::from(dir);
        if let Some(old) = env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        cmd.env("PATH", path);
    }
    Ok(cmd)
}

fn ebpf_rustflags() -> String {
    let arch = env::consts::ARCH;
    [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_owned(),
        // BTF is what lets the loader create the map-of-maps and global sections.
        "-Clink-arg=--btf".to_owned(),
    ]
    .join("\x1f")
}

/// The directory to put in front of PATH for bpf-linker, or `None` when PATH has it.
fn bpf_linker_dir(root: &Path) -> Result<Option<PathBuf>> {
    if which("bpf-linker").is_some() {
        return Ok(None);
    }
    // The bootstrap script owns where (and against which LLVM) bpf-linker is built.
    let script = root.join("scripts/bootstrap.sh");
    let output = Command::new(&script)
        .arg("--print-linker-dir")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "bpf-linker is not in PATH and {} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dir = String::from_utf8(output.stdout)?.trim().to_owned();
    Ok(Some(PathBuf::from(dir)))
}

fn which(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn build_ebpf(root: &Path) -> Result<PathBuf> {
    let status = ebpf_cargo(root, "build")?
        .status()
        .context("running cargo build for the eBPF crate")?;
    if !status.success() {
        bail!("building {EBPF_PACKAGE} failed ({status})");
    }
    let object = ebpf_target_dir(root)
        .join(EBPF_TARGET)
        .join("release")
        .join(EBPF_PACKAGE);
    if !object.is_file() {
        bail!(
            "the eBPF build succeeded but {} is missing",
            object.display()
        );
    }
    Ok(object)
}

fn clippy_ebpf(root: &Path) -> Result<()> {
    let status = ebpf_cargo(root, "clippy")?
        .args(["--", "-D", "warnings"])
        .status()
        .context("running cargo clippy for the eBPF crate")?;
    if !status.success() {
        bail!("clippy found problems in {EBPF_PACKAGE}");
    }
    Ok(())
}
