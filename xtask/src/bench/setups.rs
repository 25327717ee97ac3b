//! The setups compared in figure 1 (no tracing, empty BPF, the sidecar, bpftrace, BCC
//! cachestat): their configs, and starting and stopping them.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use sidecar_testkit::process::stop;

use super::http::http_get;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Setup {
    None,
    Floor,
    Sidecar,
    /// The sidecar with `bpf_stats: true`: figure 5's self-reported cost, and what the
    /// kernel's statistics themselves add.
    SidecarStats,
    Bpftrace,
    Cachestat,
}

impl Setup {
    pub(super) const fn label(self) -> &'static str {
        match self {
            Setup::None => "a: no tracing",
            Setup::Floor => "b: empty BPF (floor)",
            Setup::Sidecar => "c: sidecar",
            Setup::SidecarStats => "c+: sidecar, bpf_stats on",
            Setup::Bpftrace => "d: bpftrace, same job",
            Setup::Cachestat => "e: BCC cachestat",
        }
    }
}

/// Empty programs on every tracepoint the sidecar's fadvise and page-cache modules use.
pub(super) const FLOOR_SCRIPT: &str = r#"
tracepoint:syscalls:sys_enter_fadvise64 {}
tracepoint:syscalls:sys_exit_fadvise64 {}
tracepoint:filemap:mm_filemap_get_pages {}
tracepoint:filemap:mm_filemap_add_to_page_cache {}
tracepoint:filemap:mm_filemap_delete_from_page_cache {}
BEGIN { printf("ready\n"); }
"#;

/// What the sidecar does, as bpftrace would do it: the advice per thread at entry, a count
/// by (pid, advice, success) at exit; pages requested, added, evicted per process.
pub(super) const BPFTRACE_SCRIPT: &str = r#"
tracepoint:syscalls:sys_enter_fadvise64 { @adv[tid] = args->advice + 1; }
tracepoint:syscalls:sys_exit_fadvise64 /@adv[tid]/ {
  @calls[pid, @adv[tid] - 1, args->ret == 0] = count();
  delete(@adv[tid]);
}
tracepoint:filemap:mm_filemap_get_pages { @requested[pid] = sum(args->last_index - args->index + 1); }
tracepoint:filemap:mm_filemap_add_to_page_cache { @added[pid] = count(); }
tracepoint:filemap:mm_filemap_delete_from_page_cache { @evicted[pid] = count(); }
BEGIN { printf("ready\n"); }
"#;

pub(super) struct Env {
    pub(super) root: PathBuf,
    pub(super) sidecar: PathBuf,
    pub(super) xtask: PathBuf,
    pub(super) work: PathBuf,
    pub(super) bpftrace: Option<PathBuf>,
    pub(super) cachestat: Result<PathBuf, String>,
    pub(super) log: fs::File,
}

impl Env {
    pub(super) fn note(&mut self, text: &str) {
        eprintln!("bench: {text}");
        let _ = writeln!(self.log, "{text}");
    }
}

pub(super) struct Running {
    pub(super) child: Child,
    pub(super) setup: Setup,
}

pub(super) const METRICS_ADDR: &str = "127.0.0.1:19464";
pub(super) const GRPC_ADDR: &str = "127.0.0.1:19465";

/// Which modules a bench's sidecar runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Modules {
    /// Every module, as configured by default.
    All,
    /// fadvise, page_cache and vmscan: the job the overhead figure's bpftrace setups do.
    /// The io and memcg modules add programs of their own on the same calls (the read
    /// syscalls, the page-cache tracepoints); section 7 measures them against their floors.
    ComparedWithBpftrace,
}

pub(super) fn sidecar_config(
    env: &Env,
    name: &str,
    interval: &str,
    max_tracked: u64,
    workloads: usize,
) -> Result<PathBuf> {
    sidecar_config_with(env, name, interval, max_tracked, workloads, Modules::All)
}

pub(super) fn sidecar_config_with(
    env: &Env,
    name: &str,
    interval: &str,
    max_tracked: u64,
    workloads: usize,
    modules: Modules,
) -> Result<PathBuf> {
    let io_memcg = modules == Modules::All;
    let mut text = format!(
        "interval: {interval}\nserver:\n  metrics_addr: {METRICS_ADDR}\n  grpc_addr: {GRPC_ADDR}\n\
         modules:\n  fadvise:\n    enabled: true\n  page_cache:\n    enabled: true\n  vmscan:\n    enabled: true\n\
         \x20 io:\n    enabled: {io_memcg}\n  memcg:\n    enabled: {io_memcg}\n\
         unmatched: other\nlimits:\n  max_tracked_processes: {max_tracked}\n  max_kernel_memory: 1GiB\n\
         log:\n  level: warn\n"
    );
    if workloads == 0 {
        text.push_str("workloads: []\n");
    } else {
        text.push_str("workloads:\n");
        for i in 0..workloads {
            let _ = writeln!(text, "  - name: bw{i}\n    comm: \"^bw{i}$\"");
        }
    }
    let path = env.work.join(format!("{name}.yaml"));
    fs::write(&path, text)?;
    Ok(path)
}

