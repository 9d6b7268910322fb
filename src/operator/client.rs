//! The HTTP client for `POST {base}/v2/identity/buckets`.
//!
//! One attempt: seal a fresh envelope (new time, IV and nonce: the operator
//! refuses envelopes older than about a minute, so a retry can never reuse
//! one), post it, read the whole body into one pre-sized buffer, then hand
//! that buffer to [`open_buckets_body`]. Failed attempts are retried by
//! `backon` with jittered exponential backoff, bounded in attempts and in
//! total time, and never sooner than a `Retry-After` the operator sent.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use crate::credentials::{ApiKey, ClientSecret};
use crate::envelope::{RequestParams, encode_base64, seal_request};
use crate::operator::body::{BodyEncoding, OpenedBuckets, open_buckets_body};
use crate::operator::error::{OperatorError, TimeoutPhase, clip_detail};
use crate::rotation::BucketRotation;
use crate::timestamp::format_operator;

/// The endpoint, relative to the base URL.
pub const BUCKETS_PATH: &str = "/v2/identity/buckets";

const OCTET_STREAM: &str = "application/octet-stream";
const TEXT_PLAIN: &str = "text/plain";

/// How much of an error response is read for its message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Called as the body arrives with the bytes received so far and the total
/// from `Content-Length`, when the operator sent one.
pub type ProgressObserver = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

/// The client's idea of "now" in ms since the epoch, stamped into every
/// request envelope.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// How persistently to retry transient failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; 1 disables retries.
    pub max_attempts: u32,
    /// Backoff before the first retry; it doubles each time, with jitter.
    pub initial_backoff: Duration,
    /// Cap on the computed backoff (a `Retry-After` may ask for longer).
    pub max_backoff: Duration,
    /// No retry is started that would wait past this much time since the
    /// first attempt began.
    pub max_total: Duration,
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            max_total: Duration::from_secs(10 * 60),
        }
    }
}

/// Everything about the client except where it points and its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Whole exchange, body included: a first sync downloads ~91 MiB.
    pub request_timeout: Duration,
    pub encoding: BodyEncoding,
    pub retry: RetryPolicy,
    /// A body larger than this is refused rather than buffered.
    pub max_body_bytes: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(300),
            encoding: BodyEncoding::Base64,
            retry: RetryPolicy::default(),
            max_body_bytes: 1 << 30,
        }
    }
}

/// Why a client could not be built. Never carries a credential: every
/// `url` is the base URL as [`shown_url`] prints it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientSetupError {
    #[error("operator base URL {url:?} is not a valid URL: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error(
        "operator base URL {url:?} carries a user name or password; credentials never go in the \
         URL (the API key is sent in the Authorization header): remove the part ending in @"
    )]
    CredentialsInUrl { url: String },
    #[error(
        "operator base URL {url:?} uses plain http to a non-loopback host; use https (plain http \
         is accepted for loopback addresses only)"
    )]
    PlainHttpNotLoopback { url: String },
    #[error("operator base URL {url:?} has an unsupported scheme; use https")]
    UnsupportedScheme { url: String },
    #[error("the API key contains characters that cannot be sent in an HTTP header")]
    ApiKeyNotHeaderSafe,
    #[error("cannot initialise the HTTP client: {0}")]
    Http(String),
}

/// A successful call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketsResponse {
    /// Every row of the answer, validated, in the operator's order.
    pub rotations: Vec<BucketRotation>,
    /// The operator's clock when it answered.
    pub server_time: DateTime<Utc>,
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
    /// [`OperatorError::kind`] of its failure.
    pub error_kind: &'static str,
    /// The operator's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// The wait before the next attempt: the jittered backoff, or the
    /// `Retry-After` when that is longer.
    pub delay: Duration,
}

/// Client for one operator endpoint with one set of credentials.
pub struct OperatorClient {
    http: reqwest::Client,
    endpoint: Url,
    authorization: HeaderValue,
    secret: ClientSecret,
    options: ClientOptions,
    clock: Clock,
    progress: Option<ProgressObserver>,
}

