//! Figure 2: what a drain costs against the keys it drains.

use std::{
    fs,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use sidecar_testkit::prometheus::Metrics;

use super::{
    http::{drains_total, metrics},
    procfs::{thread_cpu_ns, thread_id},
    setups::{Env, METRICS_ADDR, sidecar_config, start_sidecar, stop_setup},
};

pub(super) struct DrainPoint {
    pub(super) target: u64,
    pub(super) interval: String,
    pub(super) entries: f64,
    pub(super) duration_ms: f64,
    pub(super) switch_ms: f64,
    pub(super) cpu_ms: f64,
    pub(super) drains_seen: usize,
}

pub(super) struct Syscalls {
    pub(super) keys: u64,
    pub(super) drains: f64,
    pub(super) per_drain: Vec<(String, f64)>,
}

pub(super) fn drain_cost(
    env: &mut Env,
    keys: &[u64],
) -> Result<(Vec<DrainPoint>, Option<Syscalls>)> {
    let mut points = Vec::new();
    let mut syscalls = None;
    for &n in keys {
        // ~3,600 forks per second here: give the churn one interval to land in.
        let secs = (n as f64 / 2500.0).ceil().max(1.0) as u64 + u64::from(n > 1000);
        let interval = format!("{secs}s");
        let max_tracked = (n * 5 / 4).max(1024).next_power_of_two();
        let config = sidecar_config(env, &format!("drain-{n}"), &interval, max_tracked, 0)?;
        let running = start_sidecar(env, &config)?;
        let pid = running.child.id();
        let tid = thread_id(pid, "sidecar-drain");
        // Wait for a drain boundary, then churn N processes of one call each.
        let mut text = metrics(METRICS_ADDR).unwrap_or_default();
        let start_count = drains_total(&text);
        let deadline = Instant::now() + Duration::from_secs(secs * 3 + 5);
        while drains_total(&text) == start_count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            text = metrics(METRICS_ADDR).unwrap_or_default();
        }
        let churn = churn_command(env, n)?.spawn()?;
        let mut churn = Some(churn);
        let mut best: Option<DrainPoint> = None;
        let mut seen = 0;
        let mut prev = text;
        let mut prev_cpu = tid.and_then(|t| thread_cpu_ns(pid, t));
        let mut after_churn = 0;
        let end = Instant::now() + Duration::from_secs(secs * 4 + 60);
        while Instant::now() < end && after_churn < 2 {
            std::thread::sleep(Duration::from_millis(25));
            if let Some(child) = churn.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                churn = None;
            }
            let Some(now) = metrics(METRICS_ADDR) else {
                continue;
            };
            let (c0, c1) = (drains_total(&prev), drains_total(&now));
            if c1 > c0 {
                let cpu = tid.and_then(|t| thread_cpu_ns(pid, t));
                let sum = |m: &Metrics| m.value("sidecar_drain_duration_seconds_sum", &[]);
                let point = DrainPoint {
                    target: n,
                    interval: interval.clone(),
                    entries: now.value("sidecar_last_drain_entries", &[]),
                    duration_ms: (sum(&now) - sum(&prev)) * 1e3 / (c1 - c0),
                    switch_ms: now.value("sidecar_last_drain_switch_seconds", &[]) * 1e3,
                    cpu_ms: match (prev_cpu, cpu) {
                        (Some(a), Some(b)) => (b - a) as f64 / 1e6 / (c1 - c0),
                        _ => f64::NAN,
                    },
                    drains_seen: 1,
                };
                seen += 1;
                if churn.is_none() {
                    after_churn += 1;
                }
                prev_cpu = cpu;
                if best.as_ref().is_none_or(|b| point.entries > b.entries) {
                    best = Some(point);
                }
                prev = now;
            }
        }
        if let Some(mut child) = churn {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Syscalls per drain: strace on the drain thread alone, across a few drains of the
        // 10,000-key case.
        if n == 10_000
            && let Some(tid) = tid
        {
            match strace_drains(env, pid, tid, n, secs) {
                Ok(s) => syscalls = Some(s),
                Err(err) => env.note(&format!("strace: {err:#}")),
            }
        }
        stop_setup(running);
        if let Some(mut point) = best {
            point.drains_seen = seen;
            env.note(&format!(
                "drain: {n} keys wanted, {} drained at once: {:.2} ms wall, {:.2} ms switch, {:.2} ms CPU",
                point.entries, point.duration_ms, point.switch_ms, point.cpu_ms
            ));
            points.push(point);
        }
    }
    Ok((points, syscalls))
}

