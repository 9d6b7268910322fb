//! What the re-map worker reads and writes: the identities due for mapping,
//! one batch's answers committed together with their change records, the
//! worker's own state, and the change feed.
//!
//! Due sets are read in keyset order, each along its own index, so a pass
//! costs what is due rather than what is stored, and an identity is read at
//! most once per pass whatever the passes' answers commit meanwhile.

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::identities::{IdentityCounts, IdentityStatus, identity_counts_in, type_name};
use super::ingest::latest_rotation_of;
use super::{SqliteStore, sql_error};
use crate::identity::{IdentityHash, IdentityType};
use crate::store::{Failure, StoreError};
use crate::timestamp::{from_millis, to_millis};

const DUE: &str = "reading the identities due for mapping";
const COMMIT: &str = "recording identity-map answers";
const STATE: &str = "recording the re-map pass";
const CHANGES: &str = "reading the change feed";
const PRUNE: &str = "pruning the change feed";
const COUNT: &str = "counting identities";

/// Which identity-map endpoint a pass uses; it decides when an identity is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MapApi {
    /// `POST /v3/identity/map`: due at or after the refresh time it answered.
    V3,
    /// `POST /v2/identity/map` (deprecated): due when its bucket rotated.
    V2,
}

impl MapApi {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::V3 => "v3",
            Self::V2 => "v2",
        }
    }
}

/// One identity to send: the hash is read back only to be sent.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct DueIdentity {
    pub id: String,
    pub kind: IdentityType,
    pub hash: IdentityHash,
}

impl std::fmt::Debug for DueIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueIdentity")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The sets a pass reads, in order: new identities first, then those whose
/// mapping came from the other API, then those due by the API's own rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DueSet {
    Unmapped,
    /// v3: mapped, but with no refresh time (mapped with v2).
    WithoutRefresh,
    /// v3: the refresh time has come.
    RefreshDue,
    /// v2: mapped, but with no bucket (mapped with v3).
    WithoutBucket,
    /// v2: the bucket rotated after the identity was mapped.
    BucketRotated,
}

/// What a due set is ordered by before `id`, and read back into the
/// cursor's last key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortColumn {
    RefreshFrom,
    Bucket,
    /// The rotation log's order: observed, then bucket.
    Rotation,
}

impl DueSet {
    /// `None`: ordered by `id` alone.
    fn sort_column(self) -> Option<SortColumn> {
        match self {
            Self::RefreshDue | Self::WithoutBucket => Some(SortColumn::RefreshFrom),
            Self::WithoutRefresh => Some(SortColumn::Bucket),
            Self::BucketRotated => Some(SortColumn::Rotation),
            Self::Unmapped => None,
        }
    }
}

const V3_SETS: &[DueSet] = &[DueSet::Unmapped, DueSet::WithoutRefresh, DueSet::RefreshDue];
const V2_SETS: &[DueSet] = &[
    DueSet::Unmapped,
    DueSet::WithoutBucket,
    DueSet::BucketRotated,
];

/// Where a pass stands in its due sets. Identities mapped by this pass are
/// never read again by it: each set is read in key order past the last key
/// read, and a mapped identity must also have been mapped before the pass
/// started.
#[derive(Debug, Clone)]
pub(crate) struct DueCursor {
    sets: &'static [DueSet],
    set: usize,
    /// The last key read in the current set: `id`, or the set's ordering
    /// column followed by `id`.
    after: Option<(Option<SortKey>, String)>,
    started_ms: i64,
    /// v2: only rotations observed after this are read.
    rotations_after_ms: i64,
    /// How many more identities mapped before may be read; new ones are
    /// not counted.
    remaps_left: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SortKey {
    Time(i64),
    Bucket(String),
    Rotation(i64, String),
}

impl DueCursor {
    /// A pass over what is due at `started`. For v2, `rotations_checked`
    /// is what [`Store::mapping_state`] says the last complete pass covered.
    /// `remaps` bounds the identities read that were mapped before.
    pub(crate) fn new(
        api: MapApi,
        started: DateTime<Utc>,
        rotations_checked: Option<DateTime<Utc>>,
        remaps: Option<u64>,
    ) -> Self {
        Self {
            sets: match api {
                MapApi::V3 => V3_SETS,
                MapApi::V2 => V2_SETS,
            },
            set: 0,
            after: None,
            started_ms: to_millis(started),
            rotations_after_ms: rotations_checked.map_or(i64::MIN, to_millis),
            remaps_left: remaps,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.set >= self.sets.len()
    }
}

/// What the operator answered for one identity, as the store keeps it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum MapOutcome {
    Mapped {
        uid2: String,
        /// v3: the operator's previous UID2. v2 has none.
        previous_uid2: Option<String>,
        refresh_from: Option<DateTime<Utc>>,
        bucket_id: Option<String>,
    },
    OptOut,
    Invalid,
    /// A reason this version does not know: the identity is left as it was
    /// and sent again by the next pass.
    Unknown,
}

impl std::fmt::Debug for MapOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mapped { .. } => "Mapped(<redacted>)",
            Self::OptOut => "OptOut",
            Self::Invalid => "Invalid",
            Self::Unknown => "Unknown",
        })
    }
}

