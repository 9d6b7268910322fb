//! The daemon in-process against the simulated operator on port 0: what it
//! promises about scheduling, catch-up, stopping and recovering.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::app::{TestApp, spawn_app, spawn_app_with};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uid2_bucket_sync::config::{CronSchedule, QueueSettings, Schedule};
use uid2_bucket_sync::daemon::{Daemon, DaemonError};
use uid2_bucket_sync::simulator::{Fault, SimulatedOperator};
use uid2_bucket_sync::store::SyncState;
use uid2_bucket_sync::sync::{SyncCycle, SyncError, SyncPlan};
use uid2_bucket_sync::timestamp::truncate_to_millis;

/// How long any one expected cycle may take on a loaded machine.
const LIMIT: Duration = Duration::from_secs(20);

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), DaemonError>>,
}

fn start(daemon: Daemon) -> Running {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon.run(shutdown.clone()));
    Running { shutdown, task }
}

impl Running {
    /// Cancels and returns how long the daemon took to stop.
    async fn stop(self) -> Duration {
        let asked = Instant::now();
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the daemon stops")
            .unwrap()
            .unwrap();
        asked.elapsed()
    }
}

/// A finished cycle as the daemon's observer saw it: how many new
/// rotations it ingested, or its error kind.
type Outcome = Result<u64, &'static str>;

/// `daemon` reporting each finished cycle on the returned channel.
fn observed(daemon: Daemon) -> (Daemon, UnboundedReceiver<Outcome>) {
    let (sender, cycles) = tokio::sync::mpsc::unbounded_channel();
    let daemon = daemon.on_cycle(Arc::new(move |outcome, _queue| {
        let _ = sender.send(match outcome {
            Ok(report) => Ok(report.ingest.new_rotations),
            Err(error) => Err(error.kind()),
        });
    }));
    (daemon, cycles)
}

/// The next finished cycle; fails the test after `limit` without one.
async fn next_cycle(cycles: &mut UnboundedReceiver<Outcome>, limit: Duration) -> Outcome {
    tokio::time::timeout(limit, cycles.recv())
        .await
        .unwrap_or_else(|_| panic!("no cycle finished within {limit:?}"))
        .expect("the daemon is running")
}

/// Polls `condition` every 20 ms until it holds or `limit` passes, for
/// what no notification reports.
async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sync_state(app: &TestApp) -> SyncState {
    app.store().sync_state().unwrap()
}

fn daemon_with_schedule(app: &TestApp, schedule: Schedule) -> Daemon {
    daemon_with_schedule_for(app.sync_cycle(), schedule)
}

fn daemon_with_schedule_for(cycle: SyncCycle, schedule: Schedule) -> Daemon {
    Daemon::new(
        cycle,
        schedule,
        QueueSettings {
            max_attempts: 5,
            done_retention: Duration::from_secs(3600),
            retry_backoff: Duration::from_secs(30),
            max_retry_backoff: Duration::from_secs(3600),
        },
    )
}

