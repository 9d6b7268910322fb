//! One exchange with any operator endpoint: the transport under every
//! endpoint module (see [`crate::operator::buckets`]).
//!
//! [`OperatorClient::call`] takes an [`Endpoint`] request. Each attempt seals
//! a fresh envelope around the request's JSON (new time, IV and nonce: the
//! operator refuses envelopes older than about a minute, so a retry can never
//! reuse one), posts it to the endpoint's path, reads the whole body into one
//! pre-sized buffer and opens it. Failed attempts are retried by `backon`
//! with jittered exponential backoff, bounded in attempts and in total time,
//! and never sooner than a `Retry-After` the operator sent. Only then does
//! the endpoint read its answer from the decrypted JSON: a malformed answer
//! would be malformed again, so it is never retried.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use crate::credentials::{ApiKey, ClientSecret};
use crate::envelope::{OpenedResponse, RequestParams, encode_base64, seal_request};
use crate::operator::body::{BodyEncoding, open_body};
use crate::operator::error::{OperatorError, TimeoutPhase, TransportError, clip_detail};
use crate::operator::options::{ClientOptions, ClientSetupError, RetryPolicy, check_base_url};
use crate::timestamp::from_millis;

const OCTET_STREAM: &str = "application/octet-stream";
const TEXT_PLAIN: &str = "text/plain";

/// How much of an error response is read for its message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Called as the body arrives with the bytes received so far and the total
/// from `Content-Length`, when the operator sent one.
pub(crate) type ProgressObserver = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

/// The client's idea of "now" in ms since the epoch, stamped into every
/// request envelope.
pub(crate) type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// One operator endpoint: where it lives, what a request to it says and how
/// its answer reads. A value of the type is one request.
pub trait Endpoint {
    /// The path relative to the base URL, e.g. `/v2/identity/buckets`.
    const PATH: &'static str;
    /// The answer, validated.
    type Answer;
    /// Why a decrypted answer was refused.
    type Problem: std::error::Error + 'static;

    /// The request's JSON, sealed afresh into every attempt's envelope.
    fn request_json(&self) -> Vec<u8>;

    /// Reads and validates the decrypted JSON of a 200 answer to this
    /// request (an identity-map answer is checked against what was sent).
    fn parse_answer(&self, json: &str) -> Result<Self::Answer, Self::Problem>;

    /// How this endpoint's requests travel, given `operator.binary_body`.
    /// The buckets endpoint follows the setting; the identity-map endpoints
    /// always send raw bytes, a quarter smaller, as the SDKs' map clients do.
    fn encoding(configured: BodyEncoding) -> BodyEncoding {
        configured
    }
}

/// A successful call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<A> {
    /// The endpoint's answer.
    pub answer: A,
    /// The operator's clock when it answered.
    pub(crate) server_time: DateTime<Utc>,
    /// Size of the HTTP body as received.
    pub body_bytes: u64,
    /// Attempts made, this successful one included.
    pub attempts: u32,
    /// Each failed attempt that was retried, in order.
    pub retries: Vec<RetryRecord>,
}

/// One retried failure and the wait chosen before the next attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryRecord {
    /// The attempt that failed, from 1.
    pub attempt: u32,
    /// [`TransportError::kind`] of its failure.
    pub error_kind: &'static str,
    /// The operator's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// The wait before the next attempt: the jittered backoff, or the
    /// `Retry-After` when that is longer.
    pub delay: Duration,
}

/// What the transport hands an endpoint: the decrypted payload of the
/// successful attempt and how it was obtained.
struct Exchanged {
    payload: OpenedResponse,
    body_bytes: u64,
    attempts: u32,
    retries: Vec<RetryRecord>,
}

/// Client for one operator with one set of credentials, for any endpoint.
pub struct OperatorClient {
    http: reqwest::Client,
    base: Url,
    authorization: HeaderValue,
    secret: ClientSecret,
    options: ClientOptions,
    clock: Clock,
    progress: Option<ProgressObserver>,
}

