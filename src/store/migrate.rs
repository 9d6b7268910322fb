//! `migrate-to`: copying a SQLite database into an empty PostgreSQL one,
//! all of its state in one PostgreSQL transaction, read from one SQLite
//! snapshot: the sync state (so the next poll goes on from the same
//! high-water mark), every rotation, every queue entry as it stands
//! (leases included: a consumer holding one can still ack it), the
//! identities, the change feed (its `seq` values kept, so consumers' saved
//! positions stay meaningful) and the re-map worker's state.

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use rusqlite::{Transaction as SqliteTransaction, TransactionBehavior};

use super::postgres::{PostgresStore, PostgresTarget};
use super::remap::MappingStateRow;
use super::{OpenMode, Store, StoreError, StoreOptions};

/// What [`copy_to_postgres`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopiedCounts {
    pub rotations: u64,
    pub buckets: u64,
    pub queue_entries: u64,
    pub leased: u64,
    pub identities: u64,
    pub changes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migrate-to copies a SQLite database; the configured database is already PostgreSQL")]
    SourceNotSqlite,
    #[error(
        "the PostgreSQL database {target} is not empty ({tables} table(s)); migrate-to copies \
         into an empty database only, and changed nothing"
    )]
    TargetNotEmpty { target: String, tables: i64 },
    #[error(
        "the SQLite database holds a real number where the schema has none; it is not a \
         database this version wrote, and nothing was copied"
    )]
    RealNumber,
    #[error(transparent)]
    Store(#[from] StoreError),
}

const READ: &str = "reading the SQLite database";
const WRITE: &str = "copying into PostgreSQL";

/// Copies `source` (SQLite) into the empty database `target`.
pub fn copy_to_postgres(
    source: &Store,
    target: &PostgresTarget,
    options: &StoreOptions,
) -> Result<CopiedCounts, MigrateError> {
    let sqlite = source.as_sqlite().ok_or(MigrateError::SourceNotSqlite)?;
    let read = super::sqlite::sql_error(READ);
    let snapshot =
        SqliteTransaction::new_unchecked(sqlite.connection(), TransactionBehavior::Deferred)
            .map_err(&read)?;
    refuse_non_empty(target)?;
    let created_by: Option<String> = snapshot
        .query_row(
            "SELECT value FROM database_meta WHERE key = 'created_by'",
            [],
            |row| row.get(0),
        )
        .or_else(|error| match error {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })
        .map_err(&read)?;
    let created_by: &'static str = match created_by.as_deref() {
        Some("demo") => "demo",
        _ => super::CREATED_BY_DAEMON,
    };
    let postgres = PostgresStore::connect(
        target,
        OpenMode::CreateIfMissing,
        &StoreOptions {
            created_by,
            ..*options
        },
    )?;
    let mut client = postgres.client();
    let write = super::postgres::pg_error(WRITE);
    let mut tx = client.transaction().map_err(&write)?;
    let counts = copy(&snapshot, &mut tx)?;
    tx.commit().map_err(&write)?;
    client.batch_execute("ANALYZE").map_err(&write)?;
    Ok(counts)
}

fn refuse_non_empty(target: &PostgresTarget) -> Result<(), MigrateError> {
    let mut client = super::postgres::session::Session::new(target.connect()?);
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
            &[],
        )
        .map_err(super::postgres::pg_error(
            "looking into the PostgreSQL database",
        ))?
        .get(0);
    if tables > 0 {
        return Err(MigrateError::TargetNotEmpty {
            target: target.to_string(),
            tables,
        });
    }
    Ok(())
}

