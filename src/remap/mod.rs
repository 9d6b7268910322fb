//! The built-in re-map worker: one pass maps every identity that is new or
//! due, in requests of at most the batch size with a bounded number in
//! flight, and commits each request's answers in one transaction as it
//! arrives.
//!
//! Due: never mapped; with v3, at or after the refresh time the operator
//! gave; with v2, when the identity's bucket rotated after it was mapped
//! (read from the rotation log the sync cycle keeps). An identity mapped
//! with the other API is due once.
//!
//! A pass that fails (an answer refused, the operator unreachable after the
//! transport's retries, the database) stops at once: requests in flight
//! are abandoned, batches already committed stay, and every identity it did
//! not finish is left as it was, to be sent by the next pass. A crash is
//! the same, minus the record of the failure.
//!
//! Layout: the pass here; how `run` paces the re-maps that come due at a
//! UTC midnight in [`pace`]; what the store reads and writes in
//! `store::remap`.

pub(crate) mod pace;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use crate::credentials::CredentialOrigins;
use crate::identity::IdentityType;
use crate::operator::hint::transport_hint;
use crate::operator::{
    MapError, MapLimits, OperatorClient, OperatorError, TransportError, UnmappedReason, V2Result,
    V3Result, map_v2, map_v3,
};
use crate::store::{
    BatchCounts, DueCursor, DueIdentity, MapApi, MapOutcome, PassClaims, PassCounts, PassEnd,
    RotationsRead, SharedStore, Store, StoreError, with_store,
};
use crate::timestamp::truncate_to_millis;

/// How far before a complete v2 pass's start it records rotations as
/// looked at. A rotation is stamped when its sync reads it and committed a
/// moment later; a pass reading in between must not skip it next time.
const ROTATION_MARGIN: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// What a claim's lease adds to the longest exchange, for the commit. A
/// commit that outlives it (a long wait for a lock) still lands unless
/// another worker claimed the identity meanwhile; then the answer is
/// dropped, and the identity was sent twice, never written twice.
const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// Why a pass failed. Each has a stable [`kind`](PassError::kind), recorded
/// in the mapping state and used as a metrics label.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Operator(#[from] MapError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PassError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Operator(error) => error.kind(),
            Self::Store(error) if error.is_busy() => "database_busy",
            Self::Store(_) => "database",
        }
    }

    /// What to do about it, when the error alone doesn't say.
    pub(crate) fn hint(&self, credentials: &CredentialOrigins) -> Option<String> {
        match self {
            Self::Operator(error) => match &error.source {
                OperatorError::Transport(TransportError::Timeout { .. }) => {
                    Some("raise operator.request_timeout, or lower mapping.batch_size".to_owned())
                }
                OperatorError::Transport(error) => transport_hint(
                    error,
                    credentials,
                    "transient; the next pass sends these identities again",
                ),
                OperatorError::InvalidResponse(_) => Some(
                    "nothing from this answer was stored; the next pass sends these identities \
                     again"
                        .to_owned(),
                ),
            },
            Self::Store(error) if error.is_busy() => Some(
                "another process held the database write lock too long; raise \
                 database.busy_timeout or shorten consumer transactions"
                    .to_owned(),
            ),
            Self::Store(_) => None,
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

/// How many identities a pass may send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassLimits {
    /// At most this many in all (`remap --limit`).
    pub total: Option<u64>,
    /// At most this many that were mapped before (re-maps); new identities
    /// are not counted. `run` paces the day's re-maps with it.
    pub remaps: Option<u64>,
}

/// What a pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub api: MapApi,
    pub counts: PassCounts,
    /// Answered with a reason this version does not know; sent again next pass.
    pub unknown: u64,
    /// Removed or re-imported while their request was in flight.
    pub superseded: u64,
    /// Everything due was sent; false when a limit or a shutdown stopped it.
    pub complete: bool,
    pub duration: Duration,
}

impl PassReport {
    /// The one line `remap` prints and the daemon logs.
    pub fn summary_line(&self) -> String {
        let c = &self.counts;
        let mut line = format!(
            "{} identities sent ({}), {} changed, {} unchanged, {} opted out, {} invalid, \
             {} requests",
            c.sent,
            self.api.as_str(),
            c.changed,
            c.unchanged,
            c.optout,
            c.invalid,
            c.requests
        );
        if self.unknown > 0 {
            line.push_str(&format!(
                ", {} answered with an unknown reason (sent again next pass)",
                self.unknown
            ));
        }
        if self.superseded > 0 {
            line.push_str(&format!(
                ", {} changed or removed meanwhile (answer dropped)",
                self.superseded
            ));
        }
        if !self.complete {
            line.push_str("; stopped before everything due was sent");
        }
        line
    }
}

/// Everything a pass needs; cheap to clone into the daemon's task.
#[derive(Clone)]
pub struct Remapper {
    client: Arc<OperatorClient>,
    store: SharedStore,
    api: MapApi,
    limits: MapLimits,
    credentials: Arc<CredentialOrigins>,
}

