//! One poll cycle: decide `since_timestamp`, fetch every rotation from the
//! operator (with retries), validate the whole answer, ingest it in one
//! transaction, and record how it went.
//!
//! The cycle is the only writer of the high-water mark. It moves the mark
//! only through [`Store::ingest`], so a failed or abandoned cycle leaves the
//! previous mark, rotation log and queue exactly as they were; the failure
//! itself is the one thing written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::credentials::CredentialOrigins;
use crate::operator::hint::transport_hint;
use crate::operator::{BUCKETS_PATH, BucketsError, OperatorClient, OperatorError, TransportError};
use crate::store::{IngestSummary, SharedStore, Store, StoreError, with_store};
use crate::timestamp::{format_utc, truncate_to_millis};

/// Where the first cycle starts and how far each later one looks back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPlan {
    /// `since_timestamp` when the database has no high-water mark yet.
    pub initial_since: Option<DateTime<Utc>>,
    /// Re-read this much before the mark, in case the operator publishes a
    /// rotation with a `last_updated` earlier than one it already served.
    pub overlap: Duration,
}

impl SyncPlan {
    /// The `since_timestamp` for a database whose mark is `mark`.
    pub(crate) fn since(&self, mark: Option<DateTime<Utc>>) -> Result<DateTime<Utc>, SyncError> {
        match (mark, self.initial_since) {
            (Some(mark), _) => {
                let overlap =
                    chrono::Duration::from_std(self.overlap).unwrap_or(chrono::TimeDelta::MAX);
                Ok(mark
                    .checked_sub_signed(overlap)
                    .map_or(DateTime::UNIX_EPOCH, |since| {
                        since.max(DateTime::UNIX_EPOCH)
                    }))
            }
            (None, Some(initial)) => Ok(initial),
            (None, None) => Err(SyncError::NoStartingPoint),
        }
    }
}

/// What a successful cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleReport {
    pub(crate) since: DateTime<Utc>,
    pub ingest: IngestSummary,
    /// HTTP attempts, 1 when the first one succeeded.
    pub attempts: u32,
    /// Size of the response body as received.
    pub(crate) body_bytes: u64,
    pub(crate) duration: Duration,
}

impl CycleReport {
    /// The one line `sync` prints and the daemon logs.
    pub(crate) fn summary_line(&self) -> String {
        let mark = |m: Option<DateTime<Utc>>| m.map_or_else(|| "none".to_owned(), format_utc);
        let ingest = &self.ingest;
        let mut line = format!(
            "received {} rows ({} new rotations, {} already known); {} newly queued",
            ingest.received,
            ingest.new_rotations,
            ingest.ignored_rereads + ingest.ignored_stale + ingest.duplicates_in_response,
            ingest.newly_queued,
        );
        if ingest.coalesced > 0 {
            line += &format!(", {} merged into pending entries", ingest.coalesced);
        }
        if ingest.requeued_after_lease > 0 {
            line += &format!(
                ", {} due again after their lease",
                ingest.requeued_after_lease
            );
        }
        line += &format!(
            "; high-water mark {} -> {}; {:.3}s",
            mark(ingest.mark_before),
            mark(ingest.mark_after),
            self.duration.as_secs_f64()
        );
        line
    }
}

const TRANSIENT_HINT: &str = "transient; the next cycle tries again from the same high-water mark";

/// Why a cycle failed. Each carries a stable [`kind`](SyncError::kind) that
/// is recorded in the sync state and used as a metrics label.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(
        "the database has no high-water mark yet and sync.initial_since is not set; \
         set it to the earliest rotation time you need (for example \"2025-01-01T00:00:00\")"
    )]
    NoStartingPoint,
    #[error(transparent)]
    Operator(#[from] BucketsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the cycle was stopped before it committed anything")]
    Cancelled,
}

