//! The BanyanDB exporter against a faithful in-process BanyanDB stand-in (no root, no
//! kernel): schema bootstrap, writes, outages, the spool, the breaker, incompatible schemas.
//!
//! The stand-in (`sidecar_testkit::banyandb`) enforces upstream's rules, each cited to its
//! upstream file there: groups named by `metadata.name`, the validators' required fields,
//! registry codes, Write's immediate error replies and acks only at the end of the stream,
//! positional storage with NULLs, the higher version winning. It starts with no group and no
//! measure. Faults: refused connections (stopped), stalls, injected statuses, lost acks, a
//! schema that takes a while to apply, restarts that keep the data.

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

use sidecar_testkit::banyandb::StandIn;

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
    counts.page_cache.read_attempts = 2 * (i + 1);
    counts.page_cache.misses = i + 1;
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
        // Every module's measure, enabled or not (points spooled by another run may need it).
        assert_eq!(
            (data.group_creates, data.measure_creates),
            (1, Module::ALL.len() as u32)
        );
        let group = &data.groups["sidecar"];
        assert_eq!(group.catalog, common::Catalog::Measure as i32);
        let opts = group.resource_opts.as_ref().unwrap();
        assert_eq!(opts.shard_num, 1);
        assert_eq!(
            opts.ttl.as_ref().unwrap().unit,
            common::interval_rule::Unit::Day as i32
        );
        assert_eq!(opts.ttl.as_ref().unwrap().num, 7);
        for name in Module::ALL.map(Module::name) {
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
    assert_eq!(stats.state().name(), "stopped");

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
        assert_eq!(
            (data.group_creates, data.measure_creates),
            (1, Module::ALL.len() as u32)
        );
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
    assert_eq!(stats.state().name(), "circuit_open");
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
        // Someone else's page_cache measure, with the field names of an older sidecar
        // (accepted as aliases): missed_pages is a STRING.
        let def = sidecar::export::banyandb::schema::MeasureDef::for_module(Module::PageCache);
        let mut measure = def.measure("sidecar", Duration::from_secs(10));
        measure.fields[1].name = "missed_pages".to_owned();
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
        || stats.state().name() == "schema_incompatible",
    )
    .await;
    let error = stats.last_error().unwrap().message;
    assert!(error.contains("incompatible schema"), "{error}");
    assert!(error.contains("\"missed_pages\" is not INT"), "{error}");
    assert_eq!(stored(&standin), 0);
    assert_eq!(
        load(&stats, &stats.queue_points),
        3 * POINTS_PER_DRAIN as u64
    );
    // The status API shows it.
    let status = sidecar::status::Status::new(sidecar::status::KernelFacts::default());
    status.add_exporter(Arc::clone(&stats) as Arc<dyn sidecar::export::PublishState>);
    assert_eq!(status.exporters()[0].state, "schema_incompatible");
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
        stats.last_error().map(|e| e.message).as_deref(),
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
    // The field-report bug: a group named in metadata.group is refused as BanyanDB does.
    let mut misnamed = group.clone();
    let md = misnamed.metadata.as_mut().unwrap();
    (md.group, md.name) = (md.name.clone(), String::new());
    let err = groups
        .create(database::GroupRegistryServiceCreateRequest {
            group: Some(misnamed),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::Unknown, "metadata.name is required")
    );
    // A measure group needs its resource options (`GroupForNonProperty`).
    let mut bare = group.clone();
    bare.resource_opts = None;
    let err = groups
        .create(database::GroupRegistryServiceCreateRequest { group: Some(bare) })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::Unknown, "group resourceOpts is nil")
    );
    // PGV: a zero shard count is InvalidArgument.
    let mut zero = group.clone();
    zero.resource_opts.as_mut().unwrap().shard_num = 0;
    let err = groups
        .create(database::GroupRegistryServiceCreateRequest { group: Some(zero) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
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

    // Positional storage: a missing field is acknowledged and stored as NULL (upstream never
    // reports it; the stand-in records it for our assertions).
    let mut short = request(5);
    short.data_point.as_mut().unwrap().fields.pop();
    short
        .data_point
        .as_mut()
        .unwrap()
        .timestamp
        .as_mut()
        .unwrap()
        .seconds += 1;
    let mut replies = writer
        .write(tokio_stream::iter(vec![short]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replies.message().await.unwrap().unwrap().status,
        "STATUS_SUCCEED"
    );
    {
        let data = standin.data.lock().unwrap();
        assert_eq!(data.mismatches.len(), 1, "{:?}", data.mismatches);
        let stored = data.series("page_cache", "n", "w");
        assert_eq!(stored.len(), 2);
        assert_eq!(
            stored.values().last().unwrap().fields,
            [Some(1), Some(2), Some(3), None]
        );
    }
    // Without an entity tag's position: INTERNAL_ERROR (`navigate`), at once.
    let mut headless = request(6);
    headless.data_point.as_mut().unwrap().tag_families[0]
        .tags
        .truncate(1);
    let mut replies = writer
        .write(tokio_stream::iter(vec![headless]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replies.message().await.unwrap().unwrap().status,
        "STATUS_INTERNAL_ERROR"
    );
    // A first message without metadata ends the stream with Unknown, no per-message reply.
    let mut anonymous = request(7);
    anonymous.metadata = None;
    let err = async {
        let mut replies = writer
            .write(tokio_stream::iter(vec![anonymous]))
            .await?
            .into_inner();
        replies.message().await
    }
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unknown);
    assert!(err.message().contains("metadata is required"), "{err:?}");
    // An equal version keeps the stored point; a higher one replaces it.
    let mut same = request(1);
    same.data_point.as_mut().unwrap().fields[0] = model::FieldValue {
        value: Some(model::field_value::Value::Int(model::Int { value: 99 })),
    };
    let mut higher = same.clone();
    higher.message_id = 8;
    higher.data_point.as_mut().unwrap().version = 8;
    for (write, expected) in [(same, 1), (higher, 99)] {
        let mut replies = writer
            .write(tokio_stream::iter(vec![write]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            replies.message().await.unwrap().unwrap().status,
            "STATUS_SUCCEED"
        );
        let data = standin.data.lock().unwrap();
        let first = *data.series("page_cache", "n", "w").keys().next().unwrap();
        assert_eq!(
            data.series("page_cache", "n", "w")[&first].fields[0],
            Some(expected)
        );
    }

    // A restart keeps the data; while stopped, connections are refused.
    standin.stop().await;
    let refused = tonic::transport::Endpoint::from_shared(format!("http://{}", standin.addr))
        .unwrap()
        .connect()
        .await;
    assert!(refused.is_err());
    standin.restart().await;
    assert_eq!(stored(&standin), 2);
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
            .is_some_and(|e| e.message.contains("Unauthenticated"))
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
    let pki = sidecar_testkit::pki::TestPki::new().unwrap();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &pki.server.cert,
            &pki.server.key,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(&pki.ca));
    let standin = StandIn::start_with(Some(tls)).await;
    let spool = tempfile::tempdir().unwrap();
    let mut settings = settings(&standin, spool.path());
    settings.config.tls = Some(
        sidecar::config::Config::parse(
            &format!(
                "export:\n  banyandb:\n    tls:\n      ca: {0}/ca.pem\n      cert: {0}/client.pem\n      key: {0}/client.key\n",
                pki.dir().display()
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

/// Recovery on tokio's paused clock (no wall-clock timing), with the production delivery
/// settings: a 30 s outage, then a BanyanDB whose first five write streams answer
/// STATUS_INTERNAL_ERROR. The transient refusals follow the short backoff (each wait at most
/// its ceiling: 100, 200, 400, 800 ms, then the 1 s cap), never the breaker's open period,
/// and the queue is empty within a second of BanyanDB accepting writes again.
#[tokio::test(start_paused = true)]
async fn recovery_takes_seconds_on_a_paused_clock() {
    use tokio::time::Instant;
    let (standin, channel) = StandIn::start_in_memory().await;
    let spool = tempfile::tempdir().unwrap();
    let mut config = BanyanDbConfig {
        enabled: true,
        ..BanyanDbConfig::default()
    };
    config.spool.dir = spool.path().to_owned();
    let mut settings = Settings::new(&config, Duration::from_secs(1), Module::ALL.to_vec());
    settings.node = NODE.to_owned();
    settings.channel = Some(channel);
    let (backoff_cap, breaker_cooldown) = (settings.backoff_cap, settings.breaker_cooldown);
    assert!(backoff_cap <= Duration::from_secs(1) && breaker_cooldown <= Duration::from_secs(1));
    let exporter = Exporter::start(settings).unwrap();
    let stats = exporter.stats();
    let handle = exporter.handle();
    handle.submit(drain(0));
    wait_until("the first drain is stored", Duration::from_secs(10), || {
        stored(&standin) == POINTS_PER_DRAIN
    })
    .await;

    standin.stop().await;
    for i in 1..=30 {
        handle.submit(drain(i));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(stats.circuit_state(), CircuitState::Open);
    assert_eq!(stats.state().name(), "circuit_open");
    let streams_before = standin.data.lock().unwrap().stream_starts.len();

    standin
        .faults
        .fail_streams
        .lock()
        .unwrap()
        .extend([model::Status::InternalError; 5]);
    let back = Instant::now();
    standin.restart().await;
    let mut circuit_opened = false;
    wait_until("every drain is stored", Duration::from_secs(60), || {
        circuit_opened |= stats.circuit_state() == CircuitState::Open
            && standin.data.lock().unwrap().stream_starts.len() > streams_before;
        stored(&standin) == 31 * POINTS_PER_DRAIN && load(&stats, &stats.queue_points) == 0
    })
    .await;
    let emptied = Instant::now();
    let starts: Vec<Instant> =
        standin.data.lock().unwrap().stream_starts[streams_before..].to_vec();
    assert!(
        starts.len() >= 6,
        "five refused streams and a good one: {starts:?}"
    );
    // The first contact: within the breaker's probe period of BanyanDB coming back.
    assert!(starts[0] - back <= breaker_cooldown + Duration::from_millis(10));
    // Each transient refusal waits at most its backoff ceiling, not a breaker period.
    let ceilings = [100, 200, 400, 800, 1000].map(Duration::from_millis);
    for (gap, ceiling) in starts.windows(2).take(5).map(|w| w[1] - w[0]).zip(ceilings) {
        assert!(
            gap <= ceiling + Duration::from_millis(10),
            "gap {gap:?} > {ceiling:?}: {starts:?}"
        );
    }
    assert!(
        !circuit_opened,
        "transient statuses must not open the breaker"
    );
    // Healthy writes from the sixth stream on: the queue empties at once.
    assert!(
        emptied - starts[5] <= Duration::from_millis(100),
        "{:?}",
        emptied - starts[5]
    );
    assert!(
        emptied - back < Duration::from_secs(4),
        "recovery took {:?}",
        emptied - back
    );
    assert_eq!(misses(&standin), expected_misses(0..31));
    assert_eq!(stats.state().name(), "ok");
    let error = stats.last_error().unwrap();
    assert!(
        error.past,
        "the last error is history once writes succeed: {error:?}"
    );
    exporter.shutdown().await;
    assert_clean(&standin, false);
}

/// A stream whose points were stored but whose acks were lost: the points are sent again
/// with the same versions, and BanyanDB keeps one of each (no double count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_are_resent_with_the_same_version_and_counted_once() {
    let standin = StandIn::start().await;
    let spool = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(settings(&standin, spool.path())).unwrap();
    let stats = exporter.stats();
    exporter.handle().submit(drain(0));
    wait_until("the first drain is stored", Duration::from_secs(10), || {
        stored(&standin) == POINTS_PER_DRAIN
    })
    .await;
    standin
        .faults
        .lose_acks
        .store(2, std::sync::atomic::Ordering::Relaxed);
    for i in 1..10 {
        exporter.handle().submit(drain(i));
    }
    wait_until(
        "every drain is stored and acknowledged",
        Duration::from_secs(10),
        || load(&stats, &stats.queue_points) == 0 && stored(&standin) == 10 * POINTS_PER_DRAIN,
    )
    .await;
    exporter.shutdown().await;
    let data = standin.data.lock().unwrap();
    let resent = data.message_ids.len() - 10 * POINTS_PER_DRAIN;
    assert!(resent > 0, "the unacknowledged points were sent again");
    drop(data);
    // Each drain's misses exactly once, despite the resends.
    assert_eq!(misses(&standin), expected_misses(0..10));
    assert_clean(&standin, false);
}

/// A measure that the server does not apply at once (writes right after its creation find
/// it unknown: NOT_FOUND, since our writes carry the measure's mod_revision) is retried on
/// the short backoff and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_applied_late_is_retried_quickly() {
    let standin = StandIn::start().await;
    standin
        .faults
        .schema_lag
        .store(2, std::sync::atomic::Ordering::Relaxed);
    let spool = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(settings(&standin, spool.path())).unwrap();
    let stats = exporter.stats();
    for i in 0..3 {
        exporter.handle().submit(drain(i));
    }
    wait_until("every drain is stored", Duration::from_secs(10), || {
        stored(&standin) == 3 * POINTS_PER_DRAIN
    })
    .await;
    assert!(standin.data.lock().unwrap().statuses["STATUS_NOT_FOUND"] >= 1);
    assert_eq!(stats.circuit_state(), CircuitState::Closed);
    exporter.shutdown().await;
    assert_eq!(misses(&standin), expected_misses(0..3));
    assert_clean(&standin, false);
}
