//! Talking to the operator's `POST /v2/identity/buckets`.
//!
//! - [`client`]: the HTTP exchange, retries and options.
//! - [`body`]: turning a complete 200 body into rotations (decode, decrypt,
//!   parse), shared by the client and the bench.
//! - [`response`]: the decrypted JSON and its validation.
//! - [`error`]: every outcome a caller acts on, with stable kind names.

pub mod body;
pub mod client;
pub mod error;
pub mod response;

pub use body::{BodyEncoding, OpenedBuckets, open_buckets_body};
pub use client::{
    BucketsResponse, ClientOptions, ClientSetupError, OperatorClient, RetryPolicy, RetryRecord,
};
pub use error::{OperatorError, TimeoutPhase};
pub use response::{ResponseError, RowProblem, parse_buckets_json};
