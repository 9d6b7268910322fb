//! The re-mapping queue: lease-based, at-least-once, one entry per subject.
//!
//! A *subject* is anything whose identifiers need re-mapping from some
//! *version* on: today a salt bucket (kind `bucket`, the bucket id, its
//! `last_updated`); later an identity whose v3 `refresh_from` passed. The
//! queue knows nothing about where an item came from, only the subject, the
//! version that made it due and when it became due.
//!
//! The promises (INTERFACE.md) in terms of this module:
//! - an entry that is *pending* when a newer version arrives keeps its
//!   place and carries the newer version ([`EnqueueOutcome::Coalesced`]);
//! - an entry that is *leased* keeps the newer version aside and becomes
//!   pending again with it when the lease is acked, failed or expires
//!   ([`EnqueueOutcome::DeferredBehindLease`]); the old lease's ack never
//!   swallows it;
//! - a *done* or *dead* entry becomes pending again as a new generation with
//!   its attempts reset ([`EnqueueOutcome::Requeued`]);
//! - a version not newer than the one the entry already carries changes
//!   nothing ([`EnqueueOutcome::AlreadyCovered`]);
//! - each claim hands every item its own lease id; ack and fail are checked
//!   against it, so an expired or superseded lease is refused per id.
//!
//! This module is the contract, free of IO. Each storage backend
//! (`store::sqlite`, `store::postgres`) implements [`RemapQueue`] (the
//! consumers' side) and enqueues inside its own ingest transaction, so that
//! recording a rotation and queueing it commit together.

pub(crate) mod limits;

use std::fmt;
use std::ops::ControlFlow;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use compact_str::CompactString;

pub use limits::{MAX_CLAIM_LIMIT, MAX_ERROR_BYTES, MAX_WORKER_BYTES};
pub(crate) use limits::{check_lease, check_retry_delay, check_worker};

/// The subject kind of a salt bucket; its key is the bucket id.
pub(crate) const BUCKET_KIND: &str = "bucket";

/// What needs re-mapping: a kind and a key unique within the kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject {
    pub(crate) kind: CompactString,
    pub key: CompactString,
}

impl Subject {
    /// The bucket id, when the subject is a salt bucket.
    pub fn bucket_id(&self) -> Option<&str> {
        (self.kind == BUCKET_KIND).then_some(self.key.as_str())
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.key)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueState {
    /// Waiting to be claimed.
    Pending,
    /// Claimed by a consumer until its lease expires.
    Leased,
    /// Acked; kept until purged.
    Done,
    /// Failed or expired `max_attempts` times; waits for `retry --dead`.
    Dead,
}

impl QueueState {
    pub(crate) const ALL: [QueueState; 4] = [Self::Pending, Self::Leased, Self::Done, Self::Dead];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Leased => "leased",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }
}

impl fmt::Display for QueueState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QueueState {
    type Err = QueueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| QueueError::Corrupt(format!("unknown queue state {text:?}")))
    }
}

/// A subject that became due from `version` on, noticed at `due_at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DueItem<'a> {
    pub(crate) kind: &'a str,
    pub(crate) key: &'a str,
    pub(crate) version: DateTime<Utc>,
    pub(crate) due_at: DateTime<Utc>,
}

/// What [`Enqueue::enqueue`] did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnqueueOutcome {
    /// A new entry, pending.
    Queued,
    /// A done or dead entry made pending again as a new generation.
    Requeued,
    /// A pending entry now carries the newer version.
    Coalesced,
    /// A leased entry will become pending with the newer version when the
    /// lease ends.
    DeferredBehindLease,
    /// The entry already carries this version or a newer one.
    AlreadyCovered,
}

/// The producers' side: adds due items inside the producer's transaction.
pub(crate) trait Enqueue {
    fn enqueue(&mut self, item: &DueItem<'_>) -> Result<EnqueueOutcome, QueueError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    /// Claims of one generation before it is declared dead (each ended by a
    /// fail or an expired lease).
    pub max_attempts: u32,
    /// How long a failed item waits before it can be claimed again, after
    /// its first attempt; doubled for each further attempt. Zero retries at
    /// once. A consumer that fails fast on a transient outage would
    /// otherwise burn every attempt within a second.
    pub retry_backoff: Duration,
    /// The doubling stops here.
    pub max_retry_backoff: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            retry_backoff: Duration::from_secs(30),
            max_retry_backoff: Duration::from_secs(3600),
        }
    }
}

impl QueueOptions {
    /// `max_attempts` as the backends compare it (at least one claim).
    pub(crate) fn attempts_allowed(&self) -> i64 {
        i64::from(self.max_attempts.max(1))
    }

