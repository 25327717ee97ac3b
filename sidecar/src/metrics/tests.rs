use std::time::SystemTime;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use sidecar_common::{Advice, ReclaimKind};

use super::{collect::latency_value, *};
use crate::{
    catalog::CATALOG,
    config::Config,
    kernel::{ModuleState, modules::Module},
    status::{KernelFacts, Status},
    store::{Interval, LatencyHistogram, Store},
    workload::WorkloadNames,
};

fn fixture() -> (Arc<RwLock<Store>>, Arc<Status>) {
    let config = Config::parse("workloads:\n  - name: jobs\n    pids: [1]\n", "t").unwrap();
    let names = WorkloadNames::from_config(&config);
    let mut store = Store::new(names.clone(), 10, true);
    let mut interval = Interval::empty(names.len(), SystemTime::now());
    interval.workloads[0].fadvise[Advice::DontNeed as usize].calls = 5;
    interval.workloads[0].fadvise[Advice::DontNeed as usize].successes = 4;
    interval.workloads[0].page_cache.read_attempts = 100;
    interval.workloads[0].page_cache.misses = 10;
    interval.workloads[0].reclaim[ReclaimKind::Memcg as usize].record(3_000_000);
    interval.workloads[0].reclaim[ReclaimKind::Direct as usize].record(40_000);
    interval.workloads[0].io.read.record(20_000);
    interval.workloads[0].io.read_bytes = 8192;
    interval.workloads[0].io.sync.record(1_500_000);
    interval.workloads[0].io.dirtied_pages = 3;
    interval.workloads[0].refaults.file_refaults = 6;
    interval.workloads[0].memcg.adds = 40;
    interval.workloads[0].memcg.evictions = 12;
    interval.workloads[0].memcg.file_refaults = 2;
    interval.host.lru_pages_scanned = 10;
    interval.host.lru_pages_reclaimed = 5;
    let programs = vec![crate::kernel::ProgramStats {
        name: "fadvise_exit".into(),
        run_time: std::time::Duration::from_micros(3),
        run_count: 5,
    }];
    store.apply(interval, programs, 1);
    let status = Status::new(KernelFacts::default());
    // The exporter's families exist only with an exporter.
    status.add_exporter(Arc::new(crate::export::banyandb::ExportStats::default()));
    (Arc::new(RwLock::new(store)), Arc::new(status))
}

/// A store and status with fixed counts in every family: several workloads, every
/// advice, both reclaim histograms, the io histograms and counts, refaults by running
/// process and counts by owning memory cgroup, host counters, program statistics, an
/// exporter.
fn golden_fixture() -> (Arc<RwLock<Store>>, Arc<Status>) {
    use std::sync::atomic::Ordering::Relaxed;
    let config = Config::parse(
        "workloads:\n  - name: jobs\n    pids: [1]\n  - name: sync\n    pids: [2]\n  - name: db\n    pids: [3]\n  - name: idle\n    pids: [4]\n",
        "t",
    )
    .unwrap();
    let names = WorkloadNames::from_config(&config);
    let mut store = Store::new(names.clone(), 10, true);
    let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s);
    for round in 1..=3u64 {
        let mut interval = Interval::empty(names.len(), at(round));
        interval.length = Duration::from_secs(1);
        interval.drain.duration = Duration::from_micros(700 * round);
        interval.drain.switch_duration = Duration::from_micros(500 * round);
        interval.drain.entries = 40 + round as usize;
        // workloads 0..3 and `other` (the last); `idle` counts nothing.
        for (w, counts) in interval.workloads.iter_mut().enumerate() {
            if w == 3 {
                continue;
            }
            let w = w as u64 + 1;
            for advice in Advice::ALL {
                let a = advice as u64 + 1;
                counts.fadvise[advice as usize].calls = w * a * round;
                counts.fadvise[advice as usize].successes = w * a * round - (a % 2);
            }
            counts.page_cache.read_attempts = 1000 * w + round;
            counts.page_cache.misses = 100 * w + round;
            counts.page_cache.adds = 200 * w;
            counts.page_cache.evictions = 50 * w * round;
            if w != 2 {
                counts.reclaim[ReclaimKind::Direct as usize].record(40_000 * w * round);
                counts.reclaim[ReclaimKind::Direct as usize].record(2_500_000);
            }
            if w == 1 {
                counts.reclaim[ReclaimKind::Memcg as usize].record(3_000_000 * round);
            }
            for _ in 0..w {
                counts.io.read.record(8_000 * w * round);
            }
            counts.io.read_bytes = 4096 * w * round;
            if w == 2 {
                counts.io.sync.record(1_000_000 * round);
                counts.io.dirtied_pages = 64 * round;
            }
            counts.refaults.file_refaults = 5 * w * round;
            counts.memcg.adds = 150 * w;
            counts.memcg.evictions = 40 * w * round;
            counts.memcg.file_refaults = 6 * w * round;
            if w == 1 {
                counts.refaults.anon_refaults = round;
                counts.memcg.anon_refaults = 2 * round;
            }
        }
        interval.host.lru_pages_scanned = 1000 * round;
        interval.host.lru_pages_reclaimed = 300 * round;
        interval.host.kswapd_wakeups = round;
        interval.host.overflow.fadvise = round;
        interval.host.overflow.page_cache = 2;
        interval.host.overflow.reclaim = 0;
        interval.host.overflow.processes = 1;
        interval.host.overflow.io = round - 1;
        interval.host.overflow.memcg = 3 * round;
        interval.host.field_read_errors = 0;
        interval.host.dropped_process_events = 7;
        interval.host.fadvise_calls_seen = 100 * round;
        interval.direct_reclaim_in_progress = round as i64;
        let programs = vec![
            crate::kernel::ProgramStats {
                name: "fadvise_exit".into(),
                run_time: Duration::from_micros(30 * round),
                run_count: 50 * round,
            },
            crate::kernel::ProgramStats {
                name: "filemap_add".into(),
                run_time: Duration::from_nanos(1_500 * round),
                run_count: 9 * round,
            },
        ];
        store.apply(interval, programs, 12);
    }
    let status = Status::new(KernelFacts {
        release: "6.18.0-test".to_owned(),
        btf: true,
    });
    status.set_modules(
        [
            (Module::Fadvise, ModuleState::Attached),
            (Module::PageCache, ModuleState::Attached),
            (Module::Vmscan, ModuleState::Failed("refused".to_owned())),
            (Module::Io, ModuleState::Attached),
            (Module::Memcg, ModuleState::Attached),
        ]
        .into_iter()
        .collect(),
    );
    status.set_kernel_map_bytes(123_456);
    let exporter = Arc::new(crate::export::banyandb::ExportStats::default());
    exporter.written.store(900, Relaxed);
    exporter.retried.store(30, Relaxed);
    exporter.rejected.store(2, Relaxed);
    exporter.dropped.store(5, Relaxed);
    exporter.queue_points.store(77, Relaxed);
    exporter.spool_bytes.store(4096, Relaxed);
    exporter.spool_corrupt_records.store(1, Relaxed);
    exporter.circuit.store(2, Relaxed);
    status.add_exporter(exporter);
    (Arc::new(RwLock::new(store)), Arc::new(status))
}

