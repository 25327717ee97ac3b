//! The kernel's BPF run-time statistics as the sidecar exports them (figure 5).

use super::http::metric;

/// Program run time and runs from /metrics, summed over `programs`.
pub(super) fn bpf_stats(text: &str, programs: &[&str]) -> (f64, f64) {
    programs.iter().fold((0.0, 0.0), |(secs, runs), p| {
        (
            secs + metric(
                text,
                &format!("sidecar_bpf_program_run_seconds_total{{program=\"{p}\"}}"),
            )
            .unwrap_or(0.0),
            runs + metric(
                text,
                &format!("sidecar_bpf_program_runs_total{{program=\"{p}\"}}"),
            )
            .unwrap_or(0.0),
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
