//! The PostgreSQL backend: the sync state, the rotation log, each bucket's
//! latest rotation, the queue, the identities and the change feed on a
//! server that consumers and re-map workers on many machines share
//! (migrations/postgres/).
//!
//! One [`PostgresStore`] is one connection, used by one caller at a time
//! like the SQLite one; callers run it on the blocking pool. Writers wait
//! for each other's row locks at most `busy_timeout` (`lock_timeout`), and
//! a wait that runs out is "database busy", as on SQLite. Claims skip rows
//! other transactions hold (`FOR UPDATE SKIP LOCKED`), so consumers never
//! wait for each other.

mod identities;
mod ingest;
mod poller_lock;
mod queue;
mod remap;
mod schema;
pub(in crate::store) mod session;
mod target;

use std::cell::{RefCell, RefMut};

use chrono::{DateTime, Utc};
use postgres::error::SqlState;
use postgres::{Client, IsolationLevel, Transaction};
use session::Session;

pub(crate) use identities::PostgresImport;
pub use poller_lock::PollerLock;
pub(crate) use queue::PostgresQueue;
pub use target::PostgresTarget;

use super::{OpenMode, StoreError, StoreOptions, StoreStatus, SyncState, SyncStateRow};
use crate::queue::QueueOptions;
use crate::timestamp::{from_millis, to_millis};

/// Another transaction held a lock longer than the busy timeout, or the
/// server chose this one to break a deadlock: the one test of "database
/// busy" for every PostgreSQL call. Either way, trying again later works.
pub(crate) fn is_busy_error(error: &postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(&SqlState::LOCK_NOT_AVAILABLE | &SqlState::T_R_DEADLOCK_DETECTED)
    )
}

/// What went wrong, in the server's words when the server said it: the
/// client's own text for those is only "db error". The message and the
/// SQLSTATE, never the detail, which may quote the row's values.
pub(crate) fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// A client error shown as [`describe`] shows it, and ending the chain of
/// causes there: the client's own causes include the server's detail.
pub struct PostgresError(pub(crate) postgres::Error);

impl std::fmt::Debug for PostgresError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PostgresError")
            .field(&describe(&self.0))
            .finish()
    }
}

impl std::fmt::Display for PostgresError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe(&self.0))
    }
}

impl std::error::Error for PostgresError {}

pub(in crate::store) fn pg_error(
    operation: &'static str,
) -> impl Fn(postgres::Error) -> StoreError {
    move |source| {
        if is_busy_error(&source) {
            StoreError::Busy { operation }
        } else {
            StoreError::Postgres {
                operation,
                source: PostgresError(source),
            }
        }
    }
}

/// An open PostgreSQL database.
pub(crate) struct PostgresStore {
    client: RefCell<Session>,
    shown: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.shown)
            .finish()
    }
}

impl PostgresStore {
    /// Connects and brings the schema up to date (see [`schema::prepare`]).
    pub(crate) fn connect(
        target: &PostgresTarget,
        mode: OpenMode,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let mut client = target.connect()?;
        let shown = target.to_string();
        let lock_timeout = format!(
            "SET lock_timeout = {}",
            options.busy_timeout.as_millis().max(1)
        );
        client
            .batch_execute(&lock_timeout)
            .map_err(pg_error("setting the lock timeout"))?;
        schema::prepare(&mut client, mode, options, &shown)?;
        Ok(Self {
            client: RefCell::new(Session::new(client)),
            shown,
        })
    }

    pub(super) fn name(&self) -> String {
        self.shown.clone()
    }

