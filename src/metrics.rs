//! Prometheus metrics on their own listener, so scraping never competes
//! with anything else the daemon does. Recording is a no-op until
//! [`install`] has run, so the sync cycle records unconditionally.
//!
//! Every series is described (`# HELP`) and published with a zero value at
//! install, so dashboards and absent-series alerts see the daemon before its
//! first cycle. Only `GET /metrics` is served; any other path is a 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub(crate) const CYCLES: &str = "uid2_bucket_sync_cycles_total";
pub(crate) const ROWS_RECEIVED: &str = "uid2_bucket_sync_rows_received_total";
pub(crate) const QUEUED: &str = "uid2_bucket_sync_queued_total";
pub(crate) const TICKS_SKIPPED: &str = "uid2_bucket_sync_ticks_skipped_total";
pub(crate) const CYCLE_DURATION: &str = "uid2_bucket_sync_cycle_duration_seconds";
pub(crate) const LAST_SUCCESS: &str = "uid2_bucket_sync_last_success_timestamp_seconds";
pub(crate) const QUEUE_ITEMS: &str = "uid2_bucket_sync_queue_items";
pub(crate) const OLDEST_PENDING_AGE: &str = "uid2_bucket_sync_oldest_pending_age_seconds";
pub(crate) const BUILD_INFO: &str = "uid2_bucket_sync_build_info";
pub(crate) const REMAP_PASSES: &str = "uid2_bucket_sync_remap_passes_total";
pub(crate) const MAP_REQUESTS: &str = "uid2_bucket_sync_map_requests_total";
pub(crate) const IDENTITIES_SENT: &str = "uid2_bucket_sync_identities_sent_total";
pub(crate) const IDENTITIES_CHANGED: &str = "uid2_bucket_sync_identities_changed_total";
pub(crate) const IDENTITIES_OPTED_OUT: &str = "uid2_bucket_sync_identities_opted_out_total";
pub(crate) const IDENTITIES_INVALID: &str = "uid2_bucket_sync_identities_invalid_total";
pub(crate) const CHANGES_PRUNED: &str = "uid2_bucket_sync_changes_pruned_total";

/// The one path served.
pub(crate) const PATH: &str = "/metrics";

const QUEUE_STATES: [&str; 4] = ["pending", "leased", "done", "dead"];
const DURATION_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Histogram samples accumulate between drains; one cycle adds one sample,
/// so an occasional drain is plenty.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// A scraper that opens a connection and never sends its request is cut off.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {listen}: {reason}")]
pub(crate) struct MetricsError {
    listen: SocketAddr,
    reason: String,
}

/// Binds the listener, installs the global recorder, describes every
/// series and publishes its starting value, then serves `GET /metrics`
/// from a task on the current tokio runtime.
pub(crate) async fn install(listen: SocketAddr) -> Result<(), MetricsError> {
    let error = |reason: String| MetricsError { listen, reason };
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| error(e.to_string()))?;
    let recorder = PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)
        .map_err(|e| error(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| error(e.to_string()))?;
    describe();
    publish_starting_values();
    tokio::spawn(serve(listener, handle.clone()));
    tokio::spawn(upkeep(handle));
    Ok(())
}

fn describe() {
    describe_counter!(
        CYCLES,
        Unit::Count,
        "Finished sync cycles, by outcome: success or the error kind."
    );
    describe_counter!(
        ROWS_RECEIVED,
        Unit::Count,
        "Bucket rows received from the operator."
    );
    describe_counter!(QUEUED, Unit::Count, "Buckets newly queued for re-mapping.");
    describe_counter!(
        TICKS_SKIPPED,
        Unit::Count,
        "Scheduled ticks skipped because the previous cycle was still running."
    );
    describe_histogram!(
        CYCLE_DURATION,
        Unit::Seconds,
        "Duration of a sync cycle, retries included."
    );
    describe_gauge!(
        LAST_SUCCESS,
        Unit::Seconds,
        "Unix time of the last successful sync cycle; 0 if there never was one."
    );
    describe_gauge!(
        QUEUE_ITEMS,
        Unit::Count,
        "Re-mapping queue entries, by state."
    );
    describe_gauge!(
        OLDEST_PENDING_AGE,
        Unit::Seconds,
        "How long the oldest pending queue entry has been waiting; 0 when none is."
    );
    describe_counter!(
        REMAP_PASSES,
        Unit::Count,
        "Finished re-map passes, by outcome: success or the error kind."
    );
    describe_counter!(
        MAP_REQUESTS,
        Unit::Count,
        "Identity-map batches sent by the re-map worker (one request, or one per identity type \
         with v2), by outcome after retries: success or the error kind."
    );
    describe_counter!(
        IDENTITIES_SENT,
        Unit::Count,
        "Identities sent to the operator by the re-map worker."
    );
    describe_counter!(
        IDENTITIES_CHANGED,
        Unit::Count,
        "Identities whose UID2 or status changed (one change record each)."
    );
    describe_counter!(
        IDENTITIES_OPTED_OUT,
        Unit::Count,
        "Identities the operator newly answered as opted out."
    );
    describe_counter!(
        IDENTITIES_INVALID,
        Unit::Count,
        "Identities the operator newly answered as invalid."
    );
    describe_counter!(
        CHANGES_PRUNED,
        Unit::Count,
        "Change records deleted past mapping.change_retention."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say which version and git commit is running."
    );
}

