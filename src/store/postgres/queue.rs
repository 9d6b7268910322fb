//! The queue on PostgreSQL: one `queue_item` table holds every state.
//!
//! Claims lock the rows they take with `FOR UPDATE SKIP LOCKED`, so
//! consumers on any number of machines split the pending rows without
//! waiting for each other and without taking a row twice. Each claimed row
//! gets its own lease id; ack and fail match on it and on the lease still
//! running, so a late consumer's ack of a lease that expired (and perhaps
//! went to someone else) changes nothing. Expired leases go back to
//! pending (or dead) at the start of every claim and in the daemon's
//! housekeeping, the sweeper.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{GenericClient, Row};

use super::session::Session;

use crate::queue::{
    AckOutcome, ClaimRequest, FailOutcome, Lease, LeaseRefusal, ListFilter, QueueEntry, QueueError,
    QueueOptions, QueueState, QueueStats, Reclaimed, RemapQueue, fail_arguments, in_claim_order,
};
use crate::store::columns;
use crate::timestamp::{from_millis, to_millis};

/// The queue of one open database.
pub(crate) struct PostgresQueue<'c> {
    client: &'c RefCell<Session>,
    options: QueueOptions,
}

fn pg_error(operation: &'static str) -> impl Fn(postgres::Error) -> QueueError {
    move |error| {
        if super::is_busy_error(&error) {
            QueueError::Busy { operation }
        } else {
            QueueError::Backend {
                operation,
                source: Box::new(super::PostgresError(error)),
            }
        }
    }
}

// An expired or failed lease: back to pending for another attempt, due
// from `retry_due`, to dead after the last one, or, when a newer version
// arrived meanwhile, pending with that version as a new generation, due
// from when it arrived. PostgreSQL evaluates every SET expression on the
// old row. `$1` is now, `$2` the attempts allowed.
fn release_for_retry(retry_due: &str) -> String {
    format!(
        "state = CASE
             WHEN q.next_version_ms IS NOT NULL THEN 'pending'
             WHEN q.attempts >= $2 THEN 'dead'
             ELSE 'pending' END,
         version_ms = coalesce(q.next_version_ms, q.version_ms),
         generation = q.generation + (q.next_version_ms IS NOT NULL)::int,
         attempts = CASE WHEN q.next_version_ms IS NOT NULL THEN 0 ELSE q.attempts END,
         due_at_ms = coalesce(q.next_due_at_ms, {retry_due}),
         next_version_ms = NULL,
         next_due_at_ms = NULL,
         lease_id = NULL,
         lease_expires_at_ms = NULL,
         updated_at_ms = $1"
    )
}

// A failed item waits `$4` (ms) when the caller gave one, else the backoff
// for the attempt that failed: `$5` after the first, doubling per attempt,
// at most `$6`, at most `$7` doublings (`QueueOptions::backoff_millis`).
const RETRY_DUE: &str = "$1 + coalesce($4::bigint,
    LEAST($6::bigint, $5::bigint << LEAST(GREATEST(q.attempts - 1, 0), $7::bigint)::int))";

fn reclaim_expired_in(
    client: &mut impl GenericClient,
    now_ms: i64,
    max_attempts: i64,
) -> Result<Reclaimed, postgres::Error> {
    // A consumer that died says nothing about the item: due again at once.
    let sql = format!(
        "WITH expired AS (
             SELECT kind, subject FROM queue_item
             WHERE state = 'leased' AND lease_expires_at_ms <= $1
             FOR UPDATE SKIP LOCKED)
         UPDATE queue_item AS q SET {},
             last_error = 'lease expired' || coalesce(' (held by ' || q.leased_by || ')', '')
         FROM expired WHERE q.kind = expired.kind AND q.subject = expired.subject
         RETURNING q.state",
        release_for_retry("$1")
    );
    let mut reclaimed = Reclaimed::default();
    for row in client.query(&sql, &[&now_ms, &max_attempts])? {
        match row.get::<_, &str>(0) {
            "dead" => reclaimed.dead += 1,
            _ => reclaimed.pending += 1,
        }
    }
    Ok(reclaimed)
}

/// Why no update accepted the lease ids of `lease_ids` missing from
/// `released`: lease ids exist only while leased, so a remaining one has
/// run out; anything else is gone.
fn refusals<T>(
    client: &mut impl GenericClient,
    lease_ids: &[&str],
    released: &HashMap<String, T>,
) -> Result<HashMap<String, LeaseRefusal>, postgres::Error> {
    let refused: Vec<&str> = lease_ids
        .iter()
        .copied()
        .filter(|id| !released.contains_key(*id))
        .collect();
    if refused.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(client
        .query(
            "SELECT lease_id, lease_expires_at_ms FROM queue_item
             WHERE lease_id = ANY($1) AND state = 'leased'",
            &[&refused],
        )?
        .into_iter()
        .map(|row| {
            (
                row.get(0),
                LeaseRefusal::Expired {
                    at: from_millis(row.get(1)),
                },
            )
        })
        .collect())
}

