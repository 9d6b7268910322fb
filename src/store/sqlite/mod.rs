//! The SQLite backend: one file, its schema and migrations, the sync state,
//! the rotation log, the atomic ingest of one operator response, the queue
//! (`queue`) and the identities.
//!
//! One [`SqliteStore`] is one connection. The file is in WAL mode, so readers
//! never wait; writers take the write lock up front (`BEGIN IMMEDIATE`) and
//! wait up to `busy_timeout` for each other. The queue lives in the same
//! file and is reached through [`SqliteStore::queue`].

pub(super) mod access;
mod durable_commit;
mod identities;
pub(super) mod ingest;
mod queue;
mod remap;
pub(super) mod schema;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};

pub(crate) use access::AccessProblem;
pub(crate) use identities::SqliteImport;
pub(crate) use queue::SqliteQueue;

use super::{OpenMode, StoreError, StoreOptions, StoreStatus, SyncState, SyncStateRow};
use crate::queue::QueueOptions;
use crate::timestamp::{from_millis, to_millis};

/// Another connection held a lock longer than the busy timeout: the one
/// test of "database busy" for every SQLite call of the store and the queue.
pub(crate) fn is_busy_error(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

pub(in crate::store) fn sql_error(
    operation: &'static str,
) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| {
        if is_busy_error(&source) {
            StoreError::Busy { operation }
        } else {
            StoreError::Sqlite { operation, source }
        }
    }
}

/// An open database file.
pub struct SqliteStore {
    last_commit: durable_commit::LastCommit,
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.last_commit.before_close(&self.conn);
    }
}

impl SqliteStore {
    /// Opens (and with [`OpenMode::CreateIfMissing`], creates) the database,
    /// refusing a file that is not SQLite or whose schema is newer than this
    /// binary, and applies pending migrations.
    pub fn open(path: &Path, mode: OpenMode, options: &StoreOptions) -> Result<Self, StoreError> {
        let conn = schema::open(path, mode, options)?;
        let last_commit =
            durable_commit::LastCommit::watch(&conn).map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            last_commit,
            conn,
            path: path.to_owned(),
        })
    }

    pub(super) fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// The consumers' side of the queue in this file.
    pub fn queue(&self, options: QueueOptions) -> SqliteQueue<'_> {
        SqliteQueue::new(&self.conn, options)
    }

    fn write_transaction(&self, operation: &'static str) -> Result<Transaction<'_>, StoreError> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(sql_error(operation))
    }

    pub(super) fn record_queue_settings(&self, stored: [i64; 3]) -> Result<(), StoreError> {
        const OPERATION: &str = "recording the queue settings";
        let tx = self.write_transaction(OPERATION)?;
        tx.execute(
            "INSERT INTO queue_settings (id, max_attempts, retry_backoff_ms, max_retry_backoff_ms)
             VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET max_attempts = excluded.max_attempts,
                 retry_backoff_ms = excluded.retry_backoff_ms,
                 max_retry_backoff_ms = excluded.max_retry_backoff_ms",
            stored,
        )
        .map_err(sql_error(OPERATION))?;
        tx.commit().map_err(sql_error(OPERATION))
    }

    pub(super) fn queue_settings(&self) -> Result<Option<[i64; 3]>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT max_attempts, retry_backoff_ms, max_retry_backoff_ms
                 FROM queue_settings WHERE id = 1",
                [],
                |row| Ok([row.get(0)?, row.get(1)?, row.get(2)?]),
            )
            .optional()
            .map_err(sql_error("reading the queue settings"))
    }

    /// Records the start of a poll cycle.
    pub fn record_attempt(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        const OPERATION: &str = "recording a sync attempt";
        let tx = self.write_transaction(OPERATION)?;
        tx.execute(
            "UPDATE sync_state SET last_attempt_at_ms = ?1 WHERE id = 1",
            [to_millis(at)],
        )
        .map_err(sql_error(OPERATION))?;
        tx.commit().map_err(sql_error(OPERATION))
    }

    /// Records a failed poll cycle. `kind` is a short stable word (for
    /// example `unauthorized`, `timeout`), `message` the one-line reason.
    pub fn record_failure(
        &self,
        kind: &str,
        message: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        const OPERATION: &str = "recording a sync failure";
        let tx = self.write_transaction(OPERATION)?;
        tx.execute(
            "UPDATE sync_state SET last_error_at_ms = ?1, last_error_kind = ?2,
                 last_error_message = ?3
             WHERE id = 1",
            rusqlite::params![to_millis(at), kind, message],
        )
        .map_err(sql_error(OPERATION))?;
        tx.commit().map_err(sql_error(OPERATION))
    }

    pub fn sync_state(&self) -> Result<SyncState, StoreError> {
        sync_state_in(&self.conn).map_err(sql_error("reading the sync state"))
    }

    /// The sync state and the queue counts, consistent with each other.
    pub fn status(&self, now: DateTime<Utc>) -> Result<StoreStatus, StoreError> {
        const OPERATION: &str = "reading the status";
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred)
            .map_err(sql_error(OPERATION))?;
        let sync = sync_state_in(&tx).map_err(sql_error(OPERATION))?;
        let queue = queue::stats_in(&tx, now).map_err(sql_error(OPERATION))?;
        tx.commit().map_err(sql_error(OPERATION))?;
        Ok(StoreStatus { sync, queue })
    }

    /// The latest known `last_updated` of a bucket.
    pub fn bucket_last_updated(
        &self,
        bucket_id: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.conn
            .prepare_cached(&ingest::latest_rotation_sql())
            .and_then(|mut s| s.query_row([bucket_id], |row| row.get(0)))
            .map(|ms: Option<i64>| ms.map(from_millis))
            .map_err(sql_error("reading a bucket"))
    }

    /// The connection, for the tests of this backend and for copying the
    /// database elsewhere (`store::migrate`).
    pub(in crate::store) fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Every row of each of `relations` (tables or views) as text, each
/// relation's rows sorted: equal when the relations hold the same rows.
#[cfg(test)]
pub(crate) fn relation_rows(conn: &Connection, relations: &[&str]) -> Vec<String> {
    let mut rows = Vec::new();
    for relation in relations {
        let mut statement = conn.prepare(&format!("SELECT * FROM {relation}")).unwrap();
        let columns = statement.column_count();
        let mut cursor = statement.query([]).unwrap();
        let mut relation_rows = Vec::new();
        while let Some(row) = cursor.next().unwrap() {
            let values: Vec<String> = (0..columns)
                .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                .collect();
            relation_rows.push(format!("{relation}: {}", values.join(", ")));
        }
        relation_rows.sort();
        rows.extend(relation_rows);
    }
    rows
}

/// A new database file in `dir`, as the store's unit tests open it.
#[cfg(test)]
pub(crate) fn open_test_store(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(
        &dir.path().join("buckets.db"),
        OpenMode::CreateIfMissing,
        &StoreOptions::default(),
    )
    .unwrap()
}

fn sync_state_in(conn: &Connection) -> rusqlite::Result<SyncState> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM sync_state WHERE id = 1",
        SyncStateRow::COLUMNS
    ))?
    .query_row([], |row| SyncStateRow::read(row))
}
