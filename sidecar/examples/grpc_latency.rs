//! Times `GetMetrics` (every page, and one default-size page) and `GetStatus` over one kept-open channel, the way a
//! client that polls the sidecar would call it. `cargo xtask bench` runs it for its scrape
//! and query figure; it prints one JSON object with the latencies in milliseconds.
//!
//! Usage: grpc_latency <addr> <requests> [page_size] [poll_ms]
//!
//! With `poll_ms`, it is a poller instead: every `poll_ms` milliseconds one `GetMetrics` call
//! at the default page size and a `GetStatus`, and no listing of every page. Then some calls
//! are the first after a drain, and they pay for whatever the drain left to the request path.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use sidecar::api::pb::{self, sidecar_service_client::SidecarServiceClient};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(requests)) = (args.get(1), args.get(2)) else {
        bail!("usage: grpc_latency <addr> <requests> [page_size] [poll_ms]");
    };
    let requests: usize = requests.parse().context("requests: a count")?;
    let page_size: u32 = match args.get(3) {
        Some(size) => size.parse().context("page_size: a count")?,
        None => 10_000,
    };
    let poll = match args.get(4) {
        Some(ms) => Some(std::time::Duration::from_millis(
            ms.parse().context("poll_ms: milliseconds")?,
        )),
        None => None,
    };
    // Windows sized for multi-megabyte pages, as grpc-go's BDP estimation would find them;
    // hyper's default 64 KiB window costs a round trip per 64 KiB.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .connect()
        .await
        .with_context(|| format!("connecting {addr}"))?;
    let mut client = SidecarServiceClient::new(channel)
        .max_decoding_message_size(sidecar::grpc::MAX_ENCODING_MESSAGE_SIZE);

    let mut get_metrics_ms = Vec::with_capacity(requests);
    let mut get_status_ms = Vec::with_capacity(requests);
    let mut first_page_ms = Vec::with_capacity(requests);
    let mut metrics = 0;
    let mut pages = 0;
    for _ in 0..requests {
        if let Some(pause) = poll {
            tokio::time::sleep(pause).await;
        }
        if poll.is_none() {
            let started = Instant::now();
            let (mut count, mut page_count) = (0, 0);
            let mut page_token = String::new();
            loop {
                let page = client
                    .get_metrics(pb::GetMetricsRequest {
                        page_size,
                        page_token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                count += page.metrics.len();
                page_count += 1;
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            get_metrics_ms.push(started.elapsed().as_secs_f64() * 1e3);
            (metrics, pages) = (count, page_count);
        }

        // One call at the default page size (500): what a client that reads one page pays.
        let started = Instant::now();
        client.get_metrics(pb::GetMetricsRequest::default()).await?;
        first_page_ms.push(started.elapsed().as_secs_f64() * 1e3);

        let started = Instant::now();
        client.get_status(pb::GetStatusRequest {}).await?;
        get_status_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "{}",
        serde_json::json!({
            "metrics": metrics,
            "pages": pages,
            "get_metrics_ms": get_metrics_ms,
            "get_status_ms": get_status_ms,
            "first_page_ms": first_page_ms,
        })
    );
    Ok(())
}