impl Remapper {
    /// `client` may be shared with the sync cycle.
    pub fn new(
        client: impl Into<Arc<OperatorClient>>,
        store: SharedStore,
        api: MapApi,
        limits: MapLimits,
    ) -> Self {
        Self {
            client: client.into(),
            store,
            api,
            limits,
            credentials: Arc::default(),
        }
    }

    /// Where the client's credentials came from, named in failure hints.
    pub(crate) fn with_credential_origins(mut self, credentials: Arc<CredentialOrigins>) -> Self {
        self.credentials = credentials;
        self
    }

    pub(crate) fn credential_origins(&self) -> &CredentialOrigins {
        &self.credentials
    }

    pub(crate) fn store(&self) -> &SharedStore {
        &self.store
    }

    pub(crate) fn api(&self) -> MapApi {
        self.api
    }

    /// How long an identity claimed by a pass stays its (PostgreSQL):
    /// past the longest its request can take and the commit after it, so
    /// an answer is dropped only when a worker stopped answering.
    fn lease(&self) -> Duration {
        self.client.exchange_bound() + LEASE_MARGIN
    }

    /// Runs one pass. `cancel` stops it between batches: requests in flight
    /// are abandoned, committed batches stay, and the pass reports itself
    /// incomplete. A failure is recorded (kind and message with its hint)
    /// and returned.
    pub async fn pass(
        &self,
        limits: PassLimits,
        cancel: &CancellationToken,
    ) -> Result<PassReport, PassError> {
        let started = Instant::now();
        let mut report = PassReport {
            api: self.api,
            counts: PassCounts::default(),
            unknown: 0,
            superseded: 0,
            complete: false,
            duration: Duration::ZERO,
        };
        let claims = PassClaims::new(self.lease());
        let outcome = self
            .run_pass(limits, cancel, &mut report, claims.clone())
            .await;
        report.duration = started.elapsed();
        let rotations_checked = outcome.as_ref().ok().copied();
        let complete = report.complete;
        let failure = outcome
            .as_ref()
            .err()
            .map(|error| (error.kind(), error.message_with_hint(&self.credentials)));
        crate::metrics::record_remap_pass(
            failure.as_ref().map_or("success", |(kind, _)| kind),
            &report.counts,
        );
        let counts = report.counts;
        // Requests abandoned by a failure or a shutdown leave their
        // identities claimed; a pass that ran to its end committed or
        // released every claim itself.
        let abandoned = failure.is_some() || cancel.is_cancelled();
        let recorded = with_store(&self.store, move |store| {
            if abandoned {
                store.release_claims(&claims)?;
            }
            let end = match (&failure, rotations_checked) {
                (Some((kind, message)), _) => PassEnd::Failed { kind, message },
                (None, Some(rotations)) if complete => PassEnd::Complete { rotations },
                (None, _) => PassEnd::Partial,
            };
            store.record_pass_end(&counts, end, now())
        })
        .await;
        if let Err(error) = recorded {
            tracing::error!(%error, "cannot record the re-map pass");
        }
        outcome.map(|_| report)
    }

    /// The pass itself; returns, for a complete v2 pass, the instant up to
    /// which rotations were looked at.
    async fn run_pass(
        &self,
        limits: PassLimits,
        cancel: &CancellationToken,
        report: &mut PassReport,
        claims: PassClaims,
    ) -> Result<Option<RotationsRead>, PassError> {
        let api = self.api;
        let started_at = now();
        let state = with_store(&self.store, move |store| {
            let state = store.mapping_state()?;
            store.record_pass_start(api, started_at)?;
            Ok(state)
        })
        .await?;
        let checked = state.rotations_checked_for(api);
        let mut cursor = DueCursor::new(api, started_at, checked, limits.remaps, claims);
        let mut left = limits.total;
        let per_request = self.limits.identities_per_request();
        let concurrency = self.limits.concurrency();
        let mut in_flight = FuturesUnordered::new();
        let mut exhausted = false;
        loop {
            while in_flight.len() < concurrency && !exhausted && !cancel.is_cancelled() {
                let wanted = left.map_or(per_request, |left| per_request.min(left as usize));
                if wanted == 0 {
                    exhausted = true;
                    break;
                }
                let (batch, moved) = with_store(&self.store, move |store| {
                    let batch = store.next_due(&mut cursor, wanted, now())?;
                    Ok((batch, cursor))
                })
                .await?;
                cursor = moved;
                if batch.len() < wanted {
                    exhausted = true;
                }
                if batch.is_empty() {
                    break;
                }
                if let Some(left) = &mut left {
                    *left -= batch.len() as u64;
                }
                report.counts.sent += batch.len() as u64;
                report.counts.requests += requests_for(api, &batch);
                in_flight.push(self.send_and_commit(cursor.lease_id().to_owned(), batch));
            }
            let Some(done) = (tokio::select! {
                done = in_flight.next() => done,
                () = cancel.cancelled() => {
                    tracing::info!(
                        in_flight = in_flight.len(),
                        "re-map pass stopped for shutdown; requests in flight abandoned, their \
                         identities stay due"
                    );
                    return Ok(None);
                }
            }) else {
                break;
            };
            let counts = done?;
            report.counts.changed += counts.changed;
            report.counts.unchanged += counts.unchanged;
            report.counts.optout += counts.optout;
            report.counts.invalid += counts.invalid;
            report.unknown += counts.unknown;
            report.superseded += counts.superseded;
        }
        report.complete = cursor.is_done() && !cancel.is_cancelled();
        Ok(
            (api == MapApi::V2 && report.complete).then(|| RotationsRead {
                after: checked,
                up_to: started_at - ROTATION_MARGIN,
            }),
        )
    }

