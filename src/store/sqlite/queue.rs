//! The queue on SQLite: live entries (pending, leased, dead) in `queue_item`,
//! done ones in `queue_done` (migrations/0005_write_news_only.sql), so that
//! enqueueing a day's rotations writes a table that holds little else.
//!
//! Every write is one `BEGIN IMMEDIATE` transaction, so concurrent writers
//! queue up on the busy handler instead of failing when a read would have
//! to be upgraded to a write. States are spelt as literals in the SQL so the
//! planner can use the partial index of each state.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{
    CachedStatement, Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params,
};

use crate::queue::{
    AckOutcome, ClaimRequest, DueItem, Enqueue, EnqueueOutcome, FailOutcome, Lease, LeaseRefusal,
    ListFilter, QueueEntry, QueueError, QueueOptions, QueueState, QueueStats, Reclaimed,
    RemapQueue, fail_arguments, in_claim_order,
};
use crate::store::columns;
use crate::timestamp::{from_millis, to_millis};

/// The queue of one open database.
pub struct SqliteQueue<'c> {
    conn: &'c Connection,
    options: QueueOptions,
}

impl<'c> SqliteQueue<'c> {
    /// `conn` must have the schema applied (see `Store::open`) and no
    /// transaction open.
    pub(crate) fn new(conn: &'c Connection, options: QueueOptions) -> Self {
        Self { conn, options }
    }

    fn write<T>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&Transaction<'_>) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let tx = Transaction::new_unchecked(self.conn, TransactionBehavior::Immediate)
            .map_err(sql_error(operation))?;
        let value = work(&tx)?;
        tx.commit().map_err(sql_error(operation))?;
        Ok(value)
    }
}

/// Turns a rusqlite error into a [`QueueError`] naming the operation.
pub(crate) fn sql_error(operation: &'static str) -> impl Fn(rusqlite::Error) -> QueueError {
    move |error| {
        if super::is_busy_error(&error) {
            QueueError::Busy { operation }
        } else {
            QueueError::Backend {
                operation,
                source: Box::new(error),
            }
        }
    }
}

// An expired or failed lease: back to pending for another attempt, due
// (claimable) from `retry_due`, to dead after the last one, or, when a
// newer version arrived meanwhile, pending with that version as a new
// generation, due from when it arrived: the failure was the old version's.
// SQLite evaluates every SET expression on the old row, so
// `next_version_ms` and `attempts` below are the old values.
fn release_for_retry(retry_due: &str) -> String {
    format!(
        "state = CASE
             WHEN next_version_ms IS NOT NULL THEN 'pending'
             WHEN attempts >= :max_attempts THEN 'dead'
             ELSE 'pending' END,
         version_ms = coalesce(next_version_ms, version_ms),
         generation = generation + (next_version_ms IS NOT NULL),
         attempts = CASE WHEN next_version_ms IS NOT NULL THEN 0 ELSE attempts END,
         due_at_ms = coalesce(next_due_at_ms, {retry_due}),
         next_version_ms = NULL,
         next_due_at_ms = NULL,
         lease_id = NULL,
         lease_expires_at_ms = NULL,
         updated_at_ms = :now"
    )
}

// A failed item waits `:retry_after` when the caller gave one, else the
// backoff for the attempt that failed: `:backoff` after the first,
// doubling per attempt, at most `:max_backoff` (see `QueueOptions::backoff_millis`).
const RETRY_DUE: &str = ":now + coalesce(:retry_after,
    min(:max_backoff, :backoff << min(max(attempts - 1, 0), :doublings)))";

fn reclaim_expired_in(
    tx: &Connection,
    now_ms: i64,
    max_attempts: i64,
) -> rusqlite::Result<Reclaimed> {
    // A consumer that died says nothing about the item: due again at once.
    let sql = format!(
        "UPDATE queue_item SET {},
             last_error = 'lease expired' || coalesce(' (held by ' || leased_by || ')', '')
         WHERE state = 'leased' AND lease_expires_at_ms <= :now
         RETURNING state",
        release_for_retry(":now")
    );
    let mut statement = tx.prepare_cached(&sql)?;
    let mut rows = statement.query(rusqlite::named_params! {
        ":now": now_ms,
        ":max_attempts": max_attempts,
    })?;
    let mut reclaimed = Reclaimed::default();
    while let Some(row) = rows.next()? {
        match row.get_ref(0)?.as_str()? {
            "dead" => reclaimed.dead += 1,
            _ => reclaimed.pending += 1,
        }
    }
    Ok(reclaimed)
}

