//! One file per command: each loads what it needs, does its work and
//! formats its output. Errors reach the user as one line on stderr.

mod changes;
mod config_check;
mod demo;
mod dev_operator;
mod identities;
mod map;
mod migrate_to;
mod queue;
mod remap;
mod run;
mod status;
mod sync;
mod table;

use std::process::ExitCode;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::{ENVIRONMENTS, LoadOptions, OperatorConnection, Settings};
use crate::store::{OpenMode, Store, StoreOptions};
use std::sync::{Arc, Mutex};

use crate::queue::QueueOptions;
use crate::remap::Remapper;
use crate::sync::{SyncCycle, SyncPlan};

/// The conventional code for "stopped by a signal" (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// Runs a parsed command line to completion and returns the exit code.
pub fn execute(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Only the commands with async work enter the runtime: the PostgreSQL
    // client blocks on a runtime of its own, which tokio refuses to start
    // inside another.
    let outcome = match &cli.command {
        Command::Status { json } => status::run(&cli, *json),
        Command::Queue(command) => queue::run(&cli, command),
        Command::Config(ConfigCommand::Check) => config_check::run(&cli),
        Command::Identities(command) => identities::run(&cli, command),
        Command::Changes { after, limit, json } => changes::run(&cli, *after, *limit, *json),
        Command::MigrateTo { url, password_file } => {
            migrate_to::run(&cli, url, password_file.clone())
        }
        Command::Run => runtime.block_on(run::run(&cli)),
        Command::Sync => runtime.block_on(sync::run(&cli)),
        Command::Map(args) => runtime.block_on(map::run(&cli, args)),
        Command::Remap { limit } => runtime.block_on(remap::run(&cli, *limit)),
        Command::DevOperator(args) => runtime.block_on(dev_operator::run(args)),
        Command::Demo(args) => runtime.block_on(demo::run(&cli, args)),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, `a: b: c`. Many error types put
/// their cause in their own message *and* report it as their source (so
/// that `to_string()` alone is complete where it is recorded or logged);
/// a cause whose text is already on the line is not repeated.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// The settings for this invocation: `--config` (or its fallbacks) and `--db`.
fn load_settings(cli: &Cli) -> anyhow::Result<Settings> {
    Ok(Settings::load(&LoadOptions {
        config: cli.config.clone(),
        db: cli.db.clone(),
    })?)
}

/// Opens the configured database. `sync` and `run` create it
/// ([`OpenMode::CreateIfMissing`]); consumers' commands never do.
fn open_store(settings: &Settings, mode: OpenMode) -> anyhow::Result<Store> {
    let options = StoreOptions {
        busy_timeout: settings.database.busy_timeout,
        ..StoreOptions::default()
    };
    Ok(Store::open_location(
        &settings.database.location,
        mode,
        &options,
    )?)
}

/// Resolves the endpoint and credentials, logging every warning about how
/// the configuration or a secret is stored. Telemetry must be initialised.
fn operator_connection(settings: &Settings) -> anyhow::Result<OperatorConnection> {
    let (connection, secret_warnings) =
        settings.operator_connection_with_env(&|name| std::env::var(name).ok())?;
    for warning in settings.warnings.iter().chain(&secret_warnings) {
        tracing::warn!("{warning}");
    }
    for note in connection.credential_notes.iter().chain(&settings.notes) {
        tracing::info!("{note}");
    }
    Ok(connection)
}

/// What `sync`, `remap` and `run` work with, built from the settings in
/// one place: one operator client and one database connection, shared by
/// the sync cycle and the re-map worker.
struct Configured {
    cycle: SyncCycle,
    remapper: Remapper,
}

/// The configured operator and database (created if missing): the cycle
/// starts from `sync.initial_since`, the worker maps as `[mapping]` says.
fn configured(settings: &Settings) -> anyhow::Result<Configured> {
    let connection = operator_connection(settings)?;
    let client = Arc::new(connection.client()?);
    // Inside the runtime, a PostgreSQL connection must be opened where
    // blocking is allowed (its client blocks on a runtime of its own).
    let store = tokio::task::block_in_place(|| -> anyhow::Result<Store> {
        let store = open_store(settings, OpenMode::CreateIfMissing)?;
        // The queue's settings live with the queue: consumers use these.
        store.record_queue_settings(&QueueOptions::from(&settings.queue))?;
        Ok(store)
    })?;
    let store = Arc::new(Mutex::new(store));
    let credentials = Arc::new(connection.credentials);
    let cycle = SyncCycle::new(
        Arc::clone(&client),
        Arc::clone(&store),
        SyncPlan {
            initial_since: settings.sync.initial_since,
            overlap: settings.sync.overlap,
        },
    )
    .with_credential_origins(Arc::clone(&credentials));
    let remapper = Remapper::new(client, store, settings.mapping.api, settings.mapping.limits)
        .with_credential_origins(credentials);
    Ok(Configured { cycle, remapper })
}

/// The name of the environment whose URL this is, if any.
fn environment_of(base_url: &str) -> Option<&'static str> {
    ENVIRONMENTS
        .iter()
        .find(|(_, url)| *url == base_url)
        .map(|(name, _)| *name)
}

/// The operator as configured: `uid2-prod (https://prod.uidapi.com)` for a
/// known environment's URL, else the URL itself.
fn describe_operator(base_url: &str) -> String {
    match environment_of(base_url) {
        Some(name) => format!("{name} ({base_url})"),
        None => base_url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::one_line;

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let read = crate::config::ConfigError::Read {
            file: "/etc/x.toml".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let line = one_line(&anyhow::Error::new(read));
        assert_eq!(line, "/etc/x.toml: cannot read: permission denied");
    }

    #[test]
    fn a_cause_not_in_the_message_is_appended() {
        let error = Err::<(), _>(std::io::Error::other("disk on fire"))
            .context("cannot write the report")
            .unwrap_err();
        assert_eq!(one_line(&error), "cannot write the report: disk on fire");
    }
}
