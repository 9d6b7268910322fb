//! The re-map worker's side of the store, the same for both backends: which
//! identities are due (the due sets and their queries), where a pass stands
//! in them ([`DueCursor`]), what an answer writes ([`judge`]), and the
//! records a pass and the change feed are read into.
//!
//! Due sets are read in keyset order, each along its own index, so a pass
//! costs what is due rather than what is stored, and an identity is read at
//! most once per pass whatever the passes' answers commit meanwhile. On
//! PostgreSQL a read is also a claim: the rows are leased to the pass, so
//! workers on several machines split the due sets between them.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Failure;
use super::columns::Columns;
use super::identities::IdentityStatus;
use crate::identity::{IdentityHash, IdentityType};
use crate::timestamp::{from_millis, to_millis};

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
    /// PostgreSQL: the row as the claim read it, which its answer is
    /// judged against. SQLite reads it again inside the commit.
    pub(super) held: Option<CurrentRow>,
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
pub(super) enum DueSet {
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
pub(super) enum SortColumn {
    RefreshFrom,
    Bucket,
    /// The rotation log's order: observed, then bucket.
    Rotation,
}

impl DueSet {
    /// The order of a set's rows by the names it selects them as: its sort
    /// columns, then `id`.
    pub(super) fn selected_order(self) -> &'static str {
        match self.sort_column() {
            Some(SortColumn::RefreshFrom) => "refresh_from_ms, id",
            Some(SortColumn::Bucket) => "bucket_id, id",
            Some(SortColumn::Rotation) => "observed_at_ms, bucket_id, id",
            None => "id",
        }
    }

    /// The sort key of a row this set's query selected: its columns after
    /// `id`, `identity_type` and `hash`.
    pub(super) fn sort_key_of<R: Columns>(self, row: &R) -> Result<Option<SortKey>, R::Error> {
        Ok(match self.sort_column() {
            Some(SortColumn::RefreshFrom) => Some(SortKey::Time(row.number(3)?)),
            Some(SortColumn::Bucket) => Some(SortKey::Bucket(row.text(3)?)),
            Some(SortColumn::Rotation) => Some(SortKey::Rotation(row.number(3)?, row.text(4)?)),
            None => None,
        })
    }

    /// `None`: ordered by `id` alone.
    pub(super) fn sort_column(self) -> Option<SortColumn> {
        match self {
            Self::RefreshDue | Self::WithoutBucket => Some(SortColumn::RefreshFrom),
            Self::WithoutRefresh => Some(SortColumn::Bucket),
            Self::BucketRotated => Some(SortColumn::Rotation),
            Self::Unmapped => None,
        }
    }
}

pub(super) const V3_SETS: &[DueSet] =
    &[DueSet::Unmapped, DueSet::WithoutRefresh, DueSet::RefreshDue];
pub(super) const V2_SETS: &[DueSet] = &[
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
    pub(super) sets: &'static [DueSet],
    pub(super) set: usize,
    /// The last key read in the current set: `id`, or the set's ordering
    /// column followed by `id`.
    pub(super) after: Option<(Option<SortKey>, String)>,
    pub(super) started_ms: i64,
    /// v2: only rotations observed after this are read.
    pub(super) rotations_after_ms: i64,
    /// How many more identities mapped before may be read; new ones are
    /// not counted.
    remaps_left: Option<u64>,
    pub(super) claims: PassClaims,
}

/// PostgreSQL: the lease id of every identity a pass claims, and how long a
/// claim holds. An answer is committed only while the identity still
/// carries its pass's lease.
#[derive(Debug, Clone)]
pub(crate) struct PassClaims {
    pub(super) lease_id: String,
    pub(super) lease: Duration,
}

