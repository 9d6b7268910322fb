//! Recording one operator response: the rotation log, the latest rotation
//! per bucket, the queue and the high-water mark change together or not
//! at all; and folding the recent latest rotations into the bucket table.

use chrono::{DateTime, Utc};
use rusqlite::Transaction;

use super::queue::SqliteEnqueuer;
use super::{SqliteStore, sql_error};
use crate::queue::{BUCKET_KIND, DueItem, Enqueue, EnqueueOutcome};
use crate::rotation::Rotations;
use crate::store::{IngestSummary, StoreError};
use crate::timestamp::{from_millis, to_millis};

const OPERATION: &str = "ingesting rotations";
const FOLD: &str = "folding recent rotations";

/// The latest known rotation (ms) of the bucket `bucket` (an SQL
/// expression): its row in `bucket_recent` if it rotated since the last
/// fold, else its row in `bucket`, else its row of the first sync's
/// snapshot in the log (see migrations/0005_write_news_only.sql).
pub(crate) fn latest_rotation_of(bucket: &str) -> String {
    format!(
        "coalesce(
             (SELECT r.last_updated_ms FROM bucket_recent AS r WHERE r.bucket_id = {bucket}),
             (SELECT f.last_updated_ms FROM bucket AS f WHERE f.bucket_id = {bucket}),
             (SELECT max(s.last_updated_ms) FROM sync_state AS z, rotation_log AS s
              WHERE z.id = 1 AND s.observed_at_ms = z.snapshot_observed_at_ms
                AND s.bucket_id = {bucket}))"
    )
}

/// A bucket's latest known rotation, the bucket being `?1`.
pub(super) fn latest_rotation_sql() -> String {
    format!("SELECT {}", latest_rotation_of("?1"))
}

/// `bucket_recent` is folded into `bucket` once it holds this many
/// buckets, about six days of rotations: few enough that the leaves a
/// day's rotations land on stay under ~30, many enough that the fold, which
/// rewrites most leaves of a full `bucket` table, is rare.
pub(crate) const FOLD_RECENT_AT: u64 = 16_384;

/// A point of an ingest where a probe may make it fail (see
/// [`Store::ingest_probed`]): after so many rows, or just before commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Rows(usize),
    BeforeCommit,
}

/// The probe of a production ingest: nothing to check.
fn no_probe(_: Stage) -> rusqlite::Result<()> {
    Ok(())
}

/// The page cache one ingest may use: enough for the pages a large batch
/// dirties, bounded so a full 2^20-row response stays small in memory.
fn cache_kib_for(rows: usize) -> i64 {
    const BYTES_PER_ROW: usize = 64;
    const MIN_KIB: usize = 2 * 1024;
    const MAX_KIB: usize = 32 * 1024;
    (rows * BYTES_PER_ROW / 1024).clamp(MIN_KIB, MAX_KIB) as i64
}

impl SqliteStore {
    /// [`crate::store::Store::ingest`] of rows, for the tests of this backend.
    #[cfg(test)]
    pub(crate) fn ingest(
        &self,
        rotations: Vec<crate::rotation::BucketRotation>,
        observed_at: DateTime<Utc>,
    ) -> Result<IngestSummary, StoreError> {
        self.ingest_rotations(rotations.into(), observed_at)
    }

    /// [`crate::store::Store::ingest`] of an answer as the operator client
    /// parses it.
    pub(crate) fn ingest_rotations(
        &self,
        rotations: Rotations,
        observed_at: DateTime<Utc>,
    ) -> Result<IngestSummary, StoreError> {
        self.ingest_probed(rotations, observed_at, true, &no_probe)
    }

