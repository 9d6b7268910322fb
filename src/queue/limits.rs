//! What the queue accepts from its callers, checked in one place so the
//! command line (which reports a violation as a usage error, exit 2) and the
//! library refuse the same things with the same words.
//!
//! Every bound keeps one call's cost or one stored value's size
//! proportionate: a claim's leases are held in memory and printed, and the
//! worker name and error text are stored per entry and shown to people.

use std::borrow::Cow;
use std::time::Duration;

use super::QueueError;

/// The longest lease or retry delay. Times are stored as milliseconds in an
/// `i64`, so this also keeps `now + span` far from overflowing.
pub(crate) const MAX_SPAN: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// The most items one claim leases.
pub const MAX_CLAIM_LIMIT: u32 = 100_000;

/// The longest `--worker` name, in bytes of UTF-8.
pub const MAX_WORKER_BYTES: usize = 128;

/// The longest stored error text, in bytes of UTF-8; longer text is cut.
pub const MAX_ERROR_BYTES: usize = 4096;

pub(crate) fn check_lease(lease: Duration) -> Result<Duration, QueueError> {
    if lease < Duration::from_millis(1) || lease > MAX_SPAN {
        return Err(QueueError::InvalidLease(lease));
    }
    Ok(lease)
}

/// A delay before a failed item may be claimed again; zero is allowed.
pub(crate) fn check_retry_delay(delay: Duration) -> Result<Duration, QueueError> {
    if delay > MAX_SPAN {
        return Err(QueueError::InvalidRetryDelay(delay));
    }
    Ok(delay)
}

pub(crate) fn check_claim_limit(limit: u32) -> Result<u32, QueueError> {
    if limit > MAX_CLAIM_LIMIT {
        return Err(QueueError::InvalidClaimLimit(limit));
    }
    Ok(limit)
}

/// A worker name is shown in `queue list` and the `remap_queue` view: it
/// must be short and must not be able to drive a terminal.
pub(crate) fn check_worker(name: &str) -> Result<&str, QueueError> {
    let reason = if name.is_empty() {
        "must not be empty".to_owned()
    } else if name.len() > MAX_WORKER_BYTES {
        format!(
            "must be at most {MAX_WORKER_BYTES} bytes, not {}",
            name.len()
        )
    } else if let Some(control) = name.chars().find(|c| c.is_control()) {
        format!(
            "must not contain control characters (found U+{:04X})",
            u32::from(control)
        )
    } else {
        return Ok(name);
    };
    Err(QueueError::InvalidWorker(reason))
}

/// `error` as stored: whole up to [`MAX_ERROR_BYTES`], else its beginning
/// and a marker saying how long it was, within the bound. A consumer's
/// failure report is never refused for its length: refusing it would leave
/// the item leased until the lease runs out.
pub(crate) fn bounded_error(error: &str) -> Cow<'_, str> {
    if error.len() <= MAX_ERROR_BYTES {
        return Cow::Borrowed(error);
    }
    let marker = format!("… [cut, {} bytes in all]", error.len());
    let mut keep = MAX_ERROR_BYTES - marker.len();
    while !error.is_char_boundary(keep) {
        keep -= 1;
    }
    Cow::Owned(format!("{}{marker}", &error[..keep]))
}

/// Milliseconds of a span, at most [`MAX_SPAN`].
pub(crate) fn span_millis(span: Duration) -> i64 {
    span.min(MAX_SPAN).as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_error_is_cut_on_a_character_boundary_with_its_length_and_fits_the_bound() {
        let error = "é".repeat(MAX_ERROR_BYTES);
        let stored = bounded_error(&error);
        assert!(stored.len() <= MAX_ERROR_BYTES, "{}", stored.len());
        assert!(stored.starts_with("éé"));
        assert!(stored.ends_with(&format!("… [cut, {} bytes in all]", 2 * MAX_ERROR_BYTES)));
        let exact = "x".repeat(MAX_ERROR_BYTES);
        assert_eq!(bounded_error(&exact), exact);
    }

    #[test]
    fn worker_names_are_short_printable_and_not_empty() {
        assert_eq!(check_worker("nightly-7").unwrap(), "nightly-7");
        assert!(check_worker(&"w".repeat(MAX_WORKER_BYTES)).is_ok());
        for (name, reason) in [
            (String::new(), "must not be empty"),
            (
                "w".repeat(MAX_WORKER_BYTES + 1),
                "at most 128 bytes, not 129",
            ),
            (
                "evil\x1b[2J".to_owned(),
                "control characters (found U+001B)",
            ),
            ("a\rb".to_owned(), "(found U+000D)"),
        ] {
            let error = check_worker(&name).unwrap_err().to_string();
            assert!(error.contains(reason), "{name:?}: {error}");
        }
    }
}
