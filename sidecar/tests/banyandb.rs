//! The BanyanDB exporter against a faithful in-process BanyanDB stand-in (no root, no
//! kernel): schema bootstrap, writes, outages, the spool, the breaker, incompatible schemas.
//!
//! The stand-in ([`standin`]) is built on the same protos and behaves as docs/banyandb.md
//! (and upstream v0.10) describe: registry Create/Get/Exist with AlreadyExists/NotFound;
//! Write answers errors at once and successes only after the client half-closes;
//! message_id 0 or a missing timestamp end the stream with InvalidArgument; sub-millisecond
//! timestamps get STATUS_INVALID_TIMESTAMP; tags and fields are checked positionally against
//! the stored schema; health and GetAPIVersion. Faults: refused connections (stopped),
//! stalls, injected statuses, restarts that keep the data.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sidecar::{
    config::{BanyanDbConfig, Bounded, BoundedDuration, Endpoint},
    export::{
        DrainDeltas,
        banyandb::{
            ExportStats, Exporter, Settings,
            delivery::CircuitState,
            proto::{
                common::v1 as common, database::v1 as database, measure::v1 as measure,
                model::v1 as model,
            },
        },
    },
    kernel::modules::Module,
    store::{HostCounts, WorkloadCounts},
};
use sidecar_common::Advice;