impl std::fmt::Debug for OperatorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl OperatorClient {
    /// Builds a client for `{base_url}/v2/identity/buckets`. Plain `http` is
    /// accepted only for loopback hosts (tests, `dev-operator`, `demo`).
    pub fn new(
        base_url: &str,
        api_key: ApiKey,
        client_secret: ClientSecret,
        options: ClientOptions,
    ) -> Result<Self, ClientSetupError> {
        let endpoint = endpoint_url(base_url)?;
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
            endpoint,
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

    /// The full URL requests go to.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Fetches every rotation with `last_updated >= since`, retrying
    /// transient failures according to the retry policy.
    pub async fn fetch_rotations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<BucketsResponse, OperatorError> {
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
            self.attempt(since).await
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(OperatorError::is_transient)
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

        let attempts = attempts.into_inner();
        let retries = retries.into_inner().unwrap_or_else(PoisonError::into_inner);
        outcome.map(|mut response| {
            response.attempts = attempts;
            response.retries = retries;
            response
        })
    }

    /// Exactly one attempt, no retries.
    pub async fn fetch_rotations_once(
        &self,
        since: DateTime<Utc>,
    ) -> Result<BucketsResponse, OperatorError> {
        self.attempt(since).await
    }

    async fn attempt(&self, since: DateTime<Utc>) -> Result<BucketsResponse, OperatorError> {
        let params = RequestParams::fresh((self.clock)());
        let json = serde_json::json!({ "since_timestamp": format_operator(since) }).to_string();
        let envelope = seal_request(&self.secret, &params, json.as_bytes());
        let (body, content_type) = match self.options.encoding {
            BodyEncoding::Binary => (envelope, OCTET_STREAM),
            BodyEncoding::Base64 => (encode_base64(&envelope).into_bytes(), TEXT_PLAIN),
        };

        let mut response = self
            .http
            .post(self.endpoint.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|error| self.transport_error(&error, TimeoutPhase::AwaitingResponse))?;

        let status = response.status();
        if status != StatusCode::OK {
            return Err(self.status_error(response).await);
        }
        let encoding = reply_encoding(response.headers(), self.options.encoding);
        let body = self.read_body(&mut response).await?;
        let body_bytes = body.len() as u64;
        let OpenedBuckets {
            rotations,
            server_time,
        } = open_buckets_body(&self.secret, body, encoding, &params.nonce)?;
        Ok(BucketsResponse {
            rotations,
            server_time,
            body_bytes,
            attempts: 1,
            retries: Vec::new(),
        })
    }

    /// Reads the whole body into one buffer sized from `Content-Length`, so
    /// a 91 MiB answer is never copied while growing.
    async fn read_body(&self, response: &mut reqwest::Response) -> Result<Vec<u8>, OperatorError> {
        let limit = self.options.max_body_bytes;
        let expected = response.content_length();
        if expected.is_some_and(|length| length > limit) {
            return Err(OperatorError::BodyTooLarge { limit });
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
                    return Err(OperatorError::Timeout {
                        phase: TimeoutPhase::ReadingBody,
                        limit: self.options.request_timeout,
                    });
                }
                Err(_) => {
                    return Err(OperatorError::TruncatedBody {
                        received: body.len() as u64,
                        expected,
                    });
                }
            };
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(OperatorError::BodyTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
            if let Some(observer) = &self.progress {
                observer(body.len() as u64, expected);
            }
        }
        if expected.is_some_and(|length| (body.len() as u64) < length) {
            return Err(OperatorError::TruncatedBody {
                received: body.len() as u64,
                expected,
            });
        }
        Ok(body)
    }

