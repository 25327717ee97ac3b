//! Forwarding to Apache SkyWalking BanyanDB (`export.banyandb`; wire facts in
//! docs/banyandb.md).
//!
//! The exporter is one async task. It receives each drain's deltas from the drain thread
//! ([`crate::export::ExportHandle`]), turns them into points (timestamps in whole
//! milliseconds at the drain, strictly increasing; monotonic message ids that are also the
//! points' versions, so a replay overwrites itself) and queues them at once in a bounded
//! memory queue that spills to a bounded on-disk spool ([`queue`]). Every `flush_interval`
//! (at once while a backlog remains) it writes up to `batch_size` points on one short
//! Write stream, half-closed before the acks are read, and checks every message's status.
//! Failures back off exponentially with full jitter behind a circuit breaker
//! ([`delivery`]); the schema is created or checked first, and again after NOT_FOUND,
//! EXPIRED_SCHEMA or INTERNAL_ERROR ([`schema`], [`client`]). Shutdown flushes within a
//! deadline and spools the rest.

pub mod client;
pub mod delivery;
pub mod point;
pub mod proto;
pub mod queue;
pub mod schema;

use crate::sync::Recover as _;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use self::{
    client::{Client, Outcome},
    delivery::{Backoff, Breaker, CircuitState},
    point::Point,
    queue::{Queue, Spool},
    schema::{Layout, MeasureDef},
};
use crate::{
    config::BanyanDbConfig,
    export::{DrainDeltas, ErrorRecord, ExportHandle, ExporterSnapshot, PublishState},
    kernel::modules::Module,
};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Config(String),
    #[error("{what}: {code:?}: {message}")]
    Rpc {
        what: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("no answer from BanyanDB within {0:?}")]
    Timeout(Duration),
    #[error("incompatible schema: {0}")]
    Incompatible(String),
    #[error("BanyanDB: {0}")]
    Server(String),
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    #[error("{failed} of {sent} points not written ({detail})")]
    Rejected {
        failed: usize,
        sent: usize,
        detail: String,
    },
}

impl ExportError {
    fn rpc(what: &'static str, status: tonic::Status) -> ExportError {
        ExportError::Rpc {
            what,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// Where the exporter stands; each change is logged once with its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExporterState {
    Starting,
    /// Connected and the schema is being checked or created.
    Connecting,
    /// Writes succeed.
    Ok,
    /// BanyanDB answers but refused some writes for now (a schema being applied, an
    /// internal error): retried after a short backoff, the breaker stays closed.
    Retrying,
    /// BanyanDB is unreachable (or rejects the schema or the writes for good): retried with
    /// backoff; the breaker is open between probes.
    Unreachable,
    CircuitOpen,
    /// The stored schema does not fit ours: points stay queued.
    SchemaIncompatible,
    Stopped,
}

impl ExporterState {
    pub const fn name(self) -> &'static str {
        match self {
            ExporterState::Starting => "starting",
            ExporterState::Connecting => "connecting",
            ExporterState::Ok => "ok",
            ExporterState::Retrying => "retrying",
            ExporterState::Unreachable => "unreachable",
            ExporterState::CircuitOpen => "circuit_open",
            ExporterState::SchemaIncompatible => "schema_incompatible",
            ExporterState::Stopped => "stopped",
        }
    }

    /// States an operator should look at.
    const fn is_trouble(self) -> bool {
        matches!(
            self,
            ExporterState::Retrying
                | ExporterState::Unreachable
                | ExporterState::CircuitOpen
                | ExporterState::SchemaIncompatible
        )
    }
}

/// The exporter's counters and state, published to the sinks as an
/// [`ExporterSnapshot`](crate::export::ExporterSnapshot).
#[derive(Debug)]
pub struct ExportStats {
    /// Points acknowledged with STATUS_SUCCEED.
    pub written: AtomicU64,
    /// Points refused for good (STATUS_INVALID_TIMESTAMP): not retried.
    pub rejected: AtomicU64,
    /// Point write attempts that failed and will be retried.
    pub retried: AtomicU64,
    /// Points dropped because the spool was full (the oldest), or could not be spooled.
    pub dropped: AtomicU64,
    pub queue_points: AtomicU64,
    pub spool_bytes: AtomicU64,
    /// Spool records skipped because they were torn or failed their checksum.
    pub spool_corrupt_records: AtomicU64,
    /// `CircuitState` as a number.
    pub circuit: AtomicU8,
    state: Mutex<(ExporterState, String)>,
    last_error: Mutex<Option<ErrorRecord>>,
}

impl Default for ExportStats {
    fn default() -> ExportStats {
        ExportStats {
            written: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            queue_points: AtomicU64::new(0),
            spool_bytes: AtomicU64::new(0),
            spool_corrupt_records: AtomicU64::new(0),
            circuit: AtomicU8::new(0),
            state: Mutex::new((ExporterState::Starting, String::new())),
            last_error: Mutex::new(None),
        }
    }
}

impl PublishState for ExportStats {
    fn snapshot(&self) -> ExporterSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ExporterSnapshot {
            name: ExportStats::NAME,
            state: self.state().name(),
            written: load(&self.written),
            retried: load(&self.retried),
            rejected: load(&self.rejected),
            queue_points: load(&self.queue_points),
            spool_bytes: load(&self.spool_bytes),
            dropped: load(&self.dropped),
            spool_corrupt_records: load(&self.spool_corrupt_records),
            circuit: self.circuit_state(),
            last_error: self.last_error(),
        }
    }
}

