//! Figure 1: the time each setup adds to one fadvise or pread call.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    bpf_stats::{bpf_stats, self_programs},
    http::{drains_total, metrics},
    setups::{Env, METRICS_ADDR, Modules, Setup, sidecar_config_with, start_setup, stop_setup},
    stats::stats,
};

pub(super) const OPS: [&str; 2] = ["fadvise", "pread"];

#[derive(Default)]
pub(super) struct Overhead {
    pub(super) setups: Vec<Setup>,
    /// [op][setup] -> ns per call of each round (the median of the round's batches).
    pub(super) rounds: Vec<Vec<Vec<f64>>>,
    /// [op][setup] -> added ns per call of each round (minus the same round's no-tracing).
    pub(super) added: Vec<Vec<Vec<f64>>>,
    /// Self-reported kernel run time per call, per round: [op] -> ns.
    pub(super) self_reported: Vec<Vec<f64>>,
    /// Program runs per call during the loop: [op] -> runs.
    pub(super) runs_per_call: Vec<Vec<f64>>,
    pub(super) skipped: Vec<(Setup, String)>,
    pub(super) rounds_done: usize,
}

pub(super) fn run_loop(env: &Env, op: &str, iters: u64, file: &Path) -> Result<f64> {
    let output = Command::new(&env.xtask)
        .args([
            "bench-loop",
            "--op",
            op,
            "--iters",
            &iters.to_string(),
            "--file",
        ])
        .arg(file)
        .stderr(Stdio::inherit())
        .output()
        .context("running the timing loop")?;
    if !output.status.success() {
        bail!("timing loop failed ({})", output.status);
    }
    let batches: Vec<f64> = serde_json::from_slice(&output.stdout)?;
    // The fastest batch: preemption by other work on the machine only ever adds time.
    Ok(stats(&batches).min)
}

pub(super) fn overhead(
    env: &mut Env,
    rounds: usize,
    iters: u64,
    with_others: bool,
) -> Result<Overhead> {
    let file = env.work.join("overhead-file");
    fs::write(&file, vec![0x5au8; 64 << 10])?;
    let config = sidecar_config_with(
        env,
        "overhead",
        "1s",
        8192,
        0,
        Modules::ComparedWithBpftrace,
    )?;
    let mut setups = vec![Setup::None, Setup::Floor, Setup::Sidecar];
    let mut out = Overhead::default();
    if env.bpftrace.is_none() {
        out.skipped
            .push((Setup::Floor, "bpftrace is not installed".into()));
        setups.retain(|s| *s != Setup::Floor);
    }
    if with_others {
        setups.push(Setup::SidecarStats);
        if env.bpftrace.is_some() {
            setups.push(Setup::Bpftrace);
        } else {
            out.skipped
                .push((Setup::Bpftrace, "bpftrace is not installed".into()));
        }
        match &env.cachestat {
            Ok(_) => setups.push(Setup::Cachestat),
            Err(reason) => out.skipped.push((Setup::Cachestat, reason.clone())),
        }
    }
    out.rounds = vec![vec![Vec::new(); setups.len()]; OPS.len()];
    out.added = vec![vec![Vec::new(); setups.len()]; OPS.len()];
    out.self_reported = vec![Vec::new(); OPS.len()];
    out.runs_per_call = vec![Vec::new(); OPS.len()];
    for round in 0..rounds {
        for (si, &setup) in setups.iter().enumerate() {
            let running = match start_setup(env, setup, &config) {
                Ok(running) => running,
                Err(err) => {
                    env.note(&format!("round {round}: {}: {err:#}", setup.label()));
                    continue;
                }
            };
            // Let start-up work (the first drains, bpftrace's own threads) settle.
            std::thread::sleep(Duration::from_millis(1000));
            for (oi, op) in OPS.iter().enumerate() {
                let before = (setup == Setup::SidecarStats)
                    .then(|| metrics(METRICS_ADDR))
                    .flatten();
                let ns = run_loop(env, op, iters, &file);
                if let (Some(before), Ok(_)) = (&before, &ns) {
                    // The sidecar reads the kernel's program statistics at each drain: wait
                    // for the first drain after the loop, so that the window covers it.
                    // Drains during the loop do not count: wait for one after its end.
                    let count =
                        metrics(METRICS_ADDR).map_or(drains_total(before), |m| drains_total(&m));
                    let deadline = Instant::now() + Duration::from_secs(5);
                    let mut after = metrics(METRICS_ADDR);
                    while after.as_ref().is_none_or(|m| drains_total(m) <= count)
                        && Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(50));
                        after = metrics(METRICS_ADDR);
                    }
                    if let Some(after) = after {
                        let (s0, r0) = bpf_stats(before, self_programs(op));
                        let (s1, r1) = bpf_stats(&after, self_programs(op));
                        let calls = 5.0 * iters as f64;
                        // ns per run (the loop's runs dominate the window) times the runs
                        // one call makes: enter + exit for fadvise, get_pages for pread.
                        let runs_per_call = if *op == "fadvise" { 2.0 } else { 1.0 };
                        if r1 > r0 {
                            out.self_reported[oi].push((s1 - s0) * 1e9 / (r1 - r0) * runs_per_call);
                        }
                        out.runs_per_call[oi].push((r1 - r0) / calls);
                    }
                }
                match ns {
                    Ok(ns) => out.rounds[oi][si].push(ns),
                    Err(err) => env.note(&format!("{op} under {}: {err:#}", setup.label())),
                }
            }
            if let Some(running) = running {
                stop_setup(running);
            }
        }
        // Added cost per round, against the same round's untraced run.
        for oi in 0..OPS.len() {
            if let Some(&base) = out.rounds[oi][0].get(round) {
                for si in 1..setups.len() {
                    if let Some(&v) = out.rounds[oi][si].get(round) {
                        out.added[oi][si].push(v - base);
                    }
                }
            }
        }
        out.rounds_done = round + 1;
        let line: Vec<String> = OPS
            .iter()
            .enumerate()
            .map(|(oi, op)| {
                let vals: Vec<String> = out.rounds[oi]
                    .iter()
                    .map(|v| v.last().map_or("-".into(), |x| format!("{x:.0}")))
                    .collect();
                format!("{op} {}", vals.join("/"))
            })
            .collect();
        env.note(&format!(
            "overhead round {}: ns per call {}",
            round + 1,
            line.join("; ")
        ));
    }
    out.setups = setups;
    Ok(out)
}

/// (c - a) / (b - a) and (c - a) / (d - a) from the medians of the per-round added costs.
pub(super) fn ratio(o: &Overhead, oi: usize, num: Setup, den: Setup) -> Option<f64> {
    let idx = |s: Setup| o.setups.iter().position(|x| *x == s);
    let n = stats(&o.added[oi][idx(num)?]).median;
    let d = stats(&o.added[oi][idx(den)?]).median;
    (d > 0.0 && n.is_finite()).then_some(n / d)
}
