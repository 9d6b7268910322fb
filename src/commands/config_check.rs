//! `config check`: everything `run` checks before its first cycle, for
//! install scripts. The settings and both credentials are resolved exactly
//! as `run` resolves them and the database's directory must exist (or the
//! PostgreSQL server must accept the connection); nothing
//! is sent to the operator and nothing is created. Prints a summary naming
//! where each credential came from (never the credential) and exits 0, or
//! prints the one-line error and exits 1.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use super::table::key_values;
use crate::cli::Cli;
use crate::config::Settings;
use crate::daemon::schedule::describe;
use crate::store::{DatabaseLocation, StoreError};
use crate::sync::SyncError;

/// The first bytes of every SQLite 3 database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

pub(crate) fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(cli)?;
    let env = |name: &str| std::env::var(name).ok();
    let (connection, secret_warnings) = settings.operator_connection_with_env(&env)?;
    // Builds the HTTP client as `run` does; it sends nothing.
    connection.client()?;
    let database = check_database(&settings)?;
    let origin = |source: &Option<crate::credentials::CredentialSource>| {
        source
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), ToString::to_string)
    };
    let api_key = origin(&connection.credentials.api_key);
    let client_secret = origin(&connection.credentials.client_secret);

    for warning in settings.warnings.iter().chain(&secret_warnings) {
        eprintln!("warning: {warning}");
    }
    let summary = key_values(&[
        (
            "file",
            settings.source.as_deref().map_or_else(
                || "none (built-in defaults, environment and --db)".to_owned(),
                |path| path.display().to_string(),
            ),
        ),
        ("operator", super::describe_operator(&connection.base_url)),
        ("schedule", describe(&settings.sync.schedule)),
        ("database", database),
        (
            "metrics",
            settings.metrics.listen.map_or_else(
                || "off".to_owned(),
                |listen| format!("http://{listen}{}", crate::metrics::PATH),
            ),
        ),
        ("api key", api_key),
        ("client secret", client_secret),
    ]);
    let mut out = std::io::stdout().lock();
    writeln!(out, "configuration OK")?;
    out.write_all(summary.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// What `run` needs of the database path without creating it: an existing
/// SQLite file, or a directory to create it in, and then a place to start.
fn check_database(settings: &Settings) -> anyhow::Result<String> {
    let path = match &settings.database.location {
        DatabaseLocation::File(path) => path,
        DatabaseLocation::Postgres(target) => {
            target.probe()?;
            return Ok(format!("{target} (reachable)"));
        }
    };
    let shown = path.display();
    if path.is_dir() {
        return Err(StoreError::IsDirectory {
            path: path.to_owned(),
        }
        .into());
    }
    if path.exists() && !looks_like_sqlite(path)? {
        return Err(StoreError::NotADatabase {
            path: path.to_owned(),
        }
        .into());
    }
    if path.exists() {
        return Ok(format!("{shown} (exists)"));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(StoreError::NoDirectory {
            path: path.to_owned(),
            dir: dir.to_owned(),
        }
        .into());
    }
    // A new database has no high-water mark: `run` would stop here.
    if settings.sync.initial_since.is_none() {
        return Err(SyncError::NoStartingPoint.into());
    }
    Ok(format!("{shown} (created by the first run or sync)"))
}

/// Reads the header rather than opening the file with SQLite: opening a WAL
/// database creates its side files, owned by whoever runs the check (often
/// root, not the service's user). An empty file is what SQLite itself
/// accepts as a new database.
fn looks_like_sqlite(path: &Path) -> anyhow::Result<bool> {
    let mut head = Vec::with_capacity(SQLITE_MAGIC.len());
    std::fs::File::open(path)
        .and_then(|file| file.take(SQLITE_MAGIC.len() as u64).read_to_end(&mut head))
        .map_err(|e| anyhow::anyhow!("cannot read the database {}: {e}", path.display()))?;
    Ok(head.is_empty() || head == SQLITE_MAGIC)
}
