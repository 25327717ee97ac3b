//! Test harness for the kernel tests: a real sidecar process, a real workload generator,
//! and ground truths read from the kernel (/proc/vmstat, mincore, bpftool).
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::{
    collections::BTreeSet,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Output},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

pub const SIDECAR: &str = env!("CARGO_BIN_EXE_sidecar");
pub const LOAD: &str = env!("CARGO_BIN_EXE_sidecar-load");

/// Kernel tests share the kernel (host-wide counters, bpftool listings): one at a time.
static KERNEL: Mutex<()> = Mutex::new(());

/// Whether kernel tests must run rather than skip.
pub fn kernel_tests_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("SIDECAR_REQUIRE_EBPF").is_ok_and(|v| v == "1")
}

/// Why kernel tests cannot run here, if they cannot.
fn kernel_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (the programs need CAP_BPF, CAP_PERFMON and tracefs)".into());
    }
    None
}

/// Takes the kernel for one test, or skips it (outside CI only) with a printed reason.
pub fn kernel(test: &str) -> Option<MutexGuard<'static, ()>> {
    if let Some(reason) = kernel_unavailable() {
        assert!(
            !kernel_tests_required(),
            "kernel test {test} cannot run: {reason} (CI=true / SIDECAR_REQUIRE_EBPF=1 forbid skipping)"
        );
        eprintln!("SKIP {test}: {reason}");
        return None;
    }
    Some(KERNEL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// A name unique to this test run, usable as a comm (15 bytes at most).
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}{n}", std::process::id() % 10000);
    assert!(name.len() <= 15, "{name} is too long for a comm");
    name
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Scratch space on a real file system (not tmpfs: the page cache must be involved).
pub fn scratch_dir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("target tmp dir");
    tempfile::tempdir_in(base).expect("scratch dir")
}

/// A running `sidecar run`.
pub struct Sidecar {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub grpc: SocketAddr,
    pub dir: tempfile::TempDir,
    log: PathBuf,
    /// BPF maps that existed before this sidecar started: the others with our names are ours.
    maps_before: BTreeSet<u64>,
}

impl Sidecar {
    /// Starts a sidecar with `body` as the configuration (server addresses are added) and
    /// waits until it is ready.
    pub fn start(body: &str) -> Sidecar {
        Sidecar::start_with_env(body, &[])
    }

    pub fn start_with_env(body: &str, env: &[(&str, &str)]) -> Sidecar {
        let sidecar = Sidecar::spawn(body, env);
        sidecar.wait_ready(Duration::from_secs(30));
        sidecar
    }

    /// Starts a sidecar through a wrapper (`nsenter ... --`) and waits until it is ready.
    pub fn start_wrapped(wrapper: &[&str], body: &str) -> Sidecar {
        let sidecar = Sidecar::spawn_wrapped(wrapper, body, &[]);
        sidecar.wait_ready(Duration::from_secs(30));
        sidecar
    }

    /// Starts a sidecar without waiting for it.
    pub fn spawn(body: &str, env: &[(&str, &str)]) -> Sidecar {
        Sidecar::spawn_wrapped(&[], body, env)
    }

    /// Starts a sidecar through a wrapper with extra `server:` keys (indented lines) and
    /// waits until it is ready.
    pub fn start_wrapped_with_server(wrapper: &[&str], server: &str, body: &str) -> Sidecar {
        let sidecar = Sidecar::spawn_full(wrapper, server, body, &[]);
        sidecar.wait_ready(Duration::from_secs(30));
        sidecar
    }

    fn spawn_wrapped(wrapper: &[&str], body: &str, env: &[(&str, &str)]) -> Sidecar {
        Sidecar::spawn_full(wrapper, "", body, env)
    }

