//! `run`: the daemon. Polls on the schedule until SIGTERM or SIGINT, then
//! exits 0 once the running cycle has committed or been abandoned.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::Cli;
use crate::daemon::Daemon;
use crate::daemon::shutdown::cancel_on_signal;
use crate::store::OpenMode;
use crate::sync::{SyncCycle, SyncPlan, connect_operator};

pub async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(cli)?;
    crate::telemetry::init(&settings.log);
    let connection = super::operator_connection(&settings)?;
    let client = connect_operator(&connection)?;
    if let Some(listen) = settings.metrics.listen {
        crate::metrics::install(listen)?;
        tracing::info!(%listen, "serving Prometheus metrics on /metrics");
    }
    let store = super::open_store(&settings, OpenMode::CreateIfMissing)?;
    tracing::info!(
        database = %store.path().display(),
        operator = %client.endpoint(),
        "configuration and database ready"
    );
    let cycle = SyncCycle::new(
        client,
        Arc::new(Mutex::new(store)),
        SyncPlan {
            initial_since: settings.sync.initial_since,
            overlap: settings.sync.overlap,
        },
    );
    let daemon = Daemon::new(
        cycle,
        settings.sync.schedule.clone(),
        settings.queue.clone(),
        settings.sync.initial_since.is_some(),
    );

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
