-- Schema version 2.
--
-- Marks the file as this application's (`PRAGMA application_id`, "UID2"
-- in ASCII), so that opening another program's SQLite file by mistake is
-- refused instead of silently adding tables to it.
PRAGMA application_id = 1430864946;

-- Facts about the database file itself. `created_by` names the command that
-- created the file (`sync`, `run` or `demo`); databases created before this
-- version have no row. `demo` refuses to write into a file it did not create.
CREATE TABLE database_meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) STRICT, WITHOUT ROWID;
