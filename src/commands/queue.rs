//! `queue claim|ack|fail|list|stats|retry|purge`: the consumers' side of
//! the re-mapping queue (INTERFACE.md).
//!
//! Exit codes:
//! - `0`: done; for `claim`, also when nothing was pending.
//! - `1`: an error, one line on stderr (no database, bad configuration…).
//! - `2`: the command line itself is wrong (also: a value out of its
//!   bounds, or `-` given with other lease ids).
//! - `3`: `ack` or `fail` only: some lease ids were refused (expired, or
//!   not held). Every other id was processed; stderr has one line per
//!   refused id, `lease ID: REASON`.
//!
//! `--json` output is JSON Lines: one object per line.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::table::{Table, age, key_values, printable, time_and_age};
use crate::cli::{Cli, QueueCommand, QueueStateArg};
use crate::queue::{
    AckOutcome, ClaimRequest, FailOutcome, Lease, ListFilter, QueueEntry, QueueOptions, QueueState,
    QueueStats, RemapQueue, Subject,
};
use crate::store::OpenMode;
use crate::timestamp::{format_utc, truncate_to_millis};

/// Some lease ids given to `ack` or `fail` were refused.
pub(crate) const EXIT_LEASES_REFUSED: u8 = 3;

pub(crate) fn run(cli: &Cli, command: &QueueCommand) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(cli)?;
    let store = super::open_store(&settings, OpenMode::MustExist)?;
    // The daemon's settings, recorded with the queue, over this machine's.
    let options = store
        .queue_settings()?
        .unwrap_or_else(|| QueueOptions::from(&settings.queue));
    let queue = store.queue(options);
    let now = truncate_to_millis(Utc::now());
    // One write per batch, not per line: a claim prints thousands of lines.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match command {
        QueueCommand::Claim {
            limit,
            lease,
            worker,
            json,
        } => {
            let leases = queue.claim(
                &ClaimRequest {
                    limit: *limit,
                    lease: *lease,
                    worker: worker.as_deref(),
                },
                now,
            )?;
            if *json {
                for lease in &leases {
                    serde_json::to_writer(&mut out, &ClaimLine::from(lease))?;
                    out.write_all(b"\n")?;
                }
            } else {
                write_leases(&leases, now, &mut out)?;
            }
        }
        QueueCommand::Ack { lease_ids } => {
            if let Some(refusal) = refuse_dash_among_ids(lease_ids, "ack") {
                return Ok(refusal);
            }
            let ids = lease_ids_from(lease_ids)?;
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let outcomes = queue.ack(&ids, now)?;
            let acked = outcomes.iter().filter(|o| !o.is_refused()).count();
            let newer = outcomes
                .iter()
                .filter(|o| **o == AckOutcome::AckedNewerPending)
                .count();
            write!(out, "acked {acked} of {}", ids.len())?;
            if newer > 0 {
                write!(out, " ({newer} pending again: rotated while leased)")?;
            }
            writeln!(out)?;
            out.flush()?;
            let refused = ids
                .iter()
                .zip(&outcomes)
                .filter_map(|(id, outcome)| match outcome {
                    AckOutcome::Refused(reason) => Some((*id, reason.to_string())),
                    _ => None,
                });
            return Ok(report_refused(refused));
        }
        QueueCommand::Fail {
            lease_ids,
            error,
            retry_after,
        } => {
            if let Some(refusal) = refuse_dash_among_ids(lease_ids, "fail") {
                return Ok(refusal);
            }
            let ids = lease_ids_from(lease_ids)?;
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let outcomes = queue.fail(&ids, error, *retry_after, now)?;
            let count = |wanted: FailOutcome| outcomes.iter().filter(|o| **o == wanted).count();
            writeln!(
                out,
                "failed {} of {}: {} to retry, {} dead, {} pending with a newer rotation",
                outcomes.iter().filter(|o| !o.is_refused()).count(),
                ids.len(),
                count(FailOutcome::Retrying),
                count(FailOutcome::Dead),
                count(FailOutcome::NewerPending),
            )?;
            out.flush()?;
            let refused = ids
                .iter()
                .zip(&outcomes)
                .filter_map(|(id, outcome)| match outcome {
                    FailOutcome::Refused(reason) => Some((*id, reason.to_string())),
                    _ => None,
                });
            return Ok(report_refused(refused));
        }
        QueueCommand::List { state, limit, json } => {
            let filter = ListFilter {
                state: state.map(QueueState::from),
                limit: *limit,
            };
            let listed = if *json {
                stream_entries(&queue, &filter, |entry| {
                    serde_json::to_writer(&mut out, &EntryLine::from(&entry))?;
                    out.write_all(b"\n")
                })
            } else {
                let mut table = Table::new(&mut out, ENTRY_COLUMNS.to_vec());
                stream_entries(&queue, &filter, |entry| table.push(entry_row(&entry, now)))
                    .and_then(|()| Ok(table.finish().map(drop)?))
            };
            match listed {
                // `queue list | head`: the reader has all it wanted.
                Err(error) if is_broken_pipe(&error) => return Ok(ExitCode::SUCCESS),
                other => other?,
            }
        }
        QueueCommand::Stats { json } => {
            let stats = queue.stats(now)?;
            if *json {
                serde_json::to_writer(&mut out, &StatsJson::new(&stats, now))?;
                out.write_all(b"\n")?;
            } else {
                out.write_all(render_stats(&stats, now).as_bytes())?;
            }
        }
        QueueCommand::Retry { dead: _ } => {
            let revived = queue.retry_dead(now)?;
            writeln!(out, "{revived} dead item(s) pending again")?;
        }
        QueueCommand::Purge { older_than } => {
            let retention = older_than.unwrap_or(settings.queue.done_retention);
            let cutoff = chrono::Duration::from_std(retention)
                .ok()
                .and_then(|span| now.checked_sub_signed(span))
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            let purged = queue.purge_done(cutoff)?;
            writeln!(
                out,
                "purged {purged} done item(s) finished before {}",
                format_utc(cutoff)
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `-` stands for stdin only on its own (INTERFACE.md); among ids it is
/// most likely a mistake, refused like any bad command line (exit 2).
fn refuse_dash_among_ids(arguments: &[String], subcommand: &str) -> Option<ExitCode> {
    if arguments.len() < 2 || !arguments.iter().any(|id| id == "-") {
        return None;
    }
    let mut command = <Cli as clap::CommandFactory>::command();
    command.build();
    let command = command
        .find_subcommand_mut("queue")
        .and_then(|queue| queue.find_subcommand_mut(subcommand))
        .expect("queue ack and queue fail exist");
    let error = command.error(
        clap::error::ErrorKind::ArgumentConflict,
        "`-` (read the lease ids from stdin) cannot be given together with lease ids",
    );
    let _ = error.print();
    Some(ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2)))
}

