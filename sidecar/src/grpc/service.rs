//! The requests of `sidecar.v1.SidecarService`: arguments checked (INVALID_ARGUMENT names
//! the field), answered from a snapshot of the store.

use std::{pin::Pin, sync::Arc};

use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{
    Api, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE,
    convert::{duration, io_stats, module_status, timestamp, to_metric},
    paging::{decode_token, encode_token, fingerprint, glob},
    transport::{deadline_after, grpc_deadline},
};
use crate::{
    api::pb::{self, sidecar_service_server::SidecarService},
    catalog::{self, CATALOG},
    config::parse_duration,
    kernel::modules::Module,
    store::Store,
    workload::WorkloadId,
};

pub(super) fn invalid(field: &str, message: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {message}"))
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

pub(super) fn check_workloads(
    store: &Store,
    workloads: &[String],
) -> Result<Vec<WorkloadId>, Status> {
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
        let fingerprint = fingerprint(&request);
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(decode_token(token, fingerprint)?),
        };
        let listing = self
            .listings
            .get(&self.store, &self.status, &request, fingerprint)?;
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
                io: host.overflow.io,
                memcg: host.overflow.memcg,
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