    /// The retry wait of a failed item, as the backends compute it in SQL:
    /// the first delay, the cap, and how many doublings reach the cap (ms).
    /// Bounding the shift keeps the doubled value within twice the cap (a
    /// SQLite shift silently drops bits).
    pub(crate) fn backoff_millis(&self) -> (i64, i64, i64) {
        let first = limits::span_millis(self.retry_backoff);
        let cap = limits::span_millis(self.max_retry_backoff);
        let mut doublings = 0;
        while first > 0 && (first << doublings) < cap {
            doublings += 1;
        }
        (first, cap, doublings)
    }
}

impl QueueOptions {
    /// As stored with the queue: attempts and the two waits in ms.
    pub(crate) fn to_stored(self) -> [i64; 3] {
        let (first, cap, _) = self.backoff_millis();
        [self.attempts_allowed(), first, cap]
    }

    /// From the stored form, refusing values no configuration could give.
    pub(crate) fn from_stored([attempts, first, cap]: [i64; 3]) -> Result<Self, QueueError> {
        let span = |ms: i64| u64::try_from(ms).ok().map(Duration::from_millis);
        match (
            u32::try_from(attempts).ok().filter(|n| *n >= 1),
            span(first),
            span(cap),
        ) {
            (Some(max_attempts), Some(retry_backoff), Some(max_retry_backoff)) => Ok(Self {
                max_attempts,
                retry_backoff,
                max_retry_backoff,
            }),
            _ => Err(QueueError::Corrupt(format!(
                "queue settings {attempts} attempts, backoff {first} ms to {cap} ms"
            ))),
        }
    }
}

impl From<&crate::config::QueueSettings> for QueueOptions {
    fn from(settings: &crate::config::QueueSettings) -> Self {
        Self {
            max_attempts: settings.max_attempts,
            retry_backoff: settings.retry_backoff,
            max_retry_backoff: settings.max_retry_backoff,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    pub limit: u32,
    pub lease: Duration,
    /// Recorded with the lease, for `queue list` and the `remap_queue` view.
    pub worker: Option<&'a str>,
}

impl<'a> ClaimRequest<'a> {
    /// The request checked against the limits: the lease in ms, the number
    /// of items, the worker name.
    pub(crate) fn checked(&self) -> Result<(i64, u32, Option<&'a str>), QueueError> {
        Ok((
            limits::span_millis(check_lease(self.lease)?),
            limits::check_claim_limit(self.limit)?,
            self.worker.map(check_worker).transpose()?,
        ))
    }
}

/// One claimed item. Whoever holds `lease_id` may ack or fail it until
/// `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub subject: Subject,
    /// The version to re-map from; for a bucket, its `last_updated`.
    pub version: DateTime<Utc>,
    pub lease_id: String,
    pub expires_at: DateTime<Utc>,
    /// 1 for the first claim of this generation.
    pub attempt: u32,
    pub generation: u32,
    pub(crate) due_at: DateTime<Utc>,
}

/// Why a lease id was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRefusal {
    /// The lease ran out before the call; its item is (or will be) pending
    /// again for someone else.
    Expired { at: DateTime<Utc> },
    /// No such lease: unknown, already acked or failed, or expired and
    /// since returned to the queue (and perhaps claimed again).
    NotHeld,
}

impl fmt::Display for LeaseRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Expired { at } => {
                write!(f, "lease expired at {}", crate::timestamp::format_utc(*at))
            }
            Self::NotHeld => f.write_str("lease is not held (unknown, released or expired)"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Done.
    Acked,
    /// Done with the leased version; a newer one that arrived meanwhile is
    /// pending now.
    AckedNewerPending,
    Refused(LeaseRefusal),
}

impl AckOutcome {
    pub fn is_refused(self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Pending again for another attempt.
    Retrying,
    /// Out of attempts.
    Dead,
    /// A newer version arrived meanwhile; it is pending as a new generation.
    NewerPending,
    Refused(LeaseRefusal),
}

impl FailOutcome {
    pub(crate) fn is_refused(self) -> bool {
        matches!(self, Self::Refused(_))
    }