    /// [`Store::ingest`], optionally without its fast path for an empty
    /// database, calling `probe` at each [`Stage`]: an error from it fails
    /// the ingest there, as a disk error would, so tests can prove that a
    /// failure anywhere leaves nothing behind.
    pub(crate) fn ingest_probed(
        &self,
        mut rotations: Rotations,
        observed_at: DateTime<Utc>,
        fast_path_allowed: bool,
        probe: &dyn Fn(Stage) -> rusqlite::Result<()>,
    ) -> Result<IngestSummary, StoreError> {
        let (summary, latest_received) = IngestSummary::of_answer(&mut rotations);

        let previous_cache: i64 = self
            .conn
            .pragma_query_value(None, "cache_size", |row| row.get(0))
            .map_err(sql_error(OPERATION))?;
        self.conn
            .pragma_update(None, "cache_size", -cache_kib_for(rotations.len()))
            .map_err(sql_error(OPERATION))?;
        let outcome = self.last_commit.synced(&self.conn, OPERATION, || {
            self.ingest_sorted(
                &rotations,
                observed_at,
                latest_received,
                summary,
                fast_path_allowed,
                probe,
            )
        });
        // The ingest is durable by now; a fold that fails (a busy database,
        // a full disk) is tried again after the next one.
        if outcome.is_ok() {
            match self.fold_recent_buckets(FOLD_RECENT_AT) {
                Ok(Some(folded)) => {
                    tracing::info!(folded, "folded recent rotations into the bucket table")
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot fold recent rotations into the bucket table")
                }
            }
        }
        // Give the batch's pages back; a daemon keeps this connection. The
        // ingest has committed or rolled back by now, so a failure here is
        // no failure of the ingest.
        if let Err(error) = self
            .conn
            .pragma_update(None, "cache_size", previous_cache)
            .and_then(|()| self.conn.execute_batch("PRAGMA shrink_memory"))
        {
            tracing::warn!(%error, "cannot shrink the page cache after an ingest");
        }
        outcome
    }

    /// Moves `bucket_recent` into `bucket` when it holds at least
    /// `at_least` buckets, in one transaction; returns how many it moved.
    /// Every bucket's latest rotation stays what it was.
    pub(crate) fn fold_recent_buckets(&self, at_least: u64) -> Result<Option<u64>, StoreError> {
        let recent: i64 = self
            .conn
            .query_row("SELECT count(*) FROM bucket_recent", [], |row| row.get(0))
            .map_err(sql_error(FOLD))?;
        if (recent as u64) < at_least {
            return Ok(None);
        }
        self.last_commit
            .synced(&self.conn, FOLD, || self.fold_transaction())
            .map(Some)
    }

    fn fold_transaction(&self) -> Result<u64, StoreError> {
        let tx = self.write_transaction(FOLD)?;
        // `WHERE true` tells the parser the ON CONFLICT is the upsert's.
        let folded = tx
            .execute(
                "INSERT INTO bucket (bucket_id, last_updated_ms)
                 SELECT bucket_id, last_updated_ms FROM bucket_recent WHERE true
                 ON CONFLICT (bucket_id) DO UPDATE SET last_updated_ms = excluded.last_updated_ms",
                [],
            )
            .map_err(sql_error(FOLD))?;
        tx.execute("DELETE FROM bucket_recent", [])
            .map_err(sql_error(FOLD))?;
        tx.commit().map_err(sql_error(FOLD))?;
        Ok(folded as u64)
    }

    fn ingest_sorted(
        &self,
        rotations: &Rotations,
        observed_at: DateTime<Utc>,
        latest_received: Option<i64>,
        mut summary: IngestSummary,
        fast_path_allowed: bool,
        probe: &dyn Fn(Stage) -> rusqlite::Result<()>,
    ) -> Result<IngestSummary, StoreError> {
        let tx = self.write_transaction(OPERATION)?;
        let check = |rows: usize| probe(Stage::Rows(rows)).map_err(sql_error(OPERATION));

        summary.mark_before = tx
            .query_row(
                "SELECT high_water_mark_ms FROM sync_state WHERE id = 1",
                [],
                |row| row.get::<_, Option<i64>>(0),
            )
            .map_err(sql_error(OPERATION))?
            .map(from_millis);

        if fast_path_allowed && is_fresh(&tx).map_err(sql_error(OPERATION))? {
            ingest_into_empty(&tx, rotations, observed_at, &check)?;
            summary.new_rotations = rotations.len() as u64;
            summary.newly_queued = rotations.len() as u64;
        } else {
            ingest_rows(&tx, rotations, observed_at, &mut summary, &check)?;
        }

        let mark = tx
            .query_row(
                "UPDATE sync_state SET
                     high_water_mark_ms = max(coalesce(high_water_mark_ms, ?1), coalesce(?1, high_water_mark_ms)),
                     last_success_at_ms = ?2,
                     last_received = ?3,
                     last_new_rotations = ?4,
                     last_newly_queued = ?5
                 WHERE id = 1
                 RETURNING high_water_mark_ms",
                rusqlite::params![
                    latest_received,
                    to_millis(observed_at),
                    summary.received as i64,
                    summary.new_rotations as i64,
                    summary.newly_queued as i64,
                ],
                |row| row.get::<_, Option<i64>>(0),
            )
            .map_err(sql_error(OPERATION))?;
        summary.mark_after = mark.map(from_millis);

        probe(Stage::BeforeCommit).map_err(sql_error(OPERATION))?;
        tx.commit().map_err(sql_error(OPERATION))?;
        Ok(summary)
    }
}

