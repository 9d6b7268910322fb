//! Opening the database file: refusing what cannot be used, connection
//! settings, and migrations.

use std::path::Path;
use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use rusqlite_migration::{M, Migrations};

use super::access;
use crate::store::{OpenMode, StoreError, StoreOptions};

const MIGRATION_SQL: &[&str] = &[
    include_str!("../../../migrations/0001_initial.sql"),
    include_str!("../../../migrations/0002_database_meta.sql"),
    include_str!("../../../migrations/0003_identities.sql"),
    include_str!("../../../migrations/0004_mapping.sql"),
    include_str!("../../../migrations/0005_write_news_only.sql"),
    include_str!("../../../migrations/0006_queue_settings.sql"),
];

/// `PRAGMA application_id` of our files: "UID2" in ASCII.
pub const APPLICATION_ID: i64 = 0x5549_4432;

/// The schema version this binary writes: the number of migrations.
pub const SCHEMA_VERSION: u32 = MIGRATION_SQL.len() as u32;

const PAGE_SIZE: i64 = 16 * 1024;
/// Bytes of WAL kept after a checkpoint: 1,000 pages.
const WAL_SIZE_LIMIT: i64 = 1000 * PAGE_SIZE;

fn migrations() -> Migrations<'static> {
    Migrations::new(MIGRATION_SQL.iter().map(|sql| M::up(sql)).collect())
}

pub(super) fn open(
    path: &Path,
    mode: OpenMode,
    options: &StoreOptions,
) -> Result<Connection, StoreError> {
    if path.is_dir() {
        return Err(StoreError::IsDirectory {
            path: path.to_owned(),
        });
    }
    access::share_directory(access::directory_of(path));
    if !path.exists() {
        match mode {
            OpenMode::MustExist => {
                return Err(StoreError::Missing {
                    path: path.to_owned(),
                });
            }
            OpenMode::CreateIfMissing => {
                let dir = access::directory_of(path);
                if !dir.is_dir() {
                    return Err(StoreError::NoDirectory {
                        path: path.to_owned(),
                        dir: dir.to_owned(),
                    });
                }
                access::create_shared(path)?;
            }
        }
    }
    access::check_writable(path)?;

    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let open_error = |source: rusqlite::Error| classify_open_error(path, source);
    let mut conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(open_error)?;
    conn.set_prepared_statement_cache_capacity(32);

    // Switching a new file to WAL, or reading one whose WAL another process
    // is just creating or removing, can report "locked" without waiting
    // for the busy handler: retry for as long as a writer would wait.
    let backoff = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(2))
        .with_max_delay(Duration::from_millis(50))
        .without_max_times()
        .with_total_delay(Some(options.busy_timeout));
    (|| prepare(&mut conn, path, options.created_by))
        .retry(backoff)
        .when(StoreError::is_busy)
        .call()?;
    // SQLite silently opens a file it cannot write read-only; every write
    // would then fail with "attempt to write a readonly database".
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(open_error)? {
        return Err(access::diagnose(path).into());
    }
    Ok(conn)
}

/// Refuses a file that is not SQLite, not ours or too new, sets the
/// connection up and migrates.
fn prepare(conn: &mut Connection, path: &Path, created_by: &str) -> Result<(), StoreError> {
    let open_error = |source: rusqlite::Error| classify_open_error(path, source);
    // The first read of the header tells a non-SQLite file apart.
    let header = read_header(conn).map_err(open_error)?;
    check_ours(path, &header)?;
    let found = header.user_version;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }

    if found == 0 {
        // Larger pages halve the B-tree work of a full 2^20-row ingest;
        // ignored unless the file is still empty.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(open_error)?;
    }
    let journal_mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .map_err(open_error)?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_error)?;
    // Statement journals (one per multi-row UPDATE) stay in memory instead
    // of a temporary file written page by page.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(open_error)?;
    // A WAL is reused, not shrunk, after a checkpoint; and a `sync` whose
    // commit was synced closes without the checkpoint that used to delete
    // it (see durable_commit.rs). Without a limit the first sync's ~140 MB
    // WAL would stay on disk; with it, the WAL is cut back to about one
    // autocheckpoint's worth (1,000 pages) once it has been checkpointed.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(open_error)?;

    if found < SCHEMA_VERSION {
        migrate(conn, path, (found == 0).then_some(created_by))?;
    }
    Ok(())
}

/// What the file says about itself, read in one statement and so from one
/// snapshot: another process may be creating the schema meanwhile.
struct Header {
    user_version: u32,
    application_id: i64,
    tables: u64,
    has_sync_state: bool,
}

fn read_header(conn: &Connection) -> rusqlite::Result<Header> {
    conn.query_row(
        "SELECT (SELECT user_version FROM pragma_user_version),
                (SELECT application_id FROM pragma_application_id),
                (SELECT count(*) FROM sqlite_schema WHERE type = 'table'),
                (SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'sync_state')",
        [],
        |row| {
            Ok(Header {
                user_version: row.get(0)?,
                application_id: row.get(1)?,
                tables: row.get::<_, i64>(2)? as u64,
                has_sync_state: row.get(3)?,
            })
        },
    )
}

