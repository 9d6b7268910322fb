-- Schema version 1.
--
-- Times are whole milliseconds since the Unix epoch (the operator's
-- resolution), in columns whose names end in `_ms`. The views at the end
-- present them as ISO-8601 UTC text; they are the contract batch jobs read
-- (docs/sql-contract.md). Tables may change between versions, views may only
-- gain columns.

-- What the poller knows about its own progress: one row, id = 1.
CREATE TABLE sync_state (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    -- The latest `last_updated` ever received; the next `since_timestamp`.
    high_water_mark_ms  INTEGER,
    last_attempt_at_ms  INTEGER,
    last_success_at_ms  INTEGER,
    last_error_at_ms    INTEGER,
    last_error_kind     TEXT,
    last_error_message  TEXT,
    -- Counts of the last successful cycle.
    last_received       INTEGER,
    last_new_rotations  INTEGER,
    last_newly_queued   INTEGER
) STRICT;

INSERT INTO sync_state (id) VALUES (1);

-- Every distinct rotation ever reported. A bucket's latest known rotation
-- is its last row here; the log is never pruned, so purging done queue
-- entries never makes an old rotation look new again.
CREATE TABLE rotation_log (
    bucket_id        TEXT    NOT NULL,
    last_updated_ms  INTEGER NOT NULL,
    observed_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (bucket_id, last_updated_ms)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER rotation_log_no_update BEFORE UPDATE ON rotation_log
BEGIN
    SELECT RAISE(ABORT, 'rotation_log is append-only');
END;

CREATE TRIGGER rotation_log_no_delete BEFORE DELETE ON rotation_log
BEGIN
    SELECT RAISE(ABORT, 'rotation_log is append-only');
END;

-- The re-mapping queue: one entry per subject. A subject is anything whose
-- identifiers need re-mapping from some version on; today only salt
-- buckets (kind 'bucket', subject = bucket_id, version = last_updated).
CREATE TABLE queue_item (
    kind                 TEXT    NOT NULL,
    subject              TEXT    NOT NULL,
    state                TEXT    NOT NULL
        CHECK (state = 'pending' OR state = 'leased' OR state = 'done' OR state = 'dead'),
    -- The version that made the entry due; the one a consumer is given.
    version_ms           INTEGER NOT NULL,
    -- Starts at 1; +1 each time a newer version makes a finished or
    -- leased entry due again. Coalescing into a pending entry keeps it.
    generation           INTEGER NOT NULL,
    -- Claims of the current generation.
    attempts             INTEGER NOT NULL,
    -- Since when the current generation has been waiting; claims take the
    -- oldest first.
    due_at_ms            INTEGER NOT NULL,
    updated_at_ms        INTEGER NOT NULL,
    -- A newer version that arrived while leased, due once the lease ends.
    next_version_ms      INTEGER,
    next_due_at_ms       INTEGER,
    -- Set only while leased: the id the consumer acks or fails with.
    lease_id             TEXT,
    -- The consumer's --worker name of the latest lease.
    leased_by            TEXT,
    leased_at_ms         INTEGER,
    lease_expires_at_ms  INTEGER,
    done_at_ms           INTEGER,
    last_error           TEXT,
    PRIMARY KEY (kind, subject)
) STRICT, WITHOUT ROWID;

CREATE INDEX queue_item_pending ON queue_item (due_at_ms) WHERE state = 'pending';
CREATE INDEX queue_item_done ON queue_item (done_at_ms) WHERE state = 'done';
CREATE INDEX queue_item_dead ON queue_item (updated_at_ms) WHERE state = 'dead';
-- Leases: found by id (ack, fail) and, the leased set being small,
-- scanned for expiry (claim, reclaim).
CREATE INDEX queue_item_leased ON queue_item (lease_id, lease_expires_at_ms) WHERE state = 'leased';

-- ---- the SQL contract (docs/sql-contract.md) ----------------------------
-- strftime rounds `ms / 1000.0` back to the exact millisecond.

CREATE VIEW sync_status AS
SELECT
    strftime('%Y-%m-%dT%H:%M:%fZ', high_water_mark_ms / 1000.0, 'unixepoch') AS high_water_mark,
    strftime('%Y-%m-%dT%H:%M:%fZ', last_attempt_at_ms / 1000.0, 'unixepoch') AS last_attempt_at,
    strftime('%Y-%m-%dT%H:%M:%fZ', last_success_at_ms / 1000.0, 'unixepoch') AS last_success_at,
    strftime('%Y-%m-%dT%H:%M:%fZ', last_error_at_ms / 1000.0, 'unixepoch') AS last_error_at,
    last_error_kind,
    last_error_message,
    last_received,
    last_new_rotations,
    last_newly_queued
FROM sync_state;

CREATE VIEW buckets AS
SELECT
    bucket_id,
    strftime('%Y-%m-%dT%H:%M:%fZ', max(last_updated_ms) / 1000.0, 'unixepoch') AS last_updated
FROM rotation_log
GROUP BY bucket_id;

CREATE VIEW bucket_rotations AS
SELECT
    bucket_id,
    strftime('%Y-%m-%dT%H:%M:%fZ', last_updated_ms / 1000.0, 'unixepoch') AS last_updated,
    strftime('%Y-%m-%dT%H:%M:%fZ', observed_at_ms / 1000.0, 'unixepoch') AS observed_at
FROM rotation_log;

CREATE VIEW remap_queue AS
SELECT
    kind,
    subject,
    CASE WHEN kind = 'bucket' THEN subject END AS bucket_id,
    state,
    strftime('%Y-%m-%dT%H:%M:%fZ', version_ms / 1000.0, 'unixepoch') AS last_updated,
    strftime('%Y-%m-%dT%H:%M:%fZ', next_version_ms / 1000.0, 'unixepoch') AS newer_last_updated,
    generation,
    attempts,
    strftime('%Y-%m-%dT%H:%M:%fZ', due_at_ms / 1000.0, 'unixepoch') AS due_at,
    leased_by,
    strftime('%Y-%m-%dT%H:%M:%fZ', lease_expires_at_ms / 1000.0, 'unixepoch') AS lease_expires_at,
    strftime('%Y-%m-%dT%H:%M:%fZ', done_at_ms / 1000.0, 'unixepoch') AS done_at,
    last_error,
    strftime('%Y-%m-%dT%H:%M:%fZ', updated_at_ms / 1000.0, 'unixepoch') AS updated_at
FROM queue_item;