impl std::fmt::Debug for OperatorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorClient")
            .field("base", &self.base.as_str())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl OperatorClient {
    /// Builds a client for the operator at `base_url`. Plain `http` is
    /// accepted only for loopback hosts (tests, `dev-operator`, `demo`).
    pub fn new(
        base_url: &str,
        api_key: ApiKey,
        client_secret: ClientSecret,
        options: ClientOptions,
    ) -> Result<Self, ClientSetupError> {
        let base = check_base_url(base_url)?;
        let mut authorization = HeaderValue::from_str(&api_key.bearer_header())
            .map_err(|_| ClientSetupError::ApiKeyNotHeaderSafe)?;
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            // The operator never redirects; following one would post the
            // bearer token somewhere unexpected.
            .redirect(reqwest::redirect::Policy::none())
            // Each attempt must be exactly one request with its own envelope.
            .retry(reqwest::retry::never())
            .build()
            .map_err(|error| ClientSetupError::Http(error_chain(&error)))?;
        Ok(Self {
            http,
            base,
            authorization,
            secret: client_secret,
            options,
            clock: Arc::new(|| Utc::now().timestamp_millis()),
            progress: None,
        })
    }

    /// Reports download progress of each attempt's body.
    pub fn with_progress(
        mut self,
        observer: impl Fn(u64, Option<u64>) + Send + Sync + 'static,
    ) -> Self {
        self.progress = Some(Arc::new(observer));
        self
    }

    /// Replaces the clock stamped into request envelopes.
    pub fn with_clock(mut self, now_ms: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(now_ms);
        self
    }

    /// The longest one call can take, retries included: no retry starts
    /// after `max_elapsed`, and each attempt ends by `request_timeout`.
    pub(crate) fn exchange_bound(&self) -> Duration {
        self.options.retry.max_elapsed + self.options.request_timeout
    }

    /// The full URL requests to `path` go to: the base URL's path, then
    /// `path`.
    pub(crate) fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        url
    }

    /// Sends `request` to its endpoint, retrying transient failures
    /// according to the retry policy, and reads the answer.
    pub(crate) async fn call<E: Endpoint>(
        &self,
        request: &E,
    ) -> Result<Reply<E::Answer>, OperatorError<E::Problem>> {
        let Exchanged {
            payload,
            body_bytes,
            attempts,
            retries,
        } = self
            .exchange(
                E::PATH,
                E::encoding(self.options.encoding),
                &request.request_json(),
            )
            .await?;
        let answer = request
            .parse_answer(payload.payload())
            .map_err(OperatorError::InvalidResponse)?;
        Ok(Reply {
            answer,
            server_time: from_millis(payload.server_time_ms()),
            body_bytes,
            attempts,
            retries,
        })
    }

    /// The transport proper: posts `json` to `path` until an attempt
    /// succeeds or the retry policy gives up.
    async fn exchange(
        &self,
        path: &'static str,
        encoding: BodyEncoding,
        json: &[u8],
    ) -> Result<Exchanged, TransportError> {
        let policy = &self.options.retry;
        let started = Instant::now();
        let attempts = AtomicU32::new(0);
        let retries = Mutex::new(Vec::new());
        let backoff = ExponentialBuilder::new()
            .with_jitter()
            .with_min_delay(policy.initial_backoff)
            .with_max_delay(policy.max_backoff)
            .with_max_times(policy.max_attempts.saturating_sub(1) as usize);

        let outcome = (|| async {
            attempts.fetch_add(1, Ordering::SeqCst);
            self.attempt(path, encoding, json).await
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(TransportError::is_transient)
        .adjust(|error, backoff| {
            let delay = retry_delay(policy, started.elapsed(), backoff?, error.retry_after())?;
            Some(delay)
        })
        .notify(|error, delay| {
            let attempt = attempts.load(Ordering::SeqCst);
            tracing::warn!(
                attempt,
                max_attempts = policy.max_attempts,
                error_kind = error.kind(),
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "operator request failed; retrying"
            );
            retries
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(RetryRecord {
                    attempt,
                    error_kind: error.kind(),
                    retry_after: error.retry_after(),
                    delay,
                });
        })
        .await;

        let (payload, body_bytes) = outcome?;
        Ok(Exchanged {
            payload,
            body_bytes,
            attempts: attempts.into_inner(),
            retries: retries.into_inner().unwrap_or_else(PoisonError::into_inner),
        })
    }

    /// One attempt: the decrypted payload and the size of the body.
    async fn attempt(
        &self,
        path: &'static str,
        encoding: BodyEncoding,
        json: &[u8],
    ) -> Result<(OpenedResponse, u64), TransportError> {
        let params = RequestParams::fresh((self.clock)());
        let envelope = seal_request(&self.secret, &params, json);
        let (body, content_type) = match encoding {
            BodyEncoding::Binary => (envelope, OCTET_STREAM),
            BodyEncoding::Base64 => (encode_base64(&envelope).into_bytes(), TEXT_PLAIN),
        };

        let mut response = self
            .http
            .post(self.url(path))
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|error| self.send_error(&error))?;

        if response.status() != StatusCode::OK {
            return Err(status_error(response, path).await);
        }
        let encoding = reply_encoding(response.headers(), encoding);
        let body = self.read_body(&mut response).await?;
        let body_bytes = body.len() as u64;
        let payload = open_body(&self.secret, body, encoding, &params.nonce)?;
        Ok((payload, body_bytes))
    }

    /// Reads the whole body into one buffer sized from `Content-Length`, so
    /// a 91 MiB answer is never copied while growing.
    async fn read_body(&self, response: &mut reqwest::Response) -> Result<Vec<u8>, TransportError> {
        let limit = self.options.max_body_bytes;
        let expected = response.content_length();
        if expected.is_some_and(|length| length > limit) {
            return Err(TransportError::BodyTooLarge { limit });
        }
        let mut body = Vec::with_capacity(expected.unwrap_or(0) as usize);
        if let Some(observer) = &self.progress {
            observer(0, expected);
        }
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(error) if error.is_timeout() => {
                    return Err(TransportError::Timeout {
                        phase: TimeoutPhase::ReadingBody,
                        limit: self.options.request_timeout,
                    });
                }
                Err(_) => {
                    return Err(TransportError::TruncatedBody {
                        received: body.len() as u64,
                        expected,
                    });
                }
            };
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(TransportError::BodyTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
            if let Some(observer) = &self.progress {
                observer(body.len() as u64, expected);
            }
        }
        if expected.is_some_and(|length| (body.len() as u64) < length) {
            return Err(TransportError::TruncatedBody {
                received: body.len() as u64,
                expected,
            });
        }
        Ok(body)
    }

    /// A request that got no response at all.
    fn send_error(&self, error: &reqwest::Error) -> TransportError {
        if error.is_timeout() {
            let connecting = error.is_connect();
            return TransportError::Timeout {
                phase: if connecting {
                    TimeoutPhase::Connecting
                } else {
                    TimeoutPhase::AwaitingResponse
                },
                limit: if connecting {
                    self.options.connect_timeout
                } else {
                    self.options.request_timeout
                },
            };
        }
        let detail = error_chain(error);
        if error.is_connect() {
            TransportError::Connect { detail }
        } else {
            TransportError::ConnectionReset { detail }
        }
    }
}

