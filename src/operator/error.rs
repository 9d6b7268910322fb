//! How a call to the operator can fail, one variant per outcome a caller
//! acts on. [`TransportError`] is everything that can go wrong on the way,
//! whatever the endpoint; [`OperatorError`] adds the endpoint's own reasons
//! to refuse a decrypted answer. `kind` gives each a stable name for the
//! sync state record and metrics; `is_transient` decides retries.
//!
//! No variant holds the API key or the client secret, and the texts taken
//! from the wire (operator messages, transport details) cannot contain them:
//! the key only travels in a request header and the secret never leaves the
//! process.

use std::time::Duration;

use crate::envelope::EnvelopeError;

/// Longest operator error text kept in an error, in characters; a misrouted
/// request can come back with a whole HTML page.
pub(crate) const MAX_DETAIL_CHARS: usize = 300;

/// Where in the exchange a timeout struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connecting,
    AwaitingResponse,
    ReadingBody,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connecting => "while connecting",
            TimeoutPhase::AwaitingResponse => "while waiting for the response",
            TimeoutPhase::ReadingBody => "while reading the response body",
        })
    }
}

/// A failed exchange with any endpoint: refused, unreachable, cut short or
/// not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("operator refused the request (400 Bad Request): {message}")]
    BadRequest { message: String },

    #[error(
        "operator refused the API key (401 Unauthorized): the key is wrong, revoked, \
         for another environment, or lacks the MAPPER role"
    )]
    Unauthorized,

    #[error("operator is rate limiting requests (429 Too Many Requests){}", retry_after_note(*retry_after))]
    RateLimited { retry_after: Option<Duration> },

    #[error("operator failed with {status}{}{}", detail_note(detail), retry_after_note(*retry_after))]
    ServerError {
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },

    #[error("operator answered with unexpected status {status}{}{}", status_hint(*status, path), detail_note(detail))]
    UnexpectedStatus {
        status: u16,
        /// The endpoint's path, named when the status suggests a wrong URL.
        path: &'static str,
        detail: String,
    },

    #[error("request to the operator timed out {phase} (limit {limit:?})")]
    Timeout {
        phase: TimeoutPhase,
        limit: Duration,
    },

    #[error("cannot connect to the operator: {detail}")]
    Connect { detail: String },

    #[error("connection to the operator closed before a response arrived: {detail}")]
    ConnectionReset { detail: String },

    #[error(
        "response body ended early after {received} bytes{}",
        expected.map(|e| format!(" of {e}")).unwrap_or_default()
    )]
    TruncatedBody {
        received: u64,
        expected: Option<u64>,
    },

    #[error("response body exceeds the {limit}-byte limit")]
    BodyTooLarge { limit: u64 },

    #[error("cannot open the operator's response envelope: {0}")]
    Envelope(#[from] EnvelopeError),
}

impl TransportError {
    /// A stable snake_case name, recorded in the sync state and used as a
    /// metrics label. Renaming one is a breaking change.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            TransportError::BadRequest { .. } => "bad_request",
            TransportError::Unauthorized => "unauthorized",
            TransportError::RateLimited { .. } => "rate_limited",
            TransportError::ServerError { .. } => "server_error",
            TransportError::UnexpectedStatus { .. } => "unexpected_status",
            TransportError::Timeout { .. } => "timeout",
            TransportError::Connect { .. } => "connect",
            TransportError::ConnectionReset { .. } => "connection_reset",
            TransportError::TruncatedBody { .. } => "truncated_body",
            TransportError::BodyTooLarge { .. } => "body_too_large",
            TransportError::Envelope(_) => "envelope",
        }
    }

    /// Whether trying again later can succeed without anyone changing
    /// anything. A 400, a refused key or a wrong secret would fail the same
    /// way again.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            TransportError::RateLimited { .. }
            | TransportError::ServerError { .. }
            | TransportError::Timeout { .. }
            | TransportError::Connect { .. }
            | TransportError::ConnectionReset { .. }
            | TransportError::TruncatedBody { .. } => true,
            TransportError::BadRequest { .. }
            | TransportError::Unauthorized
            | TransportError::UnexpectedStatus { .. }
            | TransportError::BodyTooLarge { .. }
            | TransportError::Envelope(_) => false,
        }
    }

    /// The wait the operator asked for with `Retry-After`, if any.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            TransportError::RateLimited { retry_after }
            | TransportError::ServerError { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A failed call to an endpoint whose answer problems are `P`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError<P> {
    #[error(transparent)]
    Transport(#[from] TransportError),

    #[error("operator's response is invalid: {0}")]
    InvalidResponse(#[source] P),
}

impl<P> OperatorError<P> {
    /// A stable snake_case name: the transport's, or `invalid_response`.
    pub fn kind(&self) -> &'static str {
        match self {
            OperatorError::Transport(error) => error.kind(),
            OperatorError::InvalidResponse(_) => "invalid_response",
        }
    }

    /// Whether trying again later can succeed; a malformed answer would be
    /// malformed again.
    pub fn is_transient(&self) -> bool {
        match self {
            OperatorError::Transport(error) => error.is_transient(),
            OperatorError::InvalidResponse(_) => false,
        }
    }

    /// The wait the operator asked for with `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            OperatorError::Transport(error) => error.retry_after(),
            OperatorError::InvalidResponse(_) => None,
        }
    }
}

