//! `cargo xtask load`: a thin front-end to `target/release/sidecar-load`, the workload
//! generator. Each mode prepares what the generator needs (job files, a source file, a
//! memory cgroup), runs it and prints its JSON report, which is the ground truth: exact
//! calls and bytes.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Args)]
pub struct LoadArgs {
    #[command(subcommand)]
    mode: LoadMode,
    /// Where job files, source files and outputs are kept.
    #[arg(long, global = true, default_value = "/var/tmp/xtask-load")]
    work_dir: PathBuf,
}

#[derive(Subcommand)]
enum LoadMode {
    /// Claims jobs: each reads one small file and drops it with POSIX_FADV_DONTNEED.
    JobWorker {
        #[arg(long, default_value = "job-worker")]
        comm: String,
        /// Jobs to run in total.
        #[arg(long, default_value_t = 200)]
        jobs: u64,
        /// Distinct job files (made once, reused).
        #[arg(long, default_value_t = 40)]
        files: u64,
        /// Size of each job file.
        #[arg(long, default_value_t = 64)]
        kib: u64,
        /// Spread the jobs over this long (e.g. 2s); see also --rate.
        #[arg(long, value_parser = sidecar_common::duration::parse)]
        over: Option<Duration>,
        /// Jobs per second (sets --over to jobs / rate).
        #[arg(long, conflicts_with = "over")]
        rate: Option<f64>,
    },
    /// Pages through a large file (SEQUENTIAL once, WILLNEED per page) and upserts it.
    SyncWorker {
        #[arg(long, default_value = "sync-worker")]
        comm: String,
        /// Size of the upstream file (made cold before the run).
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Bytes per upstream page.
        #[arg(long, default_value_t = 1 << 20)]
        page_size: usize,
        /// Spread the pages over this long; see also --rate.
        #[arg(long, value_parser = sidecar_common::duration::parse)]
        over: Option<Duration>,
        /// Pages per second (sets --over to pages / rate).
        #[arg(long, conflicts_with = "over")]
        rate: Option<f64>,
    },
    /// Forces memory-cgroup reclaim: reads a file larger than a memory cgroup's limit
    /// from inside that cgroup (created for the run, removed afterwards).
    Pressure {
        #[arg(long, default_value = "pressure")]
        comm: String,
        /// The cgroup's memory limit, MiB.
        #[arg(long, default_value_t = 64)]
        limit_mib: u64,
        /// The file read inside it, MiB (larger than the limit).
        #[arg(long, default_value_t = 256)]
        file_mib: u64,
        /// Read the file this many times.
        #[arg(long, default_value_t = 1)]
        passes: u32,
    },
    /// Any other sidecar-load mode, arguments passed as they are
    /// (e.g. `cargo xtask load raw -- --comm x fadvise --calls 1000`).
    Raw {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The generator's path: next to the other release binaries.
pub fn sidecar_load(root: &Path) -> Result<PathBuf> {
    release_binary(root, "sidecar-load")
}

pub fn release_binary(root: &Path, name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release")
        .join(name);
    if !path.is_file() {
        bail!("{} is missing: run `make build` first", path.display());
    }
    Ok(path)
}

/// Runs the generator and returns its JSON report.
pub fn run_generator(root: &Path, args: &[String]) -> Result<Value> {
    let binary = sidecar_load(root)?;
    run_report(Command::new(&binary).args(args))
}

fn run_report(cmd: &mut Command) -> Result<Value> {
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    sidecar_testkit::generator::report(&output).with_context(|| format!("{cmd:?}"))
}

fn s(value: impl ToString) -> String {
    value.to_string()
}

fn over_arg(over: Option<Duration>, rate: Option<f64>, units: u64) -> Vec<String> {
    let over = over.or_else(|| {
        rate.filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(units as f64 / r))
    });
    over.map_or_else(Vec::new, |d| {
        vec!["--over".into(), format!("{}ms", d.as_millis())]
    })
}

pub fn load(root: &Path, args: LoadArgs) -> Result<()> {
    let dir = &args.work_dir;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let report = match args.mode {
        LoadMode::JobWorker {
            comm,
            jobs,
            files,
            kib,
            over,
            rate,
        } => {
            let jobs_dir = dir.join(format!("jobs-{files}x{kib}k"));
            let made = run_generator(
                root,
                &[
                    "make-files".into(),
                    "--dir".into(),
                    s(jobs_dir.display()),
                    "--count".into(),
                    s(files),
                    "--kib".into(),
                    s(kib),
                ],
            )?;
            let mut cmd = vec![
                "--comm".into(),
                comm,
                "job-worker".into(),
                "--dir".into(),
                s(jobs_dir.display()),
                "--jobs".into(),
                s(jobs),
            ];
            cmd.extend(over_arg(over, rate, jobs));
            json!({ "mode": "job-worker", "files": made, "report": run_generator(root, &cmd)? })
        }
        LoadMode::SyncWorker {
            comm,
            mib,
            page_size,
            over,
            rate,
        } => {
            let source = dir.join(format!("source-{mib}m"));
            let output = dir.join("sync-output");
            let made = make_file(root, &source, mib)?;
            let pages = (mib << 20).div_ceil(page_size.max(1) as u64);
            let mut cmd = vec![
                "--comm".into(),
                comm,
                "sync-worker".into(),
                "--source".into(),
                s(source.display()),
                "--output".into(),
                s(output.display()),
                "--page-size".into(),
                s(page_size),
            ];
            cmd.extend(over_arg(over, rate, pages));
            let report = run_generator(root, &cmd)?;
            let _ = fs::remove_file(&output);
            json!({ "mode": "sync-worker", "source": made, "report": report })
        }
        LoadMode::Pressure {
            comm,
            limit_mib,
            file_mib,
            passes,
        } => pressure(root, dir, &comm, limit_mib, file_mib, passes)?,
        LoadMode::Raw { args } => run_generator(root, &args)?,
    };
    println!("{report}");
    Ok(())
}

fn make_file(root: &Path, path: &Path, mib: u64) -> Result<Value> {
    run_generator(
        root,
        &[
            "make-file".into(),
            "--file".into(),
            s(path.display()),
            "--mib".into(),
            s(mib),
        ],
    )
}

fn pressure(
    root: &Path,
    dir: &Path,
    comm: &str,
    limit_mib: u64,
    file_mib: u64,
    passes: u32,
) -> Result<Value> {
    if file_mib <= limit_mib {
        bail!("--file-mib ({file_mib}) must be larger than --limit-mib ({limit_mib})");
    }
    let file = dir.join(format!("pressure-{file_mib}m"));
    let made = make_file(root, &file, file_mib)?;
    let cgroup = sidecar_testkit::cgroup::MemoryCgroup::create(
        &format!("xtask-pressure-{}", std::process::id()),
        limit_mib << 20,
    )?;
    let before = sidecar_testkit::procfs::vmstat()?;
    let mut reader = Command::new(sidecar_load(root)?);
    reader
        .args(["--comm", comm, "read", "--file"])
        .arg(&file)
        .args(["--passes", &passes.to_string()]);
    cgroup.enter(&mut reader)?;
    let report = run_report(&mut reader)?;
    let after = sidecar_testkit::procfs::vmstat()?;
    let delta: serde_json::Map<String, Value> = after
        .iter()
        .filter(|(key, _)| key.starts_with("pgscan_") || key.starts_with("pgsteal_"))
        .filter_map(|(key, value)| {
            let old = before.get(key).copied().unwrap_or(0);
            (*value > old).then(|| (key.clone(), json!(value - old)))
        })
        .collect();
    let result = json!({
        "mode": "pressure",
        "cgroup": cgroup.path().display().to_string(),
        "cgroup_version": cgroup.hierarchy().version(),
        "limit_bytes": limit_mib << 20,
        "file": made,
        "cgroup_stat": cgroup.stat(),
        "vmstat_delta_host": delta,
        "report": report,
    });
    drop(cgroup);
    Ok(result)
}
