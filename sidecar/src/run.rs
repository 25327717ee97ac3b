//! `sidecar run`: attach, drain every interval, serve.

use std::{
    process::ExitCode,
    sync::{Arc, RwLock, mpsc},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use tracing::{error, info, warn};

use crate::{
    aggregate::aggregate,
    config::{Config, Unmatched},
    export::{
        DrainDeltas, ExportHandle,
        banyandb::{Exporter, Settings},
    },
    grpc,
    http::{self, HttpState},
    kernel::{Kernel, modules::Module},
    privilege,
    startup::{
        EXIT_FAILURE, EXIT_NO_MODULE, EXIT_NO_TRACEFS, EXIT_PRIVILEGE, module_enabled, start_kernel,
    },
    status::{KernelFacts, Status},
    store::{self, Store},
    workload::{Classifier, WorkloadNames},
};

/// The first drain happens after this long at most.
const FIRST_DRAIN_AFTER: Duration = Duration::from_secs(1);

pub fn run(config: Config) -> ExitCode {
    // The order matters: one clear line for a missing privilege; ports before the kernel,
    // so that a port in use fails with nothing attached; the kernel while this is the only
    // thread, so that the capabilities dropped after it are gone from every thread.
    if let Some(why) = privilege::missing_load_privilege() {
        error!("{why}");
        return ExitCode::from(EXIT_PRIVILEGE);
    }
    let listeners = match Listeners::bind(&config) {
        Ok(listeners) => listeners,
        Err(err) => {
            error!("{err:#}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let (kernel, tracefs) = match start_kernel(&config, true) {
        Ok(loaded) => loaded,
        Err(err) => {
            error!("{err:#}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match kernel.switch_method() {
        (method, None) => info!("epoch switch: {}", method.describe()),
        (method, Some(why)) => warn!(
            "epoch switch: {} (this kernel refused the map-in-map slot replacement: {why})",
            method.describe()
        ),
    }
    if !tracefs.available && !kernel.modules().values().any(|s| s.is_usable()) {
        error!(
            "tracefs is unavailable and could not be mounted: {}",
            tracefs.description
        );
        return ExitCode::from(EXIT_NO_TRACEFS);
    }
    let held = privilege::CapabilitySet::effective();
    // Leave uid 0 first (that needs CAP_SETUID and CAP_SETGID, which go next), after giving
    // the new account the spool it will write.
    let run_as = match privilege::RunAs::resolve(&config.privileges) {
        Ok(run_as) => run_as,
        Err(err) => {
            error!("{err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if !run_as.is_root() {
        let banyandb = &config.export.banyandb;
        if banyandb.enabled
            && let Err(err) = privilege::give_to(&banyandb.spool.dir, run_as)
        {
            error!(
                "export.banyandb.spool.dir: {}: cannot give it to uid {}: {err}",
                banyandb.spool.dir.display(),
                run_as.uid
            );
            return ExitCode::from(EXIT_FAILURE);
        }
        if let Err(err) = privilege::switch_user(run_as) {
            error!(
                "cannot switch to uid {} gid {} (privileges): {err}",
                run_as.uid, run_as.gid
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    let mut kernel = kernel;
    match privilege::drop_after_attach(|| kernel.probe_drain()) {
        Ok(privilege::AfterAttach::DroppedAll) => {
            info!(dropped = %held, "attached: capabilities dropped");
        }
        Ok(kept @ privilege::AfterAttach::KeptForDrain { .. }) => {
            warn!(held = %held, "attached: {kept}");
        }
        Err(err) => {
            error!("attached, but the maps cannot be drained: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    if let Err(err) = privilege::no_new_privileges() {
        warn!("could not set no_new_privs: {err}");
    }
    info!(
        uid = run_as.uid,
        gid = run_as.gid,
        "running unprivileged: no supplementary groups, no_new_privs"
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sidecar-rt")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            error!("cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = match runtime.block_on(serve(config, listeners, kernel, tracefs.description)) {
        Ok(code) => code,
        Err(err) => {
            error!("{err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    };
    // A task stuck past shutdown_timeout must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

/// The HTTP and gRPC listening sockets, bound before anything else happens.
struct Listeners {
    metrics: std::net::TcpListener,
    grpc: std::net::TcpListener,
}

impl Listeners {
    fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let bind = |addr: std::net::SocketAddr, key: &str| {
            let listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr} ({key})"))?;
            listener
                .set_nonblocking(true)
                .with_context(|| format!("cannot listen on {addr} ({key})"))?;
            anyhow::Ok(listener)
        };
        Ok(Listeners {
            metrics: bind(config.server.metrics_addr.0, "server.metrics_addr")?,
            grpc: bind(config.server.grpc_addr.0, "server.grpc_addr")?,
        })
    }
}

async fn serve(
    config: Config,
    listeners: Listeners,
    mut kernel: Kernel,
    tracefs: String,
) -> anyhow::Result<ExitCode> {
    let names = WorkloadNames::from_config(&config);
    let store = Arc::new(RwLock::new(
        Store::new(
            names.clone(),
            config.retained_intervals(),
            config.unmatched == Unmatched::Other,
        )
        .with_max_history_bytes(config.limits.max_history_bytes.bytes()),
    ));
    let status = Arc::new(Status::new(KernelFacts::probe()));
    // Each drain bumps this; WatchIOStats streams, the health service and the /metrics
    // rendering follow it.
    let (drains_tx, drains_rx) = tokio::sync::watch::channel(0u64);

    let servers = Servers::start(&config, listeners, &store, &status, &drains_rx).await?;
    report_kernel(&kernel, &status, tracefs);
    if status.attached_modules() == 0 {
        error!(
            "no module could be attached; see the module errors above (`sidecar check` explains)"
        );
        let _ = servers.shutdown.send(true);
        return Ok(ExitCode::from(EXIT_NO_MODULE));
    }
    if let Some(logger) = kernel.take_logger() {
        tokio::spawn(forward_kernel_logs(logger));
    }
    info!(
        interval = %humantime::format_duration(config.interval.0),
        kernel_map_bytes = kernel.map_bytes(),
        "attached; draining"
    );
    status.finish_startup();

    let exporter = start_exporter(&config, &status)?;
    let export = exporter.as_ref().map(Exporter::handle);
    let drainer = Drainer::start(kernel, &config, names, &store, drains_tx, export)?;
    // Ready (and SERVING) once the first drain is in the store.
    let mut first_drain = drains_rx;
    let health = servers.health.clone();
    tokio::spawn(async move {
        if first_drain.wait_for(|drains| *drains > 0).await.is_ok() {
            grpc::set_health(&health, true).await;
        }
    });

    wait_for_signal().await;
    Ok(shutdown(config.shutdown_timeout.0, drainer, exporter, servers).await)
}

/// The HTTP and gRPC servers, running on the runtime.
struct Servers {
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    health: tonic_health::server::HealthReporter,
    /// Both servers stop accepting and finish their connections when this turns true.
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Servers {
    /// Starts serving on the sockets `run` bound before it touched the kernel.
    async fn start(
        config: &Config,
        listeners: Listeners,
        store: &Arc<RwLock<Store>>,
        status: &Arc<Status>,
        drains: &tokio::sync::watch::Receiver<u64>,
    ) -> anyhow::Result<Servers> {
        let (shutdown, stop) = tokio::sync::watch::channel(false);
        let http = serve_http(
            config,
            listeners.metrics,
            store,
            status,
            drains,
            stop.clone(),
        )?;
        let (grpc, health) =
            serve_grpc(config, listeners.grpc, store, status, drains.clone(), stop).await?;
        Ok(Servers {
            http,
            grpc,
            health,
            shutdown,
        })
    }

    /// Reports NOT_SERVING, then stops both servers and waits for them.
    async fn stop(self) {
        grpc::set_health(&self.health, false).await;
        let _ = self.shutdown.send(true);
        if let Ok(Err(err)) = self.http.await {
            warn!("HTTP server: {err}");
        }
        if let Ok(Err(err)) = self.grpc.await {
            warn!("gRPC server: {err}");
        }
    }
}

/// `/metrics` and `/health/*`, with their text rendered once per drain off the request path.
fn serve_http(
    config: &Config,
    listener: std::net::TcpListener,
    store: &Arc<RwLock<Store>>,
    status: &Arc<Status>,
    drains: &tokio::sync::watch::Receiver<u64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener =
        tokio::net::TcpListener::from_std(listener).context("registering the metrics listener")?;
    let metrics_addr = listener
        .local_addr()
        .unwrap_or(config.server.metrics_addr.0);
    let exposition = Arc::new(crate::metrics::ExpositionCache::default());
    let router = http::router(HttpState {
        store: Arc::clone(store),
        status: Arc::clone(status),
        token: config.server.token_file.clone(),
        exposition: Arc::clone(&exposition),
    });
    let listener =
        crate::conn::GuardedListener::new(listener, config.server.connection_limits(), "http");
    let https = match &config.server.tls {
        Some(tls) => Some(tls.rustls_config().map_err(anyhow::Error::msg)?),
        None => None,
    };
    let scheme = if https.is_some() { "https" } else { "http" };
    let server = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        match https {
            Some(tls) => {
                crate::tls::serve_https(listener, router, tls, stopped).await;
                Ok(())
            }
            None => {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        }
    });
    // The bound addresses: with port 0 the kernel chose the port.
    info!(addr = %metrics_addr, scheme, "serving /metrics and /health");

    let mut drained = drains.clone();
    let (store, status) = (Arc::clone(store), Arc::clone(status));
    tokio::spawn(async move {
        while drained.changed().await.is_ok() {
            let (exposition, store, status) = (
                Arc::clone(&exposition),
                Arc::clone(&store),
                Arc::clone(&status),
            );
            let _ = tokio::task::spawn_blocking(move || exposition.refresh(&store, &status)).await;
        }
    });
    Ok(server)
}

/// The gRPC API, health and reflection; NOT_SERVING until the first drain.
async fn serve_grpc(
    config: &Config,
    listener: std::net::TcpListener,
    store: &Arc<RwLock<Store>>,
    status: &Arc<Status>,
    drains: tokio::sync::watch::Receiver<u64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    tonic_health::server::HealthReporter,
)> {
    let listener =
        tokio::net::TcpListener::from_std(listener).context("registering the gRPC listener")?;
    let grpc_addr = listener.local_addr().unwrap_or(config.server.grpc_addr.0);
    let api = grpc::Api::new(
        Arc::clone(store),
        Arc::clone(status),
        drains,
        config.server.max_streams.0 as usize,
        config.interval.0,
    );
    let grpc::Services { router, health } = grpc::services_with(
        api,
        config.server.token_file.clone(),
        config.server.tls.as_ref(),
    )
    .context("building the gRPC services")?;
    grpc::set_health(&health, false).await;
    let limits = config.server.connection_limits();
    let server = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(
                // The guard sets TCP_NODELAY (tonic sets it only on listeners it binds
                // itself; without it a response written in pieces waits for the client's
                // delayed ACK, 40 ms) and applies the connection limits.
                crate::conn::GuardedListener::new(listener, limits, "grpc").into_stream(),
                async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                },
            )
            .await
    });
    info!(addr = %grpc_addr, "serving the gRPC API");
    Ok((server, health))
}

/// Hands what loading found to the status, and logs it: each module's state, and what runs
/// without some kernel feature.
fn report_kernel(kernel: &Kernel, status: &Status, tracefs: String) {
    status.set_tracefs(tracefs);
    status.set_modules(kernel.modules().clone());
    status.set_hooks(kernel.hooks().clone());
    status.set_process_tracking(kernel.process_tracking().clone());
    status.set_kernel_map_bytes(kernel.map_bytes());
    status.set_bpf_stats_error(kernel.stats_error().map(str::to_owned));
    for (module, state) in kernel.modules() {
        match state.error() {
            Some(err) => warn!(module = module.name(), state = state.label(), "{err}"),
            None => info!(
                module = module.name(),
                state = state.label(),
                hook = kernel.hooks().get(module).map_or("", String::as_str),
                "module"
            ),
        }
    }
    if let Some(err) = kernel.process_tracking().error() {
        warn!("process life-cycle events are not followed (classification may lag exec): {err}");
    }
    if let Some(err) = kernel.stats_error() {
        warn!("BPF run-time statistics unavailable: {err}");
    }
}

/// The drain thread, and how to tell it to stop.
struct Drainer {
    thread: thread::JoinHandle<()>,
    stop: mpsc::Sender<()>,
}

impl Drainer {
    fn start(
        kernel: Kernel,
        config: &Config,
        names: WorkloadNames,
        store: &Arc<RwLock<Store>>,
        published: tokio::sync::watch::Sender<u64>,
        export: Option<ExportHandle>,
    ) -> anyhow::Result<Drainer> {
        let (stop, stop_rx) = mpsc::channel::<()>();
        let classifier = Classifier::new(config, &names);
        let store = Arc::clone(store);
        let interval = config.interval.0;
        let thread = thread::Builder::new()
            .name("sidecar-drain".to_owned())
            .spawn(move || {
                drain_loop(
                    kernel, classifier, names, store, interval, stop_rx, published, export,
                );
            })
            .context("starting the drain thread")?;
        Ok(Drainer { thread, stop })
    }
}

/// The final drain, the exporter's last flush and the servers' goodbyes, within `deadline`.
async fn shutdown(
    deadline: Duration,
    drainer: Drainer,
    exporter: Option<Exporter>,
    servers: Servers,
) -> ExitCode {
    let stopping = async move {
        info!("stopping: final drain");
        let _ = drainer.stop.send(());
        let thread = drainer.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            warn!("the drain thread panicked");
        }
        if let Some(exporter) = exporter {
            exporter.shutdown().await;
        }
        servers.stop().await;
    };
    if tokio::time::timeout(deadline, stopping).await.is_err() {
        // Exiting closes every map and program descriptor: nothing stays attached.
        error!(
            timeout = %humantime::format_duration(deadline),
            "shutdown_timeout passed before the shutdown finished; exiting now"
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    info!("stopped; programs detached");
    ExitCode::SUCCESS
}

/// Starts the BanyanDB exporter when `export.banyandb.enabled`.
fn start_exporter(config: &Config, status: &Status) -> anyhow::Result<Option<Exporter>> {
    let banyandb = &config.export.banyandb;
    if !banyandb.enabled {
        return Ok(None);
    }
    let modules = Module::ALL
        .into_iter()
        .filter(|module| module_enabled(config, *module))
        .collect();
    let mut settings = Settings::new(banyandb, config.interval.0, modules);
    // The final flush leaves room in shutdown_timeout for the rest of the shutdown.
    settings.shutdown_deadline = settings
        .shutdown_deadline
        .min(config.shutdown_timeout.0 / 2);
    let exporter = Exporter::start(settings).context("starting the BanyanDB exporter")?;
    status.add_exporter(exporter.stats());
    info!(addr = %banyandb.addr.0, group = %banyandb.group.0, "forwarding to BanyanDB");
    Ok(Some(exporter))
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                warn!("cannot watch SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

async fn forward_kernel_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer's fd and keeps it open for as long as the
    // AsyncFd lives; flushing neither closes nor replaces it.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(err) => {
            warn!("kernel program logs unavailable: {err}");
            return;
        }
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

/// Drains every `interval` on its own thread (the epoch switch blocks for a grace period),
/// and once more when told to stop so that the last partial interval is not lost.
#[allow(
    clippy::too_many_arguments,
    reason = "the drain thread's inputs and sinks, each used once"
)]
fn drain_loop(
    mut kernel: Kernel,
    mut classifier: Classifier,
    names: WorkloadNames,
    store: Arc<RwLock<Store>>,
    interval: Duration,
    stop: mpsc::Receiver<()>,
    published: tokio::sync::watch::Sender<u64>,
    export: Option<ExportHandle>,
) {
    let mut previous = Instant::now();
    // The first drain comes early, so that readiness does not wait a whole long interval.
    let mut next = previous + interval.min(FIRST_DRAIN_AFTER);
    let mut failures = 0u64;
    loop {
        let stopping = match stop.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
            Err(mpsc::RecvTimeoutError::Timeout) => false,
        };
        let now = Instant::now();
        match kernel.drain() {
            Ok(delta) => {
                let at = SystemTime::now();
                let interval_data = aggregate(&delta, &mut classifier, &names, at, now - previous);
                previous = now;
                if let Some(export) = &export {
                    // Never blocks: the exporter queues (and counts any drop) on its side.
                    export.submit(DrainDeltas::from_interval(&interval_data, &names));
                }
                // Readers compute on snapshots: the write lock is held for a move.
                let drains =
                    store::publish(&store, interval_data, delta.programs, classifier.tracked());
                published.send_replace(drains);
            }
            Err(err) => {
                failures += 1;
                // Counts stay in the kernel maps and arrive with a later drain.
                if failures.is_power_of_two() {
                    warn!(
                        failures,
                        "drain failed (the counts will come with a later drain): {err}"
                    );
                }
            }
        }
        if stopping {
            break;
        }
        next += interval;
        if next < now {
            next = now + interval;
        }
    }
    drop(kernel);
}
