//! The gRPC API (`sidecar.v1.SidecarService`), with the standard health and reflection
//! services beside it. Like every sink it reads the store only.

use crate::sync::Recover as _;
use std::{
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    api::pb::{self, sidecar_service_server::SidecarService},
    catalog::{self, CATALOG, Kind},
    config::parse_duration,
    kernel::{ModuleState, modules::Module},
    metrics::{self, Family, Filter, Sample, Value},
    status::Status as DaemonStatus,
    store::{LatencyHistogram, Period, Store},
    workload::WorkloadId,
};

pub const DEFAULT_PAGE_SIZE: u32 = 500;
pub const MAX_PAGE_SIZE: u32 = 10_000;
/// Largest request we accept; requests are small.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 1 << 20;
/// Largest response we send (a full page of histograms fits easily).
pub const MAX_ENCODING_MESSAGE_SIZE: usize = 64 << 20;

pub struct Api {
    store: Arc<RwLock<Store>>,
    status: Arc<DaemonStatus>,
    drains: watch::Receiver<u64>,
    streams: Arc<Semaphore>,
    max_streams: usize,
    interval: Duration,
    /// The last listing built, reused by the requests for the same filters until the next
    /// drain (one listing, so memory stays bounded whatever the clients ask).
    listing: Arc<Mutex<Option<Arc<Listing>>>>,
}

/// One drain's metrics for one set of filters, sorted into the listing's order. The pages of
/// a listing are cut from it while it is the latest drain's: paging through 19,000 metrics
/// collects and sorts them once, not once per page, and every page comes from one drain.
struct Listing {
    drain: u64,
    fingerprint: u64,
    collected_at: SystemTime,
    families: Vec<Family>,
    names: Vec<String>,
    rows: Vec<Row>,
}

impl Api {
    pub fn new(
        store: Arc<RwLock<Store>>,
        status: Arc<DaemonStatus>,
        drains: watch::Receiver<u64>,
        max_streams: usize,
        interval: Duration,
    ) -> Api {
        Api {
            store,
            status,
            drains,
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            interval,
            listing: Arc::default(),
        }
    }

    /// A snapshot of the store: requests never hold the lock the drain takes.
    fn read_store(&self) -> Store {
        crate::store::snapshot(&self.store)
    }

    /// Collects and sorts the metrics `request` selects, from the current drain.
    fn list(&self, request: &pb::GetMetricsRequest, fingerprint: u64) -> Result<Listing, Status> {
        let collected_at = SystemTime::now();
        let (drain, mut families) = {
            let store = self.read_store();
            check_workloads(&store, &request.workloads)?;
            let filter = Filter {
                modules: request.modules.clone(),
                workloads: request.workloads.clone(),
            };
            (
                store.drains(),
                metrics::collect(&store, &self.status, &filter),
            )
        };
        if !request.metric_names.is_empty() {
            families.retain(|family| {
                let name = family.def.exposed_name();
                request.metric_names.iter().any(|p| glob(p, &name))
            });
        }
        let names: Vec<String> = families.iter().map(|f| f.def.exposed_name()).collect();
        let rows = sorted_rows(&families, &names);
        Ok(Listing {
            drain,
            fingerprint,
            collected_at,
            families,
            names,
            rows,
        })
    }
}

fn invalid(field: &str, message: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {message}"))
}

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

fn duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(value.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(value.subsec_nanos()).unwrap_or(0),
    }
}

/// The caller's timeout from the `grpc-timeout` header: `<1 to 8 digits><H|M|S|m|u|n>`, as
/// the gRPC HTTP/2 protocol defines it. A header outside that grammar is INVALID_ARGUMENT.
pub fn grpc_deadline(metadata: &MetadataMap) -> Result<Option<Duration>, Status> {
    let Some(value) = metadata.get("grpc-timeout") else {
        return Ok(None);
    };
    let invalid = || {
        Status::invalid_argument(
            "grpc-timeout: expected 1 to 8 digits and a unit of H, M, S, m, u or n",
        )
    };
    let value = value.to_str().map_err(|_| invalid())?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1).ok_or_else(invalid)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let amount: u64 = digits.parse().map_err(|_| invalid())?;
    Ok(Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(invalid()),
    }))
}

