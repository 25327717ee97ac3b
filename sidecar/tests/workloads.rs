//! Workload attribution as operators deploy it: several workers at once, shell wrappers
//! that exec, PID namespaces, heavy process churn, and reclaim stalls per workload. Kernel
//! tests (root; under CI=true they must run).

mod support;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{
    LOAD, MemoryCgroup, Metrics, Sidecar, kernel, load, load_command, parse_report, report_u64,
    rss_kib, scratch_dir, unique, workload_config,
};

fn pages(metrics: &Metrics, name: &str, workload: &str) -> f64 {
    metrics.value(name, &[("workload", workload)])
}

fn assert_within(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= expected * tolerance,
        "{what}: {actual}, expected {expected} ± {}%",
        tolerance * 100.0
    );
}

/// A job worker (small cold reads, DONTNEED per job) and a sync worker (a large file paged
/// through with SEQUENTIAL and WILLNEED, upserted into another) at the same time: each gets
/// exactly its own fadvise calls, and page-cache numbers that match the files it read.
#[test]
fn two_workers_at_once_get_exactly_their_own_counts() {
    let Some(_kernel) = kernel("two_workers_at_once_get_exactly_their_own_counts") else {
        return;
    };
    let job = unique("jw");
    let sync = unique("sw");
    let sidecar = Sidecar::start(&format!(
        "interval: 100ms\nworkloads:\n  - name: job-worker\n    comm: \"^{job}$\"\n  - name: sync-worker\n    comm: \"^{sync}$\"\n"
    ));
    let dir = scratch_dir();
    let jobs_dir = dir.path().join("jobs");
    let made = load(
        &unique("mk"),
        &[
            "make-files",
            "--dir",
            jobs_dir.to_str().unwrap(),
            "--count",
            "40",
            "--kib",
            "64",
        ],
    );
    assert_eq!(report_u64(&made, "pages"), 40 * 16);
    let source = dir.path().join("upstream");
    let output = dir.path().join("upserted");
    load(
        &unique("mk"),
        &[
            "make-file",
            "--file",
            source.to_str().unwrap(),
            "--mib",
            "64",
        ],
    );

    let job_run = load_command(
        &job,
        &[
            "job-worker",
            "--dir",
            jobs_dir.to_str().unwrap(),
            "--jobs",
            "200",
            "--over",
            "1500ms",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let sync_run = load_command(
        &sync,
        &[
            "sync-worker",
            "--source",
            source.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--over",
            "1500ms",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let job_report = parse_report(&job_run.wait_with_output().unwrap(), &["job-worker"]);
    let sync_report = parse_report(&sync_run.wait_with_output().unwrap(), &["sync-worker"]);
    let metrics = sidecar.after_drains(2);

    // fadvise: exact, and only where each worker put it.
    assert_eq!(metrics.fadvise_calls("job-worker", "dontneed"), (200, 200));
    assert_eq!(metrics.fadvise_calls("job-worker", "sequential"), (0, 0));
    assert_eq!(metrics.fadvise_calls("job-worker", "willneed"), (0, 0));
    let willneed = report_u64(&sync_report, "willneed_calls");
    assert_eq!(willneed, 64);
    assert_eq!(metrics.fadvise_calls("sync-worker", "sequential"), (1, 1));
    assert_eq!(
        metrics.fadvise_calls("sync-worker", "willneed"),
        (willneed, willneed)
    );
    assert_eq!(metrics.fadvise_calls("sync-worker", "dontneed"), (0, 0));

    // Page cache: the job worker read 200 cold 16-page files (each dropped after its job).
    let job_pages = report_u64(&job_report, "pages") as f64;
    assert_eq!(job_pages, 200.0 * 16.0);
    assert_eq!(
        report_u64(&job_report, "resident_pages_before"),
        0,
        "{job_report}"
    );
    assert_within(
        pages(&metrics, "ebpf_cache_read_attempts_total", "job-worker"),
        job_pages,
        0.10,
        "job-worker read attempts",
    );
    assert_within(
        pages(&metrics, "ebpf_cache_misses_total", "job-worker"),
        job_pages,
        0.10,
        "job-worker misses",
    );
    // The sync worker read 16384 pages (cold) and wrote as many.
    let source_pages = report_u64(&sync_report, "pages") as f64;
    assert_eq!(source_pages, 16384.0);
    assert_within(
        pages(&metrics, "ebpf_cache_read_attempts_total", "sync-worker"),
        source_pages,
        0.10,
        "sync-worker read attempts",
    );
    assert_within(
        pages(&metrics, "ebpf_cache_misses_total", "sync-worker"),
        source_pages,
        0.10,
        "sync-worker misses",
    );
    let output_pages = report_u64(&sync_report, "output_pages") as f64;
    assert!(
        pages(&metrics, "ebpf_page_cache_adds_total", "sync-worker")
            >= (source_pages + output_pages) * 0.9,
        "sync-worker adds cover what it read and wrote"
    );
}

/// A worker launched by a shell wrapper that execs into it: the wrapper is seen (and
/// classified) first, and after the exec the same process is the worker.
#[test]
fn a_shell_wrapper_that_execs_ends_up_in_the_worker() {
    let Some(_kernel) = kernel("a_shell_wrapper_that_execs_ends_up_in_the_worker") else {
        return;
    };
    let comm = unique("wrk");
    // Matched by command line alone: the wrapper's command line does not start like this.
    let sidecar = Sidecar::start(&format!(
        "interval: 100ms\nworkloads:\n  - name: worker\n    cmdline: \"^{LOAD} --comm {comm} \"\n"
    ));
    let dir = scratch_dir();
    let input = dir.path().join("input");
    std::fs::write(&input, "line\n".repeat(10_000)).unwrap();
    // The shell reads a file itself (page-cache events under its own PID), waits past a few
    // drains so that it is classified as the shell, then execs the worker.
    let script = format!(
        "while read x; do :; done < {}; sleep 0.5; exec {LOAD} --comm {comm} fadvise --calls 500 --over 500ms",
        input.display()
    );
    let output = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    let report = parse_report(&output, &["sh -c ... exec"]);
    let metrics = sidecar.after_drains(2);
    assert_eq!(metrics.fadvise_calls("worker", "dontneed"), (500, 500));
    assert_eq!(report_u64(&report, "calls"), 500);
}

/// The sidecar in its own PID namespace (as in a pod): a process of that namespace is
/// matched by its PID there, and a process outside it is unmatched even when its name
/// matches a workload.
/// The first child of `parent` (a launcher that forks, like unshare or nsenter), waited for.
fn first_child(parent: &mut std::process::Child) -> u32 {
    let children = format!("/proc/{0}/task/{0}/children", parent.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = listed.split_whitespace().next() {
            return pid.parse().expect("a PID in /proc/PID/task/TID/children");
        }
        assert!(Instant::now() < deadline, "{children} stayed empty");
        assert!(parent.try_wait().unwrap().is_none(), "the launcher exited");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pid_namespaces_translate_and_exclude() {
    let Some(_kernel) = kernel("pid_namespaces_translate_and_exclude") else {
        return;
    };
    // The namespace's init: a sleeping holder (PID 1 inside).
    let mut holder = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sleep", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare (util-linux)");
    // Killing the namespace's init ends every process in it; unshare then exits.
    struct Namespace {
        unshare: std::process::Child,
        init: u32,
    }
    impl Drop for Namespace {
        fn drop(&mut self) {
            // SAFETY: signalling a process we started.
            unsafe { libc::kill(self.init as i32, libc::SIGKILL) };
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
    let init = first_child(&mut holder);
    let holder = Namespace {
        unshare: holder,
        init,
    };
    let holder_pid = init.to_string();
    let enter = [
        "nsenter",
        "--target",
        holder_pid.as_str(),
        "--pid",
        "--mount",
        "--",
    ];

    // The worker inside: the first process after the holder, so PID 2 there. It waits on
    // stdin until the sidecar is up.
    let inside = unique("nsi");
    let mut worker = Command::new(enter[0])
        .args(&enter[1..])
        .arg(LOAD)
        .args([
            "--comm",
            &inside,
            "fadvise",
            "--calls",
            "300",
            "--wait-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // nsenter forks the process that enters the namespace after it starts: wait for that
    // fork, or the sidecar's own nsenter may take PID 2 first.
    first_child(&mut worker);
    let outside = unique("nso");
    let sidecar = Sidecar::start_wrapped(
        &enter,
        &format!(
            "interval: 100ms\nworkloads:\n  - name: pinned\n    pids: [2]\n  - name: by-name\n    comm: \"^{outside}$\"\n"
        ),
    );
    let before = sidecar.metrics();
    worker.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let report = parse_report(
        &worker.wait_with_output().unwrap(),
        &["worker in namespace"],
    );
    assert_eq!(
        report_u64(&report, "pid"),
        2,
        "the worker's PID in the namespace"
    );
    // Outside the namespace: same kind of process, name matching `by-name`.
    load(&outside, &["fadvise", "--calls", "200"]);
    let after = sidecar.after_drains(2);

    assert_eq!(after.fadvise_calls("pinned", "dontneed"), (300, 300));
    assert_eq!(after.fadvise_calls("by-name", "dontneed"), (0, 0));
    let other =
        after.fadvise_calls("other", "dontneed").0 - before.fadvise_calls("other", "dontneed").0;
    assert!(
        other >= 200,
        "the outside process is unmatched: other got {other}"
    );
    drop(sidecar);
    drop(holder);
}

/// 50,000 short-lived processes that match no workload, beside one worker: the worker's
/// count is exact, the workloads add up to the host-wide total, the kernel maps stay within
/// their bound, and the daemon's memory stays flat.
#[test]
fn churn_of_50000_processes() {
    let Some(_kernel) = kernel("churn_of_50000_processes") else {
        return;
    };
    let worker = unique("cw");
    let sidecar = Sidecar::start(&format!(
        "interval: 100ms\nworkloads:\n  - name: worker\n    comm: \"^{worker}$\"\nlimits:\n  max_tracked_processes: 1024\n"
    ));
    let pid = sidecar.pid().unwrap();
    let before = sidecar.after_drains(2);
    let rss_before = rss_kib(pid);

    let worker_run = load_command(&worker, &["fadvise", "--calls", "3000", "--over", "3s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut churn = load_command(
        &unique("chx"),
        &["churn", "--processes", "50000", "--calls-per-process", "2"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    // While the churn runs, the kernel's own view of the maps stays within the bound.
    let mut max_entries = 0;
    let churn_output = loop {
        for name in [
            "FADV_CNT_0",
            "FADV_CNT_1",
            "PROC_0",
            "PROC_1",
            "PC_CNT_0",
            "PC_CNT_1",
        ] {
            max_entries = max_entries.max(sidecar.map_entries(name));
        }
        if churn.try_wait().unwrap().is_some() {
            break churn.wait_with_output().unwrap();
        }
    };
    let churn_report = parse_report(&churn_output, &["churn"]);
    let worker_report = parse_report(&worker_run.wait_with_output().unwrap(), &["worker"]);
    let after = sidecar.after_drains(3);
    let rss_after = rss_kib(pid);
    eprintln!(
        "churn: {} processes in {:.1}s; kernel map entries at most {max_entries} (bound 1024); daemon RSS {rss_before} KiB -> {rss_after} KiB",
        report_u64(&churn_report, "processes"),
        churn_report["seconds"].as_f64().unwrap_or_default()
    );

    assert_eq!(report_u64(&worker_report, "calls"), 3000);
    assert_eq!(after.fadvise_calls("worker", "dontneed"), (3000, 3000));
    // Every call the kernel saw is in some workload (`other` included).
    let seen = after.value("sidecar_fadvise_calls_seen_total", &[])
        - before.value("sidecar_fadvise_calls_seen_total", &[]);
    let attributed =
        after.sum("ebpf_fadvise_calls_total", &[]) - before.sum("ebpf_fadvise_calls_total", &[]);
    assert_eq!(attributed, seen, "sum over workloads = host total");
    assert!(
        seen >= 3000.0 + 100_000.0,
        "the churn's calls were seen: {seen}"
    );
    assert!(max_entries <= 1024, "{max_entries} entries");
    assert!(after.value("sidecar_tracked_processes", &[]) <= 1024.0);
    assert!(
        rss_after < rss_before + 16 * 1024,
        "daemon RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

/// Memory-cgroup reclaim stalls: the histogram's count for the reader equals the number of
/// begin/end pairs bpftrace sees for it in the same window.
#[test]
fn reclaim_histograms_count_every_stall() {
    let Some(_kernel) = kernel("reclaim_histograms_count_every_stall") else {
        return;
    };
    let reader = unique("rh");
    let sidecar = Sidecar::start(&workload_config("100ms", &[(&reader, &reader)], ""));
    let dir = scratch_dir();
    let file = dir.path().join("big");
    load(
        &unique("mk"),
        &[
            "make-file",
            "--file",
            file.to_str().unwrap(),
            "--mib",
            "256",
        ],
    );

    let script = format!(
        "tracepoint:vmscan:mm_vmscan_memcg_reclaim_begin /comm == \"{reader}\"/ {{ @start[tid] = nsecs; }}\n\
         tracepoint:vmscan:mm_vmscan_memcg_reclaim_end /comm == \"{reader}\" && @start[tid]/ {{ @pairs = count(); delete(@start[tid]); }}\n\
         END {{ clear(@start); }}\n"
    );
    let mut bpftrace = Command::new("bpftrace")
        .args(["-e", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bpftrace (installed by scripts/bootstrap.sh --test)");
    let mut lines = BufReader::new(bpftrace.stdout.take().unwrap()).lines();
    // bpftrace prints this once its probes are attached.
    loop {
        let line = lines.next().expect("bpftrace output").unwrap();
        if line.starts_with("Attaching") {
            break;
        }
    }
    let before = sidecar.after_drains(1);
    let cgroup = MemoryCgroup::create(48 << 20);
    let mut command = load_command(&reader, &["read", "--file", file.to_str().unwrap()]);
    cgroup.enter(&mut command);
    parse_report(&command.output().unwrap(), &["read"]);
    let after = sidecar.after_drains(2);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(bpftrace.id() as i32, libc::SIGINT) };
    let pairs: u64 = lines
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("@pairs: ")
                .map(|n| n.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let _ = bpftrace.wait();

    let labels = [("workload", reader.as_str())];
    let counted = after.value("ebpf_memory_memcg_reclaim_seconds_count", &labels)
        - before.value("ebpf_memory_memcg_reclaim_seconds_count", &labels);
    assert!(pairs > 0, "bpftrace saw no memcg reclaim");
    assert_eq!(
        counted as u64, pairs,
        "histogram count vs bpftrace begin/end pairs"
    );
}
