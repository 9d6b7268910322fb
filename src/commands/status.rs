//! `status [--json]`: the poller's progress and the queue at a glance, the
//! configured operator and schedule, and whether a daemon is polling this
//! database now. Works without a configuration file when given `--db`
//! (the configuration's parts are then unknown and left out).
//! Exit 0, or 1 with one line on stderr when the database can't be read.

use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::queue::{StatsJson, counts_line};
use super::table::{key_values, time_and_age};
use crate::cli::Cli;
use crate::config::{Schedule, Settings};
use crate::daemon::instance_lock::daemon_running;
use crate::daemon::schedule::{describe, next_poll};
use crate::store::{Failure, IdentityCounts, MapApi, MappingState, OpenMode, StoreStatus};
use crate::timestamp::{format_utc, truncate_to_millis};

pub(crate) fn run(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let settings = super::load_settings(cli)?;
    // Before the database is opened: the probe closes its own handle,
    // which must not happen under an open SQLite connection.
    let file_daemon = settings.database.file().map(daemon_running);
    let store = super::open_store(&settings, OpenMode::MustExist)?;
    let daemon = match file_daemon {
        Some(Ok(running)) => Daemon::Known(running),
        Some(Err(error)) => Daemon::Unknown(error.to_string()),
        None => match store.poller_running() {
            Ok(running) => Daemon::Known(running.unwrap_or(false)),
            Err(error) => Daemon::Unknown(error.to_string()),
        },
    };
    let now = truncate_to_millis(Utc::now());
    let status = store.status(now)?;
    let mapping = store.mapping_state()?;
    // The configured API decides what is due; without a configuration,
    // the one the last pass used.
    let api = match (&settings.source, mapping.api.as_deref()) {
        (None, Some("v2")) => MapApi::V2,
        (None, _) => MapApi::V3,
        (Some(_), _) => settings.mapping.api,
    };
    let counts = store.identity_counts(api, now)?;
    let identities = IdentitiesView {
        counts: &counts,
        mapping: &mapping,
        api,
    };
    let database = store.name();
    let setup = Setup::new(&settings, daemon, status.sync.last_attempt_at, now);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let report = StatusJson::new(&status, &database, &setup, &identities, now);
        serde_json::to_writer(&mut out, &report)?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(render(&status, &database, &setup, &identities, now).as_bytes())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

enum Daemon {
    Known(bool),
    /// The lock could not be probed (e.g. a file system without locks).
    Unknown(String),
}

/// What the configuration says about polling, and whether a daemon is
/// doing it. The configuration's parts are `None` without a config file:
/// defaults would describe a daemon that may not exist.
struct Setup {
    configured: bool,
    environment: Option<&'static str>,
    base_url: Option<String>,
    schedule: Option<Schedule>,
    daemon: Daemon,
    next_poll: Option<DateTime<Utc>>,
}

impl Setup {
    fn new(
        settings: &Settings,
        daemon: Daemon,
        last_attempt: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        let configured = settings.source.is_some();
        let base_url = settings.operator.base_url.clone().filter(|_| configured);
        let environment = base_url.as_deref().and_then(super::environment_of);
        let schedule = configured.then(|| settings.sync.schedule.clone());
        let next_poll = match daemon {
            Daemon::Known(false) => None,
            _ => schedule
                .as_ref()
                .and_then(|schedule| next_poll(schedule, last_attempt, now)),
        };
        Self {
            configured,
            environment,
            base_url,
            schedule,
            daemon,
            next_poll,
        }
    }

    fn daemon_running(&self) -> Option<bool> {
        match self.daemon {
            Daemon::Known(running) => Some(running),
            Daemon::Unknown(_) => None,
        }
    }

    fn operator_line(&self) -> Option<String> {
        if !self.configured {
            return None;
        }
        Some(self.base_url.as_deref().map_or_else(
            || "not set (operator.environment or operator.base_url)".to_owned(),
            super::describe_operator,
        ))
    }

    fn daemon_line(&self) -> String {
        match &self.daemon {
            Daemon::Known(true) => "running".to_owned(),
            Daemon::Known(false) => "not running".to_owned(),
            Daemon::Unknown(reason) => format!("unknown: cannot probe the database lock: {reason}"),
        }
    }

    fn next_poll_line(&self, now: DateTime<Utc>) -> Option<String> {
        let schedule = self.schedule.as_ref()?;
        Some(match (&self.daemon, self.next_poll, schedule) {
            (Daemon::Known(false), _, _) => "none: no daemon is running".to_owned(),
            (_, Some(at), _) => time_and_age(at, now),
            (_, None, Schedule::Interval(period)) => format!(
                "unknown: within {} (the daemon counts intervals from its start)",
                humantime::format_duration(*period)
            ),
            (_, None, Schedule::Cron(_)) => "unknown".to_owned(),
        })
    }
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ScheduleJson<'a> {
    Cron { expression: &'a str },
    Interval { seconds: u64 },
}

impl<'a> ScheduleJson<'a> {
    fn new(schedule: &'a Schedule) -> Self {
        match schedule {
            Schedule::Cron(cron) => Self::Cron {
                expression: cron.as_str(),
            },
            Schedule::Interval(period) => Self::Interval {
                seconds: period.as_secs(),
            },
        }
    }
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
    environment: Option<&'a str>,
    base_url: Option<&'a str>,
    schedule: Option<ScheduleJson<'a>>,
    /// `null` when the lock could not be probed.
    daemon_running: Option<bool>,
    next_poll: Option<String>,
    identities: IdentitiesJson,
    mapping: MappingJson<'a>,
}

#[derive(Serialize)]
struct MappingJson<'a> {
    /// The API `due` is counted for.
    api: &'static str,
    last_started_at: Option<String>,
    last_finished_at: Option<String>,
    last_success_at: Option<String>,
    last_error: Option<ErrorJson<'a>>,
    last_pass: Option<PassJson>,
}

#[derive(Serialize)]
struct PassJson {
    sent: u64,
    changed: u64,
    unchanged: u64,
    optout: u64,
    invalid: u64,
    requests: u64,
}

#[derive(Serialize)]
struct IdentitiesJson {
    total: u64,
    mapped: u64,
    unmapped: u64,
    due: u64,
    optout: u64,
    invalid: u64,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    at: String,
    kind: &'a str,
    message: &'a str,
}

impl<'a> From<&'a Failure> for ErrorJson<'a> {
    fn from(failure: &'a Failure) -> Self {
        Self {
            at: format_utc(failure.at),
            kind: &failure.kind,
            message: &failure.message,
        }
    }
}

