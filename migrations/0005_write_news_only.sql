-- Schema version 5.
--
-- A day's rotations are a few thousand random bucket ids. Keyed by bucket,
-- the rotation log put each of them on its own leaf of a 2^20-row B-tree,
-- so a day's ~150 KB of news rewrote thousands of pages. Now every table a
-- sync writes is either keyed by time (appends at its right edge) or small:
--
-- - `rotation_log` is keyed by when a rotation was observed: a sync appends
--   its new rotations in one run of pages, and a batch job reading "what
--   was learnt since" reads one range.
-- - Each bucket's latest rotation is `bucket_recent`'s row if it has one,
--   else `bucket`'s, else its row in the first sync's snapshot: the log
--   rows observed at `sync_state.snapshot_observed_at_ms`, which a first
--   sync into an empty database writes as every bucket's latest rotation
--   (so it writes them once, not twice). A later sync writes only
--   `bucket_recent`, which holds the rotations since the last fold; a fold
--   (when it has grown past about six days of rotations) moves them into
--   `bucket` in one sorted pass and empties it.
-- - The queue keeps its live entries (pending, leased, dead) apart from the
--   done ones: a day's new entries go into a table that holds little more
--   than them, however many entries were done over the retention period.

DROP VIEW buckets;
DROP VIEW bucket_rotations;
DROP TRIGGER rotation_log_no_update;
DROP TRIGGER rotation_log_no_delete;
ALTER TABLE rotation_log RENAME TO rotation_log_by_bucket;

-- Every distinct rotation ever reported. A rotation is logged only when it
-- is later than its bucket's latest, so (bucket_id, last_updated_ms) stays
-- unique without an index of its own.
CREATE TABLE rotation_log (
    observed_at_ms   INTEGER NOT NULL,
    bucket_id        TEXT    NOT NULL,
    last_updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (observed_at_ms, bucket_id, last_updated_ms)
) STRICT, WITHOUT ROWID;

INSERT INTO rotation_log (observed_at_ms, bucket_id, last_updated_ms)
SELECT observed_at_ms, bucket_id, last_updated_ms
FROM rotation_log_by_bucket
ORDER BY observed_at_ms, bucket_id, last_updated_ms;

CREATE TRIGGER rotation_log_no_update BEFORE UPDATE ON rotation_log
BEGIN
    SELECT RAISE(ABORT, 'rotation_log is append-only');
END;

CREATE TRIGGER rotation_log_no_delete BEFORE DELETE ON rotation_log
BEGIN
    SELECT RAISE(ABORT, 'rotation_log is append-only');
END;

