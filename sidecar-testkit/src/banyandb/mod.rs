//! An in-process BanyanDB stand-in, on our own copy of BanyanDB's protos, that enforces
//! upstream's rules ([`rules`], each cited to its upstream file) and fails on demand.
//!
//! It starts as a fresh BanyanDB does: no user group and no measure, only the internal group
//! `_deletion_task` that the liaison creates at start-up
//! (`banyand/liaison/grpc/deletion.go`). It serves `grpc.health.v1.Health` (service ""
//! SERVING) and `GetAPIVersion` ("0.10") as `banyand/liaison/grpc/server.go` registers them,
//! over TCP (optionally TLS) or in memory (for tests on tokio's paused clock).
//!
//! Simplifications, none of which the exporter can observe: the schema is kept in memory (a
//! restart keeps it, as BanyanDB's registry does); revisions are nanosecond clock readings
//! made strictly increasing; authentication is checked before protoc-gen-validate
//! (upstream chains it after: only a malformed request without credentials would see a
//! different code).

pub mod rules;

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
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
use tonic::{Request, Response, Status, Streaming, transport::Channel};

/// The internal group every BanyanDB has (`banyand/liaison/grpc/deletion.go`).
pub const DELETION_TASK_GROUP: &str = "_deletion_task";

/// BanyanDB's default receive limit (`banyand/liaison/grpc/server.go`, `defaultRecvSize`).
const MAX_RECEIVE_BYTES: usize = 16 << 20;

/// A stored point, after version resolution.
#[derive(Clone, Debug)]
pub struct Stored {
    pub version: i64,
    /// Schema order; `None` is NULL.
    pub fields: Vec<Option<i64>>,
}

/// (measure, first entity tag, second entity tag, timestamp ms): for our measures
/// (measure, node, workload, timestamp).
pub type Key = (String, String, String, i64);

#[derive(Default)]
pub struct Data {
    /// By `metadata.name` (`property/converter.go`, `BuildPropertyID`: `group_<name>`).
    pub groups: BTreeMap<String, common::Group>,
    /// By (`metadata.group`, `metadata.name`) (`BuildPropertyID`: `measure_<group>/<name>`).
    pub measures: BTreeMap<(String, String), database::Measure>,
    revision: i64,
    pub points: BTreeMap<Key, Stored>,
    /// Message ids of accepted messages, in arrival order.
    pub message_ids: Vec<u64>,
    /// Messages accepted per Write stream that reached its end.
    pub streams: Vec<usize>,
    /// When each Write stream began (tokio's clock: paused in some tests).
    pub stream_starts: Vec<tokio::time::Instant>,
    pub group_creates: u32,
    pub measure_creates: u32,
    /// Shape differences upstream stores silently (NULLs, ignored extras) or points it drops
    /// after acknowledging them: a correct client causes none.
    pub mismatches: Vec<String>,
    /// Error statuses answered, by name.
    pub statuses: BTreeMap<String, u64>,
    /// Accepted message ids per series (measure, node, workload), in arrival order.
    pub series_ids: BTreeMap<(String, String, String), Vec<u64>>,
    /// Writes each measure still "does not see" after its creation (see
    /// [`Faults::schema_lag`]).
    unapplied: BTreeMap<(String, String), u32>,
}

impl Data {
    fn fresh() -> Data {
        let mut data = Data::default();
        let internal = common::Group {
            metadata: Some(common::Metadata {
                name: DELETION_TASK_GROUP.to_owned(),
                ..Default::default()
            }),
            catalog: common::Catalog::Property.into(),
            resource_opts: Some(common::ResourceOpts {
                shard_num: 1,
                ..Default::default()
            }),
            updated_at: None,
        };
        data.groups.insert(DELETION_TASK_GROUP.to_owned(), internal);
        data
    }

    /// `time.Now().UnixNano()` as `property/client.go` sets `mod_revision`, kept strictly
    /// increasing so that two changes in one nanosecond stay distinct.
    fn next_revision(&mut self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        self.revision = now.max(self.revision + 1);
        self.revision
    }

    /// The points BanyanDB holds for a measure's series, by timestamp.
    pub fn series(&self, measure: &str, node: &str, workload: &str) -> BTreeMap<i64, &Stored> {
        self.points
            .iter()
            .filter(|((m, n, w, _), _)| m == measure && n == node && w == workload)
            .map(|((_, _, _, ts), stored)| (*ts, stored))
            .collect()
    }
}

