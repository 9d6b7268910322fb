//! How a call to the operator can fail, one variant per outcome a caller
//! acts on. [`OperatorError::kind`] gives each a stable name for the sync
//! state record and metrics; [`OperatorError::is_transient`] decides retries.
//!
//! No variant holds the API key or the client secret, and the texts taken
//! from the wire (operator messages, transport details) cannot contain them:
//! the key only travels in a request header and the secret never leaves the
//! process.

use std::time::Duration;

use crate::envelope::EnvelopeError;
use crate::operator::response::ResponseError;

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
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

    #[error("operator answered with unexpected status {status}{}{}", status_hint(*status), detail_note(detail))]
    UnexpectedStatus { status: u16, detail: String },

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

    #[error("operator's response is invalid: {0}")]
    InvalidResponse(#[from] ResponseError),
}

impl OperatorError {
    /// A stable snake_case name, recorded in the sync state and used as a
    /// metrics label. Renaming one is a breaking change.
    pub fn kind(&self) -> &'static str {
        match self {
            OperatorError::BadRequest { .. } => "bad_request",
            OperatorError::Unauthorized => "unauthorized",
            OperatorError::RateLimited { .. } => "rate_limited",
            OperatorError::ServerError { .. } => "server_error",
            OperatorError::UnexpectedStatus { .. } => "unexpected_status",
            OperatorError::Timeout { .. } => "timeout",
            OperatorError::Connect { .. } => "connect",
            OperatorError::ConnectionReset { .. } => "connection_reset",
            OperatorError::TruncatedBody { .. } => "truncated_body",
            OperatorError::BodyTooLarge { .. } => "body_too_large",
            OperatorError::Envelope(_) => "envelope",
            OperatorError::InvalidResponse(_) => "invalid_response",
        }
    }

    /// Whether trying again later can succeed without anyone changing
    /// anything. A 400, a refused key, a wrong secret or a malformed answer
    /// would fail the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            OperatorError::RateLimited { .. }
            | OperatorError::ServerError { .. }
            | OperatorError::Timeout { .. }
            | OperatorError::Connect { .. }
            | OperatorError::ConnectionReset { .. }
            | OperatorError::TruncatedBody { .. } => true,
            OperatorError::BadRequest { .. }
            | OperatorError::Unauthorized
            | OperatorError::UnexpectedStatus { .. }
            | OperatorError::BodyTooLarge { .. }
            | OperatorError::Envelope(_)
            | OperatorError::InvalidResponse(_) => false,
        }
    }

    /// The wait the operator asked for with `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            OperatorError::RateLimited { retry_after }
            | OperatorError::ServerError { retry_after, .. } => *retry_after,
            _ => None,
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

fn status_hint(status: u16) -> &'static str {
    match status {
        404 => " (is the base URL right? the path is /v2/identity/buckets)",
        405 => " (the endpoint only accepts POST)",
        413 => " (request body too large)",
        _ => "",
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
    use crate::operator::response::RowProblem;

    #[test]
    fn kinds_and_transience_follow_what_a_caller_does_next() {
        let cases = [
            (
                OperatorError::BadRequest {
                    message: "x".into(),
                },
                "bad_request",
                false,
            ),
            (OperatorError::Unauthorized, "unauthorized", false),
            (
                OperatorError::RateLimited { retry_after: None },
                "rate_limited",
                true,
            ),
            (
                OperatorError::ServerError {
                    status: 503,
                    detail: String::new(),
                    retry_after: None,
                },
                "server_error",
                true,
            ),
            (
                OperatorError::UnexpectedStatus {
                    status: 413,
                    detail: String::new(),
                },
                "unexpected_status",
                false,
            ),
            (
                OperatorError::Timeout {
                    phase: TimeoutPhase::AwaitingResponse,
                    limit: Duration::from_secs(1),
                },
                "timeout",
                true,
            ),
            (
                OperatorError::Connect {
                    detail: "refused".into(),
                },
                "connect",
                true,
            ),
            (
                OperatorError::ConnectionReset {
                    detail: "closed".into(),
                },
                "connection_reset",
                true,
            ),
            (
                OperatorError::TruncatedBody {
                    received: 1,
                    expected: Some(2),
                },
                "truncated_body",
                true,
            ),
            (
                OperatorError::BodyTooLarge { limit: 10 },
                "body_too_large",
                false,
            ),
            (
                OperatorError::Envelope(EnvelopeError::TagMismatch),
                "envelope",
                false,
            ),
            (
                OperatorError::InvalidResponse(ResponseError::MissingBody),
                "invalid_response",
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
            OperatorError::BadRequest {
                message: "invalid date, must conform to ISO 8601".into()
            }
            .to_string(),
            "operator refused the request (400 Bad Request): invalid date, must conform to ISO 8601"
        );
        assert!(OperatorError::Unauthorized.to_string().contains("MAPPER"));
        assert_eq!(
            OperatorError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
            .to_string(),
            "operator is rate limiting requests (429 Too Many Requests); it asked to retry after 7 s"
        );
        assert_eq!(
            OperatorError::UnexpectedStatus {
                status: 413,
                detail: String::new()
            }
            .to_string(),
            "operator answered with unexpected status 413 (request body too large)"
        );
        assert!(
            OperatorError::Envelope(EnvelopeError::TagMismatch)
                .to_string()
                .contains("client secret is wrong")
        );
        assert_eq!(
            OperatorError::InvalidResponse(ResponseError::InvalidRow {
                index: 3,
                problem: RowProblem::EmptyBucketId
            })
            .to_string(),
            "operator's response is invalid: response row 3: \"bucket_id\" is empty"
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
