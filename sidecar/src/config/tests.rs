use std::{path::Path, time::Duration};

use super::*;

fn error_of(text: &str) -> String {
    Config::parse(text, "test.yaml").unwrap_err().to_string()
}

#[test]
fn the_shipped_config_parses() {
    let text = include_str!("../../../configs/sidecar.yaml");
    let config = Config::parse(text, "configs/sidecar.yaml").unwrap();
    assert!(config.server.metrics_addr.0.ip().is_loopback());
    assert!(config.server.grpc_addr.0.ip().is_loopback());
}

#[test]
fn a_workload_error_points_at_that_workload() {
    let err = error_of(
        "interval: 1s\nworkloads:\n  - name: a\n    pids: [1]\n  - name: a\n    comm: x\n",
    );
    assert!(err.starts_with("test.yaml:5:"), "{err}");
    assert!(
        err.contains("workloads[1]: workload name \"a\" is used twice"),
        "{err}"
    );
    let err = error_of("workloads:\n  - name: a\n    pids: [1]\n  - name: b\n");
    assert!(err.starts_with("test.yaml:4:"), "{err}");
    assert!(
        err.contains("workloads[1]: workload \"b\" has no condition"),
        "{err}"
    );
}

/// Each kind of error points at the offending key or value (issue 12.8 listed where
/// they pointed before: 3:3, 2:3, 2:3, 1:1, 1:1 and 0:0).
#[test]
fn errors_point_at_the_offending_place() {
    let cases = [
        (
            "interval: 1s\nserver:\n  metrics_addr: 127.0.0.1:1\n  grpc_addr: 127.0.0.1:2\n  tls:\n    cert: /c.pem\n",
            "test.yaml:6:5: server.tls: missing field `key`",
        ),
        (
            "interval: 1s\nlog:\n  level: info\nshutdown_timeout: 99h\n",
            "test.yaml:4:19: shutdown_timeout:",
        ),
        (
            "interval: 1s\nlog:\n  level: info\ninterval: 2s\n",
            "test.yaml:4:11: (top level): duplicate field `interval`",
        ),
        (
            "log:\n  level: info\n  format: text\n  level: debug\n",
            "test.yaml:4:10: log: duplicate field `level`",
        ),
        (
            "interval: 1s\n---\ninterval: 2s\n",
            "test.yaml:2:1: (top level): deserializing from YAML containing more than one document",
        ),
        (
            "workloads:\n  - name: a\n    pids: [1]\n  - name: a\n    comm: x\n",
            "test.yaml:4:3: workloads[1]: workload name \"a\" is used twice",
        ),
    ];
    for (text, expected) in cases {
        let err = error_of(text);
        assert!(err.starts_with(expected), "{err}\nexpected: {expected}");
    }
}