    async fn status_error(&self, response: reqwest::Response) -> OperatorError {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, Utc::now()));
        let text = read_error_text(response).await;
        match status {
            400 => OperatorError::BadRequest {
                message: operator_message(&text),
            },
            401 => OperatorError::Unauthorized,
            429 => OperatorError::RateLimited { retry_after },
            500..=599 => OperatorError::ServerError {
                status,
                detail: operator_message(&text),
                retry_after,
            },
            _ => OperatorError::UnexpectedStatus {
                status,
                detail: operator_message(&text),
            },
        }
    }

    fn transport_error(&self, error: &reqwest::Error, phase: TimeoutPhase) -> OperatorError {
        if error.is_timeout() {
            let connecting = error.is_connect();
            return OperatorError::Timeout {
                phase: if connecting {
                    TimeoutPhase::Connecting
                } else {
                    phase
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
            OperatorError::Connect { detail }
        } else {
            OperatorError::ConnectionReset { detail }
        }
    }
}

/// The wait before the next attempt, or `None` to give up: the backoff
/// capped at `max_backoff`, raised to the operator's `Retry-After`, and only
/// if it ends within `max_total` of the first attempt.
fn retry_delay(
    policy: &RetryPolicy,
    elapsed: Duration,
    backoff: Duration,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let delay = backoff
        .min(policy.max_backoff)
        .max(retry_after.unwrap_or_default());
    (elapsed + delay <= policy.max_total).then_some(delay)
}

/// Checks an operator base URL: https, or plain http to a loopback address
/// (local simulators and tests), so credentials and rotations never cross a
/// network in clear; no user name, password, query or fragment.
pub fn check_base_url(base_url: &str) -> Result<Url, ClientSetupError> {
    let url = shown_url(base_url);
    let invalid = |reason: String| ClientSetupError::InvalidBaseUrl {
        url: url.clone(),
        reason,
    };
    let base = Url::parse(base_url.trim()).map_err(|error| invalid(error.to_string()))?;
    if !base.username().is_empty() || base.password().is_some() {
        return Err(ClientSetupError::CredentialsInUrl { url });
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(invalid("a query or fragment is not allowed".to_owned()));
    }
    match base.scheme() {
        "https" => Ok(base),
        "http" if is_loopback(&base) => Ok(base),
        "http" => Err(ClientSetupError::PlainHttpNotLoopback { url }),
        _ => Err(ClientSetupError::UnsupportedScheme { url }),
    }
}

/// A base URL as it may appear in a message: without anything up to an `@`
/// (a user name or password) and without a query or fragment (tokens).
/// Works on text that is not a valid URL too.
pub fn shown_url(text: &str) -> String {
    let text = text.trim();
    let text = &text[..text.find(['?', '#']).unwrap_or(text.len())];
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), text),
    };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    format!("{scheme}{rest}")
}

fn endpoint_url(base_url: &str) -> Result<Url, ClientSetupError> {
    let base = check_base_url(base_url)?;
    let path = format!("{}{BUCKETS_PATH}", base.path().trim_end_matches('/'));
    let mut endpoint = base;
    endpoint.set_path(&path);
    Ok(endpoint)
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || unbracketed
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
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
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_total: Duration::from_secs(30),
        }
    }

    #[test]
    fn endpoint_is_the_base_plus_the_buckets_path() {
        for (base, endpoint) in [
            (
                "https://prod.uidapi.com",
                "https://prod.uidapi.com/v2/identity/buckets",
            ),
            (
                "https://prod.uidapi.com/",
                "https://prod.uidapi.com/v2/identity/buckets",
            ),
            (
                "https://proxy.example/uid2/",
                "https://proxy.example/uid2/v2/identity/buckets",
            ),
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/v2/identity/buckets",
            ),
            ("http://[::1]:9", "http://[::1]:9/v2/identity/buckets"),
            (
                "http://localhost:9",
                "http://localhost:9/v2/identity/buckets",
            ),
        ] {
            assert_eq!(endpoint_url(base).unwrap().as_str(), endpoint);
        }
    }

    #[test]
    fn base_urls_that_would_leak_or_mislead_are_refused() {
        assert!(matches!(
            endpoint_url("http://prod.uidapi.com"),
            Err(ClientSetupError::PlainHttpNotLoopback { .. })
        ));
        assert!(matches!(
            endpoint_url("ftp://127.0.0.1"),
            Err(ClientSetupError::UnsupportedScheme { .. })
        ));
        for bad in ["not a url", "https://prod.uidapi.com/?x=1"] {
            assert!(
                matches!(
                    endpoint_url(bad),
                    Err(ClientSetupError::InvalidBaseUrl { .. })
                ),
                "{bad}"
            );
        }
        for with_credentials in [
            "https://user:pw@prod.uidapi.com",
            "http://user:pw@127.0.0.1:8080",
            "http://user@localhost",
        ] {
            assert!(
                matches!(
                    endpoint_url(with_credentials),
                    Err(ClientSetupError::CredentialsInUrl { .. })
                ),
                "{with_credentials}"
            );
        }
    }

    #[test]
    fn a_url_in_a_message_never_shows_credentials_or_a_query() {
        for (text, shown) in [
            (
                "https://user:pw@prod.uidapi.com/x",
                "https://prod.uidapi.com/x",
            ),
            ("http://us@er:p/w@127.0.0.1", "http://127.0.0.1"),
            ("user:pw@[::1", "[::1"),
            (
                "https://prod.uidapi.com/?token=abc#frag",
                "https://prod.uidapi.com/",
            ),
            (" https://prod.uidapi.com ", "https://prod.uidapi.com"),
        ] {
            assert_eq!(shown_url(text), shown, "{text}");
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
