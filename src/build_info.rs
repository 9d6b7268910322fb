//! What this binary was built from, for `--version` and the build_info metric.

/// The crate version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit (12 hex digits), or `unknown` when built without git.
pub const COMMIT: &str = env!("UID2_BUCKET_SYNC_COMMIT");

/// `--version`'s text after the program name: `0.1.0 (commit abc123def456)`.
pub(crate) const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("UID2_BUCKET_SYNC_COMMIT"),
    ")"
);
