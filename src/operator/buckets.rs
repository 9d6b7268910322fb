//! `POST /v2/identity/buckets`: every salt bucket whose `last_updated` is at
//! or after `since_timestamp`, in one answer (no pagination).
//!
//! This module is all the transport needs to know about the endpoint: its
//! path, its request JSON and its answer parser ([`answer`]). A call fails
//! with a [`BucketsError`]: the transport's outcome, or a [`ResponseError`]
//! saying what is wrong with the answer's rows.

mod answer;

use chrono::{DateTime, Utc};

pub use answer::{ResponseError, RowProblem, parse_buckets_json};

use crate::credentials::ClientSecret;
use crate::envelope::Nonce;
use crate::operator::body::{BodyEncoding, open_body};
use crate::operator::error::{OperatorError, TransportError};
use crate::operator::transport::{Endpoint, OperatorClient, Reply};
use crate::rotation::Rotations;
use crate::timestamp::{format_operator, from_millis};

/// The endpoint, relative to the base URL.
pub const BUCKETS_PATH: &str = "/v2/identity/buckets";

/// A buckets request: every rotation with `last_updated >= since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BucketsSince(pub(crate) DateTime<Utc>);

impl Endpoint for BucketsSince {
    const PATH: &'static str = BUCKETS_PATH;
    type Answer = Rotations;
    type Problem = ResponseError;

    fn request_json(&self) -> Vec<u8> {
        serde_json::json!({ "since_timestamp": format_operator(self.0) })
            .to_string()
            .into_bytes()
    }

    fn parse_answer(&self, json: &str) -> Result<Self::Answer, Self::Problem> {
        parse_buckets_json(json)
    }
}

/// How a buckets call can fail.
pub type BucketsError = OperatorError<ResponseError>;

/// A successful buckets call: every row of the answer, validated, in the
/// operator's order.
pub(crate) type BucketsResponse = Reply<Rotations>;

impl OperatorClient {
    /// Fetches every rotation with `last_updated >= since`, retrying
    /// transient failures according to the retry policy.
    pub async fn fetch_rotations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<BucketsResponse, BucketsError> {
        self.call(&BucketsSince(since)).await
    }
}

/// A successful answer, decrypted and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedBuckets {
    pub rotations: Rotations,
    /// The operator's clock when it answered, from the envelope.
    pub(crate) server_time: DateTime<Utc>,
}

/// Turns a complete 200 body into rotations through the same two steps a
/// call takes once the body is read; the `open_response` bench measures it.
pub fn open_buckets_body(
    secret: &ClientSecret,
    body: Vec<u8>,
    encoding: BodyEncoding,
    expected_nonce: &Nonce,
) -> Result<OpenedBuckets, BucketsError> {
    let opened = open_body(secret, body, encoding, expected_nonce).map_err(TransportError::from)?;
    let rotations = parse_buckets_json(opened.payload()).map_err(OperatorError::InvalidResponse)?;
    Ok(OpenedBuckets {
        rotations,
        server_time: from_millis(opened.server_time_ms()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{EnvelopeError, encode_base64, seal_response};
    use crate::operator::transport::tests::offline_client;

    #[test]
    fn the_request_is_since_timestamp_as_iso_local_milliseconds() {
        let since = DateTime::parse_from_rfc3339("2022-06-01T13:00:00.1234Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            BucketsSince(since).request_json(),
            br#"{"since_timestamp":"2022-06-01T13:00:00.123"}"#
        );
    }

    #[test]
    fn the_endpoint_is_the_base_plus_the_buckets_path() {
        for (base, endpoint) in [
            (
                "https://prod.uidapi.com",
                "https://prod.uidapi.com/v2/identity/buckets",
            ),
            (
                "https://proxy.example/uid2/",
                "https://proxy.example/uid2/v2/identity/buckets",
            ),
        ] {
            assert_eq!(
                offline_client(base).url(BucketsSince::PATH).as_str(),
                endpoint
            );
        }
    }

    #[test]
    fn a_404_names_the_buckets_path() {
        let error = BucketsError::from(TransportError::UnexpectedStatus {
            status: 404,
            path: BucketsSince::PATH,
            detail: "Not Found".into(),
        });
        assert_eq!(error.kind(), "unexpected_status");
        assert_eq!(
            error.to_string(),
            "operator answered with unexpected status 404 (is the base URL right? the path is \
             /v2/identity/buckets): Not Found"
        );
    }

    #[test]
    fn an_invalid_row_is_an_invalid_response_that_names_the_row() {
        let error = BucketsError::InvalidResponse(ResponseError::InvalidRow {
            index: 3,
            problem: RowProblem::EmptyBucketId,
        });
        assert_eq!(error.kind(), "invalid_response");
        assert!(!error.is_transient());
        assert_eq!(
            error.to_string(),
            "operator's response is invalid: response row 3: \"bucket_id\" is empty"
        );
    }

    #[test]
    fn a_sealed_answer_opens_into_rotations_in_both_encodings() {
        let secret = ClientSecret::from_bytes([3; 32]);
        let nonce = [9; 8];
        let json = br#"{"status":"success","body":[{"bucket_id":"b","last_updated":"2025-03-01T00:00:00.000"}]}"#;
        let envelope = seal_response(&secret, &[1; 12], 1_740_787_200_123, &nonce, json);
        for (body, encoding) in [
            (envelope.clone(), BodyEncoding::Binary),
            (encode_base64(&envelope).into_bytes(), BodyEncoding::Base64),
        ] {
            let opened = open_buckets_body(&secret, body, encoding, &nonce).unwrap();
            assert_eq!(opened.rotations.len(), 1);
            assert_eq!(opened.rotations.iter().next().unwrap().0, "b");
            assert_eq!(opened.server_time, from_millis(1_740_787_200_123));
        }
        assert_eq!(
            open_buckets_body(&secret, envelope, BodyEncoding::Binary, &[0; 8]).unwrap_err(),
            BucketsError::Transport(TransportError::Envelope(EnvelopeError::NonceMismatch))
        );
    }
}
