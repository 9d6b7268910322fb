//! `migrate-to URL`: copies the configured SQLite database into an empty
//! PostgreSQL database and says what it copied. The SQLite file is left as
//! it was; point `database.url` at the copy to switch.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::Cli;
use crate::config::postgres_target;
use crate::store::migrate::copy_to_postgres;
use crate::store::{OpenMode, StoreOptions};

pub(crate) fn run(
    cli: &Cli,
    url: &str,
    password_file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(cli)?;
    let (mut warnings, mut notes) = (Vec::new(), Vec::new());
    let env = |name: &str| std::env::var(name).ok();
    let target = postgres_target(
        url,
        ("the command line", "URL"),
        "the command line",
        password_file,
        &env,
        &mut warnings,
        &mut notes,
    )?;
    if target.url_has_password() {
        anyhow::bail!(
            "the URL holds a password, which every user of this machine can read on a command \
             line: give it in $PGPASSWORD, --password-file or the systemd credential db_password"
        );
    }
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    let source = super::open_store(&settings, OpenMode::MustExist)?;
    let options = StoreOptions {
        busy_timeout: settings.database.busy_timeout,
        ..StoreOptions::default()
    };
    let counts = copy_to_postgres(&source, &target, &options)
        .with_context(|| format!("cannot copy {} to {target}", source.name()))?;
    println!(
        "copied {} to {target}: sync state, {} rotations of {} buckets, {} queue entries \
         ({} leased), {} identities, {} change records, mapping state",
        source.name(),
        counts.rotations,
        counts.buckets,
        counts.queue_entries,
        counts.leased,
        counts.identities,
        counts.changes
    );
    Ok(ExitCode::SUCCESS)
}
