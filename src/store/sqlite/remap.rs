//! What the re-map worker reads and writes in the SQLite file: the
//! identities due for mapping (the sets of `store::remap`), one batch's
//! answers committed together with their change records, the worker's own
//! state, and the change feed. One writer at a time, so a read needs no
//! claim.

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::identities::identity_counts_in;
use super::ingest::latest_rotation_of;
use super::{SqliteStore, sql_error};
use crate::identity::IdentityHash;
use crate::store::StoreError;
use crate::store::identities::{IdentityCounts, parse_type, type_name};
use crate::store::remap::{
    BatchCounts, ChangeRecord, CurrentRow, Dialect, DueCursor, DueIdentity, DueSet, KeyPart,
    MapApi, MapOutcome, MappingState, MappingStateRow, PassCounts, PassEnd, count_query, judge,
    oldest_still_due_query, rotations_checked_up_to, set_query, state_sql,
};
use crate::timestamp::to_millis;

const SQLITE: Dialect = Dialect {
    join: "CROSS JOIN",
    latest_rotation: latest_rotation_of,
    unclaimed: "",
};

const DUE: &str = "reading the identities due for mapping";
const COMMIT: &str = "recording identity-map answers";
const STATE: &str = "recording the re-map pass";
const CHANGES: &str = "reading the change feed";
const PRUNE: &str = "pruning the change feed";
const COUNT: &str = "counting identities";

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
        let now_ms = to_millis(now);
        cursor
            .fill(limit, |cursor, wanted, out| {
                read_set(&self.conn, cursor, wanted, now_ms, out)
            })
            .map_err(sql_error(DUE))
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
            .execute(state_sql::PASS_START, params![api.as_str(), to_millis(at)])
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
            state_sql::PASS_COUNTS,
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
            PassEnd::Complete { rotations } => {
                let checked = match rotations {
                    Some(read) => {
                        let oldest: Option<i64> = tx
                            .query_row(
                                &oldest_still_due_query(&SQLITE),
                                params![
                                    Value::Null,
                                    at_ms,
                                    at_ms,
                                    read.after.map_or(i64::MIN, to_millis)
                                ],
                                |row| row.get(0),
                            )
                            .map_err(sql_error(STATE))?;
                        Some(to_millis(rotations_checked_up_to(read.up_to, oldest)))
                    }
                    None => None,
                };
                tx.execute(state_sql::PASS_SUCCESS, params![at_ms, checked])
            }
            PassEnd::Partial => Ok(0),
            PassEnd::Failed { kind, message } => {
                tx.execute(state_sql::PASS_FAILURE, params![at_ms, kind, message])
            }
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
        let mut select = tx.prepare(state_sql::CHANGES).map_err(sql_error(CHANGES))?;
        let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut rows = select
            .query(params![after, limit])
            .map_err(sql_error(CHANGES))?;
        while let Some(row) = rows.next().map_err(sql_error(CHANGES))? {
            let record = ChangeRecord::read(row).map_err(sql_error(CHANGES))?;
            each(&record)?;
        }
        Ok(())
    }

    /// Deletes change records older than `cutoff`. `seq` values are never
    /// reused, so a consumer's saved position stays meaningful.
    pub(crate) fn prune_changes(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let deleted = self
            .conn
            .execute(state_sql::PRUNE, [to_millis(cutoff)])
            .map_err(sql_error(PRUNE))?;
        Ok(deleted as u64)
    }
}

fn read_set(
    conn: &Connection,
    cursor: &mut DueCursor,
    limit: usize,
    now_ms: i64,
    out: &mut Vec<DueIdentity>,
) -> rusqlite::Result<usize> {
    let set = cursor.current_set();
    let sql = set_query(set, cursor.after.is_none(), &SQLITE);
    let mut select = conn.prepare_cached(&sql)?;
    let (key, second_key, last_id) = cursor.last_key();
    let value = |part: Option<KeyPart>| match part {
        Some(KeyPart::Int(n)) => Value::Integer(n),
        Some(KeyPart::Text(text)) => Value::Text(text),
        None => Value::Null,
    };
    bind(
        &mut select,
        [
            (limit as i64).into(),
            cursor.started_ms.into(),
            now_ms.into(),
            cursor.rotations_after_ms.into(),
            value(key),
            last_id.map_or(Value::Null, |id| Value::Text(id.to_owned())),
            value(second_key),
        ],
    )?;
    let mut rows = select.raw_query();
    let mut read = 0;
    while let Some(row) = rows.next()? {
        let identity = due_identity(row)?;
        let sort_key = set.sort_key_of(row)?;
        cursor.advance(identity, sort_key, out);
        read += 1;
    }
    Ok(read)
}