    fn spawn_full(wrapper: &[&str], server: &str, body: &str, env: &[(&str, &str)]) -> Sidecar {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = format!(
            "server:\n  metrics_addr: {addr}\n  grpc_addr: {grpc}\n{server}log:\n  level: debug\n{body}"
        );
        let path = dir.path().join("sidecar.yaml");
        std::fs::write(&path, config).expect("write config");
        let log = dir.path().join("sidecar.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(SIDECAR);
                command
            }
            None => Command::new(SIDECAR),
        };
        command
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file);
        for (key, value) in env {
            command.env(key, value);
        }
        let maps_before = bpf_object_ids("map");
        let child = command.spawn().expect("start sidecar");
        Sidecar {
            maps_before,
            child: Some(child),
            addr,
            grpc,
            dir,
            log,
        }
    }

    /// Entries of this sidecar's BPF map `name`, by bpftool (the kernel's view); another
    /// instance's maps of the same name are not counted.
    pub fn map_entries(&self, name: &str) -> usize {
        let output = Command::new("bpftool")
            .args(["-j", "map", "show"])
            .output()
            .expect("bpftool (installed by scripts/bootstrap.sh --test)");
        let listed: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("bpftool JSON");
        let ours: Vec<u64> = listed
            .as_array()
            .into_iter()
            .flatten()
            .filter(|map| map["name"].as_str() == Some(name))
            .filter_map(|map| map["id"].as_u64())
            .filter(|id| !self.maps_before.contains(id))
            .collect();
        assert!(!ours.is_empty(), "no map {name} of this sidecar");
        ours.iter()
            .map(|id| {
                let output = Command::new("bpftool")
                    .args(["-j", "map", "dump", "id", &id.to_string()])
                    .output()
                    .expect("bpftool");
                assert!(output.status.success(), "bpftool map dump id {id}");
                let dumped: serde_json::Value =
                    serde_json::from_slice(&output.stdout).expect("bpftool JSON");
                dumped.as_array().map_or(0, Vec::len)
            })
            .sum()
    }

    /// The host PID of the process we started (the wrapper's, when wrapped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = http_get(self.addr, "/health/ready") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar not ready after {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).unwrap_or_else(|err| panic!("GET {path}: {err}\n{}", self.log()))
    }

    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    pub fn drains(&self) -> u64 {
        self.metrics().value("sidecar_drains_total", &[]) as u64
    }

    /// Waits until `n` drains that began after this call have completed, and returns the
    /// metrics after them. One drain may be in flight when this is called: it switched epochs
    /// before the call, so whatever the caller just did lands in the drain after it, not in
    /// it. Hence one drain more than asked.
    pub fn after_drains(&self, n: u64) -> Metrics {
        let start = self.drains() + 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let metrics = self.metrics();
            if metrics.value("sidecar_drains_total", &[]) as u64 >= start + n {
                return metrics;
            }
            assert!(Instant::now() < deadline, "no drains; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops with SIGTERM and returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        self.stop_with(libc::SIGTERM)
    }

    /// Stops with `signal` and returns the exit status code.
    pub fn stop_with(&mut self, signal: libc::c_int) -> Option<i32> {
        let mut child = self.child.take()?;
        match sidecar_testkit::process::stop(&mut child, signal, Duration::from_secs(10)) {
            Some(status) => status.code(),
            None => panic!(
                "sidecar did not stop on signal {signal}; log:\n{}",
                self.log()
            ),
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// A GET as a scraper sends it (no client library: the test sees exactly what a scraper
/// gets).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_get_with(addr, path, &[])
}

pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let response = sidecar_testkit::http::get(addr, path, headers)?;
    Ok((response.status, response.body))
}

/// Samples of a Prometheus text exposition: the kit's parser, with the sidecar's own
/// questions.
#[derive(Debug, Default)]
pub struct Metrics(sidecar_testkit::prometheus::Metrics);

impl std::ops::Deref for Metrics {
    type Target = sidecar_testkit::prometheus::Metrics;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        Metrics(sidecar_testkit::prometheus::Metrics::parse(text))
    }

    /// (calls, successes) of one workload and advice.
    pub fn fadvise_calls(&self, workload: &str, advice: &str) -> (u64, u64) {
        let labels = [("workload", workload), ("advice", advice)];
        (
            self.value("ebpf_fadvise_calls_total", &labels) as u64,
            self.value("ebpf_fadvise_success_total", &labels) as u64,
        )
    }
}

/// Runs the workload generator and returns its JSON report.
pub fn load(comm: &str, args: &[&str]) -> serde_json::Value {
    let output = load_command(comm, args).output().expect("run sidecar-load");
    parse_report(&output, args)
}

pub fn load_command(comm: &str, args: &[&str]) -> Command {
    sidecar_testkit::generator::command(LOAD.as_ref(), comm, args)
}