/// Zero for every series (with the label values known in advance), so
/// a series exists before the event it counts first happens.
fn publish_starting_values() {
    gauge!(
        BUILD_INFO,
        "version" => crate::build_info::VERSION,
        "commit" => crate::build_info::COMMIT
    )
    .set(1.0);
    counter!(CYCLES, "outcome" => "success").absolute(0);
    counter!(ROWS_RECEIVED).absolute(0);
    counter!(QUEUED).absolute(0);
    counter!(TICKS_SKIPPED).absolute(0);
    counter!(REMAP_PASSES, "outcome" => "success").absolute(0);
    counter!(MAP_REQUESTS, "outcome" => "success").absolute(0);
    for name in [
        IDENTITIES_SENT,
        IDENTITIES_CHANGED,
        IDENTITIES_OPTED_OUT,
        IDENTITIES_INVALID,
        CHANGES_PRUNED,
    ] {
        counter!(name).absolute(0);
    }
    // Registering the histogram is enough for its buckets to be rendered.
    let _registered = histogram!(CYCLE_DURATION);
    gauge!(LAST_SUCCESS).set(0.0);
    record_queue(0, 0, 0, 0, None);
}

async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(%error, "metrics listener cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let handle = handle.clone();
                async move { Ok::<_, Infallible>(respond(&request, &handle)) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
    }
}

fn respond(request: &Request<Incoming>, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if request.uri().path() != PATH {
        (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("not found; metrics are at {PATH}\n"),
        )
    } else if request.method() == Method::GET || request.method() == Method::HEAD {
        (StatusCode::OK, TEXT_FORMAT, handle.render())
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET is served\n".to_owned(),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn upkeep(handle: PrometheusHandle) {
    let mut ticks = tokio::time::interval(UPKEEP_EVERY);
    loop {
        ticks.tick().await;
        handle.run_upkeep();
    }
}

/// One finished cycle. `outcome` is `success` or an error kind.
pub(crate) fn record_cycle(
    outcome: &'static str,
    rows_received: u64,
    queued: u64,
    duration: Duration,
) {
    counter!(CYCLES, "outcome" => outcome).increment(1);
    counter!(ROWS_RECEIVED).increment(rows_received);
    counter!(QUEUED).increment(queued);
    histogram!(CYCLE_DURATION).record(duration.as_secs_f64());
    if outcome == "success" {
        record_last_success(Utc::now());
    }
}

/// The time of the last successful cycle: now after a cycle, or the one
/// the database remembers when the daemon starts.
pub(crate) fn record_last_success(at: DateTime<Utc>) {
    gauge!(LAST_SUCCESS).set(at.timestamp_millis() as f64 / 1000.0);
}

/// A scheduled tick that found the previous cycle still running.
pub(crate) fn record_tick_skipped() {
    counter!(TICKS_SKIPPED).increment(1);
}

/// Queue depth by state, and the age of the oldest pending item.
pub(crate) fn record_queue(
    pending: u64,
    leased: u64,
    done: u64,
    dead: u64,
    oldest_pending_age: Option<Duration>,
) {
    for (state, count) in QUEUE_STATES.into_iter().zip([pending, leased, done, dead]) {
        gauge!(QUEUE_ITEMS, "state" => state).set(count as f64);
    }
    gauge!(OLDEST_PENDING_AGE).set(oldest_pending_age.map_or(0.0, |age| age.as_secs_f64()));
}

/// One finished re-map pass. `outcome` is `success` or an error kind.
pub(crate) fn record_remap_pass(outcome: &'static str, counts: &crate::store::PassCounts) {
    counter!(REMAP_PASSES, "outcome" => outcome).increment(1);
    counter!(IDENTITIES_SENT).increment(counts.sent);
}

/// One identity-map batch's outcome, after the transport's retries.
pub(crate) fn record_map_request(outcome: &'static str) {
    counter!(MAP_REQUESTS, "outcome" => outcome).increment(1);
}

/// One committed batch's changes.
pub(crate) fn record_batch(counts: &crate::store::BatchCounts) {
    counter!(IDENTITIES_CHANGED).increment(counts.changed);
    counter!(IDENTITIES_OPTED_OUT).increment(counts.optout);
    counter!(IDENTITIES_INVALID).increment(counts.invalid);
}

/// Change records pruned by the daemon.
pub(crate) fn record_changes_pruned(count: u64) {
    counter!(CHANGES_PRUNED).increment(count);
}
