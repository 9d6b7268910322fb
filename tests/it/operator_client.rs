//! The operator client against the simulated operator over real HTTP on
//! loopback: every fault lands on the error kind a caller acts on, transient
//! ones are retried with a fresh envelope per attempt, permanent ones are not.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use uid2_bucket_sync::credentials::{ApiKey, ClientSecret};
use uid2_bucket_sync::envelope::EnvelopeError;
use uid2_bucket_sync::operator::{
    BodyEncoding, BucketsError, ClientOptions, DocumentError, OperatorClient, OperatorError,
    ResponseError, RetryPolicy, RowProblem, TransportError,
};
use uid2_bucket_sync::rotation::BucketRotation;
use uid2_bucket_sync::simulator::{Fault, SimulatedOperator, SimulatorConfig};

const API_KEY: &str = "UID2-C-L-999-fCXrMM.fsR3mDqAXELtWWMS+xG1s7RdgRTMqdOH2qaAo=";
const SECRET: &str = "ioG3wKxAokmp+rERx6A4kM/13qhyolUXIu14WN16Spo=";
const BUCKETS: u32 = 200;

fn api_key() -> ApiKey {
    ApiKey::new(API_KEY).unwrap()
}

fn secret() -> ClientSecret {
    ClientSecret::from_base64(SECRET).unwrap()
}

fn epoch() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

async fn operator(buckets: u32) -> SimulatedOperator {
    let config = SimulatorConfig::new(api_key(), secret(), buckets);
    SimulatedOperator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Retries fast enough for tests; the bounds still apply.
fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        max_elapsed: Duration::from_secs(30),
    }
}

fn options(retry: RetryPolicy) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(20),
        retry,
        ..ClientOptions::default()
    }
}

fn client(sim: &SimulatedOperator, options: ClientOptions) -> OperatorClient {
    OperatorClient::new(&sim.base_url(), api_key(), secret(), options).unwrap()
}

fn sorted(mut rotations: Vec<BucketRotation>) -> Vec<BucketRotation> {
    rotations.sort_by(|a, b| a.bucket_id.cmp(&b.bucket_id));
    rotations
}

/// Everything a single attempt can end in, with the fault that causes it.
async fn single_attempt_error(fault: Fault, options: ClientOptions) -> BucketsError {
    let sim = operator(BUCKETS).await;
    sim.inject(fault);
    let single_attempt = ClientOptions {
        retry: RetryPolicy::none(),
        ..options
    };
    let error = client(&sim, single_attempt)
        .fetch_rotations(epoch())
        .await
        .unwrap_err();
    sim.shutdown().await;
    error
}

#[tokio::test]
async fn base64_mode_fetches_the_full_table() {
    let sim = operator(BUCKETS).await;
    let response = client(&sim, options(RetryPolicy::none()))
        .fetch_rotations(epoch())
        .await
        .unwrap();
    assert_eq!(response.answer.len(), BUCKETS as usize);
    assert_eq!(sorted(response.answer.to_vec()), sorted(sim.snapshot()));
    assert_eq!(response.attempts, 1);
    assert!(response.retries.is_empty());
    assert!(response.body_bytes > 0);
    let requests = sim.requests();
    assert_eq!(requests.len(), 1);
    assert!(!requests[0].binary);
    assert_eq!(requests[0].status, 200);
    assert_eq!(
        requests[0].since_timestamp.as_deref(),
        Some("1970-01-01T00:00:00.000")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn binary_mode_fetches_the_full_table() {
    let sim = operator(BUCKETS).await;
    let response = client(
        &sim,
        ClientOptions {
            encoding: BodyEncoding::Binary,
            ..options(RetryPolicy::none())
        },
    )
    .fetch_rotations(epoch())
    .await
    .unwrap();
    assert_eq!(sorted(response.answer.to_vec()), sorted(sim.snapshot()));
    let requests = sim.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].binary);
    sim.shutdown().await;
}

#[tokio::test]
async fn since_is_sent_as_iso_local_milliseconds_and_only_later_rotations_return() {
    let sim = operator(BUCKETS).await;
    let at = Utc.with_ymd_and_hms(2030, 1, 2, 0, 0, 0).unwrap();
    let rotated = sim.rotate_random(5, at);
    let since = at - chrono::Duration::milliseconds(1) + chrono::Duration::microseconds(999);
    let response = client(&sim, options(RetryPolicy::none()))
        .fetch_rotations(since)
        .await
        .unwrap();
    assert_eq!(sorted(response.answer.to_vec()), sorted(rotated));
    assert_eq!(
        sim.requests()[0].since_timestamp.as_deref(),
        Some("2030-01-01T23:59:59.999")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn download_progress_is_reported_up_to_the_body_size() {
    let sim = operator(BUCKETS).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = Arc::clone(&seen);
    let response = client(&sim, options(RetryPolicy::none()))
        .with_progress(move |received, total| recorder.lock().unwrap().push((received, total)))
        .fetch_rotations(epoch())
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&(0, Some(response.body_bytes))));
    assert_eq!(
        seen.last(),
        Some(&(response.body_bytes, Some(response.body_bytes)))
    );
    assert!(seen.windows(2).all(|pair| pair[0].0 <= pair[1].0));
    sim.shutdown().await;
}

