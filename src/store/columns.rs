//! A result row read by column index, whichever backend returned it: the
//! records both backends read (the sync state, the mapping state, an
//! identity, a change record) are each built from one in one place.

pub(super) trait Columns {
    type Error;

    fn text(&self, index: usize) -> Result<String, Self::Error>;
    fn optional_text(&self, index: usize) -> Result<Option<String>, Self::Error>;
    fn number(&self, index: usize) -> Result<i64, Self::Error>;
    fn optional_number(&self, index: usize) -> Result<Option<i64>, Self::Error>;
}

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;

    fn text(&self, index: usize) -> rusqlite::Result<String> {
        self.get(index)
    }

    fn optional_text(&self, index: usize) -> rusqlite::Result<Option<String>> {
        self.get(index)
    }

    fn number(&self, index: usize) -> rusqlite::Result<i64> {
        self.get(index)
    }

    fn optional_number(&self, index: usize) -> rusqlite::Result<Option<i64>> {
        self.get(index)
    }
}

impl Columns for ::postgres::Row {
    type Error = ::postgres::Error;

    fn text(&self, index: usize) -> Result<String, ::postgres::Error> {
        self.try_get(index)
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, ::postgres::Error> {
        self.try_get(index)
    }

    fn number(&self, index: usize) -> Result<i64, ::postgres::Error> {
        self.try_get(index)
    }

    fn optional_number(&self, index: usize) -> Result<Option<i64>, ::postgres::Error> {
        self.try_get(index)
    }
}
