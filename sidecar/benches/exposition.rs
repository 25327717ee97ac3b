//! /metrics encoding cost against the number of workloads (`cargo bench --bench exposition`).
//! The HTTP round trip is measured by `cargo xtask bench`; this isolates the encoder, and
//! what a scrape costs when the drain already rendered the store's families.

use std::{
    hint::black_box,
    sync::{Arc, RwLock},
    time::SystemTime,
};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sidecar::{
    config::Config,
    metrics::{self, Filter},
    status::{KernelFacts, Status},
    store::{Interval, Store},
    workload::WorkloadNames,
};
use sidecar_common::{Advice, ReclaimKind};

/// A store with `workloads` workloads that all counted something in the last interval,
/// and one in ten with a reclaim stall (the histograms appear with the first stall).
fn fixture(workloads: usize) -> (Arc<RwLock<Store>>, Arc<Status>) {
    let mut yaml = String::from("workloads:\n");
    for i in 0..workloads {
        yaml.push_str(&format!("  - name: worker-{i}\n    pids: [{}]\n", i + 1));
    }
    let config = Config::parse(&yaml, "bench").expect("generated config");
    let names = WorkloadNames::from_config(&config);
    let mut store = Store::new(names.clone(), 10, true);
    let mut interval = Interval::empty(names.len(), SystemTime::now());
    for (i, counts) in interval.workloads.iter_mut().enumerate() {
        let n = i as u64 + 1;
        counts.fadvise[Advice::DontNeed as usize].calls = 10 * n;
        counts.fadvise[Advice::DontNeed as usize].successes = 9 * n;
        counts.page_cache.read_attempts = 100 * n;
        counts.page_cache.misses = 7 * n;
        if i % 10 == 0 {
            counts.reclaim[ReclaimKind::Direct as usize].record(40_000 * n);
        }
    }
    store.apply(interval, Vec::new(), workloads);
    (
        Arc::new(RwLock::new(store)),
        Arc::new(Status::new(KernelFacts::default())),
    )
}

fn exposition(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics_text");
    for workloads in [10, 100, 1000] {
        let (store, status) = fixture(workloads);
        group.bench_with_input(
            BenchmarkId::new("prometheus", workloads),
            &workloads,
            |b, _| {
                b.iter(|| {
                    black_box(metrics::encode(&store, &status, &Filter::default(), false).unwrap())
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("openmetrics", workloads),
            &workloads,
            |b, _| {
                b.iter(|| {
                    black_box(metrics::encode(&store, &status, &Filter::default(), true).unwrap())
                })
            },
        );
        // A scrape between two drains: the store's families were rendered at the drain.
        let cache = metrics::ExpositionCache::default();
        cache.scrape(&store, &status, false).unwrap();
        group.bench_with_input(
            BenchmarkId::new("prometheus_rendered_at_drain", workloads),
            &workloads,
            |b, _| b.iter(|| black_box(cache.scrape(&store, &status, false).unwrap())),
        );
    }
    group.finish();
}

criterion_group!(benches, exposition);
criterion_main!(benches);