/// What committing one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BatchCounts {
    /// A change record was written: new UID2, first mapping, opt-out, invalid.
    pub changed: u64,
    pub unchanged: u64,
    /// Of `changed`: now opted out, now invalid.
    pub optout: u64,
    pub invalid: u64,
    /// Answered with a reason this version does not know; left as they were.
    pub unknown: u64,
    /// Removed or given a new value while the request was in flight: the
    /// answer is for a value the identity no longer has, so it is dropped.
    pub superseded: u64,
}

impl std::ops::AddAssign for BatchCounts {
    fn add_assign(&mut self, other: Self) {
        self.changed += other.changed;
        self.unchanged += other.unchanged;
        self.optout += other.optout;
        self.invalid += other.invalid;
        self.unknown += other.unknown;
        self.superseded += other.superseded;
    }
}

/// The counts of a finished pass, as recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassCounts {
    pub sent: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub optout: u64,
    pub invalid: u64,
    pub requests: u64,
}

/// The worker's state: `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingState {
    pub api: Option<String>,
    pub rotations_checked: Option<DateTime<Utc>>,
    pub last_started_at: Option<DateTime<Utc>>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<Failure>,
    /// Counts of the last pass that finished, complete or not.
    pub last_pass: Option<PassCounts>,
}

impl MappingState {
    /// The rotations a complete pass with `api` already looked at: none
    /// after a switch of API, when nothing is known about them.
    pub(crate) fn rotations_checked_for(&self, api: MapApi) -> Option<DateTime<Utc>> {
        self.rotations_checked
            .filter(|_| self.api.as_deref() == Some(api.as_str()))
    }
}

/// One record of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChangeRecord {
    pub seq: i64,
    pub id: String,
    pub uid2: Option<String>,
    pub previous_uid2: Option<String>,
    pub status: String,
    pub changed_at: DateTime<Utc>,
}

impl SqliteStore {
    /// Reads up to `limit` due identities past `cursor` and moves it on.
    /// Fewer than `limit` only when the pass has read every set or its
    /// re-maps budget.
    pub(crate) fn next_due(
        &self,
        cursor: &mut DueCursor,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<DueIdentity>, StoreError> {
        let mut due = Vec::with_capacity(limit);
        while due.len() < limit && !cursor.is_done() {
            let mut wanted = limit - due.len();
            let remaps = cursor.sets[cursor.set] != DueSet::Unmapped;
            if remaps && let Some(left) = cursor.remaps_left {
                if left == 0 {
                    break;
                }
                wanted = wanted.min(usize::try_from(left).unwrap_or(usize::MAX));
            }
            let read = read_set(&self.conn, cursor, wanted, to_millis(now), &mut due)
                .map_err(sql_error(DUE))?;
            if remaps && let Some(left) = &mut cursor.remaps_left {
                *left -= read as u64;
            }
            if read < wanted {
                cursor.set += 1;
                cursor.after = None;
            }
        }
        Ok(due)
    }

    /// Commits one batch's answers in one transaction: `outcomes[i]` is the
    /// answer for `batch[i]`. An identity whose UID2 or status changed gets
    /// one change record; an unchanged one gets none.
    pub(crate) fn commit_mappings(
        &self,
        batch: &[DueIdentity],
        outcomes: &[MapOutcome],
        now: DateTime<Utc>,
    ) -> Result<BatchCounts, StoreError> {
        assert_eq!(
            batch.len(),
            outcomes.len(),
            "one answer per identity sent, checked by the client"
        );
        let now_ms = to_millis(now);
        let tx = self.write_transaction(COMMIT)?;
        let counts = commit_in(&tx, batch, outcomes, now_ms).map_err(sql_error(COMMIT))?;
        tx.commit().map_err(sql_error(COMMIT))?;
        Ok(counts)
    }

    /// Records that a pass with `api` started at `at`.
    pub(crate) fn record_pass_start(
        &self,
        api: MapApi,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE mapping_state SET api = ?1, last_started_at_ms = ?2 WHERE id = 1",
                params![api.as_str(), to_millis(at)],
            )
            .map_err(sql_error(STATE))?;
        Ok(())
    }

