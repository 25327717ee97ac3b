//! Bad configurations: one line naming file, line, column and key; a non-zero exit; and,
//! when we can look (root), nothing loaded into the kernel.

mod support;

use std::process::Command;

use support::{SIDECAR, bpftool_program_names};

/// Program names of ours as the kernel lists them (truncated to 15 bytes).
const OUR_PROGRAMS: [&str; 3] = ["fadvise_enter", "filemap_get_pag", "vmscan_shrink_i"];

fn ours_loaded() -> bool {
    bpftool_program_names()
        .iter()
        .any(|name| OUR_PROGRAMS.iter().any(|ours| name.starts_with(ours)))
}

fn run_with(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(SIDECAR)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run sidecar");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_rejected(config: &str, location: &str, needle: &str) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let _kernel = root.then(|| support::kernel("config")).flatten();
    let loaded_before = root && ours_loaded();
    let (code, stderr) = run_with(config);
    assert_eq!(code, Some(2), "exit status for {config:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains(location), "{location} in {stderr}");
    assert!(lines[0].contains(needle), "{needle} in {stderr}");
    if root && !loaded_before {
        assert!(
            !ours_loaded(),
            "a program was loaded for a bad configuration"
        );
    }
}

#[test]
fn bad_yaml() {
    assert_rejected(
        "interval: 1s\nserver: {metrics_addr: [\n",
        "bad.yaml:",
        "bad configuration",
    );
}

#[test]
fn unknown_key() {
    assert_rejected(
        "interval: 1s\nmodules:\n  fadvise:\n    enable: true\n",
        "bad.yaml:4:5",
        "modules.fadvise.enable: unknown field `enable`",
    );
}

#[test]
fn bad_duration() {
    assert_rejected(
        "interval: 10 seconds please\n",
        "bad.yaml:1:11",
        "interval: bad duration",
    );
}

#[test]
fn bad_regex() {
    assert_rejected(
        "workloads:\n  - name: jobs\n    comm: \"(unclosed\"\n",
        "bad.yaml:3:11",
        "workloads[0].comm: bad regular expression",
    );
}

#[test]
fn missing_file() {
    let (code, stderr) = Command::new(SIDECAR)
        .args(["run", "--config", "/nonexistent/sidecar.yaml"])
        .output()
        .map(|o| {
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent/sidecar.yaml"), "{stderr}");
}

/// A spool directory the sidecar cannot use is a configuration error, found before anything
/// is attached: a path through a regular file, a regular file, and a place nobody can write.
#[test]
fn bad_spool_dir() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let cases = [
        (file.join("spool"), "cannot create the directory"),
        (file.clone(), "cannot create the directory"),
        // procfs refuses new directories, whoever asks.
        ("/proc/sidecar-spool".into(), "cannot create the directory"),
    ];
    for (dir, needle) in cases {
        let config = format!(
            "interval: 1s\nexport:\n  banyandb:\n    enabled: true\n    spool:\n      dir: {}\n",
            dir.display()
        );
        assert_rejected(&config, "bad.yaml:6:12", needle);
        assert_rejected(
            &config,
            "export.banyandb.spool.dir",
            &dir.display().to_string(),
        );
    }
}

/// A FIFO or /dev/zero as the configuration or the token file: refused at once, naming the
/// file (it used to hang forever, or grow without bound).
#[test]
fn special_files_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    for config in [fifo.as_path(), std::path::Path::new("/dev/zero")] {
        let started = std::time::Instant::now();
        let output = Command::new(SIDECAR)
            .args(["run", "--config"])
            .arg(config)
            .output()
            .expect("run sidecar");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&config.display().to_string()), "{stderr}");
        assert!(stderr.contains("not a regular file"), "{stderr}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
    for token in [fifo.display().to_string(), "/dev/zero".to_owned()] {
        assert_rejected(
            &format!("interval: 1s\nserver:\n  token_file: {token}\n"),
            "bad.yaml:3:",
            &format!("cannot read token file {token}: not a regular file"),
        );
    }
}
