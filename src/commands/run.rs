//! `run`: the daemon. Polls on the schedule until SIGTERM or SIGINT, then
//! exits 0 once the running cycle has committed or been abandoned. With
//! `mapping.enabled`, also runs the re-map worker's passes. Only one `run`
//! works on a database at a time ([`InstanceLock`]).

use anyhow::Context;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use crate::cli::Cli;
use crate::daemon::Daemon;
use crate::daemon::instance_lock::InstanceLock;
use crate::daemon::shutdown::cancel_on_signal;

pub(crate) async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(cli)?;
    crate::telemetry::init(&settings.log);
    let super::Configured { cycle, remapper } = super::configured(&settings)?;
    // Before the metrics listener, so a second daemon is refused for what
    // it is rather than for the address the first one already serves on.
    let _instance = InstanceLock::acquire(&settings.database.path)?;
    if let Some(listen) = settings.metrics.listen {
        crate::metrics::install(listen).await?;
        tracing::info!(%listen, "serving Prometheus metrics on /metrics");
    }
    tracing::info!(
        database = %settings.database.path.display(),
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

    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    let outcome = daemon.run(shutdown.clone()).await;
    shutdown.cancel();
    signals
        .await
        .context("signal handler task failed")?
        .context("cannot listen for SIGTERM/SIGINT")?;
    outcome?;
    Ok(ExitCode::SUCCESS)
}
