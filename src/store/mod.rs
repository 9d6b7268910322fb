//! The SQLite file: schema and migrations, the sync state, the rotation log
//! and the atomic ingest of one operator response.
//!
//! One [`Store`] is one connection. The file is in WAL mode, so readers
//! never wait; writers take the write lock up front (`BEGIN IMMEDIATE`) and
//! wait up to `busy_timeout` for each other. The queue lives in the same
//! file and is reached through [`Store::queue`].

mod access;
mod durable_commit;
mod identities;
mod ingest;
mod remap;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};

pub(crate) use access::AccessProblem;
pub(crate) use identities::IdentityCounts;
pub use identities::IdentityStatus;
pub(crate) use identities::{IdentityImport, IdentityRecord, Staged};
pub(crate) use ingest::IngestSummary;
pub(crate) use remap::{BatchCounts, ChangeRecord, DueCursor, DueIdentity, MapOutcome, PassEnd};
pub use remap::{MapApi, MappingState, PassCounts};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};

use crate::queue::{QueueError, QueueOptions, QueueStats, SqliteQueue};
use crate::timestamp::{from_millis, to_millis};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long a writer waits for another writer's transaction to end.
    pub busy_timeout: Duration,
    /// Recorded in a database this open creates (see [`Store::created_by`]).
    pub created_by: &'static str,
}

/// `created_by` of databases created by `sync` and `run`.
pub const CREATED_BY_DAEMON: &str = "uid2-bucket-sync";

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(30),
            created_by: CREATED_BY_DAEMON,
        }
    }
}

/// Whether opening may create the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The poller's mode: a missing file is created (its directory must exist).
    CreateIfMissing,
    /// The consumers' mode: a missing file is an error, nothing is created.
    MustExist,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no database at {}; run `uid2-bucket-sync sync` first", path.display())]
    Missing { path: PathBuf },
    #[error(
        "cannot create the database {}: directory {} does not exist",
        path.display(),
        dir.display()
    )]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("{} is not a SQLite database", path.display())]
    NotADatabase { path: PathBuf },
    #[error(
        "{} is a directory; the database path must name a file, e.g. {}",
        path.display(),
        path.join("buckets.db").display()
    )]
    IsDirectory { path: PathBuf },
    #[error(
        "{} is another application's SQLite database (application_id {application_id:#x}, \
         {tables} table(s)); refusing to add uid2-bucket-sync's tables to it: point the \
         database path at a new file",
        path.display()
    )]
    NotOurs {
        path: PathBuf,
        application_id: i64,
        tables: u64,
    },
    #[error(transparent)]
    Access(#[from] AccessProblem),
    #[error(
        "the database {} has schema version {found}, newer than the version {supported} this \
         uid2-bucket-sync knows; use a newer uid2-bucket-sync",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot open the database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "cannot migrate the database {} to schema version {target}: {reason}",
        path.display()
    )]
    Migrate {
        path: PathBuf,
        target: u32,
        reason: String,
    },
    #[error(
        "the database stayed locked by another writer for longer than the busy timeout while {operation}"
    )]
    Busy { operation: &'static str },
    #[error("database error while {operation}: {source}")]
    Sqlite {
        operation: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl StoreError {
    /// Another connection held a lock longer than the busy timeout.
    pub(crate) fn is_busy(&self) -> bool {
        match self {
            Self::Busy { .. } => true,
            Self::Open { source, .. } | Self::Sqlite { source, .. } => is_busy_error(source),
            Self::Queue(QueueError::Busy { .. }) => true,
            _ => false,
        }
    }
}

/// Another connection held a lock longer than the busy timeout: the one
/// test of "database busy" for every SQLite call of the store and the queue.
pub(crate) fn is_busy_error(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn sql_error(operation: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| {
        if is_busy_error(&source) {
            StoreError::Busy { operation }
        } else {
            StoreError::Sqlite { operation, source }
        }
    }
}

/// A store shared between the sync cycle, the daemon's housekeeping and
/// the demo's narration. SQLite work runs on the blocking pool, one call at
/// a time, through [`with_store`].
pub type SharedStore = Arc<Mutex<Store>>;

/// Runs `work` against the shared store on the blocking pool, so the
/// scheduler, the signal handler and the watchdog keep running during a
/// 2^20-row ingest.
pub(crate) async fn with_store<T: Send + 'static>(
    store: &SharedStore,
    work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    let joined = tokio::task::spawn_blocking(move || {
        // A panic while holding the lock cannot leave SQLite half-written
        // (the transaction rolls back), so the store stays usable.
        let store = store.lock().unwrap_or_else(PoisonError::into_inner);
        work(&store)
    })
    .await;
    match joined {
        Ok(result) => result,
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
}

/// The poller's progress, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    /// The latest `last_updated` ever received; `None` before the first
    /// successful sync.
    pub high_water_mark: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<Failure>,
    /// Counts of the last successful cycle.
    pub last_cycle: Option<CycleCounts>,
}

/// A failed sync cycle or re-map pass, as recorded: `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CycleCounts {
    pub received: u64,
    pub new_rotations: u64,
    pub newly_queued: u64,
}

/// Everything `status` shows, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    pub sync: SyncState,
    pub queue: QueueStats,
}

