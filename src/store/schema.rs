//! Opening the database file: refusing what cannot be used, connection
//! settings, and migrations.

use std::path::Path;
use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};
use rusqlite_migration::{M, Migrations};

use super::{OpenMode, StoreError, StoreOptions};

const MIGRATION_SQL: &[&str] = &[include_str!("../../migrations/0001_initial.sql")];

/// The schema version this binary writes: the number of migrations.
pub const SCHEMA_VERSION: u32 = MIGRATION_SQL.len() as u32;

const PAGE_SIZE: i64 = 16 * 1024;

fn migrations() -> Migrations<'static> {
    Migrations::new(MIGRATION_SQL.iter().map(|sql| M::up(sql)).collect())
}

pub(super) fn open(
    path: &Path,
    mode: OpenMode,
    options: &StoreOptions,
) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    match mode {
        OpenMode::MustExist => {
            if !path.exists() {
                return Err(StoreError::Missing {
                    path: path.to_owned(),
                });
            }
        }
        OpenMode::CreateIfMissing => {
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                return Err(StoreError::NoDirectory {
                    path: path.to_owned(),
                    dir: dir.to_owned(),
                });
            }
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
    }
    if path.is_dir() {
        return Err(StoreError::NotADatabase {
            path: path.to_owned(),
        });
    }

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
    (|| prepare(&mut conn, path))
        .retry(backoff)
        .when(StoreError::is_busy)
        .call()?;
    Ok(conn)
}

/// Refuses a file that is not SQLite or is too new, sets the connection
/// up and migrates.
fn prepare(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open_error = |source: rusqlite::Error| classify_open_error(path, source);
    // The first read of the header tells a non-SQLite file apart.
    let found: u32 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(open_error)?;
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

    if found < SCHEMA_VERSION {
        migrate(conn, path)?;
    }
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    let outcome = migrations().to_latest(conn);
    conn.set_transaction_behavior(TransactionBehavior::Deferred);
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
                    if is_busy_code(&err) {
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

fn is_busy_code(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn classify_open_error(path: &Path, source: rusqlite::Error) -> StoreError {
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase {
            path: path.to_owned(),
        },
        _ => StoreError::Open {
            path: path.to_owned(),
            source,
        },
    }
}
