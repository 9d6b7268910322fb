//! The HTTP side of the simulated operator: routing, the operator's request
//! checks in the operator's order, encrypted answers and injected faults.
//!
//! Order of checks, as the operator's router applies them: route (404/405),
//! body size (413), bearer token (401), envelope (400 `Invalid body: …`),
//! request time (400 `Invalid timestamp: …`), payload JSON (400 `Invalid
//! payload in body: …`), then the endpoint's own checks: `since_timestamp`
//! here, the identity arrays in `identity_map.rs`.
//!
//! Three fixed POST routes share every step but the last, so routing is one
//! `match` on the path (see [`Endpoint`]); a router crate would add nothing,
//! and this dispatcher must be able to close a connection unanswered, which
//! an infallible router service cannot.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::RngCore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::identity_map::{self, Endpoint, MapCounts, MapRequest, Refused};
use super::{Fault, ReceivedRequest, Shared, lock};
use crate::envelope::{
    self, EnvelopeError, IV_LEN, Iv, MIN_REQUEST_LEN, Nonce, OpenedRequest, REQUEST_VERSION,
};
use crate::timestamp::{parse_iso_local, to_millis};

/// Larger request bodies are refused with 413, as the operator's body handler does.
pub(crate) const MAX_BODY_BYTES: usize = 1 << 20;
/// Request times further than this from the server clock, either way, are refused.
pub(crate) const MAX_CLOCK_DRIFT: Duration = Duration::from_secs(60);

const OCTET_STREAM: &str = "application/octet-stream";
const TEXT_PLAIN: &str = "text/plain";
const APPLICATION_JSON: &str = "application/json";
/// Appended to envelope errors by current operators (UID2 scope).
const ENVELOPE_DOCS_HINT: &str = " See https://unifiedid.com/docs/getting-started/gs-encryption-decryption for details on the request envelope format.";
const UNENCRYPTED_JSON: &str = "Invalid body: The request body is unencrypted JSON. It must be an encrypted request envelope. See https://unifiedid.com/docs/getting-started/gs-encryption-decryption#encryption-and-decryption-code-examples for encryption and decryption code examples.";
const BODY_MISSING: &str = "Invalid body: Body is missing.";
const CLOCK_DRIFT: &str = "Invalid timestamp: Request too old or client time drift.";
const PAYLOAD_NOT_JSON: &str = "Invalid payload in body: Data is not valid json string.";
const MISSING_SINCE: &str = "missing parameter since_timestamp";
const INVALID_SINCE: &str = "invalid date, must conform to ISO 8601";
const UNAUTHORIZED_JSON: &str = r#"{"status":"unauthorized"}"#;
const BAD_JSON_PAYLOAD: &[u8] = b"{\"body\":[{\"bucket_id\":";
const CLIENT_ERROR_PAYLOAD: &[u8] =
    br#"{"status":"client_error","message":"simulated client error"}"#;
