//! The bench's HTTP client for /metrics and the health endpoints.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

pub(super) fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, dechunk(&body, &text)))
}

/// Undoes chunked transfer encoding when the response used it.
pub(super) fn dechunk(body: &str, whole: &str) -> String {
    let head = whole.split("\r\n\r\n").next().unwrap_or_default();
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of one sample line of a Prometheus text exposition (`name{labels}` exactly).
pub(super) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let rest = rest.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Time from connecting to the last byte of the response (the client's parsing is not
/// part of the server's latency), and the status code.
pub(super) fn http_get_timed(addr: &str, path: &str) -> Result<(Duration, u16)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::with_capacity(4 << 20);
    stream.read_to_end(&mut raw)?;
    let elapsed = started.elapsed();
    let status = raw
        .get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok((elapsed, status))
}

pub(super) fn scrape(addr: &str) -> Option<String> {
    http_get(addr, "/metrics").ok().map(|(_, body)| body)
}

pub(super) fn drains_total(text: &str) -> f64 {
    metric(text, "sidecar_drains_total").unwrap_or(0.0)
}