#[tokio::test]
async fn each_fault_maps_to_the_error_a_caller_acts_on() {
    let no_retry = options(RetryPolicy::none());
    let cases: Vec<(Fault, &str)> = vec![
        (
            Fault::Status {
                code: 500,
                retry_after: None,
            },
            "server_error",
        ),
        (
            Fault::Status {
                code: 503,
                retry_after: None,
            },
            "server_error",
        ),
        (
            Fault::Status {
                code: 429,
                retry_after: None,
            },
            "rate_limited",
        ),
        (
            Fault::Status {
                code: 401,
                retry_after: None,
            },
            "unauthorized",
        ),
        (
            Fault::Status {
                code: 413,
                retry_after: None,
            },
            "unexpected_status",
        ),
        (
            Fault::Status {
                code: 404,
                retry_after: None,
            },
            "unexpected_status",
        ),
        (Fault::DropConnection, "connection_reset"),
        (Fault::TruncatedBody, "truncated_body"),
        (Fault::CorruptTag, "envelope"),
        (Fault::WrongNonce, "envelope"),
        (Fault::BadJson, "invalid_response"),
        (Fault::ClientErrorStatus, "invalid_response"),
        (Fault::UnparsableLastUpdated, "invalid_response"),
    ];
    for (fault, kind) in cases {
        let error = single_attempt_error(fault.clone(), no_retry.clone()).await;
        assert_eq!(error.kind(), kind, "{fault:?} gave {error}");
    }
}

#[tokio::test]
async fn fault_errors_carry_what_went_wrong() {
    let no_retry = options(RetryPolicy::none());
    assert_eq!(
        single_attempt_error(Fault::CorruptTag, no_retry.clone()).await,
        OperatorError::Transport(TransportError::Envelope(EnvelopeError::TagMismatch))
    );
    assert_eq!(
        single_attempt_error(Fault::WrongNonce, no_retry.clone()).await,
        OperatorError::Transport(TransportError::Envelope(EnvelopeError::NonceMismatch))
    );
    assert!(matches!(
        single_attempt_error(Fault::BadJson, no_retry.clone()).await,
        OperatorError::InvalidResponse(ResponseError::Document(DocumentError::NotJson(_)))
    ));
    assert!(matches!(
        single_attempt_error(Fault::UnparsableLastUpdated, no_retry.clone()).await,
        OperatorError::InvalidResponse(ResponseError::InvalidRow {
            problem: RowProblem::UnparsableLastUpdated { .. },
            ..
        })
    ));
    assert_eq!(
        single_attempt_error(
            Fault::Status {
                code: 503,
                retry_after: Some(Duration::from_secs(7))
            },
            no_retry.clone()
        )
        .await
        .retry_after(),
        Some(Duration::from_secs(7))
    );
    assert!(matches!(
        single_attempt_error(Fault::TruncatedBody, no_retry).await,
        OperatorError::Transport(TransportError::TruncatedBody { received, expected: Some(expected) })
            if received < expected
    ));
}

#[tokio::test]
async fn a_response_slower_than_the_request_timeout_is_a_timeout() {
    let error = single_attempt_error(
        Fault::Delay(Duration::from_secs(30)),
        ClientOptions {
            request_timeout: Duration::from_millis(500),
            ..options(RetryPolicy::none())
        },
    )
    .await;
    assert_eq!(error.kind(), "timeout", "{error}");
    assert!(error.is_transient());
}

#[tokio::test]
async fn a_port_with_nothing_listening_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let client = OperatorClient::new(
        &format!("http://{address}"),
        api_key(),
        secret(),
        options(RetryPolicy::none()),
    )
    .unwrap();
    let error = client.fetch_rotations(epoch()).await.unwrap_err();
    assert_eq!(error.kind(), "connect", "{error}");
    assert!(error.is_transient());
}

