//! Commits that are durable when they return, and the close they make cheap.
//!
//! In WAL mode with `synchronous = NORMAL` a commit is not synced: a
//! checkpoint syncs it later, and the one SQLite runs when the last
//! connection closes copies the WAL into the database file and syncs both.
//! An ingest commits with `synchronous = FULL` instead: the WAL is synced as
//! the transaction commits, one fsync, and the rotations survive a power
//! cut from then on. When a connection's last commit was such a commit,
//! everything it wrote is already durable, so it closes without the
//! checkpoint: a later connection's checkpoint copies those pages, and a
//! `sync` exits after its one fsync.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::Connection;
use rusqlite::config::DbConfig;

use super::sql_error;
use crate::store::StoreError;

/// Whether a connection's latest commit was synced as it committed.
#[derive(Debug, Default)]
pub(super) struct LastCommit {
    synced: Arc<AtomicBool>,
}

impl LastCommit {
    /// Watches every commit of `conn`: each one counts as not synced until
    /// [`LastCommit::synced`] says otherwise.
    pub(super) fn watch(conn: &Connection) -> rusqlite::Result<Self> {
        let last = Self::default();
        let synced = last.synced.clone();
        conn.commit_hook(Some(move || {
            synced.store(false, Ordering::SeqCst);
            false
        }))?;
        Ok(last)
    }

    /// Runs `transaction` (which begins and commits one transaction of
    /// `conn`) with `synchronous = FULL`, then puts `NORMAL` back.
    pub(super) fn synced<T>(
        &self,
        conn: &Connection,
        operation: &'static str,
        transaction: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let level = |level| {
            conn.pragma_update(None, "synchronous", level)
                .map_err(sql_error(operation))
        };
        // The level cannot change inside a transaction: it is set around it.
        level("FULL")?;
        let outcome = transaction();
        let restored = level("NORMAL");
        let value = outcome?;
        self.synced.store(true, Ordering::SeqCst);
        restored?;
        Ok(value)
    }

    /// Before `conn` closes: skips the close's checkpoint when everything
    /// committed is durable already.
    pub(super) fn before_close(&self, conn: &Connection) {
        if self.synced.load(Ordering::SeqCst)
            && let Err(error) = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        {
            tracing::debug!(%error, "closing with the usual checkpoint");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::sqlite::SqliteStore as Store;
    use chrono::{TimeZone, Utc};

    use crate::rotation::BucketRotation;
    use crate::store::sqlite::open_test_store;
    use crate::store::{OpenMode, StoreOptions};

    fn wal_bytes(dir: &tempfile::TempDir) -> Option<u64> {
        std::fs::metadata(dir.path().join("buckets.db-wal"))
            .ok()
            .map(|m| m.len())
    }

    fn ingest_one(store: &Store, bucket: &str) {
        let at = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
        let rotation = BucketRotation {
            bucket_id: bucket.into(),
            last_updated: at,
        };
        store.ingest(vec![rotation], at).unwrap();
    }

    #[test]
    fn a_store_whose_last_commit_was_an_ingest_closes_without_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_test_store(&dir);
        ingest_one(&store, "a");
        // Reads after it commit nothing.
        store.sync_state().unwrap();
        drop(store);
        assert!(
            wal_bytes(&dir).unwrap() > 0,
            "the WAL was checkpointed away"
        );

        // What the WAL holds is the database's content.
        let path = dir.path().join("buckets.db");
        let store = Store::open(&path, OpenMode::MustExist, &StoreOptions::default()).unwrap();
        assert!(store.bucket_last_updated("a").unwrap().is_some());
    }

    #[test]
    fn a_store_whose_last_commit_was_not_synced_checkpoints_as_it_closes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_test_store(&dir);
        ingest_one(&store, "a");
        store.record_attempt(Utc::now()).unwrap();
        drop(store);
        assert_eq!(wal_bytes(&dir), None, "the close left the WAL behind");
    }
}
