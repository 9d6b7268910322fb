//! Keeping state: one narrow interface, [`Store`], over two backends.
//!
//! - `sqlite`: the embedded default, one file (schema and migrations, the
//!   sync state, the rotation log, the atomic ingest of one response, the
//!   queue, the identities and what the re-map worker reads and writes).
//! - `postgres`: the same state on a PostgreSQL server, for consumers and
//!   re-map workers on many machines.
//! - `identities`, `remap`, `columns`: what both backends share, free of
//!   IO: the records they read, the due sets and the answer rule.
//!
//! The sync cycle, the worker and the commands talk to [`Store`] and
//! [`Queue`] only; which tables hold what, and how a backend makes an
//! ingest atomic or a claim exclusive, stays inside the backend.

mod columns;
pub(crate) mod identities;
pub mod migrate;
mod postgres;
pub(crate) mod remap;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use identities::IdentityStatus;
pub(crate) use identities::{IdentityCounts, IdentityImport, IdentityRecord};
pub use postgres::{PollerLock, PostgresError, PostgresTarget};
pub(crate) use remap::{
    BatchCounts, ChangeRecord, DueCursor, DueIdentity, MapOutcome, PassClaims, PassEnd,
    RotationsRead,
};
pub use remap::{MapApi, MappingState, PassCounts};
pub(crate) use sqlite::AccessProblem;
pub use sqlite::schema::{APPLICATION_ID, SCHEMA_VERSION};

use crate::queue::{QueueError, QueueOptions, QueueStats};
use crate::rotation::{BucketRotation, Rotations};
use crate::timestamp::from_millis;
use postgres::PostgresStore;
use sqlite::SqliteStore;

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
    #[error("cannot connect to the PostgreSQL database {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: postgres::PostgresError,
    },
    #[error("cannot set up TLS for PostgreSQL: {0}")]
    Tls(String),
    #[error(
        "the session holding the PostgreSQL poller lock ended (network or server restart); \
         stopped so that another instance can poll"
    )]
    PollerLockLost,
    #[error(
        "the PostgreSQL database {target} has no uid2-bucket-sync schema; run \
         `uid2-bucket-sync sync` with this database.url first"
    )]
    EmptyPostgres { target: String },
    #[error("cannot migrate the PostgreSQL database {target}: {reason}")]
    PostgresMigrate { target: String, reason: String },
    #[error("PostgreSQL error while {operation}: {source}")]
    Postgres {
        operation: &'static str,
        #[source]
        source: postgres::PostgresError,
    },
}