/// Entries whose lease is among `:lease_ids`, still held and not expired
/// at `:now`.
const HELD: &str = "lease_id IN (SELECT value FROM json_each(:lease_ids))
                    AND state = 'leased' AND lease_expires_at_ms > :now";

/// `lease_ids` as the JSON array [`HELD`] reads.
fn lease_ids_json(lease_ids: &[&str]) -> rusqlite::Result<String> {
    serde_json::to_string(lease_ids)
        .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))
}

/// Applies `assignments` to every entry whose lease is among `lease_ids`,
/// still held and not expired at `now_ms`, and that meets `only`, in one
/// statement. Returns the entries' new state and attempts by the lease id
/// they were released from.
fn release_leases(
    tx: &Connection,
    assignments: &str,
    only: &str,
    lease_ids: &[&str],
    now_ms: i64,
    parameters: &[(&str, &dyn rusqlite::ToSql)],
) -> rusqlite::Result<HashMap<String, (String, i64)>> {
    if lease_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let ids = lease_ids_json(lease_ids)?;
    // RETURNING sees the row after the update, when the lease id is gone:
    // note which subject each held lease belongs to first.
    let mut lease_of: HashMap<(String, String), String> = tx
        .prepare_cached(&format!(
            "SELECT kind, subject, lease_id FROM queue_item WHERE {HELD} AND {only}"
        ))?
        .query_map(
            rusqlite::named_params! { ":lease_ids": ids, ":now": now_ms },
            |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;

    let mut statement = tx.prepare_cached(&format!(
        "UPDATE queue_item SET {assignments} WHERE {HELD} AND {only}
         RETURNING kind, subject, state, attempts"
    ))?;
    let mut bound: Vec<(&str, &dyn rusqlite::ToSql)> = parameters.to_vec();
    bound.push((":lease_ids", &ids));
    bound.push((":now", &now_ms));
    let mut rows = statement.query(bound.as_slice())?;
    let mut released = HashMap::with_capacity(lease_of.len());
    while let Some(row) = rows.next()? {
        let subject: (String, String) = (row.get(0)?, row.get(1)?);
        if let Some(lease_id) = lease_of.remove(&subject) {
            released.insert(lease_id, (row.get(2)?, row.get(3)?));
        }
    }
    Ok(released)
}

/// Moves the entries whose lease is among `lease_ids`, still held, and
/// with no newer version waiting, to `queue_done`. Returns their lease ids.
fn move_to_done(
    tx: &Connection,
    lease_ids: &[&str],
    now_ms: i64,
) -> rusqlite::Result<std::collections::HashSet<String>> {
    if lease_ids.is_empty() {
        return Ok(Default::default());
    }
    let ids = lease_ids_json(lease_ids)?;
    let parameters = rusqlite::named_params! { ":lease_ids": ids, ":now": now_ms };
    const DONE: &str = "next_version_ms IS NULL";
    tx.prepare_cached(&format!(
        "INSERT INTO queue_done
             (kind, subject, version_ms, generation, attempts, due_at_ms, updated_at_ms,
              leased_by, leased_at_ms, done_at_ms, last_error)
         SELECT kind, subject, version_ms, generation, attempts, due_at_ms, :now,
                leased_by, leased_at_ms, :now, last_error
         FROM queue_item WHERE {HELD} AND {DONE}"
    ))?
    .execute(parameters)?;
    tx.prepare_cached(&format!(
        "DELETE FROM queue_item WHERE {HELD} AND {DONE} RETURNING lease_id"
    ))?
    .query_map(parameters, |row| row.get(0))?
    .collect()
}

/// Why no update accepted a lease id: lease ids exist only while leased,
/// so a remaining one has run out; anything else is gone.
fn classify_refused(tx: &Connection, lease_id: &str) -> rusqlite::Result<LeaseRefusal> {
    let expired: Option<i64> = tx
        .prepare_cached(
            "SELECT lease_expires_at_ms FROM queue_item WHERE lease_id = ?1 AND state = 'leased'",
        )?
        .query_row([lease_id], |row| row.get(0))
        .optional()?;
    Ok(match expired {
        Some(at) => LeaseRefusal::Expired {
            at: from_millis(at),
        },
        None => LeaseRefusal::NotHeld,
    })
}

impl RemapQueue for SqliteQueue<'_> {
    fn claim(
        &self,
        request: &ClaimRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Lease>, QueueError> {
        let (lease_ms, limit, worker) = request.checked()?;
        let now_ms = to_millis(now);
        let max_attempts = self.options.attempts_allowed();
        let mut leases = self.write("claiming", |tx| {
            reclaim_expired_in(tx, now_ms, max_attempts).map_err(sql_error("claiming"))?;
            if limit == 0 {
                return Ok(Vec::new());
            }
            let mut statement = tx
                .prepare_cached(&format!(
                    "UPDATE queue_item SET
                         state = 'leased',
                         lease_id = lower(hex(randomblob(16))),
                         leased_by = :worker,
                         leased_at_ms = :now,
                         lease_expires_at_ms = :expires,
                         attempts = attempts + 1,
                         updated_at_ms = :now
                     WHERE (kind, subject) IN (
                         SELECT kind, subject FROM queue_item
                         WHERE state = 'pending' AND due_at_ms <= :now
                         ORDER BY due_at_ms
                         LIMIT :limit)
                     RETURNING {}",
                    columns::LEASE_COLUMNS
                ))
                .map_err(sql_error("claiming"))?;
            let rows = statement
                .query_map(
                    rusqlite::named_params! {
                        ":worker": worker,
                        ":now": now_ms,
                        ":expires": now_ms.saturating_add(lease_ms),
                        ":limit": i64::from(limit),
                    },
                    |row| columns::lease(row),
                )
                .map_err(sql_error("claiming"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_error("claiming"))
        })?;
        in_claim_order(&mut leases);
        Ok(leases)
    }

    fn ack(&self, lease_ids: &[&str], now: DateTime<Utc>) -> Result<Vec<AckOutcome>, QueueError> {
        let now_ms = to_millis(now);
        self.write("acking", |tx| {
            let run = || -> rusqlite::Result<Vec<AckOutcome>> {
                let done = move_to_done(tx, lease_ids, now_ms)?;
                // A newer version arrived during the lease: pending with it,
                // as a new generation.
                let newer_pending = release_leases(
                    tx,
                    "state = 'pending',
                     version_ms = next_version_ms,
                     generation = generation + 1,
                     attempts = 0,
                     due_at_ms = next_due_at_ms,
                     next_version_ms = NULL,
                     next_due_at_ms = NULL,
                     lease_id = NULL,
                     lease_expires_at_ms = NULL,
                     updated_at_ms = :now",
                    "next_version_ms IS NOT NULL",
                    lease_ids,
                    now_ms,
                    &[],
                )?;
                lease_ids
                    .iter()
                    .map(|id| {
                        Ok(if done.contains(*id) {
                            AckOutcome::Acked
                        } else if newer_pending.contains_key(*id) {
                            AckOutcome::AckedNewerPending
                        } else {
                            AckOutcome::Refused(classify_refused(tx, id)?)
                        })
                    })
                    .collect()
            };
            run().map_err(sql_error("acking"))
        })
    }

    fn fail(
        &self,
        lease_ids: &[&str],
        error: &str,
        retry_after: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<Vec<FailOutcome>, QueueError> {
        let (retry_after, stored_error) = fail_arguments(retry_after, error)?;
        let error: &str = &stored_error;
        let now_ms = to_millis(now);
        let max_attempts = self.options.attempts_allowed();
        let (backoff, max_backoff, doublings) = self.options.backoff_millis();
        self.write("failing", |tx| {
            let run = || -> rusqlite::Result<Vec<FailOutcome>> {
                let mut released = release_leases(
                    tx,
                    &format!("{}, last_error = :error", release_for_retry(RETRY_DUE)),
                    "TRUE",
                    lease_ids,
                    now_ms,
                    &[
                        (":max_attempts", &max_attempts),
                        (":error", &error),
                        (":retry_after", &retry_after),
                        (":backoff", &backoff),
                        (":max_backoff", &max_backoff),
                        (":doublings", &doublings),
                    ],
                )?;
                lease_ids
                    .iter()
                    .map(|id| {
                        Ok(match released.remove(*id) {
                            Some((state, attempts)) => FailOutcome::of_release(&state, attempts),
                            None => FailOutcome::Refused(classify_refused(tx, id)?),
                        })
                    })
                    .collect()
            };
            run().map_err(sql_error("failing"))
        })
    }

    fn for_each_entry<B>(
        &self,
        filter: &ListFilter,
        mut visit: impl FnMut(QueueEntry) -> ControlFlow<B>,
    ) -> Result<ControlFlow<B>, QueueError> {
        // One state at a time, each in the order its partial index gives
        // (the index holds the key after its column), so SQLite streams the
        // rows instead of sorting the whole table in memory first. Only
        // the leased set, small by nature, is sorted.
        let states = match &filter.state {
            Some(state) => std::slice::from_ref(state),
            None => &QueueState::ALL[..],
        };
        let mut remaining = filter.limit.map(i64::from);
        let mut run = || -> rusqlite::Result<ControlFlow<B>> {
            // One snapshot for all the states' queries.
            let _snapshot = Transaction::new_unchecked(self.conn, TransactionBehavior::Deferred)?;
            for state in states {
                if remaining == Some(0) {
                    break;
                }
                // Done entries have their own table, without the columns of
                // a lease or a newer version.
                let (columns, table, condition, order) = match state {
                    QueueState::Pending => {
                        (LIVE_COLUMNS, "queue_item", "state = 'pending'", "due_at_ms")
                    }
                    QueueState::Leased => (
                        LIVE_COLUMNS,
                        "queue_item",
                        "state = 'leased'",
                        "lease_expires_at_ms",
                    ),
                    QueueState::Done => (DONE_COLUMNS, "queue_done", "TRUE", "done_at_ms"),
                    QueueState::Dead => (
                        LIVE_COLUMNS,
                        "queue_item",
                        "state = 'dead'",
                        "updated_at_ms",
                    ),
                };
                let sql = format!(
                    "SELECT {columns} FROM {table} WHERE {condition}
                     ORDER BY {order}, kind, subject
                     LIMIT :limit"
                );
                let mut statement = self.conn.prepare_cached(&sql)?;
                let mut rows = statement
                    .query(rusqlite::named_params! { ":limit": remaining.unwrap_or(-1) })?;
                while let Some(row) = rows.next()? {
                    if let Some(left) = &mut remaining {
                        *left -= 1;
                    }
                    if let ControlFlow::Break(value) = visit(entry_from_row(row)?) {
                        return Ok(ControlFlow::Break(value));
                    }
                }
            }
            Ok(ControlFlow::Continue(()))
        };
        run().map_err(sql_error("listing the queue"))
    }

    fn stats(&self, now: DateTime<Utc>) -> Result<QueueStats, QueueError> {
        stats_in(self.conn, now).map_err(sql_error("counting the queue"))
    }

    fn retry_dead(&self, now: DateTime<Utc>) -> Result<u64, QueueError> {
        self.write("retrying dead items", |tx| {
            tx.prepare_cached(
                "UPDATE queue_item SET state = 'pending', attempts = 0,
                     due_at_ms = :now, updated_at_ms = :now
                 WHERE state = 'dead'",
            )
            .and_then(|mut s| s.execute(rusqlite::named_params! { ":now": to_millis(now) }))
            .map(|n| n as u64)
            .map_err(sql_error("retrying dead items"))
        })
    }

    fn purge_done(&self, cutoff: DateTime<Utc>) -> Result<u64, QueueError> {
        self.write("purging done items", |tx| {
            tx.prepare_cached("DELETE FROM queue_done WHERE done_at_ms < ?1")
                .and_then(|mut s| s.execute([to_millis(cutoff)]))
                .map(|n| n as u64)
                .map_err(sql_error("purging done items"))
        })
    }

    fn reclaim_expired(&self, now: DateTime<Utc>) -> Result<Reclaimed, QueueError> {
        let max_attempts = self.options.attempts_allowed();
        self.write("reclaiming expired leases", |tx| {
            reclaim_expired_in(tx, to_millis(now), max_attempts)
                .map_err(sql_error("reclaiming expired leases"))
        })
    }
}

/// Counts per state; also used by `Store::status` inside its own read.
pub(crate) fn stats_in(conn: &Connection, now: DateTime<Utc>) -> rusqlite::Result<QueueStats> {
    conn.prepare_cached(
        "SELECT
             (SELECT count(*) FROM queue_item WHERE state = 'pending'),
             (SELECT count(*) FROM queue_item WHERE state = 'pending' AND due_at_ms > ?1),
             (SELECT count(*) FROM queue_item WHERE state = 'leased'),
             (SELECT count(*) FROM queue_item WHERE state = 'leased' AND lease_expires_at_ms <= ?1),
             (SELECT count(*) FROM queue_done),
             (SELECT count(*) FROM queue_item WHERE state = 'dead'),
             (SELECT min(due_at_ms) FROM queue_item WHERE state = 'pending' AND due_at_ms <= ?1)",
    )?
    .query_row([to_millis(now)], |row| {
        let count = |index| row.get::<_, i64>(index).map(|n| n as u64);
        Ok(QueueStats {
            pending: count(0)?,
            retry_waiting: count(1)?,
            leased: count(2)?,
            expired_leases: count(3)?,
            done: count(4)?,
            dead: count(5)?,
            oldest_pending_due_at: row.get::<_, Option<i64>>(6)?.map(from_millis),
        })
    })
}

/// The columns [`entry_from_row`] reads, from `queue_item` and from
/// `queue_done`.
const LIVE_COLUMNS: &str = "kind, subject, state, version_ms, next_version_ms, generation,
    attempts, due_at_ms, updated_at_ms, lease_id, leased_by, leased_at_ms, lease_expires_at_ms,
    NULL, last_error";
const DONE_COLUMNS: &str = "kind, subject, 'done', version_ms, NULL, generation, attempts,
    due_at_ms, updated_at_ms, NULL, leased_by, leased_at_ms, NULL, done_at_ms, last_error";

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<QueueEntry> {
    let state_text = row.get_ref(2)?.as_str()?;
    let state = state_text.parse::<QueueState>().map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(error))
    })?;
    columns::queue_entry(row, state)
}