/// Failures on demand.
#[derive(Default)]
pub struct Faults {
    /// Writes hang (until the client gives up).
    pub stall: AtomicBool,
    /// Statuses to answer to the next messages, one each.
    pub answer: Mutex<VecDeque<model::Status>>,
    /// Statuses to answer to every message of the next Write streams, one stream each.
    pub fail_streams: Mutex<VecDeque<model::Status>>,
    /// The next this many Write streams store their points but never deliver the acks: the
    /// stream ends with UNAVAILABLE (a connection lost after the write).
    pub lose_acks: AtomicU32,
    /// After a measure is created, this many writes to it still find it unknown (as a
    /// liaison whose schema cache has not caught up: `measure.go` answers NOT_FOUND with a
    /// mod_revision, INTERNAL_ERROR without).
    pub schema_lag: AtomicU32,
    /// When set, every call but health needs these `username`/`password` metadata
    /// (`banyand/liaison/grpc/auth.go`).
    pub auth: Mutex<Option<(String, String)>>,
}

#[derive(Clone)]
struct Svc {
    data: Arc<Mutex<Data>>,
    faults: Arc<Faults>,
}

/// Where the stand-in listens.
enum Transport {
    Tcp {
        addr: SocketAddr,
        tls: Option<tonic::transport::ServerTlsConfig>,
    },
    /// In-process pipes: the connector hands each new connection's server end to the
    /// running server, or refuses it while the server is stopped.
    Memory {
        accept: Arc<Mutex<Option<mpsc::UnboundedSender<tokio::io::DuplexStream>>>>,
    },
}

pub struct StandIn {
    /// The TCP address (unspecified for an in-memory stand-in).
    pub addr: SocketAddr,
    pub data: Arc<Mutex<Data>>,
    pub faults: Arc<Faults>,
    transport: Transport,
    task: Mutex<Option<(JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>>,
}

type Incoming = Pin<Box<dyn Stream<Item = std::io::Result<Connection>> + Send>>;

/// A connection of either transport.
enum Connection {
    Tcp(tokio::net::TcpStream),
    Memory(tokio::io::DuplexStream),
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl tokio::io::AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Connection::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Connection::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Connection::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(s) => Pin::new(s).poll_flush(cx),
            Connection::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Connection::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl StandIn {
    /// On a loopback port.
    pub async fn start() -> Arc<StandIn> {
        StandIn::start_with(None).await
    }

    /// On a loopback port, with TLS (and client certificates when the config asks for them).
    pub async fn start_with(tls: Option<tonic::transport::ServerTlsConfig>) -> Arc<StandIn> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        let standin = Arc::new(StandIn {
            addr,
            data: Arc::new(Mutex::new(Data::fresh())),
            faults: Arc::default(),
            transport: Transport::Tcp { addr, tls },
            task: Mutex::new(None),
        });
        standin.serve_tcp(listener).await;
        standin
    }