impl StoreError {
    /// Another connection held a lock longer than the busy timeout.
    pub(crate) fn is_busy(&self) -> bool {
        match self {
            Self::Busy { .. } => true,
            Self::Open { source, .. } | Self::Sqlite { source, .. } => {
                sqlite::is_busy_error(source)
            }
            Self::Queue(QueueError::Busy { .. }) => true,
            _ => false,
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

/// The sync state's columns, as both backends select them
/// ([`SyncStateRow::COLUMNS`]).
pub(crate) struct SyncStateRow {
    /// High-water mark, last attempt, last success, last error (ms).
    pub(crate) times: [Option<i64>; 4],
    pub(crate) error_kind: Option<String>,
    pub(crate) error_message: Option<String>,
    /// Received, new rotations, newly queued, of the last success.
    pub(crate) counts: [Option<i64>; 3],
}

impl SyncStateRow {
    /// The select list, in the order of the fields.
    pub(crate) const COLUMNS: &str = "high_water_mark_ms, last_attempt_at_ms, \
        last_success_at_ms, last_error_at_ms, last_error_kind, last_error_message, \
        last_received, last_new_rotations, last_newly_queued";

    /// Reads a row of [`SyncStateRow::COLUMNS`].
    fn read<R: columns::Columns>(row: &R) -> Result<SyncState, R::Error> {
        Ok(Self {
            times: [
                row.optional_number(0)?,
                row.optional_number(1)?,
                row.optional_number(2)?,
                row.optional_number(3)?,
            ],
            error_kind: row.optional_text(4)?,
            error_message: row.optional_text(5)?,
            counts: [
                row.optional_number(6)?,
                row.optional_number(7)?,
                row.optional_number(8)?,
            ],
        }
        .into_state())
    }

    fn into_state(self) -> SyncState {
        let [mark, attempt, success, error] = self.times.map(|ms| ms.map(from_millis));
        let last_error = error.map(|at| Failure {
            at,
            kind: self.error_kind.unwrap_or_default(),
            message: self.error_message.unwrap_or_default(),
        });
        let last_cycle = match self.counts {
            [Some(received), Some(new_rotations), Some(newly_queued)] => Some(CycleCounts {
                received: received as u64,
                new_rotations: new_rotations as u64,
                newly_queued: newly_queued as u64,
            }),
            _ => None,
        };
        SyncState {
            high_water_mark: mark,
            last_attempt_at: attempt,
            last_success_at: success,
            last_error,
            last_cycle,
        }
    }
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

/// What one ingest did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestSummary {
    /// Rows in the response.
    pub received: u64,
    /// Rows dropped because the same response had a later row for the bucket.
    pub duplicates_in_response: u64,
    /// Rotations later than anything known for their bucket; each is now in
    /// the rotation log and the queue.
    pub new_rotations: u64,
    /// New rotations that made an entry pending: a new entry, or a done or
    /// dead one due again.
    pub newly_queued: u64,
    /// Of `newly_queued`, the done or dead entries made pending again.
    pub(crate) reopened: u64,
    /// New rotations folded into an entry that was already pending.
    pub coalesced: u64,
    /// New rotations of leased entries; pending again when the lease ends.
    pub requeued_after_lease: u64,
    /// Rotations already recorded (the operator's `since` is inclusive).
    pub ignored_rereads: u64,
    /// Rotations older than the bucket's latest known one.
    pub ignored_stale: u64,
    pub mark_before: Option<DateTime<Utc>>,
    pub mark_after: Option<DateTime<Utc>>,
}

impl IngestSummary {
    /// The summary of an answer about to be ingested, and the latest
    /// `last_updated` it holds (ms): `rotations` is left with one row per
    /// bucket, its latest, sorted by bucket.
    pub(crate) fn of_answer(rotations: &mut Rotations) -> (Self, Option<i64>) {
        let summary = Self {
            received: rotations.len() as u64,
            // Sorted by bucket, the backends write their indexes in order.
            duplicates_in_response: rotations.keep_latest_per_bucket() as u64,
            ..Self::default()
        };
        (summary, rotations.latest_ms())
    }
}

/// Where the state lives, as the configuration says.
#[derive(Debug, Clone)]
pub enum DatabaseLocation {
    /// The embedded default: a SQLite file.
    File(std::path::PathBuf),
    /// A PostgreSQL database.
    Postgres(Box<PostgresTarget>),
}

impl std::fmt::Display for DatabaseLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Postgres(target) => write!(f, "{target}"),
        }
    }
}

/// An open database of either backend.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

/// Runs `$body` with `$store` bound to whichever backend is open.
macro_rules! on_backend {
    ($self:expr, $store:ident => $body:expr) => {
        match &$self.backend {
            Backend::Sqlite($store) => $body,
            Backend::Postgres($store) => $body,
        }
    };
}

