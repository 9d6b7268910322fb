//! The user's identities in the SQLite file: importing, removing, exporting
//! and counting them.
//!
//! An import stages its records in a temporary table (on disk, so memory
//! stays flat whatever the file's size) inside the write transaction.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction, params};

use super::{SqliteStore, sql_error};
use crate::identity::{IdentityHash, IdentityType};
use crate::store::StoreError;
use crate::store::identities::{
    Duplicate, IdentityCounts, IdentityImport, IdentityRecord, IdentityStatus, ImportCounts,
    type_name,
};
use crate::timestamp::to_millis;

const IMPORT: &str = "importing identities";
const REMOVE: &str = "removing identities";
const EXPORT: &str = "exporting identities";

/// An import in progress: one write transaction. Dropping it without
/// [`SqliteImport::commit`] changes nothing.
pub(crate) struct SqliteImport<'a> {
    // Declared before `tx`: a statement must be finalized before the
    // transaction it ran in ends.
    insert: rusqlite::Statement<'a>,
    tx: Option<Transaction<'a>>,
    conn: &'a Connection,
    now_ms: i64,
}

impl SqliteStore {
    /// Starts an import; identities it adds or updates are stamped `now`.
    pub(crate) fn import_identities(
        &self,
        now: DateTime<Utc>,
    ) -> Result<IdentityImport<'_>, StoreError> {
        // The staging table holds every record of the file: on disk, not
        // in memory as the connection's other temporary data.
        self.conn
            .pragma_update(None, "temp_store", "FILE")
            .map_err(sql_error(IMPORT))?;
        let tx = self.write_transaction(IMPORT)?;
        tx.execute_batch(
            "CREATE TEMP TABLE identity_stage (
                 id             TEXT    NOT NULL PRIMARY KEY,
                 identity_type  TEXT,
                 hash           BLOB,
                 line           INTEGER NOT NULL
             ) WITHOUT ROWID",
        )
        .map_err(sql_error(IMPORT))?;
        // Prepared once, not looked up in the cache for every record.
        let insert = self
            .conn
            .prepare(
                "INSERT INTO temp.identity_stage (id, identity_type, hash, line)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (id) DO NOTHING",
            )
            .map_err(sql_error(IMPORT))?;
        Ok(IdentityImport::Sqlite(SqliteImport {
            insert,
            tx: Some(tx),
            conn: &self.conn,
            now_ms: to_millis(now),
        }))
    }

    /// Forgets identities in one transaction; `next` yields the ids until
    /// `None`. Returns how many existed.
    pub(crate) fn remove_identities<E>(
        &self,
        mut next: impl FnMut() -> Option<Result<String, E>>,
    ) -> Result<Result<u64, E>, StoreError> {
        let tx = self.write_transaction(REMOVE)?;
        let mut removed = 0;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM identity WHERE id = ?1")
                .map_err(sql_error(REMOVE))?;
            while let Some(id) = next() {
                match id {
                    Ok(id) => removed += delete.execute([id]).map_err(sql_error(REMOVE))? as u64,
                    // Nothing is removed when the list could not be read whole.
                    Err(error) => return Ok(Err(error)),
                }
            }
        }
        tx.commit().map_err(sql_error(REMOVE))?;
        Ok(Ok(removed))
    }

    /// Calls `each` for every identity (of `status`, if given) in id order,
    /// from one snapshot. `each` stops the export by returning an error.
    pub(crate) fn export_identities<E: From<StoreError>>(
        &self,
        status: Option<IdentityStatus>,
        mut each: impl FnMut(&IdentityRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let tx = self.read_transaction(EXPORT)?;
        let mut select = tx
            .prepare(&format!(
                "SELECT {} FROM identity WHERE ?1 IS NULL OR status = ?1 ORDER BY id",
                IdentityRecord::COLUMNS
            ))
            .map_err(sql_error(EXPORT))?;
        let mut rows = select
            .query([status.map(IdentityStatus::as_str)])
            .map_err(sql_error(EXPORT))?;
        while let Some(row) = rows.next().map_err(sql_error(EXPORT))? {
            let record = IdentityRecord::read(row).map_err(sql_error(EXPORT))?;
            each(&record)?;
        }
        Ok(())
    }

    pub(super) fn read_transaction(
        &self,
        operation: &'static str,
    ) -> Result<Transaction<'_>, StoreError> {
        Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Deferred)
            .map_err(sql_error(operation))
    }
}

