//! Mapping a list of identities of any length: [`map_v3`] and [`map_v2`]
//! split it into requests the operator accepts, run a bounded number at
//! once, and return one result per identity in the caller's order.
//!
//! A request holds at most the configured batch size (the docs ask for at
//! most 5,000) and stays under the operator's 1 MiB body limit on the wire;
//! v2 requests also hold one identity type each. The size is computed from
//! the request's shape, not measured: every hash is 44 base64 characters,
//! so a request's size is a linear function of its length, and the
//! functions that write the JSON live here next to that function so the two
//! cannot drift apart.

use futures_util::{StreamExt, TryStreamExt, stream};

use crate::envelope::{IV_LEN, NONCE_LEN, TAG_LEN, TIMESTAMP_LEN};
use crate::identity::{IdentityHash, IdentityType};
use crate::operator::error::OperatorError;
use crate::operator::map_answer::MapAnswerError;
use crate::operator::map_v2::{MapV2Request, V2Result};
use crate::operator::map_v3::{MapV3Request, V3Result};
use crate::operator::transport::{Endpoint, OperatorClient};

/// The most identities per request the operator's docs allow.
pub(crate) const MAX_BATCH_SIZE: usize = 5_000;
/// The most requests in flight the operator's docs allow.
pub(crate) const MAX_CONCURRENCY: usize = 20;
/// The operator refuses request bodies above this (413).
pub(crate) const MAX_REQUEST_BODY_BYTES: usize = 1 << 20;

/// JSON bytes per hash: 44 base64 characters, two quotes, a comma.
const JSON_BYTES_PER_HASH: usize = 47;
/// JSON bytes besides the hashes, rounded up: braces, both array keys,
/// brackets, the separator (`{"email_hash":[],"phone_hash":[]}` is 33).
const JSON_FIXED_BYTES: usize = 64;
/// What the envelope adds to the JSON: version, IV, time, nonce, tag.
const ENVELOPE_BYTES: usize = 1 + IV_LEN + TIMESTAMP_LEN + NONCE_LEN + TAG_LEN;

/// How a list of identities is split and how many requests run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLimits {
    batch_size: usize,
    concurrency: usize,
}

/// A [`MapLimits`] value out of the operator's documented range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MapLimitsError {
    #[error("batch size {0} is out of range: 1..={MAX_BATCH_SIZE} identities per request")]
    BatchSize(usize),
    #[error("concurrency {0} is out of range: 1..={MAX_CONCURRENCY} requests in flight")]
    Concurrency(usize),
}

impl MapLimits {
    pub fn new(batch_size: usize, concurrency: usize) -> Result<Self, MapLimitsError> {
        if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
            return Err(MapLimitsError::BatchSize(batch_size));
        }
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(MapLimitsError::Concurrency(concurrency));
        }
        Ok(Self {
            batch_size,
            concurrency,
        })
    }

    pub(crate) fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Identities per request: the batch size, unless the body would
    /// reach the operator's limit first.
    pub(crate) fn identities_per_request(&self) -> usize {
        identities_per_request(self.batch_size, MAX_REQUEST_BODY_BYTES)
    }
}

/// How one identity-map call of a batched run can fail.
pub(crate) type MapCallError = OperatorError<MapAnswerError>;

/// A batched run failed: which request, and why. Results of the other
/// requests are dropped, since a caller stores a run's results together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "identity-map request {request} ({identities} identities, the first is input {first_input}) \
     failed: {source}"
)]
pub struct MapError {
    /// The failed request, from 0, in the order requests were built.
    pub request: usize,
    /// Position in the caller's list of the request's first identity.
    pub first_input: usize,
    /// How many identities the request held.
    pub identities: usize,
    pub source: MapCallError,
}

impl MapError {
    /// The failed call's stable kind name.
    pub fn kind(&self) -> &'static str {
        self.source.kind()
    }

    /// Whether running the batch again later can succeed.
    pub fn is_transient(&self) -> bool {
        self.source.is_transient()
    }
}

