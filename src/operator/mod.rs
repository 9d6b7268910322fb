//! Talking to the operator: one transport for every endpoint, and one small
//! module per endpoint.
//!
//! - [`transport`]: [`OperatorClient`] and the [`Endpoint`] trait: sealing a
//!   fresh envelope per attempt, posting it, reading the body, mapping HTTP
//!   outcomes to errors, retrying. It knows no endpoint.
//! - [`options`]: what a client is built from (time limits, encoding, retry
//!   policy, base URL rules), with the documented defaults.
//! - [`body`]: turning a complete 200 body into the decrypted payload.
//! - [`error`]: every outcome a caller acts on, with stable kind names.
//! - [`buckets`]: `POST /v2/identity/buckets`: its path, request, answer
//!   parser and errors.

pub mod body;
pub mod buckets;
pub mod error;
pub mod options;
pub mod transport;

pub use body::BodyEncoding;
pub use buckets::{
    BUCKETS_PATH, BucketsError, BucketsResponse, BucketsSince, OpenedBuckets, ResponseError,
    RowProblem, open_buckets_body, parse_buckets_json,
};
pub use error::{OperatorError, TimeoutPhase, TransportError};
pub use options::{ClientOptions, ClientSetupError, RetryPolicy};
pub use transport::{Endpoint, OperatorClient, Reply, RetryRecord};
