//! The operations endpoint: `/metrics` for Prometheus, `/healthz` (the process runs)
//! and `/readyz` (broker and every sink connected, not paused, not shutting down).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use asset_queue::BrokerHealth;
use asset_sink::FanOut;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::pause::Pause;

/// What the endpoints report on.
#[derive(Clone)]
pub struct Ops {
    pub metrics: Arc<Metrics>,
    pub broker: BrokerHealth,
    pub sinks: FanOut,
    pub pause: Pause,
    pub stopping: CancellationToken,
    /// Measured at each scrape (`metadata_worker_temp_dir_bytes`).
    pub temp_dir: PathBuf,
}

/// Binds `addr` now (so a taken port fails the start) and serves until `done` fires.
pub async fn serve(
    addr: SocketAddr,
    ops: Ops,
    done: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("METRICS_ADDR (--metrics-addr) {addr}: cannot listen: {e}"))?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(ops);
    tracing::info!(addr = %addr, "serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(done.cancelled_owned()).await {
            tracing::error!(error = %err, "the metrics server stopped");
        }
    }))
}

async fn metrics_handler(State(ops): State<Ops>) -> impl IntoResponse {
    ops.metrics.broker_connected.set(i64::from(ops.broker.is_connected()));
    // At most CONCURRENCY files: cheap, but file system calls, so off the async threads.
    let dir = ops.temp_dir.clone();
    match tokio::task::spawn_blocking(move || crate::tempdirs::disk_usage(&dir)).await {
        Ok(Ok(bytes)) => {
            ops.metrics.temp_dir_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        Ok(Err(err)) => tracing::warn!(error = %err, "measuring TEMP_DIR's disk usage failed"),
        Err(_) => {}
    }
    {
        // The consumer counts; the counter catches up at each scrape (one at a time, so
        // two concurrent scrapes cannot both add the same difference).
        static CATCH_UP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = CATCH_UP.lock().unwrap_or_else(|e| e.into_inner());
        let behind = ops.broker.reconnects().saturating_sub(ops.metrics.broker_reconnects.get());
        ops.metrics.broker_reconnects.inc_by(behind);
    }
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        ops.metrics.encode(),
    )
}

async fn ready_handler(State(ops): State<Ops>) -> impl IntoResponse {
    let mut missing: Vec<&str> = Vec::new();
    if ops.stopping.is_cancelled() {
        missing.push("shutting down");
    }
    if !ops.broker.is_connected() {
        missing.push("broker");
    }
    missing.extend(ops.sinks.not_ready().await);
    missing.extend(ops.pause.causes());
    if missing.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", missing.join(", ")))
    }
}
