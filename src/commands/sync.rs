//! `sync`: one poll cycle now, then exit.
//!
//! stdout gets one summary line on success (rows received, newly queued,
//! high-water mark before and after, duration). On failure stderr gets one
//! line naming the error kind, the reason and a hint, and the exit code is 1.
//! Retries within the cycle are logged to stderr as they happen.
//! SIGINT or SIGTERM abandons the cycle before it commits (exit 130).

use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use crate::cli::Cli;
use crate::daemon::shutdown::cancel_on_signal;
use crate::sync::SyncError;

pub(crate) async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(cli)?;
    crate::telemetry::init(&settings.log);
    let cycle = super::configured(&settings)?.cycle;

    let cancel = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(cancel.clone()));
    let outcome = cycle.run(&cancel).await;
    cancel.cancel();
    let _ = signals.await;

    match outcome {
        Ok(report) => {
            println!("sync: {}", report.summary_line());
            Ok(ExitCode::SUCCESS)
        }
        Err(SyncError::Cancelled) => {
            eprintln!("sync: interrupted before anything was committed");
            Ok(ExitCode::from(super::EXIT_INTERRUPTED))
        }
        Err(error) => {
            eprintln!(
                "error: sync failed ({}): {}",
                error.kind(),
                error.message_with_hint(cycle.credential_origins())
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
