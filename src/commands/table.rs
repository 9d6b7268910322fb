//! Aligned plain-text tables and key/value blocks for people.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

/// Left-aligned columns separated by two spaces; the last column is not
/// padded, so long messages don't drag trailing blanks along.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: Vec<&'static str>) -> Self {
        Self {
            header,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.header.len());
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let last = row.len() - 1;
            for (index, cell) in row.iter().enumerate() {
                if index == last {
                    out.push_str(cell);
                } else {
                    let _ = write!(out, "{cell:<width$}  ", width = widths[index]);
                }
            }
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('\n');
        }
        out
    }
}

/// `key  value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{key:<width$}  {value}\n"))
        .collect()
}

/// `2025-06-01T00:00:00.000Z (3h 2m ago)`.
pub fn time_and_age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ({})", crate::timestamp::format_utc(at), age(at, now))
}

/// `3h 2m ago`, `in 5m`, to the second.
pub fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    let span = humantime::format_duration(std::time::Duration::from_secs(seconds.unsigned_abs()));
    match seconds {
        0 => "now".to_owned(),
        s if s > 0 => format!("{span} ago"),
        _ => format!("in {span}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        let mut table = Table::new(vec!["A", "LONGER", "LAST"]);
        table.push(vec!["xyz".into(), "1".into(), "message".into()]);
        table.push(vec!["q".into(), "22".into(), String::new()]);
        assert_eq!(
            table.render(),
            "A    LONGER  LAST\nxyz  1       message\nq    22\n"
        );
    }

    #[test]
    fn ages_read_naturally() {
        let now = DateTime::from_timestamp(10_000, 0).unwrap();
        assert_eq!(
            age(now - chrono::Duration::seconds(3725), now),
            "1h 2m 5s ago"
        );
        assert_eq!(age(now + chrono::Duration::seconds(60), now), "in 1m");
        assert_eq!(age(now, now), "now");
    }
}
