//! The user's identities: importing, removing, exporting and counting them.
//!
//! An import is validated as a whole before anything changes: records are
//! staged in a temporary table (on disk, so memory stays flat whatever the
//! file's size) inside the write transaction, and merged into `identity`
//! only when the whole file was read. A refused file rolls back.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction, params};

use super::{SqliteStore, sql_error};
use crate::identity::{IdentityHash, IdentityType};
use crate::store::StoreError;
use crate::timestamp::{from_millis, to_millis};

const IMPORT: &str = "importing identities";
const REMOVE: &str = "removing identities";
const EXPORT: &str = "exporting identities";

/// Where an identity stands with the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IdentityStatus {
    Unmapped,
    Mapped,
    Optout,
    Invalid,
}

impl IdentityStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unmapped => "unmapped",
            Self::Mapped => "mapped",
            Self::Optout => "optout",
            Self::Invalid => "invalid",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Unmapped, Self::Mapped, Self::Optout, Self::Invalid]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

pub(crate) fn type_name(kind: IdentityType) -> &'static str {
    match kind {
        IdentityType::Email => "email",
        IdentityType::Phone => "phone",
    }
}

/// What staging one record found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Staged {
    Ok,
    /// The id was already staged from this line of the same file.
    DuplicateOf {
        first_line: u64,
    },
}

/// What a committed import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ImportCounts {
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// An import in progress: one write transaction. Dropping it without
/// [`IdentityImport::commit`] changes nothing.
pub(crate) struct IdentityImport<'a> {
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
        Ok(IdentityImport {
            insert,
            tx: Some(tx),
            conn: &self.conn,
            now_ms: to_millis(now),
        })
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
            .prepare(
                "SELECT id, identity_type, status, uid2, previous_uid2, bucket_id,
                        refresh_from_ms, mapped_at_ms
                 FROM identity WHERE ?1 IS NULL OR status = ?1 ORDER BY id",
            )
            .map_err(sql_error(EXPORT))?;
        let mut rows = select
            .query([status.map(IdentityStatus::as_str)])
            .map_err(sql_error(EXPORT))?;
        while let Some(row) = rows.next().map_err(sql_error(EXPORT))? {
            let record = IdentityRecord::from_row(row).map_err(sql_error(EXPORT))?;
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
        let n = row.get::<_, i64>(1)? as u64;
        counts.total += n;
        match IdentityStatus::parse(row.get_ref(0)?.as_str()?) {
            Some(IdentityStatus::Unmapped) => counts.unmapped = n,
            Some(IdentityStatus::Mapped) => counts.mapped = n,
            Some(IdentityStatus::Optout) => counts.optout = n,
            Some(IdentityStatus::Invalid) => counts.invalid = n,
            None => {}
        }
    }
    Ok(counts)
}

/// Identity counts by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IdentityCounts {
    pub total: u64,
    pub mapped: u64,
    pub unmapped: u64,
    pub due: u64,
    pub optout: u64,
    pub invalid: u64,
}

/// One identity as exported; the hash stays in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentityRecord {
    pub id: String,
    pub identity_type: String,
    pub status: String,
    pub uid2: Option<String>,
    pub previous_uid2: Option<String>,
    pub bucket_id: Option<String>,
    pub refresh_from: Option<DateTime<Utc>>,
    pub mapped_at: Option<DateTime<Utc>>,
}

impl IdentityRecord {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        let time = |index| row.get::<_, Option<i64>>(index).map(|v| v.map(from_millis));
        Ok(Self {
            id: row.get(0)?,
            identity_type: row.get(1)?,
            status: row.get(2)?,
            uid2: row.get(3)?,
            previous_uid2: row.get(4)?,
            bucket_id: row.get(5)?,
            refresh_from: time(6)?,
            mapped_at: time(7)?,
        })
    }
}

impl IdentityImport<'_> {
    fn tx(&self) -> &Transaction<'_> {
        self.tx
            .as_ref()
            .expect("the transaction lives until commit")
    }

    /// Stages one record of `line`. `value` is `None` for a record skipped
    /// for an invalid value: its id still counts for duplicate detection.
    pub(crate) fn stage(
        &mut self,
        line: u64,
        id: &str,
        value: Option<(IdentityType, &IdentityHash)>,
    ) -> Result<Staged, StoreError> {
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
            return Ok(Staged::Ok);
        }
        let first_line: i64 = self
            .tx()
            .prepare_cached("SELECT line FROM temp.identity_stage WHERE id = ?1")
            .and_then(|mut select| select.query_row([id], |row| row.get(0)))
            .map_err(sql_error(IMPORT))?;
        Ok(Staged::DuplicateOf {
            first_line: first_line as u64,
        })
    }

    /// Merges the staged records: new ids are added `unmapped`; an id whose
    /// type or hash changed becomes `unmapped` with its UID2s cleared; an
    /// identical record is not written at all.
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

impl Drop for IdentityImport<'_> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // Rolling back also drops the staging table created in it.
            drop(tx);
            self.restore_temp_store();
        }
    }
}
