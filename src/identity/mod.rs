//! Personal identifiers a data provider maps to UID2s: emails and phone
//! numbers, and the SHA-256 hashes the identity-map endpoints accept.
//!
//! Pure (no IO). The v2/v3 identity-map clients and `identities import`
//! build on this; it owns the one place the operator's normalization rules
//! live, so a hash computed here equals the one the operator would compute
//! from the raw value.

mod normalize;

pub(crate) use normalize::InvalidIdentity;
pub use normalize::{IdentityHash, normalize_email};

/// The two kinds of identifier the operator maps. A hash does not say which
/// kind it came from: the request's array (`email_hash`, `phone_hash`) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityType {
    Email,
    Phone,
}