/// [`Enqueue`] inside an open SQLite write transaction.
pub(crate) struct SqliteEnqueuer<'c> {
    find: CachedStatement<'c>,
    find_done: CachedStatement<'c>,
    forget_done: CachedStatement<'c>,
    insert: CachedStatement<'c>,
    coalesce: CachedStatement<'c>,
    defer: CachedStatement<'c>,
    requeue: CachedStatement<'c>,
}

impl<'c> SqliteEnqueuer<'c> {
    /// `tx` must be a write transaction; the enqueues commit or roll back
    /// with it.
    pub(crate) fn new(tx: &'c Transaction<'_>) -> rusqlite::Result<Self> {
        let conn: &'c Connection = tx;
        Ok(Self {
            find: conn.prepare_cached(
                "SELECT state, version_ms, next_version_ms FROM queue_item
                 WHERE kind = ?1 AND subject = ?2",
            )?,
            find_done: conn.prepare_cached(
                "SELECT version_ms, generation FROM queue_done WHERE kind = ?1 AND subject = ?2",
            )?,
            forget_done: conn
                .prepare_cached("DELETE FROM queue_done WHERE kind = ?1 AND subject = ?2")?,
            insert: conn.prepare_cached(
                "INSERT INTO queue_item
                     (kind, subject, state, version_ms, generation, attempts, due_at_ms, updated_at_ms)
                 VALUES (?1, ?2, 'pending', ?3, ?5, 0, ?4, ?4)",
            )?,
            coalesce: conn.prepare_cached(
                "UPDATE queue_item SET version_ms = ?3, updated_at_ms = ?4
                 WHERE kind = ?1 AND subject = ?2",
            )?,
            defer: conn.prepare_cached(
                "UPDATE queue_item SET next_version_ms = ?3, next_due_at_ms = ?4, updated_at_ms = ?4
                 WHERE kind = ?1 AND subject = ?2",
            )?,
            requeue: conn.prepare_cached(
                "UPDATE queue_item SET state = 'pending', version_ms = ?3,
                     generation = generation + 1, attempts = 0, due_at_ms = ?4,
                     updated_at_ms = ?4
                 WHERE kind = ?1 AND subject = ?2",
            )?,
        })
    }

