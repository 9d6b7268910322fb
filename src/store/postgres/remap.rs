//! What the re-map worker reads and writes on PostgreSQL, where workers on
//! several machines share the identities.
//!
//! Reading a due set is claiming it: the rows are locked `FOR UPDATE SKIP
//! LOCKED` (a row another worker is claiming right now is passed over, not
//! waited for) and leased to the pass until its answer is committed. A
//! lease that is still running keeps the identity out of every other
//! pass's reading; a commit writes only identities that still carry the
//! pass's lease, so an answer that arrives after its lease ran out and
//! another worker claimed the identity is dropped, not written twice.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use postgres::types::{ToSql, Type};
use postgres::{GenericClient, Row};

use super::identities::identity_counts_in;
use super::{PostgresStore, for_each_row, pg_error, read_snapshot};
use crate::identity::IdentityHash;
use crate::store::StoreError;
use crate::store::identities::{IdentityCounts, parse_type, type_name};
use crate::store::remap::{
    BatchCounts, ChangeRecord, CurrentRow, Dialect, DueCursor, DueIdentity, DueSet, KeyPart,
    MapApi, MapOutcome, MappingState, MappingStateRow, PassCounts, PassEnd, SortColumn, Written,
    count_query, judge, oldest_still_due_query, rotations_checked_up_to, set_query, state_sql,
};
use crate::timestamp::to_millis;

const DUE: &str = "claiming the identities due for mapping";
const COMMIT: &str = "recording identity-map answers";
const STATE: &str = "recording the re-map pass";
const CHANGES: &str = "reading the change feed";
const PRUNE: &str = "pruning the change feed";
const COUNT: &str = "counting identities";

const POSTGRES: Dialect = Dialect {
    join: "JOIN",
    latest_rotation: latest_rotation_of,
    unclaimed: " AND (i.lease_expires_ms IS NULL OR i.lease_expires_ms <= ?3)",
};

/// The `bucket` table holds each bucket's latest rotation.
fn latest_rotation_of(bucket: &str) -> String {
    format!("(SELECT l.last_updated_ms FROM bucket AS l WHERE l.bucket_id = {bucket})")
}

/// `?N` placeholders as PostgreSQL spells them.
fn dollars(sql: &str) -> String {
    sql.replace('?', "$")
}

impl PostgresStore {
    /// Claims up to `limit` due identities past `cursor` for its pass and
    /// moves it on.
    pub(crate) fn next_due(
        &self,
        cursor: &mut DueCursor,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<DueIdentity>, StoreError> {
        let mut client = self.client();
        cursor
            .fill(limit, |cursor, wanted, out| {
                claim_set(&mut **client, cursor, wanted, now, out)
            })
            .map_err(pg_error(DUE))
    }

    /// Commits one batch's answers in one transaction, for the identities
    /// that still carry the lease `lease_id` and the value that was sent. An
    /// identity whose UID2 or status changed gets one change record.
    pub(crate) fn commit_mappings(
        &self,
        lease_id: &str,
        batch: &[DueIdentity],
        outcomes: &[MapOutcome],
        now: DateTime<Utc>,
    ) -> Result<BatchCounts, StoreError> {
        let mut client = self.client();
        let mut tx = client.transaction().map_err(pg_error(COMMIT))?;
        let counts = commit_in(&mut tx, lease_id, batch, outcomes, to_millis(now))
            .map_err(pg_error(COMMIT))?;
        tx.commit().map_err(pg_error(COMMIT))?;
        Ok(counts)
    }

    /// Drops every lease of the pass `lease_id`. Reads the whole table (no
    /// index on leases, so claims rewrite none): only a pass that stopped
    /// early calls it.
    pub(crate) fn release_claims(&self, lease_id: &str) -> Result<(), StoreError> {
        self.client()
            .execute(
                "UPDATE identity SET lease_id = NULL, lease_expires_ms = NULL
                 WHERE lease_id = $1",
                &[&lease_id],
            )
            .map(drop)
            .map_err(pg_error(STATE))
    }

    pub(crate) fn record_pass_start(
        &self,
        api: MapApi,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.client()
            .execute(
                &dollars(state_sql::PASS_START),
                &[&api.as_str(), &to_millis(at)],
            )
            .map(drop)
            .map_err(pg_error(STATE))
    }

    pub(crate) fn record_pass_end(
        &self,
        counts: &PassCounts,
        outcome: PassEnd<'_>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let at_ms = to_millis(at);
        let mut client = self.client();
        let mut tx = client.transaction().map_err(pg_error(STATE))?;
        let counted = [
            counts.sent,
            counts.changed,
            counts.unchanged,
            counts.optout,
            counts.invalid,
            counts.requests,
        ]
        .map(|n| n as i64);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&at_ms];
        params.extend(counted.iter().map(|n| n as &(dyn ToSql + Sync)));
        tx.execute(&dollars(state_sql::PASS_COUNTS), &params)
            .map_err(pg_error(STATE))?;
        match outcome {
            PassEnd::Complete { rotations } => {
                let checked = match rotations {
                    Some(read) => {
                        let after = read.after.map_or(i64::MIN, to_millis);
                        let oldest: Option<i64> = tx
                            .query_one(
                                &dollars(&oldest_still_due_query(&POSTGRES)),
                                &[&Option::<i64>::None, &at_ms, &at_ms, &after],
                            )
                            .map_err(pg_error(STATE))?
                            .get(0);
                        Some(to_millis(rotations_checked_up_to(read.up_to, oldest)))
                    }
                    None => None,
                };
                tx.execute(&dollars(state_sql::PASS_SUCCESS), &[&at_ms, &checked])
            }
            PassEnd::Partial => Ok(0),
            PassEnd::Failed { kind, message } => tx.execute(
                &dollars(state_sql::PASS_FAILURE),
                &[&at_ms, &kind, &message],
            ),
        }
        .map_err(pg_error(STATE))?;
        tx.commit().map_err(pg_error(STATE))
    }