    /// In memory, with a channel connected to it: no sockets, so that tests can run on
    /// tokio's paused clock.
    pub async fn start_in_memory() -> (Arc<StandIn>, Channel) {
        let accept = Arc::new(Mutex::new(None));
        let standin = Arc::new(StandIn {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            data: Arc::new(Mutex::new(Data::fresh())),
            faults: Arc::default(),
            transport: Transport::Memory {
                accept: Arc::clone(&accept),
            },
            task: Mutex::new(None),
        });
        standin.serve_memory().await;
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let accept = Arc::clone(&accept);
            async move {
                let (client, server) = tokio::io::duplex(1 << 16);
                let sent = accept
                    .lock()
                    .expect("not poisoned")
                    .as_ref()
                    .is_some_and(|tx| tx.send(server).is_ok());
                if sent {
                    Ok(hyper_util::rt::TokioIo::new(client))
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "the stand-in is stopped",
                    ))
                }
            }
        });
        let channel = tonic::transport::Endpoint::from_static("http://banyandb.in-memory")
            .connect_with_connector_lazy(connector);
        (standin, channel)
    }

    async fn serve_tcp(&self, listener: tokio::net::TcpListener) {
        // As Go's net package does (BanyanDB is Go): no Nagle delay.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |stream| {
                let stream = stream?;
                let _ = stream.set_nodelay(true);
                Ok(Connection::Tcp(stream))
            },
        );
        self.serve(Box::pin(incoming)).await;
    }

    async fn serve_memory(&self) {
        let Transport::Memory { accept } = &self.transport else {
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        *accept.lock().expect("not poisoned") = Some(tx);
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            |stream| Ok(Connection::Memory(stream)),
        );
        self.serve(Box::pin(incoming)).await;
    }

    async fn serve(&self, incoming: Incoming) {
        let svc = Svc {
            data: Arc::clone(&self.data),
            faults: Arc::clone(&self.faults),
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let faults = Arc::clone(&self.faults);
        // `banyand/liaison/grpc/auth.go`: `username` and `password` metadata; health is exempt.
        let auth = move |request: Request<()>| {
            let required = faults.auth.lock().expect("not poisoned").clone();
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
            match (header("username"), header("password")) {
                (None, None) => Err(Status::unauthenticated("metadata is not provided")),
                (Some(u), Some(p)) if u == user && p == password => Ok(request),
                _ => Err(Status::unauthenticated("Invalid credentials")),
            }
        };
        let mut server = tonic::transport::Server::builder();
        if let Transport::Tcp { tls: Some(tls), .. } = &self.transport {
            server = server.tls_config(tls.clone()).expect("a valid TLS config");
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
                    .max_decoding_message_size(MAX_RECEIVE_BYTES),
                auth,
            ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        *self.task.lock().expect("not poisoned") = Some((task, stop));
    }

    /// Goes away: new connections are refused, open ones get GOAWAY, and whatever still runs
    /// is aborted shortly after.
    pub async fn stop(&self) {
        if let Transport::Memory { accept } = &self.transport {
            accept.lock().expect("not poisoned").take();
        }
        let running = self.task.lock().expect("not poisoned").take();
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

    /// Comes back (on the same address) with the same data.
    pub async fn restart(&self) {
        self.stop().await;
        match &self.transport {
            Transport::Memory { .. } => self.serve_memory().await,
            Transport::Tcp { addr, .. } => {
                for _ in 0..100 {
                    if let Ok(listener) = tokio::net::TcpListener::bind(addr).await {
                        self.serve_tcp(listener).await;
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                panic!("cannot listen on {addr} again");
            }
        }
    }

    /// Points stored.
    pub fn stored(&self) -> usize {
        self.data.lock().expect("not poisoned").points.len()
    }
}

#[tonic::async_trait]
impl service_server::Service for Svc {
    /// `banyand/liaison/grpc/api_version.go`: the version of `api/proto/banyandb/version.go`.
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

fn group_name(group: &common::Group) -> String {
    group
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

/// `banyand/liaison/grpc/registry.go`, `groupRegistryServer`, over `property/client.go`.
#[tonic::async_trait]
impl group_registry_service_server::GroupRegistryService for Svc {
    /// `CreateGroup`: PGV, then `validate.Group`, then AlreadyExists (`broadcastInsert`).
    async fn create(
        &self,
        request: Request<database::GroupRegistryServiceCreateRequest>,
    ) -> Result<Response<database::GroupRegistryServiceCreateResponse>, Status> {
        let request = request.into_inner();
        let group = rules::pgv_group(request.group.as_ref())?;
        rules::validate_group(group)?;
        let name = group_name(group);
        let mut data = self.data.lock().expect("not poisoned");
        if data.groups.contains_key(&name) {
            return Err(rules::already_exists());
        }
        let mut group = group.clone();
        let revision = data.next_revision();
        if let Some(md) = group.metadata.as_mut() {
            md.mod_revision = revision;
            md.create_revision = revision;
        }
        data.groups.insert(name, group);
        data.group_creates += 1;
        // Upstream answers an empty response.
        Ok(Response::new(
            database::GroupRegistryServiceCreateResponse::default(),
        ))
    }

    /// `UpdateGroup`: the same checks; a missing group is a plain error (`updateResource`:
    /// "schema %s/%s not exist"), so Unknown, not NotFound.
    async fn update(
        &self,
        request: Request<database::GroupRegistryServiceUpdateRequest>,
    ) -> Result<Response<database::GroupRegistryServiceUpdateResponse>, Status> {
        let request = request.into_inner();
        let group = rules::pgv_group(request.group.as_ref())?;
        rules::validate_group(group)?;
        let name = group_name(group);
        let mut data = self.data.lock().expect("not poisoned");
        if !data.groups.contains_key(&name) {
            return Err(rules::plain_error(format!("schema /{name} not exist")));
        }
        let mut group = group.clone();
        let revision = data.next_revision();
        if let Some(md) = group.metadata.as_mut() {
            md.mod_revision = revision;
        }
        data.groups.insert(name, group);
        Ok(Response::new(
            database::GroupRegistryServiceUpdateResponse::default(),
        ))
    }

    /// `getResource`: NotFound for a missing group.
    async fn get(
        &self,
        request: Request<database::GroupRegistryServiceGetRequest>,
    ) -> Result<Response<database::GroupRegistryServiceGetResponse>, Status> {
        let name = request.into_inner().group;
        let data = self.data.lock().expect("not poisoned");
        match data.groups.get(&name) {
            Some(group) => Ok(Response::new(database::GroupRegistryServiceGetResponse {
                group: Some(group.clone()),
            })),
            None => Err(rules::not_found()),
        }
    }

    /// `registry.go` `Exist`: NotFound from Get becomes `has_group: false` with OK.
    async fn exist(
        &self,
        request: Request<database::GroupRegistryServiceExistRequest>,
    ) -> Result<Response<database::GroupRegistryServiceExistResponse>, Status> {
        let name = request.into_inner().group;
        let has_group = self
            .data
            .lock()
            .expect("not poisoned")
            .groups
            .contains_key(&name);
        Ok(Response::new(database::GroupRegistryServiceExistResponse {
            has_group,
        }))
    }
}

fn measure_key(md: &common::Metadata) -> (String, String) {
    (md.group.clone(), md.name.clone())
}

impl Svc {
    /// `property/client.go` `CreateMeasure`/`UpdateMeasure`, in upstream's order: PGV,
    /// interval, `validate.Measure`, then `validateGroup` (NotFound for a missing group,
    /// `GroupForNonProperty` for one without resource options; the catalog is not checked).
    fn check_measure(
        data: &Data,
        m: Option<&database::Measure>,
    ) -> Result<(database::Measure, (String, String)), Status> {
        let m = rules::pgv_measure(m)?;
        rules::check_interval(&m.interval)?;
        rules::validate_measure(m)?;
        let key = measure_key(m.metadata.as_ref().expect("PGV checked"));
        let group = data.groups.get(&key.0).ok_or_else(rules::not_found)?;
        rules::group_for_non_property(group)?;
        Ok((m.clone(), key))
    }
}

/// `banyand/liaison/grpc/registry.go`, `measureRegistryServer`, over `property/client.go`.
#[tonic::async_trait]
impl measure_registry_service_server::MeasureRegistryService for Svc {
    /// Returns the new `mod_revision`, also stored in the measure's metadata.
    async fn create(
        &self,
        request: Request<database::MeasureRegistryServiceCreateRequest>,
    ) -> Result<Response<database::MeasureRegistryServiceCreateResponse>, Status> {
        let request = request.into_inner();
        let mut data = self.data.lock().expect("not poisoned");
        let (mut m, key) = Svc::check_measure(&data, request.measure.as_ref())?;
        if data.measures.contains_key(&key) {
            return Err(rules::already_exists());
        }
        let revision = data.next_revision();
        if let Some(md) = m.metadata.as_mut() {
            md.mod_revision = revision;
            md.create_revision = revision;
        }
        let lag = self.faults.schema_lag.load(Ordering::Relaxed);
        if lag > 0 {
            data.unapplied.insert(key.clone(), lag);
        }
        data.measures.insert(key, m);
        data.measure_creates += 1;
        Ok(Response::new(
            database::MeasureRegistryServiceCreateResponse {
                mod_revision: revision,
            },
        ))
    }

    /// A missing measure is a plain error, so Unknown ("schema g/n not exist").
    async fn update(
        &self,
        request: Request<database::MeasureRegistryServiceUpdateRequest>,
    ) -> Result<Response<database::MeasureRegistryServiceUpdateResponse>, Status> {
        let request = request.into_inner();
        let mut data = self.data.lock().expect("not poisoned");
        let (mut m, key) = Svc::check_measure(&data, request.measure.as_ref())?;
        if !data.measures.contains_key(&key) {
            return Err(rules::plain_error(format!(
                "schema {}/{} not exist",
                key.0, key.1
            )));
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

    /// NotFound for a missing group or measure (`getResource`).
    async fn get(
        &self,
        request: Request<database::MeasureRegistryServiceGetRequest>,
    ) -> Result<Response<database::MeasureRegistryServiceGetResponse>, Status> {
        let md = request
            .into_inner()
            .metadata
            .ok_or_else(|| Status::internal("runtime error: nil pointer dereference"))?;
        let data = self.data.lock().expect("not poisoned");
        match data.measures.get(&measure_key(&md)) {
            Some(m) => Ok(Response::new(database::MeasureRegistryServiceGetResponse {
                measure: Some(m.clone()),
            })),
            None => Err(rules::not_found()),
        }
    }

    /// `registry.go` `Exist` and `groupExist`: both flags with OK; a nil metadata panics at
    /// `req.Metadata.Group` (Internal).
    async fn exist(
        &self,
        request: Request<database::MeasureRegistryServiceExistRequest>,
    ) -> Result<Response<database::MeasureRegistryServiceExistResponse>, Status> {
        let md = request
            .into_inner()
            .metadata
            .ok_or_else(|| Status::internal("runtime error: nil pointer dereference"))?;
        let data = self.data.lock().expect("not poisoned");
        Ok(Response::new(
            database::MeasureRegistryServiceExistResponse {
                has_group: data.groups.contains_key(&md.group),
                has_measure: data.measures.contains_key(&measure_key(&md)),
            },
        ))
    }
}

type WriteStream = Pin<Box<dyn Stream<Item = Result<measure::WriteResponse, Status>> + Send>>;

/// `sendReply` (`measure.go`): the stream's current metadata, the status's enum name, the id.
fn reply(id: u64, status: model::Status, md: common::Metadata) -> measure::WriteResponse {
    measure::WriteResponse {
        message_id: id,
        status: status.as_str_name().to_owned(),
        metadata: Some(md),
    }
}

impl Svc {
    /// What `Write` answers to one valid message at once (`validateWriteRequest`, then
    /// `navigate`); `Succeed` means accepted, acknowledged at the end of the stream.
    fn check_write(
        &self,
        data: &mut Data,
        md: &common::Metadata,
        request: &measure::WriteRequest,
        stream_status: Option<model::Status>,
    ) -> model::Status {
        if let Some(status) = stream_status {
            return status;
        }
        if let Some(status) = self.faults.answer.lock().expect("not poisoned").pop_front() {
            return status;
        }
        let point = request.data_point.as_ref().expect("PGV checked");
        if !rules::timestamp_ok(point.timestamp.as_ref().expect("PGV checked")) {
            return model::Status::InvalidTimestamp;
        }
        let key = measure_key(md);
        let lagging = match data.unapplied.get_mut(&key) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        };
        let known = data.measures.get(&key).filter(|_| !lagging);
        // `validateWriteRequest`: only with a mod_revision is the liaison cache consulted.
        if md.mod_revision > 0 {
            match known {
                None => return model::Status::NotFound,
                Some(m) if m.metadata.as_ref().map_or(0, |m| m.mod_revision) != md.mod_revision => {
                    return model::Status::ExpiredSchema;
                }
                Some(_) => {}
            }
        }
        // `navigate` (`discovery.go`, `navigateByLocator`): an unknown group or one without
        // resource options, an unknown measure, or a missing entity tag: INTERNAL_ERROR.
        let group_ok = data
            .groups
            .get(&md.group)
            .is_some_and(|g| g.resource_opts.is_some());
        let Some(schema) = known.filter(|_| group_ok) else {
            return model::Status::InternalError;
        };
        if !rules::entity_present(schema, point) {
            return model::Status::InternalError;
        }
        model::Status::Succeed
    }

    /// The data node's write (`write_standalone.go`): positional layout, NULLs, version.
    fn store(data: &mut Data, md: &common::Metadata, request: &measure::WriteRequest) {
        let Some(schema) = data.measures.get(&measure_key(md)) else {
            return;
        };
        let point = request.data_point.as_ref().expect("PGV checked");
        let laid = rules::lay_out(schema, point);
        for difference in laid.differences {
            data.mismatches.push(format!("{}: {difference}", md.name));
        }
        if let Some(why) = laid.dropped {
            data.mismatches
                .push(format!("{}: dropped after SUCCEED: {why}", md.name));
            return;
        }
        let ts = point.timestamp.as_ref().expect("PGV checked");
        let mut entity = laid.entity.into_iter();
        let key = (
            md.name.clone(),
            entity.next().unwrap_or_default(),
            entity.collect::<Vec<_>>().join("|"),
            ts.seconds * 1000 + i64::from(ts.nanos / 1_000_000),
        );
        data.series_ids
            .entry((key.0.clone(), key.1.clone(), key.2.clone()))
            .or_default()
            .push(request.message_id);
        let version = rules::version_of(request);
        if rules::replaces(data.points.get(&key).map(|p| p.version), version) {
            data.points.insert(
                key,
                Stored {
                    version,
                    fields: laid.fields,
                },
            );
        }
    }

    /// `handleWriteCleanup`: deferred, so it runs however `Write` returns; it stores what was
    /// accepted and sends one STATUS_SUCCEED per accepted message, in order.
    async fn cleanup(
        &self,
        accepted: Vec<(common::Metadata, measure::WriteRequest)>,
        tx: &mpsc::Sender<Result<measure::WriteResponse, Status>>,
    ) {
        {
            let mut data = self.data.lock().expect("not poisoned");
            for (md, message) in &accepted {
                Svc::store(&mut data, md, message);
                data.message_ids.push(message.message_id);
            }
            data.streams.push(accepted.len());
        }
        let lose = self
            .faults
            .lose_acks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if lose && !accepted.is_empty() {
            let _ = tx
                .send(Err(Status::unavailable(
                    "connection lost after the write (injected: acks lost)",
                )))
                .await;
            return;
        }
        for (md, message) in accepted {
            let _ = tx
                .send(Ok(reply(message.message_id, model::Status::Succeed, md)))
                .await;
        }
    }

    /// `measure.go` `Write`, message by message.
    async fn run_write(
        self,
        mut inbound: Streaming<measure::WriteRequest>,
        tx: mpsc::Sender<Result<measure::WriteResponse, Status>>,
    ) {
        self.data
            .lock()
            .expect("not poisoned")
            .stream_starts
            .push(tokio::time::Instant::now());
        let stream_status = self
            .faults
            .fail_streams
            .lock()
            .expect("not poisoned")
            .pop_front();
        let mut metadata: Option<common::Metadata> = None;
        let mut accepted = Vec::new();
        let end = loop {
            let message = match inbound.message().await {
                Ok(Some(message)) => message,
                // The half-close: `Recv` returns io.EOF and `Write` returns nil (OK).
                Ok(None) => break None,
                Err(status) => break Some(status),
            };
            if self.faults.stall.load(Ordering::Relaxed) {
                // Never answers; the client's deadline ends it.
                std::future::pending::<()>().await;
            }
            if let Err(rules::StreamEnd::Invalid(status)) = rules::pgv_write(&message) {
                break Some(status);
            }
            if let Some(md) = &message.metadata {
                metadata = Some(md.clone());
            }
            let Some(md) = metadata.clone() else {
                // The first message without metadata: `sendReply` cannot reply without
                // metadata, so no STATUS_METADATA_REQUIRED arrives; the plain error does.
                break Some(rules::plain_error(
                    "metadata is required for the first request of gRPC stream",
                ));
            };
            let status = {
                let mut data = self.data.lock().expect("not poisoned");
                let status = self.check_write(&mut data, &md, &message, stream_status);
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
                // Error replies are sent at once, inline.
                let _ = tx.send(Ok(reply(message.message_id, status, md))).await;
            }
        };
        self.cleanup(accepted, &tx).await;
        if let Some(status) = end {
            let _ = tx.send(Err(status)).await;
        }
    }
}

#[tonic::async_trait]
impl measure_service_server::MeasureService for Svc {
    type WriteStream = WriteStream;

    async fn write(
        &self,
        request: Request<Streaming<measure::WriteRequest>>,
    ) -> Result<Response<WriteStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(100_000);
        tokio::spawn(self.clone().run_write(inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