fn count_set(
    conn: &Connection,
    set: DueSet,
    now_ms: i64,
    rotations_after_ms: i64,
) -> rusqlite::Result<u64> {
    let mut select = conn.prepare_cached(&count_query(set, &SQLITE))?;
    bind(
        &mut select,
        [
            Value::Null,
            now_ms.into(),
            now_ms.into(),
            rotations_after_ms.into(),
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

/// Counts the due sets of `api` (the new identities' too, if `new`).
fn count_due(
    conn: &Connection,
    api: MapApi,
    now: DateTime<Utc>,
    new: bool,
) -> rusqlite::Result<u64> {
    let state = mapping_state_in(conn)?;
    DueCursor::count(api, &state, new, |set, rotations_after_ms| {
        count_set(conn, set, to_millis(now), rotations_after_ms)
    })
}

fn due_identity(row: &Row<'_>) -> rusqlite::Result<DueIdentity> {
    let kind = parse_type(row.get_ref(1)?.as_str()?).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            "unknown identity type".into(),
        )
    })?;
    let bytes: [u8; 32] = row.get(2)?;
    Ok(DueIdentity {
        id: row.get(0)?,
        kind,
        hash: IdentityHash::from_bytes(bytes),
        held: None,
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
                    Ok(CurrentRow {
                        status: row.get(0)?,
                        uid2: row.get(1)?,
                        previous_uid2: row.get(2)?,
                    })
                },
            )
            .optional()?;
        let Some(written) = judge(found.as_ref(), outcome, &mut counts) else {
            continue;
        };
        stage.execute(params![
            pos as i64,
            identity.id,
            written.status.as_str(),
            written.uid2,
            written.previous_uid2,
            written.bucket_id,
            written.refresh_from_ms,
            written.old_uid2,
            written.changed
        ])?;
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
        &format!(
            "SELECT {} FROM mapping_state WHERE id = 1",
            MappingStateRow::COLUMNS
        ),
        [],
        |row| MappingStateRow::read(row),
    )
}

#[cfg(test)]
mod tests {
    use crate::store::sqlite::SqliteStore as Store;
    use chrono::TimeZone;

    use super::*;
    use crate::identity::IdentityType;
    use crate::rotation::BucketRotation;
    use crate::store::remap::{PassClaims, RotationsRead, V2_SETS, V3_SETS};

    fn claims() -> PassClaims {
        PassClaims::new(std::time::Duration::from_secs(60))
    }

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
        import.commit().unwrap().unwrap();
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
        let mut cursor = DueCursor::new(api, now, None, None, claims());
        let batch = store.next_due(&mut cursor, 100, now).unwrap();
        let outcomes: Vec<_> = batch.iter().map(|d| outcome(&d.id)).collect();
        store.commit_mappings(&batch, &outcomes, now).unwrap();
    }

    #[test]
    fn an_answer_for_a_value_re_imported_while_in_flight_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        import(&store, 2, at(1, 0));
        let mut cursor = DueCursor::new(MapApi::V3, at(1, 1), None, None, claims());
        let batch = store.next_due(&mut cursor, 10, at(1, 1)).unwrap();
        // id0 gets a new value while its request is in flight.
        let mut import = store.import_identities(at(1, 1)).unwrap();
        import
            .stage(2, "id0", Some((IdentityType::Email, &hash(9))))
            .unwrap();
        import.commit().unwrap().unwrap();

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
        import.commit().unwrap().unwrap();

        let mut cursor = DueCursor::new(MapApi::V3, at(11, 0), None, None, claims());
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
        import.commit().unwrap().unwrap();

        let mut cursor = DueCursor::new(MapApi::V3, at(11, 0), None, Some(2), claims());
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
        let mut cursor = DueCursor::new(MapApi::V2, at(10, 9), None, None, claims());
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

        let mut cursor = DueCursor::new(MapApi::V2, at(10, 13), None, None, claims());
        let due = store.next_due(&mut cursor, 10, at(10, 13)).unwrap();
        assert_eq!(ids(&due), ["id0"]);
        // Rotations looked at by a complete pass are not read again.
        let mut cursor = DueCursor::new(MapApi::V2, at(10, 13), Some(at(10, 12)), None, claims());
        assert!(
            store
                .next_due(&mut cursor, 10, at(10, 13))
                .unwrap()
                .is_empty()
        );
    }

    /// A complete v2 pass records the rotations it looked at only up to the
    /// oldest one that still has a due identity (here one answered with a
    /// reason this version does not know), so the next pass reads it again.
    #[test]
    fn a_complete_v2_pass_keeps_a_rotation_with_an_identity_still_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        import(&store, 2, at(1, 0));
        let mut cursor = DueCursor::new(MapApi::V2, at(10, 9), None, None, claims());
        let batch = store.next_due(&mut cursor, 10, at(10, 9)).unwrap();
        let outcomes = [mapped("U0", Some("A"), None), mapped("U1", Some("A"), None)];
        store.commit_mappings(&batch, &outcomes, at(10, 9)).unwrap();
        let rotation = BucketRotation {
            bucket_id: "A".into(),
            last_updated: at(10, 0),
        };
        store.ingest(vec![rotation], at(10, 12)).unwrap();

        // The next pass: id0 answered, id1 with an unknown reason.
        let mut cursor = DueCursor::new(MapApi::V2, at(10, 13), None, None, claims());
        let batch = store.next_due(&mut cursor, 10, at(10, 13)).unwrap();
        assert_eq!(ids(&batch), ["id0", "id1"]);
        let outcomes = [mapped("U0b", Some("A"), None), MapOutcome::Unknown];
        store
            .commit_mappings(&batch, &outcomes, at(10, 14))
            .unwrap();
        let read = RotationsRead {
            after: None,
            up_to: at(10, 13),
        };
        store
            .record_pass_end(
                &PassCounts::default(),
                PassEnd::Complete {
                    rotations: Some(read),
                },
                at(10, 15),
            )
            .unwrap();

        let checked = store.mapping_state().unwrap().rotations_checked.unwrap();
        assert!(checked < at(10, 12), "checked up to {checked}");
        let mut cursor = DueCursor::new(MapApi::V2, at(10, 16), Some(checked), None, claims());
        let due = store.next_due(&mut cursor, 10, at(10, 16)).unwrap();
        assert_eq!(ids(&due), ["id1"]);
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
                let sql = set_query(set, first, &SQLITE);
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

        let mut cursor = DueCursor::new(MapApi::V3, at(3, 0), None, None, claims());
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