impl PassClaims {
    /// Claims that hold for `lease`: longer than a request and its retries
    /// may take.
    pub(crate) fn new(lease: Duration) -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("operating system random source unavailable");
        Self {
            lease_id: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            lease,
        }
    }

    pub(crate) fn lease_id(&self) -> &str {
        &self.lease_id
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SortKey {
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
        claims: PassClaims,
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
            claims,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.set >= self.sets.len()
    }

    pub(crate) fn lease_id(&self) -> &str {
        self.claims.lease_id()
    }

    pub(super) fn current_set(&self) -> DueSet {
        self.sets[self.set]
    }

    /// Reads up to `limit` due identities, a set at a time: `read` reads up
    /// to `wanted` of the current set past the last key, in key order,
    /// [`advance`](Self::advance)s past each, and says how many it read.
    /// Fewer than `limit` only when the pass has read every set or its
    /// re-maps budget.
    pub(super) fn fill<E>(
        &mut self,
        limit: usize,
        mut read: impl FnMut(&mut Self, usize, &mut Vec<DueIdentity>) -> Result<usize, E>,
    ) -> Result<Vec<DueIdentity>, E> {
        let mut due = Vec::with_capacity(limit);
        while due.len() < limit && !self.is_done() {
            let mut wanted = limit - due.len();
            let remaps = self.current_set() != DueSet::Unmapped;
            if remaps && let Some(left) = self.remaps_left {
                if left == 0 {
                    break;
                }
                wanted = wanted.min(usize::try_from(left).unwrap_or(usize::MAX));
            }
            let read = read(self, wanted, &mut due)?;
            if remaps && let Some(left) = &mut self.remaps_left {
                *left -= read as u64;
            }
            if read < wanted {
                self.set += 1;
                self.after = None;
            }
        }
        Ok(due)
    }

    /// Records `identity`, read with `sort_key`, as the last key read.
    pub(super) fn advance(
        &mut self,
        identity: DueIdentity,
        sort_key: Option<SortKey>,
        out: &mut Vec<DueIdentity>,
    ) {
        self.after = Some((sort_key, identity.id.clone()));
        out.push(identity);
    }

    /// The last key read, as the set queries bind it: the sort key's first
    /// and second parts, and the id.
    pub(super) fn last_key(&self) -> (Option<KeyPart>, Option<KeyPart>, Option<&str>) {
        match &self.after {
            None => (None, None, None),
            Some((key, id)) => {
                let (first, second) = match key {
                    Some(SortKey::Time(ms)) => (Some(KeyPart::Int(*ms)), None),
                    Some(SortKey::Bucket(bucket)) => (Some(KeyPart::Text(bucket.clone())), None),
                    Some(SortKey::Rotation(observed_ms, bucket)) => (
                        Some(KeyPart::Int(*observed_ms)),
                        Some(KeyPart::Text(bucket.clone())),
                    ),
                    None => (None, None),
                };
                (first, second, Some(id.as_str()))
            }
        }
    }

    /// When this pass's claims run out, from `now`.
    pub(super) fn lease_expires_ms(&self, now: DateTime<Utc>) -> i64 {
        let lease = i64::try_from(self.claims.lease.as_millis()).unwrap_or(i64::MAX);
        to_millis(now).saturating_add(lease)
    }

    /// Counts what a pass of `api` starting now would read (the new
    /// identities too, if `new`), a set at a time by `count`, which gets
    /// the set and the rotations cutoff (`?4`); the pass's start and now
    /// (`?2`, `?3`) are both now.
    pub(super) fn count<E>(
        api: MapApi,
        state: &MappingState,
        new: bool,
        mut count: impl FnMut(DueSet, i64) -> Result<u64, E>,
    ) -> Result<u64, E> {
        let rotations_after_ms = state.rotations_checked_for(api).map_or(i64::MIN, to_millis);
        let sets = match api {
            MapApi::V3 => V3_SETS,
            MapApi::V2 => V2_SETS,
        };
        let mut total = 0;
        for &set in sets {
            if new || set != DueSet::Unmapped {
                total += count(set, rotations_after_ms)?;
            }
        }
        Ok(total)
    }
}

/// One part of a last key read, as bound to a set query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KeyPart {
    Int(i64),
    Text(String),
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

