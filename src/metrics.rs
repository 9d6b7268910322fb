//! Prometheus metrics on their own listener, so scraping never competes
//! with anything else the daemon does. Recording is a no-op until
//! [`install`] has run, so the sync cycle records unconditionally.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::PrometheusBuilder;

pub const CYCLES: &str = "uid2_bucket_sync_cycles_total";
pub const ROWS_RECEIVED: &str = "uid2_bucket_sync_rows_received_total";
pub const QUEUED: &str = "uid2_bucket_sync_queued_total";
pub const CYCLE_DURATION: &str = "uid2_bucket_sync_cycle_duration_seconds";
pub const LAST_SUCCESS: &str = "uid2_bucket_sync_last_success_timestamp_seconds";
pub const QUEUE_ITEMS: &str = "uid2_bucket_sync_queue_items";
pub const OLDEST_PENDING_AGE: &str = "uid2_bucket_sync_oldest_pending_age_seconds";

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {listen}: {reason}")]
pub struct MetricsError {
    listen: SocketAddr,
    reason: String,
}

/// Binds the listener and installs the global recorder. Must run inside
/// the tokio runtime, which then serves `GET /metrics`.
pub fn install(listen: SocketAddr) -> Result<(), MetricsError> {
    let error = |reason: String| MetricsError { listen, reason };
    // Bind first so an address in use is reported as such, not swallowed
    // by the exporter's background task.
    let probe = std::net::TcpListener::bind(listen).map_err(|e| error(e.to_string()))?;
    drop(probe);
    let (recorder, exporter) = PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets(&[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
        .map_err(|e| error(e.to_string()))?
        .build()
        .map_err(|e| error(e.to_string()))?;
    metrics::set_global_recorder(recorder).map_err(|e| error(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = exporter.await {
            tracing::error!(?error, "metrics listener stopped");
        }
    });
    Ok(())
}

/// One finished cycle. `outcome` is `success` or an error kind.
pub fn record_cycle(outcome: &'static str, rows_received: u64, queued: u64, duration: Duration) {
    counter!(CYCLES, "outcome" => outcome).increment(1);
    counter!(ROWS_RECEIVED).increment(rows_received);
    counter!(QUEUED).increment(queued);
    histogram!(CYCLE_DURATION).record(duration.as_secs_f64());
    if outcome == "success" {
        gauge!(LAST_SUCCESS).set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    }
}

/// Queue depth by state, and the age of the oldest pending item.
pub fn record_queue(
    pending: u64,
    leased: u64,
    done: u64,
    dead: u64,
    oldest_pending_age: Option<Duration>,
) {
    for (state, count) in [
        ("pending", pending),
        ("leased", leased),
        ("done", done),
        ("dead", dead),
    ] {
        gauge!(QUEUE_ITEMS, "state" => state).set(count as f64);
    }
    gauge!(OLDEST_PENDING_AGE).set(oldest_pending_age.map_or(0.0, |age| age.as_secs_f64()));
}