impl Store {
    /// Opens (and with [`OpenMode::CreateIfMissing`], creates) the SQLite
    /// database at `path`, refusing a file that is not SQLite or whose
    /// schema is newer than this binary, and applies pending migrations.
    pub fn open(path: &Path, mode: OpenMode, options: &StoreOptions) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Sqlite(SqliteStore::open(path, mode, options)?),
        })
    }

    /// Connects to the PostgreSQL database `target`; with
    /// [`OpenMode::CreateIfMissing`] creates the schema in an empty one,
    /// and applies pending migrations either way.
    pub fn connect(
        target: &PostgresTarget,
        mode: OpenMode,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Postgres(PostgresStore::connect(target, mode, options)?),
        })
    }

    /// Opens the database `location` names, of either backend.
    pub fn open_location(
        location: &DatabaseLocation,
        mode: OpenMode,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        match location {
            DatabaseLocation::File(path) => Self::open(path, mode, options),
            DatabaseLocation::Postgres(target) => Self::connect(target, mode, options),
        }
    }

    /// Which command created the SQLite database at `path`:
    /// [`CREATED_BY_DAEMON`], `demo`, or `None` for databases older than
    /// that record. Reads the file without migrating it or writing anything.
    pub fn created_by(path: &Path) -> Result<Option<String>, StoreError> {
        sqlite::schema::created_by(path)
    }

    /// The consumers' side of the queue in this database.
    pub fn queue(&self, options: QueueOptions) -> Queue<'_> {
        Queue(match &self.backend {
            Backend::Sqlite(store) => QueueBackend::Sqlite(store.queue(options)),
            Backend::Postgres(store) => QueueBackend::Postgres(store.queue(options)),
        })
    }

    /// Records the daemon's queue settings with the queue, for every
    /// consumer to use (see [`Store::queue_settings`]).
    /// Writes only when they changed: a sync that finds nothing new writes
    /// nothing but its sync state.
    pub fn record_queue_settings(&self, options: &QueueOptions) -> Result<(), StoreError> {
        let stored = options.to_stored();
        if on_backend!(self, store => store.queue_settings())? == Some(stored) {
            return Ok(());
        }
        on_backend!(self, store => store.record_queue_settings(stored))
    }

    /// The queue settings the daemon recorded, or `None` before any did.
    pub fn queue_settings(&self) -> Result<Option<QueueOptions>, StoreError> {
        let stored = on_backend!(self, store => store.queue_settings())?;
        Ok(stored.map(QueueOptions::from_stored).transpose()?)
    }

    /// Records the start of a poll cycle.
    pub fn record_attempt(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        on_backend!(self, store => store.record_attempt(at))
    }

    /// Records a failed poll cycle. `kind` is a short stable word (for
    /// example `unauthorized`, `timeout`), `message` the one-line reason.
    pub fn record_failure(
        &self,
        kind: &str,
        message: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_backend!(self, store => store.record_failure(kind, message, at))
    }

    /// The next `since_timestamp`, or `None` before the first success.
    pub fn high_water_mark(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.sync_state()?.high_water_mark)
    }

    pub fn sync_state(&self) -> Result<SyncState, StoreError> {
        on_backend!(self, store => store.sync_state())
    }

    /// The sync state and the queue counts, consistent with each other.
    pub fn status(&self, now: DateTime<Utc>) -> Result<StoreStatus, StoreError> {
        on_backend!(self, store => store.status(now))
    }

    /// The latest known `last_updated` of a bucket.
    pub fn bucket_last_updated(
        &self,
        bucket_id: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        on_backend!(self, store => store.bucket_last_updated(bucket_id))
    }

    /// Records one response, observed at `observed_at`, in one transaction.
    ///
    /// A rotation is new when it is later than its bucket's latest known
    /// one; new rotations are logged and queued. Rows already known are
    /// ignored, so re-reading the inclusive boundary is harmless. The
    /// high-water mark becomes the latest `last_updated` received if that is
    /// later; the local clock never enters it. On any error nothing changes.
    pub fn ingest(
        &self,
        rotations: Vec<BucketRotation>,
        observed_at: DateTime<Utc>,
    ) -> Result<IngestSummary, StoreError> {
        self.ingest_rotations(rotations.into(), observed_at)
    }

    /// [`Store::ingest`] of an answer as the operator client parses it.
    pub fn ingest_rotations(
        &self,
        rotations: Rotations,
        observed_at: DateTime<Utc>,
    ) -> Result<IngestSummary, StoreError> {
        on_backend!(self, store => store.ingest_rotations(rotations, observed_at))
    }

    /// The SQLite backend, for the tests of what only it has (its file,
    /// its fold, its failure probes).
    pub(crate) fn as_sqlite(&self) -> Option<&SqliteStore> {
        match &self.backend {
            Backend::Sqlite(store) => Some(store),
            Backend::Postgres(_) => None,
        }
    }

    /// On PostgreSQL, whether a `run` instance holds the poller lock; on
    /// SQLite `None`: the daemon's lock is on the file (daemon::instance_lock).
    pub fn poller_running(&self) -> Result<Option<bool>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(store) => store.poller_running().map(Some),
        }
    }

    /// The database as `status` and the logs name it: the file's path, or
    /// the URL without its password.
    pub(crate) fn name(&self) -> String {
        on_backend!(self, store => store.name())
    }

    // ---- identities and the re-map worker -----------------------------------

    /// Starts an import; identities it adds or updates are stamped `now`.
    pub(crate) fn import_identities(
        &self,
        now: DateTime<Utc>,
    ) -> Result<IdentityImport<'_>, StoreError> {
        on_backend!(self, store => store.import_identities(now))
    }

    pub(crate) fn remove_identities<E>(
        &self,
        next: impl FnMut() -> Option<Result<String, E>>,
    ) -> Result<Result<u64, E>, StoreError> {
        on_backend!(self, store => store.remove_identities(next))
    }

    pub(crate) fn export_identities<E: From<StoreError>>(
        &self,
        status: Option<IdentityStatus>,
        each: impl FnMut(&IdentityRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        on_backend!(self, store => store.export_identities(status, each))
    }

    pub(crate) fn next_due(
        &self,
        cursor: &mut DueCursor,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<DueIdentity>, StoreError> {
        on_backend!(self, store => store.next_due(cursor, limit, now))
    }

    /// Commits one batch's answers in one transaction (`outcomes[i]` is the
    /// answer for `batch[i]`), for the identities the pass whose
    /// [`DueCursor::lease_id`] is `lease_id` still holds. An identity whose
    /// UID2 or status changed gets one change record; an unchanged one gets
    /// none.
    pub(crate) fn commit_mappings(
        &self,
        lease_id: &str,
        batch: &[DueIdentity],
        outcomes: &[MapOutcome],
        now: DateTime<Utc>,
    ) -> Result<BatchCounts, StoreError> {
        assert_eq!(
            batch.len(),
            outcomes.len(),
            "one answer per identity sent, checked by the client"
        );
        match &self.backend {
            Backend::Sqlite(store) => store.commit_mappings(batch, outcomes, now),
            Backend::Postgres(store) => store.commit_mappings(lease_id, batch, outcomes, now),
        }
    }

    /// Frees the identities a pass that stopped early still holds, so the
    /// next pass need not wait for their leases to run out (PostgreSQL;
    /// on SQLite nothing is held).
    pub(crate) fn release_claims(&self, claims: &PassClaims) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(store) => store.release_claims(claims.lease_id()),
        }
    }

    pub(crate) fn record_pass_start(
        &self,
        api: MapApi,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_backend!(self, store => store.record_pass_start(api, at))
    }

    pub(crate) fn record_pass_end(
        &self,
        counts: &PassCounts,
        outcome: PassEnd<'_>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_backend!(self, store => store.record_pass_end(counts, outcome, at))
    }

    pub fn mapping_state(&self) -> Result<MappingState, StoreError> {
        on_backend!(self, store => store.mapping_state())
    }

    pub(crate) fn identity_counts(
        &self,
        api: MapApi,
        now: DateTime<Utc>,
    ) -> Result<IdentityCounts, StoreError> {
        on_backend!(self, store => store.identity_counts(api, now))
    }

    pub(crate) fn remaps_due(&self, api: MapApi, now: DateTime<Utc>) -> Result<u64, StoreError> {
        on_backend!(self, store => store.remaps_due(api, now))
    }

    pub(crate) fn changes<E: From<StoreError>>(
        &self,
        after: i64,
        limit: Option<u64>,
        each: impl FnMut(&ChangeRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        on_backend!(self, store => store.changes(after, limit, each))
    }

    pub(crate) fn prune_changes(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        on_backend!(self, store => store.prune_changes(cutoff))
    }
}