    pub(in crate::store) fn client(&self) -> RefMut<'_, Session> {
        self.client.borrow_mut()
    }

    /// The consumers' side of the queue in this database.
    pub(crate) fn queue(&self, options: QueueOptions) -> PostgresQueue<'_> {
        PostgresQueue::new(&self.client, options)
    }

    pub(crate) fn record_queue_settings(&self, stored: [i64; 3]) -> Result<(), StoreError> {
        self.client()
            .execute(
                "INSERT INTO queue_settings (id, max_attempts, retry_backoff_ms, max_retry_backoff_ms)
                 VALUES (1, $1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET max_attempts = excluded.max_attempts,
                     retry_backoff_ms = excluded.retry_backoff_ms,
                     max_retry_backoff_ms = excluded.max_retry_backoff_ms",
                &[&stored[0], &stored[1], &stored[2]],
            )
            .map(drop)
            .map_err(pg_error("recording the queue settings"))
    }

    pub(crate) fn queue_settings(&self) -> Result<Option<[i64; 3]>, StoreError> {
        self.client()
            .query_opt(
                "SELECT max_attempts, retry_backoff_ms, max_retry_backoff_ms
                 FROM queue_settings WHERE id = 1",
                &[],
            )
            .map(|row| row.map(|row| [row.get(0), row.get(1), row.get(2)]))
            .map_err(pg_error("reading the queue settings"))
    }

    pub(crate) fn record_attempt(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.client()
            .execute(
                "UPDATE sync_state SET last_attempt_at_ms = $1 WHERE id = 1",
                &[&to_millis(at)],
            )
            .map(drop)
            .map_err(pg_error("recording a sync attempt"))
    }

    pub(crate) fn record_failure(
        &self,
        kind: &str,
        message: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.client()
            .execute(
                "UPDATE sync_state SET last_error_at_ms = $1, last_error_kind = $2,
                     last_error_message = $3
                 WHERE id = 1",
                &[&to_millis(at), &kind, &message],
            )
            .map(drop)
            .map_err(pg_error("recording a sync failure"))
    }

    pub(crate) fn sync_state(&self) -> Result<SyncState, StoreError> {
        const OPERATION: &str = "reading the sync state";
        let row = self
            .client()
            .query_one(&sync_state_sql(), &[])
            .map_err(pg_error(OPERATION))?;
        SyncStateRow::read(&row).map_err(pg_error(OPERATION))
    }

    /// The sync state and the queue counts, from one snapshot.
    pub(crate) fn status(&self, now: DateTime<Utc>) -> Result<StoreStatus, StoreError> {
        const OPERATION: &str = "reading the status";
        let mut client = self.client();
        let mut tx = read_snapshot(&mut client).map_err(pg_error(OPERATION))?;
        let row = tx
            .query_one(&sync_state_sql(), &[])
            .map_err(pg_error(OPERATION))?;
        let sync = SyncStateRow::read(&row).map_err(pg_error(OPERATION))?;
        let queue = queue::stats_in(&mut tx, now).map_err(pg_error(OPERATION))?;
        tx.commit().map_err(pg_error(OPERATION))?;
        Ok(StoreStatus { sync, queue })
    }

    /// Whether a `run` instance holds the poller lock of this database.
    pub(crate) fn poller_running(&self) -> Result<bool, StoreError> {
        poller_lock::poller_running(&mut self.client())
    }

    pub(crate) fn bucket_last_updated(
        &self,
        bucket_id: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.client()
            .query_opt(
                "SELECT last_updated_ms FROM bucket WHERE bucket_id = $1",
                &[&bucket_id],
            )
            .map(|row| row.map(|row| from_millis(row.get(0))))
            .map_err(pg_error("reading a bucket"))
    }
}

/// Rows a paged read fetches per round trip.
const FETCH: i32 = 5_000;

/// Calls `each` for every row of `sql`, read from one snapshot a page at a
/// time, so memory stays flat whatever the number of rows. `each` stops
/// the read by returning an error.
fn for_each_row<E: From<StoreError>>(
    client: &mut Client,
    operation: &'static str,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
    mut each: impl FnMut(&postgres::Row) -> Result<(), E>,
) -> Result<(), E> {
    let mut tx = read_snapshot(client).map_err(pg_error(operation))?;
    let portal = tx.bind(sql, params).map_err(pg_error(operation))?;
    loop {
        let rows = tx
            .query_portal(&portal, FETCH)
            .map_err(pg_error(operation))?;
        for row in &rows {
            each(row)?;
        }
        if rows.len() < FETCH as usize {
            break;
        }
    }
    tx.commit().map_err(pg_error(operation))?;
    Ok(())
}

/// A read-only transaction that sees one snapshot for all its queries.
fn read_snapshot(client: &mut Client) -> Result<Transaction<'_>, postgres::Error> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
}

fn sync_state_sql() -> String {
    format!(
        "SELECT {} FROM sync_state WHERE id = 1",
        SyncStateRow::COLUMNS
    )
}