/// Envelope bytes per base64 frame: a multiple of 3, so frames concatenate
/// into one valid base64 text (1 MiB of it each).
const BASE64_CHUNK: usize = 3 * 256 * 1024;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Java's basic decoder, which the operator uses: standard alphabet, no
/// whitespace, padding optional.
const OPERATOR_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Accepts connections until `stop`, then lets open ones finish briefly.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, Arc::clone(&shared), stop.clone()));
                }
                Err(error) => {
                    // Typically out of file descriptors: pause instead of spinning.
                    tracing::warn!(%error, "simulated operator cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = connections.len(),
            "closing connections still open at shutdown"
        );
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let cut = ResponseCut::default();
    let io = TokioIo::new(CuttableStream {
        inner: stream,
        cut: cut.clone(),
    });
    let service_stop = stop.clone();
    let service = service_fn(move |request| {
        handle(
            Arc::clone(&shared),
            cut.clone(),
            service_stop.clone(),
            request,
        )
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(io, service);
    tokio::pin!(connection);
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(%peer, %error, "simulated operator connection ended");
    }
}

/// Returned by the service to make hyper close the connection unanswered.
#[derive(Debug, thiserror::Error)]
#[error("connection closed without an answer")]
struct CloseUnanswered;

/// What a well-formed, authorised request asks for.
struct Query {
    work: Work,
    nonce: Nonce,
    reply_binary: bool,
}

enum Work {
    Buckets { since_ms: i64 },
    Map(MapRequest),
}

async fn handle(
    shared: Arc<Shared>,
    cut: ResponseCut,
    stop: CancellationToken,
    request: Request<Incoming>,
) -> Result<Response<ReplyBody>, CloseUnanswered> {
    let fault = shared.next_fault();
    if let Some(Fault::Delay(pause)) = &fault {
        tokio::select! {
            _ = tokio::time::sleep(*pause) => {}
            _ = stop.cancelled() => {}
        }
    }

    let (parts, body) = request.into_parts();
    let endpoint = Endpoint::from_path(parts.uri.path());
    let mut record = ReceivedRequest {
        endpoint,
        timestamp_ms: None,
        nonce: None,
        since_timestamp: None,
        map_counts: None,
        binary: is_octet_stream(&parts.headers),
        status: 0,
        fault: fault.clone(),
    };
    let body = match read_body(&parts.headers, body).await {
        Ok(body) => Some(body),
        Err(BodyError::TooLarge) => None,
        Err(BodyError::Unreadable(error)) => {
            tracing::debug!(%error, "request body could not be read");
            shared.record(record);
            return Err(CloseUnanswered);
        }
    };

    let outcome = match (endpoint, body) {
        (None, _) => Err(Refusal::NotFound),
        (Some(_), _) if parts.method != Method::POST => Err(Refusal::MethodNotAllowed),
        (Some(endpoint), Some(body)) => {
            evaluate(&shared, endpoint, &parts.headers, &body, &mut record)
        }
        (Some(_), None) => Err(Refusal::TooLarge),
    };

    let response = match &fault {
        Some(Fault::Status { code, retry_after }) => status_fault(*code, *retry_after),
        Some(Fault::DropConnection) => {
            tracing::debug!(fault = ?record.fault, "closing the connection unanswered");
            shared.record(record);
            return Err(CloseUnanswered);
        }
        _ => match outcome {
            Err(refusal) => refusal.into_response(),
            Ok(query) => {
                let shaping = fault.filter(Fault::shapes_success);
                answer(Arc::clone(&shared), &cut, query, shaping).await
            }
        },
    };
    record.status = response.status().as_u16();
    tracing::debug!(
        path = endpoint.map_or("-", Endpoint::path),
        status = record.status,
        since_timestamp = record.since_timestamp.as_deref().unwrap_or("-"),
        identities = record.map_counts.as_ref().map_or(0, MapCounts::total),
        binary = record.binary,
        fault = ?record.fault,
        "simulated operator request"
    );
    shared.record(record);
    Ok(response)
}

enum BodyError {
    TooLarge,
    Unreadable(Box<dyn std::error::Error + Send + Sync>),
}

async fn read_body(headers: &HeaderMap, body: Incoming) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(error) => Err(BodyError::Unreadable(error)),
    }
}

/// Why a request is not answered with buckets, in the operator's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    NotFound,
    MethodNotAllowed,
    TooLarge,
    Unauthorized,
    /// 400 `client_error` with the operator's message.
    ClientError(String),
    /// The operator's unhandled-exception answer.
    ServerError,
}

