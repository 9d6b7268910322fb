//! One polling daemon per PostgreSQL database, whatever the number of
//! `run` instances on however many machines: the poller holds a session
//! advisory lock on a connection of its own. The lock lives exactly as long
//! as that session; when the holder dies, the server ends the session (TCP
//! keepalives bound how long that takes for a machine that vanished) and a
//! standby's next try takes the lock.

use std::time::Duration;

use super::pg_error;
use super::schema::LOCK_CLASS;
use super::session::Session;
use super::target::PostgresTarget;
use crate::store::StoreError;

const POLLING: i32 = 2;

/// How quickly the server notices that a holder's machine is gone: first
/// probe after `IDLE`, then `COUNT` probes `INTERVAL` apart, ~25 s in all.
const KEEPALIVE: &str = "SET tcp_keepalives_idle = 10;
                         SET tcp_keepalives_interval = 5;
                         SET tcp_keepalives_count = 3";

/// The held lock. Dropping it ends the session, which releases the lock.
pub struct PollerLock {
    client: Session,
}

impl std::fmt::Debug for PollerLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollerLock").finish_non_exhaustive()
    }
}

impl PollerLock {
    /// Takes the lock if no other session holds it; `None` if one does.
    pub fn try_acquire(target: &PostgresTarget) -> Result<Option<Self>, StoreError> {
        let mut client = target.connect()?;
        client
            .batch_execute(KEEPALIVE)
            .map_err(pg_error("setting keepalives for the poller lock"))?;
        let acquired: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&LOCK_CLASS, &POLLING],
            )
            .map_err(pg_error("taking the poller lock"))?
            .get(0);
        Ok(acquired.then_some(Self {
            client: Session::new(client),
        }))
    }

    /// Whether the session, and so the lock, is still there: a holder that
    /// lost it (a network cut, a restarted server) must stop polling,
    /// since a standby may hold it now.
    pub fn still_held(&mut self, timeout: Duration) -> bool {
        self.client.is_valid(timeout).is_ok()
    }
}

/// Whether some session holds the poller lock of the database `client` is
/// connected to (`pg_locks` shows every session's locks to every role).
pub(super) fn poller_running(client: &mut postgres::Client) -> Result<bool, StoreError> {
    client
        .query_one(
            "SELECT EXISTS (
                 SELECT 1 FROM pg_locks
                 WHERE locktype = 'advisory' AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND classid = $1::int::oid AND objid = $2::int::oid AND objsubid = 2)",
            &[&LOCK_CLASS, &POLLING],
        )
        .map(|row| row.get(0))
        .map_err(pg_error("looking for the polling daemon"))
}
