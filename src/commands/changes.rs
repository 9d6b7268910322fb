//! `changes [--after SEQ] [--limit N] [--json]`: the change feed, one
//! record each time an identity's UID2 or status changed through a
//! mapping, in `seq` order. A consumer keeps the last `seq` it processed
//! and passes it as `--after` next time; `seq` values are never reused,
//! even after old records are pruned. Streams: memory stays flat however
//! many records follow.

use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;

use super::table::Table;
use crate::cli::Cli;
use crate::store::{ChangeRecord, OpenMode};
use crate::timestamp::format_utc;

pub(crate) fn run(
    cli: &Cli,
    after: i64,
    limit: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(cli)?;
    let store = super::open_store(&settings, OpenMode::MustExist)?;
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let mut out = out;
        store.changes(after, limit, |record| -> anyhow::Result<()> {
            serde_json::to_writer(&mut out, &ChangeJson::new(record))?;
            out.write_all(b"\n")?;
            Ok(())
        })?;
        out.flush()?;
    } else {
        let header = vec!["seq", "id", "status", "uid2", "previous_uid2", "changed_at"];
        let mut table = Table::new(out, header);
        let dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
        store.changes(after, limit, |record| -> anyhow::Result<()> {
            table.push(vec![
                record.seq.to_string(),
                record.id.clone(),
                record.status.clone(),
                dash(&record.uid2),
                dash(&record.previous_uid2),
                format_utc(record.changed_at),
            ])?;
            Ok(())
        })?;
        table.finish()?.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `changes --json`: the fields INTERFACE.md names.
#[derive(Serialize)]
struct ChangeJson<'a> {
    seq: i64,
    id: &'a str,
    uid2: Option<&'a str>,
    previous_uid2: Option<&'a str>,
    status: &'a str,
    changed_at: String,
}

impl<'a> ChangeJson<'a> {
    fn new(record: &'a ChangeRecord) -> Self {
        Self {
            seq: record.seq,
            id: &record.id,
            uid2: record.uid2.as_deref(),
            previous_uid2: record.previous_uid2.as_deref(),
            status: &record.status,
            changed_at: format_utc(record.changed_at),
        }
    }
}