pub(super) fn start_sidecar(env: &Env, config: &Path) -> Result<Running> {
    start_sidecar_with(env, config, &[])
}

/// The same, with `vars` in its environment (fault switches that pick another hook).
pub(super) fn start_sidecar_with(
    env: &Env,
    config: &Path,
    vars: &[(&str, &str)],
) -> Result<Running> {
    let log = fs::File::create(env.work.join("sidecar.log"))?;
    let child = Command::new(&env.sidecar)
        .args(["run", "--config"])
        .arg(config)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the sidecar")?;
    let running = Running {
        child,
        setup: Setup::Sidecar,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = http_get(METRICS_ADDR, "/health/ready") {
            return Ok(running);
        }
        if Instant::now() > deadline {
            stop_setup(running);
            bail!(
                "the sidecar was not ready within 60 s (see {}/sidecar.log)",
                env.work.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a tracer that prints "ready" once attached, and waits for that line.
pub(super) fn start_printing_ready(mut cmd: Command, setup: Setup, what: &str) -> Result<Running> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                // Keep draining so that the tracer never blocks on a full pipe.
                continue;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("ready") || line.contains("HITS") => {
                return Ok(Running { child, setup });
            }
            _ => {}
        }
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = stop(&mut child, libc::SIGINT, Duration::from_secs(5));
            bail!("{what} did not start");
        }
    }
}

/// The same config with the kernel's BPF run-time statistics switched on.
pub(super) fn with_bpf_stats(config: &Path) -> Result<PathBuf> {
    let path = config.with_extension("bpf-stats.yaml");
    fs::write(
        &path,
        format!("{}bpf_stats: true\n", fs::read_to_string(config)?),
    )?;
    Ok(path)
}

pub(super) fn start_setup(env: &Env, setup: Setup, config: &Path) -> Result<Option<Running>> {
    let bpftrace = || env.bpftrace.clone().context("bpftrace is not installed");
    Ok(Some(match setup {
        Setup::None => return Ok(None),
        Setup::Sidecar => start_sidecar(env, config)?,
        Setup::SidecarStats => {
            let mut running = start_sidecar(env, &with_bpf_stats(config)?)?;
            running.setup = Setup::SidecarStats;
            running
        }
        Setup::Floor => {
            let mut cmd = Command::new(bpftrace()?);
            cmd.args(["-e", FLOOR_SCRIPT]);
            start_printing_ready(cmd, setup, "bpftrace (floor)")?
        }
        Setup::Bpftrace => {
            let mut cmd = Command::new(bpftrace()?);
            cmd.args(["-e", BPFTRACE_SCRIPT]);
            start_printing_ready(cmd, setup, "bpftrace (same job)")?
        }
        Setup::Cachestat => {
            let path = env.cachestat.clone().map_err(anyhow::Error::msg)?;
            let mut cmd = Command::new(path);
            cmd.arg("1");
            start_printing_ready(cmd, setup, "cachestat")?
        }
    }))
}

pub(super) fn stop_setup(mut running: Running) {
    let sig = if matches!(running.setup, Setup::Sidecar | Setup::SidecarStats) {
        libc::SIGTERM
    } else {
        libc::SIGINT
    };
    let _ = stop(&mut running.child, sig, Duration::from_secs(15));
}

/// Whether BCC's cachestat runs here, and why not when it does not.
pub(super) fn find_cachestat() -> Result<PathBuf, String> {
    let path = [
        "/usr/sbin/cachestat-bpfcc",
        "/usr/share/bcc/tools/cachestat",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .ok_or_else(|| "BCC is not installed (apt package bpfcc-tools)".to_owned())?;
    let mut child = Command::new(&path)
        .args(["1", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            if let Some(mut stdout) = child.stdout.take() {
                let _ = stdout.read_to_string(&mut err);
            }
            if status.success() {
                return Ok(path);
            }
            if err.contains("kernel headers") {
                return Err(format!(
                    "{} fails here: \"Unable to find kernel headers\" (BCC compiles its \
                     programs at run time against the running kernel's headers)",
                    path.display()
                ));
            }
            let reason = err
                .lines()
                .find(|l| l.contains("kernel headers") || l.contains("Exception"))
                .or_else(|| err.lines().last())
                .unwrap_or("no output")
                .to_owned();
            return Err(format!("{} fails here: {reason}", path.display()));
        }
        if Instant::now() > deadline {
            let _ = stop(&mut child, libc::SIGINT, Duration::from_secs(5));
            return Err(format!(
                "{} did not finish a 1 s sample in 30 s",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
