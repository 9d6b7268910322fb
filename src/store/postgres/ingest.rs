//! Recording one operator response on PostgreSQL: the rotation log, each
//! bucket's latest rotation, the queue and the high-water mark change in
//! one transaction or not at all.
//!
//! The response is copied into a temporary table (`COPY … BINARY`, one
//! round trip however many rows) and judged against what is known set-wise,
//! so the first sync of 2^20 buckets and a daily sync of a few thousand run
//! the same statements.

use chrono::{DateTime, Utc};
use postgres::Transaction;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;

use super::{PostgresStore, pg_error};
use crate::queue::BUCKET_KIND;
use crate::rotation::Rotations;
use crate::store::{IngestSummary, StoreError};
use crate::timestamp::{from_millis, to_millis};

const OPERATION: &str = "ingesting rotations";

/// New rotations from which an ingest refreshes the tables' statistics.
const REFRESH_STATISTICS_FROM: u64 = 10_000;

impl PostgresStore {
    /// See [`crate::store::Store::ingest`].
    pub(crate) fn ingest_rotations(
        &self,
        mut rotations: Rotations,
        observed_at: DateTime<Utc>,
    ) -> Result<IngestSummary, StoreError> {
        let (mut summary, latest_received) = IngestSummary::of_answer(&mut rotations);
        let mut client = self.client();
        let mut run = || -> Result<IngestSummary, postgres::Error> {
            let mut tx = client.transaction()?;
            ingest_in(
                &mut tx,
                &rotations,
                observed_at,
                latest_received,
                &mut summary,
            )?;
            tx.commit()?;
            Ok(summary)
        };
        let summary = run().map_err(pg_error(OPERATION))?;
        // The planner's view of tables that just grew a lot (the first
        // sync) is stale until autovacuum comes by, and with it the next
        // day's lookups by key become joins of whole tables.
        if summary.new_rotations >= REFRESH_STATISTICS_FROM
            && let Err(error) = client.batch_execute("ANALYZE rotation_log, bucket, queue_item")
        {
            tracing::warn!(error = %super::describe(&error), "cannot refresh table statistics");
        }
        Ok(summary)
    }
}

fn ingest_in(
    tx: &mut Transaction<'_>,
    rotations: &Rotations,
    observed_at: DateTime<Utc>,
    latest_received: Option<i64>,
    summary: &mut IngestSummary,
) -> Result<(), postgres::Error> {
    let observed_ms = to_millis(observed_at);
    // One ingest at a time: the sync state's row is the ingest lock.
    summary.mark_before = tx
        .query_one(
            "SELECT high_water_mark_ms FROM sync_state WHERE id = 1 FOR UPDATE",
            &[],
        )?
        .get::<_, Option<i64>>(0)
        .map(from_millis);

    // One row per bucket already (keep_latest_per_bucket): no key needed.
    tx.batch_execute(
        "CREATE TEMPORARY TABLE incoming (
             bucket_id        text COLLATE \"C\" NOT NULL,
             last_updated_ms  bigint NOT NULL
         ) ON COMMIT DROP",
    )?;
    let sink = tx.copy_in("COPY incoming (bucket_id, last_updated_ms) FROM STDIN BINARY")?;
    let mut writer = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::INT8]);
    for (bucket_id, last_updated_ms) in rotations.iter() {
        writer.write(&[&bucket_id, &last_updated_ms])?;
    }
    writer.finish()?;
    // Without its size the planner guesses. With it, and with the cost of
    // a page read as on an SSD, not a spinning disk, a day's few thousand
    // rows are looked up by key, not joined against whole tables.
    tx.batch_execute("ANALYZE incoming; SET LOCAL random_page_cost = 1.1")?;

    // Rows no later than their bucket's latest rotation are not news.
    let known = tx.query_one(
        "WITH old AS (
             DELETE FROM incoming AS i USING bucket AS b
             WHERE b.bucket_id = i.bucket_id AND b.last_updated_ms >= i.last_updated_ms
             RETURNING i.last_updated_ms = b.last_updated_ms AS reread)
         SELECT count(*) FILTER (WHERE reread), count(*) FILTER (WHERE NOT reread) FROM old",
        &[],
    )?;
    summary.ignored_rereads = known.get::<_, i64>(0) as u64;
    summary.ignored_stale = known.get::<_, i64>(1) as u64;
    summary.new_rotations = summary.received
        - summary.duplicates_in_response
        - summary.ignored_rereads
        - summary.ignored_stale;

    tx.execute(
        "INSERT INTO rotation_log (bucket_id, last_updated_ms, observed_at_ms)
         SELECT bucket_id, last_updated_ms, $1 FROM incoming",
        &[&observed_ms],
    )?;
    // Ingests take turns (the lock above), so a plain anti-join finds the
    // new buckets: no per-row conflict check.
    tx.execute(
        "UPDATE bucket AS b SET last_updated_ms = i.last_updated_ms
         FROM incoming AS i WHERE b.bucket_id = i.bucket_id",
        &[],
    )?;
    tx.execute(
        "INSERT INTO bucket (bucket_id, last_updated_ms)
         SELECT i.bucket_id, i.last_updated_ms FROM incoming AS i
         WHERE NOT EXISTS (SELECT 1 FROM bucket AS b WHERE b.bucket_id = i.bucket_id)",
        &[],
    )?;
    enqueue(tx, observed_ms, summary)?;

    let mark = tx
        .query_one(
            "UPDATE sync_state SET
                 high_water_mark_ms = GREATEST(high_water_mark_ms, $1),
                 last_success_at_ms = $2,
                 last_received = $3,
                 last_new_rotations = $4,
                 last_newly_queued = $5
             WHERE id = 1
             RETURNING high_water_mark_ms",
            &[
                &latest_received,
                &observed_ms,
                &(summary.received as i64),
                &(summary.new_rotations as i64),
                &(summary.newly_queued as i64),
            ],
        )?
        .get::<_, Option<i64>>(0);
    summary.mark_after = mark.map(from_millis);
    Ok(())
}

