//! When cycles run: tokio-cron-scheduler ticks, guarded so that cycles
//! never overlap, plus the catch-up decision at start.
//!
//! The scheduler starts a job on every tick whether or not the previous one
//! finished, and it does not wait for running jobs when shut down. The guard
//! here covers both: a tick that finds a cycle running is skipped, and
//! [`Ticker::stop`] waits for the running cycle to end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobBuilder, JobScheduler, JobSchedulerError};

use crate::config::{Schedule, validate_interval};

/// A cycle as the scheduler sees it: started, awaited, nothing returned.
pub(crate) type CycleFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("scheduler: {0}")]
pub struct ScheduleError(String);

impl From<JobSchedulerError> for ScheduleError {
    fn from(error: JobSchedulerError) -> Self {
        Self(error.to_string())
    }
}

/// A running scheduler with its overlap guard.
pub(crate) struct Ticker {
    scheduler: JobScheduler,
    guard: Arc<Mutex<()>>,
    cycle: CycleFn,
}

impl Ticker {
    pub(crate) async fn start(schedule: &Schedule, cycle: CycleFn) -> Result<Self, ScheduleError> {
        let guard = Arc::new(Mutex::new(()));
        let scheduler = JobScheduler::new().await?;
        let on_tick = {
            let guard = guard.clone();
            let cycle = cycle.clone();
            move |_id, _scheduler| -> Pin<Box<dyn Future<Output = ()> + Send>> {
                let guard = guard.clone();
                let cycle = cycle.clone();
                Box::pin(async move { run_guarded(&guard, &cycle, "tick").await })
            }
        };
        let job = match schedule {
            // The expression parsed at load, not its text parsed again.
            Schedule::Cron(cron) => {
                let mut builder = JobBuilder::new()
                    .with_cron_job_type()
                    .with_run_async(Box::new(on_tick));
                builder.schedule = Some(cron.cron().clone());
                builder.build()?
            }
            Schedule::Interval(period) => {
                let period = validate_interval(*period).map_err(ScheduleError)?;
                Job::new_repeated_async(period, on_tick)?
            }
        };
        scheduler.add(job).await?;
        scheduler.start().await?;
        Ok(Self {
            scheduler,
            guard,
            cycle,
        })
    }

    /// Runs one cycle now, outside the schedule, unless one is running.
    pub(crate) async fn run_now(&self, reason: &'static str) {
        run_guarded(&self.guard, &self.cycle, reason).await;
    }

    /// Stops ticking, then waits for a running cycle to finish (cycles watch
    /// the shutdown token and abandon their work before committing).
    pub(crate) async fn stop(mut self) {
        if let Err(error) = self.scheduler.shutdown().await {
            tracing::warn!(%error, "scheduler did not shut down cleanly");
        }
        let _running_cycle_done = self.guard.lock().await;
    }
}

async fn run_guarded(guard: &Arc<Mutex<()>>, cycle: &CycleFn, reason: &'static str) {
    match guard.clone().try_lock_owned() {
        Ok(_held) => cycle().await,
        Err(_) => {
            crate::metrics::record_tick_skipped();
            tracing::warn!(
                reason,
                "skipping this tick: the previous cycle is still running"
            );
        }
    }
}

/// Whether the daemon should sync at once on start: never synced, or the
/// last success is older than one period (a tick was missed while down).
pub(crate) fn is_overdue(
    schedule: &Schedule,
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    let Some(last_success) = last_success else {
        return true;
    };
    match schedule {
        Schedule::Interval(period) => {
            let period = chrono::Duration::from_std(*period).unwrap_or(chrono::TimeDelta::MAX);
            now.signed_duration_since(last_success) > period
        }
        Schedule::Cron(cron) => cron
            .previous_at_or_before(now)
            .is_some_and(|previous_tick| previous_tick > last_success),
    }
}

/// The schedule as people read it: `cron 0 5 * * * * (UTC)`, `every 1h`.
pub(crate) fn describe(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Cron(expression) => format!("cron {expression} (UTC)"),
        Schedule::Interval(period) => format!("every {}", humantime::format_duration(*period)),
    }
}