/// The steady case: `processes` long-lived processes, each making one fadvise call per
/// second, so every one of them is tracked and counted in every 1 s interval. Measured over
/// whole drains once the fleet has forked and every process has been classified.
pub(super) fn steady_drain(env: &mut Env, processes: u64) -> Result<DrainPoint> {
    let max_tracked = (processes * 5 / 4).max(1024).next_power_of_two();
    let config = sidecar_config(env, "steady", "1s", max_tracked, 0)?;
    let running = start_sidecar(env, &config)?;
    let pid = running.child.id();
    let tid = thread_id(pid, "sidecar-drain").context("no sidecar-drain thread")?;
    let window = Duration::from_secs(20);
    let mut fleet = Command::new(crate::load::sidecar_load(&env.root)?)
        .args(["--comm", "bench-fleet", "fleet", "--processes"])
        .arg(processes.to_string())
        .args(["--every", "1s", "--over", "45s"])
        .stdout(Stdio::null())
        .spawn()?;
    // Forking 10,000 processes takes a few seconds here; then let two drains classify them.
    std::thread::sleep(Duration::from_secs(15));
    let before = metrics(METRICS_ADDR).unwrap_or_default();
    let cpu_before = thread_cpu_ns(pid, tid);
    std::thread::sleep(window);
    let after = metrics(METRICS_ADDR).unwrap_or_default();
    let cpu_after = thread_cpu_ns(pid, tid);
    let _ = fleet.kill();
    let _ = fleet.wait();
    stop_setup(running);
    let drains = drains_total(&after) - drains_total(&before);
    if drains < 1.0 {
        bail!("no drain in {window:?}");
    }
    let sum = |m: &Metrics| m.value("sidecar_drain_duration_seconds_sum", &[]);
    let point = DrainPoint {
        target: processes,
        interval: "1s".into(),
        entries: after.value("sidecar_last_drain_entries", &[]),
        duration_ms: (sum(&after) - sum(&before)) * 1e3 / drains,
        switch_ms: after.value("sidecar_last_drain_switch_seconds", &[]) * 1e3,
        cpu_ms: match (cpu_before, cpu_after) {
            (Some(a), Some(b)) => (b - a) as f64 / 1e6 / drains,
            _ => f64::NAN,
        },
        drains_seen: drains as usize,
    };
    env.note(&format!(
        "steady drain: {processes} live processes, {} keys per drain: {:.2} ms wall, {:.2} ms CPU per drain over {drains} drains",
        point.entries, point.duration_ms, point.cpu_ms
    ));
    Ok(point)
}

/// `n` short-lived processes of one fadvise call each: the drain figure's keys.
pub(super) fn churn_command(env: &Env, n: u64) -> Result<Command> {
    let mut command = Command::new(crate::load::sidecar_load(&env.root)?);
    command
        .args(["--comm", "bench-churn", "churn", "--processes"])
        .arg(n.to_string())
        .args(["--calls-per-process", "1"])
        .stdout(Stdio::null());
    Ok(command)
}

pub(super) fn strace_drains(env: &Env, pid: u32, tid: u32, n: u64, secs: u64) -> Result<Syscalls> {
    let strace = crate::which("strace").context("strace is not installed")?;
    let out = env.work.join("strace.txt");
    let before = metrics(METRICS_ADDR).unwrap_or_default();
    let mut child = Command::new(strace)
        .args(["-c", "-o"])
        .arg(&out)
        .args(["-p", &tid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let churn = churn_command(env, n)?.status()?;
    if !churn.success() {
        bail!("churn failed");
    }
    std::thread::sleep(Duration::from_secs(secs * 2 + 1));
    let _ = sidecar_testkit::process::stop(&mut child, libc::SIGINT, Duration::from_secs(10));
    let after = metrics(METRICS_ADDR).unwrap_or_default();
    let drains = drains_total(&after) - drains_total(&before);
    let text = fs::read_to_string(&out)?;
    let _ = pid;
    let mut per_drain = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors], syscall
        if fields.len() >= 5
            && let Ok(calls) = fields[3].parse::<f64>()
        {
            let name = fields[fields.len() - 1].to_owned();
            if name != "total" {
                per_drain.push((name, calls / drains.max(1.0)));
            } else {
                per_drain.push(("total".into(), calls / drains.max(1.0)));
            }
        }
    }
    Ok(Syscalls {
        keys: n,
        drains,
        per_drain,
    })
}