-- Each bucket's latest rotation as of the last fold.
CREATE TABLE bucket (
    bucket_id        TEXT    NOT NULL PRIMARY KEY,
    last_updated_ms  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO bucket (bucket_id, last_updated_ms)
SELECT bucket_id, max(last_updated_ms)
FROM rotation_log_by_bucket
GROUP BY bucket_id
ORDER BY bucket_id;

-- Each bucket's latest rotation, for those that rotated since the last fold.
CREATE TABLE bucket_recent (
    bucket_id        TEXT    NOT NULL PRIMARY KEY,
    last_updated_ms  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

DROP TABLE rotation_log_by_bucket;

-- NULL: no snapshot (this database was migrated; `bucket` has it all).
ALTER TABLE sync_state ADD COLUMN snapshot_observed_at_ms INTEGER;

-- The queue: `queue_item` loses its done entries to `queue_done`. A subject
-- is in at most one of the two; an entry due again leaves `queue_done`.
DROP VIEW remap_queue;
DROP INDEX queue_item_pending;
DROP INDEX queue_item_done;
DROP INDEX queue_item_dead;
DROP INDEX queue_item_leased;
ALTER TABLE queue_item RENAME TO queue_item_with_done;

-- The columns mean what they meant in schema version 1.
CREATE TABLE queue_item (
    kind                 TEXT    NOT NULL,
    subject              TEXT    NOT NULL,
    state                TEXT    NOT NULL
        CHECK (state = 'pending' OR state = 'leased' OR state = 'dead'),
    version_ms           INTEGER NOT NULL,
    generation           INTEGER NOT NULL,
    attempts             INTEGER NOT NULL,
    due_at_ms            INTEGER NOT NULL,
    updated_at_ms        INTEGER NOT NULL,
    next_version_ms      INTEGER,
    next_due_at_ms       INTEGER,
    lease_id             TEXT,
    leased_by            TEXT,
    leased_at_ms         INTEGER,
    lease_expires_at_ms  INTEGER,
    last_error           TEXT,
    PRIMARY KEY (kind, subject)
) STRICT, WITHOUT ROWID;

INSERT INTO queue_item
SELECT kind, subject, state, version_ms, generation, attempts, due_at_ms, updated_at_ms,
       next_version_ms, next_due_at_ms, lease_id, leased_by, leased_at_ms,
       lease_expires_at_ms, last_error
FROM queue_item_with_done
WHERE state <> 'done'
ORDER BY kind, subject;

CREATE INDEX queue_item_pending ON queue_item (due_at_ms) WHERE state = 'pending';
CREATE INDEX queue_item_dead ON queue_item (updated_at_ms) WHERE state = 'dead';
CREATE INDEX queue_item_leased ON queue_item (lease_id, lease_expires_at_ms) WHERE state = 'leased';

-- Acked entries: what the entry was when its last lease was acked.
CREATE TABLE queue_done (
    kind           TEXT    NOT NULL,
    subject        TEXT    NOT NULL,
    version_ms     INTEGER NOT NULL,
    generation     INTEGER NOT NULL,
    attempts       INTEGER NOT NULL,
    due_at_ms      INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    leased_by      TEXT,
    leased_at_ms   INTEGER,
    done_at_ms     INTEGER NOT NULL,
    last_error     TEXT,
    PRIMARY KEY (kind, subject)
) STRICT, WITHOUT ROWID;

INSERT INTO queue_done
SELECT kind, subject, version_ms, generation, attempts, due_at_ms, updated_at_ms,
       leased_by, leased_at_ms, done_at_ms, last_error
FROM queue_item_with_done
WHERE state = 'done'
ORDER BY kind, subject;

-- Retention deletes the oldest first.
CREATE INDEX queue_done_time ON queue_done (done_at_ms);

DROP TABLE queue_item_with_done;

-- ---- the SQL contract (docs/sql-contract.md) ----------------------------

-- A lookup by bucket_id reaches each part through its key.
CREATE VIEW buckets AS
SELECT
    bucket_id,
    strftime('%Y-%m-%dT%H:%M:%fZ', last_updated_ms / 1000.0, 'unixepoch') AS last_updated
FROM bucket_recent
UNION ALL
SELECT
    b.bucket_id,
    strftime('%Y-%m-%dT%H:%M:%fZ', b.last_updated_ms / 1000.0, 'unixepoch') AS last_updated
FROM bucket AS b
WHERE NOT EXISTS (SELECT 1 FROM bucket_recent AS r WHERE r.bucket_id = b.bucket_id)
UNION ALL
SELECT
    s.bucket_id,
    strftime('%Y-%m-%dT%H:%M:%fZ', s.last_updated_ms / 1000.0, 'unixepoch') AS last_updated
FROM rotation_log AS s
WHERE s.observed_at_ms = (SELECT snapshot_observed_at_ms FROM sync_state WHERE id = 1)
  AND NOT EXISTS (SELECT 1 FROM bucket_recent AS r WHERE r.bucket_id = s.bucket_id)
  AND NOT EXISTS (SELECT 1 FROM bucket AS f WHERE f.bucket_id = s.bucket_id);

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
    NULL AS done_at,
    last_error,
    strftime('%Y-%m-%dT%H:%M:%fZ', updated_at_ms / 1000.0, 'unixepoch') AS updated_at
FROM queue_item
UNION ALL
SELECT
    kind,
    subject,
    CASE WHEN kind = 'bucket' THEN subject END AS bucket_id,
    'done' AS state,
    strftime('%Y-%m-%dT%H:%M:%fZ', version_ms / 1000.0, 'unixepoch') AS last_updated,
    NULL AS newer_last_updated,
    generation,
    attempts,
    strftime('%Y-%m-%dT%H:%M:%fZ', due_at_ms / 1000.0, 'unixepoch') AS due_at,
    leased_by,
    NULL AS lease_expires_at,
    strftime('%Y-%m-%dT%H:%M:%fZ', done_at_ms / 1000.0, 'unixepoch') AS done_at,
    last_error,
    strftime('%Y-%m-%dT%H:%M:%fZ', updated_at_ms / 1000.0, 'unixepoch') AS updated_at
FROM queue_done;

CREATE VIEW bucket_rotations AS
SELECT
    bucket_id,
    strftime('%Y-%m-%dT%H:%M:%fZ', last_updated_ms / 1000.0, 'unixepoch') AS last_updated,
    strftime('%Y-%m-%dT%H:%M:%fZ', observed_at_ms / 1000.0, 'unixepoch') AS observed_at
FROM rotation_log;