/// The ids on the command line or, when there are none or just `-`, one
/// per line on stdin.
fn lease_ids_from(arguments: &[String]) -> anyhow::Result<Vec<String>> {
    if !arguments.is_empty() && arguments != ["-"] {
        return Ok(arguments.to_vec());
    }
    let mut ids = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("cannot read lease ids from stdin")?;
        let id = line.trim();
        if !id.is_empty() {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

fn report_refused<'a>(refused: impl Iterator<Item = (&'a str, String)>) -> ExitCode {
    let mut err = std::io::stderr().lock();
    let mut any = false;
    for (id, reason) in refused {
        any = true;
        let _ = writeln!(err, "lease {}: {reason}", printable(id));
    }
    if any {
        ExitCode::from(EXIT_LEASES_REFUSED)
    } else {
        ExitCode::SUCCESS
    }
}

impl From<QueueStateArg> for QueueState {
    fn from(state: QueueStateArg) -> Self {
        match state {
            QueueStateArg::Pending => Self::Pending,
            QueueStateArg::Leased => Self::Leased,
            QueueStateArg::Done => Self::Done,
            QueueStateArg::Dead => Self::Dead,
        }
    }
}

/// A bucket shows as its id; any other subject as `kind:key`.
fn subject_label(subject: &Subject) -> String {
    match subject.bucket_id() {
        Some(id) => id.to_owned(),
        None => format!("{}:{}", subject.kind, subject.key),
    }
}