#[derive(Serialize)]
struct CycleJson {
    received: u64,
    new_rotations: u64,
    newly_queued: u64,
}

impl<'a> StatusJson<'a> {
    fn new(
        status: &'a StoreStatus,
        database: &'a str,
        setup: &'a Setup,
        identities: &IdentitiesView<'a>,
        now: DateTime<Utc>,
    ) -> Self {
        let (counts, mapping) = (identities.counts, identities.mapping);
        let sync = &status.sync;
        let queue = StatsJson::new(&status.queue, now);
        Self {
            database,
            high_water_mark: sync.high_water_mark.map(format_utc),
            last_attempt_at: sync.last_attempt_at.map(format_utc),
            last_success_at: sync.last_success_at.map(format_utc),
            last_error: sync.last_error.as_ref().map(ErrorJson::from),
            last_cycle: sync.last_cycle.map(|cycle| CycleJson {
                received: cycle.received,
                new_rotations: cycle.new_rotations,
                newly_queued: cycle.newly_queued,
            }),
            oldest_pending_age_seconds: queue.oldest_pending_age_seconds,
            queue,
            environment: setup.environment,
            base_url: setup.base_url.as_deref(),
            schedule: setup.schedule.as_ref().map(ScheduleJson::new),
            daemon_running: setup.daemon_running(),
            next_poll: setup.next_poll.map(format_utc),
            mapping: MappingJson {
                api: identities.api.as_str(),
                last_started_at: mapping.last_started_at.map(format_utc),
                last_finished_at: mapping.last_finished_at.map(format_utc),
                last_success_at: mapping.last_success_at.map(format_utc),
                last_error: mapping.last_error.as_ref().map(ErrorJson::from),
                last_pass: mapping.last_pass.map(|pass| PassJson {
                    sent: pass.sent,
                    changed: pass.changed,
                    unchanged: pass.unchanged,
                    optout: pass.optout,
                    invalid: pass.invalid,
                    requests: pass.requests,
                }),
            },
            identities: IdentitiesJson {
                total: counts.total,
                mapped: counts.mapped,
                unmapped: counts.unmapped,
                due: counts.due,
                optout: counts.optout,
                invalid: counts.invalid,
            },
        }
    }
}

fn render(
    status: &StoreStatus,
    database: &str,
    setup: &Setup,
    identities: &IdentitiesView<'_>,
    now: DateTime<Utc>,
) -> String {
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
    let last_error = failure_line(sync.last_error.as_ref(), now);
    let mut lines = vec![("database", database.to_owned())];
    lines.extend([
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
    ]);
    // After the original lines, which scripts may already read by position.
    lines.extend(setup.operator_line().map(|line| ("operator", line)));
    lines.extend(setup.schedule.as_ref().map(|s| ("schedule", describe(s))));
    lines.push(("daemon", setup.daemon_line()));
    lines.extend(setup.next_poll_line(now).map(|line| ("next poll", line)));
    lines.extend(identity_lines(identities, now));
    key_values(&lines)
}

/// The identities' and the re-map worker's lines.
fn identity_lines(
    identities: &IdentitiesView<'_>,
    now: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let never = || "never".to_owned();
    let mut lines = Vec::new();
    let counts = identities.counts;
    lines.push((
        "identities",
        format!(
            "{} in all: {} mapped, {} unmapped, {} due ({}), {} opted out, {} invalid",
            counts.total,
            counts.mapped,
            counts.unmapped,
            counts.due,
            identities.api.as_str(),
            counts.optout,
            counts.invalid
        ),
    ));
    let mapping = identities.mapping;
    let last_pass = match (mapping.last_finished_at, mapping.last_pass) {
        (Some(at), Some(pass)) => format!(
            "{}: {} sent, {} changed, {} unchanged, {} opted out, {} invalid, {} requests",
            time_and_age(at, now),
            pass.sent,
            pass.changed,
            pass.unchanged,
            pass.optout,
            pass.invalid,
            pass.requests
        ),
        _ => never(),
    };
    lines.push(("last re-map", last_pass));
    lines.push((
        "re-map error",
        failure_line(mapping.last_error.as_ref(), now),
    ));
    lines
}

/// A recorded failure on one line: when, its kind and its message.
fn failure_line(failure: Option<&Failure>, now: DateTime<Utc>) -> String {
    match failure {
        Some(failure) => format!(
            "{}: {}: {}",
            time_and_age(failure.at, now),
            failure.kind,
            failure.message
        ),
        None => "none".to_owned(),
    }
}

/// What `status` shows about the identities and the re-map worker.
struct IdentitiesView<'a> {
    counts: &'a IdentityCounts,
    mapping: &'a MappingState,
    api: MapApi,
}
