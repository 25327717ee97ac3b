//! `sidecar query`: the gRPC API from the command line, as tables or as proto JSON.

use std::{fmt::Write as _, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::{
    api::{
        FILE_DESCRIPTOR_SET,
        pb::{self, sidecar_service_client::SidecarServiceClient},
    },
    cli::{QueryArgs, QueryCommand},
};

pub fn query(args: QueryArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sidecar query: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sidecar query: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: QueryArgs) -> Result<()> {
    let scheme = if args.ca.is_some() { "https" } else { "http" };
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", args.addr.0))
            .context("bad address")?
            .connect_timeout(Duration::from_secs(5));
    if let Some(ca) = &args.ca {
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?))
            .domain_name(args.server_name.clone());
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ));
        }
        endpoint = endpoint.tls_config(tls).context("TLS settings")?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.addr.0))?;
    let authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = match &args
        .token_file
    {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read token file {}", path.display()))?;
            let value = format!("Bearer {}", token.trim())
                .parse()
                .with_context(|| format!("token file {}: not a valid header", path.display()))?;
            Some(value)
        }
        None => None,
    };
    let mut client =
        SidecarServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            if let Some(value) = &authorization {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
            }
            Ok(request)
        })
        .max_decoding_message_size(crate::grpc::MAX_ENCODING_MESSAGE_SIZE);
    let timeout = args.timeout.map(|t| t.0);
    let printer = Printer::new(args.json)?;
    match args.command {
        QueryCommand::Status => {
            let status = client
                .get_status(with_timeout(pb::GetStatusRequest {}, timeout))
                .await?
                .into_inner();
            printer.print(&status, "sidecar.v1.GetStatusResponse", status_table)?;
        }
        QueryCommand::Metrics {
            module,
            metric,
            workload,
            page_size,
        } => {
            let mut metrics = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .get_metrics(with_timeout(
                        pb::GetMetricsRequest {
                            modules: module.clone(),
                            metric_names: metric.clone(),
                            workloads: workload.clone(),
                            page_size,
                            page_token: page_token.clone(),
                        },
                        timeout,
                    ))
                    .await?
                    .into_inner();
                metrics.extend(page.metrics);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            let all = pb::GetMetricsResponse {
                total_size: u32::try_from(metrics.len()).unwrap_or(u32::MAX),
                metrics,
                next_page_token: String::new(),
                collected_at: None,
            };
            printer.print(&all, "sidecar.v1.GetMetricsResponse", metrics_table)?;
        }
        QueryCommand::Iostats { workload, window } => {
            let response = client
                .get_io_stats(with_timeout(
                    pb::GetIoStatsRequest {
                        workloads: workload,
                        window: window.unwrap_or_default(),
                    },
                    timeout,
                ))
                .await?
                .into_inner();
            printer.print(&response, "sidecar.v1.GetIOStatsResponse", |r| {
                r.stats.as_ref().map(iostats_table).unwrap_or_default()
            })?;
        }
        QueryCommand::Watch { workload, count } => {
            let mut stream = client
                .watch_io_stats(with_timeout(
                    pb::WatchIoStatsRequest {
                        workloads: workload,
                    },
                    timeout,
                ))
                .await?
                .into_inner();
            let mut received = 0u64;
            while let Some(message) = stream.message().await? {
                printer.print(&message, "sidecar.v1.WatchIOStatsResponse", |m| {
                    let mut text = format!("drain {} (missed {})\n", m.sequence, m.missed);
                    text.push_str(&m.stats.as_ref().map(iostats_table).unwrap_or_default());
                    text
                })?;
                received += 1;
                if count.is_some_and(|count| received >= count) {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn with_timeout<T>(message: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
}

/// Prints a response as a table, or as canonical proto JSON (one object per line).
struct Printer {
    json: Option<DescriptorPool>,
}

impl Printer {
    fn new(json: bool) -> Result<Printer> {
        let json = if json {
            Some(DescriptorPool::decode(FILE_DESCRIPTOR_SET).context("decoding descriptors")?)
        } else {
            None
        };
        Ok(Printer { json })
    }

    fn print<M: prost::Message>(
        &self,
        message: &M,
        full_name: &str,
        table: impl Fn(&M) -> String,
    ) -> Result<()> {
        match &self.json {
            Some(pool) => {
                let descriptor = pool
                    .get_message_by_name(full_name)
                    .with_context(|| format!("no descriptor for {full_name}"))?;
                let dynamic =
                    DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())?;
                println!("{}", serde_json::to_string(&dynamic)?);
            }
            None => print!("{}", table(message)),
        }
        Ok(())
    }
}

fn fmt_duration(value: Option<&prost_types::Duration>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |d| {
            let d = Duration::new(
                u64::try_from(d.seconds).unwrap_or(0),
                u32::try_from(d.nanos).unwrap_or(0),
            );
            if d < Duration::from_secs(1) {
                format!("{:.3}ms", d.as_secs_f64() * 1e3)
            } else {
                humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
            }
        },
    )
}

fn fmt_time(value: Option<&prost_types::Timestamp>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |t| {
            let time = std::time::UNIX_EPOCH
                + Duration::new(
                    u64::try_from(t.seconds).unwrap_or(0),
                    u32::try_from(t.nanos).unwrap_or(0),
                );
            humantime::format_rfc3339_millis(time).to_string()
        },
    )
}

fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn status_table(status: &pb::GetStatusResponse) -> String {
    let mut out = String::new();
    let overflow = status.overflow.unwrap_or_default();
    let rows = [
        ("version", status.version.clone()),
        ("kernel", status.kernel_release.clone()),
        ("btf", yes_no(status.btf_available).to_owned()),
        ("tracefs", status.tracefs.clone()),
        ("ready", yes_no(status.ready).to_owned()),
        ("uptime", fmt_duration(status.uptime.as_ref())),
        ("interval", fmt_duration(status.interval.as_ref())),
        ("drains", status.drains.to_string()),
        ("last drain", fmt_time(status.last_drain_at.as_ref())),
        (
            "last drain took",
            fmt_duration(status.last_drain_duration.as_ref()),
        ),
        ("tracked processes", status.tracked_processes.to_string()),
        ("kernel map memory", fmt_bytes(status.kernel_map_bytes)),
        (
            "overflow",
            format!(
                "fadvise {}, page_cache {}, reclaim {}, processes {}, io {}, memcg {}",
                overflow.fadvise,
                overflow.page_cache,
                overflow.reclaim,
                overflow.processes,
                overflow.io,
                overflow.memcg
            ),
        ),
        ("retained drains", status.retained_intervals.to_string()),
        (
            "history",
            format!(
                "{} intervals, {}",
                status.history_intervals,
                fmt_bytes(status.history_bytes)
            ),
        ),
    ];
    for (key, value) in rows {
        let _ = writeln!(out, "{key:<19} {value}");
    }
    let _ = writeln!(out, "\n{:<14} {:<12} HOOK OR ERROR", "MODULE", "STATE");
    for module in status.modules.iter().chain(status.process_tracking.iter()) {
        let detail = if module.error.is_empty() {
            &module.hook
        } else {
            &module.error
        };
        let _ = writeln!(out, "{:<14} {:<12} {detail}", module.name, module.state);
    }
    if !status.exporters.is_empty() {
        let _ = writeln!(out, "\n{:<14} {:<12} LAST ERROR", "EXPORTER", "STATE");
        for exporter in &status.exporters {
            let error = if exporter.last_error.is_empty() {
                String::new()
            } else {
                let at = format!("at {} ", fmt_time(exporter.last_error_at.as_ref()));
                let past = if exporter.last_error_past {
                    "(past, writes succeed since) "
                } else {
                    ""
                };
                format!("{at}{past}{}", exporter.last_error)
            };
            let _ = writeln!(
                out,
                "{:<14} {:<12} {}",
                exporter.name, exporter.state, error
            );
        }
    }
    out
}

const fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

fn metrics_table(response: &pb::GetMetricsResponse) -> String {
    let mut out = String::new();
    for metric in &response.metrics {
        let labels: Vec<String> = metric
            .labels
            .iter()
            .map(|l| format!("{}=\"{}\"", l.name, l.value))
            .collect();
        let series = if labels.is_empty() {
            metric.name.clone()
        } else {
            format!("{}{{{}}}", metric.name, labels.join(","))
        };
        let value = match &metric.value {
            Some(pb::metric::Value::Number(v)) => format!("{v}"),
            Some(pb::metric::Value::Histogram(h)) => {
                format!("count={} sum={:.6}s", h.count, h.sum)
            }
            None => "-".to_owned(),
        };
        let _ = writeln!(out, "{series:<70} {value}");
    }
    out
}

fn iostats_table(stats: &pb::IoStats) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} .. {} ({} intervals)",
        fmt_time(stats.start.as_ref()),
        fmt_time(stats.end.as_ref()),
        stats.intervals
    );
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>10} {:>11} {:>10} {:>7} {:>10} {:>10} {:>10} {:>9} {:>13}",
        "WORKLOAD",
        "FADV CALLS",
        "FADV OK",
        "READ PAGES",
        "MISSES",
        "HIT %",
        "ADDS",
        "EVICTED",
        // Reclaim episodes: direct reclaim and memory-cgroup reclaim the workload stalled
        // in (the vmscan module), apart from the memcg module's tables below.
        "DIRECT RCL",
        "MEMCG RCL",
        "MEMCG RCL p99"
    );
    for workload in &stats.workloads {
        let calls: u64 = workload.fadvise.iter().map(|f| f.calls).sum();
        let ok: u64 = workload.fadvise.iter().map(|f| f.successes).sum();
        let pc = workload.page_cache.unwrap_or_default();
        let direct = workload.direct_reclaim.unwrap_or_default();
        let memcg = workload.memcg_reclaim.unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>10} {:>11} {:>10} {:>7} {:>10} {:>10} {:>10} {:>9} {:>13}",
            workload.workload,
            calls,
            ok,
            pc.read_attempts,
            pc.misses,
            pc.hit_ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{:.1}", r * 100.0)),
            pc.adds,
            pc.evictions,
            direct.episodes,
            memcg.episodes,
            fmt_latency(memcg.p99_seconds),
        );
    }
    if let Some(host) = &stats.host {
        let _ = writeln!(
            out,
            "host: LRU scanned {}, reclaimed {}, efficiency {}, kswapd wakeups {}, in direct reclaim {}",
            host.lru_pages_scanned,
            host.lru_pages_reclaimed,
            host.efficiency_percent
                .map_or_else(|| "-".to_owned(), |e| format!("{e:.1}%")),
            host.kswapd_wakeups,
            host.direct_reclaim_in_progress
        );
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:>10} {:>12} {:>10} {:>8} {:>10} {:>13} {:>12}",
        "WORKLOAD",
        "READS",
        "READ BYTES",
        "READ p99",
        "FSYNCS",
        "FSYNC p99",
        "DIRTIED PAGES",
        "WRITTEN BACK"
    );
    for workload in &stats.workloads {
        let io = workload.io.unwrap_or_default();
        let read = io.read.unwrap_or_default();
        let fsync = io.fsync.unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>12} {:>10} {:>8} {:>10} {:>13} {:>12}",
            workload.workload,
            read.calls,
            fmt_bytes(io.read_bytes),
            fmt_latency(read.p99_seconds),
            fsync.calls,
            fmt_latency(fsync.p99_seconds),
            io.dirtied_pages,
            io.written_back_pages,
        );
    }
    // The first table's ADDS and EVICTED are by the running process; these are by the
    // memory cgroup that owns the page, beside the refaults of the running processes.
    let _ = writeln!(
        out,
        "\npages by owner (OWNED: charged to the workload's memory cgroups, whoever ran) and refaults by running process"
    );
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>15} {:>19} {:>19} {:>13} {:>13}",
        "WORKLOAD",
        "OWNED ADDS",
        "OWNED EVICTIONS",
        "OWNED FILE REFAULTS",
        "OWNED ANON REFAULTS",
        "FILE REFAULTS",
        "ANON REFAULTS"
    );
    for workload in &stats.workloads {
        let memcg = workload.memcg.unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>15} {:>19} {:>19} {:>13} {:>13}",
            workload.workload,
            memcg.owned_adds,
            memcg.owned_evictions,
            memcg.owned_file_refaults,
            memcg.owned_anon_refaults,
            memcg.file_refaults,
            memcg.anon_refaults,
        );
    }
    out
}

