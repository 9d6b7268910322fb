//! `identities import|remove|export`: the identities the daemon keeps
//! mapped. Raw emails and phones are normalized and hashed as they are
//! read and never kept, printed or put in an error: messages name the line
//! and the reason only.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;

use crate::cli::{Cli, IdentitiesCommand, RecordFormat};
use crate::identity::{IdentityHash, IdentityType, InvalidIdentity};
use crate::store::identities::Duplicate;
use crate::store::{IdentityImport, IdentityRecord, IdentityStatus, OpenMode, Store, StoreError};
use crate::timestamp::format_utc;

/// The longest `id` accepted, in bytes (INTERFACE.md).
const MAX_ID_BYTES: usize = 256;
/// Skipped records listed one by one before "and N more".
const SKIPPED_LISTED: usize = 10;
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The columns (CSV) or keys (JSON lines) that carry the identifier.
const VALUE_FIELDS: [&str; 4] = ["email", "phone", "email_hash", "phone_hash"];

pub fn run(cli: &Cli, command: &IdentitiesCommand) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(cli)?;
    match command {
        IdentitiesCommand::Import { file, format } => {
            let store = super::open_store(&settings, OpenMode::CreateIfMissing)?;
            import(&store, file.as_deref(), *format)
        }
        IdentitiesCommand::Remove { ids } => {
            let store = super::open_store(&settings, OpenMode::MustExist)?;
            remove(&store, ids)
        }
        IdentitiesCommand::Export { format, status } => {
            let store = super::open_store(&settings, OpenMode::MustExist)?;
            export(&store, *format, *status)
        }
    }
}

/// Why a file is refused as a whole. Never holds any part of a value.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn refuse(line: u64, reason: impl Into<String>) -> Refusal {
    Refusal::Line {
        line,
        reason: reason.into(),
    }
}

/// One record as read: its line, its id and which field held what.
struct RawRecord<'a> {
    line: u64,
    id: &'a str,
    field: usize,
    value: &'a str,
}

/// Checks the record's shape; `None` fields are absent or empty.
fn shape<'a>(
    line: u64,
    id: Option<&'a str>,
    values: [Option<&'a str>; 4],
) -> Result<RawRecord<'a>, Refusal> {
    let id = id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| refuse(line, "the record has no id"))?;
    if id.len() > MAX_ID_BYTES {
        return Err(refuse(
            line,
            format!(
                "the id is {} bytes long, more than {MAX_ID_BYTES}",
                id.len()
            ),
        ));
    }
    let mut present = values
        .iter()
        .enumerate()
        .filter_map(|(field, value)| value.filter(|v| !v.is_empty()).map(|v| (field, v)));
    let Some((field, value)) = present.next() else {
        return Err(refuse(
            line,
            "the record has no identifier (one of email, phone, email_hash, phone_hash)",
        ));
    };
    if let Some((second, _)) = present.next() {
        return Err(refuse(
            line,
            format!(
                "the record has two identifiers ({} and {}); give exactly one",
                VALUE_FIELDS[field], VALUE_FIELDS[second]
            ),
        ));
    }
    Ok(RawRecord {
        line,
        id,
        field,
        value,
    })
}

fn hash_of(field: usize, value: &str) -> Result<(IdentityType, IdentityHash), InvalidIdentity> {
    match VALUE_FIELDS[field] {
        "email" => IdentityHash::of_email(value).map(|h| (IdentityType::Email, h)),
        "phone" => IdentityHash::of_phone(value).map(|h| (IdentityType::Phone, h)),
        "email_hash" => IdentityHash::from_hash_text(value).map(|h| (IdentityType::Email, h)),
        _ => IdentityHash::from_hash_text(value).map(|h| (IdentityType::Phone, h)),
    }
}

/// Counts and lists skipped records, and shows progress on a terminal.
struct Tally {
    records: u64,
    skipped: u64,
    listed: Vec<String>,
    started: Instant,
    last_progress: Option<Instant>,
    terminal: bool,
}