#[test]
fn deep_nesting_and_empty_matchers_are_refused() {
    let deep = format!(
        "interval: {}1{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let started = std::time::Instant::now();
    let err = error_of(&deep);
    assert!(
        err.starts_with("test.yaml:1:75: (top level): nested deeper than 64"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    for (matcher, what) in [
        ("cgroup: \"\"", "empty substring"),
        ("comm: \"\"", "empty pattern"),
        ("cmdline: ''", "empty pattern"),
    ] {
        let err = error_of(&format!("workloads:\n  - name: a\n    {matcher}\n"));
        assert!(err.starts_with("test.yaml:3:"), "{err}");
        assert!(err.contains(what), "{err}");
    }
}

#[test]
fn more_workloads_than_ids_are_refused() {
    let mut text = String::from("workloads:\n");
    for i in 0..MAX_WORKLOADS {
        text.push_str(&format!("  - {{name: w{i}, pids: [{}]}}\n", i + 1));
    }
    let config = Config::parse(&text, "t.yaml").unwrap();
    let names = crate::workload::WorkloadNames::from_config(&config);
    assert_eq!(names.name(names.other()), "other");
    assert_eq!(
        names.name(names.ids().nth(MAX_WORKLOADS - 1).unwrap()),
        "w65534"
    );
    text.push_str("  - {name: one-too-many, pids: [1]}\n");
    let err = error_of(&text);
    assert!(
        err.starts_with(&format!("test.yaml:{}:", MAX_WORKLOADS + 2)),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "workloads[{MAX_WORKLOADS}]: more than {MAX_WORKLOADS} workloads"
        )),
        "{err}"
    );
}

#[test]
fn a_key_is_located_for_errors_found_after_parsing() {
    let text = "interval: 1s\nexport:\n  # the sink\n  banyandb:\n    enabled: true\n    spool:\n      max_bytes: 1MiB\n      dir: /nope\n";
    assert_eq!(locate(text, "export.banyandb.spool.dir"), Some((8, 12)));
    assert_eq!(locate(text, "export.banyandb.enabled"), Some((5, 14)));
    assert_eq!(locate(text, "export.banyandb.addr"), None);
    let text = "workloads:\n  - name: a\n    pids: [1]\n  -   name: b\n    comm: x\n  - {name: c}\nunmatched: other\n";
    assert_eq!(locate(text, "workloads[0]"), Some((2, 3)));
    assert_eq!(locate(text, "workloads[1].comm"), Some((5, 11)));
    assert_eq!(locate(text, "workloads[1].name"), Some((4, 13)));
    assert_eq!(locate(text, "workloads[0].comm"), None);
    assert_eq!(locate(text, "workloads[2]"), Some((6, 3)));
    assert_eq!(locate(text, "workloads[3]"), None);
    assert_eq!(locate(text, "unmatched"), Some((7, 12)));
    // A key of the same name in another block is not taken for it.
    let text = "modules:\n  dir: x\nexport:\n  banyandb:\n    addr: a:1\n";
    assert_eq!(locate(text, "export.banyandb.dir"), None);
}

#[test]
fn empty_file_is_the_default() {
    let config = Config::parse("\n# nothing\n", "x").unwrap();
    assert_eq!(config.interval.0, Duration::from_secs(10));
    assert_eq!(config.unmatched, Unmatched::Other);
    assert!(config.modules.page_cache.enabled);
}

#[test]
fn unknown_key_names_key_line_and_column() {
    let err = error_of("interval: 1s\nmodules:\n  fadvise:\n    enabeld: true\n");
    assert_eq!(
        err,
        "test.yaml:4:5: modules.fadvise.enabeld: unknown field `enabeld`, expected `enabled`"
    );
}

#[test]
fn bad_duration_points_at_the_value() {
    let err = error_of("log:\n  level: info\ninterval: 10x\n");
    assert!(
        err.starts_with("test.yaml:3:11: interval: bad duration \"10x\""),
        "{err}"
    );
    let err = error_of("interval: 10\n");
    assert!(err.contains("give a unit"), "{err}");
    let err = error_of("interval: 1ms\n");
    assert!(err.contains("outside"), "{err}");
}

#[test]
fn bad_regex_points_at_the_value() {
    let err = error_of("workloads:\n  - name: jobs\n    comm: \"^job(\"\n");
    assert!(
        err.starts_with("test.yaml:3:11: workloads[0].comm: bad regular expression \"^job(\""),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn bad_yaml_is_located() {
    let err = error_of("interval: 1s\nserver: [\n  metrics_addr: x\n");
    assert!(err.starts_with("test.yaml:"), "{err}");
    assert!(!err.starts_with("test.yaml:0:0"), "{err}");
}

#[test]
fn workload_rules() {
    let err = error_of("workloads:\n  - name: other\n    comm: x\n");
    assert!(err.contains("reserved"), "{err}");
    let err = error_of("workloads:\n  - name: a\n");
    assert!(err.contains("no condition"), "{err}");
    let err = error_of("workloads:\n  - name: a\n    pids: [1]\n  - name: a\n    comm: x\n");
    assert!(err.contains("used twice"), "{err}");
    let err = error_of("workloads:\n  - name: \"a b\"\n    pids: [1]\n");
    assert!(err.contains("may use only"), "{err}");
}

#[test]
fn sizes() {
    assert_eq!(ByteSize::parse("256MiB"), Ok(ByteSize(256 << 20)));
    assert_eq!(ByteSize::parse("1GiB"), Ok(ByteSize(1 << 30)));
    assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
    assert!(ByteSize::parse("12MB").is_err());
    assert!(ByteSize::parse("MiB").is_err());
    let err = error_of("limits:\n  max_kernel_memory: 3 parsecs\n");
    assert!(
        err.starts_with("test.yaml:2:22: limits.max_kernel_memory: bad size"),
        "{err}"
    );
    let config = Config::parse("limits:\n  max_kernel_memory: 64MiB\n", "t").unwrap();
    assert_eq!(config.limits.max_kernel_memory, ByteSize(64 << 20));
    assert_eq!(
        Config::parse("", "t").unwrap().limits.max_history_bytes,
        BoundedSize(64 << 20)
    );
    let config = Config::parse("limits:\n  max_history_bytes: 1GiB\n", "t").unwrap();
    assert_eq!(config.limits.max_history_bytes.bytes(), 1 << 30);
    for bad in ["1KiB", "17GiB"] {
        let err = error_of(&format!("limits:\n  max_history_bytes: {bad}\n"));
        assert!(
            err.contains("limits.max_history_bytes") && err.contains("outside"),
            "{err}"
        );
    }
}

#[test]
fn banyandb_export() {
    let config = Config::parse("", "t").unwrap();
    let b = &config.export.banyandb;
    assert!(!b.enabled);
    assert_eq!(b.addr.0, "127.0.0.1:17912");
    assert_eq!(b.ttl.to_string(), "7d");
    assert_eq!(b.segment_interval.as_duration(), Duration::from_secs(86400));
    let text = "export:\n  banyandb:\n    enabled: true\n    addr: banyandb.svc:17912\n    group: g1\n    ttl: 36h\n    segment_interval: 12h\n    shard_num: 2\n    batch_size: 10\n    flush_interval: 200ms\n    timeout: 2s\n    spool:\n      dir: /tmp/s\n      max_bytes: 1MiB\n    tls:\n      ca: /ca.pem\n    username: u\n    password: p\n";
    let config = Config::parse(text, "t").unwrap();
    let b = &config.export.banyandb;
    assert!(b.enabled);
    assert_eq!(b.addr.0, "banyandb.svc:17912");
    assert_eq!((b.ttl.unit, b.ttl.num), (IntervalUnit::Hour, 36));
    assert_eq!(b.shard_num.0, 2);
    assert_eq!(b.flush_interval.0, Duration::from_millis(200));
    assert_eq!(b.spool.max_bytes, ByteSize(1 << 20));
    assert_eq!(
        b.tls.as_ref().unwrap().ca.as_deref(),
        Some(Path::new("/ca.pem"))
    );
    for (yaml, expected) in [
        (
            "ttl: 5m",
            "test.yaml:3:10: export.banyandb.ttl: bad interval",
        ),
        (
            "shard_num: 0",
            "test.yaml:3:16: export.banyandb.shard_num: 0 is outside",
        ),
        (
            "batch_size: -1",
            "export.banyandb.batch_size: -1 is outside",
        ),
        (
            "flush_interval: 1h",
            "export.banyandb.flush_interval: \"1h\" is outside",
        ),
        ("timeout: 10", "export.banyandb.timeout: bad duration"),
        ("addr: nowhere", "export.banyandb.addr: bad address"),
        ("group: \"a b\"", "export.banyandb.group: bad name"),
        (
            "spool: { max_bytes: 1XB }",
            "export.banyandb.spool.max_bytes: bad size",
        ),
        (
            "spool: { dri: x }",
            "export.banyandb.spool.dri: unknown field",
        ),
        (
            "tls: { ca: /a, cert: /c.pem }",
            "export.banyandb.tls: give both cert and key",
        ),
        ("tls: { cert: /c, key: /k }", "export.banyandb.tls: give ca"),
        (
            "password: p",
            "export.banyandb: password is set without username",
        ),
        (
            "ttl: 1d\n    segment_interval: 2d",
            "export.banyandb: segment_interval (2d) is longer than ttl (1d)",
        ),
        ("enable: true", "export.banyandb.enable: unknown field"),
    ] {
        let err = error_of(&format!("export:\n  banyandb:\n    {yaml}\n"));
        assert!(err.contains(expected), "{yaml}: {err}");
    }
}

#[test]
fn full_config() {
    let text = r#"
interval: 500ms
server:
  metrics_addr: 127.0.0.1:19464
  grpc_addr: "[::1]:50051"
modules:
  vmscan: { enabled: false }
workloads:
  - name: job-worker
    comm: "^job-worker$"
    cmdline: "jobs\\.toml"
    cgroup: /kubepods/
  - name: banyandb
    pids: [1, 2]
unmatched: drop
limits:
  max_tracked_processes: 100
log:
  format: json
"#;
    let config = Config::parse(text, "x").unwrap();
    assert_eq!(config.interval.0, Duration::from_millis(500));
    assert!(!config.modules.vmscan.enabled);
    assert!(config.modules.fadvise.enabled);
    assert_eq!(config.workloads.0.len(), 2);
    assert_eq!(config.workloads.0[0].name.0, "job-worker");
    assert!(
        config.workloads.0[0]
            .cmdline
            .as_ref()
            .unwrap()
            .0
            .is_match("run jobs.toml")
    );
    assert_eq!(config.unmatched, Unmatched::Drop);
    assert_eq!(config.limits.max_tracked_processes.0, 100);
    assert_eq!(config.limits.max_tracked_threads.0, 16384);
    assert_eq!(config.log.format, LogFormat::Json);
    let err = error_of("limits:\n  max_tracked_processes: 3\n");
    assert!(
        err.starts_with("test.yaml:2:26: limits.max_tracked_processes:"),
        "{err}"
    );
}
