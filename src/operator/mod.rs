//! Talking to the operator: one transport for every endpoint, and one small
//! module per endpoint.
//!
//! - [`transport`]: [`OperatorClient`] and the [`Endpoint`] trait: sealing a
//!   fresh envelope per attempt, posting it, reading the body, mapping HTTP
//!   outcomes to errors, retrying. It knows no endpoint.
//! - [`options`]: what a client is built from (time limits, encoding, retry
//!   policy, base URL rules), with the documented defaults.
//! - [`body`]: turning a complete 200 body into the decrypted payload.
//! - [`error`]: every outcome a caller acts on, with stable kind names;
//!   [`hint`]: what to do about one.
//! - [`buckets`]: `POST /v2/identity/buckets`: its path, request, answer
//!   parser and errors.
//! - [`map_v3`], [`map_v2`]: `POST /v3/identity/map` and the deprecated
//!   `POST /v2/identity/map`: one request each, sending identity hashes
//!   only, and the answer checked against what was sent.
//! - [`map_answer`]: what both map answers are made of: raw UID2s, unmapped
//!   reasons, and why an answer is refused.
//! - [`batch`]: mapping any number of identities: requests of at most the
//!   batch size and under 1 MiB, a bounded number in flight, results in
//!   input order ([`map_v3()`], [`map_v2()`]).

pub(crate) mod batch;
pub mod body;
pub(crate) mod buckets;
pub(crate) mod document;
pub(crate) mod error;
pub(crate) mod hint;
pub(crate) mod map_answer;
pub mod map_v2;
pub mod map_v3;
pub(crate) mod options;
pub(crate) mod transport;

pub(crate) use batch::MAX_BATCH_SIZE;
pub use batch::{MapError, MapLimits, MapLimitsError, map_v2, map_v3};
pub use body::BodyEncoding;
pub use buckets::{
    BUCKETS_PATH, BucketsError, OpenedBuckets, ResponseError, RowProblem, open_buckets_body,
    parse_buckets_json,
};
pub use document::DocumentError;
pub use error::{OperatorError, TransportError};
pub use map_answer::{ElementProblem, MapAnswerError, UnmappedReason};
pub use map_v2::{MAP_V2_PATH, V2Result};
pub use map_v3::{MAP_V3_PATH, MapV3Request, V3Mapping, V3Result};
pub(crate) use options::ClientSetupError;
pub use options::{ClientOptions, RetryPolicy};
pub use transport::{Endpoint, OperatorClient};
