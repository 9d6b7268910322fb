//! The PostgreSQL schema: versioned migrations (migrations/postgres/,
//! applied by refinery), run by one process at a time, and the checks that
//! keep this binary off a database it does not understand.

use postgres::Client;

use super::pg_error;
use crate::store::{OpenMode, StoreError, StoreOptions};

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

const OPERATION: &str = "checking the schema";

/// Where refinery records the applied migrations.
const HISTORY: &str = "uid2_schema_history";

/// Advisory lock keys (`pg_advisory_lock(int, int)`): the application's,
/// then one per purpose. Advisory locks are per database, so two
/// uid2-bucket-sync databases on one server never contend.
pub(crate) const LOCK_CLASS: i32 = 0x5549_4432; // "UID2"
const MIGRATING: i32 = 1;

/// The newest schema version this binary knows.
pub(crate) fn supported_version() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|migration| migration.version())
        .max()
        .unwrap_or(0)
}

/// Checks the database and, for the daemon ([`OpenMode::CreateIfMissing`]),
/// applies pending migrations, holding the migration lock so that
/// processes starting together take turns. Consumers
/// ([`OpenMode::MustExist`]) only check: a database without our schema, or
/// with an older one, is refused, as is one that holds other tables.
pub(super) fn prepare(
    client: &mut Client,
    mode: OpenMode,
    options: &StoreOptions,
    shown: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[&LOCK_CLASS, &MIGRATING],
        )
        .map_err(pg_error(OPERATION))?;
    let outcome = check_and_migrate(client, mode, options, shown);
    let unlocked = client
        .execute(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&LOCK_CLASS, &MIGRATING],
        )
        .map_err(pg_error(OPERATION));
    outcome.and(unlocked.map(drop))
}

fn check_and_migrate(
    client: &mut Client,
    mode: OpenMode,
    options: &StoreOptions,
    shown: &str,
) -> Result<(), StoreError> {
    let refuse = |reason: String| StoreError::PostgresMigrate {
        target: shown.to_owned(),
        reason,
    };
    let row = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL,
                    (SELECT count(*) FROM pg_tables WHERE schemaname = current_schema())",
            &[&HISTORY],
        )
        .map_err(pg_error(OPERATION))?;
    let (ours, tables): (bool, i64) = (row.get(0), row.get(1));
    if !ours {
        if mode == OpenMode::MustExist {
            return Err(StoreError::EmptyPostgres {
                target: shown.to_owned(),
            });
        }
        if tables > 0 {
            return Err(refuse(format!(
                "it holds {tables} table(s) of another application; refusing to add \
                 uid2-bucket-sync's tables to it: point database.url at a new, empty database"
            )));
        }
    } else {
        let found: Option<i32> = client
            .query_one(&format!("SELECT max(version) FROM {HISTORY}"), &[])
            .map_err(pg_error(OPERATION))?
            .get(0);
        let found = found.unwrap_or(0);
        let supported = supported_version();
        if found > supported {
            return Err(refuse(format!(
                "it has schema version {found}, newer than the version {supported} this \
                 uid2-bucket-sync knows; use a newer uid2-bucket-sync"
            )));
        }
        if found == supported {
            return Ok(());
        }
        // Consumers' roles need no right to change the schema (README,
        // "PostgreSQL"): only the daemon migrates.
        if mode == OpenMode::MustExist {
            return Err(refuse(format!(
                "it has schema version {found}, older than the version {supported} this \
                 uid2-bucket-sync uses; start the upgraded daemon (`run` or `sync`) first, \
                 it migrates the database"
            )));
        }
    }
    embedded::migrations::runner()
        .set_migration_table_name(HISTORY)
        .run(client)
        .map_err(|error| refuse(error_chain(&error)))?;
    // A database created now records by whom.
    if !ours {
        client
            .execute(
                "INSERT INTO database_meta (key, value) VALUES ('created_by', $1)
                 ON CONFLICT (key) DO NOTHING",
                &[&options.created_by],
            )
            .map_err(pg_error("recording who created the database"))?;
    }
    Ok(())
}

/// refinery's error and its causes (the server's message is a cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}