/// When a request's timeout ends; none when it lies beyond what the clock can represent
/// (as good as no deadline).
fn deadline_after(timeout: Option<Duration>) -> Option<tokio::time::Instant> {
    timeout.and_then(|timeout| tokio::time::Instant::now().checked_add(timeout))
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut remaining) = name.strip_prefix(head) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return remaining.ends_with(part);
        }
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Names a metric can be asked for by: the sample name on /metrics.
fn catalog_names() -> impl Iterator<Item = String> {
    CATALOG.iter().map(|def| def.exposed_name())
}

fn check_modules(modules: &[String]) -> Result<(), Status> {
    for (i, module) in modules.iter().enumerate() {
        if !catalog::module_names().any(|known| known == module) {
            return Err(invalid(
                &format!("modules[{i}]"),
                format_args!(
                    "unknown module {module:?}; expected one of {}",
                    catalog::module_names().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn check_workloads(store: &Store, workloads: &[String]) -> Result<Vec<WorkloadId>, Status> {
    let names = store.names();
    workloads
        .iter()
        .enumerate()
        .map(|(i, workload)| {
            names.id(workload).ok_or_else(|| {
                invalid(
                    &format!("workloads[{i}]"),
                    format_args!("unknown workload {workload:?}"),
                )
            })
        })
        .collect()
}

/// A stable 64-bit FNV-1a hash (page tokens must survive across calls, not processes).
fn fnv1a(parts: &[&[String]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for list in parts {
        for item in *list {
            for byte in item.bytes().chain(std::iter::once(0xff)) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash ^= 0xfe;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Page tokens name the last metric returned (keyset pagination): metrics that appear or
/// disappear between pages (rate gauges) cannot shift the others, so every metric present
/// throughout is returned exactly once. The filter fingerprint rejects a token reused with
/// other filters.
fn encode_token(fingerprint: u64, last_key: &str) -> String {
    format!("v1.{fingerprint:016x}.{}", hex(last_key.as_bytes()))
}

fn decode_token(token: &str, fingerprint: u64) -> Result<String, Status> {
    let bad = |why: &str| invalid("page_token", why);
    let mut parts = token.splitn(3, '.');
    let (Some("v1"), Some(print), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("not a token this server issued"));
    };
    if u64::from_str_radix(print, 16).ok() != Some(fingerprint) {
        return Err(bad("issued for other filters"));
    }
    unhex(key)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| bad("not a token this server issued"))
}

fn metric_type(kind: Kind) -> pb::MetricType {
    match kind {
        Kind::Counter => pb::MetricType::Counter,
        Kind::Gauge => pb::MetricType::Gauge,
        Kind::Histogram => pb::MetricType::Histogram,
    }
}

/// One sample of the listing: its sort key (what page tokens carry) and where it is.
struct Row {
    key: String,
    family: usize,
    sample: usize,
}

/// Every sample of `families`, in the listing's order (by name, then sorted labels). Only
/// the keys are built here: a page turns just its own rows into messages.
fn sorted_rows(families: &[Family], names: &[String]) -> Vec<Row> {
    let mut rows = Vec::with_capacity(families.iter().map(|f| f.samples.len()).sum());
    let mut labels: Vec<(&str, &str)> = Vec::new();
    for (family_index, (family, name)) in families.iter().zip(names).enumerate() {
        for (sample_index, sample) in family.samples.iter().enumerate() {
            labels.clear();
            labels.extend(sample.labels.iter().map(|(k, v)| (*k, &**v)));
            labels.sort_unstable();
            let mut key = String::with_capacity(name.len() + 48);
            key.push_str(name);
            for (k, v) in &labels {
                key.push('\u{1f}');
                key.push_str(k);
                key.push('=');
                key.push_str(v);
            }
            rows.push(Row {
                key,
                family: family_index,
                sample: sample_index,
            });
        }
    }
    rows.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    rows
}

fn to_metric(
    family: &Family,
    name: &str,
    sample: &Sample,
    at: prost_types::Timestamp,
) -> pb::Metric {
    let value = match &sample.value {
        Value::Count(v) => Some(pb::metric::Value::Number(*v as f64)),
        Value::Number(v) => Some(pb::metric::Value::Number(*v)),
        Value::Histogram {
            count,
            sum,
            buckets,
        } => {
            let mut cumulative = 0;
            Some(pb::metric::Value::Histogram(pb::Histogram {
                count: *count,
                sum: *sum,
                buckets: buckets
                    .iter()
                    .map(|(upper, n)| {
                        cumulative += n;
                        pb::Bucket {
                            upper_bound: *upper,
                            cumulative_count: cumulative,
                        }
                    })
                    .collect(),
            }))
        }
    };
    pb::Metric {
        name: name.to_owned(),
        r#type: metric_type(family.def.kind) as i32,
        help: family.def.help.to_owned(),
        module: family.def.module.to_owned(),
        labels: sample
            .labels
            .iter()
            .map(|(k, v)| pb::Label {
                name: (*k).to_owned(),
                value: v.to_string(),
            })
            .collect(),
        value,
        collected_at: Some(at),
    }
}

fn reclaim_stats(histogram: &LatencyHistogram) -> pb::ReclaimStats {
    pb::ReclaimStats {
        episodes: histogram.count,
        stalled_seconds: histogram.sum_ns as f64 / 1e9,
        mean_seconds: histogram.mean_seconds(),
        p50_seconds: histogram.quantile_seconds(0.5),
        p99_seconds: histogram.quantile_seconds(0.99),
        max_seconds: histogram.max_seconds(),
    }
}

/// Per-workload statistics of a period, for the selected workloads (all reported ones when
/// `selected` is empty).
pub fn io_stats(store: &Store, period: &Period, selected: &[WorkloadId]) -> pb::IoStats {
    let names = store.names();
    let ids: Vec<WorkloadId> = if selected.is_empty() {
        store.reported_workloads()
    } else {
        selected.to_vec()
    };
    let workloads = ids
        .into_iter()
        .map(|id| {
            let counts = period.workload(id);
            let pc = &counts.page_cache;
            pb::WorkloadIoStats {
                workload: names.name(id).to_owned(),
                fadvise: sidecar_common::Advice::ALL
                    .iter()
                    .map(|advice| {
                        let c = counts.fadvise[*advice as usize];
                        pb::FadviseStats {
                            advice: advice.label().to_owned(),
                            calls: c.calls,
                            successes: c.successes,
                        }
                    })
                    .collect(),
                page_cache: Some(pb::PageCacheStats {
                    read_attempts: pc.read_attempts,
                    misses: pc.misses,
                    adds: pc.adds,
                    evictions: pc.evictions,
                    hit_ratio: crate::store::rates::cache_hit(counts).map(|p| p / 100.0),
                }),
                direct_reclaim: Some(reclaim_stats(
                    &counts.reclaim[sidecar_common::ReclaimKind::Direct as usize],
                )),
                memcg_reclaim: Some(reclaim_stats(
                    &counts.reclaim[sidecar_common::ReclaimKind::Memcg as usize],
                )),
            }
        })
        .collect();
    pb::IoStats {
        start: Some(timestamp(period.start)),
        end: Some(timestamp(period.end)),
        intervals: u32::try_from(period.intervals).unwrap_or(u32::MAX),
        workloads,
        host: Some(pb::HostReclaim {
            lru_pages_scanned: period.host.lru_pages_scanned,
            lru_pages_reclaimed: period.host.lru_pages_reclaimed,
            efficiency_percent: crate::store::rates::reclaim_efficiency(&period.host),
            kswapd_wakeups: period.host.kswapd_wakeups,
            direct_reclaim_in_progress: period.direct_reclaim_in_progress,
        }),
    }
}

fn module_status(
    name: &str,
    state: Option<&ModuleState>,
    hook: Option<String>,
) -> pb::ModuleStatus {
    pb::ModuleStatus {
        name: name.to_owned(),
        state: state.map_or("starting", ModuleState::label).to_owned(),
        error: state
            .and_then(ModuleState::error)
            .unwrap_or_default()
            .to_owned(),
        hook: hook.unwrap_or_default(),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchIoStatsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SidecarService for Api {
    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let request = request.into_inner();
        check_modules(&request.modules)?;
        for (i, pattern) in request.metric_names.iter().enumerate() {
            if pattern.is_empty() || !catalog_names().any(|name| glob(pattern, &name)) {
                return Err(invalid(
                    &format!("metric_names[{i}]"),
                    format_args!("{pattern:?} matches no metric"),
                ));
            }
        }
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size <= MAX_PAGE_SIZE => size,
            size => {
                return Err(invalid(
                    "page_size",
                    format_args!("{size} is outside 1..={MAX_PAGE_SIZE}"),
                ));
            }
        } as usize;
        let fingerprint = fnv1a(&[&request.modules, &request.metric_names, &request.workloads]);
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(decode_token(token, fingerprint)?),
        };

        let drain = self.read_store().drains();
        let cached = self
            .listing
            .lock()
            .recover()
            .as_ref()
            .filter(|l| l.drain == drain && l.fingerprint == fingerprint)
            .cloned();
        let listing = match cached {
            Some(listing) => listing,
            None => {
                let listing = Arc::new(self.list(&request, fingerprint)?);
                *self.listing.lock().recover() = Some(Arc::clone(&listing));
                listing
            }
        };
        let (families, names, rows) = (&listing.families, &listing.names, &listing.rows);
        let collected_at = listing.collected_at;
        let total_size = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        let start = after.map_or(0, |after| rows.partition_point(|row| row.key <= after));
        let page = &rows[start.min(rows.len())..(start + page_size).min(rows.len())];
        let more = start + page_size < rows.len();
        let next_page_token = match (more, page.last()) {
            (true, Some(row)) => encode_token(fingerprint, &row.key),
            _ => String::new(),
        };
        let at = timestamp(collected_at);
        let metrics = page
            .iter()
            .map(|row| {
                to_metric(
                    &families[row.family],
                    &names[row.family],
                    &families[row.family].samples[row.sample],
                    at,
                )
            })
            .collect();
        Ok(Response::new(pb::GetMetricsResponse {
            metrics,
            next_page_token,
            total_size,
            collected_at: Some(timestamp(collected_at)),
        }))
    }

    async fn get_io_stats(
        &self,
        request: Request<pb::GetIoStatsRequest>,
    ) -> Result<Response<pb::GetIoStatsResponse>, Status> {
        let request = request.into_inner();
        let window = match request.window.trim() {
            "" => None,
            text => {
                let window = parse_duration(text).map_err(|err| invalid("window", err))?;
                if window.is_zero() {
                    return Err(invalid("window", "must be longer than 0"));
                }
                Some(window)
            }
        };
        let store = self.read_store();
        let selected = check_workloads(&store, &request.workloads)?;
        let period = store
            .period(window)
            .ok_or_else(|| Status::unavailable("no drain has completed yet"))?;
        Ok(Response::new(pb::GetIoStatsResponse {
            stats: Some(io_stats(&store, &period, &selected)),
        }))
    }

    type WatchIOStatsStream = WatchStream;

    async fn watch_io_stats(
        &self,
        request: Request<pb::WatchIoStatsRequest>,
    ) -> Result<Response<Self::WatchIOStatsStream>, Status> {
        let deadline = deadline_after(grpc_deadline(request.metadata())?);
        let request = request.into_inner();
        let selected = check_workloads(&self.read_store(), &request.workloads)?;
        let permit = Arc::clone(&self.streams).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} WatchIOStats streams are open already (server.max_streams)",
                self.max_streams
            ))
        })?;
        let store = Arc::clone(&self.store);
        let mut drains = self.drains.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _permit = permit;
            let expired = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(expired);
            let mut last_sent = *drains.borrow_and_update();
            loop {
                tokio::select! {
                    changed = drains.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                    () = &mut expired => {
                        let _ = tx.send(Err(Status::deadline_exceeded("the caller's deadline passed"))).await;
                        return;
                    }
                }
                let message = {
                    let store = crate::store::snapshot(&store);
                    let sequence = store.drains();
                    let Some(period) = store.period(None) else {
                        continue;
                    };
                    let missed = sequence.saturating_sub(last_sent).saturating_sub(1);
                    last_sent = sequence;
                    pb::WatchIoStatsResponse {
                        stats: Some(io_stats(&store, &period, &selected)),
                        sequence,
                        missed,
                    }
                };
                // A slow reader holds this send; the drainer goes on publishing, and the
                // next message carries the newest interval and the count of those missed.
                tokio::select! {
                    sent = tx.send(Ok(message)) => if sent.is_err() { return },
                    () = &mut expired => {
                        let _ = tx.try_send(Err(Status::deadline_exceeded("the caller's deadline passed")));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let store = self.read_store();
        let status = &self.status;
        let modules = status.modules();
        let last = store.last();
        let host = store.host_totals();
        let ready = store.drains() > 0 && status.attached_modules() > 0;
        Ok(Response::new(pb::GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kernel_release: status.kernel().release.clone(),
            btf_available: status.kernel().btf,
            tracefs: status.tracefs().unwrap_or_default(),
            modules: Module::ALL
                .iter()
                .map(|m| {
                    module_status(
                        m.name(),
                        modules.as_ref().and_then(|ms| ms.get(m)),
                        status.hook(*m),
                    )
                })
                .collect(),
            process_tracking: {
                let tracking = status.process_tracking();
                let hook = tracking
                    .as_ref()
                    .filter(|t| t.is_usable())
                    .map(|_| "tracepoint".to_owned());
                Some(module_status("process_tracking", tracking.as_ref(), hook))
            },
            interval: Some(duration(self.interval)),
            drains: store.drains(),
            last_drain_duration: last.map(|l| duration(l.drain.duration)),
            last_drain_at: last.map(|l| timestamp(l.at)),
            tracked_processes: store.tracked_processes() as u64,
            overflow: Some(pb::Overflow {
                fadvise: host.overflow.fadvise,
                page_cache: host.overflow.page_cache,
                reclaim: host.overflow.reclaim,
                processes: host.overflow.processes,
            }),
            exporters: status
                .exporters()
                .into_iter()
                .map(|e| {
                    let error = e.last_error;
                    pb::ExporterStatus {
                        name: e.name.to_owned(),
                        state: e.state.to_owned(),
                        last_error: error
                            .as_ref()
                            .map(|e| e.message.clone())
                            .unwrap_or_default(),
                        last_error_at: error.as_ref().map(|e| timestamp(e.at)),
                        last_error_past: error.is_some_and(|e| e.past),
                    }
                })
                .collect(),
            kernel_map_bytes: status.kernel_map_bytes(),
            uptime: Some(duration(status.uptime())),
            ready,
            retained_intervals: u32::try_from(store.retained()).unwrap_or(u32::MAX),
            history_bytes: store.history_bytes() as u64,
            history_intervals: u32::try_from(store.history_intervals()).unwrap_or(u32::MAX),
        }))
    }
}

/// The response mapping every service goes through ([`resource_exhausted_for_oversized`]).
type ResponseMap = fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>;

/// The gRPC router with that mapping as its layer.
pub type GrpcRouter = tonic::transport::server::Router<
    tower::layer::util::Stack<
        tower::util::MapResponseLayer<ResponseMap>,
        tower::layer::util::Identity,
    >,
>;

/// The services the gRPC server hosts, ready to be served.
pub struct Services {
    pub router: GrpcRouter,
    pub health: tonic_health::server::HealthReporter,
}

/// The services without authentication.
pub fn services(api: Api) -> Result<Services, ServicesError> {
    services_with(api, None, None)
}

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("TLS: {0}")]
    Tls(#[from] tonic::transport::Error),
}

/// tonic answers OUT_OF_RANGE to a request larger than the decoding limit; gRPC's
/// convention (and grpc-go's, grpc-java's) is RESOURCE_EXHAUSTED. The status comes in the
/// headers of a trailers-only answer, or in the trailers.
fn resource_exhausted_for_oversized(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    rewrite_oversized(response.headers_mut());
    response.map(|body| tonic::body::Body::new(OversizedTrailers(body)))
}

fn rewrite_oversized(headers: &mut http::HeaderMap) {
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    // grpc-message is percent-encoded.
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.replace("%20", " ").contains("message length too large"));
    if out_of_range && too_large {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(tonic::Code::ResourceExhausted as i32),
        );
    }
}

/// A response body whose trailers get [`rewrite_oversized`].
struct OversizedTrailers(tonic::body::Body);

impl http_body::Body for OversizedTrailers {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.0).poll_frame(cx);
        polled.map(|frame| {
            frame.map(|frame| {
                frame.map(|mut frame| {
                    if let Some(trailers) = frame.trailers_mut() {
                        rewrite_oversized(trailers);
                    }
                    frame
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// The services; with a token, the API and reflection require it (health never does);
/// with TLS, every service is served over it.
pub fn services_with(
    api: Api,
    token: Option<crate::auth::BearerToken>,
    tls: Option<&crate::tls::TlsFiles>,
) -> Result<Services, ServicesError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1()?;
    // Older grpcurl and grpcui, Postman and Python's grpcio-reflection speak only v1alpha.
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;
    let api = pb::sidecar_service_server::SidecarServiceServer::new(api)
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_ENCODING_MESSAGE_SIZE);
    let check = crate::auth::grpc_interceptor(token);
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls.tonic_config())?;
    }
    let too_large: ResponseMap = resource_exhausted_for_oversized;
    let router = server
        .layer(tower::util::MapResponseLayer::new(too_large))
        .add_service(health_service)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection,
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection_v1alpha,
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            api, check,
        ));
    Ok(Services { router, health })
}

/// Health of "" and of the API: SERVING once the sidecar is ready.
pub async fn set_health(reporter: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    for service in ["", crate::api::SERVICE_NAME] {
        reporter.set_service_status(service, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("ebpf_cache_*", "ebpf_cache_misses_total"));
        assert!(glob("*_total", "ebpf_cache_misses_total"));
        assert!(glob("ebpf_*_misses_*", "ebpf_cache_misses_total"));
        assert!(glob("ebpf_cache_misses_total", "ebpf_cache_misses_total"));
        assert!(!glob("ebpf_cache_misses", "ebpf_cache_misses_total"));
        assert!(!glob("x*", "ebpf"));
        assert!(glob("*", "anything"));
    }

    #[test]
    fn tokens_round_trip_and_reject_other_filters() {
        let token = encode_token(42, "ebpf_x\u{1f}workload=a");
        assert_eq!(decode_token(&token, 42).unwrap(), "ebpf_x\u{1f}workload=a");
        assert!(decode_token(&token, 43).is_err());
        assert!(decode_token("garbage", 42).is_err());
        assert!(decode_token("v1.000000000000002a.zz", 42).is_err());
    }

    #[test]
    fn grpc_timeout_header() {
        let mut metadata = MetadataMap::new();
        assert_eq!(grpc_deadline(&metadata).unwrap(), None);
        metadata.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(
            grpc_deadline(&metadata).unwrap(),
            Some(Duration::from_millis(250))
        );
        metadata.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(
            grpc_deadline(&metadata).unwrap(),
            Some(Duration::from_secs(3))
        );
        // The largest the grammar allows: far, but representable or "no deadline".
        metadata.insert("grpc-timeout", "99999999H".parse().unwrap());
        let far = grpc_deadline(&metadata).unwrap().unwrap();
        assert_eq!(far, Duration::from_secs(99_999_999 * 3600));
        let _ = deadline_after(Some(far));
        assert_eq!(deadline_after(Some(Duration::MAX)), None);
        for bad in ["x", "18446744073709551615H", "5", "-1S", "1.5S", "12s"] {
            metadata.insert("grpc-timeout", bad.parse().unwrap());
            let err = grpc_deadline(&metadata).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }
}