impl Refusal {
    fn into_response(self) -> Response<ReplyBody> {
        match self {
            Refusal::NotFound => plain(StatusCode::NOT_FOUND),
            Refusal::MethodNotAllowed => {
                let mut response = plain(StatusCode::METHOD_NOT_ALLOWED);
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                response
            }
            Refusal::TooLarge => plain(StatusCode::PAYLOAD_TOO_LARGE),
            Refusal::Unauthorized => json(StatusCode::UNAUTHORIZED, UNAUTHORIZED_JSON.to_owned()),
            Refusal::ClientError(message) => {
                let body = serde_json::json!({ "status": "client_error", "message": message });
                json(StatusCode::BAD_REQUEST, body.to_string())
            }
            Refusal::ServerError => plain(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl From<Refused> for Refusal {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::ClientError(message) => Refusal::ClientError(message),
            Refused::Unhandled => Refusal::ServerError,
        }
    }
}

/// Authentication, envelope and payload checks. Fills in what the request
/// revealed as it goes, so the log shows it even when a check fails.
fn evaluate(
    shared: &Shared,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &[u8],
    record: &mut ReceivedRequest,
) -> Result<Query, Refusal> {
    if !is_authorized(shared, headers) {
        return Err(Refusal::Unauthorized);
    }
    let (opened, reply_binary) =
        open_envelope(&shared.client_secret, body, record.binary).map_err(Refusal::ClientError)?;
    record.timestamp_ms = Some(opened.timestamp_ms);
    record.nonce = Some(opened.nonce);

    let drift_ms = to_millis(Utc::now()).abs_diff(opened.timestamp_ms);
    if drift_ms > MAX_CLOCK_DRIFT.as_millis() as u64 {
        return Err(Refusal::ClientError(CLOCK_DRIFT.to_owned()));
    }

    // An empty payload reaches the endpoint as no request object at all.
    let payload = if opened.payload.is_empty() {
        None
    } else {
        match serde_json::from_str::<serde_json::Value>(&opened.payload) {
            Ok(serde_json::Value::Object(object)) => Some(object),
            _ => return Err(Refusal::ClientError(PAYLOAD_NOT_JSON.to_owned())),
        }
    };
    let work = match endpoint {
        Endpoint::Buckets => {
            // The buckets handler does not expect that and fails.
            let payload = payload.ok_or(Refusal::ServerError)?;
            Work::Buckets {
                since_ms: since_ms(&payload, record)?,
            }
        }
        Endpoint::MapV2 | Endpoint::MapV3 => {
            record.map_counts = payload.as_ref().map(MapCounts::of);
            let parsed = if endpoint == Endpoint::MapV2 {
                identity_map::parse_v2(payload.as_ref())
            } else {
                identity_map::parse_v3(payload.as_ref())
            };
            let request = parsed.map_err(Refusal::from)?;
            if shared.catalog().len() == 0 {
                // No salts, no mapping: the operator's lookup fails.
                return Err(Refusal::ServerError);
            }
            Work::Map(request)
        }
    };
    Ok(Query {
        work,
        nonce: opened.nonce,
        reply_binary,
    })
}

/// The buckets endpoint's `since_timestamp`, in milliseconds.
fn since_ms(
    payload: &serde_json::Map<String, serde_json::Value>,
    record: &mut ReceivedRequest,
) -> Result<i64, Refusal> {
    let since_text = match payload.get("since_timestamp") {
        None | Some(serde_json::Value::Null) => {
            return Err(Refusal::ClientError(MISSING_SINCE.to_owned()));
        }
        Some(serde_json::Value::String(text)) => text.clone(),
        // The operator reads the field with a lenient getter that turns
        // any other value into its text.
        Some(other) => other.to_string(),
    };
    record.since_timestamp = Some(since_text.clone());
    let since =
        parse_iso_local(&since_text).map_err(|_| Refusal::ClientError(INVALID_SINCE.to_owned()))?;
    Ok(to_millis(since))
}

fn is_authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let value = value.trim();
    match (value.get(..7), value.get(7..)) {
        (Some(scheme), Some(token)) if scheme.eq_ignore_ascii_case("bearer ") => {
            shared.api_key.matches(token)
        }
        _ => false,
    }
}

fn is_octet_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case(OCTET_STREAM))
}