impl ChangeRecord {
    /// Reads a row of [`state_sql::CHANGES`].
    pub(super) fn read<R: Columns>(row: &R) -> Result<Self, R::Error> {
        Ok(Self {
            seq: row.number(0)?,
            id: row.text(1)?,
            uid2: row.optional_text(2)?,
            previous_uid2: row.optional_text(3)?,
            status: row.text(4)?,
            changed_at: from_millis(row.number(5)?),
        })
    }
}

/// How a pass ended, for [`Store::record_pass_end`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum PassEnd<'a> {
    /// Everything due was read and answered. `rotations`: v2, which
    /// rotations were looked at.
    Complete {
        rotations: Option<RotationsRead>,
    },
    /// Stopped early, by `--limit`, a budget or a shutdown; not an error.
    Partial,
    Failed {
        kind: &'a str,
        message: &'a str,
    },
}

/// The rotations a complete v2 pass looked at: observed after `after`
/// (where it started reading), up to `up_to`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RotationsRead {
    pub after: Option<DateTime<Utc>>,
    pub up_to: DateTime<Utc>,
}

/// The columns every due set reads, and the condition that keeps an
/// identity mapped by this pass out of it (`?2`: the pass's start).
const SELECT_DUE: &str = "SELECT i.id, i.identity_type, i.hash";
const MAPPED_BEFORE_PASS: &str = "i.mapped_at_ms < ?2";
const DAY_MS: i64 = 24 * 3600 * 1000;

/// What the set queries need to know of a backend's SQL.
pub(super) struct Dialect {
    /// Joins the rotation log to the identities so that the rotations
    /// drive the join (`CROSS JOIN … ON` keeps that order on SQLite).
    pub join: &'static str,
    /// A bucket's latest rotation time, for the bucket expression given.
    pub latest_rotation: fn(&str) -> String,
    /// Keeps a read to the identities no pass holds: empty where one
    /// writer at a time means no claims.
    pub unclaimed: &'static str,
}

/// Each set's query, taking `?1` the limit, `?2` the pass's start, `?3`
/// now, `?4` the rotations cutoff, `?5`/`?7`/`?6` the last key read (its
/// sort columns, then `id`). Selects `id`, `identity_type`, `hash`, then
/// the sort columns.
pub(super) fn set_query(set: DueSet, first: bool, dialect: &Dialect) -> String {
    set_sql(set, first, dialect, dialect.unclaimed)
}

