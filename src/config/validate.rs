//! Checks on single values: durations, counts, the operator URL, cron
//! expressions and sync intervals. Each refusal names the origin and key.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::operator::options::check_base_url;

use super::ConfigError;

/// The longest `sync.interval`: the scheduler works in whole seconds of a
/// `chrono` duration, and a poll less often than yearly is surely a typo.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);

/// A cron expression parsed once, at load, the way the scheduler reads it
/// (six fields, seconds first; day-of-month and weekday must both match),
/// and known to fire at least once more. Boxed: a parsed pattern is large.
#[derive(Debug, Clone)]
pub struct CronSchedule(Box<croner::Cron>);

impl CronSchedule {
    pub fn parse(expression: &str) -> Result<Self, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expression)
            .map_err(|e| {
                format!(
                    "{expression:?} is not a cron expression with six fields (sec min hour day month weekday): {e}"
                )
            })?;
        let schedule = Self(Box::new(cron));
        if schedule.next_after(Utc::now()).is_none() {
            return Err(format!(
                "{expression:?} never fires: no date matches it (for example February 30)"
            ));
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub(crate) fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The parsed expression, for the scheduler.
    pub(crate) fn cron(&self) -> &croner::Cron {
        &self.0
    }

    /// The first tick strictly after `time`.
    pub(crate) fn next_after(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.find_next_occurrence(&time, false).ok()
    }

    /// The last tick at or before `time`.
    pub(crate) fn previous_at_or_before(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.find_previous_occurrence(&time, true).ok()
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for CronSchedule {}

impl std::fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operator client's own rules (https, or http to loopback; nothing
/// that could carry a credential), checked at load so a bad URL is refused
/// with the file and key. The message never shows a user name, password or
/// query.
pub(super) fn validate_base_url(url: &str, origin: &str, key: &str) -> Result<String, ConfigError> {
    check_base_url(url).map_err(|e| ConfigError::invalid(origin, key, e.to_string()))?;
    Ok(url.trim().trim_end_matches('/').to_owned())
}

/// The scheduler counts repeat intervals in whole seconds: `1500ms` would
/// silently become 1 s and anything under a second would never tick; past
/// [`MAX_INTERVAL`] its time arithmetic overflows.
pub(crate) fn validate_interval(interval: Duration) -> Result<Duration, String> {
    if interval < Duration::from_secs(1) || interval.subsec_nanos() != 0 {
        return Err(format!(
            "{} is not a whole number of seconds of at least 1s; the scheduler counts in seconds",
            humantime::format_duration(interval)
        ));
    }
    if interval > MAX_INTERVAL {
        return Err(format!(
            "{} is longer than the longest interval, 366 days",
            humantime::format_duration(interval)
        ));
    }
    Ok(interval)
}

pub(super) fn parse_duration(text: &str, origin: &str, key: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        ConfigError::invalid(
            origin,
            key,
            format!("{text:?} is not a duration like 30s, 10m or 1h: {e}"),
        )
    })
}

/// An optional duration key: `default` when the key is absent.
pub(super) fn duration(
    text: Option<String>,
    default: Duration,
    origin: &str,
    key: &str,
) -> Result<Duration, ConfigError> {
    text.map_or(Ok(default), |text| parse_duration(&text, origin, key))
}

/// As [`duration`], for a queue retry delay, which has bounds of its own.
pub(super) fn retry_delay(
    text: Option<String>,
    default: Duration,
    origin: &str,
    key: &str,
) -> Result<Duration, ConfigError> {
    crate::queue::check_retry_delay(duration(text, default, origin, key)?)
        .map_err(|error| ConfigError::invalid(origin, key, error.to_string()))
}

pub(super) fn nonzero(value: Duration, origin: &str, key: &str) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(
            origin,
            key,
            "must be longer than zero",
        ));
    }
    Ok(value)
}

pub(super) fn positive(value: u32, origin: &str, key: &str) -> Result<u32, ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(origin, key, "must be at least 1"));
    }
    Ok(value)
}