/// True when no bucket has ever been recorded: then every row is new and
/// nothing can conflict.
fn is_fresh(tx: &Transaction<'_>) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM rotation_log)
            AND NOT EXISTS (SELECT 1 FROM queue_item WHERE kind = ?1)
            AND NOT EXISTS (SELECT 1 FROM queue_done WHERE kind = ?1)",
        [BUCKET_KIND],
        |row| row.get(0),
    )
}

/// Rows per statement of the bulk log insert.
const LOG_CHUNK: usize = 256;

/// `INSERT INTO rotation_log … VALUES (?1, ?2, ?3), (?1, ?4, ?5), …`:
/// `?1` is the observation time, then a bucket id and a time per row.
fn multi_row_log_insert(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO rotation_log (observed_at_ms, bucket_id, last_updated_ms) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        let first = 2 + 2 * row;
        sql.push_str(&format!("(?1, ?{first}, ?{})", first + 1));
    }
    sql
}

/// The first ingest (a since-epoch read of every bucket): the same result
/// as [`ingest_rows`], written set-wise from the log.
fn ingest_into_empty(
    tx: &Transaction<'_>,
    rotations: &Rotations,
    observed_at: DateTime<Utc>,
    check: &dyn Fn(usize) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let observed_ms = to_millis(observed_at);
    for start in (0..rotations.len()).step_by(LOG_CHUNK) {
        check(start)?;
        let chunk = rotations.slice(start, LOG_CHUNK);
        let mut insert = tx
            .prepare_cached(&multi_row_log_insert(chunk.len()))
            .map_err(sql_error(OPERATION))?;
        insert
            .raw_bind_parameter(1, observed_ms)
            .map_err(sql_error(OPERATION))?;
        for (offset, (bucket_id, last_updated_ms)) in chunk.enumerate() {
            let first = 2 + 2 * offset;
            insert
                .raw_bind_parameter(first, bucket_id)
                .and_then(|()| insert.raw_bind_parameter(first + 1, last_updated_ms))
                .map_err(sql_error(OPERATION))?;
        }
        insert.raw_execute().map_err(sql_error(OPERATION))?;
    }
    check(rotations.len())?;
    // These log rows are every bucket's latest rotation: the snapshot.
    tx.execute(
        "UPDATE sync_state SET snapshot_observed_at_ms = ?1 WHERE id = 1",
        [observed_ms],
    )
    .map_err(sql_error(OPERATION))?;
    super::queue::enqueue_new_from_query(
        tx,
        &format!(
            "SELECT '{BUCKET_KIND}' AS kind, bucket_id AS subject, last_updated_ms AS version_ms
             FROM rotation_log"
        ),
        observed_at,
    )
    .map_err(sql_error(OPERATION))?;
    Ok(())
}

