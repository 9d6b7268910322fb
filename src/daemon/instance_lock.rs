//! One daemon per database. On SQLite, `run` holds an exclusive advisory
//! lock on the database file for its whole life; `status` asks for a shared
//! one and reads "refused" as "a daemon is running". On PostgreSQL, where
//! `run` instances on several machines share a database, the one holding
//! the poller lock polls and the others wait as standbys ([`PollerWatch`]).
//!
//! The lock is `flock(2)` on a handle of its own. SQLite locks the same file
//! with POSIX record locks, which on Linux are independent of `flock`, so
//! neither disturbs the other. One caveat shapes the callers: closing *any*
//! handle of a file drops the process's POSIX locks on it, so a process must
//! not close a lock handle while its SQLite connection is in a transaction.
//! `run` keeps its handle until exit; `status` probes before opening the
//! database. The lock dies with the process, so a crash never leaves a
//! stale one behind.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{PollerLock, PostgresTarget, StoreError};

/// `status` holds its shared probe for microseconds; a `run` starting at
/// that very moment retries briefly instead of refusing.
const ACQUIRE_ATTEMPTS: u32 = 10;
const ACQUIRE_PAUSE: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub(crate) enum InstanceLockError {
    #[error("another uid2-bucket-sync run is already polling {}", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("cannot lock {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Held by the running daemon; released when dropped or at exit.
#[derive(Debug)]
pub(crate) struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the exclusive lock on the (existing) database file, or says
    /// that another daemon holds it.
    pub(crate) fn acquire(database: &Path) -> Result<Self, InstanceLockError> {
        let io_error = |source| InstanceLockError::Io {
            path: database.to_owned(),
            source,
        };
        let file = File::open(database).map_err(io_error)?;
        for attempt in 1..=ACQUIRE_ATTEMPTS {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock) if attempt < ACQUIRE_ATTEMPTS => {
                    std::thread::sleep(ACQUIRE_PAUSE);
                }
                Err(TryLockError::WouldBlock) => break,
                Err(TryLockError::Error(source)) => return Err(io_error(source)),
            }
        }
        Err(InstanceLockError::AlreadyRunning(database.to_owned()))
    }
}

/// How often a standby tries for the poller lock, and the holder checks
/// that its lock session is alive.
const STANDBY_RETRY: Duration = Duration::from_secs(5);

/// The PostgreSQL poller lock, held and watched: a holder whose lock
/// session ends stops (non-zero exit, for systemd to restart it as a
/// standby), since a standby may be polling by then.
#[derive(Debug)]
pub(crate) struct PollerWatch {
    watcher: tokio::task::JoinHandle<Result<(), StoreError>>,
}

impl PollerWatch {
    /// Waits as a standby until this process holds the poller lock of
    /// `target`; `None` when `shutdown` comes first.
    pub(crate) async fn acquire(
        target: &PostgresTarget,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, StoreError> {
        let mut waiting_said = false;
        let lock = loop {
            let attempt = target.clone();
            let acquired = blocking(move || PollerLock::try_acquire(&attempt)).await?;
            if let Some(lock) = acquired {
                break lock;
            }
            if !waiting_said {
                tracing::info!(
                    database = %target,
                    "another uid2-bucket-sync run polls this database; waiting as a standby"
                );
                waiting_said = true;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(STANDBY_RETRY) => {}
            }
        };
        tracing::info!(database = %target, "holding the poller lock");
        let shutdown = shutdown.clone();
        let watcher = tokio::spawn(async move {
            let mut lock = lock;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(STANDBY_RETRY) => {}
                }
                let (returned, alive) = blocking(move || {
                    let alive = lock.still_held(STANDBY_RETRY);
                    (lock, alive)
                })
                .await;
                lock = returned;
                if !alive {
                    tracing::error!(
                        "lost the poller lock's session; stopping so that one poller runs"
                    );
                    shutdown.cancel();
                    return Err(StoreError::PollerLockLost);
                }
            }
        });
        Ok(Some(Self { watcher }))
    }

    /// After the daemon stopped: an error if it stopped because the lock
    /// was lost.
    pub(crate) async fn release(self) -> Result<(), StoreError> {
        match self.watcher.await {
            Ok(outcome) => outcome,
            Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
        }
    }
}

/// Runs blocking PostgreSQL work on the blocking pool; a panic there
/// carries on here.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
}

/// Whether a daemon holds the lock on `database`. Opens and closes a handle
/// of its own: call it while no SQLite connection of this process is open
/// on the file.
pub(crate) fn daemon_running(database: &Path) -> io::Result<bool> {
    let file = File::open(database)?;
    match file.try_lock_shared() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(error)) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_refuses_a_second_holder_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("buckets.db");
        std::fs::write(&database, b"").unwrap();
        assert!(!daemon_running(&database).unwrap());

        let held = InstanceLock::acquire(&database).unwrap();
        assert!(daemon_running(&database).unwrap());
        let refused = InstanceLock::acquire(&database).unwrap_err();
        assert!(
            matches!(&refused, InstanceLockError::AlreadyRunning(path) if path == &database),
            "{refused:?}"
        );
        assert_eq!(
            refused.to_string(),
            format!(
                "another uid2-bucket-sync run is already polling {}",
                database.display()
            )
        );

        drop(held);
        assert!(!daemon_running(&database).unwrap());
        InstanceLock::acquire(&database).unwrap();
    }

    #[test]
    fn a_missing_database_is_an_error_not_a_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere.db");
        assert_eq!(
            daemon_running(&missing).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(matches!(
            InstanceLock::acquire(&missing),
            Err(InstanceLockError::Io { .. })
        ));
    }
}
