//! The daemon's main loop: cycles on the schedule, a catch-up cycle at
//! start, housekeeping after each cycle, systemd notifications, and a
//! clean stop when the shutdown token is cancelled.
//!
//! The caller opens the store and builds the client first, so by the time
//! [`Daemon::run`] tells systemd READY the configuration, the database and
//! its migrations are known good.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::notify;
use super::remapping::{PassObserver, remap_periodically};
use super::schedule::{CycleFn, ScheduleError, Ticker, describe, is_overdue};
use crate::config::{MappingSettings, QueueSettings, Schedule};
use crate::queue::{QueueOptions, QueueStats, RemapQueue};
use crate::remap::Remapper;
use crate::store::{StoreError, with_store};
use crate::sync::{CycleReport, SyncCycle, SyncError};
use crate::timestamp::{format_utc, truncate_to_millis};

/// Called after every cycle with its outcome and the queue as it then is
/// (`None` when the queue could not be read). `demo` narrates with it.
pub(crate) type CycleObserver =
    Arc<dyn Fn(&Result<CycleReport, SyncError>, Option<&QueueStats>) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// What every cycle would fail with, found before the first one:
    /// [`SyncError::NoStartingPoint`].
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Daemon {
    cycle: SyncCycle,
    schedule: Schedule,
    queue: QueueSettings,
    observer: Option<CycleObserver>,
    mapping: Option<(Remapper, MappingSettings)>,
    pass_observer: Option<PassObserver>,
}

impl Daemon {
    pub fn new(cycle: SyncCycle, schedule: Schedule, queue: QueueSettings) -> Self {
        Self {
            cycle,
            schedule,
            queue,
            observer: None,
            mapping: None,
            pass_observer: None,
        }
    }

    /// Also runs the re-map worker's passes, as `[mapping]` says.
    pub fn with_mapping(mut self, remapper: Remapper, settings: MappingSettings) -> Self {
        self.mapping = Some((remapper, settings));
        self
    }

    pub(crate) fn on_pass(mut self, observer: PassObserver) -> Self {
        self.pass_observer = Some(observer);
        self
    }

    pub fn on_cycle(mut self, observer: CycleObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Runs until `shutdown` is cancelled, then waits for a running cycle
    /// to commit or abandon its work and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DaemonError> {
        let state = self.cycle.blocking(|store| store.sync_state()).await?;
        // Refused before READY: every cycle would fail the same way.
        self.cycle.plan().since(state.high_water_mark)?;

        self.publish_starting_metrics(state.last_success_at).await;

        let cycle_fn = self.cycle_fn(shutdown.clone());
        let ticker = Ticker::start(&self.schedule, cycle_fn).await?;
        notify::ready();
        notify::status("started; waiting for the first cycle");
        tracing::info!(schedule = %describe(&self.schedule), "daemon started");
        let watchdog = tokio::spawn(keep_watchdog_fed(shutdown.clone()));
        let worker = self.mapping.clone().map(|(remapper, settings)| {
            tokio::spawn(remap_periodically(
                remapper,
                settings,
                shutdown.clone(),
                self.pass_observer.clone(),
            ))
        });

        let now = Utc::now();
        if is_overdue(&self.schedule, state.last_success_at, now) && !shutdown.is_cancelled() {
            match state.last_success_at {
                Some(at) => tracing::info!(
                    last_success = %format_utc(at),
                    "the last successful sync is more than one period ago; catching up now"
                ),
                None => tracing::info!("no successful sync yet; running the first one now"),
            }
            ticker.run_now("catch-up").await;
        }

        shutdown.cancelled().await;
        notify::stopping();
        notify::status("stopping");
        ticker.stop().await;
        if let Some(worker) = worker
            && let Err(error) = worker.await
        {
            tracing::error!(%error, "the re-map worker's task failed");
        }
        watchdog.abort();
        tracing::info!("daemon stopped");
        Ok(())
    }

    /// What the database already knows, so the gauges are right from the
    /// start rather than zero until the first cycle (which may be an
    /// interval away when no catch-up is due).
    async fn publish_starting_metrics(&self, last_success_at: Option<DateTime<Utc>>) {
        if let Some(at) = last_success_at {
            crate::metrics::record_last_success(at);
        }
        let options = QueueOptions::from(&self.queue);
        let stats = self
            .cycle
            .blocking(move |store| {
                Ok(store.queue(options).stats(truncate_to_millis(Utc::now()))?)
            })
            .await;
        match stats {
            Ok(stats) => publish_queue(&stats),
            Err(error) => tracing::warn!(%error, "cannot read the queue counts for the metrics"),
        }
    }