fn copy(
    source: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
) -> Result<CopiedCounts, MigrateError> {
    let read = super::sqlite::sql_error(READ);
    let write = super::postgres::pg_error(WRITE);
    let mut counts = CopiedCounts::default();

    let state: [Option<i64>; 7] = source
        .query_row(
            "SELECT high_water_mark_ms, last_attempt_at_ms, last_success_at_ms, last_error_at_ms,
                    last_received, last_new_rotations, last_newly_queued
             FROM sync_state WHERE id = 1",
            [],
            |row| {
                Ok([
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                ])
            },
        )
        .map_err(&read)?;
    let error_text: (Option<String>, Option<String>) = source
        .query_row(
            "SELECT last_error_kind, last_error_message FROM sync_state WHERE id = 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(&read)?;
    tx.execute(
        "UPDATE sync_state SET high_water_mark_ms = $1, last_attempt_at_ms = $2,
             last_success_at_ms = $3, last_error_at_ms = $4, last_received = $5,
             last_new_rotations = $6, last_newly_queued = $7, last_error_kind = $8,
             last_error_message = $9
         WHERE id = 1",
        &[
            &state[0],
            &state[1],
            &state[2],
            &state[3],
            &state[4],
            &state[5],
            &state[6],
            &error_text.0,
            &error_text.1,
        ],
    )
    .map_err(&write)?;

    counts.rotations = copy_table(
        source,
        tx,
        "rotation_log",
        &[
            ("bucket_id", Type::TEXT),
            ("last_updated_ms", Type::INT8),
            ("observed_at_ms", Type::INT8),
        ],
    )?;
    // A rotation is logged only when later than its bucket's latest, so
    // the latest is the log's maximum.
    counts.buckets = tx
        .execute(
            "INSERT INTO bucket (bucket_id, last_updated_ms)
             SELECT bucket_id, max(last_updated_ms) FROM rotation_log GROUP BY bucket_id",
            &[],
        )
        .map_err(&write)?;

    let sink = tx
        .copy_in(
            "COPY queue_item (kind, subject, state, version_ms, generation, attempts, due_at_ms,
                 updated_at_ms, next_version_ms, next_due_at_ms, lease_id, leased_by,
                 leased_at_ms, lease_expires_at_ms, done_at_ms, last_error)
             FROM STDIN BINARY",
        )
        .map_err(&write)?;
    const TYPES: [Type; 16] = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
    ];
    let mut queue = BinaryCopyInWriter::new(sink, &TYPES);
    // Live entries, then done ones, in the same 16 columns.
    let mut entries = source
        .prepare(
            "SELECT kind, subject, state, version_ms, generation, attempts, due_at_ms,
                    updated_at_ms, next_version_ms, next_due_at_ms, lease_id, leased_by,
                    leased_at_ms, lease_expires_at_ms, NULL, last_error
             FROM queue_item
             UNION ALL
             SELECT kind, subject, 'done', version_ms, generation, attempts, due_at_ms,
                    updated_at_ms, NULL, NULL, NULL, leased_by, leased_at_ms, NULL,
                    done_at_ms, last_error
             FROM queue_done",
        )
        .map_err(&read)?;
    let mut cursor = entries.query([]).map_err(&read)?;
    while let Some(row) = cursor.next().map_err(&read)? {
        let text = |i: usize| row.get::<_, Option<String>>(i);
        let number = |i: usize| row.get::<_, Option<i64>>(i);
        let values = (|| -> rusqlite::Result<_> {
            Ok((
                [text(0)?, text(1)?, text(2)?],
                [number(3)?, number(4)?, number(5)?, number(6)?, number(7)?],
                [number(8)?, number(9)?],
                [text(10)?, text(11)?],
                [number(12)?, number(13)?, number(14)?],
                text(15)?,
            ))
        })()
        .map_err(&read)?;
        let (keys, numbers, next, lease, times, error) = &values;
        if keys[2].as_deref() == Some("leased") {
            counts.leased += 1;
        }
        let row: [&(dyn ToSql + Sync); 16] = [
            &keys[0],
            &keys[1],
            &keys[2],
            &numbers[0],
            &numbers[1],
            &numbers[2],
            &numbers[3],
            &numbers[4],
            &next[0],
            &next[1],
            &lease[0],
            &lease[1],
            &times[0],
            &times[1],
            &times[2],
            error,
        ];
        queue.write(&row).map_err(&write)?;
        counts.queue_entries += 1;
    }
    queue.finish().map_err(&write)?;

    counts.identities = copy_table(
        source,
        tx,
        "identity",
        &[
            ("id", Type::TEXT),
            ("identity_type", Type::TEXT),
            ("hash", Type::BYTEA),
            ("status", Type::TEXT),
            ("uid2", Type::TEXT),
            ("previous_uid2", Type::TEXT),
            ("bucket_id", Type::TEXT),
            ("refresh_from_ms", Type::INT8),
            ("mapped_at_ms", Type::INT8),
            ("updated_at_ms", Type::INT8),
        ],
    )?;
    counts.changes = copy_table(
        source,
        tx,
        "identity_change",
        &[
            ("seq", Type::INT8),
            ("id", Type::TEXT),
            ("status", Type::TEXT),
            ("uid2", Type::TEXT),
            ("previous_uid2", Type::TEXT),
            ("changed_at_ms", Type::INT8),
        ],
    )?;
    // The next record continues after the highest `seq` ever handed out,
    // pruned ones included.
    let last_seq: Option<i64> = source
        .query_row(
            "SELECT max(seq) FROM (SELECT seq FROM sqlite_sequence WHERE name = 'identity_change'
                                   UNION ALL SELECT max(seq) FROM identity_change)",
            [],
            |row| row.get(0),
        )
        .map_err(&read)?;
    if let Some(last_seq) = last_seq {
        tx.execute(
            "SELECT setval(pg_get_serial_sequence('identity_change', 'seq'), $1)",
            &[&last_seq],
        )
        .map_err(&write)?;
    }
    let state: Vec<rusqlite::types::Value> = source
        .query_row(
            &format!(
                "SELECT {} FROM mapping_state WHERE id = 1",
                MappingStateRow::COLUMNS
            ),
            [],
            |row| (0..14).map(|i| row.get(i)).collect(),
        )
        .map_err(&read)?;
    let assignments: Vec<String> = MappingStateRow::COLUMNS
        .split(',')
        .enumerate()
        .map(|(i, column)| format!("{} = ${}", column.trim(), i + 1))
        .collect();
    let types: Vec<Type> = (0..14)
        .map(|i| match i {
            0 | 6 | 7 => Type::TEXT,
            _ => Type::INT8,
        })
        .collect();
    let values = pg_values(&state, &types)?;
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
    tx.execute(
        &format!(
            "UPDATE mapping_state SET {} WHERE id = 1",
            assignments.join(", ")
        ),
        &params,
    )
    .map_err(&write)?;
    Ok(counts)
}

