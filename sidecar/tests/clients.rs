//! Real clients against a real sidecar: promtool, a Prometheus server scraping it, and a
//! gRPC client generated from our proto. Kernel tests (root; under CI=true they must run).

mod support;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sidecar::api::pb::{self, sidecar_service_client::SidecarServiceClient};
use support::{Sidecar, free_port, http_get, http_get_with, kernel, load, unique, url_encode};

fn config(comm: &str) -> String {
    format!("interval: 200ms\nworkloads:\n  - name: {comm}\n    comm: \"^{comm}$\"\n")
}

#[test]
fn promtool_accepts_the_metrics_without_lint() {
    let Some(_kernel) = kernel("promtool_accepts_the_metrics_without_lint") else {
        return;
    };
    let comm = unique("prm");
    let sidecar = Sidecar::start(&config(&comm));
    load(&comm, &["fadvise", "--calls", "10"]);
    sidecar.after_drains(2);
    let (_, text) = sidecar.get("/metrics");
    let (_, openmetrics) = http_get_with(
        sidecar.addr,
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    )
    .unwrap();
    assert!(openmetrics.ends_with("# EOF\n"));
    // promtool parses the Prometheus text format, which /metrics serves by default.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, installed by scripts/bootstrap.sh --test)");
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool: {said}");
    assert!(said.trim().is_empty(), "promtool lint output: {said}");
}

#[test]
fn a_prometheus_server_scrapes_exact_counts() {
    let Some(_kernel) = kernel("a_prometheus_server_scrapes_exact_counts") else {
        return;
    };
    let comm = unique("pms");
    let sidecar = Sidecar::start(&config(&comm));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let prometheus_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus_config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: sidecar\n    static_configs:\n      - targets: ['{}']\n",
            sidecar.addr
        ),
    )
    .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prometheus = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prometheus_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package, installed by scripts/bootstrap.sh --test)"),
    );

    let report = load(&comm, &["fadvise", "--calls", "4321", "--threads", "2"]);
    assert_eq!(report["calls"], 4321);
    let query = format!("ebpf_fadvise_calls_total{{workload=\"{comm}\",advice=\"dontneed\"}}");
    let path = format!("/api/v1/query?query={}", url_encode(&query));
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        if let Ok((200, body)) = http_get(addr, &path) {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            if json["data"]["result"][0]["value"][1] == "4321" {
                break;
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw 4321 calls; last answer: {last}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(sidecar);
}

#[test]
fn grpc_reports_exact_counts_and_serves_health() {
    let Some(_kernel) = kernel("grpc_reports_exact_counts_and_serves_health") else {
        return;
    };
    let comm = unique("grp");
    let sidecar = Sidecar::start(&config(&comm));
    let report = load(&comm, &["fadvise", "--calls", "777", "--bad-fd-calls", "3"]);
    assert_eq!(report["calls"], 780);
    sidecar.after_drains(2);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = SidecarServiceClient::connect(format!("http://{}", sidecar.grpc))
            .await
            .unwrap();
        let stats = client
            .get_io_stats(pb::GetIoStatsRequest {
                workloads: vec![comm.clone()],
                window: "1h".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        let dontneed = stats.workloads[0]
            .fadvise
            .iter()
            .find(|f| f.advice == "dontneed")
            .unwrap();
        assert_eq!((dontneed.calls, dontneed.successes), (780, 777));
        let status = client
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(status.ready);
        assert!(
            status.modules.iter().all(|m| m.state == "attached"),
            "{status:?}"
        );
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", sidecar.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        for service in ["", "sidecar.v1.SidecarService"] {
            let response = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                response.status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            );
        }
    });
}