#[tokio::test]
async fn a_wrong_api_key_is_unauthorized_and_not_retried() {
    let sim = operator(BUCKETS).await;
    let client = OperatorClient::new(
        &sim.base_url(),
        ApiKey::new("UID2-C-L-999-wrongkey").unwrap(),
        secret(),
        options(quick_retries(4)),
    )
    .unwrap();
    let error = client.fetch_rotations(epoch()).await.unwrap_err();
    assert_eq!(
        error,
        OperatorError::Transport(TransportError::Unauthorized)
    );
    assert_eq!(sim.requests().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_bad_request_and_not_retried() {
    let sim = operator(BUCKETS).await;
    let client = OperatorClient::new(
        &sim.base_url(),
        api_key(),
        ClientSecret::from_bytes([42; 32]),
        options(quick_retries(4)),
    )
    .unwrap();
    let error = client.fetch_rotations(epoch()).await.unwrap_err();
    match &error {
        OperatorError::Transport(TransportError::BadRequest { message }) => {
            assert!(message.starts_with("Invalid body:"), "{message}")
        }
        other => panic!("expected a bad request, got {other:?}"),
    }
    assert_eq!(sim.requests().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_skewed_client_clock_is_a_bad_request_and_not_retried() {
    let sim = operator(BUCKETS).await;
    let ten_minutes_ago = Utc::now().timestamp_millis() - 10 * 60 * 1000;
    let client = client(&sim, options(quick_retries(4))).with_clock(move || ten_minutes_ago);
    let error = client.fetch_rotations(epoch()).await.unwrap_err();
    match &error {
        OperatorError::Transport(TransportError::BadRequest { message }) => {
            assert!(message.starts_with("Invalid timestamp"), "{message}")
        }
        other => panic!("expected a bad request, got {other:?}"),
    }
    assert_eq!(sim.requests().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn permanent_failures_are_not_retried() {
    for fault in [
        Fault::CorruptTag,
        Fault::WrongNonce,
        Fault::BadJson,
        Fault::UnparsableLastUpdated,
    ] {
        let sim = operator(BUCKETS).await;
        sim.inject(fault.clone());
        let error = client(&sim, options(quick_retries(4)))
            .fetch_rotations(epoch())
            .await
            .unwrap_err();
        assert!(!error.is_transient(), "{fault:?}: {error}");
        assert_eq!(sim.requests().len(), 1, "{fault:?}");
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn each_transient_fault_is_retried_and_the_fetch_succeeds_once_it_clears() {
    let cases = [
        (
            Fault::Status {
                code: 500,
                retry_after: None,
            },
            "server_error",
        ),
        (
            Fault::Status {
                code: 502,
                retry_after: None,
            },
            "server_error",
        ),
        (
            Fault::Status {
                code: 429,
                retry_after: None,
            },
            "rate_limited",
        ),
        (Fault::DropConnection, "connection_reset"),
        (Fault::TruncatedBody, "truncated_body"),
        (Fault::Delay(Duration::from_secs(30)), "timeout"),
    ];
    for (fault, kind) in cases {
        let sim = operator(BUCKETS).await;
        sim.inject(fault.clone());
        let response = client(
            &sim,
            ClientOptions {
                request_timeout: Duration::from_secs(2),
                ..options(quick_retries(3))
            },
        )
        .fetch_rotations(epoch())
        .await
        .unwrap_or_else(|error| panic!("{fault:?}: {error}"));
        assert_eq!(response.attempts, 2, "{fault:?}");
        assert_eq!(response.retries.len(), 1, "{fault:?}");
        assert_eq!(response.retries[0].attempt, 1);
        assert_eq!(response.retries[0].error_kind, kind, "{fault:?}");
        assert_eq!(sorted(response.answer.to_vec()), sorted(sim.snapshot()));
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn every_attempt_carries_a_fresh_nonce_and_its_own_timestamp() {
    let sim = operator(BUCKETS).await;
    for fault in [
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        Fault::DropConnection,
        Fault::Status {
            code: 429,
            retry_after: None,
        },
    ] {
        sim.inject(fault);
    }
    // A clock that moves one second per reading, so each attempt's stamp is
    // known and distinct; all stay well inside the operator's window.
    let start = Utc::now().timestamp_millis();
    let readings = Arc::new(AtomicI64::new(0));
    let counter = Arc::clone(&readings);
    let client = client(&sim, options(quick_retries(5)))
        .with_clock(move || start + 1000 * counter.fetch_add(1, Ordering::SeqCst));

    let response = client.fetch_rotations(epoch()).await.unwrap();
    assert_eq!(response.attempts, 4);
    assert_eq!(
        response
            .retries
            .iter()
            .map(|retry| (retry.attempt, retry.error_kind))
            .collect::<Vec<_>>(),
        [
            (1, "server_error"),
            (2, "connection_reset"),
            (3, "rate_limited")
        ]
    );
    assert_eq!(readings.load(Ordering::SeqCst), 4);

    let requests = sim.requests();
    assert_eq!(requests.len(), 4);
    let stamps: Vec<_> = requests.iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(
        stamps,
        (0..4).map(|i| Some(start + 1000 * i)).collect::<Vec<_>>()
    );
    let nonces: HashSet<_> = requests.iter().map(|r| r.nonce.unwrap()).collect();
    assert_eq!(nonces.len(), 4, "every attempt must use its own nonce");
    sim.shutdown().await;
}

#[tokio::test]
async fn retry_after_sets_the_wait_before_the_next_attempt() {
    let sim = operator(BUCKETS).await;
    sim.inject(Fault::Status {
        code: 429,
        retry_after: Some(Duration::from_secs(1)),
    });
    let response = client(&sim, options(quick_retries(3)))
        .fetch_rotations(epoch())
        .await
        .unwrap();
    assert_eq!(response.attempts, 2);
    let retry = &response.retries[0];
    assert_eq!(retry.retry_after, Some(Duration::from_secs(1)));
    // The computed backoff is at most 40 ms; the operator's wait wins.
    assert_eq!(retry.delay, Duration::from_secs(1));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_retry_after_beyond_the_total_bound_ends_the_retries() {
    let sim = operator(BUCKETS).await;
    sim.inject(Fault::Status {
        code: 503,
        retry_after: Some(Duration::from_secs(3600)),
    });
    let error = client(&sim, options(quick_retries(5)))
        .fetch_rotations(epoch())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "server_error");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(sim.requests().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn retries_stop_after_the_maximum_attempts() {
    let sim = operator(BUCKETS).await;
    sim.inject_always(Fault::Status {
        code: 500,
        retry_after: None,
    });
    let error = client(&sim, options(quick_retries(3)))
        .fetch_rotations(epoch())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "server_error");
    assert_eq!(sim.requests().len(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn no_error_or_client_debug_output_reveals_the_credentials() {
    let secret_hex: String = secret_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let forbidden = [API_KEY, SECRET, secret_hex.as_str(), "fCXrMM"];

    let mut shown = Vec::new();
    let no_retry = options(RetryPolicy::none());
    for fault in [
        Fault::Status {
            code: 500,
            retry_after: Some(Duration::from_secs(1)),
        },
        Fault::Status {
            code: 429,
            retry_after: None,
        },
        Fault::Status {
            code: 413,
            retry_after: None,
        },
        Fault::DropConnection,
        Fault::TruncatedBody,
        Fault::CorruptTag,
        Fault::WrongNonce,
        Fault::BadJson,
        Fault::ClientErrorStatus,
        Fault::UnparsableLastUpdated,
    ] {
        shown.push(single_attempt_error(fault, no_retry.clone()).await);
    }
    shown.push(
        single_attempt_error(
            Fault::Delay(Duration::from_secs(30)),
            ClientOptions {
                request_timeout: Duration::from_millis(300),
                ..no_retry.clone()
            },
        )
        .await,
    );

    let sim = operator(BUCKETS).await;
    // The operator refuses a key that is the real one with a typo…
    let typo = OperatorClient::new(
        &sim.base_url(),
        ApiKey::new(&API_KEY.replace('f', "g")).unwrap(),
        secret(),
        no_retry.clone(),
    )
    .unwrap();
    shown.push(typo.fetch_rotations(epoch()).await.unwrap_err());
    // …and a request sealed with another secret; and one from a skewed clock.
    let other_secret = OperatorClient::new(
        &sim.base_url(),
        api_key(),
        ClientSecret::from_bytes([1; 32]),
        no_retry.clone(),
    )
    .unwrap();
    shown.push(other_secret.fetch_rotations(epoch()).await.unwrap_err());
    let skewed = client(&sim, no_retry.clone()).with_clock(|| 0);
    shown.push(skewed.fetch_rotations(epoch()).await.unwrap_err());
    let client_debug = format!("{:?}", client(&sim, no_retry.clone()));
    sim.shutdown().await;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let refused =
        OperatorClient::new(&format!("http://{address}"), api_key(), secret(), no_retry).unwrap();
    shown.push(refused.fetch_rotations(epoch()).await.unwrap_err());

    let kinds: HashSet<_> = shown.iter().map(BucketsError::kind).collect();
    for kind in [
        "bad_request",
        "unauthorized",
        "rate_limited",
        "server_error",
        "unexpected_status",
        "timeout",
        "connect",
        "connection_reset",
        "truncated_body",
        "envelope",
        "invalid_response",
    ] {
        assert!(kinds.contains(kind), "no {kind} error was exercised");
    }
    for text in shown
        .iter()
        .flat_map(|error| [error.to_string(), format!("{error:?}")])
        .chain([client_debug])
    {
        for secret_text in forbidden {
            assert!(!text.contains(secret_text), "{text:?} reveals a credential");
        }
    }
}

fn secret_bytes() -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(SECRET)
        .unwrap()
}