impl SyncError {
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::NoStartingPoint => "no_starting_point",
            SyncError::Operator(error) => error.kind(),
            SyncError::Store(error) if error.is_busy() => "database_busy",
            SyncError::Store(_) => "database",
            SyncError::Cancelled => "cancelled",
        }
    }

    /// What the person running the daemon should do about it, when the
    /// error text alone doesn't say. Hints about a credential name where
    /// it was read from (`credentials`), never its value.
    pub(crate) fn hint(&self, credentials: &CredentialOrigins) -> Option<String> {
        match self {
            SyncError::Operator(OperatorError::Transport(TransportError::Timeout { .. })) => Some(
                "a first sync downloads about 91 MiB; raise operator.request_timeout on slow links"
                    .to_owned(),
            ),
            SyncError::Operator(OperatorError::Transport(error)) => {
                transport_hint(error, credentials, TRANSIENT_HINT)
            }
            SyncError::Store(error) if error.is_busy() => Some(
                "another process held the database write lock too long; raise \
                 database.busy_timeout or shorten consumer transactions"
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// The error and its hint on one line, as recorded and printed.
    pub fn message_with_hint(&self, credentials: &CredentialOrigins) -> String {
        match self.hint(credentials) {
            Some(hint) => format!("{self} (hint: {hint})"),
            None => self.to_string(),
        }
    }
}

/// Everything a cycle needs; cheap to clone into scheduler jobs.
#[derive(Clone)]
pub struct SyncCycle {
    client: Arc<OperatorClient>,
    store: SharedStore,
    plan: SyncPlan,
    credentials: Arc<CredentialOrigins>,
}

impl SyncCycle {
    /// `client` may be shared with the re-map worker.
    pub fn new(client: impl Into<Arc<OperatorClient>>, store: SharedStore, plan: SyncPlan) -> Self {
        Self {
            client: client.into(),
            store,
            plan,
            credentials: Arc::default(),
        }
    }

    /// Where the client's credentials came from, named in failure hints.
    pub(crate) fn with_credential_origins(mut self, credentials: Arc<CredentialOrigins>) -> Self {
        self.credentials = credentials;
        self
    }

    pub fn credential_origins(&self) -> &CredentialOrigins {
        &self.credentials
    }

    pub(crate) fn store(&self) -> &SharedStore {
        &self.store
    }

    pub(crate) fn plan(&self) -> &SyncPlan {
        &self.plan
    }

    /// The operator URL this cycle polls.
    pub(crate) fn endpoint(&self) -> reqwest::Url {
        self.client.url(BUCKETS_PATH)
    }

    /// Runs one cycle. `cancel` abandons it at any point before the ingest
    /// starts; an ingest that has started is allowed to commit, since it is
    /// one short transaction and stopping it would only waste the download.
    ///
    /// Every outcome except a successful one is recorded as the last error
    /// (a cancelled cycle is not an error and leaves no record).
    pub async fn run(&self, cancel: &CancellationToken) -> Result<CycleReport, SyncError> {
        let started = Instant::now();
        let outcome = self.attempt(cancel, started).await;
        let duration = started.elapsed();
        match &outcome {
            Ok(report) => {
                crate::metrics::record_cycle(
                    "success",
                    report.ingest.received,
                    report.ingest.newly_queued,
                    duration,
                );
            }
            Err(SyncError::Cancelled) => {}
            Err(error) => {
                crate::metrics::record_cycle(error.kind(), 0, 0, duration);
                let message = error.message_with_hint(&self.credentials);
                let kind = error.kind();
                let recorded = self
                    .blocking(move |store| store.record_failure(kind, &message, now()))
                    .await;
                if let Err(record_error) = recorded {
                    tracing::error!(error = %record_error, "cannot record the failed cycle");
                }
            }
        }
        outcome
    }

    async fn attempt(
        &self,
        cancel: &CancellationToken,
        started: Instant,
    ) -> Result<CycleReport, SyncError> {
        let mark = self
            .blocking(|store| {
                store.record_attempt(now())?;
                store.high_water_mark()
            })
            .await?;
        let since = self.plan.since(mark)?;
        tracing::debug!(since = %format_utc(since), "polling the operator");

        let response = tokio::select! {
            response = self.client.fetch_rotations(since) => response?,
            () = cancel.cancelled() => return Err(SyncError::Cancelled),
        };
        if cancel.is_cancelled() {
            return Err(SyncError::Cancelled);
        }
        let (attempts, body_bytes) = (response.attempts, response.body_bytes);
        let rotations = response.answer;
        let ingest = self
            .blocking(move |store| store.ingest_rotations(rotations, now()))
            .await?;
        Ok(CycleReport {
            since,
            ingest,
            attempts,
            body_bytes,
            duration: started.elapsed(),
        })
    }

    /// Runs SQLite work on the blocking pool (see [`with_store`]).
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        with_store(&self.store, work).await
    }
}

/// The current time at the millisecond precision the store keeps.
fn now() -> DateTime<Utc> {
    truncate_to_millis(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EnvelopeError;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, h, m, 0).unwrap()
    }

    #[test]
    fn the_mark_wins_over_initial_since_and_overlap_looks_back_from_it() {
        let plan = SyncPlan {
            initial_since: Some(at(0, 0)),
            overlap: Duration::from_secs(600),
        };
        assert_eq!(plan.since(Some(at(12, 0))).unwrap(), at(11, 50));
        assert_eq!(plan.since(None).unwrap(), at(0, 0));
    }

    #[test]
    fn without_mark_or_initial_since_there_is_no_starting_point() {
        let plan = SyncPlan {
            initial_since: None,
            overlap: Duration::ZERO,
        };
        assert!(matches!(plan.since(None), Err(SyncError::NoStartingPoint)));
        assert_eq!(plan.since(Some(at(3, 0))).unwrap(), at(3, 0));
    }

    #[test]
    fn an_overlap_reaching_before_1970_starts_at_the_epoch() {
        let plan = SyncPlan {
            initial_since: None,
            overlap: Duration::from_secs(u64::MAX / 4),
        };
        assert_eq!(plan.since(Some(at(3, 0))).unwrap(), DateTime::UNIX_EPOCH);
    }

    #[test]
    fn a_corrupted_response_gets_a_hint_naming_the_secret_used() {
        let error = transport(TransportError::Envelope(EnvelopeError::TagMismatch));
        assert_eq!(error.kind(), "envelope");
        let hint = error.hint(&origins()).unwrap();
        assert!(
            hint.contains("the client_secret (from the environment variable UID2_CLIENT_SECRET)"),
            "{hint}"
        );
        assert!(hint.contains("altered on the way"), "{hint}");
    }

    fn origins() -> CredentialOrigins {
        use crate::credentials::CredentialSource;
        CredentialOrigins {
            api_key: Some(CredentialSource::ConfigValue {
                file: "/etc/c.toml".into(),
                key: "operator.api_key".into(),
            }),
            client_secret: Some(CredentialSource::Environment("UID2_CLIENT_SECRET")),
        }
    }

    fn transport(error: TransportError) -> SyncError {
        SyncError::Operator(error.into())
    }

    fn bad_request(message: &str) -> SyncError {
        transport(TransportError::BadRequest {
            message: message.into(),
        })
    }

    #[test]
    fn a_request_the_operator_cannot_decrypt_blames_the_secret_not_the_clock() {
        let hint = bad_request("Invalid body: Check encryption key (ClientSecret). See https://x")
            .hint(&origins())
            .unwrap();
        assert_eq!(
            hint,
            "the operator could not decrypt the request: the client_secret (from the \
             environment variable UID2_CLIENT_SECRET) is wrong or does not belong to the API \
             key (from operator.api_key in /etc/c.toml)"
        );
    }

    #[test]
    fn a_request_too_old_blames_the_clock_not_the_secret() {
        let hint = bad_request("Invalid timestamp: Request too old or client time drift.")
            .hint(&origins())
            .unwrap();
        assert!(
            hint.contains("clock is off by more than a minute"),
            "{hint}"
        );
        assert!(!hint.contains("client_secret"), "{hint}");
    }

    #[test]
    fn a_401_names_the_api_key_actually_used() {
        let hint = transport(TransportError::Unauthorized)
            .hint(&origins())
            .unwrap();
        assert!(
            hint.starts_with("check the API key (from operator.api_key in /etc/c.toml)"),
            "{hint}"
        );
    }
}