impl ExportStats {
    pub const NAME: &'static str = "banyandb";

    pub fn state(&self) -> ExporterState {
        self.state.lock().recover().0
    }

    /// Moves to `state`; a change is logged once (WARN into trouble, INFO otherwise).
    fn transition(&self, state: ExporterState, reason: &str) {
        let mut current = self.state.lock().recover();
        if current.0 == state {
            return;
        }
        let from = current.0;
        *current = (state, reason.to_owned());
        drop(current);
        if state.is_trouble() {
            tracing::warn!(
                from = from.name(),
                to = state.name(),
                "BanyanDB exporter: {reason}"
            );
        } else {
            tracing::info!(
                from = from.name(),
                to = state.name(),
                "BanyanDB exporter: {reason}"
            );
        }
    }

    pub fn last_error(&self) -> Option<ErrorRecord> {
        self.last_error.lock().recover().clone()
    }

    fn set_error(&self, error: String) {
        *self.last_error.lock().recover() = Some(ErrorRecord {
            message: error,
            at: std::time::SystemTime::now(),
            past: false,
        });
    }

    /// Writes succeed again: the last error is history.
    fn error_is_past(&self) {
        if let Some(error) = self.last_error.lock().recover().as_mut() {
            error.past = true;
        }
    }

    pub fn circuit_state(&self) -> CircuitState {
        match self.circuit.load(Ordering::Relaxed) {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }
}

/// What a failed attempt says about BanyanDB, and so how soon to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// No answer (refused, reset, deadline): counts towards the breaker.
    Unreachable,
    /// BanyanDB answered but not yet (a schema being applied, an internal error, a measure
    /// not found right after its creation): short backoff, breaker untouched.
    Transient,
    /// BanyanDB refused a request for good as it stands (validation, authentication): a
    /// slow retry, since an operator has to act.
    Refused,
    /// The stored schema does not fit ours.
    Incompatible,
}

impl Failure {
    fn of(err: &ExportError) -> Failure {
        use tonic::Code;
        match err {
            ExportError::Timeout(_) => Failure::Unreachable,
            ExportError::Rpc { code, .. } => match code {
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::ResourceExhausted => Failure::Unreachable,
                Code::NotFound | Code::Internal => Failure::Transient,
                _ => Failure::Refused,
            },
            ExportError::Server(_) | ExportError::Rejected { .. } => Failure::Transient,
            ExportError::Incompatible(_) => Failure::Incompatible,
            ExportError::Config(_) | ExportError::Spool(_) => Failure::Refused,
        }
    }
}