impl Tally {
    fn new() -> Self {
        Self {
            records: 0,
            skipped: 0,
            listed: Vec::new(),
            started: Instant::now(),
            last_progress: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn record(&mut self) {
        self.records += 1;
        if self.terminal && self.records.is_multiple_of(16_384) {
            let since = self.last_progress.unwrap_or(self.started);
            if since.elapsed() >= PROGRESS_EVERY {
                self.last_progress = Some(Instant::now());
                eprint!("\rread {} records…", self.records);
            }
        }
    }

    fn skip(&mut self, line: u64, reason: InvalidIdentity) {
        self.skipped += 1;
        if self.listed.len() < SKIPPED_LISTED {
            self.listed.push(format!("line {line}: skipped: {reason}"));
        }
    }

    fn finish_progress(&self) {
        if self.last_progress.is_some() {
            eprintln!();
        }
    }
}

/// Validates and stages one record.
fn stage(
    import: &mut IdentityImport<'_>,
    tally: &mut Tally,
    record: RawRecord<'_>,
) -> Result<(), Refusal> {
    tally.record();
    let hashed = match hash_of(record.field, record.value) {
        Ok(hashed) => Some(hashed),
        Err(reason) => {
            tally.skip(record.line, reason);
            None
        }
    };
    let value = hashed.as_ref().map(|(kind, hash)| (*kind, hash));
    match import.stage(record.line, record.id, value)? {
        None => Ok(()),
        Some(duplicate) => Err(duplicate_refusal(duplicate)),
    }
}

fn duplicate_refusal(duplicate: Duplicate) -> Refusal {
    refuse(
        duplicate.line,
        format!("duplicate id (also on line {})", duplicate.first_line),
    )
}

fn import(
    store: &Store,
    file: Option<&Path>,
    format: Option<RecordFormat>,
) -> anyhow::Result<ExitCode> {
    let from_stdin = file.is_none_or(|path| path == Path::new("-"));
    let format = match (format, file) {
        (Some(format), _) => format,
        (None, Some(path)) if !from_stdin => format_of(path)?,
        _ => anyhow::bail!("reading stdin: give --format csv or --format jsonl"),
    };
    let (name, input): (String, Box<dyn Read>) = match file {
        Some(path) if !from_stdin => (
            path.display().to_string(),
            Box::new(File::open(path).with_context(|| format!("{}: cannot open", path.display()))?),
        ),
        _ => ("stdin".to_owned(), Box::new(std::io::stdin().lock())),
    };
    let mut import = store.import_identities(Utc::now())?;
    let mut tally = Tally::new();
    let read = match format {
        RecordFormat::Csv => read_csv(input, &mut import, &mut tally),
        RecordFormat::Jsonl => read_jsonl(input, &mut import, &mut tally),
    };
    tally.finish_progress();
    if let Err(refusal) = read {
        // A backend may report a duplicate id a few records late: the
        // earliest refusal is the one to name.
        let refusal = match (&refusal, import.flush()?) {
            (Refusal::Line { line, .. }, Some(duplicate)) if duplicate.line < *line => {
                duplicate_refusal(duplicate)
            }
            _ => refusal,
        };
        drop(import);
        anyhow::bail!("{name}: {refusal}; nothing was imported");
    }
    let counts = match import.commit()? {
        Ok(counts) => counts,
        Err(duplicate) => {
            anyhow::bail!(
                "{name}: {}; nothing was imported",
                duplicate_refusal(duplicate)
            )
        }
    };
    let mut err = std::io::stderr().lock();
    for line in &tally.listed {
        writeln!(err, "{line}")?;
    }
    if tally.skipped > tally.listed.len() as u64 {
        writeln!(
            err,
            "and {} more skipped records",
            tally.skipped - tally.listed.len() as u64
        )?;
    }
    println!(
        "added {}, updated {}, unchanged {}, skipped {}",
        counts.added, counts.updated, counts.unchanged, tally.skipped
    );
    Ok(ExitCode::SUCCESS)
}

fn format_of(path: &Path) -> anyhow::Result<RecordFormat> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("csv") => Ok(RecordFormat::Csv),
        Some(ext) if ext.eq_ignore_ascii_case("jsonl") || ext.eq_ignore_ascii_case("ndjson") => {
            Ok(RecordFormat::Jsonl)
        }
        _ => anyhow::bail!(
            "{}: cannot tell the format from the file name; give --format csv or --format jsonl",
            path.display()
        ),
    }
}

fn read_csv(
    input: Box<dyn Read>,
    import: &mut IdentityImport<'_>,
    tally: &mut Tally,
) -> Result<(), Refusal> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(BufReader::with_capacity(1 << 16, input));
    let headers = reader
        .headers()
        .map_err(|error| refuse(1, csv_reason(&error)))?
        .clone();
    if headers.is_empty() || headers.iter().all(str::is_empty) {
        return Err(refuse(1, "no header row (expected e.g. `id,email`)"));
    }
    let mut id_column = None;
    let mut value_columns: [Option<usize>; 4] = [None; 4];
    for (column, name) in headers.iter().enumerate() {
        let slot = if name == "id" {
            &mut id_column
        } else if let Some(field) = VALUE_FIELDS.iter().position(|f| *f == name) {
            &mut value_columns[field]
        } else {
            return Err(refuse(
                1,
                format!(
                    "unknown column {:?} (expected id, email, phone, email_hash, phone_hash)",
                    name
                ),
            ));
        };
        if slot.replace(column).is_some() {
            return Err(refuse(1, format!("the column {name:?} appears twice")));
        }
    }
    let Some(id_column) = id_column else {
        return Err(refuse(1, "no `id` column in the header row"));
    };
    let mut row = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut row) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line());
                return Err(refuse(line, csv_reason(&error)));
            }
        }
        let line = row.position().map_or(0, |p| p.line());
        let values = value_columns.map(|column| column.and_then(|c| row.get(c)));
        let record = shape(line, row.get(id_column), values)?;
        stage(import, tally, record)?;
    }
}