/// `/metrics` stays byte-for-byte the same for the same counts. Regenerate the golden
/// files (only when a change of output is intended) with `UPDATE_GOLDEN=1`.
#[test]
fn the_exposition_matches_the_golden_files() {
    let (store, status) = golden_fixture();
    let cache = ExpositionCache::default();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let filtered = Filter {
        modules: vec!["page_cache".into(), "self".into()],
        workloads: vec!["db".into()],
    };
    let outputs = [
        (
            "metrics.prom",
            cache.scrape(&store, &status, false).unwrap(),
        ),
        (
            "metrics.openmetrics",
            cache.scrape(&store, &status, true).unwrap(),
        ),
        (
            "metrics-all.prom",
            encode(&store, &status, &Filter::default(), false).unwrap(),
        ),
        (
            "metrics-filtered.openmetrics",
            encode(&store, &status, &filtered, true).unwrap(),
        ),
    ];
    for (file, text) in outputs {
        let path = dir.join(file);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert!(
            golden == text,
            "{file} differs from the exposition:\n{text}"
        );
    }
}

#[test]
fn openmetrics_has_the_contract_names() {
    let (store, status) = fixture();
    let text = encode(&store, &status, &Filter::default(), true).unwrap();
    assert!(text.ends_with("# EOF\n"));
    for expected in [
        "ebpf_fadvise_calls_total{workload=\"jobs\",advice=\"dontneed\"} 5",
        "ebpf_fadvise_success_total{workload=\"jobs\",advice=\"dontneed\"} 4",
        "ebpf_fadvise_success_rate_percent{workload=\"jobs\"} 80.0",
        "ebpf_cache_read_attempts_total{workload=\"jobs\"} 100",
        "ebpf_cache_misses_total{workload=\"jobs\"} 10",
        "ebpf_cache_hit_rate_percent{workload=\"jobs\"} 90.0",
        "ebpf_memory_lru_pages_scanned_total 10",
        "ebpf_memory_reclaim_efficiency_percent 50.0",
        "ebpf_memory_memcg_reclaim_seconds_count{workload=\"jobs\"} 1",
        "ebpf_memory_memcg_reclaim_seconds_bucket{le=\"+Inf\",workload=\"jobs\"} 1",
        "ebpf_io_read_seconds_count{workload=\"jobs\"} 1",
        "ebpf_io_read_bytes_total{workload=\"jobs\"} 8192",
        "ebpf_io_fsync_seconds_sum{workload=\"jobs\"} 0.0015",
        "ebpf_io_dirtied_pages_total{workload=\"jobs\"} 3",
        "ebpf_memory_file_refaults_total{workload=\"jobs\"} 6",
        "ebpf_memcg_page_cache_adds_total{workload=\"jobs\"} 40",
        "ebpf_memcg_page_cache_evictions_total{workload=\"jobs\"} 12",
        "ebpf_memcg_file_refaults_total{workload=\"jobs\"} 2",
        "sidecar_drains_total 1",
        "sidecar_build_info{version=",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    // `other` had no events in the interval: no rate for it.
    assert!(!text.contains("ebpf_cache_hit_rate_percent{workload=\"other\"}"));
    assert!(text.contains("ebpf_cache_read_attempts_total{workload=\"other\"} 0"));
}

#[test]
fn the_cached_exposition_matches_a_fresh_one_and_follows_drains() {
    let (store, status) = fixture();
    let cache = ExpositionCache::default();
    let sorted = |text: &str| {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    };
    for openmetrics in [false, true] {
        let fresh = encode(&store, &status, &Filter::default(), openmetrics).unwrap();
        let cached = cache.scrape(&store, &status, openmetrics).unwrap();
        assert_eq!(sorted(&fresh), sorted(&cached));
        assert_eq!(cached.ends_with("# EOF\n"), openmetrics);
    }
    let names = store.read().unwrap().names().clone();
    let mut interval = Interval::empty(names.len(), SystemTime::now());
    interval.workloads[0].page_cache.misses = 5;
    store.write().unwrap().apply(interval, Vec::new(), 1);
    // Rendered after the drain, and a scrape without the refresh is not stale either.
    let before_refresh = cache.scrape(&store, &status, true).unwrap();
    cache.refresh(&store, &status);
    let after_refresh = cache.scrape(&store, &status, false).unwrap();
    for text in [before_refresh, after_refresh] {
        assert!(text.contains("ebpf_cache_misses_total{workload=\"jobs\"} 15"));
        assert!(text.contains("sidecar_drains_total 2"));
    }
}

#[test]
fn every_family_is_in_the_catalog() {
    let (store, status) = fixture();
    let store = store.read().unwrap();
    for family in collect(&store, &status, &Filter::default()) {
        assert!(CATALOG.iter().any(|d| std::ptr::eq(*d, family.def)));
    }
    let mut names: Vec<_> = CATALOG.iter().map(|d| d.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CATALOG.len());
}

/// A family in the catalog that `collect` never builds is a metric we document but
/// never serve.
#[test]
fn every_catalog_family_is_collected() {
    let (store, status) = fixture();
    let store = store.read().unwrap();
    let families = collect(&store, &status, &Filter::default());
    for def in CATALOG {
        assert!(
            families.iter().any(|f| std::ptr::eq(*def, f.def)),
            "{} is never collected",
            def.name
        );
    }
}

#[test]
fn latency_buckets_are_in_seconds() {
    let mut h = LatencyHistogram::default();
    h.record(500); // folds into the first exported bound
    h.record(3_000_000);
    let Value::Histogram { buckets, count, .. } = latency_value(&h) else {
        panic!("a histogram")
    };
    assert_eq!(count, 2);
    assert_eq!(buckets.first().map(|b| b.1), Some(1));
    assert!((buckets[0].0 - 1.024e-6).abs() < 1e-12);
    assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY));
    assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 2);
}