/// Opens the request envelope as the operator does, returning the request
/// and whether to answer in binary. A binary body that does not open is
/// retried as base64 text (answered as text), as the operator does.
fn open_envelope(
    secret: &crate::credentials::ClientSecret,
    body: &[u8],
    binary: bool,
) -> Result<(OpenedRequest, bool), String> {
    if binary {
        let binary_error = match open_bytes(secret, body) {
            Ok(opened) => return Ok((opened, true)),
            Err(message) => message,
        };
        return match OPERATOR_BASE64.decode(body) {
            Ok(decoded) => open_bytes(secret, &decoded).map(|opened| (opened, false)),
            Err(_) => Err(binary_error),
        };
    }
    match OPERATOR_BASE64.decode(body) {
        Ok(decoded) => open_bytes(secret, &decoded).map(|opened| (opened, false)),
        Err(_) if is_json_object(body) => Err(UNENCRYPTED_JSON.to_owned()),
        Err(_) => Err(format!(
            "Invalid body: Body is not valid base64.{ENVELOPE_DOCS_HINT}"
        )),
    }
}

fn open_bytes(
    secret: &crate::credentials::ClientSecret,
    envelope: &[u8],
) -> Result<OpenedRequest, String> {
    if envelope.is_empty() {
        return Err(BODY_MISSING.to_owned());
    }
    if envelope.len() < MIN_REQUEST_LEN {
        return Err(if is_json_object(envelope) {
            UNENCRYPTED_JSON.to_owned()
        } else {
            format!("Invalid body: Body too short. Check encryption method.{ENVELOPE_DOCS_HINT}")
        });
    }
    if envelope[0] != REQUEST_VERSION {
        return Err(if is_json_object(envelope) {
            UNENCRYPTED_JSON.to_owned()
        } else {
            format!(
                "Invalid body: Invalid request envelope format version: received {}, must be {REQUEST_VERSION}.{ENVELOPE_DOCS_HINT}",
                envelope[0]
            )
        });
    }
    envelope::open_request(secret, envelope).map_err(|error| match error {
        EnvelopeError::PayloadNotUtf8 | EnvelopeError::PayloadNotJson(_) => {
            PAYLOAD_NOT_JSON.to_owned()
        }
        _ => format!("Invalid body: Check encryption key (ClientSecret).{ENVELOPE_DOCS_HINT}"),
    })
}

fn is_json_object(bytes: &[u8]) -> bool {
    matches!(
        serde_json::from_str::<serde_json::Value>(&String::from_utf8_lossy(bytes)),
        Ok(serde_json::Value::Object(_))
    )
}

/// The encrypted 200 answer, shaped by a success fault if one applies.
async fn answer(
    shared: Arc<Shared>,
    cut: &ResponseCut,
    query: Query,
    fault: Option<Fault>,
) -> Response<ReplyBody> {
    let reply_binary = query.reply_binary;
    let truncate = fault == Some(Fault::TruncatedBody);
    // Encrypting up to ~68 MiB is CPU work; keep it off the async workers.
    let sealed = tokio::task::spawn_blocking(move || seal_answer(&shared, &query, fault.as_ref()));
    let envelope = match sealed.await {
        Ok(envelope) => Bytes::from(envelope),
        Err(error) => {
            tracing::warn!(%error, "sealing the answer failed");
            return plain(StatusCode::INTERNAL_SERVER_ERROR);
        }
    };
    let (content_type, body) = if reply_binary {
        (OCTET_STREAM, ReplyBody::whole(envelope))
    } else {
        (TEXT_PLAIN, ReplyBody::base64(envelope))
    };
    if truncate {
        cut.arm(body.len() / 2);
    }
    with_content_type(StatusCode::OK, content_type, body)
}

fn seal_answer(shared: &Shared, query: &Query, fault: Option<&Fault>) -> Vec<u8> {
    let mut iv: Iv = [0; IV_LEN];
    rand::rng().fill_bytes(&mut iv);
    let nonce = match fault {
        Some(Fault::WrongNonce) => query.nonce.map(|byte| !byte),
        _ => query.nonce,
    };
    let seal = |json: &[u8]| {
        envelope::seal_response(
            &shared.client_secret,
            &iv,
            to_millis(Utc::now()),
            &nonce,
            json,
        )
    };
    let mut sealed = match (fault, &query.work) {
        (Some(Fault::BadJson), _) => seal(BAD_JSON_PAYLOAD),
        (Some(Fault::ClientErrorStatus), _) => seal(CLIENT_ERROR_PAYLOAD),
        (_, Work::Map(request)) => seal(&map_answer(shared, request, fault)),
        (Some(Fault::UnparsableLastUpdated), Work::Buckets { since_ms }) => {
            let json = shared.catalog().json_since_with_unparsable_row(*since_ms);
            seal(&json)
        }
        (_, Work::Buckets { since_ms }) => {
            // Sealing under the read lock encrypts the stored answer with
            // one copy; rotations wait for it.
            let catalog = shared.catalog();
            seal(&catalog.json_since(*since_ms))
        }
    };
    if fault == Some(&Fault::CorruptTag)
        && let Some(last) = sealed.last_mut()
    {
        // The tag is the envelope's last 16 bytes.
        *last ^= 0x01;
    }
    sealed
}