/// A set's query with `extra` added to its condition.
fn set_sql(set: DueSet, first: bool, dialect: &Dialect, extra: &str) -> String {
    let (from, condition, order, keyset) = match set {
        DueSet::Unmapped => (
            "identity AS i".to_owned(),
            "i.status = 'unmapped'".to_owned(),
            "i.id",
            "i.id > ?6",
        ),
        // Mapped with v2: a bucket and no refresh time.
        DueSet::WithoutRefresh => (
            "identity AS i".to_owned(),
            format!(
                "i.bucket_id IS NOT NULL AND i.status = 'mapped' AND i.refresh_from_ms IS NULL \
                 AND {MAPPED_BEFORE_PASS}"
            ),
            "i.bucket_id, i.id",
            "(i.bucket_id, i.id) > (?5, ?6)",
        ),
        DueSet::RefreshDue => (
            "identity AS i".to_owned(),
            format!("i.refresh_from_ms <= ?3 AND i.status = 'mapped' AND {MAPPED_BEFORE_PASS}"),
            "i.refresh_from_ms, i.id",
            "(i.refresh_from_ms, i.id) > (?5, ?6)",
        ),
        // Mapped with v3: a refresh time and no bucket.
        DueSet::WithoutBucket => (
            "identity AS i".to_owned(),
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
            format!(
                "rotation_log AS b {} identity AS i ON i.bucket_id = b.bucket_id",
                dialect.join
            ),
            format!(
                "b.observed_at_ms > ?4 AND b.last_updated_ms = {latest}
                 AND i.status = 'mapped' AND {MAPPED_BEFORE_PASS}
                 AND b.last_updated_ms > i.mapped_at_ms - {DAY_MS}
                 AND b.observed_at_ms > i.mapped_at_ms",
                latest = (dialect.latest_rotation)("b.bucket_id"),
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
        "{SELECT_DUE}{sort_key} FROM {from} WHERE {condition}{extra}{keyset} \
         ORDER BY {order} LIMIT ?1"
    )
}

/// Counts a set as a pass would read it whole.
pub(super) fn count_query(set: DueSet, dialect: &Dialect) -> String {
    format!("SELECT count(*) FROM ({}) AS due", whole_set(set, dialect))
}

/// The observation time of the oldest rotation that still has a due
/// identity: `?2` and `?3` now, `?4` where the pass started reading.
pub(super) fn oldest_still_due_query(dialect: &Dialect) -> String {
    format!(
        "SELECT min(observed_at_ms) FROM ({}) AS due",
        whole_set(DueSet::BucketRotated, dialect)
    )
}

/// Everything due in a set, claimed or not.
fn whole_set(set: DueSet, dialect: &Dialect) -> String {
    set_sql(set, true, dialect, "").replace(" LIMIT ?1", "")
}

/// An identity's row as a commit finds it, when it still holds the value
/// that was sent.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct CurrentRow {
    pub status: String,
    pub uid2: Option<String>,
    pub previous_uid2: Option<String>,
}

/// What one answer writes to its identity.
pub(super) struct Written<'a> {
    pub status: IdentityStatus,
    pub uid2: Option<&'a str>,
    pub previous_uid2: Option<&'a str>,
    pub bucket_id: Option<&'a str>,
    pub refresh_from_ms: Option<i64>,
    /// The UID2 held before: the change record's `previous_uid2`.
    pub old_uid2: Option<&'a str>,
    /// The UID2 or the status changed: the identity gets a change record.
    pub changed: bool,
}

/// Judges one answer against its identity's current row (`None`: removed
/// or given a new value while the request was in flight) and counts it in
/// `counts`. `None`: nothing is written for it.
pub(super) fn judge<'a>(
    current: Option<&'a CurrentRow>,
    outcome: &'a MapOutcome,
    counts: &mut BatchCounts,
) -> Option<Written<'a>> {
    let Some(current) = current else {
        counts.superseded += 1;
        return None;
    };
    let old_uid2 = current.uid2.as_deref();
    let (status, uid2, previous_uid2, bucket_id, refresh_from_ms) = match outcome {
        MapOutcome::Unknown => {
            counts.unknown += 1;
            return None;
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
                (None, Some(_)) if old_uid2 != Some(uid2.as_str()) => old_uid2,
                (None, Some(_)) => current.previous_uid2.as_deref(),
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
        MapOutcome::OptOut => (IdentityStatus::Optout, None, old_uid2, None, None),
        MapOutcome::Invalid => (IdentityStatus::Invalid, None, old_uid2, None, None),
    };
    let changed = current.status != status.as_str() || old_uid2 != uid2;
    if changed {
        counts.changed += 1;
        match status {
            IdentityStatus::Optout => counts.optout += 1,
            IdentityStatus::Invalid => counts.invalid += 1,
            _ => {}
        }
    } else {
        counts.unchanged += 1;
    }
    Some(Written {
        status,
        uid2,
        previous_uid2,
        bucket_id,
        refresh_from_ms,
        old_uid2,
        changed,
    })
}

/// The mapping state's columns as both backends read them
/// ([`MappingStateRow::COLUMNS`]).
pub(super) struct MappingStateRow {
    pub api: Option<String>,
    /// Rotations checked, last started, finished, success, error (ms).
    pub times: [Option<i64>; 5],
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    /// Sent, changed, unchanged, opted out, invalid, requests.
    pub counts: [Option<i64>; 6],
}

impl MappingStateRow {
    /// The select list, in the order of the fields.
    pub const COLUMNS: &str = "api, rotations_checked_ms, last_started_at_ms, \
        last_finished_at_ms, last_success_at_ms, last_error_at_ms, last_error_kind, \
        last_error_message, last_sent, last_changed, last_unchanged, last_optout, \
        last_invalid, last_requests";

