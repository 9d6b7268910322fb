//! The operator's timestamp dialect.
//!
//! The operator reads `since_timestamp` with Java's `ISO_LOCAL_DATE_TIME`
//! (`yyyy-MM-ddTHH:mm[:ss[.fraction]]`, no zone, read as UTC) and prints
//! `last_updated` as `yyyy-MM-ddTHH:mm:ss.SSS`. Older operators printed 0–9
//! fraction digits. This module is the single place that knows those rules,
//! so the client, the simulated operator and the store agree byte for byte.
//!
//! Everything the project stores or compares is whole milliseconds since the
//! Unix epoch: the operator's own resolution. Finer fractions from old
//! operators are truncated, which can only move a mark *earlier*; with the
//! operator's inclusive comparison that re-reads a boundary row instead of
//! skipping one.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};

/// Why a text is not an ISO local date-time in the operator's dialect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error(
        "{0:?} is not an ISO-8601 local date-time (expected yyyy-MM-ddTHH:mm[:ss[.fraction]], no zone)"
    )]
    Malformed(String),
    #[error("{0:?} names a date or time that does not exist")]
    OutOfRange(String),
}

/// Parses `yyyy-MM-ddTHH:mm[:ss[.f{0,9}]]` exactly as the operator does.
///
/// Rejects a zone suffix, a space separator, a bare date, an integer and
/// URL-encoded colons, because the operator answers those with a 400.
pub fn parse_iso_local(text: &str) -> Result<DateTime<Utc>, TimestampError> {
    let malformed = || TimestampError::Malformed(text.to_owned());
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Result<u32, TimestampError> {
        let slice = bytes.get(range).ok_or_else(malformed)?;
        slice.iter().try_fold(0u32, |acc, b| {
            if b.is_ascii_digit() {
                Ok(acc * 10 + u32::from(b - b'0'))
            } else {
                Err(malformed())
            }
        })
    };
    let expect = |index: usize, byte: u8| -> Result<(), TimestampError> {
        (bytes.get(index) == Some(&byte))
            .then_some(())
            .ok_or_else(malformed)
    };

    let year = digits(0..4)?;
    expect(4, b'-')?;
    let month = digits(5..7)?;
    expect(7, b'-')?;
    let day = digits(8..10)?;
    expect(10, b'T')?;
    let hour = digits(11..13)?;
    expect(13, b':')?;
    let minute = digits(14..16)?;

    let mut second = 0;
    let mut nanos = 0;
    let mut cursor = 16;
    if bytes.len() > cursor {
        expect(cursor, b':')?;
        second = digits(17..19)?;
        cursor = 19;
        if bytes.len() > cursor {
            expect(cursor, b'.')?;
            let fraction = &bytes[cursor + 1..];
            if fraction.len() > 9 {
                return Err(malformed());
            }
            let value = digits(cursor + 1..bytes.len())?;
            nanos = value * 10u32.pow(9 - fraction.len() as u32);
            cursor = bytes.len();
        }
    }
    if cursor != bytes.len() {
        return Err(malformed());
    }

    let out_of_range = || TimestampError::OutOfRange(text.to_owned());
    let date = NaiveDate::from_ymd_opt(year as i32, month, day).ok_or_else(out_of_range)?;
    // Java rejects a leap second here too, so `from_hms_nano_opt` rules match.
    if second > 59 {
        return Err(out_of_range());
    }
    let time =
        NaiveTime::from_hms_nano_opt(hour, minute, second, nanos).ok_or_else(out_of_range)?;
    Ok(NaiveDateTime::new(date, time).and_utc())
}

/// Formats as the current operator does: `yyyy-MM-ddTHH:mm:ss.SSS`, no zone.
/// This is also the form sent as `since_timestamp`.
pub fn format_operator(instant: DateTime<Utc>) -> String {
    instant.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
}

/// Formats for people and for the project's own JSON output:
/// RFC 3339 in UTC with milliseconds and a `Z`.
pub fn format_utc(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Milliseconds since the Unix epoch; the unit the store keeps.
pub fn to_millis(instant: DateTime<Utc>) -> i64 {
    instant.timestamp_millis()
}

/// The inverse of [`to_millis`]. Out-of-range values saturate to the epoch
/// rather than panic; the store only ever holds values it wrote itself.
pub fn from_millis(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Truncates to whole milliseconds, the resolution everything is kept at.
pub fn truncate_to_millis(instant: DateTime<Utc>) -> DateTime<Utc> {
    from_millis(to_millis(instant))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn accepts_every_precision_the_operator_has_printed() {
        assert_eq!(
            parse_iso_local("2022-06-05T22:52").unwrap(),
            utc("2022-06-05T22:52:00Z")
        );
        assert_eq!(
            parse_iso_local("2022-06-05T22:52:03").unwrap(),
            utc("2022-06-05T22:52:03Z")
        );
        assert_eq!(
            parse_iso_local("2022-06-05T22:52:03.1").unwrap(),
            utc("2022-06-05T22:52:03.1Z")
        );
        assert_eq!(
            parse_iso_local("2022-06-05T22:52:03.109").unwrap(),
            utc("2022-06-05T22:52:03.109Z")
        );
        assert_eq!(
            parse_iso_local("2022-06-05T22:52:03.123456789").unwrap(),
            utc("2022-06-05T22:52:03.123456789Z")
        );
    }

    #[test]
    fn rejects_what_the_operator_rejects() {
        for text in [
            "2022-06-05T22:52:03Z",
            "2022-06-05T22:52:03+00:00",
            "2022-06-05 22:52:03",
            "2022-06-05",
            "1654469523",
            "2022-06-05T22%3A52%3A03",
            "2022-06-05T22:52:03.1234567891",
            "2022-6-05T22:52:03",
            "",
            "2022-06-05T22:52:",
            "2022-06-05T22:52:03.12a",
        ] {
            assert!(
                matches!(parse_iso_local(text), Err(TimestampError::Malformed(_))),
                "{text:?} should be malformed"
            );
        }
        for text in [
            "2022-02-30T00:00:00",
            "2022-06-05T24:00:00",
            "2022-06-05T23:60",
        ] {
            assert!(
                matches!(parse_iso_local(text), Err(TimestampError::OutOfRange(_))),
                "{text:?} should be out of range"
            );
        }
    }

    #[test]
    fn formats_like_the_operator_and_round_trips() {
        let instant = utc("2022-06-05T22:52:03.109Z");
        assert_eq!(format_operator(instant), "2022-06-05T22:52:03.109");
        assert_eq!(
            format_operator(utc("2025-01-01T00:00:00Z")),
            "2025-01-01T00:00:00.000"
        );
        assert_eq!(parse_iso_local(&format_operator(instant)).unwrap(), instant);
        assert_eq!(format_utc(instant), "2022-06-05T22:52:03.109Z");
    }

    #[test]
    fn millis_truncate_finer_fractions_downwards() {
        let fine = parse_iso_local("2022-06-05T22:52:03.1099").unwrap();
        assert_eq!(
            format_operator(truncate_to_millis(fine)),
            "2022-06-05T22:52:03.109"
        );
        assert_eq!(from_millis(to_millis(fine)), truncate_to_millis(fine));
    }
}