    fn enqueue_sql(&mut self, item: &DueItem<'_>) -> rusqlite::Result<EnqueueOutcome> {
        let version = to_millis(item.version);
        let due_at = to_millis(item.due_at);
        let args = params![item.kind, item.key, version, due_at];
        let existing = self
            .find
            .query_row([item.kind, item.key], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                ))
            })
            .optional()?;
        let Some((state, current, waiting)) = existing else {
            return self.enqueue_new_or_done(item.kind, item.key, version, due_at);
        };
        let newest_known = waiting.map_or(current, |w| w.max(current));
        if version <= newest_known {
            return Ok(EnqueueOutcome::AlreadyCovered);
        }
        Ok(match state.as_str() {
            "pending" => {
                self.coalesce.execute(args)?;
                EnqueueOutcome::Coalesced
            }
            "leased" => {
                self.defer.execute(args)?;
                EnqueueOutcome::DeferredBehindLease
            }
            _ => {
                self.requeue.execute(args)?;
                EnqueueOutcome::Requeued
            }
        })
    }
}

impl SqliteEnqueuer<'_> {
    /// A subject with no live entry: a done entry older than `version` is
    /// due again as its next generation; one as new or newer covers it.
    fn enqueue_new_or_done(
        &mut self,
        kind: &str,
        key: &str,
        version: i64,
        due_at: i64,
    ) -> rusqlite::Result<EnqueueOutcome> {
        let done: Option<(i64, i64)> = self
            .find_done
            .query_row([kind, key], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let (generation, outcome) = match done {
            None => (1, EnqueueOutcome::Queued),
            Some((done_version, _)) if version <= done_version => {
                return Ok(EnqueueOutcome::AlreadyCovered);
            }
            Some((_, generation)) => {
                self.forget_done.execute([kind, key])?;
                (generation + 1, EnqueueOutcome::Requeued)
            }
        };
        self.insert
            .execute(params![kind, key, version, due_at, generation])?;
        Ok(outcome)
    }
}

