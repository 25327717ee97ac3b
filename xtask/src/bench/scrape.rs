//! Figure 3: /metrics and gRPC latency against the number of workloads.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{
    http::{http_get_timed, scrape},
    setups::{Env, GRPC_ADDR, METRICS_ADDR, sidecar_config, start_sidecar, stop_setup},
    stats::{Stats, quantile, stats},
};

pub(super) struct ScrapePoint {
    pub(super) workloads: usize,
    pub(super) metrics_bytes: usize,
    pub(super) series: usize,
    pub(super) http: Stats,
    pub(super) http_p99: f64,
    /// The first scrape, which renders the store's families (later ones find them rendered).
    pub(super) http_first: f64,
    /// `GetMetrics`, every page, over a kept-open channel.
    pub(super) grpc: Stats,
    pub(super) grpc_p99: f64,
    pub(super) grpc_metrics: u64,
    /// One `GetMetrics` call at the default page size (500).
    pub(super) page: Stats,
    pub(super) page_p99: f64,
    /// `GetStatus` on the same channel: the fixed cost of one RPC.
    pub(super) status: Stats,
    /// At the target's size: a poller's one-page calls (every 100 ms for 30 s, so about one
    /// call in ten is the first after a drain), p50 and p99; the bench's own pattern above
    /// lists every page before each one-page call, which pays for the listing itself.
    pub(super) poller: Option<(f64, f64)>,
}

/// Workloads at which the poller runs: the size of the p99 target.
const POLLER_WORKLOADS: usize = 1_000;

/// The bench's gRPC client, `sidecar/examples/grpc_latency.rs`: it needs the generated
/// client of the `sidecar` crate, which xtask cannot depend on (the crate's build script
/// needs the eBPF object that xtask builds).
pub(super) fn grpc_latency_client(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "sidecar",
            "--example",
            "grpc_latency",
        ])
        .status()
        .context("building the grpc_latency example")?;
    if !status.success() {
        bail!("building the grpc_latency example failed");
    }
    crate::load::release_binary(root, "examples/grpc_latency")
}

pub(super) fn scrape_and_query(
    env: &mut Env,
    sizes: &[usize],
    requests: usize,
) -> Result<Vec<ScrapePoint>> {
    let mut points = Vec::new();
    let load = crate::load::sidecar_load(&env.root)?;
    let grpc_client = grpc_latency_client(&env.root)?;
    for &w in sizes {
        let config = sidecar_config(env, &format!("scrape-{w}"), "1s", 8192, w)?;
        let running = start_sidecar(env, &config)?;
        // One process per workload, so that every workload has series to show.
        for i in 0..w {
            let _ = Command::new(&load)
                .args(["--comm", &format!("bw{i}"), "fadvise", "--calls", "1"])
                .stdout(Stdio::null())
                .status()?;
        }
        std::thread::sleep(Duration::from_millis(2500));
        // The first scrape in a format renders the store's families itself; later ones
        // find them rendered at the drain (metrics::ExpositionCache).
        let (first, _) = http_get_timed(METRICS_ADDR, "/metrics")?;
        let body = scrape(METRICS_ADDR).unwrap_or_default();
        let mut http = Vec::new();
        for _ in 0..requests {
            let (elapsed, status) = http_get_timed(METRICS_ADDR, "/metrics")?;
            http.push(elapsed.as_secs_f64() * 1e3);
            if status != 200 {
                bail!("/metrics answered {status}");
            }
        }
        let output = Command::new(&grpc_client)
            .args([GRPC_ADDR, &(requests / 2).max(10).to_string()])
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", grpc_client.display()))?;
        if !output.status.success() {
            bail!("{} failed", grpc_client.display());
        }
        let timings: Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("{} printed no JSON", grpc_client.display()))?;
        let millis = |key: &str| -> Vec<f64> {
            timings[key]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        let (grpc, base) = (millis("get_metrics_ms"), millis("get_status_ms"));
        let page = millis("first_page_ms");
        let poller = if w == POLLER_WORKLOADS {
            let output = Command::new(&grpc_client)
                .args([GRPC_ADDR, "300", "500", "100"])
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("running {} as a poller", grpc_client.display()))?;
            let timings: Value = serde_json::from_slice(&output.stdout)
                .with_context(|| format!("{} printed no JSON", grpc_client.display()))?;
            let mut calls: Vec<f64> = timings["first_page_ms"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            calls.sort_by(f64::total_cmp);
            Some((quantile(&calls, 0.5), quantile(&calls, 0.99)))
        } else {
            None
        };
        stop_setup(running);
        let sorted = |v: &[f64]| {
            let mut s = v.to_vec();
            s.sort_by(f64::total_cmp);
            s
        };
        let point = ScrapePoint {
            workloads: w,
            metrics_bytes: body.len(),
            series: body.lines().filter(|l| !l.starts_with('#')).count(),
            http: stats(&http),
            http_p99: quantile(&sorted(&http), 0.99),
            http_first: first.as_secs_f64() * 1e3,
            grpc: stats(&grpc),
            grpc_p99: quantile(&sorted(&grpc), 0.99),
            grpc_metrics: timings["metrics"].as_u64().unwrap_or(0),
            page: stats(&page),
            page_p99: quantile(&sorted(&page), 0.99),
            status: stats(&base),
            poller,
        };
        env.note(&format!(
            "scrape {w} workloads: /metrics p50 {:.2} ms p99 {:.2} ms; GetMetrics ({} metrics) p50 {:.2} ms p99 {:.2} ms; GetStatus p50 {:.2} ms",
            point.http.median, point.http_p99, point.grpc_metrics, point.grpc.median, point.grpc_p99, point.status.median
        ));
        points.push(point);
    }
    Ok(points)
}
