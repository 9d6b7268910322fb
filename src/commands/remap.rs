//! `remap [--limit N]`: one re-map pass now, then exit.
//!
//! stdout gets one summary line (identities sent, changed, unchanged,
//! opted out, invalid, requests). On failure stderr gets one line with the
//! error kind, the reason and a hint, the failure is recorded for
//! `status`, and the exit code is 1. SIGINT or SIGTERM abandons the
//! requests in flight (exit 130); committed batches stay.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::cli::Cli;
use crate::daemon::shutdown::cancel_on_signal;
use crate::remap::PassLimits;

pub(crate) async fn run(cli: &Cli, limit: Option<u64>) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(cli)?;
    crate::telemetry::init(&settings.log);
    let remapper = super::configured(&settings)?.remapper;

    let cancel = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(cancel.clone()));
    let limits = PassLimits {
        total: limit,
        remaps: None,
    };
    let outcome = remapper.pass(limits, &cancel).await;
    let interrupted = cancel.is_cancelled();
    cancel.cancel();
    let _ = signals.await;

    match outcome {
        Ok(report) => {
            println!("remap: {}", report.summary_line());
            Ok(if interrupted {
                ExitCode::from(super::EXIT_INTERRUPTED)
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(error) => {
            eprintln!(
                "error: remap failed ({}): {}",
                error.kind(),
                error.message_with_hint(remapper.credential_origins())
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
