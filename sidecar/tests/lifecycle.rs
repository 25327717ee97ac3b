//! Life cycle: a signal leaves nothing of ours in the kernel, a second instance does not
//! disturb the first, capabilities are gone once attached, and a start without privilege
//! fails with one clear line and its documented exit status. Root needed; under CI=true
//! these fail instead of skipping.

mod support;

use std::{collections::BTreeSet, process::Command};

use support::{SIDECAR, Sidecar, bpf_object_ids, kernel, load, unique, workload_config};

/// A SIGTERM (and a SIGINT) stop with status 0 after a final drain, and every program and
/// map the sidecar created is gone from the kernel.
#[test]
fn a_signal_leaves_nothing_behind() {
    let Some(_kernel) = kernel("a_signal_leaves_nothing_behind") else {
        return;
    };
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let programs_before = bpf_object_ids("prog");
        let maps_before = bpf_object_ids("map");
        let mut sidecar = Sidecar::start("interval: 100ms\n");
        let ours = |before: &BTreeSet<u64>, kind: &str| -> BTreeSet<u64> {
            bpf_object_ids(kind).difference(before).copied().collect()
        };
        let programs = ours(&programs_before, "prog");
        let maps = ours(&maps_before, "map");
        assert!(programs.len() >= 10, "{name}: our programs: {programs:?}");
        assert!(maps.len() >= 10, "{name}: our maps: {maps:?}");

        assert_eq!(sidecar.stop_with(signal), Some(0), "{name}: exit status");
        let log = sidecar.log();
        assert!(log.contains("stopping: final drain"), "{name}: {log}");
        // The kernel frees a map whose last reference went after an RCU grace period (and
        // inner maps of a map-in-map after another): give it a moment, not forever.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let left_programs: Vec<_> = bpf_object_ids("prog")
                .intersection(&programs)
                .copied()
                .collect();
            let left_maps: Vec<_> = bpf_object_ids("map").intersection(&maps).copied().collect();
            if left_programs.is_empty() && left_maps.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: left in the kernel 10 s after exit: programs {left_programs:?}, maps {left_maps:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Two sidecars on one host each count every call, and stopping one does not disturb the
/// other.
#[test]
fn a_second_instance_does_not_disturb_the_first() {
    let Some(_kernel) = kernel("a_second_instance_does_not_disturb_the_first") else {
        return;
    };
    let comm = unique("two");
    let config = workload_config("100ms", &[(&comm, &comm)], "");
    let first = Sidecar::start(&config);
    let mut second = Sidecar::start(&config);

    load(&comm, &["fadvise", "--calls", "500"]);
    assert_eq!(
        first.after_drains(2).fadvise_calls(&comm, "dontneed"),
        (500, 500)
    );
    assert_eq!(
        second.after_drains(2).fadvise_calls(&comm, "dontneed"),
        (500, 500)
    );

    assert_eq!(second.stop(), Some(0));
    load(&comm, &["fadvise", "--calls", "300"]);
    assert_eq!(
        first.after_drains(2).fadvise_calls(&comm, "dontneed"),
        (800, 800)
    );
}

/// Once attached, the daemon holds no capability in any thread and is no longer root (uid
/// and gid nobody's, no supplementary groups, no_new_privs), and still drains, classifies by
/// /proc and keeps its BanyanDB spool.
#[test]
fn capabilities_are_dropped_after_attaching() {
    let Some(_kernel) = kernel("capabilities_are_dropped_after_attaching") else {
        return;
    };
    let comm = unique("caps");
    let sidecar = Sidecar::start(&workload_config("100ms", &[(&comm, &comm)], ""));
    let pid = sidecar.pid().expect("running");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    let mut threads = 0;
    for task in tasks {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        for set in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:", "CapBnd:"] {
            let mask = status
                .lines()
                .find_map(|l| l.strip_prefix(set))
                .expect("a capability line")
                .trim();
            assert_eq!(mask, "0000000000000000", "{set} of a thread of {pid}");
        }
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        assert_eq!(field("Uid:"), "65534 65534 65534 65534", "thread of {pid}");
        assert_eq!(field("Gid:"), "65534 65534 65534 65534", "thread of {pid}");
        assert_eq!(field("Groups:"), "", "no supplementary groups");
        assert_eq!(field("NoNewPrivs:"), "1");
        threads += 1;
    }
    assert!(threads > 1, "the runtime's threads are there too");
    load(&comm, &["fadvise", "--calls", "250"]);
    assert_eq!(
        sidecar.after_drains(2).fadvise_calls(&comm, "dontneed"),
        (250, 250)
    );
}

/// Runs the sidecar as nobody, without capabilities.
fn unprivileged(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            SIDECAR,
        ])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("setpriv (util-linux)")
}

/// Without privilege: exit status 4 and one line that says what is missing.
#[test]
fn an_unprivileged_start_fails_with_one_clear_line() {
    let Some(_kernel) = kernel("an_unprivileged_start_fails_with_one_clear_line") else {
        return;
    };
    let output = unprivileged(&[
        "run",
        "--metrics-addr",
        "127.0.0.1:0",
        "--grpc-addr",
        "127.0.0.1:0",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(4),
        "exit status; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains("insufficient privilege")
            && lines[0].contains("CAP_BPF")
            && lines[0].contains("uid 65534"),
        "{stderr}"
    );
}

/// `sidecar check` without privilege: the one line `run` prints, not a failure per map.
#[test]
fn an_unprivileged_check_says_why_in_one_line() {
    let Some(_kernel) = kernel("an_unprivileged_check_says_why_in_one_line") else {
        return;
    };
    let output = unprivileged(&["check"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    let failures: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("cannot work"))
        .collect();
    assert_eq!(failures.len(), 1, "{stdout}");
    assert!(failures[0].contains("insufficient privilege"), "{stdout}");
    assert!(!stdout.contains("failed to create map"), "{stdout}");
}

/// `sidecar check` reports and changes nothing: where tracefs is not mounted, it reads the
/// formats from a private mount and leaves it unmounted. (Run in a mount namespace of the
/// test's own, so the host's tracefs stays as it is.)
#[test]
fn check_does_not_mount_tracefs_on_the_host() {
    let Some(_kernel) = kernel("check_does_not_mount_tracefs_on_the_host") else {
        return;
    };
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
         {SIDECAR} check; echo exit=$?; \
         if mountpoint -q /sys/kernel/tracing; then echo tracefs=mounted; else echo tracefs=absent; fi"
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("exit=0"), "{stdout}");
    assert!(stdout.contains("privately, for this check"), "{stdout}");
    assert!(stdout.contains("tracefs=absent"), "{stdout}");
}

/// With port 0 the log names the port the kernel chose.
#[test]
fn the_log_names_the_bound_ports() {
    let Some(_kernel) = kernel("the_log_names_the_bound_ports") else {
        return;
    };
    let mut child = Command::new(SIDECAR)
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sidecar");
    let stderr = child.stderr.take().unwrap();
    let lines: Vec<String> = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .take_while(|l| !l.contains("serving the gRPC API"))
        .chain(std::iter::once(String::new()))
        .collect();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let serving: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("serving /metrics"))
        .collect();
    assert_eq!(serving.len(), 1, "{lines:#?}");
    assert!(!serving[0].contains(":0 "), "{}", serving[0]);
    assert!(serving[0].contains("addr=127.0.0.1:"), "{}", serving[0]);
}
