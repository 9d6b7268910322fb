//! The user's identities on PostgreSQL: importing, removing, exporting and
//! counting them.
//!
//! An import stages its records in a temporary table inside its
//! transaction, a chunk per statement: one round trip per record would make
//! a million-line file take minutes. Duplicate ids are found as each chunk
//! is staged (`ON CONFLICT DO NOTHING` tells which rows were not new), so
//! one is reported a chunk later than SQLite reports it, never missed.

use std::cell::RefMut;

use chrono::{DateTime, Utc};
use postgres::types::ToSql;

use super::session::Session;
use super::{PostgresStore, for_each_row, pg_error};
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

/// Records staged per statement, and ids removed per statement.
const CHUNK: usize = 5_000;

/// An import in progress: one transaction on the store's connection,
/// rolled back if dropped without [`PostgresImport::commit`].
pub(crate) struct PostgresImport<'s> {
    client: Option<RefMut<'s, Session>>,
    now_ms: i64,
    ids: Vec<String>,
    types: Vec<Option<&'static str>>,
    hashes: Vec<Option<Vec<u8>>>,
    lines: Vec<i64>,
}

impl PostgresStore {
    /// Starts an import; identities it adds or updates are stamped `now`.
    pub(crate) fn import_identities(
        &self,
        now: DateTime<Utc>,
    ) -> Result<IdentityImport<'_>, StoreError> {
        let mut client = self.client();
        client
            .batch_execute(
                "BEGIN;
                 CREATE TEMP TABLE identity_stage (
                     id             text COLLATE \"C\" PRIMARY KEY,
                     identity_type  text,
                     hash           bytea,
                     line           bigint NOT NULL
                 ) ON COMMIT DROP",
            )
            .map_err(pg_error(IMPORT))?;
        Ok(IdentityImport::Postgres(PostgresImport {
            client: Some(client),
            now_ms: to_millis(now),
            ids: Vec::with_capacity(CHUNK),
            types: Vec::with_capacity(CHUNK),
            hashes: Vec::with_capacity(CHUNK),
            lines: Vec::with_capacity(CHUNK),
        }))
    }

    /// Forgets identities in one transaction; `next` yields the ids until
    /// `None`. Returns how many existed.
    pub(crate) fn remove_identities<E>(
        &self,
        mut next: impl FnMut() -> Option<Result<String, E>>,
    ) -> Result<Result<u64, E>, StoreError> {
        let mut client = self.client();
        let mut tx = client.transaction().map_err(pg_error(REMOVE))?;
        let mut removed = 0;
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            let id = next();
            let end = id.is_none();
            match id {
                Some(Ok(id)) => chunk.push(id),
                // Nothing is removed when the list could not be read whole.
                Some(Err(error)) => return Ok(Err(error)),
                None => {}
            }
            if chunk.len() == CHUNK || (end && !chunk.is_empty()) {
                removed += tx
                    .execute("DELETE FROM identity WHERE id = ANY($1)", &[&chunk])
                    .map_err(pg_error(REMOVE))?;
                chunk.clear();
            }
            if end {
                break;
            }
        }
        tx.commit().map_err(pg_error(REMOVE))?;
        Ok(Ok(removed))
    }

    /// Calls `each` for every identity (of `status`, if given) in id order,
    /// from one snapshot, fetched a page at a time. `each` stops the export
    /// by returning an error.
    pub(crate) fn export_identities<E: From<StoreError>>(
        &self,
        status: Option<IdentityStatus>,
        mut each: impl FnMut(&IdentityRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let status = status.map(IdentityStatus::as_str);
        for_each_row(
            &mut self.client(),
            EXPORT,
            &format!(
                "SELECT {} FROM identity WHERE $1::text IS NULL OR status = $1 ORDER BY id",
                IdentityRecord::COLUMNS
            ),
            &[&status],
            |row| each(&IdentityRecord::read(row).map_err(pg_error(EXPORT))?),
        )
    }
}

/// The counts by status; `due` is left for the caller, whose rule it is.
pub(super) fn identity_counts_in(
    client: &mut impl postgres::GenericClient,
) -> Result<IdentityCounts, postgres::Error> {
    let mut counts = IdentityCounts::default();
    for row in client.query("SELECT status, count(*) FROM identity GROUP BY status", &[])? {
        counts.add(row.get(0), row.get::<_, i64>(1) as u64);
    }
    Ok(counts)
}