/// Copies the named columns of a SQLite table into the PostgreSQL table of
/// the same name, with `COPY … BINARY`; returns how many rows.
fn copy_table(
    source: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
    table: &str,
    columns: &[(&str, Type)],
) -> Result<u64, MigrateError> {
    let read = super::sqlite::sql_error(READ);
    let write = super::postgres::pg_error(WRITE);
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let types: Vec<Type> = columns.iter().map(|(_, kind)| kind.clone()).collect();
    let list = names.join(", ");
    let sink = tx
        .copy_in(&format!("COPY {table} ({list}) FROM STDIN BINARY"))
        .map_err(&write)?;
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    let mut select = source
        .prepare(&format!("SELECT {list} FROM {table}"))
        .map_err(&read)?;
    let mut rows = select.query([]).map_err(&read)?;
    let mut copied = 0;
    while let Some(row) = rows.next().map_err(&read)? {
        let row: Vec<rusqlite::types::Value> = (0..columns.len())
            .map(|i| row.get(i))
            .collect::<Result<_, _>>()
            .map_err(&read)?;
        let values = pg_values(&row, &types)?;
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        writer.write(&params).map_err(&write)?;
        copied += 1;
    }
    writer.finish().map_err(&write)?;
    Ok(copied)
}

/// SQLite values as the PostgreSQL `types` of their columns. The source's
/// STRICT tables hold nothing else (NULL aside).
fn pg_values(
    values: &[rusqlite::types::Value],
    types: &[Type],
) -> Result<Vec<Box<dyn ToSql + Sync>>, MigrateError> {
    use rusqlite::types::Value;
    values
        .iter()
        .zip(types)
        .map(
            |(value, kind)| -> Result<Box<dyn ToSql + Sync>, MigrateError> {
                Ok(match (value, kind) {
                    (Value::Integer(n), _) => Box::new(*n),
                    (Value::Text(text), _) => Box::new(text.clone()),
                    (Value::Blob(bytes), _) => Box::new(bytes.clone()),
                    (Value::Null, kind) if *kind == Type::INT8 => Box::new(None::<i64>),
                    (Value::Null, kind) if *kind == Type::BYTEA => Box::new(None::<Vec<u8>>),
                    (Value::Null, _) => Box::new(None::<String>),
                    // No column of the schema holds a real number.
                    (Value::Real(_), _) => return Err(MigrateError::RealNumber),
                })
            },
        )
        .collect()
}