/// Maps `identities` through `POST /v3/identity/map`: one result per
/// identity, in the same order.
pub async fn map_v3(
    client: &OperatorClient,
    identities: &[(IdentityType, IdentityHash)],
    limits: MapLimits,
) -> Result<Vec<V3Result>, MapError> {
    let per_request = limits.identities_per_request();
    log_plan("v3", identities.len(), per_request);
    let requests = identities
        .chunks(per_request)
        .enumerate()
        .map(|(request, chunk)| {
            let position = Position {
                request,
                first_input: request * per_request,
                identities: chunk.len(),
            };
            (position, MapV3Request::new(chunk.to_vec()))
        })
        // Built up front: a lazy iterator of closures held across the awaits
        // below would keep the future from being `Send` for a spawned task.
        .collect::<Vec<_>>();
    let mut answers = stream::iter(requests)
        .map(|(position, request)| call(client, position, request))
        // In order: results are concatenated as they come.
        .buffered(limits.concurrency);
    let mut results = Vec::with_capacity(identities.len());
    while let Some(answer) = answers.try_next().await? {
        results.extend(answer);
    }
    Ok(results)
}

/// Maps `identities` through the deprecated `POST /v2/identity/map`: one
/// result per identity, in the same order. Emails and phones go in
/// separate requests, as the endpoint takes one type per request.
pub async fn map_v2(
    client: &OperatorClient,
    identities: &[(IdentityType, IdentityHash)],
    limits: MapLimits,
) -> Result<Vec<V2Result>, MapError> {
    let per_request = limits.identities_per_request();
    log_plan("v2", identities.len(), per_request);
    let mut requests = Vec::new();
    for kind in [IdentityType::Email, IdentityType::Phone] {
        let inputs: Vec<usize> = (0..identities.len())
            .filter(|&input| identities[input].0 == kind)
            .collect();
        for chunk in inputs.chunks(per_request) {
            let hashes = chunk.iter().map(|&input| identities[input].1).collect();
            requests.push((chunk.to_vec(), MapV2Request::new(kind, hashes)));
        }
    }
    let mut answers = stream::iter(requests.into_iter().enumerate())
        .map(|(request, (inputs, endpoint_request))| async move {
            let position = Position {
                request,
                first_input: inputs[0],
                identities: inputs.len(),
            };
            let answer = call(client, position, endpoint_request).await?;
            Ok::<_, MapError>((inputs, answer))
        })
        // Any order: each result goes back to the position it came from.
        .buffer_unordered(limits.concurrency);
    let mut results: Vec<Option<V2Result>> = vec![None; identities.len()];
    while let Some((inputs, answer)) = answers.try_next().await? {
        for (input, result) in inputs.into_iter().zip(answer) {
            results[input] = Some(result);
        }
    }
    Ok(results
        .into_iter()
        .map(|result| result.expect("every input is in exactly one request, answered in full"))
        .collect())
}

/// Where a request sits in a batched run, for its error.
#[derive(Debug, Clone, Copy)]
struct Position {
    request: usize,
    first_input: usize,
    identities: usize,
}

async fn call<E>(
    client: &OperatorClient,
    position: Position,
    request: E,
) -> Result<E::Answer, MapError>
where
    E: Endpoint<Problem = MapAnswerError>,
{
    client
        .call(&request)
        .await
        .map(|reply| reply.answer)
        .map_err(|source| MapError {
            request: position.request,
            first_input: position.first_input,
            identities: position.identities,
            source,
        })
}

fn log_plan(version: &'static str, identities: usize, per_request: usize) {
    tracing::debug!(
        version,
        identities,
        requests = identities.div_ceil(per_request),
        per_request,
        "mapping identities"
    );
}

/// The most identities a request may hold: at most `batch_size`, with the
/// base64 body (the larger encoding) under `max_body_bytes`. Never zero.
fn identities_per_request(batch_size: usize, max_body_bytes: usize) -> usize {
    // At most a few thousand steps, once per run.
    let mut identities = batch_size;
    while identities > 1 && wire_bytes(identities) >= max_body_bytes {
        identities -= 1;
    }
    identities
}

/// An upper bound on the request JSON for `identities` hashes, either
/// endpoint.
pub(crate) fn json_bytes(identities: usize) -> usize {
    JSON_FIXED_BYTES + JSON_BYTES_PER_HASH * identities
}

