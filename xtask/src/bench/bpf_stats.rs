//! The kernel's BPF run-time statistics as the sidecar exports them (figure 5).

use sidecar_testkit::prometheus::Metrics;

/// Program run time and runs from /metrics, summed over `programs`.
pub(super) fn bpf_stats(metrics: &Metrics, programs: &[&str]) -> (f64, f64) {
    programs.iter().fold((0.0, 0.0), |(secs, runs), p| {
        let program = [("program", *p)];
        (
            secs + metrics.value("sidecar_bpf_program_run_seconds_total", &program),
            runs + metrics.value("sidecar_bpf_program_runs_total", &program),
        )
    })
}

pub(super) fn self_programs(op: &str) -> &'static [&'static str] {
    if op == "fadvise" {
        &["fadvise_enter", "fadvise_exit"]
    } else {
        &[
            "filemap_get_pages_sized",
            "filemap_get_pages",
            "filemap_add",
            "filemap_delete",
        ]
    }
}