fn refusal_of(expired: &HashMap<String, LeaseRefusal>, lease_id: &str) -> LeaseRefusal {
    expired
        .get(lease_id)
        .copied()
        .unwrap_or(LeaseRefusal::NotHeld)
}

impl<'c> PostgresQueue<'c> {
    pub(crate) fn new(client: &'c RefCell<Session>, options: QueueOptions) -> Self {
        Self { client, options }
    }

    /// Runs `work` in one read-committed transaction.
    fn write<T>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T, QueueError> {
        let mut client = self.client.borrow_mut();
        let run = || {
            let mut tx = client.transaction()?;
            let value = work(&mut tx)?;
            tx.commit()?;
            Ok(value)
        };
        run().map_err(pg_error(operation))
    }
}

impl RemapQueue for PostgresQueue<'_> {
    fn claim(
        &self,
        request: &ClaimRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Lease>, QueueError> {
        let (lease_ms, limit, worker) = request.checked()?;
        let limit = i64::from(limit);
        let now_ms = to_millis(now);
        let max_attempts = self.options.attempts_allowed();
        let mut leases = self.write("claiming", |tx| {
            reclaim_expired_in(tx, now_ms, max_attempts)?;
            if limit == 0 {
                return Ok(Vec::new());
            }
            let rows = tx.query(
                &format!(
                    "WITH picked AS (
                     SELECT ctid FROM queue_item
                     WHERE state = 'pending' AND due_at_ms <= $1
                     ORDER BY due_at_ms
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 UPDATE queue_item AS q SET
                     state = 'leased',
                     lease_id = replace(gen_random_uuid()::text, '-', ''),
                     leased_by = $3,
                     leased_at_ms = $1,
                     lease_expires_at_ms = $4,
                     attempts = q.attempts + 1,
                     updated_at_ms = $1
                 FROM picked WHERE q.ctid = picked.ctid
                 RETURNING {}",
                    columns::LEASE_COLUMNS
                ),
                &[&now_ms, &limit, &worker, &now_ms.saturating_add(lease_ms)],
            )?;
            rows.iter().map(columns::lease).collect()
        })?;
        in_claim_order(&mut leases);
        Ok(leases)
    }

    fn ack(&self, lease_ids: &[&str], now: DateTime<Utc>) -> Result<Vec<AckOutcome>, QueueError> {
        let now_ms = to_millis(now);
        self.write("acking", |tx| {
            // Done; or, when a newer version arrived during the lease,
            // pending with it as a new generation.
            let released: HashMap<String, bool> = tx
                .query(
                    "UPDATE queue_item AS q SET
                         state = CASE WHEN q.next_version_ms IS NULL THEN 'done' ELSE 'pending' END,
                         version_ms = coalesce(q.next_version_ms, q.version_ms),
                         generation = q.generation + (q.next_version_ms IS NOT NULL)::int,
                         attempts = CASE WHEN q.next_version_ms IS NULL THEN q.attempts ELSE 0 END,
                         due_at_ms = coalesce(q.next_due_at_ms, q.due_at_ms),
                         done_at_ms = CASE WHEN q.next_version_ms IS NULL THEN $1 END,
                         next_version_ms = NULL,
                         next_due_at_ms = NULL,
                         lease_id = NULL,
                         lease_expires_at_ms = NULL,
                         updated_at_ms = $1
                     FROM unnest($2::text[]) AS held(lease_id)
                     WHERE q.lease_id = held.lease_id
                       AND q.state = 'leased' AND q.lease_expires_at_ms > $1
                     RETURNING held.lease_id, q.state = 'done'",
                    &[&now_ms, &lease_ids],
                )?
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            let expired = refusals(tx, lease_ids, &released)?;
            Ok(lease_ids
                .iter()
                .map(|id| match released.get(*id) {
                    Some(true) => AckOutcome::Acked,
                    Some(false) => AckOutcome::AckedNewerPending,
                    None => AckOutcome::Refused(refusal_of(&expired, id)),
                })
                .collect())
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
        let sql = format!(
            "UPDATE queue_item AS q SET {}, last_error = $8
             FROM unnest($3::text[]) AS held(lease_id)
             WHERE q.lease_id = held.lease_id
               AND q.state = 'leased' AND q.lease_expires_at_ms > $1
             RETURNING held.lease_id, q.state, q.attempts",
            release_for_retry(RETRY_DUE)
        );
        self.write("failing", |tx| {
            let parameters: [&(dyn ToSql + Sync); 8] = [
                &now_ms,
                &max_attempts,
                &lease_ids,
                &retry_after,
                &backoff,
                &max_backoff,
                &doublings,
                &error,
            ];
            let released: HashMap<String, (String, i64)> = tx
                .query(&sql, &parameters)?
                .into_iter()
                .map(|row| (row.get(0), (row.get(1), row.get(2))))
                .collect();
            let expired = refusals(tx, lease_ids, &released)?;
            Ok(lease_ids
                .iter()
                .map(|id| match released.get(*id) {
                    Some((state, attempts)) => FailOutcome::of_release(state, *attempts),
                    None => FailOutcome::Refused(refusal_of(&expired, id)),
                })
                .collect())
        })
    }

    fn for_each_entry<B>(
        &self,
        filter: &ListFilter,
        mut visit: impl FnMut(QueueEntry) -> ControlFlow<B>,
    ) -> Result<ControlFlow<B>, QueueError> {
        // One state at a time, each in the order of its index, streamed
        // row by row from one snapshot.
        let states = match &filter.state {
            Some(state) => std::slice::from_ref(state),
            None => &QueueState::ALL[..],
        };
        let mut remaining = filter.limit.map(i64::from);
        let mut client = self.client.borrow_mut();
        const OPERATION: &str = "listing the queue";
        let mut run = || -> Result<ControlFlow<B>, QueueError> {
            let mut tx = super::read_snapshot(&mut client).map_err(pg_error(OPERATION))?;
            for state in states {
                if remaining == Some(0) {
                    break;
                }
                let order = match state {
                    QueueState::Pending => "due_at_ms",
                    QueueState::Leased => "lease_expires_at_ms",
                    QueueState::Done => "done_at_ms",
                    QueueState::Dead => "updated_at_ms",
                };
                let sql = format!(
                    "SELECT {COLUMNS} FROM queue_item WHERE state = $1
                     ORDER BY {order}, kind, subject
                     LIMIT $2"
                );
                let parameters: [&(dyn ToSql + Sync); 2] = [&state.as_str(), &remaining];
                let mut rows = tx
                    .query_raw(&sql, parameters)
                    .map_err(pg_error(OPERATION))?;
                while let Some(row) = rows.next().map_err(pg_error(OPERATION))? {
                    if let Some(left) = &mut remaining {
                        *left -= 1;
                    }
                    if let ControlFlow::Break(value) = visit(entry_from_row(&row)?) {
                        return Ok(ControlFlow::Break(value));
                    }
                }
            }
            tx.commit().map_err(pg_error(OPERATION))?;
            Ok(ControlFlow::Continue(()))
        };
        run()
    }

    fn stats(&self, now: DateTime<Utc>) -> Result<QueueStats, QueueError> {
        let mut client = self.client.borrow_mut();
        stats_in(&mut **client, now).map_err(pg_error("counting the queue"))
    }

    fn retry_dead(&self, now: DateTime<Utc>) -> Result<u64, QueueError> {
        self.write("retrying dead items", |tx| {
            tx.execute(
                "UPDATE queue_item SET state = 'pending', attempts = 0,
                     due_at_ms = $1, updated_at_ms = $1
                 WHERE state = 'dead'",
                &[&to_millis(now)],
            )
        })
    }

    fn purge_done(&self, cutoff: DateTime<Utc>) -> Result<u64, QueueError> {
        self.write("purging done items", |tx| {
            tx.execute(
                "DELETE FROM queue_item WHERE state = 'done' AND done_at_ms < $1",
                &[&to_millis(cutoff)],
            )
        })
    }

    fn reclaim_expired(&self, now: DateTime<Utc>) -> Result<Reclaimed, QueueError> {
        let max_attempts = self.options.attempts_allowed();
        self.write("reclaiming expired leases", |tx| {
            reclaim_expired_in(tx, to_millis(now), max_attempts)
        })
    }
}

/// Counts per state; also used by `status` inside its own snapshot.
pub(super) fn stats_in(
    client: &mut impl GenericClient,
    now: DateTime<Utc>,
) -> Result<QueueStats, postgres::Error> {
    let row = client.query_one(
        "SELECT
             (SELECT count(*) FROM queue_item WHERE state = 'pending'),
             (SELECT count(*) FROM queue_item WHERE state = 'pending' AND due_at_ms > $1),
             (SELECT count(*) FROM queue_item WHERE state = 'leased'),
             (SELECT count(*) FROM queue_item WHERE state = 'leased' AND lease_expires_at_ms <= $1),
             (SELECT count(*) FROM queue_item WHERE state = 'done'),
             (SELECT count(*) FROM queue_item WHERE state = 'dead'),
             (SELECT min(due_at_ms) FROM queue_item WHERE state = 'pending' AND due_at_ms <= $1)",
        &[&to_millis(now)],
    )?;
    let count = |index| row.get::<_, i64>(index) as u64;
    Ok(QueueStats {
        pending: count(0),
        retry_waiting: count(1),
        leased: count(2),
        expired_leases: count(3),
        done: count(4),
        dead: count(5),
        oldest_pending_due_at: row.get::<_, Option<i64>>(6).map(from_millis),
    })
}

const COLUMNS: &str = "kind, subject, state, version_ms, next_version_ms, generation, attempts,
    due_at_ms, updated_at_ms, lease_id, leased_by, leased_at_ms, lease_expires_at_ms,
    done_at_ms, last_error";

fn entry_from_row(row: &Row) -> Result<QueueEntry, QueueError> {
    let read = pg_error("reading a queue entry");
    let state = row.try_get::<_, &str>(2).map_err(&read)?.parse()?;
    columns::queue_entry(row, state).map_err(read)
}
