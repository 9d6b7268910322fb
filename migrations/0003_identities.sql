-- Schema version 3.
--
-- The user's own identities and the change feed of their UID2s. Raw emails
-- and phone numbers never reach this file: `hash` is the SHA-256 of the
-- normalized value, which is still personal data (it identifies a person
-- to anyone who hashes a guess), so no view shows it.
--
-- UID2s are kept as the operator's base64 text rather than bytes: SQLite
-- has no base64 function, and the views must show them as text.

CREATE TABLE identity (
    -- The user's own key, 1 to 256 bytes.
    id               TEXT    NOT NULL PRIMARY KEY
        CHECK (length(CAST(id AS BLOB)) BETWEEN 1 AND 256),
    identity_type    TEXT    NOT NULL CHECK (identity_type IN ('email', 'phone')),
    hash             BLOB    NOT NULL CHECK (length(hash) = 32),
    status           TEXT    NOT NULL
        CHECK (status IN ('unmapped', 'mapped', 'optout', 'invalid')),
    uid2             TEXT,
    previous_uid2    TEXT,
    -- v2: the salt bucket of the current UID2.
    bucket_id        TEXT,
    -- v3: map again at or after this instant.
    refresh_from_ms  INTEGER,
    -- When the operator last answered for this identity.
    mapped_at_ms     INTEGER,
    -- The last import or mapping that changed the row.
    updated_at_ms    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- "Due now" is `status = 'unmapped' OR refresh_from_ms <= now`: two small
-- range scans, whatever the number of identities that are not due.
CREATE INDEX identity_unmapped ON identity (status) WHERE status = 'unmapped';
CREATE INDEX identity_refresh ON identity (refresh_from_ms) WHERE refresh_from_ms IS NOT NULL;
-- "Identities in bucket B mapped before its rotation at T" (v2).
CREATE INDEX identity_bucket ON identity (bucket_id, mapped_at_ms) WHERE bucket_id IS NOT NULL;

-- One record each time an identity's UID2 or status changed through a
-- mapping (its first mapping included). Imports and removals write none.
-- AUTOINCREMENT: a `seq` is never reused, even after the newest records
-- are pruned, so a consumer's saved position stays meaningful.
CREATE TABLE identity_change (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('unmapped', 'mapped', 'optout', 'invalid')),
    uid2             TEXT,
    previous_uid2    TEXT,
    changed_at_ms    INTEGER NOT NULL
) STRICT;

-- Retention deletes the oldest records first.
CREATE INDEX identity_change_time ON identity_change (changed_at_ms);

CREATE TRIGGER identity_change_no_update BEFORE UPDATE ON identity_change
BEGIN
    SELECT RAISE(ABORT, 'identity_change is append-only');
END;

-- ---- the SQL contract (docs/sql-contract.md) ----------------------------

CREATE VIEW identities AS
SELECT
    id,
    identity_type,
    uid2,
    previous_uid2,
    bucket_id,
    strftime('%Y-%m-%dT%H:%M:%fZ', refresh_from_ms / 1000.0, 'unixepoch') AS refresh_from,
    status,
    strftime('%Y-%m-%dT%H:%M:%fZ', mapped_at_ms / 1000.0, 'unixepoch') AS mapped_at,
    strftime('%Y-%m-%dT%H:%M:%fZ', updated_at_ms / 1000.0, 'unixepoch') AS updated_at
FROM identity;

CREATE VIEW identity_changes AS
SELECT
    seq,
    id,
    uid2,
    previous_uid2,
    status,
    strftime('%Y-%m-%dT%H:%M:%fZ', changed_at_ms / 1000.0, 'unixepoch') AS changed_at
FROM identity_change;