    /// Records a finished pass: its counts, and for a complete one the
    /// success and (v2) the rotations it covered; for a failed one the
    /// error, one line with its hint.
    pub(crate) fn record_pass_end(
        &self,
        counts: &PassCounts,
        outcome: PassEnd<'_>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let at_ms = to_millis(at);
        let tx = self.write_transaction(STATE)?;
        tx.execute(
            "UPDATE mapping_state SET last_finished_at_ms = ?1, last_sent = ?2,
                 last_changed = ?3, last_unchanged = ?4, last_optout = ?5,
                 last_invalid = ?6, last_requests = ?7
             WHERE id = 1",
            params![
                at_ms,
                counts.sent as i64,
                counts.changed as i64,
                counts.unchanged as i64,
                counts.optout as i64,
                counts.invalid as i64,
                counts.requests as i64
            ],
        )
        .map_err(sql_error(STATE))?;
        match outcome {
            PassEnd::Complete { rotations_checked } => tx.execute(
                "UPDATE mapping_state SET last_success_at_ms = ?1,
                     rotations_checked_ms = coalesce(?2, rotations_checked_ms)
                 WHERE id = 1",
                params![at_ms, rotations_checked.map(to_millis)],
            ),
            PassEnd::Partial => Ok(0),
            PassEnd::Failed { kind, message } => tx.execute(
                "UPDATE mapping_state SET last_error_at_ms = ?1, last_error_kind = ?2,
                     last_error_message = ?3
                 WHERE id = 1",
                params![at_ms, kind, message],
            ),
        }
        .map_err(sql_error(STATE))?;
        tx.commit().map_err(sql_error(STATE))?;
        Ok(())
    }

    pub fn mapping_state(&self) -> Result<MappingState, StoreError> {
        mapping_state_in(&self.conn).map_err(sql_error(STATE))
    }

    /// Identity counts; `due` by the rule of `api`.
    pub(crate) fn identity_counts(
        &self,
        api: MapApi,
        now: DateTime<Utc>,
    ) -> Result<IdentityCounts, StoreError> {
        let mut counts = identity_counts_in(&self.conn).map_err(sql_error(COUNT))?;
        counts.due = count_due(&self.conn, api, now, true).map_err(sql_error(COUNT))?;
        Ok(counts)
    }

    /// How many identities mapped before are due again by the rule of
    /// `api`: what `run` paces.
    pub(crate) fn remaps_due(&self, api: MapApi, now: DateTime<Utc>) -> Result<u64, StoreError> {
        count_due(&self.conn, api, now, false).map_err(sql_error(COUNT))
    }

    /// Calls `each` for change records after `after` in `seq` order, at
    /// most `limit` of them, from one snapshot.
    pub(crate) fn changes<E: From<StoreError>>(
        &self,
        after: i64,
        limit: Option<u64>,
        mut each: impl FnMut(&ChangeRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let tx = self.read_transaction(CHANGES)?;
        let mut select = tx
            .prepare(
                "SELECT seq, id, uid2, previous_uid2, status, changed_at_ms
                 FROM identity_change WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(sql_error(CHANGES))?;
        let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut rows = select
            .query(params![after, limit])
            .map_err(sql_error(CHANGES))?;
        while let Some(row) = rows.next().map_err(sql_error(CHANGES))? {
            let record = ChangeRecord {
                seq: row.get(0).map_err(sql_error(CHANGES))?,
                id: row.get(1).map_err(sql_error(CHANGES))?,
                uid2: row.get(2).map_err(sql_error(CHANGES))?,
                previous_uid2: row.get(3).map_err(sql_error(CHANGES))?,
                status: row.get(4).map_err(sql_error(CHANGES))?,
                changed_at: from_millis(row.get(5).map_err(sql_error(CHANGES))?),
            };
            each(&record)?;
        }
        Ok(())
    }

    /// Deletes change records older than `cutoff`. `seq` values are never
    /// reused, so a consumer's saved position stays meaningful.
    pub(crate) fn prune_changes(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let deleted = self
            .conn
            .execute(
                // Records are pruned in `seq` order up to the first one still
                // kept: found by reading from the oldest, so this costs what
                // it deletes, and no record newer than the cutoff goes even
                // if a clock stepped back between two of them.
                "DELETE FROM identity_change WHERE seq < coalesce(
                     (SELECT seq FROM identity_change WHERE changed_at_ms >= ?1
                      ORDER BY seq LIMIT 1),
                     (SELECT max(seq) + 1 FROM identity_change))",
                [to_millis(cutoff)],
            )
            .map_err(sql_error(PRUNE))?;
        Ok(deleted as u64)
    }
}

/// How a pass ended, for [`Store::record_pass_end`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum PassEnd<'a> {
    /// Everything due was read and answered. `rotations_checked`: v2, the
    /// instant up to which rotations were looked at.
    Complete {
        rotations_checked: Option<DateTime<Utc>>,
    },
    /// Stopped early, by `--limit`, a budget or a shutdown; not an error.
    Partial,
    Failed {
        kind: &'a str,
        message: &'a str,
    },
}