    pub(crate) fn mapping_state(&self) -> Result<MappingState, StoreError> {
        mapping_state_in(&mut **self.client()).map_err(pg_error(STATE))
    }

    /// Identity counts; `due` by the rule of `api`, from one snapshot.
    pub(crate) fn identity_counts(
        &self,
        api: MapApi,
        now: DateTime<Utc>,
    ) -> Result<IdentityCounts, StoreError> {
        let mut client = self.client();
        let mut tx = read_snapshot(&mut client).map_err(pg_error(COUNT))?;
        let mut counts = identity_counts_in(&mut tx).map_err(pg_error(COUNT))?;
        counts.due = count_due(&mut tx, api, now, true).map_err(pg_error(COUNT))?;
        tx.commit().map_err(pg_error(COUNT))?;
        Ok(counts)
    }

    /// How many identities mapped before are due again by the rule of
    /// `api`, claimed or not: what `run` paces.
    pub(crate) fn remaps_due(&self, api: MapApi, now: DateTime<Utc>) -> Result<u64, StoreError> {
        count_due(&mut **self.client(), api, now, false).map_err(pg_error(COUNT))
    }

    /// Calls `each` for change records after `after` in `seq` order, at
    /// most `limit` of them, from one snapshot, a page at a time.
    pub(crate) fn changes<E: From<StoreError>>(
        &self,
        after: i64,
        limit: Option<u64>,
        mut each: impl FnMut(&ChangeRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let limit = limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        for_each_row(
            &mut self.client(),
            CHANGES,
            &dollars(state_sql::CHANGES),
            &[&after, &limit],
            |row| each(&ChangeRecord::read(row).map_err(pg_error(CHANGES))?),
        )
    }

    /// Deletes change records older than `cutoff`.
    pub(crate) fn prune_changes(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        self.client()
            .execute(&dollars(state_sql::PRUNE), &[&to_millis(cutoff)])
            .map_err(pg_error(PRUNE))
    }
}

/// The parameters of a set query, typed: a set's first read leaves the
/// last key's placeholders out, and the server must still know them.
fn set_parameter_types(set: DueSet) -> [Type; 7] {
    let key = match set.sort_column() {
        Some(SortColumn::Bucket) => Type::TEXT,
        _ => Type::INT8,
    };
    [
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        key,
        Type::TEXT,
        Type::TEXT,
    ]
}

/// Claims up to `limit` rows of the cursor's current set past its last key,
/// skipping rows leased to a pass or being claimed right now, and leases
/// them to the cursor's pass.
fn claim_set(
    client: &mut impl GenericClient,
    cursor: &mut DueCursor,
    limit: usize,
    now: DateTime<Utc>,
    out: &mut Vec<DueIdentity>,
) -> Result<usize, postgres::Error> {
    let set = cursor.current_set();
    let select = set_query(set, cursor.after.is_none(), &POSTGRES);
    let sql = dollars(&format!(
        "WITH due AS ({select} FOR UPDATE OF i SKIP LOCKED),
         claimed AS (
             UPDATE identity AS t SET lease_id = ?8, lease_expires_ms = ?9
             FROM due WHERE t.id = due.id
             RETURNING due.*, t.status AS held_status, t.uid2 AS held_uid2,
                       t.previous_uid2 AS held_previous_uid2)
         SELECT * FROM claimed ORDER BY {order}",
        order = set.selected_order(),
    ));
    let mut types = set_parameter_types(set).to_vec();
    types.extend([Type::TEXT, Type::INT8]);
    let statement = client.prepare_typed(&sql, &types)?;
    let (key, second_key, last_id) = cursor.last_key();
    let key_int = |part: &Option<KeyPart>| match part {
        Some(KeyPart::Int(n)) => Some(*n),
        _ => None,
    };
    let key_text = |part: &Option<KeyPart>| match part {
        Some(KeyPart::Text(text)) => Some(text.clone()),
        _ => None,
    };
    let limit = limit as i64;
    let now_ms = to_millis(now);
    let expires = cursor.lease_expires_ms(now);
    let (key_as_int, key_as_text) = (key_int(&key), key_text(&key));
    let key_param: &(dyn ToSql + Sync) = match set.sort_column() {
        Some(SortColumn::Bucket) => &key_as_text,
        _ => &key_as_int,
    };
    let second = key_text(&second_key);
    let rows = client.query(
        &statement,
        &[
            &limit,
            &cursor.started_ms,
            &now_ms,
            &cursor.rotations_after_ms,
            key_param,
            &last_id,
            &second,
            &cursor.lease_id(),
            &expires,
        ],
    )?;
    let read = rows.len();
    for row in &rows {
        let mut identity = due_identity(row)?;
        identity.held = Some(CurrentRow {
            status: row.try_get("held_status")?,
            uid2: row.try_get("held_uid2")?,
            previous_uid2: row.try_get("held_previous_uid2")?,
        });
        let sort_key = set.sort_key_of(row)?;
        cursor.advance(identity, sort_key, out);
    }
    Ok(read)
}

fn due_identity(row: &Row) -> Result<DueIdentity, postgres::Error> {
    let kind: &str = row.try_get(1)?;
    let hash: &[u8] = row.try_get(2)?;
    // The table's checks allow nothing else.
    let kind = parse_type(kind).expect("identity_type is 'email' or 'phone'");
    let hash: [u8; 32] = hash.try_into().expect("hash is 32 bytes");
    Ok(DueIdentity {
        id: row.try_get(0)?,
        kind,
        hash: IdentityHash::from_bytes(hash),
        held: None,
    })
}

/// Counts the due sets of `api` (the new identities' too, if `new`).
fn count_due(
    client: &mut impl GenericClient,
    api: MapApi,
    now: DateTime<Utc>,
    new: bool,
) -> Result<u64, postgres::Error> {
    let state = mapping_state_in(client)?;
    let now_ms = to_millis(now);
    DueCursor::count(api, &state, new, |set, rotations_after_ms| {
        let sql = dollars(&count_query(set, &POSTGRES));
        let statement = client.prepare_typed(&sql, &set_parameter_types(set)[..4])?;
        let count: i64 = client
            .query_one(
                &statement,
                &[&Option::<i64>::None, &now_ms, &now_ms, &rotations_after_ms],
            )?
            .get(0);
        Ok(count as u64)
    })
}

/// Writes one batch's answers: each judged against its row as the claim
/// read it, written with one statement that lands only on rows still
/// leased to the pass with the value that was sent, and the change records
/// of those that landed appended with another.
fn commit_in(
    tx: &mut postgres::Transaction<'_>,
    lease_id: &str,
    batch: &[DueIdentity],
    outcomes: &[MapOutcome],
    now_ms: i64,
) -> Result<BatchCounts, postgres::Error> {
    // Judged against the row as the claim read it: while the identity
    // carries this pass's lease, nothing else wrote it (a commit needs the
    // lease; an import that gives it a new value drops the lease).
    let mut counts = BatchCounts::default();
    let mut written = Columns::default();
    let mut released = Vec::new();
    for (identity, outcome) in batch.iter().zip(outcomes) {
        let mut judged = BatchCounts::default();
        match judge(identity.held.as_ref(), outcome, &mut judged) {
            Some(answer) => written.push(identity, &answer, judged),
            None => {
                counts += judged;
                released.push(identity.id.as_str());
            }
        }
    }
    // The fence: only rows that still carry the lease and the value sent.
    let landed: HashSet<String> = tx
        .query(
            "UPDATE identity AS i
             SET status = a.status, uid2 = a.uid2, previous_uid2 = a.previous_uid2,
                 bucket_id = a.bucket_id, refresh_from_ms = a.refresh_from_ms,
                 mapped_at_ms = $9, updated_at_ms = $9, lease_id = NULL, lease_expires_ms = NULL
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::bigint[], $7::text[], $8::bytea[])
                 AS a(id, status, uid2, previous_uid2, bucket_id, refresh_from_ms,
                      identity_type, hash)
             WHERE i.id = a.id AND i.lease_id = $10
               AND i.identity_type = a.identity_type AND i.hash = a.hash
             RETURNING i.id",
            &[
                &written.ids,
                &written.statuses,
                &written.uid2s,
                &written.previous,
                &written.buckets,
                &written.refresh,
                &written.types,
                &written.hashes,
                &now_ms,
                &lease_id,
            ],
        )?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut changes = Vec::new();
    for (index, id) in written.ids.iter().enumerate() {
        if landed.contains(id) {
            counts += written.counts[index];
            if let Some(change) = &written.changes[index] {
                changes.push(change);
            }
        } else {
            counts.superseded += 1;
        }
    }
    // Identities answered with an unknown reason stay as they are, free
    // for the next pass.
    if !released.is_empty() {
        tx.execute(
            "UPDATE identity SET lease_id = NULL, lease_expires_ms = NULL
             WHERE id = ANY($1) AND lease_id = $2",
            &[&released, &lease_id],
        )?;
    }
    if !changes.is_empty() {
        // Held until commit: change records become visible in `seq` order
        // (migrations/postgres/V2__identities.sql).
        tx.batch_execute("LOCK TABLE identity_change IN SHARE ROW EXCLUSIVE MODE")?;
        let (ids, statuses, uid2s, old): (Vec<_>, Vec<_>, Vec<_>, Vec<_>) = changes.iter().fold(
            (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
            |mut columns, change| {
                columns.0.push(change.0.as_str());
                columns.1.push(change.1);
                columns.2.push(change.2.as_deref());
                columns.3.push(change.3.as_deref());
                columns
            },
        );
        tx.execute(
            "INSERT INTO identity_change (id, status, uid2, previous_uid2, changed_at_ms)
             SELECT id, status, uid2, previous_uid2, $5
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                 WITH ORDINALITY AS c(id, status, uid2, previous_uid2, pos)
             ORDER BY pos",
            &[&ids, &statuses, &uid2s, &old, &now_ms],
        )?;
    }
    Ok(counts)
}

/// One change record: id, status, UID2, previous UID2.
type Change = (String, &'static str, Option<String>, Option<String>);

/// One batch's rows to write, as columns, with the value each was sent
/// for, what each counts, and its change record if it changed.
#[derive(Default)]
struct Columns {
    ids: Vec<String>,
    statuses: Vec<&'static str>,
    uid2s: Vec<Option<String>>,
    previous: Vec<Option<String>>,
    buckets: Vec<Option<String>>,
    refresh: Vec<Option<i64>>,
    types: Vec<&'static str>,
    hashes: Vec<Vec<u8>>,
    counts: Vec<BatchCounts>,
    changes: Vec<Option<Change>>,
}

impl Columns {
    fn push(&mut self, identity: &DueIdentity, answer: &Written<'_>, counts: BatchCounts) {
        let owned = |text: Option<&str>| text.map(str::to_owned);
        self.ids.push(identity.id.clone());
        self.statuses.push(answer.status.as_str());
        self.uid2s.push(owned(answer.uid2));
        self.previous.push(owned(answer.previous_uid2));
        self.buckets.push(owned(answer.bucket_id));
        self.refresh.push(answer.refresh_from_ms);
        self.types.push(type_name(identity.kind));
        self.hashes.push(identity.hash.as_bytes().to_vec());
        self.counts.push(counts);
        self.changes.push(answer.changed.then(|| {
            (
                identity.id.clone(),
                answer.status.as_str(),
                owned(answer.uid2),
                owned(answer.old_uid2),
            )
        }));
    }
}

fn mapping_state_in(client: &mut impl GenericClient) -> Result<MappingState, postgres::Error> {
    let row = client.query_one(
        &format!(
            "SELECT {} FROM mapping_state WHERE id = 1",
            MappingStateRow::COLUMNS
        ),
        &[],
    )?;
    MappingStateRow::read(&row)
}