/// A latency, `-` when there was nothing to time. Reads served from the page cache take
/// microseconds, which milliseconds would round to nothing.
fn fmt_latency(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s < 1e-3 => format!("{:.1}µs", s * 1e6),
        Some(s) => format!("{:.3}ms", s * 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iostats_table_shows_file_io_per_workload() {
        let latency = |calls, p99_seconds| pb::LatencyStats {
            calls,
            p99_seconds,
            ..pb::LatencyStats::default()
        };
        let stats = pb::IoStats {
            workloads: vec![pb::WorkloadIoStats {
                workload: "db".to_owned(),
                io: Some(pb::FileIoStats {
                    read: Some(latency(1000, Some(2.048e-6))),
                    read_bytes: 4 << 20,
                    fsync: Some(latency(0, None)),
                    dirtied_pages: 256,
                    written_back_pages: 255,
                }),
                ..pb::WorkloadIoStats::default()
            }],
            ..pb::IoStats::default()
        };
        let table = iostats_table(&stats);
        let row = table
            .lines()
            .filter(|line| line.starts_with("db "))
            .nth(1)
            .expect("a file I/O row for db");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["db", "1000", "4.0", "MiB", "2.0µs", "0", "-", "256", "255"]
        );
        assert_eq!(fmt_latency(Some(0.0015)), "1.500ms");
    }

    #[test]
    fn iostats_table_shows_page_cache_by_owner_per_workload() {
        // `batch`'s pages evicted by `api`'s reclaim: by owner on `batch`, which refaulted
        // some of them back in.
        let stats = pb::IoStats {
            workloads: vec![
                pb::WorkloadIoStats {
                    workload: "batch".to_owned(),
                    memcg: Some(pb::MemcgStats {
                        file_refaults: 900,
                        anon_refaults: 3,
                        owned_adds: 8192,
                        owned_evictions: 3840,
                        owned_file_refaults: 1000,
                        owned_anon_refaults: 4,
                    }),
                    ..pb::WorkloadIoStats::default()
                },
                // A server older than the memcg message sends none: zeros, as for io.
                pb::WorkloadIoStats {
                    workload: "api".to_owned(),
                    ..pb::WorkloadIoStats::default()
                },
            ],
            ..pb::IoStats::default()
        };
        let table = iostats_table(&stats);
        let rows = |name: &str| -> Vec<Vec<String>> {
            table
                .lines()
                .filter(|line| line.starts_with(&format!("{name} ")))
                .map(|line| line.split_whitespace().map(str::to_owned).collect())
                .collect()
        };
        assert_eq!(
            rows("batch")[2],
            ["batch", "8192", "3840", "1000", "4", "900", "3"]
        );
        assert_eq!(rows("api")[2], ["api", "0", "0", "0", "0", "0", "0"]);
        let header = table
            .lines()
            .find(|line| line.contains("OWNED ADDS"))
            .expect("a page cache by owner header");
        // Right-aligned under their headers.
        let row = table
            .lines()
            .filter(|line| line.starts_with("batch "))
            .nth(2)
            .expect("a page cache by owner row for batch");
        assert_eq!(header.len(), row.len(), "{header}\n{row}");
    }
}