/// The columns every due set reads, and the condition that keeps an
/// identity mapped by this pass out of it (`?2`: the pass's start).
const SELECT_DUE: &str = "SELECT i.id, i.identity_type, i.hash";
const MAPPED_BEFORE_PASS: &str = "i.mapped_at_ms < ?2";
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Each set's query, taking `?1` the limit, `?2` the pass's start, `?3`
/// now, `?4` the rotations cutoff, `?5`/`?7`/`?6` the last key read (its
/// sort columns, then `id`).
fn set_query(set: DueSet, first: bool) -> String {
    let (from, condition, order, keyset) = match set {
        DueSet::Unmapped => (
            "identity AS i",
            "i.status = 'unmapped'".to_owned(),
            "i.id",
            "i.id > ?6",
        ),
        // Mapped with v2: a bucket and no refresh time.
        DueSet::WithoutRefresh => (
            "identity AS i",
            format!(
                "i.bucket_id IS NOT NULL AND i.status = 'mapped' AND i.refresh_from_ms IS NULL \
                 AND {MAPPED_BEFORE_PASS}"
            ),
            "i.bucket_id, i.id",
            "(i.bucket_id, i.id) > (?5, ?6)",
        ),
        DueSet::RefreshDue => (
            "identity AS i",
            format!("i.refresh_from_ms <= ?3 AND i.status = 'mapped' AND {MAPPED_BEFORE_PASS}"),
            "i.refresh_from_ms, i.id",
            "(i.refresh_from_ms, i.id) > (?5, ?6)",
        ),
        // Mapped with v3: a refresh time and no bucket.
        DueSet::WithoutBucket => (
            "identity AS i",
            format!(
                "i.refresh_from_ms IS NOT NULL AND i.status = 'mapped' AND i.bucket_id IS NULL \
                 AND {MAPPED_BEFORE_PASS}"
            ),
            "i.refresh_from_ms, i.id",
            "(i.refresh_from_ms, i.id) > (?5, ?6)",
        ),
        // The operator stamps a rotation with the midnight (UTC) of its
        // day, so a rotation stamped T happened in [T, T + 1 day). It may
        // have salted this identity's UID2 when it was observed after the
        // mapping, unless its day ended before the mapping: such an identity
        // is sent again, which at worst costs a request and changes nothing.
        // A rotation observed before the mapping happened before it, and
        // the answer already had the new salt.
        DueSet::BucketRotated => (
            // The rotations drive the join (CROSS JOIN keeps that order):
            // those observed since the last complete pass that are still
            // their bucket's latest, read in the log's own order, then the
            // identities of each bucket. A pass reads the news and the
            // identities in rotated buckets, not every identity mapped with
            // v2. A bucket's rotations are observed in the order of their
            // times, so its latest rotation is the one to compare with.
            "rotation_log AS b CROSS JOIN identity AS i ON i.bucket_id = b.bucket_id",
            format!(
                "b.observed_at_ms > ?4 AND b.last_updated_ms = {latest}
                 AND i.status = 'mapped' AND {MAPPED_BEFORE_PASS}
                 AND b.last_updated_ms > i.mapped_at_ms - {DAY_MS}
                 AND b.observed_at_ms > i.mapped_at_ms",
                latest = latest_rotation_of("b.bucket_id"),
            ),
            // Only a bucket's latest rotation qualifies, so `last_updated_ms`
            // orders nothing; named, it lets the log's key give the order.
            "b.observed_at_ms, b.bucket_id, b.last_updated_ms, i.id",
            "(b.observed_at_ms, b.bucket_id) >= (?5, ?7) \
             AND (b.observed_at_ms, b.bucket_id, i.id) > (?5, ?7, ?6)",
        ),
    };
    let keyset = if first {
        String::new()
    } else {
        format!(" AND {keyset}")
    };
    let sort_key = match set.sort_column() {
        Some(SortColumn::RefreshFrom) => ", i.refresh_from_ms",
        Some(SortColumn::Bucket) => ", i.bucket_id",
        Some(SortColumn::Rotation) => ", b.observed_at_ms, b.bucket_id",
        None => "",
    };
    format!(
        "{SELECT_DUE}{sort_key} FROM {from} WHERE {condition}{keyset} ORDER BY {order} LIMIT ?1"
    )
}

fn read_set(
    conn: &Connection,
    cursor: &mut DueCursor,
    limit: usize,
    now_ms: i64,
    out: &mut Vec<DueIdentity>,
) -> rusqlite::Result<usize> {
    let set = cursor.sets[cursor.set];
    let sql = set_query(set, cursor.after.is_none());
    let mut select = conn.prepare_cached(&sql)?;
    let (key, last_id) = match &cursor.after {
        Some((key, id)) => (key.clone(), Some(id.clone())),
        None => (None, None),
    };
    let (key, second_key): (Value, Value) = match key {
        Some(SortKey::Time(ms)) => (ms.into(), Value::Null),
        Some(SortKey::Bucket(bucket)) => (bucket.into(), Value::Null),
        Some(SortKey::Rotation(observed_ms, bucket)) => (observed_ms.into(), bucket.into()),
        None => (Value::Null, Value::Null),
    };
    bind(
        &mut select,
        [
            (limit as i64).into(),
            cursor.started_ms.into(),
            now_ms.into(),
            cursor.rotations_after_ms.into(),
            key,
            last_id.map_or(Value::Null, Value::from),
            second_key,
        ],
    )?;
    let mut rows = select.raw_query();
    let mut read = 0;
    while let Some(row) = rows.next()? {
        let identity = due_identity(row)?;
        let sort_key = match set.sort_column() {
            Some(SortColumn::RefreshFrom) => Some(SortKey::Time(row.get(3)?)),
            Some(SortColumn::Bucket) => Some(SortKey::Bucket(row.get(3)?)),
            Some(SortColumn::Rotation) => Some(SortKey::Rotation(row.get(3)?, row.get(4)?)),
            None => None,
        };
        cursor.after = Some((sort_key, identity.id.clone()));
        out.push(identity);
        read += 1;
    }
    Ok(read)
}