/// The CSV library's error, without any part of the data.
fn csv_reason(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::Io(error) => format!("cannot read: {error}"),
        csv::ErrorKind::Utf8 { .. } => "the line is not valid UTF-8".to_owned(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("the record has {len} fields, the header {expected_len}"),
        _ => "not readable as CSV".to_owned(),
    }
}

fn read_jsonl(
    input: Box<dyn Read>,
    import: &mut IdentityImport<'_>,
    tally: &mut Tally,
) -> Result<(), Refusal> {
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let mut text = String::new();
    let mut line = 0;
    loop {
        text.clear();
        line += 1;
        match reader.read_line(&mut text) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                return Err(refuse(line, "the line is not valid UTF-8"));
            }
            Err(error) => return Err(refuse(line, format!("cannot read: {error}"))),
        }
        if text.trim().is_empty() {
            continue;
        }
        // serde_json's messages may quote a value: only its category is shown.
        let object = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(refuse(line, "the line is not a JSON object")),
            Err(error) => {
                return Err(refuse(
                    line,
                    format!("the line is not JSON (column {})", error.column()),
                ));
            }
        };
        let mut values: [Option<&str>; 4] = [None; 4];
        let mut id = None;
        for (key, value) in &object {
            let slot = if key == "id" {
                &mut id
            } else if let Some(field) = VALUE_FIELDS.iter().position(|f| f == key) {
                &mut values[field]
            } else {
                return Err(refuse(
                    line,
                    format!(
                        "unknown key {key:?} (expected id, email, phone, email_hash, phone_hash)"
                    ),
                ));
            };
            *slot = match value {
                Value::String(text) => Some(text.as_str()),
                Value::Null => None,
                _ => return Err(refuse(line, format!("{key:?} is not a string"))),
            };
        }
        let record = shape(line, id, values)?;
        stage(import, tally, record)?;
    }
}

fn remove(store: &Store, arguments: &[String]) -> anyhow::Result<ExitCode> {
    let removed = if arguments.is_empty() || arguments == ["-"] {
        let mut lines = std::io::stdin().lock().lines();
        store
            .remove_identities(|| {
                loop {
                    match lines.next()? {
                        Ok(line) if line.trim().is_empty() => continue,
                        Ok(line) => return Some(Ok(line.trim_end_matches('\r').to_owned())),
                        Err(error) => return Some(Err(error)),
                    }
                }
            })?
            .context("cannot read ids from stdin; nothing was removed")?
    } else {
        if arguments.iter().any(|id| id == "-") {
            anyhow::bail!("`-` (read stdin) cannot be mixed with ids on the command line");
        }
        let mut ids = arguments.iter().cloned();
        store
            .remove_identities(|| ids.next().map(Ok::<_, std::convert::Infallible>))?
            .unwrap_or_else(|never| match never {})
    };
    println!("removed {removed}");
    Ok(ExitCode::SUCCESS)
}

/// `identities export --format jsonl`, as in INTERFACE.md.
#[derive(Serialize)]
struct ExportJson<'a> {
    id: &'a str,
    identity_type: &'a str,
    uid2: Option<&'a str>,
    previous_uid2: Option<&'a str>,
    bucket_id: Option<&'a str>,
    refresh_from: Option<String>,
    status: &'a str,
    mapped_at: Option<String>,
}

impl<'a> ExportJson<'a> {
    fn new(record: &'a IdentityRecord) -> Self {
        Self {
            id: &record.id,
            identity_type: &record.identity_type,
            uid2: record.uid2.as_deref(),
            previous_uid2: record.previous_uid2.as_deref(),
            bucket_id: record.bucket_id.as_deref(),
            refresh_from: record.refresh_from.map(format_utc),
            status: &record.status,
            mapped_at: record.mapped_at.map(format_utc),
        }
    }
}

fn export(
    store: &Store,
    format: RecordFormat,
    status: Option<IdentityStatus>,
) -> anyhow::Result<ExitCode> {
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        RecordFormat::Jsonl => {
            let mut out = out;
            store.export_identities(status, |record| -> anyhow::Result<()> {
                serde_json::to_writer(&mut out, &ExportJson::new(record))?;
                out.write_all(b"\n")?;
                Ok(())
            })?;
            out.flush()?;
        }
        RecordFormat::Csv => {
            // The header is written even when no record follows.
            let mut out = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(out);
            out.write_record([
                "id",
                "identity_type",
                "uid2",
                "previous_uid2",
                "bucket_id",
                "refresh_from",
                "status",
                "mapped_at",
            ])?;
            store.export_identities(status, |record| -> anyhow::Result<()> {
                out.serialize(ExportJson::new(record))?;
                Ok(())
            })?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