/// One consistent view: no rotation lands halfway through an answer.
fn map_answer(shared: &Shared, request: &MapRequest, fault: Option<&Fault>) -> Vec<u8> {
    let catalog = shared.catalog();
    let opt_outs = shared.opt_outs();
    let now_ms = to_millis(Utc::now());
    identity_map::answer(
        request,
        |identity| {
            catalog
                .map(identity, now_ms)
                .expect("the table was checked to have buckets, and never shrinks")
        },
        |identity| opt_outs.contains(identity),
        fault,
    )
}

fn status_fault(code: u16, retry_after: Option<Duration>) -> Response<ReplyBody> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = if status == StatusCode::TOO_MANY_REQUESTS {
        let mut response = Response::new(ReplyBody::empty());
        *response.status_mut() = status;
        response
    } else {
        plain(status)
    };
    if let Some(wait) = retry_after {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn json(status: StatusCode, body: String) -> Response<ReplyBody> {
    with_content_type(
        status,
        APPLICATION_JSON,
        ReplyBody::whole(Bytes::from(body)),
    )
}

fn plain(status: StatusCode) -> Response<ReplyBody> {
    let text = status.canonical_reason().unwrap_or("Simulated failure");
    with_content_type(status, TEXT_PLAIN, ReplyBody::whole(Bytes::from(text)))
}

fn with_content_type(
    status: StatusCode,
    content_type: &'static str,
    body: ReplyBody,
) -> Response<ReplyBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A response body: bytes sent as they are, or an envelope streamed as
/// base64 so the ~91 MiB text of a full answer never exists at once.
pub(super) enum ReplyBody {
    Whole(Option<Bytes>),
    Base64 { envelope: Bytes, offset: usize },
}

impl ReplyBody {
    fn empty() -> Self {
        Self::Whole(None)
    }

    fn whole(bytes: Bytes) -> Self {
        Self::Whole(Some(bytes))
    }

    fn base64(envelope: Bytes) -> Self {
        Self::Base64 {
            envelope,
            offset: 0,
        }
    }

    /// Bytes still to send.
    fn len(&self) -> usize {
        match self {
            Self::Whole(bytes) => bytes.as_ref().map_or(0, Bytes::len),
            Self::Base64 { envelope, offset } => {
                base64_len(envelope.len()) - base64_len((*offset).min(envelope.len()))
            }
        }
    }
}

fn base64_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            Self::Whole(bytes) => bytes.take().map(Frame::data),
            Self::Base64 { envelope, offset } => {
                if *offset >= envelope.len() {
                    None
                } else {
                    let end = (*offset + BASE64_CHUNK).min(envelope.len());
                    let text = envelope::encode_base64(&envelope[*offset..end]);
                    *offset = end;
                    Some(Frame::data(Bytes::from(text)))
                }
            }
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len() as u64)
    }
}

/// Lets a handler cut its response short on the wire: once armed, the
/// connection passes the response head and `body_bytes` of the body, then
/// fails every further write, so hyper drops the connection mid-body.
#[derive(Clone, Default)]
struct ResponseCut(Arc<Mutex<CutState>>);

#[derive(Clone, Copy, Default)]
enum CutState {
    #[default]
    Off,
    /// `matched` bytes of the head's closing `\r\n\r\n` seen so far.
    Head {
        matched: usize,
        body_bytes: usize,
    },
    Body {
        remaining: usize,
    },
    Cut,
}