fn count_set(
    conn: &Connection,
    set: DueSet,
    cursor: &DueCursor,
    now_ms: i64,
) -> rusqlite::Result<u64> {
    let sql = format!(
        "SELECT count(*) FROM ({})",
        set_query(set, true).replace(" LIMIT ?1", "")
    );
    let mut select = conn.prepare_cached(&sql)?;
    bind(
        &mut select,
        [
            Value::Null,
            cursor.started_ms.into(),
            now_ms.into(),
            cursor.rotations_after_ms.into(),
        ],
    )?;
    let mut rows = select.raw_query();
    let count: i64 = match rows.next()? {
        Some(row) => row.get(0)?,
        None => 0,
    };
    Ok(count as u64)
}

/// Binds `values` to `?1`, `?2`, …, as far as the statement uses them: a
/// set's first read has no last key to bind.
fn bind<const N: usize>(
    statement: &mut rusqlite::CachedStatement<'_>,
    values: [Value; N],
) -> rusqlite::Result<()> {
    let used = statement.parameter_count();
    for (index, value) in values.into_iter().enumerate().take(used) {
        statement.raw_bind_parameter(index + 1, value)?;
    }
    Ok(())
}

/// Counts the due sets of `api` (the new identities' too, if `new`),
/// reading them as a pass would, without keeping what is read.
fn count_due(
    conn: &Connection,
    api: MapApi,
    now: DateTime<Utc>,
    new: bool,
) -> rusqlite::Result<u64> {
    let state = mapping_state_in(conn)?;
    let cursor = DueCursor::new(api, now, state.rotations_checked_for(api), None);
    let mut total = 0;
    for &set in cursor.sets {
        if new || set != DueSet::Unmapped {
            total += count_set(conn, set, &cursor, to_millis(now))?;
        }
    }
    Ok(total)
}

fn due_identity(row: &Row<'_>) -> rusqlite::Result<DueIdentity> {
    let kind = match row.get_ref(1)?.as_str()? {
        "email" => IdentityType::Email,
        "phone" => IdentityType::Phone,
        other => {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                format!("unknown identity type {other:?}").into(),
            ));
        }
    };
    let bytes: [u8; 32] = row.get(2)?;
    Ok(DueIdentity {
        id: row.get(0)?,
        kind,
        hash: IdentityHash::from_bytes(bytes),
    })
}