/// Everything the exporter runs with; `new` derives it from the configuration, tests tune
/// the delivery knobs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config: BanyanDbConfig,
    /// The `node` tag.
    pub node: String,
    /// The drain interval: the measures' interval.
    pub interval: Duration,
    pub modules: Vec<Module>,
    /// Points the memory queue holds before spilling to the spool.
    pub memory_points: usize,
    pub backoff_base: Duration,
    /// The longest wait between attempts while BanyanDB is unreachable or answers
    /// transient errors: it bounds how long recovery takes once BanyanDB is back.
    pub backoff_cap: Duration,
    /// The wait between attempts that BanyanDB refused for good (validation,
    /// authentication) or when the stored schema is incompatible: an operator must act.
    pub refused_retry: Duration,
    /// Consecutive unreachable attempts that open the breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker waits before a half-open probe.
    pub breaker_cooldown: Duration,
    /// How long the final flush may take at shutdown.
    pub shutdown_deadline: Duration,
    /// A ready channel instead of one to `config.addr` (tests run in memory).
    pub channel: Option<tonic::transport::Channel>,
}

impl Settings {
    pub fn new(config: &BanyanDbConfig, interval: Duration, modules: Vec<Module>) -> Settings {
        let node = config.node.clone().unwrap_or_else(hostname);
        Settings {
            node,
            interval,
            modules,
            memory_points: (config.batch_size.0 as usize * 10).max(10_000),
            // Recovery within about a second of BanyanDB answering again: an unreachable
            // server costs one refused connection (or one one-point probe) a second.
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            refused_retry: Duration::from_secs(10),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(1),
            shutdown_deadline: config.timeout.0,
            channel: None,
            config: config.clone(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A running exporter.
#[derive(Debug)]
pub struct Exporter {
    handle: ExportHandle,
    stats: Arc<ExportStats>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Exporter {
    /// Opens the spool and starts the task (inside a tokio runtime). Connecting and the
    /// schema come later, in the task: BanyanDB may well be away at start.
    pub fn start(settings: Settings) -> Result<Exporter, ExportError> {
        let stats = Arc::new(ExportStats::default());
        let client = match &settings.channel {
            Some(channel) => Client::with_channel(&settings.config, channel.clone())?,
            None => Client::new(&settings.config)?,
        };
        let (spool, max_spooled_id) = Spool::open(
            &settings.config.spool.dir,
            settings.config.spool.max_bytes.0,
        )
        .map_err(|err| {
            ExportError::Config(format!(
                "export.banyandb.spool.dir: {}: {err}",
                settings.config.spool.dir.display()
            ))
        })?;
        // Ids keep increasing across restarts: past anything spooled, and past the clock
        // in microseconds (a restart never reuses the previous run's ids).
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let queue = Queue::new(spool, settings.memory_points);
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let worker = Worker {
            client,
            queue,
            stats: Arc::clone(&stats),
            breaker: Breaker::new(settings.breaker_threshold, settings.breaker_cooldown),
            backoff: Backoff::new(settings.backoff_base, settings.backoff_cap),
            layouts: None,
            measures: schema::measures(&Module::ALL),
            emitted: schema::measures(&settings.modules),
            next_id: max_spooled_id.max(clock),
            connected: false,
            last_failure: None,
            last_timestamp_ms: 0,
            in_flight: Vec::new(),
            settings,
        };
        worker.publish();
        let task = tokio::spawn(worker.run(rx, stopped));
        Ok(Exporter {
            handle: ExportHandle::new(tx),
            stats,
            stop,
            task,
        })
    }

    pub fn handle(&self) -> ExportHandle {
        self.handle.clone()
    }

    pub fn stats(&self) -> Arc<ExportStats> {
        Arc::clone(&self.stats)
    }

    /// Takes what was submitted, flushes within the shutdown deadline, spools the rest.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        drop(self.handle);
        if self.task.await.is_err() {
            tracing::warn!("the BanyanDB exporter task panicked");
        }
    }
}

struct Worker {
    settings: Settings,
    client: Client,
    queue: Queue,
    stats: Arc<ExportStats>,
    breaker: Breaker,
    backoff: Backoff,
    /// The stored schema, by `Point::module`; `None` until (re)checked.
    layouts: Option<HashMap<u32, Layout>>,
    /// Every module's measure: all are created, so that points spooled by a run with
    /// other modules enabled can still be written.
    measures: Vec<MeasureDef>,
    /// The measures of the enabled modules: what drains turn into.
    emitted: Vec<MeasureDef>,
    next_id: u64,
    /// Whether the last contact worked (so that "connected" is logged once per recovery).
    connected: bool,
    /// The kind of the previous failed attempt: a new kind starts a new backoff sequence
    /// (transient refusals after an outage back off from the base, not from the outage's cap).
    last_failure: Option<Failure>,
    last_timestamp_ms: i64,
    /// Points taken from the queue for the write in progress (put back if it is dropped).
    in_flight: Vec<Point>,
}

/// How a flush went, when the stream itself worked.
struct Flushed {
    failed: usize,
    detail: Option<String>,
    sent: usize,
}

impl Worker {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<DrainDeltas>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut next = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                drain = rx.recv() => match drain {
                    Some(drain) => self.accept(&drain),
                    None => break,
                },
                () = tokio::time::sleep_until(next) => {
                    // A stop interrupts a write in progress (its points are put back).
                    tokio::select! {
                        biased;
                        _ = &mut stop => break,
                        at = self.attempt() => next = at,
                    }
                }
            }
        }
        rx.close();
        while let Ok(drain) = rx.try_recv() {
            self.accept(&drain);
        }
        let deadline = Instant::now() + self.settings.shutdown_deadline;
        let flushed = tokio::time::timeout_at(deadline, self.final_flush()).await;
        let cut_short = flushed.is_err();
        let in_flight = std::mem::take(&mut self.in_flight);
        self.queue.put_back(in_flight);
        let left = self.queue.len();
        if let Err(err) = self.queue.persist() {
            self.stats.set_error(format!("spooling at shutdown: {err}"));
            tracing::error!("BanyanDB exporter: spooling at shutdown: {err}");
        }
        if left > 0 {
            tracing::info!(
                points = left,
                cut_short,
                dir = %self.settings.config.spool.dir.display(),
                "BanyanDB exporter stopped; undelivered points are in the spool"
            );
        }
        self.stats.transition(ExporterState::Stopped, "stopped");
        self.publish();
    }

    fn publish(&self) {
        self.stats.queue_points.store(
            self.queue.len() + self.in_flight.len() as u64,
            Ordering::Relaxed,
        );
        self.stats
            .spool_bytes
            .store(self.queue.spool_bytes(), Ordering::Relaxed);
        self.stats
            .circuit
            .store(self.breaker.state() as u8, Ordering::Relaxed);
        self.stats
            .spool_corrupt_records
            .store(self.queue.spool_corrupt_records(), Ordering::Relaxed);
    }

    /// Queues a drain's points at once.
    fn accept(&mut self, drain: &DrainDeltas) {
        // Strictly increasing whole milliseconds: two drains never share a timestamp
        // (the same series and timestamp would overwrite each other).
        let timestamp = point::millis(drain.at).max(self.last_timestamp_ms + 1);
        self.last_timestamp_ms = timestamp;
        let points = point::points(
            drain,
            &self.emitted,
            &self.settings.node,
            timestamp,
            &mut self.next_id,
        );
        let count = points.len() as u64;
        match self.queue.push(points) {
            Ok(0) => {}
            Ok(dropped) => {
                let before = self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
                if (before + dropped).ilog2() != before.max(1).ilog2() || before == 0 {
                    tracing::warn!(
                        dropped_total = before + dropped,
                        "BanyanDB exporter: the spool is full; the oldest points are dropped"
                    );
                }
                self.stats.set_error(format!(
                    "the spool is full ({} bytes): dropped the {dropped} oldest points",
                    self.settings.config.spool.max_bytes.0
                ));
            }
            Err(err) => {
                self.stats.dropped.fetch_add(count, Ordering::Relaxed);
                tracing::error!("BanyanDB exporter: cannot spool {count} points: {err}; dropped");
                self.stats
                    .set_error(format!("cannot spool {count} points: {err}"));
            }
        }
        self.publish();
    }

    async fn bootstrap(&mut self) -> Result<(), ExportError> {
        let version = self.client.api_version().await?;
        if !self.connected {
            self.connected = true;
            tracing::info!(
                addr = %self.settings.config.addr.0,
                version = version.as_deref().unwrap_or("unknown"),
                "connected to BanyanDB; checking the schema"
            );
        }
        self.stats
            .transition(ExporterState::Connecting, "connected; checking the schema");
        self.client.ensure_group(&self.settings.config).await?;
        let mut layouts = HashMap::new();
        for def in &self.measures {
            let layout = self
                .client
                .ensure_measure(def, self.settings.interval)
                .await?;
            let index = Module::ALL
                .iter()
                .position(|m| *m == def.module)
                .unwrap_or(0);
            layouts.insert(index as u32, layout);
        }
        self.layouts = Some(layouts);
        tracing::debug!(
            group = %self.settings.config.group.0,
            measures = self.measures.len(),
            "BanyanDB schema ready"
        );
        Ok(())
    }

    /// One delivery step; returns when to try again.
    async fn attempt(&mut self) -> Instant {
        let now = Instant::now();
        let flush_interval = self.settings.config.flush_interval.0;
        if self.queue.is_empty() {
            return now + flush_interval;
        }
        if !self.breaker.allow(now.into_std()) {
            self.publish();
            return self
                .breaker
                .reopens_at()
                .map_or(now + flush_interval, Instant::from_std);
        }
        self.publish();
        if self.layouts.is_none()
            && let Err(err) = self.bootstrap().await
        {
            return self.failed(&err);
        }
        let probe = self.breaker.state() == CircuitState::HalfOpen;
        let size = if probe {
            1
        } else {
            self.settings.config.batch_size.0 as usize
        };
        match self.flush(size).await {
            Ok(flushed) => {
                // The stream worked: BanyanDB is reachable, whatever it said per message.
                self.breaker.success();
                if flushed.failed > 0 {
                    let err = ExportError::Rejected {
                        failed: flushed.failed,
                        sent: flushed.sent,
                        detail: flushed.detail.unwrap_or_default(),
                    };
                    return self.failed(&err);
                }
                self.backoff.reset();
                self.last_failure = None;
                self.stats.error_is_past();
                self.stats.transition(ExporterState::Ok, "writes succeed");
                self.publish();
                if self.queue.is_empty() {
                    now + flush_interval
                } else {
                    Instant::now()
                }
            }
            Err(err) => self.failed(&err),
        }
    }

    /// Records a failed attempt; returns when to try again.
    fn failed(&mut self, err: &ExportError) -> Instant {
        let now = Instant::now();
        let message = err.to_string();
        self.stats.set_error(message.clone());
        let failure = Failure::of(err);
        if self.last_failure.replace(failure) != Some(failure) {
            self.backoff.reset();
        }
        let next = match failure {
            Failure::Incompatible => {
                // Not BanyanDB's health: keep the data queued, look again now and then.
                self.layouts = None;
                self.stats.transition(
                    ExporterState::SchemaIncompatible,
                    &format!("{message}; points stay queued"),
                );
                now + self.settings.refused_retry
            }
            Failure::Transient => {
                self.stats.transition(
                    ExporterState::Retrying,
                    &format!("writes not accepted yet ({message}); retrying"),
                );
                now + self.backoff.next_delay()
            }
            Failure::Refused => {
                self.layouts = None;
                self.stats.transition(
                    ExporterState::Unreachable,
                    &format!(
                        "{message}; retrying every {:?}",
                        self.settings.refused_retry
                    ),
                );
                now + self.settings.refused_retry
            }
            Failure::Unreachable => {
                // After a connection failure the schema is checked again.
                self.layouts = None;
                self.connected = false;
                self.breaker.failure(now.into_std());
                let mut next = now + self.backoff.next_delay();
                if let Some(reopen) = self.breaker.reopens_at() {
                    next = next.max(Instant::from_std(reopen));
                    self.stats.transition(
                        ExporterState::CircuitOpen,
                        &format!(
                            "{message}; circuit open, probing every {:?}",
                            self.settings.breaker_cooldown
                        ),
                    );
                } else {
                    self.stats
                        .transition(ExporterState::Unreachable, &format!("{message}; retrying"));
                }
                next
            }
        };
        self.publish();
        tracing::debug!(
            ?failure,
            "BanyanDB exporter: {message}; next try in {:?}",
            next - now
        );
        next
    }

    /// Writes up to `size` of the oldest points; undelivered ones go back in front.
    async fn flush(&mut self, size: usize) -> Result<Flushed, ExportError> {
        let Some(layouts) = self.layouts.clone() else {
            return Err(ExportError::Server(
                "the schema is not checked yet".to_owned(),
            ));
        };
        let mut batch = self.queue.take(size)?;
        // A point of no known measure (a damaged spool record) can never be written.
        let before = batch.len();
        batch.retain(|p| layouts.contains_key(&p.module));
        if batch.len() < before {
            let unwritable = (before - batch.len()) as u64;
            self.stats.rejected.fetch_add(unwritable, Ordering::Relaxed);
            self.stats
                .set_error(format!("dropped {unwritable} points of no known measure"));
        }
        self.in_flight = batch;
        self.publish();
        let result = self.client.write(&self.in_flight, &layouts).await;
        let batch = std::mem::take(&mut self.in_flight);
        let sent = batch.len();
        let outcomes = match result {
            Ok(outcomes) => outcomes,
            Err(err) => {
                self.stats.retried.fetch_add(sent as u64, Ordering::Relaxed);
                self.queue.put_back(batch);
                self.publish();
                return Err(err);
            }
        };
        let mut retry = Vec::new();
        let mut schema_stale = false;
        let mut detail = None;
        let (mut written, mut rejected) = (0, 0);
        for (point, outcome) in batch.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Succeeded => written += 1,
                Outcome::InvalidTimestamp => {
                    // Permanent: retrying the same timestamp cannot succeed.
                    rejected += 1;
                    detail.get_or_insert_with(|| {
                        format!(
                            "STATUS_INVALID_TIMESTAMP for {} at {} ms: dropped",
                            point.workload, point.timestamp_ms
                        )
                    });
                }
                Outcome::NotFound
                | Outcome::ExpiredSchema
                | Outcome::InternalError
                | Outcome::SchemaNotApplied => {
                    // NOT_FOUND: the group or measure is gone; EXPIRED_SCHEMA: our
                    // mod_revision is old; INTERNAL_ERROR: also what an unknown measure
                    // gets. Each time: check the schema again, then retry.
                    schema_stale = true;
                    detail.get_or_insert_with(|| format!("{outcome:?}"));
                    retry.push(point);
                }
                Outcome::Other | Outcome::NoReply => {
                    detail.get_or_insert_with(|| format!("{outcome:?}"));
                    retry.push(point);
                }
            }
        }
        self.stats.written.fetch_add(written, Ordering::Relaxed);
        self.stats.rejected.fetch_add(rejected, Ordering::Relaxed);
        self.stats
            .retried
            .fetch_add(retry.len() as u64, Ordering::Relaxed);
        if rejected > 0
            && let Some(detail) = &detail
        {
            self.stats.set_error(detail.clone());
        }
        if schema_stale {
            self.layouts = None;
        }
        let failed = retry.len();
        self.queue.put_back(retry);
        self.queue.settle();
        self.publish();
        Ok(Flushed {
            failed,
            detail,
            sent,
        })
    }

    /// At shutdown: write while it works, no backoff.
    async fn final_flush(&mut self) {
        let batch = self.settings.config.batch_size.0 as usize;
        for _ in 0..3 {
            if self.queue.is_empty() {
                return;
            }
            if self.layouts.is_none() && self.bootstrap().await.is_err() {
                continue;
            }
            while !self.queue.is_empty() {
                match self.flush(batch).await {
                    Ok(flushed) if flushed.failed == 0 => {}
                    _ => break,
                }
            }
        }
    }
}