fn retry_after_note(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|wait| format!("; it asked to retry after {} s", wait.as_secs()))
        .unwrap_or_default()
}

fn detail_note(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

fn status_hint(status: u16, path: &str) -> String {
    match status {
        404 => format!(" (is the base URL right? the path is {path})"),
        405 => " (the endpoint only accepts POST)".to_owned(),
        413 => " (request body too large)".to_owned(),
        _ => String::new(),
    }
}

/// Shortens operator-supplied text for an error message, on a character
/// boundary.
pub(crate) fn clip_detail(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_transience_follow_what_a_caller_does_next() {
        let cases = [
            (
                TransportError::BadRequest {
                    message: "x".into(),
                },
                "bad_request",
                false,
            ),
            (TransportError::Unauthorized, "unauthorized", false),
            (
                TransportError::RateLimited { retry_after: None },
                "rate_limited",
                true,
            ),
            (
                TransportError::ServerError {
                    status: 503,
                    detail: String::new(),
                    retry_after: None,
                },
                "server_error",
                true,
            ),
            (
                TransportError::UnexpectedStatus {
                    status: 413,
                    path: "/v9/x",
                    detail: String::new(),
                },
                "unexpected_status",
                false,
            ),
            (
                TransportError::Timeout {
                    phase: TimeoutPhase::AwaitingResponse,
                    limit: Duration::from_secs(1),
                },
                "timeout",
                true,
            ),
            (
                TransportError::Connect {
                    detail: "refused".into(),
                },
                "connect",
                true,
            ),
            (
                TransportError::ConnectionReset {
                    detail: "closed".into(),
                },
                "connection_reset",
                true,
            ),
            (
                TransportError::TruncatedBody {
                    received: 1,
                    expected: Some(2),
                },
                "truncated_body",
                true,
            ),
            (
                TransportError::BodyTooLarge { limit: 10 },
                "body_too_large",
                false,
            ),
            (
                TransportError::Envelope(EnvelopeError::TagMismatch),
                "envelope",
                false,
            ),
        ];
        for (error, kind, transient) in cases {
            assert_eq!(error.kind(), kind, "{error}");
            assert_eq!(error.is_transient(), transient, "{error}");
        }
    }

    #[test]
    fn messages_say_which_failure_it_was() {
        assert_eq!(
            TransportError::BadRequest {
                message: "invalid date, must conform to ISO 8601".into()
            }
            .to_string(),
            "operator refused the request (400 Bad Request): invalid date, must conform to ISO 8601"
        );
        assert!(TransportError::Unauthorized.to_string().contains("MAPPER"));
        assert_eq!(
            TransportError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
            .to_string(),
            "operator is rate limiting requests (429 Too Many Requests); it asked to retry after 7 s"
        );
        assert_eq!(
            TransportError::UnexpectedStatus {
                status: 413,
                path: "/v9/x",
                detail: String::new()
            }
            .to_string(),
            "operator answered with unexpected status 413 (request body too large)"
        );
        assert_eq!(
            TransportError::UnexpectedStatus {
                status: 404,
                path: "/v9/x",
                detail: "Not Found".into()
            }
            .to_string(),
            "operator answered with unexpected status 404 (is the base URL right? the path is \
             /v9/x): Not Found"
        );
        assert!(
            TransportError::Envelope(EnvelopeError::TagMismatch)
                .to_string()
                .contains("client secret is wrong")
        );
    }

    #[test]
    fn an_endpoint_error_is_the_transports_or_an_invalid_answer_never_retried() {
        let transport = TransportError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        };
        let failed = OperatorError::<std::fmt::Error>::from(transport.clone());
        assert_eq!(failed.kind(), "rate_limited");
        assert!(failed.is_transient());
        assert_eq!(failed.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(failed.to_string(), transport.to_string());

        let invalid = OperatorError::InvalidResponse(std::fmt::Error);
        assert_eq!(invalid.kind(), "invalid_response");
        assert!(!invalid.is_transient());
        assert_eq!(invalid.retry_after(), None);
        assert_eq!(
            invalid.to_string(),
            format!("operator's response is invalid: {}", std::fmt::Error)
        );
    }

    #[test]
    fn long_details_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(MAX_DETAIL_CHARS + 10);
        let clipped = clip_detail(&long);
        assert_eq!(clipped.chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(clipped.ends_with('…'));
        assert_eq!(clip_detail("  short \n"), "short");
    }
}
