-- Schema version 4.
--
-- The re-map worker's own state, and the indexes its due sets read.

-- One row, id = 1: where the worker stands, like sync_state for the poller.
CREATE TABLE mapping_state (
    id                      INTEGER PRIMARY KEY CHECK (id = 1),
    -- The API of the last pass: 'v2' or 'v3'.
    api                     TEXT CHECK (api IN ('v2', 'v3')),
    -- v2: every rotation observed at or before this instant has been
    -- looked at by a complete pass. Only narrows what a pass reads: an
    -- identity is due when its bucket rotated after it was mapped,
    -- whatever this says.
    rotations_checked_ms    INTEGER,
    last_started_at_ms      INTEGER,
    last_success_at_ms      INTEGER,
    last_error_at_ms        INTEGER,
    last_error_kind         TEXT,
    last_error_message      TEXT,
    -- Counts of the last pass that finished, complete or not.
    last_finished_at_ms     INTEGER,
    last_sent               INTEGER,
    last_changed            INTEGER,
    last_unchanged          INTEGER,
    last_optout             INTEGER,
    last_invalid            INTEGER,
    last_requests           INTEGER
) STRICT;

INSERT INTO mapping_state (id) VALUES (1);

-- After a switch of API, identities mapped with the other one lack what
-- this one needs to know when they are due (a refresh time for v3, a
-- bucket for v2): each is due once. A v2 mapping sets a bucket and no
-- refresh time, a v3 mapping the reverse, so those sets are read from the
-- bucket and refresh indexes, and the index of the API in use is the only
-- one that grows. The bucket index is keyed (bucket_id, id), the order in
-- which the v2 sets are read; it was empty until now, as nothing mapped.
DROP INDEX identity_bucket;
CREATE INDEX identity_bucket ON identity (bucket_id) WHERE bucket_id IS NOT NULL;

-- Every change record is also an entry in this index, kept only for
-- pruning; pruning reads the feed from its oldest record instead.
DROP INDEX identity_change_time;

-- ---- the SQL contract (docs/sql-contract.md) ----------------------------

CREATE VIEW mapping_status AS
SELECT
    api,
    strftime('%Y-%m-%dT%H:%M:%fZ', last_started_at_ms / 1000.0, 'unixepoch') AS last_started_at,
    strftime('%Y-%m-%dT%H:%M:%fZ', last_finished_at_ms / 1000.0, 'unixepoch') AS last_finished_at,
    strftime('%Y-%m-%dT%H:%M:%fZ', last_success_at_ms / 1000.0, 'unixepoch') AS last_success_at,
    strftime('%Y-%m-%dT%H:%M:%fZ', last_error_at_ms / 1000.0, 'unixepoch') AS last_error_at,
    last_error_kind,
    last_error_message,
    last_sent,
    last_changed,
    last_unchanged,
    last_optout,
    last_invalid,
    last_requests
FROM mapping_state;
