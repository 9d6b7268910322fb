//! The user's identities as both backends keep them: their statuses, what
//! an import and an export see, and the import in progress.
//!
//! An import is validated as a whole before anything changes: the backend
//! stages the records inside its write transaction and merges them into
//! the identities only when the whole file was read; a refused file, or an
//! import dropped without [`IdentityImport::commit`], changes nothing.

use chrono::{DateTime, Utc};

use super::StoreError;
use super::columns::Columns;
use super::postgres::PostgresImport;
use super::sqlite::SqliteImport;
use crate::identity::{IdentityHash, IdentityType};
use crate::timestamp::from_millis;

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

    pub(super) fn parse(text: &str) -> Option<Self> {
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

pub(super) fn parse_type(text: &str) -> Option<IdentityType> {
    match text {
        "email" => Some(IdentityType::Email),
        "phone" => Some(IdentityType::Phone),
        _ => None,
    }
}

/// An id found twice in one file: on `line`, and first on `first_line`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Duplicate {
    pub line: u64,
    pub first_line: u64,
}

/// What a committed import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ImportCounts {
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
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

impl IdentityCounts {
    /// Adds `n` identities of `status` as a backend counted them.
    pub(super) fn add(&mut self, status: &str, n: u64) {
        self.total += n;
        match IdentityStatus::parse(status) {
            Some(IdentityStatus::Unmapped) => self.unmapped = n,
            Some(IdentityStatus::Mapped) => self.mapped = n,
            Some(IdentityStatus::Optout) => self.optout = n,
            Some(IdentityStatus::Invalid) => self.invalid = n,
            None => {}
        }
    }
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
    /// The columns an export reads, in the order of the fields.
    pub(super) const COLUMNS: &str = "id, identity_type, status, uid2, previous_uid2, \
        bucket_id, refresh_from_ms, mapped_at_ms";

    /// Reads a row of [`IdentityRecord::COLUMNS`].
    pub(super) fn read<R: Columns>(row: &R) -> Result<Self, R::Error> {
        let time = |i| row.optional_number(i).map(|ms| ms.map(from_millis));
        Ok(Self {
            id: row.text(0)?,
            identity_type: row.text(1)?,
            status: row.text(2)?,
            uid2: row.optional_text(3)?,
            previous_uid2: row.optional_text(4)?,
            bucket_id: row.optional_text(5)?,
            refresh_from: time(6)?,
            mapped_at: time(7)?,
        })
    }
}

/// An import in progress, in one write transaction of either backend.
pub(crate) enum IdentityImport<'s> {
    Sqlite(SqliteImport<'s>),
    Postgres(PostgresImport<'s>),
}

impl IdentityImport<'_> {
    /// Stages one record of `line`. `value` is `None` for a record skipped
    /// for an invalid value: its id still counts for duplicate detection.
    /// A duplicate id may be reported here or by a later call, for the
    /// earliest line found so far; [`flush`](Self::flush) reports the
    /// rest.
    pub(crate) fn stage(
        &mut self,
        line: u64,
        id: &str,
        value: Option<(IdentityType, &IdentityHash)>,
    ) -> Result<Option<Duplicate>, StoreError> {
        match self {
            Self::Sqlite(import) => import.stage(line, id, value),
            Self::Postgres(import) => import.stage(line, id, value),
        }
    }

    /// Stages what is still held back and reports the earliest duplicate
    /// among it.
    pub(crate) fn flush(&mut self) -> Result<Option<Duplicate>, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(None),
            Self::Postgres(import) => import.flush(),
        }
    }

    /// Merges the staged records: new ids are added `unmapped`; an id whose
    /// type or hash changed becomes `unmapped` with its UID2s cleared; an
    /// identical record is not written at all. A duplicate id found among
    /// the records held back refuses the import, changing nothing.
    pub(crate) fn commit(self) -> Result<Result<ImportCounts, Duplicate>, StoreError> {
        match self {
            Self::Sqlite(import) => import.commit().map(Ok),
            Self::Postgres(import) => import.commit(),
        }
    }
}