/// When a running daemon polls next, as far as can be told from outside it.
/// A cron schedule says exactly. An interval ticks one period apart counted
/// from the daemon's start, so one period after the last attempt is right
/// while the daemon's own ticks are the attempts; once that time has passed
/// without an attempt (a restart without catch-up) it is unknown: `None`.
pub(crate) fn next_poll(
    schedule: &Schedule,
    last_attempt: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match schedule {
        Schedule::Cron(cron) => cron.next_after(now),
        Schedule::Interval(period) => {
            let next = last_attempt? + chrono::Duration::from_std(*period).ok()?;
            (next > now).then_some(next)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_database_that_never_synced_is_overdue() {
        assert!(is_overdue(
            &Schedule::Interval(Duration::from_secs(3600)),
            None,
            Utc::now()
        ));
    }

    #[test]
    fn an_interval_is_overdue_after_one_period() {
        let hourly = Schedule::Interval(Duration::from_secs(3600));
        let now = at("2026-01-01T12:00:00Z");
        assert!(!is_overdue(&hourly, Some(at("2026-01-01T11:30:00Z")), now));
        assert!(is_overdue(&hourly, Some(at("2026-01-01T10:59:59Z")), now));
    }

    #[test]
    fn a_cron_schedule_is_overdue_when_a_tick_was_missed() {
        let five_past = Schedule::Cron(crate::config::CronSchedule::parse("0 5 * * * *").unwrap());
        let now = at("2026-01-01T12:30:00Z");
        assert!(!is_overdue(
            &five_past,
            Some(at("2026-01-01T12:05:01Z")),
            now
        ));
        assert!(is_overdue(
            &five_past,
            Some(at("2026-01-01T12:04:59Z")),
            now
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_cron_schedule_parsed_at_load_drives_the_ticks() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let cycle: CycleFn = {
            let ticks = ticks.clone();
            Arc::new(move || {
                let ticks = ticks.clone();
                Box::pin(async move {
                    ticks.fetch_add(1, Ordering::SeqCst);
                })
            })
        };
        let every_second = crate::config::CronSchedule::parse("* * * * * *").unwrap();
        let ticker = Ticker::start(&Schedule::Cron(every_second), cycle)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while ticks.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ticker.stop().await;
        assert!(ticks.load(Ordering::SeqCst) >= 1, "no tick within 5 s");
    }

    #[test]
    fn a_cron_schedule_polls_next_at_its_next_occurrence() {
        let five_past = Schedule::Cron(crate::config::CronSchedule::parse("0 5 * * * *").unwrap());
        assert_eq!(
            next_poll(&five_past, None, at("2026-01-01T12:30:00Z")),
            Some(at("2026-01-01T13:05:00Z"))
        );
        assert_eq!(
            next_poll(&five_past, None, at("2026-01-01T12:05:00Z")),
            Some(at("2026-01-01T13:05:00Z")),
            "a tick happening now is not the next one"
        );
    }

    #[test]
    fn an_interval_polls_next_one_period_after_the_last_attempt_while_that_is_ahead() {
        let hourly = Schedule::Interval(Duration::from_secs(3600));
        let last = Some(at("2026-01-01T12:00:00Z"));
        assert_eq!(
            next_poll(&hourly, last, at("2026-01-01T12:20:00Z")),
            Some(at("2026-01-01T13:00:00Z"))
        );
        assert_eq!(next_poll(&hourly, last, at("2026-01-01T13:00:01Z")), None);
        assert_eq!(next_poll(&hourly, None, at("2026-01-01T12:20:00Z")), None);
    }

    #[tokio::test]
    async fn a_tick_during_a_running_cycle_is_skipped() {
        let started = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let cycle: CycleFn = {
            let started = started.clone();
            let release = release.clone();
            Arc::new(move || {
                let started = started.clone();
                let release = release.clone();
                Box::pin(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                })
            })
        };
        let guard = Arc::new(Mutex::new(()));
        let first = tokio::spawn({
            let guard = guard.clone();
            let cycle = cycle.clone();
            async move { run_guarded(&guard, &cycle, "first").await }
        });
        while started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        run_guarded(&guard, &cycle, "second").await;
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "the second run must be skipped"
        );
        release.notify_one();
        first.await.unwrap();
        release.notify_one();
        run_guarded(&guard, &cycle, "third").await;
        assert_eq!(
            started.load(Ordering::SeqCst),
            2,
            "after the first ends, runs resume"
        );
    }
}
