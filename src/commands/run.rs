//! `run`: the daemon. Polls on the schedule until SIGTERM or SIGINT, then
//! exits 0 once the running cycle has committed or been abandoned. With
//! `mapping.enabled`, also runs the re-map worker's passes. Only one `run`
//! works on a database at a time ([`InstanceLock`]).

use anyhow::Context;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use crate::cli::Cli;
use crate::daemon::Daemon;
use crate::daemon::instance_lock::{InstanceLock, PollerWatch};
use crate::daemon::shutdown::cancel_on_signal;
use crate::store::DatabaseLocation;

pub(crate) async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(cli)?;
    crate::telemetry::init(&settings.log);
    let super::Configured { cycle, remapper } = super::configured(&settings)?;
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    // Before the metrics listener, so a second daemon is refused (SQLite)
    // or waits (PostgreSQL) for what it is rather than for the address the
    // first one already serves on.
    let (_file_lock, poller) = match &settings.database.location {
        DatabaseLocation::File(path) => (Some(InstanceLock::acquire(path)?), None),
        DatabaseLocation::Postgres(target) => {
            match PollerWatch::acquire(target, &shutdown).await? {
                Some(poller) => (None, Some(poller)),
                // Stopped while a standby.
                None => return finish(&shutdown, signals, Ok(())).await,
            }
        }
    };
    if let Some(listen) = settings.metrics.listen {
        crate::metrics::install(listen).await?;
        tracing::info!(%listen, "serving Prometheus metrics on /metrics");
    }
    tracing::info!(
        database = %settings.database.location,
        operator = %cycle.endpoint(),
        "configuration and database ready"
    );
    let mut daemon = Daemon::new(
        cycle,
        settings.sync.schedule.clone(),
        settings.queue.clone(),
    );
    if settings.mapping.enabled {
        daemon = daemon.with_mapping(remapper, settings.mapping.clone());
    }

    let outcome = daemon.run(shutdown.clone()).await;
    shutdown.cancel();
    let lock = match poller {
        Some(poller) => poller.release().await,
        None => Ok(()),
    };
    let outcome = outcome
        .map_err(anyhow::Error::from)
        .and(lock.map_err(anyhow::Error::from));
    finish(&shutdown, signals, outcome).await
}

/// Stops the signal handler, then reports `outcome`.
async fn finish(
    shutdown: &CancellationToken,
    signals: tokio::task::JoinHandle<std::io::Result<()>>,
    outcome: anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    shutdown.cancel();
    signals
        .await
        .context("signal handler task failed")?
        .context("cannot listen for SIGTERM/SIGINT")?;
    outcome?;
    Ok(ExitCode::SUCCESS)
}