/// One line of `queue claim --json`. The first three fields are the
/// contract (INTERFACE.md).
#[derive(Serialize)]
struct ClaimLine<'a> {
    bucket_id: Option<&'a str>,
    last_updated: String,
    lease_id: &'a str,
    lease_expires_at: String,
    kind: &'a str,
    subject: &'a str,
    attempt: u32,
    generation: u32,
    due_at: String,
}

impl<'a> From<&'a Lease> for ClaimLine<'a> {
    fn from(lease: &'a Lease) -> Self {
        Self {
            bucket_id: lease.subject.bucket_id(),
            last_updated: format_utc(lease.version),
            lease_id: &lease.lease_id,
            lease_expires_at: format_utc(lease.expires_at),
            kind: &lease.subject.kind,
            subject: &lease.subject.key,
            attempt: lease.attempt,
            generation: lease.generation,
            due_at: format_utc(lease.due_at),
        }
    }
}

fn write_leases(leases: &[Lease], now: DateTime<Utc>, out: &mut impl Write) -> std::io::Result<()> {
    let mut table = Table::new(
        out,
        vec!["LEASE_ID", "SUBJECT", "LAST_UPDATED", "ATTEMPT", "EXPIRES"],
    );
    for lease in leases {
        table.push(vec![
            lease.lease_id.clone(),
            subject_label(&lease.subject),
            format_utc(lease.version),
            lease.attempt.to_string(),
            age(lease.expires_at, now),
        ])?;
    }
    table.finish().map(drop)
}

/// Hands `write` each entry as the queue reads it: memory stays flat
/// however long the queue is.
fn stream_entries(
    queue: &impl RemapQueue,
    filter: &ListFilter,
    mut write: impl FnMut(QueueEntry) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let flow = queue.for_each_entry(filter, |entry| match write(entry) {
        Ok(()) => ControlFlow::Continue(()),
        Err(error) => ControlFlow::Break(error),
    })?;
    match flow {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(error) => Err(error.into()),
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe)
}

/// One line of `queue list --json`: the columns of the `remap_queue` view,
/// plus the lease id.
#[derive(Serialize)]
struct EntryLine<'a> {
    kind: &'a str,
    subject: &'a str,
    bucket_id: Option<&'a str>,
    state: &'static str,
    last_updated: String,
    newer_last_updated: Option<String>,
    generation: u32,
    attempts: u32,
    due_at: String,
    lease_id: Option<&'a str>,
    leased_by: Option<&'a str>,
    lease_expires_at: Option<String>,
    done_at: Option<String>,
    last_error: Option<&'a str>,
    updated_at: String,
}

impl<'a> From<&'a QueueEntry> for EntryLine<'a> {
    fn from(entry: &'a QueueEntry) -> Self {
        Self {
            kind: &entry.subject.kind,
            subject: &entry.subject.key,
            bucket_id: entry.subject.bucket_id(),
            state: entry.state.as_str(),
            last_updated: format_utc(entry.version),
            newer_last_updated: entry.next_version.map(format_utc),
            generation: entry.generation,
            attempts: entry.attempts,
            due_at: format_utc(entry.due_at),
            lease_id: entry.lease_id.as_deref(),
            leased_by: entry.leased_by.as_deref(),
            lease_expires_at: entry.lease_expires_at.map(format_utc),
            done_at: entry.done_at.map(format_utc),
            last_error: entry.last_error.as_deref(),
            updated_at: format_utc(entry.updated_at),
        }
    }
}

const ENTRY_COLUMNS: [&str; 7] = [
    "SUBJECT",
    "STATE",
    "LAST_UPDATED",
    "GEN",
    "ATTEMPTS",
    "SINCE",
    "DETAIL",
];