    /// Reads a row of [`MappingStateRow::COLUMNS`].
    pub fn read<R: Columns>(row: &R) -> Result<MappingState, R::Error> {
        let number = |i| row.optional_number(i);
        Ok(Self {
            api: row.optional_text(0)?,
            times: [number(1)?, number(2)?, number(3)?, number(4)?, number(5)?],
            error_kind: row.optional_text(6)?,
            error_message: row.optional_text(7)?,
            counts: [
                number(8)?,
                number(9)?,
                number(10)?,
                number(11)?,
                number(12)?,
                number(13)?,
            ],
        }
        .into_state())
    }

    fn into_state(self) -> MappingState {
        let [checked, started, finished, success, error] = self.times.map(|ms| ms.map(from_millis));
        let last_error = match (error, self.error_kind, self.error_message) {
            (Some(at), Some(kind), Some(message)) => Some(Failure { at, kind, message }),
            _ => None,
        };
        let [sent, changed, unchanged, optout, invalid, requests] =
            self.counts.map(|n| n.map(|n| n as u64));
        let last_pass = sent.map(|sent| PassCounts {
            sent,
            changed: changed.unwrap_or(0),
            unchanged: unchanged.unwrap_or(0),
            optout: optout.unwrap_or(0),
            invalid: invalid.unwrap_or(0),
            requests: requests.unwrap_or(0),
        });
        MappingState {
            api: self.api,
            rotations_checked: checked,
            last_started_at: started,
            last_finished_at: finished,
            last_success_at: success,
            last_error,
            last_pass,
        }
    }
}

/// The rotations a complete v2 pass may record as looked at: up to
/// `proposed`, but never past a rotation that still has a due identity
/// (`oldest_still_due_ms`, the observation time of the oldest such): one
/// answered with an unknown reason, or claimed by a worker that has not
/// committed. Those stay in the next pass's reading.
pub(super) fn rotations_checked_up_to(
    proposed: DateTime<Utc>,
    oldest_still_due_ms: Option<i64>,
) -> DateTime<Utc> {
    match oldest_still_due_ms {
        Some(ms) if ms <= to_millis(proposed) => from_millis(ms - 1),
        _ => proposed,
    }
}

/// The statements on the worker's state and the change feed that both
/// backends run as written (`?N` placeholders; PostgreSQL's `$N`).
pub(super) mod state_sql {
    pub const PASS_START: &str =
        "UPDATE mapping_state SET api = ?1, last_started_at_ms = ?2 WHERE id = 1";

    pub const PASS_COUNTS: &str = "UPDATE mapping_state SET last_finished_at_ms = ?1, \
        last_sent = ?2, last_changed = ?3, last_unchanged = ?4, last_optout = ?5, \
        last_invalid = ?6, last_requests = ?7 WHERE id = 1";

    pub const PASS_SUCCESS: &str = "UPDATE mapping_state SET last_success_at_ms = ?1, \
        rotations_checked_ms = coalesce(?2, rotations_checked_ms) WHERE id = 1";

    pub const PASS_FAILURE: &str = "UPDATE mapping_state SET last_error_at_ms = ?1, \
        last_error_kind = ?2, last_error_message = ?3 WHERE id = 1";

    /// Records are pruned in `seq` order up to the first one still kept:
    /// found by reading from the oldest, so this costs what it deletes, and
    /// no record newer than the cutoff goes even if a clock stepped back
    /// between two of them.
    pub const PRUNE: &str = "DELETE FROM identity_change WHERE seq < coalesce(
             (SELECT seq FROM identity_change WHERE changed_at_ms >= ?1
              ORDER BY seq LIMIT 1),
             (SELECT max(seq) + 1 FROM identity_change))";

    /// Change records after `?1` in `seq` order, at most `?2`.
    pub const CHANGES: &str = "SELECT seq, id, uid2, previous_uid2, status, changed_at_ms \
        FROM identity_change WHERE seq > ?1 ORDER BY seq LIMIT ?2";
}