/// A non-200 answer as the error a caller acts on; `path` is what was
/// requested, named in the message of a status nobody expects.
async fn status_error(response: reqwest::Response, path: &'static str) -> TransportError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, Utc::now()));
    let text = read_error_text(response).await;
    match status {
        400 => TransportError::BadRequest {
            message: operator_message(&text),
        },
        401 => TransportError::Unauthorized,
        429 => TransportError::RateLimited { retry_after },
        500..=599 => TransportError::ServerError {
            status,
            detail: operator_message(&text),
            retry_after,
        },
        _ => TransportError::UnexpectedStatus {
            status,
            path,
            detail: operator_message(&text),
        },
    }
}

/// The wait before the next attempt, or `None` to give up: the backoff
/// capped at `max_backoff`, raised to the operator's `Retry-After`, and only
/// if it ends within `max_elapsed` of the first attempt.
fn retry_delay(
    policy: &RetryPolicy,
    elapsed: Duration,
    backoff: Duration,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let delay = backoff
        .min(policy.max_backoff)
        .max(retry_after.unwrap_or_default());
    (elapsed + delay <= policy.max_elapsed).then_some(delay)
}

/// Which encoding the reply is in: the operator answers in kind, and says
/// so in `Content-Type`; fall back to what was sent.
fn reply_encoding(headers: &HeaderMap, sent: BodyEncoding) -> BodyEncoding {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with(OCTET_STREAM) {
        BodyEncoding::Binary
    } else if content_type.starts_with("text/") {
        BodyEncoding::Base64
    } else {
        sent
    }
}

/// `Retry-After` as delay-seconds or an HTTP date; a date in the past means
/// no wait.
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or_default())
}