/// The general case: each row against what is known of its bucket.
fn ingest_rows(
    tx: &Transaction<'_>,
    rotations: &Rotations,
    observed_at: DateTime<Utc>,
    summary: &mut IngestSummary,
    check: &dyn Fn(usize) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let observed_ms = to_millis(observed_at);
    let prepare = |sql| tx.prepare_cached(sql).map_err(sql_error(OPERATION));
    let latest_sql = latest_rotation_sql();
    let mut known = prepare(&latest_sql)?;
    let mut insert_log = prepare(
        "INSERT INTO rotation_log (observed_at_ms, bucket_id, last_updated_ms)
         VALUES (?3, ?1, ?2)",
    )?;
    let mut set_latest = prepare(
        "INSERT INTO bucket_recent (bucket_id, last_updated_ms) VALUES (?1, ?2)
         ON CONFLICT (bucket_id) DO UPDATE SET last_updated_ms = excluded.last_updated_ms",
    )?;
    let mut enqueuer = SqliteEnqueuer::new(tx).map_err(sql_error(OPERATION))?;

    for (index, (bucket_id, last_updated)) in rotations.iter().enumerate() {
        check(index)?;
        let latest: Option<i64> = known
            .query_row([bucket_id], |row| row.get(0))
            .map_err(sql_error(OPERATION))?;
        match latest {
            Some(latest) if last_updated == latest => {
                summary.ignored_rereads += 1;
                continue;
            }
            Some(latest) if last_updated < latest => {
                summary.ignored_stale += 1;
                continue;
            }
            _ => {}
        }
        insert_log
            .execute(rusqlite::params![bucket_id, last_updated, observed_ms])
            .map_err(sql_error(OPERATION))?;
        set_latest
            .execute(rusqlite::params![bucket_id, last_updated])
            .map_err(sql_error(OPERATION))?;
        summary.new_rotations += 1;
        let outcome = enqueuer.enqueue(&DueItem {
            kind: BUCKET_KIND,
            key: bucket_id,
            version: from_millis(last_updated),
            due_at: observed_at,
        })?;
        match outcome {
            EnqueueOutcome::Queued => summary.newly_queued += 1,
            EnqueueOutcome::Requeued => {
                summary.newly_queued += 1;
                summary.reopened += 1;
            }
            EnqueueOutcome::Coalesced => summary.coalesced += 1,
            EnqueueOutcome::DeferredBehindLease => summary.requeued_after_lease += 1,
            EnqueueOutcome::AlreadyCovered => {}
        }
    }
    check(rotations.len())
}

#[cfg(test)]
mod tests {
    use crate::rotation::BucketRotation;
    use crate::store::sqlite::SqliteStore as Store;
    use chrono::TimeZone;

