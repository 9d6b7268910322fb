//! Turning SIGTERM and SIGINT into one cancellation every task can watch.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT. Returns once it has,
/// or once `token` was cancelled by someone else.
pub(crate) async fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received, stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT received, stopping"),
        _ = token.cancelled() => return Ok(()),
    }
    token.cancel();
    Ok(())
}
