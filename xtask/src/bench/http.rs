//! The bench's HTTP client for /metrics and the health endpoints: the test kit's getter.

use std::time::Duration;

use anyhow::{Context as _, Result};
use sidecar_testkit::{http, prometheus::Metrics};

pub(super) fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let response = http::get(addr, path, &[]).with_context(|| format!("GET {path} from {addr}"))?;
    Ok((response.status, response.body))
}

/// Time from connecting to the last byte of the response (the client's parsing is not
/// part of the server's latency), and the status code.
pub(super) fn http_get_timed(addr: &str, path: &str) -> Result<(Duration, u16)> {
    let response = http::get(addr, path, &[]).with_context(|| format!("GET {path} from {addr}"))?;
    Ok((response.elapsed, response.status))
}

pub(super) fn scrape(addr: &str) -> Option<String> {
    http_get(addr, "/metrics").ok().map(|(_, body)| body)
}

pub(super) fn metrics(addr: &str) -> Option<Metrics> {
    scrape(addr).map(|text| Metrics::parse(&text))
}

pub(super) fn drains_total(metrics: &Metrics) -> f64 {
    metrics.value("sidecar_drains_total", &[])
}