/// Writes one batch's answers. Each identity's current row is read here,
/// inside the write transaction, so an answer for a value re-imported or
/// removed meanwhile is dropped. The new rows are staged in a temporary
/// table and written with two statements: per-row UPDATE and INSERT
/// statements cost more in statement overhead than in B-tree work.
fn commit_in(
    conn: &Connection,
    batch: &[DueIdentity],
    outcomes: &[MapOutcome],
    now_ms: i64,
) -> rusqlite::Result<BatchCounts> {
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS remap_answer (
             pos             INTEGER PRIMARY KEY,
             id              TEXT    NOT NULL,
             status          TEXT    NOT NULL,
             uid2            TEXT,
             previous_uid2   TEXT,
             bucket_id       TEXT,
             refresh_from_ms INTEGER,
             old_uid2        TEXT,
             changed         INTEGER NOT NULL
         )",
    )?;
    let mut current = conn.prepare_cached(
        "SELECT status, uid2, previous_uid2 FROM identity
         WHERE id = ?1 AND identity_type = ?2 AND hash = ?3",
    )?;
    let mut stage = conn.prepare_cached(
        "INSERT INTO temp.remap_answer (pos, id, status, uid2, previous_uid2, bucket_id,
             refresh_from_ms, old_uid2, changed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut counts = BatchCounts::default();
    for (pos, (identity, outcome)) in batch.iter().zip(outcomes).enumerate() {
        let found = current
            .query_row(
                params![
                    identity.id,
                    type_name(identity.kind),
                    &identity.hash.as_bytes()[..]
                ],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, Option<String>>(1)?,
                        row.get::<_, Option<String>>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((old_status, old_uid2, old_previous)) = found else {
            counts.superseded += 1;
            continue;
        };
        let (status, uid2, previous, bucket, refresh) = match outcome {
            MapOutcome::Unknown => {
                counts.unknown += 1;
                continue;
            }
            MapOutcome::Mapped {
                uid2,
                previous_uid2,
                refresh_from,
                bucket_id,
            } => {
                // v2 answers carry no previous UID2: the one held before a
                // change is it.
                let previous = match (previous_uid2, bucket_id) {
                    (Some(previous), _) => Some(previous.as_str()),
                    (None, Some(_)) if old_uid2.as_deref() != Some(uid2.as_str()) => {
                        old_uid2.as_deref()
                    }
                    (None, Some(_)) => old_previous.as_deref(),
                    (None, None) => None,
                };
                (
                    IdentityStatus::Mapped,
                    Some(uid2.as_str()),
                    previous,
                    bucket_id.as_deref(),
                    refresh_from.map(to_millis),
                )
            }
            MapOutcome::OptOut => (
                IdentityStatus::Optout,
                None,
                old_uid2.as_deref(),
                None,
                None,
            ),
            MapOutcome::Invalid => (
                IdentityStatus::Invalid,
                None,
                old_uid2.as_deref(),
                None,
                None,
            ),
        };
        let changed = old_status != status.as_str() || old_uid2.as_deref() != uid2;
        stage.execute(params![
            pos as i64,
            identity.id,
            status.as_str(),
            uid2,
            previous,
            bucket,
            refresh,
            old_uid2,
            changed
        ])?;
        if !changed {
            counts.unchanged += 1;
            continue;
        }
        counts.changed += 1;
        match status {
            IdentityStatus::Optout => counts.optout += 1,
            IdentityStatus::Invalid => counts.invalid += 1,
            _ => {}
        }
    }
    conn.prepare_cached(
        "UPDATE identity SET status = a.status, uid2 = a.uid2, previous_uid2 = a.previous_uid2,
             bucket_id = a.bucket_id, refresh_from_ms = a.refresh_from_ms,
             mapped_at_ms = ?1, updated_at_ms = ?1
         FROM temp.remap_answer AS a
         WHERE identity.id = a.id",
    )?
    .execute([now_ms])?;
    conn.prepare_cached(
        "INSERT INTO identity_change (id, status, uid2, previous_uid2, changed_at_ms)
         SELECT id, status, uid2, old_uid2, ?1 FROM temp.remap_answer
         WHERE changed ORDER BY pos",
    )?
    .execute([now_ms])?;
    conn.execute_batch("DELETE FROM temp.remap_answer")?;
    Ok(counts)
}

fn mapping_state_in(conn: &Connection) -> rusqlite::Result<MappingState> {
    conn.query_row(
        "SELECT api, rotations_checked_ms, last_started_at_ms, last_finished_at_ms,
                last_success_at_ms, last_error_at_ms, last_error_kind, last_error_message,
                last_sent, last_changed, last_unchanged, last_optout, last_invalid,
                last_requests
         FROM mapping_state WHERE id = 1",
        [],
        |row| {
            let time = |index| row.get::<_, Option<i64>>(index).map(|v| v.map(from_millis));
            let count = |index| {
                row.get::<_, Option<i64>>(index)
                    .map(|v| v.map(|n| n as u64))
            };
            let last_error = match (time(5)?, row.get(6)?, row.get(7)?) {
                (Some(at), Some(kind), Some(message)) => Some(Failure { at, kind, message }),
                _ => None,
            };
            let last_pass = match count(8)? {
                Some(sent) => Some(PassCounts {
                    sent,
                    changed: count(9)?.unwrap_or(0),
                    unchanged: count(10)?.unwrap_or(0),
                    optout: count(11)?.unwrap_or(0),
                    invalid: count(12)?.unwrap_or(0),
                    requests: count(13)?.unwrap_or(0),
                }),
                None => None,
            };
            Ok(MappingState {
                api: row.get(0)?,
                rotations_checked: time(1)?,
                last_started_at: time(2)?,
                last_finished_at: time(3)?,
                last_success_at: time(4)?,
                last_error,
                last_pass,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use crate::store::sqlite::SqliteStore as Store;
    use chrono::TimeZone;

    use super::*;
    use crate::rotation::BucketRotation;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, day, hour, 0, 0).unwrap()
    }

    fn open(dir: &tempfile::TempDir) -> Store {
        crate::store::sqlite::open_test_store(dir)
    }

    fn hash(n: u8) -> IdentityHash {
        IdentityHash::from_bytes([n; 32])
    }

    /// Imports identities `id0..idN` with hashes `[n; 32]`.
    fn import(store: &Store, count: u8, now: DateTime<Utc>) {
        let mut import = store.import_identities(now).unwrap();
        for n in 0..count {
            let id = format!("id{n}");
            import
                .stage(u64::from(n) + 2, &id, Some((IdentityType::Email, &hash(n))))
                .unwrap();
        }
        import.commit().unwrap();
    }

    fn mapped(uid2: &str, bucket: Option<&str>, refresh: Option<DateTime<Utc>>) -> MapOutcome {
        MapOutcome::Mapped {
            uid2: uid2.to_owned(),
            previous_uid2: None,
            refresh_from: refresh,
            bucket_id: bucket.map(str::to_owned),
        }
    }

    fn ids(due: &[DueIdentity]) -> Vec<&str> {
        due.iter().map(|d| d.id.as_str()).collect()
    }

    /// Reads every due identity in batches of `batch`, as a pass does.
    fn read_all(
        store: &Store,
        cursor: &mut DueCursor,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let mut all = Vec::new();
        loop {
            let due = store.next_due(cursor, batch, now).unwrap();
            all.extend(due.iter().map(|d| d.id.clone()));
            if due.len() < batch {
                return all;
            }
        }
    }

    /// One pass at `now` over everything due, answered by `outcome` per id.
    fn map_due(
        store: &Store,
        api: MapApi,
        now: DateTime<Utc>,
        outcome: impl Fn(&str) -> MapOutcome,
    ) {
        let mut cursor = DueCursor::new(api, now, None, None);
        let batch = store.next_due(&mut cursor, 100, now).unwrap();
        let outcomes: Vec<_> = batch.iter().map(|d| outcome(&d.id)).collect();
        store.commit_mappings(&batch, &outcomes, now).unwrap();
    }

    #[test]
    fn an_answer_for_a_value_re_imported_while_in_flight_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        import(&store, 2, at(1, 0));
        let mut cursor = DueCursor::new(MapApi::V3, at(1, 1), None, None);
        let batch = store.next_due(&mut cursor, 10, at(1, 1)).unwrap();
        // id0 gets a new value while its request is in flight.
        let mut import = store.import_identities(at(1, 1)).unwrap();
        import
            .stage(2, "id0", Some((IdentityType::Email, &hash(9))))
            .unwrap();
        import.commit().unwrap();

        let refresh = Some(at(30, 0));
        let outcomes = [
            mapped("UID-A", None, refresh),
            mapped("UID-B", None, refresh),
        ];
        let counts = store.commit_mappings(&batch, &outcomes, at(1, 2)).unwrap();
        assert_eq!((counts.changed, counts.superseded), (1, 1));
        let counts = store.identity_counts(MapApi::V3, at(1, 2)).unwrap();
        assert_eq!((counts.mapped, counts.unmapped), (1, 1));
    }

    #[test]
    fn a_pass_reads_each_due_identity_once_across_batches_and_sets() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        import(&store, 9, at(1, 0));
        // Map them all; id2, id5 and id7 come due on the 10th.
        map_due(&store, MapApi::V3, at(1, 1), |id| {
            let day = if ["id2", "id5", "id7"].contains(&id) {
                10
            } else {
                30
            };
            mapped(&format!("U-{id}"), None, Some(at(day, 0)))
        });
        // And two new ones arrive.
        let mut import = store.import_identities(at(5, 0)).unwrap();
        for (n, id) in [(20u8, "new-a"), (21, "new-b")] {
            import
                .stage(2, id, Some((IdentityType::Email, &hash(n))))
                .unwrap();
        }
        import.commit().unwrap();

        let mut cursor = DueCursor::new(MapApi::V3, at(11, 0), None, None);
        let all = read_all(&store, &mut cursor, 2, at(11, 0));
        assert_eq!(all, ["new-a", "new-b", "id2", "id5", "id7"]);
        assert!(cursor.is_done());
    }

    #[test]
    fn a_remaps_budget_holds_back_only_identities_mapped_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        import(&store, 6, at(1, 0));
        map_due(&store, MapApi::V3, at(1, 1), |id| {
            mapped(&format!("U-{id}"), None, Some(at(10, 0)))
        });
        let mut import = store.import_identities(at(5, 0)).unwrap();
        import
            .stage(2, "new", Some((IdentityType::Email, &hash(50))))
            .unwrap();
        import.commit().unwrap();

        let mut cursor = DueCursor::new(MapApi::V3, at(11, 0), None, Some(2));
        let all = read_all(&store, &mut cursor, 100, at(11, 0));
        assert_eq!(all, ["new", "id0", "id1"]);
        assert!(!cursor.is_done(), "four re-maps are left for later passes");
        assert_eq!(store.remaps_due(MapApi::V3, at(11, 0)).unwrap(), 6);
    }

    #[test]
    fn v2_due_means_a_rotation_observed_after_the_mapping_whose_day_had_not_ended() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        import(&store, 3, at(1, 0));
        // Mapped on the 10th at 09:00: id0 in A, id1 in B, id2 in C.
        let mut cursor = DueCursor::new(MapApi::V2, at(10, 9), None, None);
        let batch = store.next_due(&mut cursor, 10, at(10, 9)).unwrap();
        let outcomes = [
            mapped("U0", Some("A"), None),
            mapped("U1", Some("B"), None),
            mapped("U2", Some("C"), None),
        ];
        store.commit_mappings(&batch, &outcomes, at(10, 9)).unwrap();
        // Observed at noon: A rotated on the 10th (stamped 00:00, maybe
        // after 09:00); B on the 8th, a day that ended before the mapping.
        // C's rotation on the 10th was observed at 08:00, before it.
        let rotation = |bucket: &str, day| BucketRotation {
            bucket_id: bucket.into(),
            last_updated: at(day, 0),
        };
        store.ingest(vec![rotation("C", 10)], at(10, 8)).unwrap();
        store
            .ingest(vec![rotation("A", 10), rotation("B", 8)], at(10, 12))
            .unwrap();

        let mut cursor = DueCursor::new(MapApi::V2, at(10, 13), None, None);
        let due = store.next_due(&mut cursor, 10, at(10, 13)).unwrap();
        assert_eq!(ids(&due), ["id0"]);
        // Rotations looked at by a complete pass are not read again.
        let mut cursor = DueCursor::new(MapApi::V2, at(10, 13), Some(at(10, 12)), None);
        assert!(
            store
                .next_due(&mut cursor, 10, at(10, 13))
                .unwrap()
                .is_empty()
        );
    }

    /// Every due set is read from an index, in the index's order: no scan
    /// of the identities and no sort, whatever their number. (The v2 set
    /// scans the rotations observed since the last complete pass.)
    #[test]
    fn each_due_set_reads_an_index_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let conn = store.connection();
        for &set in V3_SETS.iter().chain(V2_SETS) {
            for first in [true, false] {
                let sql = set_query(set, first);
                let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                // Unbound parameters are NULL: the plan does not depend on them.
                let mut rows = explain.raw_query();
                let mut plan = Vec::new();
                while let Some(row) = rows.next().unwrap() {
                    plan.push(row.get::<_, String>(3).unwrap());
                }
                let plan = plan.join("; ");
                assert!(!plan.contains("SCAN i "), "{set:?}: {plan}");
                assert!(!plan.ends_with("SCAN i"), "{set:?}: {plan}");
                assert!(!plan.contains("TEMP B-TREE"), "{set:?}: {plan}");
                assert!(plan.contains("USING INDEX identity_"), "{set:?}: {plan}");
                // The rotation log is read from the cutoff on, not whole.
                assert!(!plan.contains("SCAN b"), "{set:?}: {plan}");
            }
        }
    }

    #[test]
    fn pruning_stops_at_the_oldest_record_still_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        import(&store, 3, at(1, 0));
        // Mapped on the 2nd, the 5th, then (a clock stepped back) the 1st.
        for (n, day) in [(0u8, 2), (1, 5), (2, 1)] {
            let id = format!("id{n}");
            map_due(&store, MapApi::V3, at(day, 12), |due| {
                if due == id {
                    mapped(&format!("U-{due}"), None, Some(at(30, 0)))
                } else {
                    MapOutcome::Unknown
                }
            });
        }
        let seqs = |store: &Store| {
            let mut seqs = Vec::new();
            store
                .changes(0, None, |change| -> Result<(), StoreError> {
                    seqs.push(change.seq);
                    Ok(())
                })
                .unwrap();
            seqs
        };
        assert_eq!(seqs(&store), [1, 2, 3]);
        assert_eq!(store.prune_changes(at(3, 0)).unwrap(), 1);
        assert_eq!(seqs(&store), [2, 3]);
        assert_eq!(store.prune_changes(at(6, 0)).unwrap(), 2);
        assert!(seqs(&store).is_empty());
    }

    #[test]
    fn pruning_old_changes_never_reuses_a_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        import(&store, 2, at(1, 0));
        map_due(&store, MapApi::V3, at(1, 1), |id| {
            mapped(if id == "id0" { "A" } else { "B" }, None, Some(at(2, 0)))
        });
        assert_eq!(store.prune_changes(at(1, 2)).unwrap(), 2);

        let mut cursor = DueCursor::new(MapApi::V3, at(3, 0), None, None);
        let batch = store.next_due(&mut cursor, 10, at(3, 0)).unwrap();
        let outcomes = [MapOutcome::OptOut, mapped("B", None, Some(at(30, 0)))];
        let counts = store.commit_mappings(&batch, &outcomes, at(3, 0)).unwrap();
        assert_eq!((counts.changed, counts.optout, counts.unchanged), (1, 1, 1));
        let mut seqs = Vec::new();
        store
            .changes(0, None, |change| -> Result<(), StoreError> {
                seqs.push((
                    change.seq,
                    change.status.clone(),
                    change.previous_uid2.clone(),
                ));
                Ok(())
            })
            .unwrap();
        assert_eq!(seqs, [(3, "optout".to_owned(), Some("A".to_owned()))]);
    }
}
