//! What the operator reports: a salt bucket and the time its salt last rotated.
//!
//! This is the unit that flows from the operator client, through the sync
//! cycle, into the store. The queue itself does not depend on it: the store
//! turns a rotation into a queue entry, so another source (the v3 per-identity
//! `refresh_from`) can feed the same queue later.

use chrono::{DateTime, Utc};
use compact_str::CompactString;

/// One row of the `/v2/identity/buckets` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRotation {
    /// Opaque id; 10 characters in practice, never assumed. Inline (no heap
    /// allocation) up to 24 bytes, which matters for a million rows.
    pub bucket_id: CompactString,
    /// When the bucket's salt last rotated, UTC.
    pub last_updated: DateTime<Utc>,
}