/// An upper bound on the HTTP body for `identities` hashes: the sealed
/// envelope, base64-encoded.
pub(crate) fn wire_bytes(identities: usize) -> usize {
    (json_bytes(identities) + ENVELOPE_BYTES).div_ceil(3) * 4
}

/// Writes `"name":["hash",…]`. Base64 needs no JSON escaping.
pub(crate) fn write_hash_array<'h>(
    json: &mut Vec<u8>,
    name: &str,
    hashes: impl Iterator<Item = &'h IdentityHash>,
) {
    json.push(b'"');
    json.extend_from_slice(name.as_bytes());
    json.extend_from_slice(b"\":[");
    for (index, hash) in hashes.enumerate() {
        if index > 0 {
            json.push(b',');
        }
        json.push(b'"');
        json.extend_from_slice(hash.to_base64().as_str().as_bytes());
        json.push(b'"');
    }
    json.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::ClientSecret;
    use crate::envelope::{RequestParams, encode_base64, seal_request};

    fn identities(count: usize) -> Vec<(IdentityType, IdentityHash)> {
        (0..count)
            .map(|n| {
                let kind = if n.is_multiple_of(3) {
                    IdentityType::Phone
                } else {
                    IdentityType::Email
                };
                let text = format!("{:064x}", n as u128 * 0x9e37_79b9_7f4a_7c15);
                (kind, IdentityHash::from_hash_text(&text).unwrap())
            })
            .collect()
    }

    fn base64_body_len(json: &[u8]) -> usize {
        let secret = ClientSecret::from_bytes([1; 32]);
        let envelope = seal_request(&secret, &RequestParams::fresh(1_700_000_000_000), json);
        encode_base64(&envelope).len()
    }

    #[test]
    fn the_size_estimate_is_never_below_the_real_body_of_either_endpoint() {
        for count in [1, 2, 3, 100, 4_999, 5_000] {
            let identities = identities(count);
            let v3 = MapV3Request::new(identities.clone()).request_json();
            let v2 = MapV2Request::new(
                IdentityType::Email,
                identities.iter().map(|(_, hash)| *hash).collect(),
            )
            .request_json();
            for json in [v3, v2] {
                assert!(json.len() <= json_bytes(count), "{count}");
                let body = base64_body_len(&json);
                assert!(body <= wire_bytes(count), "{count}: {body}");
                // Conservative, not wasteful: within a few dozen bytes.
                assert!(wire_bytes(count) - body < 100, "{count}: {body}");
            }
        }
    }

    #[test]
    fn a_byte_limit_smaller_than_the_batch_caps_each_request_under_it() {
        for limit in [2_000, 10_000, 65_536, 1 << 20] {
            let per_request = identities_per_request(MAX_BATCH_SIZE, limit);
            assert!(wire_bytes(per_request) < limit, "{limit}");
            assert!(
                per_request == MAX_BATCH_SIZE || wire_bytes(per_request + 1) >= limit,
                "{limit}: {per_request} is not the most that fits"
            );
        }
        // (64 + 47 × 157 + 45) bytes sealed are 9,984 in base64; one more is 10,048.
        assert_eq!(identities_per_request(5_000, 10_000), 157);
        // The real limit holds a full batch of hashes with room to spare.
        assert_eq!(identities_per_request(5_000, MAX_REQUEST_BODY_BYTES), 5_000);
        assert!(wire_bytes(5_000) < MAX_REQUEST_BODY_BYTES / 3);
    }

    #[test]
    fn limits_outside_the_documented_ranges_are_refused() {
        assert_eq!(
            MapLimits::new(0, 1).unwrap_err().to_string(),
            "batch size 0 is out of range: 1..=5000 identities per request"
        );
        assert_eq!(
            MapLimits::new(5_001, 1).unwrap_err(),
            MapLimitsError::BatchSize(5_001)
        );
        assert_eq!(
            MapLimits::new(10, 21).unwrap_err().to_string(),
            "concurrency 21 is out of range: 1..=20 requests in flight"
        );
        assert_eq!(
            MapLimits::new(10, 0).unwrap_err(),
            MapLimitsError::Concurrency(0)
        );
        let limits = MapLimits::new(5_000, 20).unwrap();
        assert_eq!((limits.batch_size(), limits.concurrency()), (5_000, 20));
    }
}