#[test]
fn filters_narrow_the_output() {
    let (store, status) = fixture();
    let filter = Filter {
        modules: vec!["page_cache".into()],
        workloads: vec!["jobs".into()],
    };
    let text = encode(&store, &status, &filter, true).unwrap();
    assert!(text.contains("ebpf_cache_misses_total{workload=\"jobs\"}"));
    assert!(!text.contains("workload=\"other\""));
    assert!(!text.contains("ebpf_fadvise"));
    assert!(!text.contains("sidecar_"));
}

#[test]
fn prometheus_text_renames_counter_families() {
    let (store, status) = fixture();
    let text = encode(&store, &status, &Filter::default(), false).unwrap();
    assert!(text.contains("# TYPE ebpf_fadvise_calls_total counter\n"));
    assert!(text.contains("# HELP ebpf_fadvise_calls_total posix_fadvise"));
    assert!(text.contains("sidecar_build_info{version="));
    assert!(!text.contains("# EOF"));
    assert!(text.contains("# TYPE ebpf_memory_memcg_reclaim_seconds histogram\n"));
    assert!(text.contains("\nebpf_fadvise_calls_total{workload=\"jobs\",advice=\"dontneed\"} 5\n"));
    // Same samples as OpenMetrics, line for line, apart from descriptors and EOF.
    let openmetrics = encode(&store, &status, &Filter::default(), true).unwrap();
    let samples = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(samples(&text), samples(&openmetrics));
    assert_eq!(
        text.lines().filter(|l| l.starts_with("# TYPE ")).count(),
        openmetrics
            .lines()
            .filter(|l| l.starts_with("# TYPE "))
            .count()
    );
}