/// Our files carry [`APPLICATION_ID`]; those written before it existed
/// have our schema version and our `sync_state` table. An empty file is
/// anybody's. Anything else belongs to another program and is refused
/// rather than having our tables added to it.
fn check_ours(path: &Path, header: &Header) -> Result<(), StoreError> {
    let empty = header.application_id == 0 && header.user_version == 0 && header.tables == 0;
    let unmarked_ours =
        header.application_id == 0 && header.user_version >= 1 && header.has_sync_state;
    if header.application_id == APPLICATION_ID || empty || unmarked_ours {
        return Ok(());
    }
    Err(StoreError::NotOurs {
        path: path.to_owned(),
        application_id: header.application_id,
        tables: header.tables,
    })
}

/// Applies pending migrations in one transaction; on a new file
/// (`created_by` given) then records which command created it.
fn migrate(conn: &mut Connection, path: &Path, created_by: Option<&str>) -> Result<(), StoreError> {
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    let outcome = migrations().to_latest(conn).and_then(|()| {
        if let Some(created_by) = created_by {
            conn.execute(
                "INSERT OR IGNORE INTO database_meta (key, value) VALUES ('created_by', ?1)",
                [created_by],
            )
            .map_err(|err| rusqlite_migration::Error::with_sql(err, ""))?;
        }
        Ok(())
    });
    conn.set_transaction_behavior(TransactionBehavior::Deferred);
    if outcome.is_ok() {
        match created_by {
            Some(_) => tracing::info!(
                "created the database {} (schema version {SCHEMA_VERSION})",
                path.display()
            ),
            None => tracing::info!(
                "migrated the database {} to schema version {SCHEMA_VERSION}",
                path.display()
            ),
        }
    }
    if let Err(source) = outcome {
        // Two processes may open an old or new file at once: the one that
        // waited for the write lock finds the work done.
        let now: u32 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap_or(0);
        if now != SCHEMA_VERSION {
            // The library's message quotes the whole migration script.
            let reason = match source {
                rusqlite_migration::Error::RusqliteError { err, .. } => {
                    if super::is_busy_error(&err) {
                        return Err(StoreError::Busy {
                            operation: "migrating",
                        });
                    }
                    err.to_string()
                }
                other => other.to_string(),
            };
            return Err(StoreError::Migrate {
                path: path.to_owned(),
                target: SCHEMA_VERSION,
                reason,
            });
        }
    }
    Ok(())
}

fn classify_open_error(path: &Path, source: rusqlite::Error) -> StoreError {
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase {
            path: path.to_owned(),
        },
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            access::diagnose(path).into()
        }
        _ => StoreError::Open {
            path: path.to_owned(),
            source,
        },
    }
}

/// Which command created an existing database (`None` for files created
/// before that was recorded), read without migrating or writing anything.
pub(crate) fn created_by(path: &Path) -> Result<Option<String>, StoreError> {
    if path.is_dir() {
        return Err(StoreError::IsDirectory {
            path: path.to_owned(),
        });
    }
    if !path.exists() {
        return Err(StoreError::Missing {
            path: path.to_owned(),
        });
    }
    let open_error = |source: rusqlite::Error| classify_open_error(path, source);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_error)?;
    let header = read_header(&conn).map_err(open_error)?;
    check_ours(path, &header)?;
    if header.user_version < 2 {
        return Ok(None);
    }
    conn.query_row(
        "SELECT value FROM database_meta WHERE key = 'created_by'",
        [],
        |row| row.get(0),
    )
    .optional()
    .map_err(open_error)
}

#[cfg(test)]
mod tests {
    use crate::store::sqlite::SqliteStore as Store;
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::rotation::BucketRotation;
    use crate::store::MapApi;
    use crate::timestamp::from_millis;

    /// Written by the last release of schema version 4 (`sync`, claims,
    /// acks, a failure, identities mapped with v2, then three more syncs),
    /// so that its rotations since the last pass make 6 identities due.
    const SCHEMA_4: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema-4.db");

    const CONTRACT_VIEWS: &[&str] = &[
        "buckets",
        "bucket_rotations",
        "remap_queue",
        "sync_status",
        "identities",
        "identity_changes",
        "mapping_status",
    ];

    /// Every row of every view of the SQL contract, in a stable order.
    fn contract_rows(path: &Path) -> Vec<String> {
        crate::store::sqlite::relation_rows(&Connection::open(path).unwrap(), CONTRACT_VIEWS)
    }

    #[test]
    fn a_database_written_by_schema_version_4_keeps_every_view_row_and_what_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buckets.db");
        std::fs::copy(SCHEMA_4, &path).unwrap();
        let before = contract_rows(&path);
        assert!(before.len() > 700, "{} rows", before.len());

        let store = Store::open(&path, OpenMode::MustExist, &StoreOptions::default()).unwrap();
        assert_eq!(contract_rows(&path), before);
        let now = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(store.remaps_due(MapApi::V2, now).unwrap(), 6);

        // The carried-over latest rotations decide what is new.
        let (bucket, latest): (String, i64) = store
            .connection()
            .query_row(
                "SELECT bucket_id, max(last_updated_ms) FROM rotation_log
                 GROUP BY bucket_id ORDER BY bucket_id LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        let rotation = |ms| BucketRotation {
            bucket_id: bucket.as_str().into(),
            last_updated: from_millis(ms),
        };
        let reread = store.ingest(vec![rotation(latest)], now).unwrap();
        assert_eq!((reread.ignored_rereads, reread.new_rotations), (1, 0));
        let newer = store.ingest(vec![rotation(latest + 1)], now).unwrap();
        assert_eq!(newer.new_rotations, 1);
        assert_eq!(
            store.bucket_last_updated(&bucket).unwrap(),
            Some(from_millis(latest + 1))
        );
    }
}