pub fn parse_report(output: &Output, args: &[&str]) -> serde_json::Value {
    sidecar_testkit::generator::report(output)
        .unwrap_or_else(|err| panic!("sidecar-load {args:?}: {err}"))
}

pub fn report_u64(report: &serde_json::Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing from {report}"))
}

/// Percent-encodes a URL query value.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Resident memory of a process, in KiB (VmRSS); 0 when it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    sidecar_testkit::procfs::rss_kib(pid).unwrap_or(0)
}

/// Pages scanned and reclaimed by LRU shrinking, as the kernel's own counters say.
pub fn vmstat_scan_steal() -> (u64, u64) {
    sidecar_testkit::procfs::vmstat_scan_steal().expect("/proc/vmstat")
}

/// IDs of every loaded BPF program or map (`kind`: "prog" or "map"), by bpftool; empty
/// when bpftool cannot list them.
pub fn bpf_object_ids(kind: &str) -> BTreeSet<u64> {
    let Ok(output) = Command::new("bpftool").args(["-j", kind, "show"]).output() else {
        return BTreeSet::new();
    };
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|object| object["id"].as_u64())
        .collect()
}

/// Names of every loaded BPF program, by bpftool.
pub fn bpftool_program_names() -> Vec<String> {
    let output = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    value
        .as_array()
        .map(|progs| {
            progs
                .iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A memory cgroup with a limit (cgroup v1 `memory.limit_in_bytes` or v2 `memory.max`),
/// removed on drop.
pub struct MemoryCgroup(sidecar_testkit::cgroup::MemoryCgroup);

impl MemoryCgroup {
    pub fn create(limit_bytes: u64) -> MemoryCgroup {
        let name = format!("sidecar-test-{}", unique("m"));
        MemoryCgroup(
            sidecar_testkit::cgroup::MemoryCgroup::create(&name, limit_bytes)
                .expect("a cgroup v1 or v2 memory controller"),
        )
    }

    /// Makes `command` start inside this cgroup.
    pub fn enter(&self, command: &mut Command) {
        self.0.enter(command).expect("cgroup path");
    }
}

/// A config with one `comm`-matched workload per (name, comm) pair.
pub fn workload_config(interval: &str, workloads: &[(&str, &str)], extra: &str) -> String {
    let mut text = format!("interval: {interval}\nworkloads:\n");
    for (name, comm) in workloads {
        text.push_str(&format!("  - name: {name}\n    comm: \"^{comm}$\"\n"));
    }
    text.push_str(extra);
    text
}

/// A loop-mounted ext4 file system made for a test (mkfs.ext4, losetup, mount, as root);
/// unmounted, detached and deleted when dropped.
pub struct LoopExt4 {
    dir: tempfile::TempDir,
    device: String,
}

impl LoopExt4 {
    /// An ext4 of `mib` MiB with `block_size`-byte blocks; `None` (outside CI) when the tools
    /// are missing.
    pub fn create(block_size: u32, mib: u64) -> Option<LoopExt4> {
        let missing: Vec<&str> = ["mkfs.ext4", "losetup", "mount", "umount"]
            .into_iter()
            .filter(|tool| {
                !Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .collect();
        if !missing.is_empty() {
            assert!(
                !kernel_tests_required(),
                "missing {missing:?} (e2fsprogs, mount)"
            );
            eprintln!("SKIP: missing {missing:?}");
            return None;
        }
        let dir = scratch_dir();
        let image = dir.path().join("ext4.img");
        let file = std::fs::File::create(&image).expect("image file");
        file.set_len(mib << 20).expect("image size");
        drop(file);
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", &block_size.to_string()])
            .arg(&image));
        let output = run(Command::new("losetup").args(["-f", "--show"]).arg(&image));
        let device = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(device.starts_with("/dev/loop"), "losetup said {device:?}");
        let fs = LoopExt4 { dir, device };
        std::fs::create_dir_all(fs.mount_point()).expect("mount point");
        fs.mount();
        Some(fs)
    }

    pub fn mount_point(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn mount(&self) {
        run(Command::new("mount")
            .args(["-t", "ext4", &self.device])
            .arg(self.mount_point()));
    }

    /// Unmounts and mounts again: the last close of the device drops its cached blocks,
    /// so the file system's metadata is read again, as after a reboot.
    pub fn remount(&self) {
        run(Command::new("umount").arg(self.mount_point()));
        self.mount();
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount_point()).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("run a command");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