impl Enqueue for SqliteEnqueuer<'_> {
    fn enqueue(&mut self, item: &DueItem<'_>) -> Result<EnqueueOutcome, QueueError> {
        self.enqueue_sql(item).map_err(sql_error("enqueueing"))
    }
}

/// Adds one pending first-generation entry per row of `source`, a query
/// yielding `(kind, subject, version_ms)` for subjects that have no entry
/// yet. The set-based twin of [`Enqueue::enqueue`]'s first case, for bulk
/// loads into an empty queue.
pub(crate) fn enqueue_new_from_query(
    tx: &Transaction<'_>,
    source: &str,
    due_at: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    tx.execute(
        &format!(
            "INSERT INTO queue_item
                 (kind, subject, state, version_ms, generation, attempts, due_at_ms, updated_at_ms)
             SELECT kind, subject, 'pending', version_ms, 1, 0, ?1, ?1
             FROM ({source})"
        ),
        [to_millis(due_at)],
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::store::sqlite::{SqliteStore as Store, open_test_store};

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 1, hour, 0, 0).unwrap()
    }

    fn enqueue_all(store: &Store, items: &[DueItem<'_>]) -> Vec<EnqueueOutcome> {
        let tx =
            Transaction::new_unchecked(store.connection(), TransactionBehavior::Immediate).unwrap();
        let outcomes = {
            let mut enqueuer = SqliteEnqueuer::new(&tx).unwrap();
            items
                .iter()
                .map(|item| enqueuer.enqueue(item).unwrap())
                .collect()
        };
        tx.commit().unwrap();
        outcomes
    }

    #[test]
    fn subjects_of_any_kind_share_the_queue_with_the_same_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_test_store(&dir);
        let item = |kind, key, version, due_at| DueItem {
            kind,
            key,
            version: at(version),
            due_at: at(due_at),
        };
        let outcomes = enqueue_all(
            &store,
            &[
                item("identity", "user-1", 2, 3),
                item("identity", "user-1", 1, 3),
                item("identity", "user-1", 4, 5),
                item("bucket", "user-1", 1, 6),
            ],
        );
        assert_eq!(
            outcomes,
            [
                EnqueueOutcome::Queued,
                EnqueueOutcome::AlreadyCovered,
                EnqueueOutcome::Coalesced,
                EnqueueOutcome::Queued,
            ]
        );

        let queue = store.queue(QueueOptions::default());
        let leases = queue
            .claim(
                &ClaimRequest {
                    limit: 10,
                    lease: Duration::from_secs(3 * 3600),
                    worker: None,
                },
                at(7),
            )
            .unwrap();
        let claimed: Vec<_> = leases
            .iter()
            .map(|l| {
                (
                    l.subject.kind.as_str(),
                    l.subject.key.as_str(),
                    l.subject.bucket_id(),
                    l.version,
                )
            })
            .collect();
        assert_eq!(
            claimed,
            [
                ("identity", "user-1", None, at(4)),
                ("bucket", "user-1", Some("user-1"), at(1)),
            ]
        );

        // Leased: a newer version waits; an older or equal one is covered.
        let outcomes = enqueue_all(
            &store,
            &[
                item("identity", "user-1", 4, 8),
                item("identity", "user-1", 9, 8),
            ],
        );
        assert_eq!(
            outcomes,
            [
                EnqueueOutcome::AlreadyCovered,
                EnqueueOutcome::DeferredBehindLease
            ]
        );
        let ids: Vec<&str> = leases.iter().map(|l| l.lease_id.as_str()).collect();
        assert_eq!(
            queue.ack(&ids, at(8)).unwrap(),
            [AckOutcome::AckedNewerPending, AckOutcome::Acked]
        );
        // Done: only a newer version makes it due again.
        assert_eq!(
            enqueue_all(
                &store,
                &[
                    item("bucket", "user-1", 1, 9),
                    item("bucket", "user-1", 2, 9)
                ]
            ),
            [EnqueueOutcome::AlreadyCovered, EnqueueOutcome::Requeued]
        );
    }

    #[test]
    fn done_entries_wait_apart_from_live_ones_until_a_newer_version_makes_them_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_test_store(&dir);
        let item = |key, version| DueItem {
            kind: "bucket",
            key,
            version: at(version),
            due_at: at(version),
        };
        enqueue_all(&store, &[item("a", 1), item("b", 1), item("c", 1)]);
        let queue = store.queue(QueueOptions::default());
        let request = ClaimRequest {
            limit: 2,
            lease: Duration::from_secs(3600),
            worker: None,
        };
        let leases = queue.claim(&request, at(2)).unwrap();
        let ids: Vec<&str> = leases.iter().map(|l| l.lease_id.as_str()).collect();
        queue.ack(&ids, at(2)).unwrap();
        let rows = |table: &str| -> Vec<(String, i64)> {
            let sql = format!("SELECT subject, generation FROM {table} ORDER BY subject");
            let mut statement = store.connection().prepare(&sql).unwrap();
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let one = |key: &str| (key.to_owned(), 1);
        assert_eq!(rows("queue_done"), [one("a"), one("b")]);
        assert_eq!(rows("queue_item"), [one("c")]);

        assert_eq!(
            enqueue_all(&store, &[item("a", 1), item("b", 3)]),
            [EnqueueOutcome::AlreadyCovered, EnqueueOutcome::Requeued]
        );
        assert_eq!(rows("queue_done"), [one("a")]);
        assert_eq!(rows("queue_item"), [("b".to_owned(), 2), one("c")]);
        let stats = queue.stats(at(4)).unwrap();
        assert_eq!((stats.pending, stats.done), (2, 1));
    }
}