const HEAD_END: &[u8] = b"\r\n\r\n";

impl CutState {
    /// Consumes `bytes` as written; returns how many could be.
    fn advance(&mut self, bytes: &[u8]) -> usize {
        let mut passed = 0;
        while passed < bytes.len() {
            match self {
                CutState::Off => return bytes.len(),
                CutState::Cut => break,
                CutState::Body { remaining } => {
                    let take = (*remaining).min(bytes.len() - passed);
                    passed += take;
                    *remaining -= take;
                    if *remaining == 0 {
                        *self = CutState::Cut;
                    }
                }
                CutState::Head {
                    matched,
                    body_bytes,
                } => {
                    let byte = bytes[passed];
                    passed += 1;
                    *matched = if byte == HEAD_END[*matched] {
                        *matched + 1
                    } else {
                        usize::from(byte == b'\r')
                    };
                    if *matched == HEAD_END.len() {
                        *self = if *body_bytes == 0 {
                            CutState::Cut
                        } else {
                            CutState::Body {
                                remaining: *body_bytes,
                            }
                        };
                    }
                }
            }
        }
        passed
    }
}

impl ResponseCut {
    fn arm(&self, body_bytes: usize) {
        *lock(&self.0) = CutState::Head {
            matched: 0,
            body_bytes,
        };
    }

    fn state(&self) -> CutState {
        *lock(&self.0)
    }
}

struct CuttableStream {
    inner: TcpStream,
    cut: ResponseCut,
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let state = this.cut.state();
        let allowed = match state {
            CutState::Off => return Pin::new(&mut this.inner).poll_write(cx, buf),
            CutState::Cut => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "response cut short by a simulated fault",
                )));
            }
            _ => {
                let mut probe = state;
                probe.advance(buf)
            }
        };
        let written = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..allowed]))?;
        lock(&this.cut.0).advance(&buf[..written]);
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if matches!(self.cut.state(), CutState::Off) {
            return Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs);
        }
        let first = bufs
            .iter()
            .find(|buf| !buf.is_empty())
            .map_or(&[][..], |buf| &**buf);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_passes_the_head_and_the_allowed_body_bytes_only() {
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789";
        let head = response.len() - 10;
        let mut state = CutState::Head {
            matched: 0,
            body_bytes: 4,
        };
        // Written in awkward pieces, splitting the head's end marker.
        assert_eq!(state.advance(&response[..head - 2]), head - 2);
        assert_eq!(state.advance(&response[head - 2..head + 1]), 3);
        assert_eq!(state.advance(&response[head + 1..]), 3);
        assert!(matches!(state, CutState::Cut));
        assert_eq!(state.advance(b"more"), 0);
    }

    #[test]
    fn base64_frames_concatenate_into_the_envelope_text() {
        let envelope: Vec<u8> = (0..BASE64_CHUNK * 2 + 5).map(|i| i as u8).collect();
        let expected = envelope::encode_base64(&envelope);
        let mut body = ReplyBody::base64(Bytes::from(envelope));
        assert_eq!(body.len(), expected.len());
        let mut text = Vec::new();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            text.extend_from_slice(&frame.into_data().unwrap_or_default());
            assert_eq!(body.len(), expected.len() - text.len());
        }
        assert_eq!(text, expected.as_bytes());
        assert!(body.is_end_stream());
    }

    #[test]
    fn the_operator_base64_dialect_is_strict_about_whitespace_but_not_padding() {
        assert_eq!(OPERATOR_BASE64.decode("AQID").unwrap(), vec![1, 2, 3]);
        assert_eq!(OPERATOR_BASE64.decode("AQI").unwrap(), vec![1, 2]);
        assert_eq!(OPERATOR_BASE64.decode("AQI=").unwrap(), vec![1, 2]);
        assert!(OPERATOR_BASE64.decode("AQID\n").is_err());
        assert!(OPERATOR_BASE64.decode("AQ ID").is_err());
    }
}
