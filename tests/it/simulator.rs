//! The simulated operator as a client sees it: real HTTP on 127.0.0.1, the
//! envelope functions used directly, every answer checked on the wire.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uid2_bucket_sync::credentials::{ApiKey, ClientSecret};
use uid2_bucket_sync::envelope::{self, EnvelopeError, OpenedResponse, RequestParams};
use uid2_bucket_sync::identity::IdentityHash;
use uid2_bucket_sync::rotation::BucketRotation;
use uid2_bucket_sync::simulator::{
    BUCKETS_PATH, Endpoint, Fault, MAP_V2_PATH, MAP_V3_PATH, MapCounts, ReceivedRequest,
    SimulatedOperator, SimulatorConfig,
};
use uid2_bucket_sync::timestamp::{format_operator, parse_iso_local, to_millis};

const SECRET: &str = "ioG3wKxAokmp+rERx6A4kM/13qhyolUXIu14WN16Spo=";
const API_KEY: &str = "sim-test-api-key";
const OCTET_STREAM: &str = "application/octet-stream";
const DOCS_HINT: &str = " See https://unifiedid.com/docs/getting-started/gs-encryption-decryption for details on the request envelope format.";

fn secret() -> ClientSecret {
    ClientSecret::from_base64(SECRET).unwrap()
}

fn config(buckets: u32) -> SimulatorConfig {
    SimulatorConfig::new(ApiKey::new(API_KEY).unwrap(), secret(), buckets)
}

async fn start(buckets: u32) -> SimulatedOperator {
    start_with(config(buckets)).await
}