/// The counts by status; `due` is left for the caller, whose rule it is.
pub(super) fn identity_counts_in(conn: &Connection) -> rusqlite::Result<IdentityCounts> {
    let mut counts = IdentityCounts::default();
    let mut select =
        conn.prepare_cached("SELECT status, count(*) FROM identity GROUP BY status")?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        counts.add(row.get_ref(0)?.as_str()?, row.get::<_, i64>(1)? as u64);
    }
    Ok(counts)
}

impl SqliteImport<'_> {
    fn tx(&self) -> &Transaction<'_> {
        self.tx
            .as_ref()
            .expect("the transaction lives until commit")
    }

    /// See [`IdentityImport::stage`]: a duplicate is reported at once.
    pub(crate) fn stage(
        &mut self,
        line: u64,
        id: &str,
        value: Option<(IdentityType, &IdentityHash)>,
    ) -> Result<Option<Duplicate>, StoreError> {
        let inserted = self
            .insert
            .execute(params![
                id,
                value.map(|(kind, _)| type_name(kind)),
                value.map(|(_, hash)| &hash.as_bytes()[..]),
                line as i64
            ])
            .map_err(sql_error(IMPORT))?;
        if inserted == 1 {
            return Ok(None);
        }
        let first_line: i64 = self
            .tx()
            .prepare_cached("SELECT line FROM temp.identity_stage WHERE id = ?1")
            .and_then(|mut select| select.query_row([id], |row| row.get(0)))
            .map_err(sql_error(IMPORT))?;
        Ok(Some(Duplicate {
            line,
            first_line: first_line as u64,
        }))
    }

    /// See [`IdentityImport::commit`].
    pub(crate) fn commit(mut self) -> Result<ImportCounts, StoreError> {
        let tx = self.tx.take().expect("commit runs once");
        let staged: i64 = tx
            .query_row(
                "SELECT count(*) FROM temp.identity_stage WHERE hash IS NOT NULL",
                [],
                |row| row.get(0),
            )
            .map_err(sql_error(IMPORT))?;
        let updated = tx
            .execute(
                "UPDATE identity
                 SET identity_type = s.identity_type, hash = s.hash, status = 'unmapped',
                     uid2 = NULL, previous_uid2 = NULL, bucket_id = NULL,
                     refresh_from_ms = NULL, mapped_at_ms = NULL, updated_at_ms = ?1
                 FROM temp.identity_stage AS s
                 WHERE identity.id = s.id AND s.hash IS NOT NULL
                   AND (identity.identity_type != s.identity_type OR identity.hash != s.hash)",
                [self.now_ms],
            )
            .map_err(sql_error(IMPORT))? as u64;
        let added = tx
            .execute(
                "INSERT INTO identity (id, identity_type, hash, status, updated_at_ms)
                 SELECT s.id, s.identity_type, s.hash, 'unmapped', ?1
                 FROM temp.identity_stage AS s
                 WHERE s.hash IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM identity AS i WHERE i.id = s.id)
                 ORDER BY s.id",
                [self.now_ms],
            )
            .map_err(sql_error(IMPORT))? as u64;
        tx.execute_batch("DROP TABLE temp.identity_stage")
            .map_err(sql_error(IMPORT))?;
        tx.commit().map_err(sql_error(IMPORT))?;
        self.restore_temp_store();
        Ok(ImportCounts {
            added,
            updated,
            unchanged: staged as u64 - added - updated,
        })
    }

    fn restore_temp_store(&self) {
        // Best effort: the setting only affects speed, never correctness.
        let _ = self.conn.pragma_update(None, "temp_store", "MEMORY");
    }
}

impl Drop for SqliteImport<'_> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // Rolling back also drops the staging table created in it.
            drop(tx);
            self.restore_temp_store();
        }
    }
}