    /// Sends one batch (one request, or for v2 one per identity type) and
    /// commits its answers in one transaction. Owns what it uses, so any
    /// number can be in flight.
    fn send_and_commit(
        &self,
        lease_id: String,
        batch: Vec<DueIdentity>,
    ) -> impl Future<Output = Result<BatchCounts, PassError>> + Send + 'static {
        let client = Arc::clone(&self.client);
        let store = Arc::clone(&self.store);
        let api = self.api;
        async move {
            let identities: Vec<_> = batch.iter().map(|due| (due.kind, due.hash)).collect();
            // One batch at a time here: the pass keeps `concurrency` in flight.
            let limits = MapLimits::new(identities.len(), 1).expect("a batch is within the limits");
            let answered = match api {
                MapApi::V3 => map_v3(&client, &identities, limits)
                    .await
                    .map(|results| results.into_iter().map(outcome_v3).collect::<Vec<_>>()),
                MapApi::V2 => map_v2(&client, &identities, limits)
                    .await
                    .map(|results| results.into_iter().map(outcome_v2).collect()),
            };
            crate::metrics::record_map_request(match &answered {
                Ok(_) => "success",
                Err(error) => error.kind(),
            });
            let outcomes = answered?;
            let counts = with_store(&store, move |store: &Store| {
                store.commit_mappings(&lease_id, &batch, &outcomes, now())
            })
            .await?;
            crate::metrics::record_batch(&counts);
            Ok(counts)
        }
    }
}

/// Requests a batch takes: v2 sends each identity type separately.
fn requests_for(api: MapApi, batch: &[DueIdentity]) -> u64 {
    match api {
        MapApi::V3 => 1,
        MapApi::V2 => {
            let emails = batch.iter().any(|due| due.kind == IdentityType::Email);
            let phones = batch.iter().any(|due| due.kind == IdentityType::Phone);
            u64::from(emails) + u64::from(phones)
        }
    }
}

fn outcome_v3(result: V3Result) -> MapOutcome {
    match result {
        V3Result::Mapped(mapping) => MapOutcome::Mapped {
            uid2: mapping.current.to_base64(),
            previous_uid2: mapping.previous.map(|uid| uid.to_base64()),
            refresh_from: Some(mapping.refresh_from),
            bucket_id: None,
        },
        V3Result::Unmapped(reason) => unmapped(reason),
    }
}

fn outcome_v2(result: V2Result) -> MapOutcome {
    match result {
        V2Result::Mapped { uid, bucket_id } => MapOutcome::Mapped {
            uid2: uid.to_base64(),
            previous_uid2: None,
            refresh_from: None,
            bucket_id: Some(bucket_id),
        },
        V2Result::Unmapped(reason) => unmapped(reason),
    }
}

fn unmapped(reason: UnmappedReason) -> MapOutcome {
    match reason {
        UnmappedReason::OptOut => MapOutcome::OptOut,
        UnmappedReason::InvalidIdentifier => MapOutcome::Invalid,
        UnmappedReason::Unknown(reason) => {
            // The operator's reason is its own vocabulary, never an identifier.
            tracing::warn!(
                reason,
                "the operator did not map an identity for a reason this version does not know; \
                 it stays as it was and is sent again next pass"
            );
            MapOutcome::Unknown
        }
    }
}

/// The current time at the millisecond precision the store keeps.
fn now() -> DateTime<Utc> {
    truncate_to_millis(Utc::now())
}

/// Logs a pass's outcome: one line with its counts, or the failure.
pub(crate) fn log_outcome(outcome: &Result<PassReport, PassError>, remapper: &Remapper) {
    match outcome {
        Ok(report) => tracing::info!(
            api = report.api.as_str(),
            sent = report.counts.sent,
            changed = report.counts.changed,
            unchanged = report.counts.unchanged,
            optout = report.counts.optout,
            invalid = report.counts.invalid,
            requests = report.counts.requests,
            complete = report.complete,
            duration_ms = report.duration.as_millis() as u64,
            "re-map pass: {}",
            report.summary_line()
        ),
        Err(error) => tracing::error!(
            error_kind = error.kind(),
            "re-map pass failed: {}",
            error.message_with_hint(remapper.credential_origins())
        ),
    }
}
