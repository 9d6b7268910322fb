//! Logging: text for people, JSON for log shippers, always to stderr so
//! journald captures it and stdout stays free for command output.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. A second call (tests running several
/// commands in one process) keeps the first subscriber.
pub fn init(settings: &LogSettings) {
    // The filter was validated when the settings were loaded.
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_installed = match settings.format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