/// The queue of an open [`Store`], of either backend.
pub struct Queue<'s>(QueueBackend<'s>);

enum QueueBackend<'s> {
    Sqlite(sqlite::SqliteQueue<'s>),
    Postgres(postgres::PostgresQueue<'s>),
}

macro_rules! on_queue {
    ($self:expr, $queue:ident => $body:expr) => {
        match &$self.0 {
            QueueBackend::Sqlite($queue) => $body,
            QueueBackend::Postgres($queue) => $body,
        }
    };
}

impl crate::queue::RemapQueue for Queue<'_> {
    fn claim(
        &self,
        request: &crate::queue::ClaimRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<crate::queue::Lease>, QueueError> {
        on_queue!(self, queue => queue.claim(request, now))
    }

    fn ack(
        &self,
        lease_ids: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Vec<crate::queue::AckOutcome>, QueueError> {
        on_queue!(self, queue => queue.ack(lease_ids, now))
    }

    fn fail(
        &self,
        lease_ids: &[&str],
        error: &str,
        retry_after: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<Vec<crate::queue::FailOutcome>, QueueError> {
        on_queue!(self, queue => queue.fail(lease_ids, error, retry_after, now))
    }

    fn for_each_entry<B>(
        &self,
        filter: &crate::queue::ListFilter,
        visit: impl FnMut(crate::queue::QueueEntry) -> std::ops::ControlFlow<B>,
    ) -> Result<std::ops::ControlFlow<B>, QueueError> {
        on_queue!(self, queue => queue.for_each_entry(filter, visit))
    }

    fn stats(&self, now: DateTime<Utc>) -> Result<QueueStats, QueueError> {
        on_queue!(self, queue => queue.stats(now))
    }

    fn retry_dead(&self, now: DateTime<Utc>) -> Result<u64, QueueError> {
        on_queue!(self, queue => queue.retry_dead(now))
    }

    fn purge_done(&self, cutoff: DateTime<Utc>) -> Result<u64, QueueError> {
        on_queue!(self, queue => queue.purge_done(cutoff))
    }

    fn reclaim_expired(&self, now: DateTime<Utc>) -> Result<crate::queue::Reclaimed, QueueError> {
        on_queue!(self, queue => queue.reclaim_expired(now))
    }
}