mod standin {
    use std::{
        collections::{BTreeMap, VecDeque},
        net::SocketAddr,
        pin::Pin,
        sync::{
            Arc, Mutex,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use sidecar::export::banyandb::proto::{
        common::v1::{self as common, service_server},
        database::v1::{
            self as database, group_registry_service_server, measure_registry_service_server,
        },
        measure::v1::{self as measure, measure_service_server},
        model::v1 as model,
    };
    use tokio::{sync::mpsc, task::JoinHandle};
    use tokio_stream::{Stream, wrappers::ReceiverStream};
    use tonic::{Request, Response, Status, Streaming};

    /// A stored point, after version resolution.
    #[derive(Clone, Debug)]
    pub struct Stored {
        pub version: i64,
        pub fields: Vec<Option<i64>>,
    }

    /// (measure, node, workload, timestamp ms).
    pub type Key = (String, String, String, i64);

    #[derive(Default)]
    pub struct Data {
        pub groups: BTreeMap<String, common::Group>,
        pub measures: BTreeMap<(String, String), database::Measure>,
        revision: i64,
        pub points: BTreeMap<Key, Stored>,
        /// Message ids of accepted messages, in arrival order.
        pub message_ids: Vec<u64>,
        /// Messages per Write stream that reached its half-close.
        pub streams: Vec<usize>,
        pub group_creates: u32,
        pub measure_creates: u32,
        /// Messages that did not fit the stored schema (positional check).
        pub mismatches: Vec<String>,
        /// Error statuses answered, by name.
        pub statuses: BTreeMap<String, u64>,
        /// Accepted message ids per series (measure, node, workload), in arrival order.
        pub series_ids: BTreeMap<(String, String, String), Vec<u64>>,
    }

    #[derive(Default)]
    pub struct Faults {
        /// Writes hang (until the client gives up).
        pub stall: AtomicBool,
        /// Statuses to answer to the next messages, one each.
        pub answer: Mutex<VecDeque<model::Status>>,
        /// When set, every call needs these `username`/`password` metadata.
        pub auth: Mutex<Option<(String, String)>>,
    }

    #[derive(Clone)]
    struct Svc {
        data: Arc<Mutex<Data>>,
        faults: Arc<Faults>,
    }

    pub struct StandIn {
        pub addr: SocketAddr,
        pub data: Arc<Mutex<Data>>,
        pub faults: Arc<Faults>,
        task: Mutex<Option<(JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>>,
        tls: Option<tonic::transport::ServerTlsConfig>,
    }

    impl StandIn {
        pub async fn start() -> Arc<StandIn> {
            StandIn::start_with(None).await
        }

        /// With TLS (and client certificates when the config asks for them).
        pub async fn start_with(tls: Option<tonic::transport::ServerTlsConfig>) -> Arc<StandIn> {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let standin = Arc::new(StandIn {
                addr: listener.local_addr().unwrap(),
                data: Arc::default(),
                faults: Arc::default(),
                task: Mutex::new(None),
                tls,
            });
            standin.serve(listener).await;
            standin
        }

        async fn serve(&self, listener: tokio::net::TcpListener) {
            let svc = Svc {
                data: Arc::clone(&self.data),
                faults: Arc::clone(&self.faults),
            };
            let (health, health_service) = tonic_health::server::health_reporter();
            health
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            let faults = Arc::clone(&self.faults);
            // BanyanDB's optional authentication: `username` and `password` metadata.
            let auth = move |request: Request<()>| {
                let required = faults.auth.lock().unwrap().clone();
                let Some((user, password)) = required else {
                    return Ok(request);
                };
                let header = |key: &str| {
                    request
                        .metadata()
                        .get(key)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                if header("username") == Some(user) && header("password") == Some(password) {
                    Ok(request)
                } else {
                    Err(Status::unauthenticated("invalid username or password"))
                }
            };
            let mut server = tonic::transport::Server::builder();
            if let Some(tls) = &self.tls {
                server = server.tls_config(tls.clone()).unwrap();
            }
            let router = server
                .add_service(health_service)
                .add_service(service_server::ServiceServer::with_interceptor(
                    svc.clone(),
                    auth.clone(),
                ))
                .add_service(
                    group_registry_service_server::GroupRegistryServiceServer::with_interceptor(
                        svc.clone(),
                        auth.clone(),
                    ),
                )
                .add_service(
                    measure_registry_service_server::MeasureRegistryServiceServer::with_interceptor(
                        svc.clone(),
                        auth.clone(),
                    ),
                )
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    measure_service_server::MeasureServiceServer::new(svc)
                        .max_decoding_message_size(10 << 20),
                    auth,
                ));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                // As Go's net package does (BanyanDB is Go): no Nagle delay.
                let incoming = tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    |stream| {
                        if let Ok(stream) = &stream {
                            let _ = stream.set_nodelay(true);
                        }
                        stream
                    },
                );
                let _ = router
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
            *self.task.lock().unwrap() = Some((task, stop));
        }

        /// Goes away: the listener closes (new connections are refused), open connections
        /// get GOAWAY, and whatever still runs is aborted shortly after.
        pub async fn stop(&self) {
            let running = self.task.lock().unwrap().take();
            if let Some((mut task, stop)) = running {
                let _ = stop.send(());
                if tokio::time::timeout(Duration::from_millis(300), &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                    let _ = task.await;
                }
            }
        }

        /// Comes back on the same address with the same data.
        pub async fn restart(&self) {
            self.stop().await;
            for _ in 0..100 {
                if let Ok(listener) = tokio::net::TcpListener::bind(self.addr).await {
                    self.serve(listener).await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("cannot listen on {} again", self.addr);
        }
    }

    impl Data {
        fn next_revision(&mut self) -> i64 {
            self.revision += 1;
            self.revision
        }

        /// What BanyanDB answers to one message (the stream already checked the rules).
        fn check(&self, md: &common::Metadata, request: &measure::WriteRequest) -> model::Status {
            if !self.groups.contains_key(&md.group) {
                return model::Status::NotFound;
            }
            let Some(schema) = self.measures.get(&(md.group.clone(), md.name.clone())) else {
                // An unknown measure with mod_revision 0 is an internal error upstream.
                return if md.mod_revision == 0 {
                    model::Status::InternalError
                } else {
                    model::Status::ExpiredSchema
                };
            };
            let stored = schema.metadata.as_ref().map_or(0, |m| m.mod_revision);
            if md.mod_revision != 0 && md.mod_revision != stored {
                return model::Status::ExpiredSchema;
            }
            let point = request.data_point.as_ref().expect("checked");
            let ts = point.timestamp.as_ref().expect("checked");
            if ts.nanos % 1_000_000 != 0 {
                return model::Status::InvalidTimestamp;
            }
            model::Status::Succeed
        }

        /// The positional check: tag families, tags and fields in schema order and type.
        fn mismatch(schema: &database::Measure, point: &measure::DataPointValue) -> Option<String> {
            if point.tag_families.len() != schema.tag_families.len() {
                return Some(format!(
                    "{} tag families for {}",
                    point.tag_families.len(),
                    schema.tag_families.len()
                ));
            }
            for (family, spec) in point.tag_families.iter().zip(&schema.tag_families) {
                if family.tags.len() != spec.tags.len() {
                    return Some(format!("family {}: {} tags", spec.name, family.tags.len()));
                }
                for (tag, spec) in family.tags.iter().zip(&spec.tags) {
                    use model::tag_value::Value;
                    let ok = matches!(
                        (&tag.value, database::TagType::try_from(spec.r#type)),
                        (Some(Value::Null(_)), _)
                            | (Some(Value::Str(_)), Ok(database::TagType::String))
                            | (Some(Value::Int(_)), Ok(database::TagType::Int))
                    );
                    if !ok {
                        return Some(format!("tag {} has the wrong type", spec.name));
                    }
                }
            }
            if point.fields.len() != schema.fields.len() {
                return Some(format!(
                    "{} fields for {}",
                    point.fields.len(),
                    schema.fields.len()
                ));
            }
            for (field, spec) in point.fields.iter().zip(&schema.fields) {
                use model::field_value::Value;
                let ok = matches!(
                    (&field.value, database::FieldType::try_from(spec.field_type)),
                    (Some(Value::Null(_)), _)
                        | (Some(Value::Int(_)), Ok(database::FieldType::Int))
                        | (Some(Value::Str(_)), Ok(database::FieldType::String))
                        | (Some(Value::Float(_)), Ok(database::FieldType::Float))
                );
                if !ok {
                    return Some(format!("field {} has the wrong type", spec.name));
                }
            }
            None
        }

        /// Stores accepted messages at the half-close: the higher version wins.
        fn store(&mut self, md: &common::Metadata, request: &measure::WriteRequest) {
            let schema = &self.measures[&(md.group.clone(), md.name.clone())];
            let point = request.data_point.as_ref().expect("checked");
            let tags: BTreeMap<String, String> = schema
                .tag_families
                .iter()
                .zip(&point.tag_families)
                .flat_map(|(spec, family)| spec.tags.iter().zip(&family.tags))
                .filter_map(|(spec, tag)| match &tag.value {
                    Some(model::tag_value::Value::Str(s)) => {
                        Some((spec.name.clone(), s.value.clone()))
                    }
                    _ => None,
                })
                .collect();
            let ts = point.timestamp.as_ref().expect("checked");
            let key = (
                md.name.clone(),
                tags.get("node").cloned().unwrap_or_default(),
                tags.get("workload").cloned().unwrap_or_default(),
                ts.seconds * 1000 + i64::from(ts.nanos / 1_000_000),
            );
            self.series_ids
                .entry((key.0.clone(), key.1.clone(), key.2.clone()))
                .or_default()
                .push(request.message_id);
            let version = if point.version == 0 {
                request.message_id as i64
            } else {
                point.version
            };
            let fields = point
                .fields
                .iter()
                .map(|f| match &f.value {
                    Some(model::field_value::Value::Int(i)) => Some(i.value),
                    _ => None,
                })
                .collect();
            match self.points.get(&key) {
                Some(existing) if existing.version > version => {}
                _ => {
                    self.points.insert(key, Stored { version, fields });
                }
            }
        }
    }

    fn resource_opts_valid(group: &common::Group) -> bool {
        group.resource_opts.as_ref().is_some_and(|o| {
            o.shard_num > 0
                && o.segment_interval.as_ref().is_some_and(|r| r.num > 0)
                && o.ttl.as_ref().is_some_and(|r| r.num > 0)
        })
    }

    #[tonic::async_trait]
    impl service_server::Service for Svc {
        async fn get_api_version(
            &self,
            _: Request<common::GetApiVersionRequest>,
        ) -> Result<Response<common::GetApiVersionResponse>, Status> {
            Ok(Response::new(common::GetApiVersionResponse {
                version: Some(common::ApiVersion {
                    version: "0.10".to_owned(),
                    revision: "stand-in".to_owned(),
                }),
            }))
        }
    }

    #[tonic::async_trait]
    impl group_registry_service_server::GroupRegistryService for Svc {
        async fn create(
            &self,
            request: Request<database::GroupRegistryServiceCreateRequest>,
        ) -> Result<Response<database::GroupRegistryServiceCreateResponse>, Status> {
            let mut group = request.into_inner().group.unwrap_or_default();
            let name = group
                .metadata
                .as_ref()
                .map(|m| m.group.clone())
                .unwrap_or_default();
            let mut data = self.data.lock().unwrap();
            if data.groups.contains_key(&name) {
                return Err(Status::already_exists(format!("group {name} exists")));
            }
            if name.is_empty() || group.catalog == 0 {
                return Err(Status::unknown(
                    "invalid group: name and catalog are required",
                ));
            }
            if group.catalog == common::Catalog::Measure as i32 && !resource_opts_valid(&group) {
                return Err(Status::unknown(
                    "invalid group: shard_num, segment_interval and ttl are required",
                ));
            }
            let revision = data.next_revision();
            if let Some(md) = group.metadata.as_mut() {
                md.mod_revision = revision;
                md.create_revision = revision;
            }
            data.groups.insert(name, group);
            data.group_creates += 1;
            Ok(Response::new(
                database::GroupRegistryServiceCreateResponse {
                    mod_revision: revision,
                },
            ))
        }

        async fn update(
            &self,
            request: Request<database::GroupRegistryServiceUpdateRequest>,
        ) -> Result<Response<database::GroupRegistryServiceUpdateResponse>, Status> {
            let group = request.into_inner().group.unwrap_or_default();
            let name = group
                .metadata
                .as_ref()
                .map(|m| m.group.clone())
                .unwrap_or_default();
            let mut data = self.data.lock().unwrap();
            if !data.groups.contains_key(&name) {
                return Err(Status::not_found(format!("group {name} not found")));
            }
            let revision = data.next_revision();
            data.groups.insert(name, group);
            Ok(Response::new(
                database::GroupRegistryServiceUpdateResponse {
                    mod_revision: revision,
                },
            ))
        }

        async fn get(
            &self,
            request: Request<database::GroupRegistryServiceGetRequest>,
        ) -> Result<Response<database::GroupRegistryServiceGetResponse>, Status> {
            let name = request.into_inner().group;
            let data = self.data.lock().unwrap();
            match data.groups.get(&name) {
                Some(group) => Ok(Response::new(database::GroupRegistryServiceGetResponse {
                    group: Some(group.clone()),
                })),
                None => Err(Status::not_found(format!("group {name} not found"))),
            }
        }

        async fn exist(
            &self,
            request: Request<database::GroupRegistryServiceExistRequest>,
        ) -> Result<Response<database::GroupRegistryServiceExistResponse>, Status> {
            let name = request.into_inner().group;
            let has_group = self.data.lock().unwrap().groups.contains_key(&name);
            Ok(Response::new(database::GroupRegistryServiceExistResponse {
                has_group,
            }))
        }
    }

    fn measure_key(md: Option<&common::Metadata>) -> (String, String) {
        md.map(|m| (m.group.clone(), m.name.clone()))
            .unwrap_or_default()
    }

    #[tonic::async_trait]
    impl measure_registry_service_server::MeasureRegistryService for Svc {
        async fn create(
            &self,
            request: Request<database::MeasureRegistryServiceCreateRequest>,
        ) -> Result<Response<database::MeasureRegistryServiceCreateResponse>, Status> {
            let mut m = request.into_inner().measure.unwrap_or_default();
            let key = measure_key(m.metadata.as_ref());
            let mut data = self.data.lock().unwrap();
            if !data.groups.contains_key(&key.0) {
                return Err(Status::not_found(format!("group {} not found", key.0)));
            }
            if data.measures.contains_key(&key) {
                return Err(Status::already_exists(format!("measure {} exists", key.1)));
            }
            let valid = !key.1.is_empty()
                && !m.tag_families.is_empty()
                && m.tag_families.iter().all(|f| !f.tags.is_empty())
                && m.entity.as_ref().is_some_and(|e| !e.tag_names.is_empty())
                && m.fields
                    .iter()
                    .all(|f| f.compression_method != 0 && f.field_type != 0);
            if !valid {
                return Err(Status::unknown("invalid measure"));
            }
            let revision = data.next_revision();
            if let Some(md) = m.metadata.as_mut() {
                md.mod_revision = revision;
                md.create_revision = revision;
            }
            data.measures.insert(key, m);
            data.measure_creates += 1;
            Ok(Response::new(
                database::MeasureRegistryServiceCreateResponse {
                    mod_revision: revision,
                },
            ))
        }

        async fn update(
            &self,
            request: Request<database::MeasureRegistryServiceUpdateRequest>,
        ) -> Result<Response<database::MeasureRegistryServiceUpdateResponse>, Status> {
            let mut m = request.into_inner().measure.unwrap_or_default();
            let key = measure_key(m.metadata.as_ref());
            let mut data = self.data.lock().unwrap();
            if !data.measures.contains_key(&key) {
                return Err(Status::not_found(format!("measure {} not found", key.1)));
            }
            let revision = data.next_revision();
            if let Some(md) = m.metadata.as_mut() {
                md.mod_revision = revision;
            }
            data.measures.insert(key, m);
            Ok(Response::new(
                database::MeasureRegistryServiceUpdateResponse {
                    mod_revision: revision,
                },
            ))
        }

        async fn get(
            &self,
            request: Request<database::MeasureRegistryServiceGetRequest>,
        ) -> Result<Response<database::MeasureRegistryServiceGetResponse>, Status> {
            let key = measure_key(request.into_inner().metadata.as_ref());
            let data = self.data.lock().unwrap();
            if !data.groups.contains_key(&key.0) {
                return Err(Status::not_found(format!("group {} not found", key.0)));
            }
            match data.measures.get(&key) {
                Some(m) => Ok(Response::new(database::MeasureRegistryServiceGetResponse {
                    measure: Some(m.clone()),
                })),
                None => Err(Status::not_found(format!("measure {} not found", key.1))),
            }
        }

        async fn exist(
            &self,
            request: Request<database::MeasureRegistryServiceExistRequest>,
        ) -> Result<Response<database::MeasureRegistryServiceExistResponse>, Status> {
            let key = measure_key(request.into_inner().metadata.as_ref());
            let data = self.data.lock().unwrap();
            Ok(Response::new(
                database::MeasureRegistryServiceExistResponse {
                    has_group: data.groups.contains_key(&key.0),
                    has_measure: data.measures.contains_key(&key),
                },
            ))
        }
    }

    type WriteStream = Pin<Box<dyn Stream<Item = Result<measure::WriteResponse, Status>> + Send>>;

    #[tonic::async_trait]
    impl measure_service_server::MeasureService for Svc {
        type WriteStream = WriteStream;

        async fn write(
            &self,
            request: Request<Streaming<measure::WriteRequest>>,
        ) -> Result<Response<WriteStream>, Status> {
            let mut inbound = request.into_inner();
            let (tx, rx) = mpsc::channel(100_000);
            let svc = self.clone();
            tokio::spawn(async move {
                let mut metadata: Option<common::Metadata> = None;
                let mut accepted: Vec<(common::Metadata, measure::WriteRequest)> = Vec::new();
                let reply = |id: u64, status: model::Status, md: Option<common::Metadata>| {
                    measure::WriteResponse {
                        message_id: id,
                        status: status.as_str_name().to_owned(),
                        metadata: md,
                    }
                };
                loop {
                    let message = match inbound.message().await {
                        Ok(Some(message)) => message,
                        Ok(None) => break,
                        Err(_) => return,
                    };
                    if svc.faults.stall.load(Ordering::Relaxed) {
                        // Never answers; the client's deadline ends it.
                        std::future::pending::<()>().await;
                    }
                    // Proto rules: a violation ends the whole stream.
                    let broken = message.message_id == 0
                        || message
                            .data_point
                            .as_ref()
                            .is_none_or(|p| p.timestamp.is_none() || p.tag_families.is_empty());
                    if broken {
                        let _ = tx
                            .send(Err(Status::invalid_argument(
                                "invalid write request: message_id, data_point, timestamp and tag_families are required",
                            )))
                            .await;
                        return;
                    }
                    if let Some(md) = &message.metadata {
                        metadata = Some(md.clone());
                    }
                    let Some(md) = metadata.clone() else {
                        let _ = tx
                            .send(Ok(reply(
                                message.message_id,
                                model::Status::MetadataRequired,
                                None,
                            )))
                            .await;
                        continue;
                    };
                    let injected = svc.faults.answer.lock().unwrap().pop_front();
                    let status = {
                        let mut data = svc.data.lock().unwrap();
                        let mut status = injected.unwrap_or_else(|| data.check(&md, &message));
                        if status == model::Status::Succeed {
                            let schema = &data.measures[&(md.group.clone(), md.name.clone())];
                            if let Some(why) =
                                Data::mismatch(schema, message.data_point.as_ref().unwrap())
                            {
                                data.mismatches.push(format!("{}: {why}", md.name));
                                status = model::Status::InternalError;
                            }
                        }
                        if status != model::Status::Succeed {
                            *data
                                .statuses
                                .entry(status.as_str_name().to_owned())
                                .or_default() += 1;
                        }
                        status
                    };
                    if status == model::Status::Succeed {
                        accepted.push((md, message));
                    } else {
                        // Errors are answered at once.
                        let _ = tx
                            .send(Ok(reply(message.message_id, status, Some(md))))
                            .await;
                    }
                }
                // Half-closed: store, then one SUCCEED per accepted message, in order.
                {
                    let mut data = svc.data.lock().unwrap();
                    for (md, message) in &accepted {
                        data.store(md, message);
                        data.message_ids.push(message.message_id);
                    }
                    data.streams.push(accepted.len());
                }
                for (md, message) in accepted {
                    let _ = tx
                        .send(Ok(reply(
                            message.message_id,
                            model::Status::Succeed,
                            Some(md),
                        )))
                        .await;
                }
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
        }
    }
}

use standin::StandIn;

const NODE: &str = "node-1";
const WORKLOAD: &str = "job-worker";

fn settings(standin: &StandIn, spool: &Path) -> Settings {
    let mut config = BanyanDbConfig {
        enabled: true,
        addr: Endpoint(standin.addr.to_string()),
        flush_interval: BoundedDuration(Duration::from_millis(20)),
        timeout: BoundedDuration(Duration::from_millis(500)),
        batch_size: Bounded(500),
        ..BanyanDbConfig::default()
    };
    config.spool.dir = spool.to_owned();
    let mut settings = Settings::new(&config, Duration::from_millis(100), Module::ALL.to_vec());
    settings.node = NODE.to_owned();
    settings.backoff_base = Duration::from_millis(10);
    settings.backoff_cap = Duration::from_millis(200);
    settings.breaker_threshold = 3;
    settings.breaker_cooldown = Duration::from_millis(300);
    settings.shutdown_deadline = Duration::from_secs(1);
    settings
}

fn base() -> SystemTime {
    // Sub-millisecond on purpose: the exporter must cut timestamps to whole milliseconds.
    UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789)
}

/// Drain `i` of a workload that missed `i + 1` pages, and one kswapd wakeup.
fn drain(i: u64) -> DrainDeltas {
    let mut counts = WorkloadCounts::default();
    counts.page_cache.requested_pages = 2 * (i + 1);
    counts.page_cache.missed_pages = i + 1;
    counts.fadvise[Advice::DontNeed as usize].calls = 1;
    counts.fadvise[Advice::DontNeed as usize].successes = 1;
    DrainDeltas {
        at: base() + Duration::from_millis(100) * i as u32,
        workloads: vec![(WORKLOAD.to_owned(), counts)],
        host: HostCounts {
            kswapd_wakeups: 1,
            ..HostCounts::default()
        },
    }
}

/// Points per drain: fadvise and page_cache for the workload, vmscan for the host.
const POINTS_PER_DRAIN: usize = 3;

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Spool segment files (the lock file aside).
fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "lock")
        .count()
}

fn stored(standin: &StandIn) -> usize {
    standin.data.lock().unwrap().points.len()
}

/// The page-cache misses BanyanDB holds for the workload, by timestamp.
fn misses(standin: &StandIn) -> BTreeMap<i64, i64> {
    let data = standin.data.lock().unwrap();
    data.points
        .iter()
        .filter(|((measure, node, workload, _), _)| {
            measure == "page_cache" && node == NODE && workload == WORKLOAD
        })
        .map(|((_, _, _, ts), point)| (*ts, point.fields[1].unwrap()))
        .collect()
}

fn expected_misses(drains: std::ops::Range<u64>) -> BTreeMap<i64, i64> {
    let base_ms = (base().duration_since(UNIX_EPOCH).unwrap().as_millis()) as i64;
    drains
        .map(|i| (base_ms + 100 * i as i64, i as i64 + 1))
        .collect()
}

/// No schema mismatch, versions set; with `ordered`, each series' message ids increase in
/// arrival order (without faults; a point refused alone is retried after later points of
/// its series, which is harmless: each has its own timestamp and version).
fn assert_clean(standin: &StandIn, ordered: bool) {
    let data = standin.data.lock().unwrap();
    assert!(data.mismatches.is_empty(), "{:?}", data.mismatches);
    if ordered {
        for (series, ids) in &data.series_ids {
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "message ids of {series:?} must increase: {ids:?}"
            );
        }
    }
    for point in data.points.values() {
        assert!(point.version > 0);
    }
}

fn load(stats: &ExportStats, which: &std::sync::atomic::AtomicU64) -> u64 {
    let _ = stats;
    which.load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_creates_the_schema_once_and_points_arrive_exactly_once() {
    let standin = StandIn::start().await;
    let spool = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(settings(&standin, spool.path())).unwrap();
    let handle = exporter.handle();
    for i in 0..5 {
        assert!(handle.submit(drain(i)));
    }
    wait_until("5 drains are stored", Duration::from_secs(10), || {
        stored(&standin) == 5 * POINTS_PER_DRAIN
    })
    .await;
    let stats = exporter.stats();
    exporter.shutdown().await;
    {
        let data = standin.data.lock().unwrap();
        assert_eq!((data.group_creates, data.measure_creates), (1, 3));
        let group = &data.groups["sidecar"];
        assert_eq!(group.catalog, common::Catalog::Measure as i32);
        let opts = group.resource_opts.as_ref().unwrap();
        assert_eq!(opts.shard_num, 1);
        assert_eq!(
            opts.ttl.as_ref().unwrap().unit,
            common::interval_rule::Unit::Day as i32
        );
        assert_eq!(opts.ttl.as_ref().unwrap().num, 7);
        for name in ["fadvise", "page_cache", "vmscan"] {
            let m = &data.measures[&("sidecar".to_owned(), name.to_owned())];
            assert_eq!(m.entity.as_ref().unwrap().tag_names, ["node", "workload"]);
            assert_eq!(m.interval, "100ms");
            assert!(m.fields.iter().all(|f| {
                f.field_type == database::FieldType::Int as i32
                    && f.compression_method == database::CompressionMethod::Zstd as i32
            }));
        }
        // Every write was one stream per flush, fully acknowledged.
        assert_eq!(data.message_ids.len(), 5 * POINTS_PER_DRAIN);
        // Versions are the message ids.
        let mut versions: Vec<i64> = data.points.values().map(|p| p.version).collect();
        versions.sort_unstable();
        let ids: Vec<i64> = data.message_ids.iter().map(|&id| id as i64).collect();
        let mut sorted_ids = ids.clone();
        sorted_ids.sort_unstable();
        assert_eq!(versions, sorted_ids);
    }
    assert_eq!(misses(&standin), expected_misses(0..5));
    assert_eq!(load(&stats, &stats.written), 15);
    assert_eq!(load(&stats, &stats.queue_points), 0);
    assert_eq!(stats.state(), "stopped");

    // A second start finds the schema and creates nothing.
    let exporter = Exporter::start(settings(&standin, spool.path())).unwrap();
    let handle = exporter.handle();
    for i in 5..10 {
        handle.submit(drain(i));
    }
    wait_until("10 drains are stored", Duration::from_secs(10), || {
        stored(&standin) == 10 * POINTS_PER_DRAIN
    })
    .await;
    exporter.shutdown().await;
    {
        let data = standin.data.lock().unwrap();
        assert_eq!((data.group_creates, data.measure_creates), (1, 3));
        assert_eq!(data.message_ids.len(), 10 * POINTS_PER_DRAIN);
    }
    assert_eq!(misses(&standin), expected_misses(0..10));
    assert_clean(&standin, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_delays_the_data_and_loses_none() {
    let standin = StandIn::start().await;
    let spool = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(settings(&standin, spool.path())).unwrap();
    let stats = exporter.stats();
    let handle = exporter.handle();
    for i in 0..10 {
        handle.submit(drain(i));
    }
    wait_until(
        "the first drains are stored",
        Duration::from_secs(10),
        || stored(&standin) == 10 * POINTS_PER_DRAIN,
    )
    .await;
    standin.stop().await;
    // 30 s of 100 ms drains while BanyanDB is away (drain times are the drains' own).
    for i in 10..310 {
        handle.submit(drain(i));
        if i % 30 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    wait_until("the breaker opens", Duration::from_secs(10), || {
        stats.circuit_state() == CircuitState::Open
    })
    .await;
    // What is not stored waits in the queue (or still in the hand-off channel).
    assert!(
        load(&stats, &stats.queue_points) as usize + stored(&standin) <= 310 * POINTS_PER_DRAIN
    );
    assert!(load(&stats, &stats.queue_points) > 0);
    assert!(stats.last_error().is_some());
    standin.restart().await;
    wait_until("every drain is stored", Duration::from_secs(20), || {
        stored(&standin) == 310 * POINTS_PER_DRAIN
    })
    .await;
    assert_eq!(misses(&standin), expected_misses(0..310));
    let total: i64 = misses(&standin).values().sum();
    assert_eq!(total, (1..=310).sum::<i64>());
    // Replays of points stored before their acks were lost overwrite themselves.
    wait_until("the queue is empty", Duration::from_secs(10), || {
        load(&stats, &stats.queue_points) == 0
    })
    .await;
    assert_eq!(stored(&standin), 310 * POINTS_PER_DRAIN);
    assert_eq!(misses(&standin), expected_misses(0..310));
    assert_eq!(stats.circuit_state(), CircuitState::Closed);
    assert_eq!(load(&stats, &stats.dropped), 0);
    exporter.shutdown().await;
    assert_clean(&standin, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_half_opens_with_a_single_probe() {
    let standin = StandIn::start().await;
    let spool = tempfile::tempdir().unwrap();
    standin.stop().await;
    let exporter = Exporter::start(settings(&standin, spool.path())).unwrap();
    let stats = exporter.stats();
    let handle = exporter.handle();
    for i in 0..20 {
        handle.submit(drain(i));
    }
    wait_until("the breaker opens", Duration::from_secs(10), || {
        stats.circuit_state() == CircuitState::Open
    })
    .await;
    assert_eq!(stats.state(), "circuit_open");
    standin.restart().await;
    wait_until("every drain is stored", Duration::from_secs(10), || {
        stored(&standin) == 20 * POINTS_PER_DRAIN
    })
    .await;
    let streams = standin.data.lock().unwrap().streams.clone();
    // The first write after the outage is the half-open probe: one point.
    assert_eq!(streams[0], 1, "{streams:?}");
    assert!(streams.len() >= 2);
    assert_eq!(stats.circuit_state(), CircuitState::Closed);
    exporter.shutdown().await;
    assert_clean(&standin, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_survives_an_exporter_restart() {
    let standin = StandIn::start().await;
    let spool = tempfile::tempdir().unwrap();
    standin.stop().await;
    let mut first = settings(&standin, spool.path());
    // A small memory queue: most points go to the spool.
    first.memory_points = 10;
    first.shutdown_deadline = Duration::from_millis(300);
    let exporter = Exporter::start(first).unwrap();
    let stats = exporter.stats();
    let handle = exporter.handle();
    for i in 0..40 {
        handle.submit(drain(i));
    }
    wait_until("points are spooled", Duration::from_secs(5), || {
        load(&stats, &stats.spool_bytes) > 0
    })
    .await;
    drop(handle);
    exporter.shutdown().await;
    assert_eq!(
        load(&stats, &stats.queue_points),
        40 * POINTS_PER_DRAIN as u64
    );
    assert!(
        segment_files(spool.path()) > 0,
        "the spool holds the points"
    );
    assert_eq!(stored(&standin), 0);

    standin.restart().await;
    let exporter = Exporter::start(settings(&standin, spool.path())).unwrap();
    let stats = exporter.stats();
    assert_eq!(
        load(&stats, &stats.queue_points),
        40 * POINTS_PER_DRAIN as u64
    );
    wait_until(
        "the spooled points are delivered",
        Duration::from_secs(10),
        || stored(&standin) == 40 * POINTS_PER_DRAIN,
    )
    .await;
    assert_eq!(misses(&standin), expected_misses(0..40));
    // New points after the restart get higher ids than the spooled ones.
    exporter.handle().submit(drain(40));
    wait_until("the new drain is stored", Duration::from_secs(10), || {
        stored(&standin) == 41 * POINTS_PER_DRAIN
    })
    .await;
    exporter.shutdown().await;
    assert_eq!(segment_files(spool.path()), 0);
    assert_clean(&standin, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_the_oldest_and_counts_them() {
    let standin = StandIn::start().await;
    let spool = tempfile::tempdir().unwrap();
    standin.stop().await;
    let mut settings = settings(&standin, spool.path());
    settings.memory_points = 30;
    settings.config.spool.max_bytes = sidecar::config::ByteSize(32 << 10);
    let exporter = Exporter::start(settings).unwrap();
    let stats = exporter.stats();
    let handle = exporter.handle();
    let drains = 2000u64;
    for i in 0..drains {
        handle.submit(drain(i));
    }
    let submitted = drains * POINTS_PER_DRAIN as u64;
    wait_until(
        "every point is queued or dropped",
        Duration::from_secs(10),
        || load(&stats, &stats.queue_points) + load(&stats, &stats.dropped) == submitted,
    )
    .await;
    let dropped = load(&stats, &stats.dropped);
    assert!(dropped > 0);
    assert!(load(&stats, &stats.spool_bytes) <= 32 << 10);
    let queued = load(&stats, &stats.queue_points);
    standin.restart().await;
    wait_until(
        "the kept points are delivered",
        Duration::from_secs(20),
        || stored(&standin) as u64 == queued,
    )
    .await;
    // The newest survived: the last drain is there; the first after the memory queue not.
    let misses = misses(&standin);
    let expected = expected_misses(0..drains);
    let last = expected.iter().next_back().unwrap();
    assert_eq!(misses.get(last.0), Some(last.1));
    assert!(misses.len() < expected.len());
    exporter.shutdown().await;
    assert_clean(&standin, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_schema_is_reported_and_the_data_kept() {
    let standin = StandIn::start().await;
    {
        // Someone else's page_cache measure: missed_pages is a STRING.
        let def = sidecar::export::banyandb::schema::MeasureDef::for_module(Module::PageCache);
        let mut measure = def.measure("sidecar", Duration::from_secs(10));
        measure.fields[1].field_type = database::FieldType::String.into();
        let group = sidecar::export::banyandb::schema::group(&BanyanDbConfig::default());
        let mut data = standin.data.lock().unwrap();
        data.groups.insert("sidecar".to_owned(), group);
        data.measures
            .insert(("sidecar".to_owned(), "page_cache".to_owned()), measure);
    }
    let spool = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(settings(&standin, spool.path())).unwrap();
    let stats = exporter.stats();
    for i in 0..3 {
        exporter.handle().submit(drain(i));
    }
    wait_until(
        "the schema is reported incompatible",
        Duration::from_secs(10),
        || stats.state() == "schema_incompatible",
    )
    .await;
    let error = stats.last_error().unwrap();
    assert!(error.contains("incompatible schema"), "{error}");
    assert!(error.contains("\"missed_pages\" is not INT"), "{error}");
    assert_eq!(stored(&standin), 0);
    assert_eq!(
        load(&stats, &stats.queue_points),
        3 * POINTS_PER_DRAIN as u64
    );
    // The status API shows it.
    let status = sidecar::status::Status::new(sidecar::status::KernelFacts::default());
    status.add_exporter(Arc::clone(&stats));
    assert_eq!(status.exporters()[0].state(), "schema_incompatible");
    exporter.shutdown().await;
    // Kept: in the spool for the next run.
    assert!(segment_files(spool.path()) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_errors_are_retried_and_expired_schemas_reloaded() {
    let standin = StandIn::start().await;
    let spool = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(settings(&standin, spool.path())).unwrap();
    let stats = exporter.stats();
    exporter.handle().submit(drain(0));
    wait_until("the first drain is stored", Duration::from_secs(10), || {
        stored(&standin) == POINTS_PER_DRAIN
    })
    .await;
    // Errors answered per message: retried, delivered once.
    standin.faults.answer.lock().unwrap().extend([
        model::Status::InternalError,
        model::Status::DiskFull,
        model::Status::NotFound,
    ]);
    exporter.handle().submit(drain(1));
    wait_until(
        "the second drain is stored",
        Duration::from_secs(10),
        || stored(&standin) == 2 * POINTS_PER_DRAIN,
    )
    .await;
    assert!(load(&stats, &stats.retried) >= 3);
    // The measure changes on the server: our mod_revision is stale.
    {
        let mut data = standin.data.lock().unwrap();
        let key = ("sidecar".to_owned(), "page_cache".to_owned());
        let mut m = data.measures[&key].clone();
        m.metadata.as_mut().unwrap().mod_revision += 100;
        data.measures.insert(key, m);
    }
    exporter.handle().submit(drain(2));
    wait_until("the third drain is stored", Duration::from_secs(10), || {
        stored(&standin) == 3 * POINTS_PER_DRAIN
    })
    .await;
    assert!(
        standin.data.lock().unwrap().statuses["STATUS_EXPIRED_SCHEMA"] >= 1,
        "the stale revision was refused"
    );
    // A stall: the write times out, then goes through.
    standin
        .faults
        .stall
        .store(true, std::sync::atomic::Ordering::Relaxed);
    exporter.handle().submit(drain(3));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(matches!(
        stats.last_error().as_deref(),
        Some(e) if e.contains("no answer") || e.contains("writing")
    ));
    standin
        .faults
        .stall
        .store(false, std::sync::atomic::Ordering::Relaxed);
    wait_until(
        "the fourth drain is stored",
        Duration::from_secs(10),
        || stored(&standin) == 4 * POINTS_PER_DRAIN,
    )
    .await;
    assert_eq!(misses(&standin), expected_misses(0..4));
    exporter.shutdown().await;
    assert_clean(&standin, false);
}

/// The stand-in itself speaks BanyanDB's protocol (raw clients, no exporter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_behaves_like_banyandb() {
    use sidecar::export::banyandb::proto::{
        common::v1::service_client::ServiceClient,
        database::v1::{
            group_registry_service_client::GroupRegistryServiceClient,
            measure_registry_service_client::MeasureRegistryServiceClient,
        },
        measure::v1::measure_service_client::MeasureServiceClient,
    };
    let standin = StandIn::start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", standin.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let version = ServiceClient::new(channel.clone())
        .get_api_version(common::GetApiVersionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.version.unwrap().version, "0.10");
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

    let mut groups = GroupRegistryServiceClient::new(channel.clone());
    let err = groups
        .get(database::GroupRegistryServiceGetRequest { group: "g".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let mut config = BanyanDbConfig::default();
    config.group.0 = "g".to_owned();
    let group = sidecar::export::banyandb::schema::group(&config);
    groups
        .create(database::GroupRegistryServiceCreateRequest {
            group: Some(group.clone()),
        })
        .await
        .unwrap();
    let err = groups
        .create(database::GroupRegistryServiceCreateRequest { group: Some(group) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(
        groups
            .exist(database::GroupRegistryServiceExistRequest { group: "g".into() })
            .await
            .unwrap()
            .into_inner()
            .has_group
    );
    let mut measures = MeasureRegistryServiceClient::new(channel.clone());
    let def = sidecar::export::banyandb::schema::MeasureDef::for_module(Module::PageCache);
    let orphan = def.measure("nogroup", Duration::from_secs(1));
    let err = measures
        .create(database::MeasureRegistryServiceCreateRequest {
            measure: Some(orphan),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let revision = measures
        .create(database::MeasureRegistryServiceCreateRequest {
            measure: Some(def.measure("g", Duration::from_secs(1))),
        })
        .await
        .unwrap()
        .into_inner()
        .mod_revision;
    let exist = measures
        .exist(database::MeasureRegistryServiceExistRequest {
            metadata: Some(sidecar::export::banyandb::schema::metadata(
                "g",
                "page_cache",
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(exist.has_group && exist.has_measure);

    let layout = sidecar::export::banyandb::schema::layout(
        &def,
        &measures
            .get(database::MeasureRegistryServiceGetRequest {
                metadata: Some(sidecar::export::banyandb::schema::metadata(
                    "g",
                    "page_cache",
                )),
            })
            .await
            .unwrap()
            .into_inner()
            .measure
            .unwrap(),
    )
    .unwrap();
    assert_eq!(layout.metadata.mod_revision, revision);
    let point = |id: u64, ts_ms: i64| sidecar::export::banyandb::point::Point {
        module: 1,
        node: "n".into(),
        workload: "w".into(),
        timestamp_ms: ts_ms,
        message_id: id,
        fields: vec![1, 2, 3, 4],
    };
    let request = |id: u64| {
        sidecar::export::banyandb::client::write_request(&point(id, 1_700_000_000_000), &layout)
    };
    let mut writer = MeasureServiceClient::new(channel.clone());

    // Acks only after the half-close.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(request(1)).await.unwrap();
    let mut replies = writer
        .write(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let early = tokio::time::timeout(Duration::from_millis(300), replies.message()).await;
    assert!(early.is_err(), "no ack before the half-close: {early:?}");
    drop(tx);
    let ack = replies.message().await.unwrap().unwrap();
    assert_eq!((ack.message_id, ack.status.as_str()), (1, "STATUS_SUCCEED"));
    assert!(replies.message().await.unwrap().is_none());

    // Sub-millisecond timestamps: STATUS_INVALID_TIMESTAMP, at once.
    let mut bad = request(2);
    bad.data_point
        .as_mut()
        .unwrap()
        .timestamp
        .as_mut()
        .unwrap()
        .nanos += 1;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(bad).await.unwrap();
    let mut replies = writer
        .write(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    assert_eq!(reply.status, "STATUS_INVALID_TIMESTAMP");
    drop(tx);

    // message_id 0, or no timestamp: the stream ends with InvalidArgument.
    for broken in [
        measure::WriteRequest {
            message_id: 0,
            ..request(3)
        },
        {
            let mut r = request(4);
            r.data_point.as_mut().unwrap().timestamp = None;
            r
        },
    ] {
        let err = async {
            let mut replies = writer
                .write(tokio_stream::iter(vec![broken]))
                .await?
                .into_inner();
            replies.message().await
        }
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    // Positional check: a missing field is refused.
    let mut short = request(5);
    short.data_point.as_mut().unwrap().fields.pop();
    let mut replies = writer
        .write(tokio_stream::iter(vec![short]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replies.message().await.unwrap().unwrap().status,
        "STATUS_INTERNAL_ERROR"
    );
    assert_eq!(standin.data.lock().unwrap().mismatches.len(), 1);

    // A restart keeps the data; while stopped, connections are refused.
    standin.stop().await;
    let refused = tonic::transport::Endpoint::from_shared(format!("http://{}", standin.addr))
        .unwrap()
        .connect()
        .await;
    assert!(refused.is_err());
    standin.restart().await;
    assert_eq!(stored(&standin), 1);
}

/// Throughput to the loopback stand-in (a benchmark, not a test: `cargo test --release
/// --test banyandb -- --ignored --nocapture throughput`). Results in docs/BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark"]
async fn throughput() {
    for batch_size in [1000, 5000] {
        let standin = StandIn::start().await;
        let spool = tempfile::tempdir().unwrap();
        let mut settings = settings(&standin, spool.path());
        settings.config.batch_size = Bounded(batch_size);
        settings.config.timeout = BoundedDuration(Duration::from_secs(10));
        settings.memory_points = 1 << 20;
        let exporter = Exporter::start(settings).unwrap();
        let handle = exporter.handle();
        // Warm up: schema and connection.
        handle.submit(drain(0));
        wait_until("warm", Duration::from_secs(10), || {
            stored(&standin) == POINTS_PER_DRAIN
        })
        .await;
        let workloads = 200;
        let drains = 500u64;
        let started = std::time::Instant::now();
        for i in 1..=drains {
            let mut deltas = drain(i);
            let counts = deltas.workloads[0].1.clone();
            deltas.workloads = (0..workloads)
                .map(|w| (format!("w{w}"), counts.clone()))
                .collect();
            handle.submit(deltas);
        }
        let expected = POINTS_PER_DRAIN + drains as usize * (2 * workloads + 1);
        wait_until("all stored", Duration::from_secs(120), || {
            stored(&standin) == expected
        })
        .await;
        let elapsed = started.elapsed();
        let points = expected - POINTS_PER_DRAIN;
        println!(
            "batch_size {batch_size}: {points} points in {:.2?}: {:.0} points/s",
            elapsed,
            points as f64 / elapsed.as_secs_f64()
        );
        exporter.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_go_as_banyandb_auth_metadata() {
    let standin = StandIn::start().await;
    *standin.faults.auth.lock().unwrap() = Some(("sidecar".to_owned(), "s3cret".to_owned()));
    let spool = tempfile::tempdir().unwrap();
    // Without credentials: refused, kept.
    let exporter = Exporter::start(settings(&standin, spool.path())).unwrap();
    let stats = exporter.stats();
    exporter.handle().submit(drain(0));
    wait_until("the refusal is reported", Duration::from_secs(10), || {
        stats
            .last_error()
            .is_some_and(|e| e.contains("Unauthenticated"))
    })
    .await;
    assert_eq!(stored(&standin), 0);
    exporter.shutdown().await;
    // With them: the spooled drain and a new one arrive.
    let mut settings = settings(&standin, spool.path());
    settings.config.username = Some("sidecar".to_owned());
    settings.config.password = Some("s3cret".to_owned());
    let exporter = Exporter::start(settings).unwrap();
    exporter.handle().submit(drain(1));
    wait_until("both drains are stored", Duration::from_secs(10), || {
        stored(&standin) == 2 * POINTS_PER_DRAIN
    })
    .await;
    exporter.shutdown().await;
    assert_eq!(misses(&standin), expected_misses(0..2));
    assert_clean(&standin, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let pki = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut pems = BTreeMap::new();
    for name in ["server", "client"] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(pki.path().join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(pki.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        pems.insert(name, (cert.pem(), key.serialize_pem()));
    }
    std::fs::write(pki.path().join("ca.pem"), ca_cert.pem()).unwrap();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &pems["server"].0,
            &pems["server"].1,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(ca_cert.pem()));
    let standin = StandIn::start_with(Some(tls)).await;
    let spool = tempfile::tempdir().unwrap();
    let mut settings = settings(&standin, spool.path());
    settings.config.tls = Some(
        sidecar::config::Config::parse(
            &format!(
                "export:\n  banyandb:\n    tls:\n      ca: {0}/ca.pem\n      cert: {0}/client.pem\n      key: {0}/client.key\n",
                pki.path().display()
            ),
            "t",
        )
        .unwrap()
        .export
        .banyandb
        .tls
        .unwrap(),
    );
    let exporter = Exporter::start(settings).unwrap();
    exporter.handle().submit(drain(0));
    wait_until(
        "the drain is stored over TLS",
        Duration::from_secs(10),
        || stored(&standin) == POINTS_PER_DRAIN,
    )
    .await;
    exporter.shutdown().await;
    assert_clean(&standin, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_keeps_its_deadline_against_a_stalled_banyandb() {
    let standin = StandIn::start().await;
    let spool = tempfile::tempdir().unwrap();
    let mut settings = settings(&standin, spool.path());
    // A write would wait 5 s for its answer; shutdown may take 300 ms.
    settings.config.timeout = BoundedDuration(Duration::from_secs(5));
    settings.shutdown_deadline = Duration::from_millis(300);
    let exporter = Exporter::start(settings.clone()).unwrap();
    exporter.handle().submit(drain(0));
    wait_until("the first drain is stored", Duration::from_secs(10), || {
        stored(&standin) == POINTS_PER_DRAIN
    })
    .await;
    standin
        .faults
        .stall
        .store(true, std::sync::atomic::Ordering::Relaxed);
    for i in 1..5 {
        exporter.handle().submit(drain(i));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = exporter.stats();
    let started = std::time::Instant::now();
    exporter.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(
        load(&stats, &stats.queue_points),
        4 * POINTS_PER_DRAIN as u64
    );
    assert!(segment_files(spool.path()) > 0);
    // Later, with BanyanDB well again, the spooled points arrive.
    standin
        .faults
        .stall
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let exporter = Exporter::start(settings).unwrap();
    wait_until(
        "the spooled drains are stored",
        Duration::from_secs(10),
        || stored(&standin) == 5 * POINTS_PER_DRAIN,
    )
    .await;
    exporter.shutdown().await;
    assert_eq!(misses(&standin), expected_misses(0..5));
    assert_clean(&standin, true);
}
