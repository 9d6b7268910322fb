//! Logging: text for people, JSON for log shippers, always to stderr so
//! journald captures it and stdout stays free for command output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. A second call (tests running several
/// commands in one process) keeps the first subscriber.
pub(crate) fn init(settings: &LogSettings) {
    // The filter was validated when the settings were loaded.
    let filter = EnvFilter::try_new(with_quiet_dependencies(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // journald and log files get plain text, terminals get colour.
        .with_ansi(std::io::stderr().is_terminal());
    let _already_installed = match settings.format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Libraries whose INFO lines mean nothing to whoever reads the daemon's
/// log: the scheduler's start-up ("Uninited", "Job creator created") and
/// the migration library's "Database migrated to version 2" (the store
/// says what it created or migrated, naming the file).
const QUIET_DEPENDENCIES: [&str; 2] = ["tokio_cron_scheduler", "rusqlite_migration"];

/// `level`, with each quiet dependency at WARN unless the filter names it.
fn with_quiet_dependencies(level: &str) -> String {
    let mut filter = level.to_owned();
    for dependency in QUIET_DEPENDENCIES {
        if !level.contains(dependency) {
            filter.push_str(&format!(",{dependency}=warn"));
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::with_quiet_dependencies;

    #[test]
    fn quiet_dependencies_are_at_warn_unless_the_filter_names_them() {
        assert_eq!(
            with_quiet_dependencies("info"),
            "info,tokio_cron_scheduler=warn,rusqlite_migration=warn"
        );
        assert_eq!(
            with_quiet_dependencies("debug,tokio_cron_scheduler=trace"),
            "debug,tokio_cron_scheduler=trace,rusqlite_migration=warn"
        );
    }
}
