//! Aligned plain-text tables and key/value blocks for people.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use chrono::{DateTime, Utc};

/// Rows a [`Table`] holds before writing them out.
const BLOCK_ROWS: usize = 1024;

/// Left-aligned columns separated by two spaces; the last column is not
/// padded, so long messages don't drag trailing blanks along.
///
/// Rows are written in blocks of [`BLOCK_ROWS`], each aligned to the widest
/// cell seen so far, so a table of any length takes memory for one block;
/// a wider cell in a later block moves that block's columns to the right.
/// Every cell goes through [`printable`].
pub(crate) struct Table<W: Write> {
    out: W,
    header: Vec<&'static str>,
    widths: Vec<usize>,
    block: Vec<Vec<String>>,
    header_written: bool,
}

impl<W: Write> Table<W> {
    pub(crate) fn new(out: W, header: Vec<&'static str>) -> Self {
        Self {
            out,
            widths: header.iter().map(|h| h.chars().count()).collect(),
            header,
            block: Vec::new(),
            header_written: false,
        }
    }

    pub(crate) fn push(&mut self, row: Vec<String>) -> io::Result<()> {
        debug_assert_eq!(row.len(), self.header.len());
        let row: Vec<String> = row
            .into_iter()
            .map(|cell| match printable(&cell) {
                Cow::Borrowed(_) => cell,
                Cow::Owned(escaped) => escaped,
            })
            .collect();
        for (width, cell) in self.widths.iter_mut().zip(&row) {
            *width = (*width).max(cell.chars().count());
        }
        self.block.push(row);
        if self.block.len() == BLOCK_ROWS {
            self.write_block()?;
        }
        Ok(())
    }

    /// Writes the rows still held; a table without rows writes nothing,
    /// not even its header.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.write_block()?;
        Ok(self.out)
    }

    fn write_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let mut line = String::new();
        if !self.header_written {
            self.header_written = true;
            let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
            self.write_row(&header, &mut line)?;
        }
        for row in std::mem::take(&mut self.block) {
            self.write_row(&row, &mut line)?;
        }
        Ok(())
    }

    fn write_row(&mut self, row: &[String], line: &mut String) -> io::Result<()> {
        line.clear();
        let last = row.len() - 1;
        for (index, cell) in row.iter().enumerate() {
            if index == last {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = self.widths[index]);
            }
        }
        let trimmed = line.trim_end().len();
        line.truncate(trimmed);
        line.push('\n');
        self.out.write_all(line.as_bytes())
    }
}

/// `text` safe to print to a terminal: control characters (ESC, CR, BEL,
/// newlines…) and the invisible bidirectional overrides are written as Rust
/// escapes (`\u{1b}`, `\r`), so text stored by anyone (error messages,
/// worker names) can neither drive the terminal nor fake a line.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    fn hostile(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(hostile) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hostile(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// `key  value` lines with the values aligned, values made [`printable`].
pub(crate) fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{key:<width$}  {}\n", printable(value)))
        .collect()
}

/// `2025-06-01T00:00:00.000Z (3h 2m ago)`.
pub(crate) fn time_and_age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ({})", crate::timestamp::format_utc(at), age(at, now))
}

/// `3h 2m ago`, `in 5m`, to the second.
pub(crate) fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
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

    fn rendered(rows: &[[&str; 3]]) -> String {
        let mut table = Table::new(Vec::new(), vec!["A", "LONGER", "LAST"]);
        for row in rows {
            table.push(row.map(str::to_owned).to_vec()).unwrap();
        }
        String::from_utf8(table.finish().unwrap()).unwrap()
    }

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        assert_eq!(
            rendered(&[["xyz", "1", "message"], ["q", "22", ""]]),
            "A    LONGER  LAST\nxyz  1       message\nq    22\n"
        );
    }

    #[test]
    fn a_table_without_rows_prints_nothing() {
        assert_eq!(rendered(&[]), "");
    }

    #[test]
    fn a_long_table_is_written_in_blocks_aligned_to_the_widest_cell_so_far() {
        let mut rows = vec![["a", "1", "x"]; BLOCK_ROWS];
        rows.push(["wide-cell", "1", "x"]);
        let text = rendered(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), BLOCK_ROWS + 2);
        assert_eq!(lines[0], "A  LONGER  LAST");
        assert_eq!(lines[BLOCK_ROWS], "a  1       x");
        assert_eq!(lines[BLOCK_ROWS + 1], "wide-cell  1       x");
    }

    #[test]
    fn control_characters_in_cells_and_values_are_escaped() {
        let text = rendered(&[["\x1b[2Jgone", "a\rb", "line\nnext \u{202e}txt"]]);
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "\\u{1b}[2Jgone  a\\rb    line\\nnext \\u{202e}txt"
        );
        assert!(!text.contains('\x1b') && !text.contains('\r'));
        assert_eq!(
            key_values(&[("last error", "bell\x07".to_owned())]),
            "last error  bell\\u{7}\n"
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