/// Once a year, so within a test only a catch-up can make it sync.
fn yearly() -> Schedule {
    Schedule::Cron(CronSchedule::parse("0 0 0 1 1 *").unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_is_queued_within_one_interval() {
    let app = spawn_app(300).await;
    let (daemon, mut cycles) = observed(app.daemon(Duration::from_secs(1)));
    let running = start(daemon);
    assert_eq!(
        next_cycle(&mut cycles, LIMIT).await,
        Ok(300),
        "the first sync"
    );

    let rotated_at = truncate_to_millis(Utc::now());
    let rotated = app.operator.rotate_random(4, rotated_at);
    // A tick may have started a cycle that asked before the rotation; the
    // cycle of the tick after it (one interval later) must queue them.
    let mut outcomes = vec![next_cycle(&mut cycles, LIMIT).await];
    if outcomes[0] == Ok(0) {
        outcomes.push(next_cycle(&mut cycles, LIMIT).await);
    }
    assert_eq!(outcomes.last(), Some(&Ok(4)), "{outcomes:?}");

    let store = app.store();
    for row in &rotated {
        assert_eq!(
            store.bucket_last_updated(&row.bucket_id).unwrap(),
            Some(rotated_at)
        );
    }
    let state = sync_state(&app);
    assert_eq!(state.high_water_mark, Some(rotated_at));
    assert_eq!(app.store().status(Utc::now()).unwrap().queue.pending, 300);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cycles_never_overlap_when_one_outlasts_the_interval() {
    const ANSWER_DELAY: Duration = Duration::from_millis(1500);
    let app = spawn_app(50).await;
    app.operator.inject_always(Fault::Delay(ANSWER_DELAY));
    let (daemon, mut cycles) = observed(app.daemon(Duration::from_secs(1)));
    let running = start(daemon);
    // Each cycle outlasts the 1 s interval, so a tick falls inside each one.
    for _ in 0..2 {
        assert_eq!(next_cycle(&mut cycles, LIMIT).await.map(|_| ()), Ok(()));
    }
    running.stop().await;

    let sent: Vec<i64> = app
        .operator
        .requests()
        .iter()
        .filter_map(|r| r.timestamp_ms)
        .collect();
    assert!(sent.len() >= 2, "at least two cycles ran: {sent:?}");
    for pair in sent.windows(2) {
        assert!(
            pair[1] - pair[0] >= ANSWER_DELAY.as_millis() as i64,
            "a request was sent while the previous cycle was still waiting: {sent:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_never_synced_is_synced_at_once_not_at_the_first_tick() {
    let app = spawn_app(20).await;
    let (daemon, mut cycles) = observed(daemon_with_schedule(&app, yearly()));
    let running = start(daemon);
    assert_eq!(
        next_cycle(&mut cycles, LIMIT).await,
        Ok(20),
        "the catch-up sync"
    );
    running.stop().await;
    assert!(sync_state(&app).last_success_at.is_some());
    assert_eq!(app.operator.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_last_success_older_than_one_period_is_caught_up_at_start() {
    let app = spawn_app(20).await;
    app.sync_cycle()
        .run(&CancellationToken::new())
        .await
        .unwrap();
    // As if the machine had been off since 2020.
    rusqlite::Connection::open(&app.db_path)
        .unwrap()
        .execute(
            "UPDATE sync_state SET last_success_at_ms = 1577836800000",
            [],
        )
        .unwrap();

    let (daemon, mut cycles) = observed(daemon_with_schedule(&app, yearly()));
    let running = start(daemon);
    assert_eq!(
        next_cycle(&mut cycles, LIMIT).await,
        Ok(0),
        "the catch-up sync"
    );
    running.stop().await;
    assert_eq!(app.operator.requests().len(), 2);
    let last_success = sync_state(&app).last_success_at.unwrap();
    assert!(Utc::now() - last_success < TimeDelta::minutes(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recent_success_waits_for_the_schedule() {
    let app = spawn_app(20).await;
    app.sync_cycle()
        .run(&CancellationToken::new())
        .await
        .unwrap();
    let running = start(daemon_with_schedule(&app, yearly()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.stop().await;
    assert_eq!(app.operator.requests().len(), 1, "no catch-up was needed");
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_mid_cycle_is_prompt_and_commits_nothing() {
    let app = spawn_app(100).await;
    app.operator.inject(Fault::Delay(Duration::from_secs(30)));
    let running = start(app.daemon(Duration::from_secs(3600)));
    eventually(LIMIT, "the catch-up cycle's request arrives", || {
        app.operator.pending_faults() == 0
    })
    .await;
    // The catch-up cycle is now waiting for the operator's answer.
    let took = running.stop().await;
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");

    let state = sync_state(&app);
    assert_eq!(state.high_water_mark, None);
    assert_eq!(state.last_success_at, None);
    assert!(state.last_attempt_at.is_some());
    assert_eq!(state.last_error, None, "an abandoned cycle is not an error");
    let status = app.store().status(Utc::now()).unwrap();
    assert_eq!(status.queue.pending, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_down_at_start_is_survived_and_the_daemon_recovers() {
    let app = spawn_app(100).await;
    let address = app.operator.local_addr();
    // Nothing listens on `address` any more.
    let mut app = app;
    let stopped = std::mem::replace(
        &mut app.operator,
        SimulatedOperator::start(
            common::app::simulator_config(1),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap(),
    );
    stopped.shutdown().await;

    let cycle = app.sync_cycle_with(app.client_for(&format!("http://{address}")));
    let (daemon, mut cycles) = observed(daemon_with_schedule_for(
        cycle,
        Schedule::Interval(Duration::from_secs(1)),
    ));
    let running = start(daemon);
    assert_eq!(next_cycle(&mut cycles, LIMIT).await, Err("connect"));
    assert_eq!(
        sync_state(&app).last_error.map(|e| e.kind),
        Some("connect".to_owned())
    );
    assert_eq!(sync_state(&app).high_water_mark, None);
    assert!(!running.task.is_finished(), "the daemon survives");

    // The operator comes back on the same address.
    let back = SimulatedOperator::start(common::app::simulator_config(100), address)
        .await
        .unwrap();
    // Cycles that failed before it was back may still be reported.
    loop {
        match next_cycle(&mut cycles, LIMIT).await {
            Err("connect") => continue,
            outcome => {
                assert_eq!(outcome, Ok(100), "a later cycle succeeds");
                break;
            }
        }
    }
    running.stop().await;
    let state = sync_state(&app);
    assert!(state.last_success_at.unwrap() > state.last_error.unwrap().at);
    assert_eq!(app.store().status(Utc::now()).unwrap().queue.pending, 100);
    back.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_with_nowhere_to_start_refuses_to_run() {
    let app = spawn_app_with(common::app::simulator_config(5)).await;
    let without_initial_since = SyncCycle::new(
        app.client(),
        app.shared_store(),
        SyncPlan {
            initial_since: None,
            overlap: Duration::ZERO,
        },
    );
    let daemon = daemon_with_schedule_for(
        without_initial_since,
        Schedule::Interval(Duration::from_secs(1)),
    );
    let error = daemon.run(CancellationToken::new()).await.unwrap_err();
    assert!(
        matches!(error, DaemonError::Sync(SyncError::NoStartingPoint)),
        "{error}"
    );
    assert!(error.to_string().contains("sync.initial_since"));
    assert!(app.operator.requests().is_empty());
}
