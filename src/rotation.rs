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

/// The rows of one answer, packed: every bucket id in one string and 16
/// bytes a row beside it, about 26 bytes a row where `BucketRotation`
/// takes 40. A first sync holds its 2^20 rows beside the 68 MiB answer they
/// are parsed from, and that moment is the sync's peak memory. Times are
/// whole milliseconds, the resolution the store keeps.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Rotations {
    ids: String,
    rows: Vec<PackedRow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedRow {
    id_start: u32,
    id_len: u32,
    last_updated_ms: i64,
}

/// The packed ids would pass 4 GiB: more than any answer the transport
/// accepts (`max_body_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the answer's bucket ids exceed 4 GiB")]
pub struct TooManyIds;

impl Rotations {
    pub fn with_capacity(rows: usize, id_bytes: usize) -> Self {
        Self {
            ids: String::with_capacity(id_bytes),
            rows: Vec::with_capacity(rows),
        }
    }

    pub fn push(&mut self, bucket_id: &str, last_updated_ms: i64) -> Result<(), TooManyIds> {
        let id_start = u32::try_from(self.ids.len()).map_err(|_| TooManyIds)?;
        let id_len = u32::try_from(bucket_id.len()).map_err(|_| TooManyIds)?;
        id_start.checked_add(id_len).ok_or(TooManyIds)?;
        self.ids.push_str(bucket_id);
        self.rows.push(PackedRow {
            id_start,
            id_len,
            last_updated_ms,
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// `(bucket_id, last_updated_ms)` of each row, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, i64)> + '_ {
        self.slice(0, self.rows.len())
    }

    /// The rows as [`BucketRotation`]s, for tests and small answers.
    pub fn to_vec(&self) -> Vec<BucketRotation> {
        self.iter()
            .map(|(bucket_id, ms)| BucketRotation {
                bucket_id: bucket_id.into(),
                last_updated: crate::timestamp::from_millis(ms),
            })
            .collect()
    }

    /// Orders the rows by bucket id and keeps each bucket's latest row;
    /// returns how many rows it dropped.
    pub(crate) fn keep_latest_per_bucket(&mut self) -> usize {
        let ids = &self.ids;
        // The rows are sorted through keys that hold the id itself when it
        // fits in 16 bytes (production ids have 10) and the time, so that
        // neither the sort nor the copy in sorted order reads the arena:
        // its reads in sorted order are a cache miss each.
        let mut keys: Vec<SortKey> = self
            .rows
            .iter()
            .zip(0u32..)
            .map(|(row, index)| SortKey::of(id_of(ids, row), row, index))
            .collect();
        let whole_id = |key: &SortKey| id_of(ids, &self.rows[key.index as usize]);
        let same_id = |a: &SortKey, b: &SortKey| {
            a.head == b.head && a.len == b.len && (a.fits() || whole_id(a) == whole_id(b))
        };
        keys.sort_unstable_by(|a, b| {
            let by_id = if a.head != b.head || (a.fits() && b.fits()) {
                (a.head, a.len).cmp(&(b.head, b.len))
            } else {
                whole_id(a).cmp(whole_id(b))
            };
            // Latest first, so the first row of each bucket is kept.
            by_id.then_with(|| b.last_updated_ms.cmp(&a.last_updated_ms))
        });
        let mut kept = Self::with_capacity(keys.len(), ids.len());
        let mut previous: Option<&SortKey> = None;
        for key in &keys {
            if previous.is_some_and(|previous| same_id(previous, key)) {
                continue;
            }
            let head = key.head.to_be_bytes();
            let id = match key.fits() {
                true => std::str::from_utf8(&head[..key.len as usize])
                    .expect("the head of an id that fits is the whole id"),
                false => whole_id(key),
            };
            kept.push(id, key.last_updated_ms)
                .expect("the kept ids are fewer than the ids");
            previous = Some(key);
        }
        let dropped = self.rows.len() - kept.rows.len();
        *self = kept;
        dropped
    }

    /// The latest time among the rows.
    pub(crate) fn latest_ms(&self) -> Option<i64> {
        self.rows.iter().map(|row| row.last_updated_ms).max()
    }

    /// The rows from `start`, at most `count` of them.
    pub(crate) fn slice(
        &self,
        start: usize,
        count: usize,
    ) -> impl ExactSizeIterator<Item = (&str, i64)> {
        self.rows[start..(start + count).min(self.rows.len())]
            .iter()
            .map(|row| (id_of(&self.ids, row), row.last_updated_ms))
    }
}

/// A row as [`Rotations::keep_latest_per_bucket`] sorts it.
struct SortKey {
    /// The id's first 16 bytes, zero-padded, as a number that orders like
    /// the bytes do.
    head: u128,
    len: u32,
    index: u32,
    last_updated_ms: i64,
}

impl SortKey {
    fn of(id: &str, row: &PackedRow, index: u32) -> Self {
        let mut bytes = [0u8; 16];
        let head = &id.as_bytes()[..id.len().min(16)];
        bytes[..head.len()].copy_from_slice(head);
        Self {
            head: u128::from_be_bytes(bytes),
            len: row.id_len,
            index,
            last_updated_ms: row.last_updated_ms,
        }
    }

    /// The head is the whole id. Two such ids with equal heads differ only
    /// by trailing zero bytes, so the shorter one sorts first.
    fn fits(&self) -> bool {
        self.len <= 16
    }
}

fn id_of<'a>(ids: &'a str, row: &PackedRow) -> &'a str {
    &ids[row.id_start as usize..(row.id_start + row.id_len) as usize]
}

impl std::fmt::Debug for Rotations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<BucketRotation> for Rotations {
    fn from_iter<I: IntoIterator<Item = BucketRotation>>(rows: I) -> Self {
        let mut packed = Self::default();
        for row in rows {
            packed
                .push(
                    &row.bucket_id,
                    crate::timestamp::to_millis(row.last_updated),
                )
                .expect("rows built in memory stay far below 4 GiB of ids");
        }
        packed
    }
}

impl From<Vec<BucketRotation>> for Rotations {
    fn from(rows: Vec<BucketRotation>) -> Self {
        rows.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn keeping_the_latest_per_bucket_orders_by_id_bytes_and_keeps_each_latest_time(
            // Few distinct ids, many sharing their first eight bytes or
            // shorter than eight, so ties and prefixes are exercised.
            rows in proptest::collection::vec(
                ("(abcdefgh|abc|ab|é){0,3}[a-c]{0,2}", -5i64..5),
                0..60,
            )
        ) {
            let mut packed = Rotations::default();
            for (id, ms) in &rows {
                packed.push(id, *ms).unwrap();
            }
            let dropped = packed.keep_latest_per_bucket();

            let mut expected: Vec<(String, i64)> = rows.clone();
            expected.sort_by(|a, b| (a.0.as_bytes(), b.1).cmp(&(b.0.as_bytes(), a.1)));
            expected.dedup_by(|later, kept| later.0 == kept.0);
            let kept: Vec<(String, i64)> =
                packed.iter().map(|(id, ms)| (id.to_owned(), ms)).collect();
            proptest::prop_assert_eq!(kept, expected.clone());
            proptest::prop_assert_eq!(dropped, rows.len() - expected.len());
        }
    }
}