    use super::*;
    use crate::queue::{ClaimRequest, QueueOptions, RemapQueue};

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, day, hour, 0, 0).unwrap()
    }

    fn rotation(bucket: &str, last_updated: DateTime<Utc>) -> BucketRotation {
        BucketRotation {
            bucket_id: bucket.into(),
            last_updated,
        }
    }

    /// Every row of every table, in a stable order.
    fn contents(store: &Store) -> Vec<String> {
        // Views, not tables: where the sync state, a bucket's latest
        // rotation or a queue entry is kept is the store's business.
        crate::store::sqlite::relation_rows(
            &store.conn,
            &["sync_status", "rotation_log", "buckets", "remap_queue"],
        )
    }

    fn open(dir: &tempfile::TempDir) -> Store {
        crate::store::sqlite::open_test_store(dir)
    }

    /// A probe that fails like a disk once `rows` rows are written, or
    /// with `None` just before commit.
    fn fail_at(rows: Option<usize>) -> impl Fn(Stage) -> rusqlite::Result<()> {
        move |stage| {
            let due = match (rows, stage) {
                (Some(limit), Stage::Rows(written)) => written >= limit,
                (None, Stage::BeforeCommit) => true,
                _ => false,
            };
            if due {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                    Some("simulated disk failure".to_owned()),
                ));
            }
            Ok(())
        }
    }

    fn assert_is_the_simulated_failure(error: &StoreError) {
        assert!(
            matches!(error, StoreError::Sqlite { .. })
                && error.to_string().contains("simulated disk failure"),
            "{error}"
        );
    }

    fn batch(count: usize, last_updated: DateTime<Utc>) -> Vec<BucketRotation> {
        (0..count)
            .map(|i| rotation(&format!("bucket{i:04}"), last_updated))
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        #[test]
        fn the_fast_path_for_an_empty_database_records_what_the_general_path_records(
            rows in proptest::collection::vec((0u8..40, 0u32..4), 0..120)
        ) {
            let response: Vec<BucketRotation> = rows
                .iter()
                .map(|(bucket, day)| rotation(&format!("b{bucket:02}"), at(day + 1, 0)))
                .collect();
            let (fast_dir, general_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (fast, general) = (open(&fast_dir), open(&general_dir));
            let fast_summary = fast.ingest(response.clone(), at(9, 0)).unwrap();
            let general_summary = general
                .ingest_probed(response.into(), at(9, 0), false, &no_probe)
                .unwrap();
            proptest::prop_assert_eq!(fast_summary, general_summary);
            proptest::prop_assert_eq!(contents(&fast), contents(&general));
        }
    }

    fn recent_buckets(store: &Store) -> i64 {
        store
            .conn
            .query_row("SELECT count(*) FROM bucket_recent", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn folding_recent_rotations_changes_no_buckets_latest_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.ingest(batch(50, at(1, 0)), at(2, 0)).unwrap();
        let mut next = batch(20, at(3, 0));
        next.push(rotation("a-new-bucket", at(3, 0)));
        store.ingest(next.clone(), at(4, 0)).unwrap();
        assert_eq!(recent_buckets(&store), 21);
        let before = contents(&store);

        assert_eq!(store.fold_recent_buckets(22).unwrap(), None);
        assert_eq!(recent_buckets(&store), 21);
        assert_eq!(store.fold_recent_buckets(21).unwrap(), Some(21));
        assert_eq!(recent_buckets(&store), 0);
        assert_eq!(contents(&store), before);

        // Folded rotations are still known: a re-read adds nothing.
        let summary = store.ingest(next, at(5, 0)).unwrap();
        assert_eq!((summary.ignored_rereads, summary.new_rotations), (21, 0));
    }

    #[test]
    fn an_ingest_folds_once_the_recent_rotations_reach_the_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.ingest(batch(1, at(1, 0)), at(2, 0)).unwrap();
        let almost = FOLD_RECENT_AT as usize - 1;
        store.ingest(batch(almost, at(3, 0)), at(4, 0)).unwrap();
        assert_eq!(recent_buckets(&store), almost as i64);
        store.ingest(batch(almost + 1, at(5, 0)), at(6, 0)).unwrap();
        assert_eq!(recent_buckets(&store), 0);
        assert_eq!(
            store.bucket_last_updated("bucket0000").unwrap(),
            Some(at(5, 0))
        );
    }

    #[test]
    fn rotations_of_done_entries_are_counted_as_reopened_among_the_newly_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.ingest(batch(3, at(1, 0)), at(2, 0)).unwrap();
        let queue = store.queue(QueueOptions::default());
        let request = ClaimRequest {
            limit: 2,
            lease: std::time::Duration::from_secs(7200),
            worker: None,
        };
        let leases = queue.claim(&request, at(2, 1)).unwrap();
        let ids: Vec<&str> = leases.iter().map(|l| l.lease_id.as_str()).collect();
        let acks = queue.ack(&ids, at(2, 2)).unwrap();
        assert!(acks.iter().all(|a| !a.is_refused()), "{acks:?}");

        // Two done entries, one pending, one new bucket.
        let summary = store.ingest(batch(4, at(3, 0)), at(4, 0)).unwrap();
        assert_eq!(
            (summary.newly_queued, summary.reopened, summary.coalesced),
            (3, 2, 1),
            "{summary:?}"
        );
    }

    #[test]
    fn a_failed_first_ingest_leaves_the_empty_database_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let before = contents(&store);
        for fault in [Some(0), Some(700), Some(1000), None] {
            let error = store
                .ingest_probed(
                    batch(1000, at(1, 0)).into(),
                    at(2, 0),
                    true,
                    &fail_at(fault),
                )
                .unwrap_err();
            assert_is_the_simulated_failure(&error);
            assert_eq!(contents(&store), before, "fault {fault:?}");
        }
        // And the same data then goes in whole.
        let summary = store.ingest(batch(1000, at(1, 0)), at(2, 0)).unwrap();
        assert_eq!(summary.newly_queued, 1000);
    }

    #[test]
    fn a_failed_later_ingest_leaves_log_queue_leases_and_mark_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.ingest(batch(100, at(1, 0)), at(2, 0)).unwrap();
        let queue = store.queue(QueueOptions::default());
        let leases = queue
            .claim(
                &ClaimRequest {
                    limit: 30,
                    lease: std::time::Duration::from_secs(600),
                    worker: None,
                },
                at(2, 1),
            )
            .unwrap();
        let ids: Vec<&str> = leases[..10].iter().map(|l| l.lease_id.as_str()).collect();
        queue.ack(&ids, at(2, 2)).unwrap();
        let before = contents(&store);

        // New buckets, re-rotations of pending, leased and done ones, and re-reads.
        let mut next = batch(150, at(3, 0));
        next.extend(batch(100, at(1, 0)));
        for fault in [Some(0), Some(1), Some(120), Some(150), None] {
            let error = store
                .ingest_probed(next.clone().into(), at(4, 0), true, &fail_at(fault))
                .unwrap_err();
            assert_is_the_simulated_failure(&error);
            assert_eq!(contents(&store), before, "fault {fault:?}");
        }
        let summary = store.ingest(next, at(4, 0)).unwrap();
        assert_eq!(summary.new_rotations, 150);
        assert_eq!(summary.mark_after, Some(at(3, 0)));
    }
}