/// An open database.
pub struct Store {
    last_commit: durable_commit::LastCommit,
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.last_commit.before_close(&self.conn);
    }
}

impl Store {
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

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Which command created the database at `path`: [`CREATED_BY_DAEMON`],
    /// `demo`, or `None` for databases older than that record. Reads the
    /// file without migrating it or writing anything.
    pub fn created_by(path: &Path) -> Result<Option<String>, StoreError> {
        schema::created_by(path)
    }

    /// The consumers' side of the queue in this file.
    pub fn queue(&self, options: QueueOptions) -> SqliteQueue<'_> {
        SqliteQueue::new(&self.conn, options)
    }

    fn write_transaction(&self, operation: &'static str) -> Result<Transaction<'_>, StoreError> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(sql_error(operation))
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

    /// The next `since_timestamp`, or `None` before the first success.
    pub fn high_water_mark(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.sync_state()?.high_water_mark)
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
        let queue = crate::queue::sqlite_stats(&tx, now).map_err(sql_error(OPERATION))?;
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

    #[cfg(test)]
    pub(crate) fn connection(&self) -> &Connection {
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
pub(crate) fn open_test_store(dir: &tempfile::TempDir) -> Store {
    Store::open(
        &dir.path().join("buckets.db"),
        OpenMode::CreateIfMissing,
        &StoreOptions::default(),
    )
    .unwrap()
}

fn sync_state_in(conn: &Connection) -> rusqlite::Result<SyncState> {
    conn.prepare_cached(
        "SELECT high_water_mark_ms, last_attempt_at_ms, last_success_at_ms,
                last_error_at_ms, last_error_kind, last_error_message,
                last_received, last_new_rotations, last_newly_queued
         FROM sync_state WHERE id = 1",
    )?
    .query_row([], |row| {
        let time = |index| row.get::<_, Option<i64>>(index).map(|v| v.map(from_millis));
        let last_error = match time(3)? {
            Some(at) => Some(Failure {
                at,
                kind: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
                message: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
            }),
            None => None,
        };
        let counts = (
            row.get::<_, Option<i64>>(6)?,
            row.get::<_, Option<i64>>(7)?,
            row.get::<_, Option<i64>>(8)?,
        );
        let last_cycle = match counts {
            (Some(received), Some(new_rotations), Some(newly_queued)) => Some(CycleCounts {
                received: received as u64,
                new_rotations: new_rotations as u64,
                newly_queued: newly_queued as u64,
            }),
            _ => None,
        };
        Ok(SyncState {
            high_water_mark: time(0)?,
            last_attempt_at: time(1)?,
            last_success_at: time(2)?,
            last_error,
            last_cycle,
        })
    })
}