async fn start_with(config: SimulatorConfig) -> SimulatedOperator {
    SimulatedOperator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn now_ms() -> i64 {
    to_millis(Utc::now())
}

fn since_json(since: &str) -> String {
    serde_json::json!({ "since_timestamp": since }).to_string()
}

fn url(operator: &SimulatedOperator) -> String {
    url_of(operator, BUCKETS_PATH)
}

fn url_of(operator: &SimulatedOperator, path: &str) -> String {
    format!("{}{path}", operator.base_url())
}

/// A request envelope stamped `timestamp_ms`, for `json`, sealed with `secret`.
fn sealed(secret: &ClientSecret, timestamp_ms: i64, json: &str) -> (Vec<u8>, RequestParams) {
    let params = RequestParams::fresh(timestamp_ms);
    (
        envelope::seal_request(secret, &params, json.as_bytes()),
        params,
    )
}

async fn post(
    operator: &SimulatedOperator,
    bearer: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    post_to(operator, BUCKETS_PATH, bearer, content_type, body).await
}

async fn post_to(
    operator: &SimulatedOperator,
    path: &str,
    bearer: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url_of(operator, path))
        .body(body);
    if let Some(key) = bearer {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    request.send().await.unwrap()
}

/// Posts a base64 envelope for `json` with the right key and secret.
async fn post_base64(
    operator: &SimulatedOperator,
    json: &str,
) -> (reqwest::Response, RequestParams) {
    post_base64_to(operator, BUCKETS_PATH, json).await
}

async fn post_base64_to(
    operator: &SimulatedOperator,
    path: &str,
    json: &str,
) -> (reqwest::Response, RequestParams) {
    let (envelope, params) = sealed(&secret(), now_ms(), json);
    let body = envelope::encode_base64(&envelope).into_bytes();
    (
        post_to(operator, path, Some(API_KEY), None, body).await,
        params,
    )
}

async fn open_text_answer(
    response: reqwest::Response,
    params: &RequestParams,
) -> Result<OpenedResponse, EnvelopeError> {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(content_type(&response), "text/plain");
    let text = response.bytes().await.unwrap();
    envelope::open_response(&secret(), envelope::decode_base64(&text)?, &params.nonce)
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn rows_of(opened: &OpenedResponse) -> Vec<(String, String)> {
    let value: serde_json::Value = opened.json().unwrap();
    assert_eq!(value["status"], "success", "{value}");
    value["body"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["bucket_id"].as_str().unwrap().to_owned(),
                row["last_updated"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(rows: &[BucketRotation]) -> Vec<(String, String)> {
    rows.iter()
        .map(|row| (row.bucket_id.to_string(), format_operator(row.last_updated)))
        .collect()
}

/// The rows a successful base64 request for `since` returns.
async fn buckets_since(operator: &SimulatedOperator, since: &str) -> Vec<(String, String)> {
    let (response, params) = post_base64(operator, &since_json(since)).await;
    rows_of(&open_text_answer(response, &params).await.unwrap())
}

async fn client_error_message(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(content_type(&response), "application/json");
    let value: serde_json::Value = response.json_value().await;
    assert_eq!(value["status"], "client_error", "{value}");
    assert_eq!(value.as_object().unwrap().len(), 2, "{value}");
    value["message"].as_str().unwrap().to_owned()
}

trait JsonValue {
    async fn json_value(self) -> serde_json::Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

fn last(operator: &SimulatedOperator) -> ReceivedRequest {
    operator.requests().pop().unwrap()
}

// ---------------------------------------------------------------- answers

#[tokio::test]
async fn since_1970_returns_every_bucket_with_its_id_and_time() {
    // Large enough that the base64 answer streams in several frames.
    let operator = start(20_000).await;
    assert_eq!(operator.bucket_count(), 20_000);
    let rows = buckets_since(&operator, "1970-01-01T00:00:00").await;
    assert_eq!(rows, pairs(&operator.snapshot()));
    let distinct: HashSet<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(distinct.len(), 20_000);
    assert!(rows.iter().all(|(id, _)| id.len() == 10));
    assert!(rows.iter().all(|(_, time)| time.len() == 23));
}

#[tokio::test]
async fn since_now_or_later_returns_no_buckets() {
    let operator = start(500).await;
    let now = format_operator(Utc::now());
    assert_eq!(buckets_since(&operator, &now).await, vec![]);
    assert_eq!(buckets_since(&operator, "2999-01-01T00:00").await, vec![]);
}

#[tokio::test]
async fn since_includes_a_bucket_updated_at_exactly_that_instant() {
    let operator = start(300).await;
    let snapshot = operator.snapshot();
    let target = &snapshot[17];
    let newer_or_equal = |limit: DateTime<Utc>| -> Vec<(String, String)> {
        pairs(&snapshot)
            .into_iter()
            .zip(&snapshot)
            .filter(|(_, row)| row.last_updated >= limit)
            .map(|(pair, _)| pair)
            .collect()
    };

    let at = buckets_since(&operator, &format_operator(target.last_updated)).await;
    assert!(at.contains(&(
        target.bucket_id.to_string(),
        format_operator(target.last_updated)
    )));
    assert_eq!(at, newer_or_equal(target.last_updated));

    let just_after = target.last_updated + TimeDelta::milliseconds(1);
    let after = buckets_since(&operator, &format_operator(just_after)).await;
    assert!(!after.iter().any(|(id, _)| id == target.bucket_id.as_str()));
    assert_eq!(after, newer_or_equal(just_after));
}

#[tokio::test]
async fn a_rotation_is_reported_for_exactly_the_rotated_buckets() {
    let operator = start(1_000).await;
    let before = operator.snapshot();
    let at = parse_iso_local(&format_operator(Utc::now())).unwrap();
    let chosen = [before[5].bucket_id.as_str(), before[900].bucket_id.as_str()];
    let rotated = operator.rotate(&[chosen[1], "no-such-bucket", chosen[0]], at);
    assert_eq!(
        pairs(&rotated),
        vec![
            (chosen[0].to_owned(), format_operator(at)),
            (chosen[1].to_owned(), format_operator(at))
        ]
    );
    assert_eq!(
        buckets_since(&operator, &format_operator(at)).await,
        pairs(&rotated)
    );

    let later = at + TimeDelta::seconds(1);
    let random = operator.rotate_random(7, later);
    let ids: HashSet<&str> = random.iter().map(|row| row.bucket_id.as_str()).collect();
    assert_eq!(ids.len(), 7);
    assert_eq!(
        buckets_since(&operator, &format_operator(later)).await,
        pairs(&random)
    );

    // Everything else is untouched.
    let after = operator.snapshot();
    for (old, new) in before.iter().zip(&after) {
        let touched =
            chosen.contains(&old.bucket_id.as_str()) || ids.contains(old.bucket_id.as_str());
        assert_eq!(old == new, !touched, "{old:?} → {new:?}");
    }
    assert_eq!(
        buckets_since(&operator, "1970-01-01T00:00").await,
        pairs(&after)
    );
}

#[tokio::test]
async fn a_binary_request_gets_a_binary_answer() {
    let operator = start(200).await;
    let (envelope, params) = sealed(&secret(), now_ms(), &since_json("1970-01-01T00:00:00"));
    let response = post(&operator, Some(API_KEY), Some(OCTET_STREAM), envelope).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(content_type(&response), OCTET_STREAM);
    let body = response.bytes().await.unwrap().to_vec();
    let opened = envelope::open_response(&secret(), body, &params.nonce).unwrap();
    assert_eq!(rows_of(&opened), pairs(&operator.snapshot()));
    assert!((opened.server_time_ms() - now_ms()).abs() < 60_000);
    assert!(last(&operator).binary);
}

#[tokio::test]
async fn a_base64_body_sent_as_octet_stream_is_accepted_and_answered_in_base64() {
    let operator = start(50).await;
    let (envelope, params) = sealed(&secret(), now_ms(), &since_json("1970-01-01T00:00:00"));
    let body = envelope::encode_base64(&envelope).into_bytes();
    let response = post(&operator, Some(API_KEY), Some(OCTET_STREAM), body).await;
    let opened = open_text_answer(response, &params).await.unwrap();
    assert_eq!(rows_of(&opened).len(), 50);
}

#[tokio::test]
async fn every_answer_uses_a_fresh_iv_and_echoes_the_request_nonce() {
    let operator = start(10).await;
    let mut ivs = HashSet::new();
    for _ in 0..3 {
        let (response, params) = post_base64(&operator, &since_json("1970-01-01T00:00")).await;
        let text = response.bytes().await.unwrap();
        let envelope = envelope::decode_base64(&text).unwrap();
        ivs.insert(envelope[..12].to_vec());
        envelope::open_response(&secret(), envelope, &params.nonce).unwrap();
    }
    assert_eq!(ivs.len(), 3);
}

// ---------------------------------------------------------------- errors

#[tokio::test]
async fn a_missing_or_wrong_bearer_token_is_refused_before_the_body_is_looked_at() {
    let operator = start(10).await;
    let (good, _) = sealed(&secret(), now_ms(), &since_json("2024-01-01T00:00"));
    let good = envelope::encode_base64(&good).into_bytes();
    let cases: Vec<(Option<&str>, Vec<u8>)> = vec![
        (None, good.clone()),
        (Some("wrong-key"), good.clone()),
        (Some(&API_KEY[..API_KEY.len() - 1]), good.clone()),
        (None, b"not an envelope".to_vec()),
    ];
    for (bearer, body) in cases {
        let response = post(&operator, bearer, None, body).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(content_type(&response), "application/json");
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"status":"unauthorized"}"#
        );
        assert_eq!(last(&operator).nonce, None);
    }

    let basic = reqwest::Client::new()
        .post(url(&operator))
        .header("Authorization", format!("Basic {API_KEY}"))
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);

    // The scheme is matched case-insensitively, as the operator does.
    let lowercase = reqwest::Client::new()
        .post(url(&operator))
        .header("Authorization", format!("bearer {API_KEY}"))
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase.status(), StatusCode::OK);
}

#[tokio::test]
async fn each_envelope_problem_gets_the_operators_message() {
    let operator = start(10).await;
    let valid_json = since_json("2024-01-01T00:00:00");
    let (mut wrong_version, _) = sealed(&secret(), now_ms(), &valid_json);
    wrong_version[0] = 2;
    let (wrong_secret, _) = sealed(&ClientSecret::from_bytes([9; 32]), now_ms(), &valid_json);
    let text = |bytes: &[u8]| envelope::encode_base64(bytes).into_bytes();
    let unencrypted = "Invalid body: The request body is unencrypted JSON. It must be an encrypted request envelope. See https://unifiedid.com/docs/getting-started/gs-encryption-decryption#encryption-and-decryption-code-examples for encryption and decryption code examples.";

    let cases: Vec<(&str, Option<&str>, Vec<u8>, String)> = vec![
        (
            "empty",
            None,
            vec![],
            "Invalid body: Body is missing.".into(),
        ),
        (
            "empty binary",
            Some(OCTET_STREAM),
            vec![],
            "Invalid body: Body is missing.".into(),
        ),
        (
            "not base64",
            None,
            b"not base64!".to_vec(),
            format!("Invalid body: Body is not valid base64.{DOCS_HINT}"),
        ),
        (
            "trailing newline",
            None,
            [text(&wrong_version), b"\n".to_vec()].concat(),
            format!("Invalid body: Body is not valid base64.{DOCS_HINT}"),
        ),
        (
            "too short",
            None,
            text(&[1; 44]),
            format!("Invalid body: Body too short. Check encryption method.{DOCS_HINT}"),
        ),
        (
            "too short binary",
            Some(OCTET_STREAM),
            vec![1; 44],
            format!("Invalid body: Body too short. Check encryption method.{DOCS_HINT}"),
        ),
        (
            "wrong version",
            None,
            text(&wrong_version),
            format!(
                "Invalid body: Invalid request envelope format version: received 2, must be 1.{DOCS_HINT}"
            ),
        ),
        (
            "wrong version binary",
            Some(OCTET_STREAM),
            wrong_version.clone(),
            format!(
                "Invalid body: Invalid request envelope format version: received 2, must be 1.{DOCS_HINT}"
            ),
        ),
        (
            "wrong secret",
            None,
            text(&wrong_secret),
            format!("Invalid body: Check encryption key (ClientSecret).{DOCS_HINT}"),
        ),
        (
            "plain json",
            None,
            valid_json.clone().into_bytes(),
            unencrypted.into(),
        ),
        (
            "base64 of plain json",
            None,
            text(valid_json.as_bytes()),
            unencrypted.into(),
        ),
    ];
    for (name, content_type, body, expected) in cases {
        let response = post(&operator, Some(API_KEY), content_type, body).await;
        assert_eq!(client_error_message(response).await, expected, "{name}");
    }
}

#[tokio::test]
async fn each_payload_problem_gets_the_operators_message() {
    let operator = start(10).await;
    let cases = [
        (
            "not json",
            "Invalid payload in body: Data is not valid json string.",
        ),
        (
            "[]",
            "Invalid payload in body: Data is not valid json string.",
        ),
        (
            r#""2024-01-01T00:00""#,
            "Invalid payload in body: Data is not valid json string.",
        ),
        ("{}", "missing parameter since_timestamp"),
        (
            r#"{"since_timestamp":null}"#,
            "missing parameter since_timestamp",
        ),
        (
            r#"{"since":"2024-01-01T00:00"}"#,
            "missing parameter since_timestamp",
        ),
        (
            r#"{"since_timestamp":"2024-01-01T00:00:00Z"}"#,
            "invalid date, must conform to ISO 8601",
        ),
        (
            r#"{"since_timestamp":"2024-01-01T00:00:00+00:00"}"#,
            "invalid date, must conform to ISO 8601",
        ),
        (
            r#"{"since_timestamp":"2024-01-01 00:00:00"}"#,
            "invalid date, must conform to ISO 8601",
        ),
        (
            r#"{"since_timestamp":"2024-01-01"}"#,
            "invalid date, must conform to ISO 8601",
        ),
        (
            r#"{"since_timestamp":"2024-01-01T00%3A00%3A00"}"#,
            "invalid date, must conform to ISO 8601",
        ),
        (
            r#"{"since_timestamp":"1704067200"}"#,
            "invalid date, must conform to ISO 8601",
        ),
        (
            r#"{"since_timestamp":1704067200}"#,
            "invalid date, must conform to ISO 8601",
        ),
        (
            r#"{"since_timestamp":"2024-02-30T00:00"}"#,
            "invalid date, must conform to ISO 8601",
        ),
    ];
    for (json, expected) in cases {
        let (response, params) = post_base64(&operator, json).await;
        assert_eq!(client_error_message(response).await, expected, "{json}");
        let logged = last(&operator);
        assert_eq!(logged.nonce, Some(params.nonce), "{json}");
        assert_eq!(logged.status, 400);
    }
    assert_eq!(
        last(&operator).since_timestamp.as_deref(),
        Some("2024-02-30T00:00")
    );

    // The operator fails on an envelope with no payload at all.
    let (response, _) = post_base64(&operator, "").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn request_times_are_accepted_within_a_minute_of_the_server_clock() {
    let operator = start(10).await;
    let json = since_json("1970-01-01T00:00:00");
    for offset_s in [-55, 55] {
        let (envelope, params) = sealed(&secret(), now_ms() + offset_s * 1000, &json);
        let response = post(
            &operator,
            Some(API_KEY),
            None,
            envelope::encode_base64(&envelope).into_bytes(),
        )
        .await;
        assert_eq!(
            rows_of(&open_text_answer(response, &params).await.unwrap()).len(),
            10,
            "{offset_s}"
        );
    }
    for offset_s in [-65, 65, -3_600] {
        let timestamp = now_ms() + offset_s * 1000;
        let (envelope, params) = sealed(&secret(), timestamp, &json);
        let response = post(
            &operator,
            Some(API_KEY),
            None,
            envelope::encode_base64(&envelope).into_bytes(),
        )
        .await;
        assert_eq!(
            client_error_message(response).await,
            "Invalid timestamp: Request too old or client time drift.",
            "{offset_s}"
        );
        let logged = last(&operator);
        assert_eq!(logged.timestamp_ms, Some(timestamp));
        assert_eq!(logged.nonce, Some(params.nonce));
    }
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_refused() {
    let operator = start(10).await;
    let response = post(&operator, Some(API_KEY), None, vec![b'A'; (1 << 20) + 1]).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let response = post(&operator, None, None, vec![b'A'; (1 << 20) + 4]).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly 1 MiB is read and judged as an envelope (base64 of 01 00 00 …).
    let response = post(&operator, Some(API_KEY), None, b"AQAA".repeat(1 << 18)).await;
    assert_eq!(
        client_error_message(response).await,
        format!("Invalid body: Check encryption key (ClientSecret).{DOCS_HINT}")
    );
}

#[tokio::test]
async fn only_post_to_the_three_operator_paths_is_served() {
    let operator = start(10).await;
    let client = reqwest::Client::new();
    for path in [
        "/v3/identity/buckets",
        "/v2/identity/map/",
        "/v1/identity/map",
        "/",
    ] {
        let other = client
            .post(format!("{}{path}", operator.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(last(&operator).endpoint, None);
    }
    for path in [
        "/v2/identity/buckets",
        "/v2/identity/map",
        "/v3/identity/map",
    ] {
        let get = client
            .get(format!("{}{path}", operator.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(get.headers()["allow"], "POST");
    }
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn status_faults_answer_with_that_status_and_retry_after() {
    let operator = start(10).await;
    operator.inject(Fault::Status {
        code: 503,
        retry_after: Some(Duration::from_secs(2)),
    });
    operator.inject(Fault::Status {
        code: 429,
        retry_after: Some(Duration::from_millis(1_500)),
    });
    operator.inject(Fault::Status {
        code: 500,
        retry_after: None,
    });

    let json = since_json("1970-01-01T00:00");
    let (unavailable, params) = post_base64(&operator, &json).await;
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unavailable.headers()["retry-after"], "2");
    assert_eq!(content_type(&unavailable), "text/plain");
    assert_eq!(unavailable.text().await.unwrap(), "Service Unavailable");
    // The request was still read and logged.
    let logged = last(&operator);
    assert_eq!(logged.nonce, Some(params.nonce));
    assert_eq!(logged.status, 503);

    let (throttled, _) = post_base64(&operator, &json).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers()["retry-after"], "2");
    assert_eq!(throttled.bytes().await.unwrap().len(), 0);

    let (failed, _) = post_base64(&operator, &json).await;
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(failed.headers().get("retry-after").is_none());
    assert_eq!(failed.text().await.unwrap(), "Internal Server Error");

    let (healthy, params) = post_base64(&operator, &json).await;
    assert_eq!(
        rows_of(&open_text_answer(healthy, &params).await.unwrap()).len(),
        10
    );
    assert_eq!(operator.pending_faults(), 0);
}

#[tokio::test]
async fn a_delay_holds_the_answer_back_then_answers_normally() {
    let operator = start(10).await;
    operator.inject(Fault::Delay(Duration::from_secs(30)));
    let (envelope, _) = sealed(&secret(), now_ms(), &since_json("1970-01-01T00:00"));
    let impatient = reqwest::Client::new()
        .post(url(&operator))
        .header("Authorization", format!("Bearer {API_KEY}"))
        .timeout(Duration::from_millis(200))
        .body(envelope::encode_base64(&envelope))
        .send()
        .await;
    assert!(impatient.unwrap_err().is_timeout());

    operator.inject(Fault::Delay(Duration::from_millis(20)));
    let (response, params) = post_base64(&operator, &since_json("1970-01-01T00:00")).await;
    assert_eq!(
        rows_of(&open_text_answer(response, &params).await.unwrap()).len(),
        10
    );
    assert_eq!(
        last(&operator).fault,
        Some(Fault::Delay(Duration::from_millis(20)))
    );
    operator.shutdown().await;
}

#[tokio::test]
async fn a_dropped_connection_gets_no_answer_at_all() {
    let operator = start(10).await;
    operator.inject(Fault::DropConnection);
    let (envelope, params) = sealed(&secret(), now_ms(), &since_json("1970-01-01T00:00"));
    let request = format!(
        "POST /v2/identity/buckets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nContent-Length: {}\r\n\r\n{}",
        envelope::encode_base64(&envelope).len(),
        envelope::encode_base64(&envelope)
    );
    let received = raw_exchange(&operator, request.as_bytes()).await;
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
    let logged = last(&operator);
    assert_eq!(logged.status, 0);
    assert_eq!(logged.nonce, Some(params.nonce));
    assert_eq!(logged.fault, Some(Fault::DropConnection));

    operator.inject(Fault::DropConnection);
    let (envelope, _) = sealed(&secret(), now_ms(), &since_json("1970-01-01T00:00"));
    let failed = reqwest::Client::new()
        .post(url(&operator))
        .header("Authorization", format!("Bearer {API_KEY}"))
        .body(envelope::encode_base64(&envelope))
        .send()
        .await;
    assert!(failed.is_err());
    let (response, params) = post_base64(&operator, &since_json("1970-01-01T00:00")).await;
    assert!(open_text_answer(response, &params).await.is_ok());
}

/// Sends raw bytes, half-closes, and returns everything until EOF.
async fn raw_exchange(operator: &SimulatedOperator, request: &[u8]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(operator.local_addr())
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    let mut received = Vec::new();
    // A reset after a partial answer still leaves what arrived in `received`.
    let _ = stream.read_to_end(&mut received).await;
    received
}

fn split_response(raw: &[u8]) -> (String, &[u8]) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    (
        String::from_utf8_lossy(&raw[..end]).to_lowercase(),
        &raw[end..],
    )
}

fn declared_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_truncated_body_declares_the_full_length_and_stops_halfway() {
    let operator = start(2_000).await;
    let json = since_json("1970-01-01T00:00");

    for binary in [false, true] {
        operator.inject(Fault::TruncatedBody);
        let (envelope, _) = sealed(&secret(), now_ms(), &json);
        let (body, content_type) = if binary {
            (envelope, "Content-Type: application/octet-stream\r\n")
        } else {
            (envelope::encode_base64(&envelope).into_bytes(), "")
        };
        let head = format!(
            "POST /v2/identity/buckets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n{content_type}Content-Length: {}\r\n\r\n",
            body.len()
        );
        let received = raw_exchange(&operator, &[head.into_bytes(), body].concat()).await;
        let (head, body) = split_response(&received);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let declared = declared_length(&head);
        assert!(declared > 100_000, "{declared}");
        assert_eq!(body.len(), declared / 2, "binary: {binary}");
        assert_eq!(last(&operator).status, 200);
    }

    // A client reading the body sees it fail.
    operator.inject(Fault::TruncatedBody);
    let (response, _) = post_base64(&operator, &json).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.is_err());
}

#[tokio::test]
async fn envelope_faults_spoil_an_otherwise_correct_answer() {
    let operator = start(40).await;
    let json = since_json("1970-01-01T00:00");

    operator.inject(Fault::CorruptTag);
    let (response, params) = post_base64(&operator, &json).await;
    assert_eq!(
        open_text_answer(response, &params).await.unwrap_err(),
        EnvelopeError::TagMismatch
    );

    operator.inject(Fault::WrongNonce);
    let (response, params) = post_base64(&operator, &json).await;
    assert_eq!(
        open_text_answer(response, &params).await.unwrap_err(),
        EnvelopeError::NonceMismatch
    );

    operator.inject(Fault::BadJson);
    let (response, params) = post_base64(&operator, &json).await;
    let opened = open_text_answer(response, &params).await.unwrap();
    assert!(matches!(
        opened.json::<serde_json::Value>().unwrap_err(),
        EnvelopeError::PayloadNotJson(_)
    ));

    operator.inject(Fault::ClientErrorStatus);
    let (response, params) = post_base64(&operator, &json).await;
    let opened = open_text_answer(response, &params).await.unwrap();
    let value: serde_json::Value = opened.json().unwrap();
    assert_eq!(value["status"], "client_error");
    assert!(value["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(value.get("body").is_none());

    operator.inject(Fault::UnparsableLastUpdated);
    let (response, params) = post_base64(&operator, &json).await;
    let rows = rows_of(&open_text_answer(response, &params).await.unwrap());
    let expected = pairs(&operator.snapshot());
    assert_eq!(rows.len(), 40);
    assert_eq!(
        rows.iter().filter(|(_, time)| time == "not-a-date").count(),
        1
    );
    assert_eq!(rows.iter().filter(|row| expected.contains(row)).count(), 39);

    // The same faults work on binary answers.
    operator.inject(Fault::WrongNonce);
    let (envelope, params) = sealed(&secret(), now_ms(), &json);
    let response = post(&operator, Some(API_KEY), Some(OCTET_STREAM), envelope).await;
    let body = response.bytes().await.unwrap().to_vec();
    assert_eq!(
        envelope::open_response(&secret(), body, &params.nonce).unwrap_err(),
        EnvelopeError::NonceMismatch
    );
    operator.inject(Fault::CorruptTag);
    let (envelope, params) = sealed(&secret(), now_ms(), &json);
    let response = post(&operator, Some(API_KEY), Some(OCTET_STREAM), envelope).await;
    let body = response.bytes().await.unwrap().to_vec();
    assert_eq!(
        envelope::open_response(&secret(), body, &params.nonce).unwrap_err(),
        EnvelopeError::TagMismatch
    );
}

#[tokio::test]
async fn an_answer_fault_is_spent_on_a_request_that_fails_anyway() {
    let operator = start(10).await;
    operator.inject(Fault::CorruptTag);
    let response = post(&operator, Some("wrong"), None, b"x".to_vec()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let logged = last(&operator);
    assert_eq!(
        (logged.status, logged.fault),
        (401, Some(Fault::CorruptTag))
    );
    let (response, params) = post_base64(&operator, &since_json("1970-01-01T00:00")).await;
    assert!(open_text_answer(response, &params).await.is_ok());
}

#[tokio::test]
async fn queued_faults_are_consumed_in_order_and_a_standing_fault_repeats_until_cleared() {
    let operator = start(10).await;
    let json = since_json("1970-01-01T00:00");
    operator.inject_always(Fault::Status {
        code: 502,
        retry_after: None,
    });
    operator.inject(Fault::Status {
        code: 503,
        retry_after: None,
    });
    operator.inject(Fault::Status {
        code: 500,
        retry_after: None,
    });
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(post_base64(&operator, &json).await.0.status().as_u16());
    }
    assert_eq!(statuses, [503, 500, 502, 502]);
    operator.clear_faults();
    assert_eq!(
        post_base64(&operator, &json).await.0.status(),
        StatusCode::OK
    );
    let faults: Vec<Option<Fault>> = operator.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(
        faults[0],
        Some(Fault::Status {
            code: 503,
            retry_after: None
        })
    );
    assert_eq!(faults[4], None);
}

// ---------------------------------------------------------------- log, lifecycle

#[tokio::test]
async fn the_request_log_records_what_each_request_carried() {
    let operator = start(10).await;
    let (first, first_params) =
        post_base64(&operator, &since_json("2024-05-06T07:08:09.123")).await;
    assert_eq!(first.status(), StatusCode::OK);
    let (envelope, second_params) =
        sealed(&secret(), now_ms() - 1_000, &since_json("1970-01-01T00:00"));
    post(&operator, Some(API_KEY), Some(OCTET_STREAM), envelope).await;
    post(&operator, Some("wrong"), None, b"x".to_vec()).await;

    let log = operator.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(
        log[0],
        ReceivedRequest {
            endpoint: Some(Endpoint::Buckets),
            timestamp_ms: Some(first_params.timestamp_ms),
            nonce: Some(first_params.nonce),
            since_timestamp: Some("2024-05-06T07:08:09.123".into()),
            map_counts: None,
            binary: false,
            status: 200,
            fault: None,
        }
    );
    assert_eq!(log[1].timestamp_ms, Some(second_params.timestamp_ms));
    assert_eq!(log[1].nonce, Some(second_params.nonce));
    assert!(log[1].binary);
    assert_eq!(
        log[2],
        ReceivedRequest {
            endpoint: Some(Endpoint::Buckets),
            timestamp_ms: None,
            nonce: None,
            since_timestamp: None,
            map_counts: None,
            binary: false,
            status: 401,
            fault: None,
        }
    );
}

#[tokio::test]
async fn periodic_rotations_stamp_the_configured_number_of_buckets() {
    let mut config = config(200);
    config.rotate_every = Some(Duration::from_millis(100));
    config.rotate_count = 4;
    let started = parse_iso_local(&format_operator(Utc::now())).unwrap();
    let operator = start_with(config).await;

    let mut rotated = Vec::new();
    for _ in 0..200 {
        rotated = buckets_since(&operator, &format_operator(started)).await;
        if !rotated.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!rotated.is_empty(), "no rotation seen");
    // Each answer is a consistent view: the newest rotation shows whole.
    let newest = rotated.iter().map(|(_, time)| time.clone()).max().unwrap();
    assert_eq!(
        rotated.iter().filter(|(_, time)| *time == newest).count(),
        4
    );
    let newest = parse_iso_local(&newest).unwrap();
    assert!(newest >= started);
    operator.shutdown().await;
}

#[tokio::test]
async fn the_same_seed_serves_the_same_ids() {
    let a = start(100).await;
    let b = start(100).await;
    let ids = |op: &SimulatedOperator| -> Vec<String> {
        op.snapshot()
            .into_iter()
            .map(|r| r.bucket_id.to_string())
            .collect()
    };
    assert_eq!(ids(&a), ids(&b));
    let mut other = config(100);
    other.seed = 42;
    let c = start_with(other).await;
    assert_ne!(ids(&a), ids(&c));
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let operator = start(10).await;
    let address = operator.local_addr();
    assert_eq!(operator.base_url(), format!("http://{address}"));
    let clone = operator.clone();
    operator.shutdown().await;
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
    // Clones stay usable as handles to the (stopped) table.
    assert_eq!(clone.bucket_count(), 10);
}

#[tokio::test]
async fn a_zero_rotation_period_is_refused() {
    let mut config = config(10);
    config.rotate_every = Some(Duration::ZERO);
    config.rotate_count = 1;
    let error = SimulatedOperator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let operator = start(10).await;
    let address = operator.local_addr();
    let clone = operator.clone();
    drop(operator);
    assert!(tokio::net::TcpStream::connect(address).await.is_ok());
    drop(clone);
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(address).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "still accepting after the last handle was dropped");
}

// ---------------------------------------------------------------- identity map

const DAY_S: i64 = 86_400;

/// The `body` of a successful map answer to `json`, posted as base64.
async fn map_body(operator: &SimulatedOperator, path: &str, json: &serde_json::Value) -> Value {
    let (response, params) = post_base64_to(operator, path, &json.to_string()).await;
    let value: Value = open_text_answer(response, &params)
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(value["status"], "success", "{value}");
    assert_eq!(value.as_object().unwrap().len(), 2, "{value}");
    value["body"].clone()
}

async fn v3(operator: &SimulatedOperator, json: serde_json::Value) -> Value {
    map_body(operator, MAP_V3_PATH, &json).await
}

async fn v2(operator: &SimulatedOperator, json: serde_json::Value) -> Value {
    map_body(operator, MAP_V2_PATH, &json).await
}

/// The message of the 400 a map request gets.
async fn map_refusal(operator: &SimulatedOperator, path: &str, payload: &str) -> String {
    let (response, _) = post_base64_to(operator, path, payload).await;
    client_error_message(response).await
}

fn email(text: &str) -> IdentityHash {
    IdentityHash::of_email(text).unwrap()
}

fn phone(text: &str) -> IdentityHash {
    IdentityHash::of_phone(text).unwrap()
}

fn base64_of(identity: &IdentityHash) -> String {
    identity.to_base64().as_str().to_owned()
}

fn uid_len(uid: &Value) -> usize {
    envelope::decode_base64(uid.as_str().unwrap().as_bytes())
        .unwrap()
        .len()
}

fn midnight(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc()
}

fn secs(at: DateTime<Utc>) -> i64 {
    at.timestamp()
}

fn mapped(answer: &Value) -> (&str, Option<&str>, i64) {
    let object = answer.as_object().unwrap();
    assert_eq!(
        object.keys().map(String::as_str).collect::<HashSet<_>>(),
        HashSet::from(["u", "p", "r"]),
        "{answer}"
    );
    (
        answer["u"].as_str().unwrap(),
        answer["p"].as_str(),
        answer["r"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn v3_answers_every_key_with_one_element_per_input_in_order() {
    let operator = start(1_000).await;
    let user = email("user@example.com");
    let hex = hex_of(&user);
    let body = v3(
        &operator,
        serde_json::json!({
            "email": ["user@example.com", "not an email", " USER@Example.com ", "user@example.com"],
            "email_hash": [base64_of(&user), hex.to_uppercase(), "tooshort"],
            "phone": ["+12345678901", "+1234"],
            "phone_hash": [base64_of(&phone("+12345678901"))],
        }),
    )
    .await;
    let object = body.as_object().unwrap();
    assert_eq!(object.len(), 4, "{body}");
    let lengths: Vec<usize> = ["email", "email_hash", "phone", "phone_hash"]
        .iter()
        .map(|key| body[key].as_array().unwrap().len())
        .collect();
    assert_eq!(lengths, [4, 3, 2, 1]);

    let (u, _, r) = mapped(&body["email"][0]);
    assert_eq!(uid_len(&body["email"][0]["u"]), 32);
    assert!(r % DAY_S == 0 && r > secs(Utc::now()), "r = {r}");
    assert_eq!(
        body["email"][1],
        serde_json::json!({"e": "invalid identifier"})
    );
    // Normalized server-side, duplicates answered again, hashes in either spelling.
    for same in [
        &body["email"][2],
        &body["email"][3],
        &body["email_hash"][0],
        &body["email_hash"][1],
    ] {
        assert_eq!(same, &body["email"][0]);
    }
    assert_eq!(
        body["email_hash"][2],
        serde_json::json!({"e": "invalid identifier"})
    );
    let (phone_u, _, _) = mapped(&body["phone"][0]);
    assert_ne!(phone_u, u);
    assert_eq!(
        body["phone"][1],
        serde_json::json!({"e": "invalid identifier"})
    );
    assert_eq!(body["phone_hash"][0], body["phone"][0]);

    // Absent, null and empty arrays all come back as empty arrays.
    let body = v3(
        &operator,
        serde_json::json!({"email": [], "phone_hash": null}),
    )
    .await;
    assert_eq!(
        body,
        serde_json::json!({"email": [], "email_hash": [], "phone": [], "phone_hash": []})
    );
}

fn hex_of(identity: &IdentityHash) -> String {
    identity
        .as_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test]
async fn v3_refuses_other_keys_null_elements_and_an_empty_object_with_the_operators_messages() {
    let operator = start(10).await;
    let missing = "Required Parameter Missing: one or more of [email, email_hash, phone, phone_hash] must be specified";
    let incorrect = "Incorrect request format";
    let cases = [
        ("{}", missing),
        (r#"{"email":["a@b.com"],"policy":1}"#, incorrect),
        (r#"{"policy":1}"#, incorrect),
        (r#"{"emails":[]}"#, incorrect),
        (r#"{"email":[null]}"#, incorrect),
        (r#"{"email":["a@b.com",null]}"#, incorrect),
        (r#"{"email":[["a@b.com"]]}"#, incorrect),
        (r#"{"email":"a@b.com"}"#, incorrect),
        (r#"{"phone_hash":{}}"#, incorrect),
    ];
    for (payload, expected) in cases {
        assert_eq!(
            map_refusal(&operator, MAP_V3_PATH, payload).await,
            expected,
            "{payload}"
        );
        assert_eq!(last(&operator).status, 400);
    }
    // No payload at all reaches the handler as a missing request.
    assert_eq!(map_refusal(&operator, MAP_V3_PATH, "").await, missing);
    // Not an object: the envelope layer's message, as for buckets.
    assert_eq!(
        map_refusal(&operator, MAP_V3_PATH, r#"["a@b.com"]"#).await,
        "Invalid payload in body: Data is not valid json string."
    );
}

#[tokio::test]
async fn v2_maps_one_array_and_echoes_each_identifier_as_sent() {
    let operator = start(1_000).await;
    let user = email("user@example.com");
    let inputs = [
        "User@Example.com",
        "optout@example.com",
        "a@ba@z.com",
        "user@example.com",
    ];
    let body = v2(
        &operator,
        serde_json::json!({"email": inputs, "policy": 1, "optout_check": 1}),
    )
    .await;
    let expected_uid = v3(
        &operator,
        serde_json::json!({"email": ["user@example.com"]}),
    )
    .await["email"][0]["u"]
        .clone();
    let bucket = operator.bucket_of(&user).unwrap();
    let mapped_entry = serde_json::json!({
        "identifier": "User@Example.com",
        "advertising_id": expected_uid,
        "bucket_id": bucket,
    });
    assert_eq!(
        body["mapped"],
        serde_json::json!([mapped_entry, {
            "identifier": "user@example.com",
            "advertising_id": expected_uid,
            "bucket_id": bucket,
        }])
    );
    assert_eq!(
        body["unmapped"],
        serde_json::json!([
            {"identifier": "optout@example.com", "reason": "optout"},
            {"identifier": "a@ba@z.com", "reason": "invalid identifier"},
        ])
    );

    // Hashes are echoed in the spelling sent; `unmapped` is left out when empty.
    let hex = hex_of(&user).to_uppercase();
    let body = v2(&operator, serde_json::json!({"email_hash": [hex]})).await;
    assert_eq!(
        body,
        serde_json::json!({"mapped": [{"identifier": hex, "advertising_id": expected_uid, "bucket_id": bucket}]})
    );
    let by_phone = v2(&operator, serde_json::json!({"phone": ["+12345678901"]})).await;
    assert_eq!(by_phone["mapped"][0]["identifier"], "+12345678901");
    assert_eq!(uid_len(&by_phone["mapped"][0]["advertising_id"]), 32);
    let phone_hash = base64_of(&phone("+12345678901"));
    let by_hash = v2(&operator, serde_json::json!({"phone_hash": [phone_hash]})).await;
    assert_eq!(by_hash["mapped"][0]["identifier"], phone_hash.as_str());
    assert_eq!(
        by_hash["mapped"][0]["advertising_id"],
        by_phone["mapped"][0]["advertising_id"]
    );

    // Empty arrays, with another key empty too, map nothing.
    let body = v2(&operator, serde_json::json!({"email": [], "phone": []})).await;
    assert_eq!(body, serde_json::json!({"mapped": []}));
}

#[tokio::test]
async fn v2_refuses_anything_but_exactly_one_array_with_the_operators_messages() {
    let operator = start(10).await;
    let one = "Required Parameter Missing: exactly one of [email, email_hash, phone, phone_hash] must be specified";
    let cases = [
        ("{}".to_owned(), one.to_owned()),
        (r#"{"policy":1}"#.to_owned(), one.to_owned()),
        (r#"{"email":null}"#.to_owned(), one.to_owned()),
        (
            r#"{"email":["a@b.com"],"phone":["+12345678901"]}"#.to_owned(),
            one.to_owned(),
        ),
        (
            r#"{"email_hash":["x"],"phone_hash":["y"],"email":[]}"#.to_owned(),
            one.to_owned(),
        ),
        (
            r#"{"email":"a@b.com"}"#.to_owned(),
            "email must be an array".to_owned(),
        ),
        (
            r#"{"phone_hash":{}}"#.to_owned(),
            "phone_hash must be an array".to_owned(),
        ),
    ];
    for (payload, expected) in cases {
        assert_eq!(
            map_refusal(&operator, MAP_V2_PATH, &payload).await,
            expected,
            "{payload}"
        );
    }
    // Inputs the operator's v2 handler cannot read as strings, and no
    // payload at all, end in its unhandled-error answer.
    for payload in [r#"{"email":[null]}"#, r#"{"email":[1]}"#, ""] {
        let (response, _) = post_base64_to(&operator, MAP_V2_PATH, payload).await;
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{payload}"
        );
    }
}

#[tokio::test]
async fn refresh_from_and_previous_uid_follow_the_buckets_rotations() {
    let operator = start(500).await;
    let user = email("user@example.com");
    let bucket = operator.bucket_of(&user).unwrap();
    let request = || serde_json::json!({"email": ["user@example.com"]});
    let before = v3(&operator, request()).await["email"][0].clone();
    let (old_u, _, _) = mapped(&before);

    // Rotated today: a new `u`, the old one as `p`, due in 30 days.
    let today = midnight(Utc::now());
    operator.rotate(&[&bucket], today);
    let after = v3(&operator, request()).await["email"][0].clone();
    let (new_u, p, r) = mapped(&after);
    assert_ne!(new_u, old_u);
    assert_eq!(p, Some(old_u));
    assert_eq!(r, secs(today) + 30 * DAY_S);
    let v2_body = v2(&operator, request()).await;
    assert_eq!(v2_body["mapped"][0]["advertising_id"], new_u);
    assert_eq!(v2_body["mapped"][0]["bucket_id"], bucket.as_str());

    // A set refresh time is served as set; once past, as the next midnight.
    let soon = Utc::now() + TimeDelta::hours(1);
    assert_eq!(operator.set_refresh_from(&[&bucket, "unknown-id"], soon), 1);
    assert_eq!(v3(&operator, request()).await["email"][0]["r"], secs(soon));
    operator.set_refresh_from(&[&bucket], Utc::now() - TimeDelta::hours(1));
    assert_eq!(
        v3(&operator, request()).await["email"][0]["r"],
        secs(today) + DAY_S
    );

    // Last rotated 100 days ago: no `p` any more, due on day 120.
    let long_ago = today - TimeDelta::days(100);
    operator.rotate(&[&bucket], long_ago);
    let oldest = v3(&operator, request()).await;
    let (oldest_u, p, r) = mapped(&oldest["email"][0]);
    assert_ne!(oldest_u, new_u);
    assert_eq!(p, None);
    assert_eq!(r, secs(long_ago) + 120 * DAY_S);
    assert!(r > secs(Utc::now()));
}

#[tokio::test]
async fn every_refresh_from_is_a_future_midnight_within_thirty_days_and_p_marks_young_buckets() {
    let operator = start(300).await;
    let phones: Vec<String> = (0..400).map(|n| format!("+1555{n:07}")).collect();
    let buckets = v2(&operator, serde_json::json!({"phone": phones})).await;
    let answers = v3(&operator, serde_json::json!({"phone": phones})).await;
    let last_rotation: std::collections::HashMap<String, DateTime<Utc>> = operator
        .snapshot()
        .into_iter()
        .map(|row| (row.bucket_id.to_string(), row.last_updated))
        .collect();
    let now = Utc::now();
    let today = secs(midnight(now));
    let (mut with_p, mut without_p) = (0, 0);
    for (index, answer) in answers["phone"].as_array().unwrap().iter().enumerate() {
        let (u, p, r) = mapped(answer);
        let entry = &buckets["mapped"][index];
        assert_eq!(entry["advertising_id"], u);
        let rotated = last_rotation[entry["bucket_id"].as_str().unwrap()];
        assert!(
            r % DAY_S == 0 && r > today && r <= today + 30 * DAY_S,
            "r = {r}"
        );
        assert_eq!((r - secs(midnight(rotated))) % (30 * DAY_S), 0, "r = {r}");
        let young = now - rotated < TimeDelta::days(90);
        assert_eq!(p.is_some(), young, "rotated {rotated}");
        if young { with_p += 1 } else { without_p += 1 }
    }
    // The seeded table spreads rotations over a year: both cases occur.
    assert!(
        with_p > 0 && without_p > 0,
        "{with_p} with p, {without_p} without"
    );
}

#[tokio::test]
async fn opted_out_identities_are_unmapped_and_the_validate_identities_never_are() {
    let operator = start(100).await;
    operator.opt_out(&[
        email("user@example.com"),
        email("validate@example.com"),
        phone("+12345678901"),
    ]);
    let body = v3(
        &operator,
        serde_json::json!({
            "email": ["optout@example.com", "User@example.com", "validate@example.com", "other@example.com"],
            "email_hash": [base64_of(&email("user@example.com"))],
            "phone": ["+00000000000", "+12345678901"],
        }),
    )
    .await;
    let optout = serde_json::json!({"e": "optout"});
    assert_eq!(body["email"][0], optout);
    assert_eq!(body["email"][1], optout);
    mapped(&body["email"][2]);
    mapped(&body["email"][3]);
    assert_eq!(body["email_hash"][0], optout);
    assert_eq!(body["phone"][0], optout);
    mapped(&body["phone"][1]);

    let body = v2(
        &operator,
        serde_json::json!({"phone": ["+00000000000", "+12345678901"]}),
    )
    .await;
    assert_eq!(
        body["unmapped"],
        serde_json::json!([{"identifier": "+00000000000", "reason": "optout"}])
    );
    assert_eq!(body["mapped"][0]["identifier"], "+12345678901");
}

#[tokio::test]
async fn map_requests_share_the_buckets_endpoints_transport_checks() {
    let operator = start(10).await;
    let json = r#"{"email":["user@example.com"]}"#;
    for path in [MAP_V2_PATH, MAP_V3_PATH] {
        let (envelope, _) = sealed(&secret(), now_ms(), json);
        let text = envelope::encode_base64(&envelope).into_bytes();
        let unauthorized = post_to(&operator, path, Some("wrong"), None, text.clone()).await;
        assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED, "{path}");

        let (stale, _) = sealed(&secret(), now_ms() - 120_000, json);
        let response = post_to(
            &operator,
            path,
            Some(API_KEY),
            None,
            envelope::encode_base64(&stale).into_bytes(),
        )
        .await;
        assert_eq!(
            client_error_message(response).await,
            "Invalid timestamp: Request too old or client time drift.",
        );
        let response = post_to(
            &operator,
            path,
            Some(API_KEY),
            None,
            b"not base64!".to_vec(),
        )
        .await;
        assert_eq!(
            client_error_message(response).await,
            format!("Invalid body: Body is not valid base64.{DOCS_HINT}")
        );

        let too_large = post_to(
            &operator,
            path,
            Some(API_KEY),
            None,
            vec![b'A'; (1 << 20) + 1],
        )
        .await;
        assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");

        // A binary request gets a binary answer.
        let (envelope, params) = sealed(&secret(), now_ms(), json);
        let response = post_to(&operator, path, Some(API_KEY), Some(OCTET_STREAM), envelope).await;
        assert_eq!(content_type(&response), OCTET_STREAM);
        let body = response.bytes().await.unwrap().to_vec();
        let value: Value = envelope::open_response(&secret(), body, &params.nonce)
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(value["status"], "success");
        assert!(last(&operator).binary);
    }
}

#[tokio::test]
async fn the_short_array_fault_leaves_one_input_unanswered() {
    let operator = start(100).await;
    operator.inject(Fault::ShortArray);
    let body = v3(
        &operator,
        serde_json::json!({"email": [], "email_hash": null, "phone": ["+12345678901", "+12345678902"], "phone_hash": [base64_of(&phone("+12345678901"))]}),
    )
    .await;
    assert_eq!(body["phone"].as_array().unwrap().len(), 1);
    assert_eq!(body["phone_hash"].as_array().unwrap().len(), 1);
    assert_eq!(body["email"], serde_json::json!([]));

    operator.inject(Fault::ShortArray);
    let body = v2(
        &operator,
        serde_json::json!({"email": ["a@example.com", "optout@example.com", "b@example.com"]}),
    )
    .await;
    let answered: Vec<&str> = ["mapped", "unmapped"]
        .iter()
        .filter_map(|key| body[key].as_array())
        .flatten()
        .map(|entry| entry["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(answered, ["a@example.com", "optout@example.com"]);
    assert_eq!(last(&operator).fault, Some(Fault::ShortArray));

    // With nothing mapped, an unmapped input goes missing instead.
    operator.inject(Fault::ShortArray);
    let body = v2(
        &operator,
        serde_json::json!({"email": ["optout@example.com"]}),
    )
    .await;
    assert_eq!(body, serde_json::json!({"mapped": []}));
}

#[tokio::test]
async fn the_malformed_uid_fault_serves_a_raw_uid2_that_is_not_32_bytes() {
    let operator = start(100).await;
    let request = serde_json::json!({"email": ["optout@example.com", "user@example.com", "other@example.com"]});
    let clean = v3(&operator, request.clone()).await;
    operator.inject(Fault::MalformedUid);
    let spoiled = v3(&operator, request.clone()).await;
    assert_eq!(spoiled["email"][0], clean["email"][0]);
    assert_eq!(uid_len(&spoiled["email"][1]["u"]), 31);
    assert_ne!(spoiled["email"][1]["u"], clean["email"][1]["u"]);
    assert_eq!(spoiled["email"][1]["r"], clean["email"][1]["r"]);
    assert_eq!(spoiled["email"][2], clean["email"][2]);

    operator.inject(Fault::MalformedUid);
    let spoiled = v2(&operator, request).await;
    assert_eq!(uid_len(&spoiled["mapped"][0]["advertising_id"]), 31);
    assert_eq!(uid_len(&spoiled["mapped"][1]["advertising_id"]), 32);
}

#[tokio::test]
async fn the_existing_faults_apply_to_map_requests_and_endpoint_specific_ones_are_spent_harmlessly()
{
    let operator = start(20).await;
    let json = r#"{"email":["user@example.com"]}"#;
    operator.inject(Fault::Status {
        code: 429,
        retry_after: None,
    });
    let (response, _) = post_base64_to(&operator, MAP_V3_PATH, json).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    operator.inject(Fault::WrongNonce);
    let (response, params) = post_base64_to(&operator, MAP_V2_PATH, json).await;
    assert_eq!(
        open_text_answer(response, &params).await.unwrap_err(),
        EnvelopeError::NonceMismatch
    );
    operator.inject(Fault::CorruptTag);
    let (response, params) = post_base64_to(&operator, MAP_V3_PATH, json).await;
    assert_eq!(
        open_text_answer(response, &params).await.unwrap_err(),
        EnvelopeError::TagMismatch
    );

    let clean = v3(
        &operator,
        serde_json::json!({"email": ["user@example.com"]}),
    )
    .await;
    operator.inject(Fault::UnparsableLastUpdated);
    assert_eq!(
        v3(
            &operator,
            serde_json::json!({"email": ["user@example.com"]})
        )
        .await,
        clean
    );
    for fault in [Fault::ShortArray, Fault::MalformedUid] {
        operator.inject(fault);
        assert_eq!(
            buckets_since(&operator, "1970-01-01T00:00").await,
            pairs(&operator.snapshot())
        );
    }
    assert_eq!(operator.pending_faults(), 0);
}

#[tokio::test]
async fn the_map_request_log_lists_each_endpoint_and_its_counts_per_key() {
    let operator = start(10).await;
    v3(&operator, serde_json::json!({"email": ["a@b.com", "c@d.com"], "phone_hash": [base64_of(&phone("+12345678901"))]})).await;
    buckets_since(&operator, "1970-01-01T00:00").await;
    v2(
        &operator,
        serde_json::json!({"phone": ["+12345678901", "+12345678902", "+12345678903"]}),
    )
    .await;
    map_refusal(
        &operator,
        MAP_V3_PATH,
        r#"{"email":["a@b.com"],"policy":1}"#,
    )
    .await;

    let log = operator.map_requests();
    let summary: Vec<(Option<Endpoint>, Option<MapCounts>, u16)> = log
        .iter()
        .map(|request| (request.endpoint, request.map_counts, request.status))
        .collect();
    let counts = |email, email_hash, phone, phone_hash| {
        Some(MapCounts {
            email,
            email_hash,
            phone,
            phone_hash,
        })
    };
    assert_eq!(
        summary,
        vec![
            (Some(Endpoint::MapV3), counts(2, 0, 0, 1), 200),
            (Some(Endpoint::MapV2), counts(0, 0, 3, 0), 200),
            (Some(Endpoint::MapV3), counts(1, 0, 0, 0), 400),
        ]
    );
    assert_eq!(operator.requests().len(), 4);
    assert!(
        log.iter()
            .all(|request| request.since_timestamp.is_none() && request.nonce.is_some())
    );
}