impl PostgresImport<'_> {
    fn client(&mut self) -> &mut Session {
        self.client
            .as_mut()
            .expect("the transaction lives until commit")
    }

    /// See [`IdentityImport::stage`]: records are held back and staged a
    /// chunk at a time.
    pub(crate) fn stage(
        &mut self,
        line: u64,
        id: &str,
        value: Option<(IdentityType, &IdentityHash)>,
    ) -> Result<Option<Duplicate>, StoreError> {
        self.ids.push(id.to_owned());
        self.types.push(value.map(|(kind, _)| type_name(kind)));
        self.hashes
            .push(value.map(|(_, hash)| hash.as_bytes().to_vec()));
        self.lines.push(line as i64);
        if self.ids.len() < CHUNK {
            return Ok(None);
        }
        self.flush()
    }

    /// Stages the records held back; reports the earliest duplicate id
    /// among them.
    pub(crate) fn flush(&mut self) -> Result<Option<Duplicate>, StoreError> {
        if self.ids.is_empty() {
            return Ok(None);
        }
        let ids = std::mem::take(&mut self.ids);
        let types = std::mem::take(&mut self.types);
        let hashes = std::mem::take(&mut self.hashes);
        let lines = std::mem::take(&mut self.lines);
        let params: [&(dyn ToSql + Sync); 4] = [&ids, &types, &hashes, &lines];
        // In line order, so that of two equal ids the first one is staged
        // and the second is the duplicate.
        let staged = self
            .client()
            .query(
                "INSERT INTO identity_stage (id, identity_type, hash, line)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bigint[])
                 ORDER BY 4
                 ON CONFLICT (id) DO NOTHING
                 RETURNING line",
                &params,
            )
            .map_err(pg_error(IMPORT))?;
        if staged.len() == ids.len() {
            return Ok(None);
        }
        let staged: std::collections::HashSet<i64> = staged.iter().map(|row| row.get(0)).collect();
        let Some((index, &line)) = lines
            .iter()
            .enumerate()
            .find(|(_, line)| !staged.contains(line))
        else {
            return Ok(None);
        };
        let first_line: i64 = self
            .client()
            .query_one(
                "SELECT line FROM identity_stage WHERE id = $1",
                &[&ids[index]],
            )
            .map_err(pg_error(IMPORT))?
            .get(0);
        Ok(Some(Duplicate {
            line: line as u64,
            first_line: first_line as u64,
        }))
    }

    /// See [`IdentityImport::commit`].
    pub(crate) fn commit(mut self) -> Result<Result<ImportCounts, Duplicate>, StoreError> {
        if let Some(duplicate) = self.flush()? {
            // Dropping `self` rolls back.
            return Ok(Err(duplicate));
        }
        let now_ms = self.now_ms;
        let mut client = self.client.take().expect("commit runs once");
        let outcome = merge(&mut client, now_ms);
        if outcome.is_err() {
            let _ = client.batch_execute("ROLLBACK");
        }
        outcome.map(Ok)
    }
}

/// Merges the staged records and commits.
fn merge(client: &mut Session, now_ms: i64) -> Result<ImportCounts, StoreError> {
    let staged: i64 = client
        .query_one(
            "SELECT count(*) FROM identity_stage WHERE hash IS NOT NULL",
            &[],
        )
        .map_err(pg_error(IMPORT))?
        .get(0);
    let updated = client
        .execute(
            "UPDATE identity AS i
             SET identity_type = s.identity_type, hash = s.hash, status = 'unmapped',
                 uid2 = NULL, previous_uid2 = NULL, bucket_id = NULL,
                 refresh_from_ms = NULL, mapped_at_ms = NULL, updated_at_ms = $1,
                 -- An answer in flight is for the old value: its commit
                 -- must find the lease gone (store::postgres::remap).
                 lease_id = NULL, lease_expires_ms = NULL
             FROM identity_stage AS s
             WHERE i.id = s.id AND s.hash IS NOT NULL
               AND (i.identity_type != s.identity_type OR i.hash != s.hash)",
            &[&now_ms],
        )
        .map_err(pg_error(IMPORT))?;
    let added = client
        .execute(
            "INSERT INTO identity (id, identity_type, hash, status, updated_at_ms)
             SELECT s.id, s.identity_type, s.hash, 'unmapped', $1
             FROM identity_stage AS s
             WHERE s.hash IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM identity AS i WHERE i.id = s.id)
             ORDER BY s.id",
            &[&now_ms],
        )
        .map_err(pg_error(IMPORT))?;
    client.batch_execute("COMMIT").map_err(pg_error(IMPORT))?;
    Ok(ImportCounts {
        added,
        updated,
        unchanged: staged as u64 - added - updated,
    })
}

impl Drop for PostgresImport<'_> {
    fn drop(&mut self) {
        if let Some(client) = &mut self.client {
            // Rolling back also drops the staging table. A connection that
            // cannot roll back is broken, and the server rolls back for it.
            let _ = client.batch_execute("ROLLBACK");
        }
    }
}
