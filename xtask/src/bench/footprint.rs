//! Figure 4: the daemon's RSS and CPU, idle and under load.

use std::{
    fs,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::{
    http::metrics,
    procfs::{clock_ticks, proc_cpu_ticks},
    setups::{Env, METRICS_ADDR, sidecar_config, start_sidecar, stop_setup},
};
use crate::load::run_generator;
use sidecar_testkit::procfs::rss_kib;

pub(super) struct Footprint {
    pub(super) idle_secs: f64,
    pub(super) idle_rss_kib: u64,
    pub(super) idle_cpu_pct: f64,
    pub(super) load_secs: f64,
    pub(super) load_rss_kib: u64,
    pub(super) load_cpu_pct: f64,
    pub(super) load_report: Vec<Value>,
    pub(super) map_bytes: f64,
    pub(super) max_tracked: u64,
    pub(super) cpus: usize,
}

pub(super) fn footprint(env: &mut Env, idle: Duration, load: Duration) -> Result<Footprint> {
    let max_tracked = 8192;
    let config = sidecar_config(env, "footprint", "1s", max_tracked, 2)?;
    let running = start_sidecar(env, &config)?;
    let pid = running.child.id();
    std::thread::sleep(Duration::from_secs(2));
    let ticks = clock_ticks();
    let measure =
        |f: &mut dyn FnMut() -> Result<Vec<Value>>| -> Result<(f64, u64, f64, Vec<Value>)> {
            let c0 = proc_cpu_ticks(pid, None).context("reading the sidecar's CPU time")?;
            let t0 = Instant::now();
            let reports = f()?;
            let secs = t0.elapsed().as_secs_f64();
            let c1 = proc_cpu_ticks(pid, None).context("reading the sidecar's CPU time")?;
            let rss = rss_kib(pid).unwrap_or(0);
            Ok((secs, rss, (c1 - c0) as f64 / ticks / secs * 100.0, reports))
        };
    let (idle_secs, idle_rss_kib, idle_cpu_pct, _) = measure(&mut || {
        std::thread::sleep(idle);
        Ok(Vec::new())
    })?;
    let root = env.root.clone();
    let work = env.work.clone();
    let over = format!("{}ms", load.as_millis());
    let (load_secs, load_rss_kib, load_cpu_pct, load_report) = measure(&mut || {
        let jobs = run_generator(
            &root,
            &[
                "make-files".into(),
                "--dir".into(),
                work.join("jobs").display().to_string(),
                "--count".into(),
                "40".into(),
                "--kib".into(),
                "64".into(),
            ],
        )?;
        let source = work.join("sync-source");
        run_generator(
            &root,
            &[
                "make-file".into(),
                "--file".into(),
                source.display().to_string(),
                "--mib".into(),
                "128".into(),
            ],
        )?;
        let _ = jobs;
        let load_bin = crate::load::sidecar_load(&root)?;
        let job = Command::new(&load_bin)
            .args(["--comm", "bw0", "job-worker", "--dir"])
            .arg(work.join("jobs"))
            .args(["--jobs", "4000", "--over", &over])
            .stdout(Stdio::piped())
            .spawn()?;
        let sync = Command::new(&load_bin)
            .args(["--comm", "bw1", "sync-worker", "--source"])
            .arg(&source)
            .arg("--output")
            .arg(work.join("sync-output"))
            .args(["--page-size", "65536", "--over", &over])
            .stdout(Stdio::piped())
            .spawn()?;
        let fadv = Command::new(&load_bin)
            .args([
                "--comm", "bw0", "fadvise", "--calls", "200000", "--over", &over,
            ])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut reports = Vec::new();
        for child in [job, sync, fadv] {
            let out = child.wait_with_output()?;
            reports.push(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null));
        }
        let _ = fs::remove_file(work.join("sync-output"));
        Ok(reports)
    })?;
    let map_bytes = metrics(METRICS_ADDR)
        .and_then(|m| m.find("sidecar_kernel_map_bytes", &[]))
        .unwrap_or(f64::NAN);
    stop_setup(running);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let fp = Footprint {
        idle_secs,
        idle_rss_kib,
        idle_cpu_pct,
        load_secs,
        load_rss_kib,
        load_cpu_pct,
        load_report,
        map_bytes,
        max_tracked,
        cpus,
    };
    env.note(&format!(
        "footprint: idle RSS {} KiB CPU {:.3}%; load RSS {} KiB CPU {:.2}%; maps {} bytes",
        fp.idle_rss_kib, fp.idle_cpu_pct, fp.load_rss_kib, fp.load_cpu_pct, fp.map_bytes
    ));
    Ok(fp)
}