fn entry_row(entry: &QueueEntry, now: DateTime<Utc>) -> Vec<String> {
    let waiting_for_retry = entry.state == QueueState::Pending && entry.due_at > now;
    let since = match entry.state {
        QueueState::Done => entry.done_at.unwrap_or(entry.updated_at),
        QueueState::Pending if waiting_for_retry => entry.updated_at,
        QueueState::Pending => entry.due_at,
        QueueState::Leased => entry.leased_at.unwrap_or(entry.updated_at),
        QueueState::Dead => entry.updated_at,
    };
    let mut detail = Vec::new();
    if waiting_for_retry {
        detail.push(format!("retry due {}", age(entry.due_at, now)));
    }
    if let Some(expires) = entry.lease_expires_at {
        let by = entry
            .leased_by
            .as_deref()
            .map(|w| format!(" by {w}"))
            .unwrap_or_default();
        detail.push(format!("leased{by}, expires {}", age(expires, now)));
    }
    if let Some(newer) = entry.next_version {
        detail.push(format!("newer rotation {} waits", format_utc(newer)));
    }
    if let Some(error) = &entry.last_error {
        detail.push(format!("last error: {error}"));
    }
    vec![
        subject_label(&entry.subject),
        entry.state.to_string(),
        format_utc(entry.version),
        entry.generation.to_string(),
        entry.attempts.to_string(),
        age(since, now),
        detail.join("; "),
    ]
}

/// `queue stats --json`, and the `queue` object of `status --json`.
#[derive(Serialize)]
pub(super) struct StatsJson {
    pub(crate) pending: u64,
    pub(crate) retry_waiting: u64,
    pub(crate) leased: u64,
    pub(crate) done: u64,
    pub(crate) dead: u64,
    pub(crate) expired_leases: u64,
    pub(crate) oldest_pending_due_at: Option<String>,
    pub(crate) oldest_pending_age_seconds: Option<i64>,
}

impl StatsJson {
    pub(super) fn new(stats: &QueueStats, now: DateTime<Utc>) -> Self {
        Self {
            pending: stats.pending,
            retry_waiting: stats.retry_waiting,
            leased: stats.leased,
            done: stats.done,
            dead: stats.dead,
            expired_leases: stats.expired_leases,
            oldest_pending_due_at: stats.oldest_pending_due_at.map(format_utc),
            oldest_pending_age_seconds: stats
                .oldest_pending_due_at
                .map(|due| (now - due).num_seconds().max(0)),
        }
    }
}

/// `12 pending (2 waiting to retry), 3 leased (1 expired), 100 done, 0 dead`.
pub(super) fn counts_line(stats: &QueueStats) -> String {
    let waiting = match stats.retry_waiting {
        0 => String::new(),
        n => format!(" ({n} waiting to retry)"),
    };
    let expired = match stats.expired_leases {
        0 => String::new(),
        n => format!(" ({n} expired)"),
    };
    format!(
        "{} pending{waiting}, {} leased{expired}, {} done, {} dead",
        stats.pending, stats.leased, stats.done, stats.dead
    )
}

fn render_stats(stats: &QueueStats, now: DateTime<Utc>) -> String {
    let mut lines: Vec<(&str, String)> = QueueState::ALL
        .iter()
        .map(|state| (state.as_str(), stats.count(*state).to_string()))
        .collect();
    if stats.retry_waiting > 0 {
        lines[0].1.push_str(&format!(
            "  ({} waiting for their retry time, not claimable yet)",
            stats.retry_waiting
        ));
    }
    if stats.expired_leases > 0 {
        lines[1].1.push_str(&format!(
            "  ({} expired, pending again at the next claim)",
            stats.expired_leases
        ));
    }
    lines.push((
        "oldest pending",
        stats
            .oldest_pending_due_at
            .map_or_else(|| "none".to_owned(), |due| time_and_age(due, now)),
    ));
    key_values(&lines)
}