    fn cycle_fn(&self, shutdown: CancellationToken) -> CycleFn {
        let cycle = self.cycle.clone();
        let queue = self.queue.clone();
        let observer = self.observer.clone();
        Arc::new(move || {
            let cycle = cycle.clone();
            let queue = queue.clone();
            let observer = observer.clone();
            let shutdown = shutdown.clone();
            Box::pin(async move {
                let outcome = cycle.run(&shutdown).await;
                log_outcome(&outcome, &cycle);
                if matches!(outcome, Err(SyncError::Cancelled)) {
                    return;
                }
                let stats = match housekeeping(&cycle, &queue).await {
                    Ok(stats) => Some(stats),
                    Err(error) => {
                        tracing::error!(%error, "queue housekeeping failed");
                        None
                    }
                };
                notify::status(&status_text(&outcome, stats.as_ref()));
                if let Some(observer) = &observer {
                    observer(&outcome, stats.as_ref());
                }
            })
        })
    }
}

fn log_outcome(outcome: &Result<CycleReport, SyncError>, cycle: &SyncCycle) {
    match outcome {
        Ok(report) => tracing::info!(
            received = report.ingest.received,
            new_rotations = report.ingest.new_rotations,
            newly_queued = report.ingest.newly_queued,
            high_water_mark = report.ingest.mark_after.map(format_utc),
            duration_ms = report.duration.as_millis() as u64,
            attempts = report.attempts,
            "sync cycle: {}",
            report.summary_line()
        ),
        Err(SyncError::Cancelled) => {
            tracing::info!("sync cycle abandoned for shutdown; nothing was committed")
        }
        Err(error) => tracing::error!(
            error_kind = error.kind(),
            "sync cycle failed: {}",
            error.message_with_hint(cycle.credential_origins())
        ),
    }
}

/// Returns expired leases to pending, deletes done items past retention,
/// and publishes the queue depth.
async fn housekeeping(
    cycle: &SyncCycle,
    settings: &QueueSettings,
) -> Result<QueueStats, StoreError> {
    let options = QueueOptions::from(settings);
    let retention =
        chrono::Duration::from_std(settings.done_retention).unwrap_or(chrono::TimeDelta::MAX);
    let (reclaimed, purged, stats) = with_store(cycle.store(), move |store| {
        let queue = store.queue(options);
        let now = truncate_to_millis(Utc::now());
        let reclaimed = queue.reclaim_expired(now)?;
        let cutoff = now
            .checked_sub_signed(retention)
            .unwrap_or(DateTime::UNIX_EPOCH);
        let purged = queue.purge_done(cutoff)?;
        Ok((reclaimed, purged, queue.stats(now)?))
    })
    .await?;
    if reclaimed.pending + reclaimed.dead > 0 {
        tracing::info!(
            pending = reclaimed.pending,
            dead = reclaimed.dead,
            "expired leases returned to the queue"
        );
    }
    if purged > 0 {
        tracing::info!(purged, "purged done items past the retention period");
    }
    publish_queue(&stats);
    Ok(stats)
}

fn publish_queue(stats: &QueueStats) {
    let oldest_age = stats
        .oldest_pending_due_at
        .and_then(|due| (Utc::now() - due).to_std().ok());
    crate::metrics::record_queue(
        stats.pending,
        stats.leased,
        stats.done,
        stats.dead,
        oldest_age,
    );
}

fn status_text(outcome: &Result<CycleReport, SyncError>, stats: Option<&QueueStats>) -> String {
    let cycle = match outcome {
        Ok(report) => format!(
            "last sync ok at {}: {} received, {} newly queued",
            format_utc(truncate_to_millis(Utc::now())),
            report.ingest.received,
            report.ingest.newly_queued
        ),
        Err(error) => format!(
            "last sync failed at {} ({})",
            format_utc(truncate_to_millis(Utc::now())),
            error.kind()
        ),
    };
    match stats {
        Some(stats) => format!(
            "{cycle}; queue {} pending, {} leased, {} dead",
            stats.pending, stats.leased, stats.dead
        ),
        None => cycle,
    }
}

/// Pings the systemd watchdog at half its period for as long as the
/// runtime is responsive; a wedged runtime stops the pings and systemd
/// restarts the service.
async fn keep_watchdog_fed(shutdown: CancellationToken) {
    let Some(interval) = notify::watchdog_interval() else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => notify::watchdog(),
            () = shutdown.cancelled() => return,
        }
    }
}