    /// The outcome for a lease the fail released, from the entry's new
    /// state and attempts.
    pub(crate) fn of_release(state: &str, attempts: i64) -> Self {
        match (state, attempts) {
            ("dead", _) => Self::Dead,
            // Attempts restart only for a new generation; a retried one
            // has at least the failed claim.
            (_, 0) => Self::NewerPending,
            _ => Self::Retrying,
        }
    }
}

/// What a fail stores, checked: the caller's retry wait in ms, and the
/// error cut to [`MAX_ERROR_BYTES`].
pub(crate) fn fail_arguments(
    retry_after: Option<Duration>,
    error: &str,
) -> Result<(Option<i64>, std::borrow::Cow<'_, str>), QueueError> {
    let retry_after = retry_after
        .map(check_retry_delay)
        .transpose()?
        .map(limits::span_millis);
    Ok((retry_after, limits::bounded_error(error)))
}

/// Puts claimed leases in claim order (the longest-waiting first), which
/// an `UPDATE … RETURNING` does not keep.
pub(crate) fn in_claim_order(leases: &mut [Lease]) {
    leases.sort_by(|a, b| (a.due_at, &a.subject).cmp(&(b.due_at, &b.subject)));
}

/// One queue entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub subject: Subject,
    pub state: QueueState,
    pub version: DateTime<Utc>,
    /// A newer version waiting for the current lease to end.
    pub next_version: Option<DateTime<Utc>>,
    pub generation: u32,
    pub attempts: u32,
    pub due_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    /// Set while leased.
    pub(crate) lease_id: Option<String>,
    pub(crate) leased_by: Option<String>,
    pub(crate) leased_at: Option<DateTime<Utc>>,
    pub(crate) lease_expires_at: Option<DateTime<Utc>>,
    pub done_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<QueueState>,
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Includes `retry_waiting`.
    pub pending: u64,
    /// Pending entries that failed and wait for their retry time; claims
    /// skip them until then.
    pub retry_waiting: u64,
    /// Includes `expired_leases`.
    pub leased: u64,
    /// Leased entries whose lease ran out; the next claim returns them.
    pub expired_leases: u64,
    pub done: u64,
    pub dead: u64,
    /// The longest-waiting entry a claim would take now (retry-waiting
    /// entries are not counted until their time comes).
    pub oldest_pending_due_at: Option<DateTime<Utc>>,
}

impl QueueStats {
    pub(crate) fn count(&self, state: QueueState) -> u64 {
        match state {
            QueueState::Pending => self.pending,
            QueueState::Leased => self.leased,
            QueueState::Done => self.done,
            QueueState::Dead => self.dead,
        }
    }
}

/// Leases returned by [`RemapQueue::reclaim_expired`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaimed {
    pub pending: u64,
    pub dead: u64,
}

/// The consumers' side of the queue. Every call is one short transaction;
/// `now` is the caller's clock, so leases are judged by one time source.
pub trait RemapQueue {
    /// Returns expired leases to pending (or dead), then leases up to
    /// `limit` (at most [`MAX_CLAIM_LIMIT`]) pending items that are due at
    /// `now`, the longest-waiting first.
    fn claim(
        &self,
        request: &ClaimRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Lease>, QueueError>;

    /// Marks leased items done, one outcome per id, in order.
    fn ack(&self, lease_ids: &[&str], now: DateTime<Utc>) -> Result<Vec<AckOutcome>, QueueError>;

    /// Returns leased items for another attempt, one outcome per id. A
    /// retried item is claimable again after `retry_after`, or when that is
    /// `None` after the backoff of [`QueueOptions`] for its attempt; an item
    /// that carries a newer rotation is due from when that arrived. `error`
    /// is kept up to [`MAX_ERROR_BYTES`], cut with a marker beyond.
    fn fail(
        &self,
        lease_ids: &[&str],
        error: &str,
        retry_after: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<Vec<FailOutcome>, QueueError>;

    /// Hands `visit` the entries one by one as they are read, so a caller
    /// printing them needs memory for one entry, not the queue. Stops early
    /// when `visit` breaks, and returns what it broke with.
    fn for_each_entry<B>(
        &self,
        filter: &ListFilter,
        visit: impl FnMut(QueueEntry) -> ControlFlow<B>,
    ) -> Result<ControlFlow<B>, QueueError>;

    /// The entries as a vector; for callers that know the queue is small.
    fn list(&self, filter: &ListFilter) -> Result<Vec<QueueEntry>, QueueError> {
        let mut entries = Vec::new();
        let ControlFlow::Continue(()) = self.for_each_entry(filter, |entry| {
            entries.push(entry);
            ControlFlow::<std::convert::Infallible>::Continue(())
        })?;
        Ok(entries)
    }

    fn stats(&self, now: DateTime<Utc>) -> Result<QueueStats, QueueError>;

    /// Makes every dead item pending again with its attempts reset.
    fn retry_dead(&self, now: DateTime<Utc>) -> Result<u64, QueueError>;

    /// Deletes done items finished before `cutoff`.
    fn purge_done(&self, cutoff: DateTime<Utc>) -> Result<u64, QueueError>;

    /// Returns items whose lease ran out to pending, or to dead when that
    /// was their last attempt.
    fn reclaim_expired(&self, now: DateTime<Utc>) -> Result<Reclaimed, QueueError>;
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("a lease must last between 1 ms and 10 years, not {}", humantime::format_duration(*.0))]
    InvalidLease(Duration),
    #[error("a retry delay must be at most 10 years, not {}", humantime::format_duration(*.0))]
    InvalidRetryDelay(Duration),
    #[error("a claim takes between 0 and {MAX_CLAIM_LIMIT} items, not {0}")]
    InvalidClaimLimit(u32),
    #[error("a worker name {0}")]
    InvalidWorker(String),
    #[error(
        "the database stayed locked by another writer for longer than the busy timeout while {operation}"
    )]
    Busy { operation: &'static str },
    #[error("database error while {operation}: {source}")]
    Backend {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the queue holds an unexpected value: {0}")]
    Corrupt(String),
}
