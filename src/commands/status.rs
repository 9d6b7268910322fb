//! `status [--json]`: the poller's progress and the queue at a glance.
//! Exit 0, or 1 with one line on stderr when the database can't be read.

use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::queue::{StatsJson, counts_line};
use super::table::{key_values, time_and_age};
use crate::cli::Cli;
use crate::store::{OpenMode, StoreStatus};
use crate::timestamp::{format_utc, truncate_to_millis};

pub fn run(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(cli)?;
    let store = super::open_store(&settings, OpenMode::MustExist)?;
    let now = truncate_to_millis(Utc::now());
    let status = store.status(now)?;
    let database = store.path().display().to_string();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        serde_json::to_writer(&mut out, &StatusJson::new(&status, &database, now))?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(render(&status, &database, now).as_bytes())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct StatusJson<'a> {
    database: &'a str,
    high_water_mark: Option<String>,
    last_attempt_at: Option<String>,
    last_success_at: Option<String>,
    last_error: Option<ErrorJson<'a>>,
    last_cycle: Option<CycleJson>,
    queue: StatsJson,
    oldest_pending_age_seconds: Option<i64>,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    at: String,
    kind: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct CycleJson {
    received: u64,
    new_rotations: u64,
    newly_queued: u64,
}

impl<'a> StatusJson<'a> {
    fn new(status: &'a StoreStatus, database: &'a str, now: DateTime<Utc>) -> Self {
        let sync = &status.sync;
        let queue = StatsJson::new(&status.queue, now);
        Self {
            database,
            high_water_mark: sync.high_water_mark.map(format_utc),
            last_attempt_at: sync.last_attempt_at.map(format_utc),
            last_success_at: sync.last_success_at.map(format_utc),
            last_error: sync.last_error.as_ref().map(|error| ErrorJson {
                at: format_utc(error.at),
                kind: &error.kind,
                message: &error.message,
            }),
            last_cycle: sync.last_cycle.map(|cycle| CycleJson {
                received: cycle.received,
                new_rotations: cycle.new_rotations,
                newly_queued: cycle.newly_queued,
            }),
            oldest_pending_age_seconds: queue.oldest_pending_age_seconds,
            queue,
        }
    }
}

fn render(status: &StoreStatus, database: &str, now: DateTime<Utc>) -> String {
    let sync = &status.sync;
    let never = || "never".to_owned();
    let last_success = match (sync.last_success_at, sync.last_cycle) {
        (Some(at), Some(cycle)) => format!(
            "{}: {} received, {} new rotations, {} queued",
            time_and_age(at, now),
            cycle.received,
            cycle.new_rotations,
            cycle.newly_queued
        ),
        (Some(at), None) => time_and_age(at, now),
        (None, _) => never(),
    };
    let last_error = match &sync.last_error {
        Some(error) => format!(
            "{}: {}: {}",
            time_and_age(error.at, now),
            error.kind,
            error.message
        ),
        None => "none".to_owned(),
    };
    key_values(&[
        ("database", database.to_owned()),
        (
            "high-water mark",
            sync.high_water_mark
                .map_or_else(|| "none (never synced)".to_owned(), format_utc),
        ),
        (
            "last attempt",
            sync.last_attempt_at
                .map_or_else(never, |at| time_and_age(at, now)),
        ),
        ("last success", last_success),
        ("last error", last_error),
        ("queue", counts_line(&status.queue)),
        (
            "oldest pending",
            status
                .queue
                .oldest_pending_due_at
                .map_or_else(|| "none".to_owned(), |due| time_and_age(due, now)),
        ),
    ])
}
