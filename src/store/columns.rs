//! A result row read by column index, whichever backend returned it: the
//! records both backends read (the sync state, the mapping state, an
//! identity, a change record, a lease, a queue entry) are each built from
//! one in one place.

use compact_str::CompactString;

use crate::queue::{Lease, QueueEntry, QueueState, Subject};
use crate::timestamp::from_millis;

pub(super) trait Columns {
    type Error;

    /// A short text without an allocation of its own (queue keys).
    fn compact(&self, index: usize) -> Result<CompactString, Self::Error>;
    fn text(&self, index: usize) -> Result<String, Self::Error>;
    fn optional_text(&self, index: usize) -> Result<Option<String>, Self::Error>;
    fn number(&self, index: usize) -> Result<i64, Self::Error>;
    fn optional_number(&self, index: usize) -> Result<Option<i64>, Self::Error>;
}

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;

    fn compact(&self, index: usize) -> rusqlite::Result<CompactString> {
        Ok(self.get_ref(index)?.as_str()?.into())
    }

    fn text(&self, index: usize) -> rusqlite::Result<String> {
        self.get(index)
    }

    fn optional_text(&self, index: usize) -> rusqlite::Result<Option<String>> {
        self.get(index)
    }

    fn number(&self, index: usize) -> rusqlite::Result<i64> {
        self.get(index)
    }

    fn optional_number(&self, index: usize) -> rusqlite::Result<Option<i64>> {
        self.get(index)
    }
}

impl Columns for ::postgres::Row {
    type Error = ::postgres::Error;

    fn compact(&self, index: usize) -> Result<CompactString, ::postgres::Error> {
        Ok(self.try_get::<_, &str>(index)?.into())
    }

    fn text(&self, index: usize) -> Result<String, ::postgres::Error> {
        self.try_get(index)
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, ::postgres::Error> {
        self.try_get(index)
    }

    fn number(&self, index: usize) -> Result<i64, ::postgres::Error> {
        self.try_get(index)
    }

    fn optional_number(&self, index: usize) -> Result<Option<i64>, ::postgres::Error> {
        self.try_get(index)
    }
}

/// What a claim returns of each item, in the order [`lease`] reads.
pub(super) const LEASE_COLUMNS: &str =
    "kind, subject, version_ms, lease_id, lease_expires_at_ms, attempts, generation, due_at_ms";

/// One claimed item, from a row of [`LEASE_COLUMNS`].
pub(super) fn lease<R: Columns>(row: &R) -> Result<Lease, R::Error> {
    Ok(Lease {
        subject: Subject {
            kind: row.compact(0)?,
            key: row.compact(1)?,
        },
        version: from_millis(row.number(2)?),
        lease_id: row.text(3)?,
        expires_at: from_millis(row.number(4)?),
        attempt: saturating_u32(row.number(5)?),
        generation: saturating_u32(row.number(6)?),
        due_at: from_millis(row.number(7)?),
    })
}

/// One queue entry, from a row of each backend's entry columns: kind,
/// subject, state (parsed by the caller into `state`), version, next
/// version, generation, attempts, due, updated, lease id, leased by,
/// leased at, lease expiry, done at, last error.
pub(super) fn queue_entry<R: Columns>(row: &R, state: QueueState) -> Result<QueueEntry, R::Error> {
    let millis = |index| row.optional_number(index).map(|ms| ms.map(from_millis));
    Ok(QueueEntry {
        subject: Subject {
            kind: row.compact(0)?,
            key: row.compact(1)?,
        },
        state,
        version: from_millis(row.number(3)?),
        next_version: millis(4)?,
        generation: saturating_u32(row.number(5)?),
        attempts: saturating_u32(row.number(6)?),
        due_at: from_millis(row.number(7)?),
        updated_at: from_millis(row.number(8)?),
        lease_id: row.optional_text(9)?,
        leased_by: row.optional_text(10)?,
        leased_at: millis(11)?,
        lease_expires_at: millis(12)?,
        done_at: millis(13)?,
        last_error: row.optional_text(14)?,
    })
}

/// A stored count, which the queue's own updates keep far below `u32::MAX`.
fn saturating_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}