/// Queues every new rotation left in `incoming` by the queue's rules
/// (crate::queue): a pending entry carries the newer version, a leased one
/// keeps it for when the lease ends, a done or dead one is pending again
/// as a new generation, and a bucket without an entry gets one.
fn enqueue(
    tx: &mut Transaction<'_>,
    observed_ms: i64,
    summary: &mut IngestSummary,
) -> Result<(), postgres::Error> {
    // Lock the entries first: a consumer's ack or fail between the
    // statements below would otherwise move an entry to a state a later
    // statement no longer looks at.
    tx.execute(
        "SELECT 1 FROM queue_item AS q JOIN incoming AS i
             ON q.kind = $1 AND q.subject = i.bucket_id
         ORDER BY q.subject
         FOR UPDATE OF q",
        &[&BUCKET_KIND],
    )?;
    // The newest version an entry knows of.
    const NEWER: &str = "i.last_updated_ms > GREATEST(q.version_ms, q.next_version_ms)";
    let join = "q.kind = $1 AND q.subject = i.bucket_id";
    summary.coalesced = tx.execute(
        &format!(
            "UPDATE queue_item AS q SET version_ms = i.last_updated_ms, updated_at_ms = $2
             FROM incoming AS i
             WHERE {join} AND q.state = 'pending' AND {NEWER}"
        ),
        &[&BUCKET_KIND, &observed_ms],
    )?;
    summary.requeued_after_lease = tx.execute(
        &format!(
            "UPDATE queue_item AS q SET next_version_ms = i.last_updated_ms,
                 next_due_at_ms = $2, updated_at_ms = $2
             FROM incoming AS i
             WHERE {join} AND q.state = 'leased' AND {NEWER}"
        ),
        &[&BUCKET_KIND, &observed_ms],
    )?;
    // A done entry starts afresh, as a new one would; a dead one keeps
    // what its last lease said.
    summary.reopened = tx.execute(
        &format!(
            "UPDATE queue_item AS q SET state = 'pending', version_ms = i.last_updated_ms,
                 generation = q.generation + 1, attempts = 0, due_at_ms = $2,
                 updated_at_ms = $2, done_at_ms = NULL,
                 leased_by = CASE WHEN q.state = 'done' THEN NULL ELSE q.leased_by END,
                 leased_at_ms = CASE WHEN q.state = 'done' THEN NULL ELSE q.leased_at_ms END,
                 last_error = CASE WHEN q.state = 'done' THEN NULL ELSE q.last_error END
             FROM incoming AS i
             WHERE {join} AND q.state IN ('done', 'dead') AND {NEWER}"
        ),
        &[&BUCKET_KIND, &observed_ms],
    )?;
    // Only ingests add entries, one at a time: an anti-join finds the
    // subjects without one.
    let queued = tx.execute(
        "INSERT INTO queue_item
             (kind, subject, state, version_ms, generation, attempts, due_at_ms, updated_at_ms)
         SELECT $1, i.bucket_id, 'pending', i.last_updated_ms, 1, 0, $2, $2 FROM incoming AS i
         WHERE NOT EXISTS (
             SELECT 1 FROM queue_item AS q WHERE q.kind = $1 AND q.subject = i.bucket_id)",
        &[&BUCKET_KIND, &observed_ms],
    )?;
    summary.newly_queued = queued + summary.reopened;
    Ok(())
}