/// The first part of an error body, lossily decoded; errors here only
/// shorten the detail.
async fn read_error_text(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(MAX_ERROR_BODY_BYTES);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The operator's `message` field when the body is its JSON error shape,
/// otherwise the raw text.
fn operator_message(text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: Option<String>,
        status: Option<String>,
    }
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(ErrorBody {
            message: Some(message),
            ..
        }) => clip_detail(&message),
        Ok(ErrorBody {
            message: None,
            status: Some(status),
        }) => format!("status {}", clip_detail(&status)),
        _ => clip_detail(text),
    }
}

/// A transport error and its causes, without the URL (the caller knows it).
fn error_chain(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() {
        parts.push(clip_detail(&error.to_string()));
    }
    parts.join(": ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A client that is never used to send anything.
    pub(crate) fn offline_client(base_url: &str) -> OperatorClient {
        OperatorClient::new(
            base_url,
            ApiKey::new("key").unwrap(),
            ClientSecret::from_bytes([0; 32]),
            ClientOptions::default(),
        )
        .unwrap()
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(30),
        }
    }

    #[test]
    fn an_endpoint_url_is_the_base_url_path_then_the_endpoint_path() {
        for (base, url) in [
            ("https://prod.uidapi.com", "https://prod.uidapi.com/v9/x"),
            ("https://prod.uidapi.com/", "https://prod.uidapi.com/v9/x"),
            (
                "https://proxy.example/uid2/",
                "https://proxy.example/uid2/v9/x",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v9/x"),
            ("http://[::1]:9", "http://[::1]:9/v9/x"),
            ("http://localhost:9", "http://localhost:9/v9/x"),
        ] {
            assert_eq!(offline_client(base).url("/v9/x").as_str(), url, "{base}");
        }
    }

    #[test]
    fn an_api_key_that_cannot_be_a_header_is_refused_without_echoing_it() {
        let error = OperatorClient::new(
            "https://prod.uidapi.com",
            ApiKey::new("bad\u{7f}key-text").unwrap(),
            ClientSecret::from_bytes([0; 32]),
            ClientOptions::default(),
        )
        .unwrap_err();
        assert_eq!(error, ClientSetupError::ApiKeyNotHeaderSafe);
        assert!(!format!("{error} {error:?}").contains("key-text"));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:26:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn retry_delay_honours_retry_after_within_the_total_bound() {
        let policy = policy();
        let start = Duration::ZERO;
        assert_eq!(
            retry_delay(&policy, start, Duration::from_millis(150), None),
            Some(Duration::from_millis(150))
        );
        // Jitter can push backoff past the cap; the cap holds.
        assert_eq!(
            retry_delay(&policy, start, Duration::from_secs(3), None),
            Some(Duration::from_secs(2))
        );
        // The operator's wait wins over a shorter backoff, even past the cap.
        assert_eq!(
            retry_delay(
                &policy,
                start,
                Duration::from_millis(150),
                Some(Duration::from_secs(5))
            ),
            Some(Duration::from_secs(5))
        );
        // No retry that would end past the total bound.
        assert_eq!(
            retry_delay(
                &policy,
                Duration::from_secs(26),
                Duration::from_millis(150),
                Some(Duration::from_secs(5))
            ),
            None
        );
        assert_eq!(
            retry_delay(
                &policy,
                Duration::from_secs(29),
                Duration::from_secs(2),
                None
            ),
            None
        );
    }

    #[test]
    fn operator_messages_come_from_json_or_raw_text() {
        assert_eq!(
            operator_message(
                r#"{"status":"client_error","message":"Invalid timestamp: Request too old or client time drift."}"#
            ),
            "Invalid timestamp: Request too old or client time drift."
        );
        assert_eq!(operator_message(r#"{"status":"error"}"#), "status error");
        assert_eq!(
            operator_message("Internal Server Error\n"),
            "Internal Server Error"
        );
        assert_eq!(operator_message(""), "");
    }

    #[test]
    fn the_reply_encoding_follows_its_content_type() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(
            reply_encoding(&with("application/octet-stream"), BodyEncoding::Base64),
            BodyEncoding::Binary
        );
        assert_eq!(
            reply_encoding(&with("text/plain; charset=utf-8"), BodyEncoding::Binary),
            BodyEncoding::Base64
        );
        assert_eq!(
            reply_encoding(&HeaderMap::new(), BodyEncoding::Binary),
            BodyEncoding::Binary
        );
    }
}
