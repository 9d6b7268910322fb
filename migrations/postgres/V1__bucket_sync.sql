-- PostgreSQL schema version 1: the sync state, the rotation log, each
-- bucket's latest rotation and the re-mapping queue.
--
-- The tables mirror the SQLite schema's (migrations/*.sql): times are whole
-- milliseconds since the Unix epoch in `_ms` columns, and the views at the
-- end are the same contract with the same columns and the same text, so a
-- batch job's SQL reads both backends alike. Keys are `COLLATE "C"`: they
-- sort bytewise, as SQLite sorts them, whatever the database's locale.

-- ISO-8601 UTC with milliseconds, as the SQLite views print times.
CREATE FUNCTION uid2_iso_time(ms bigint) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN to_char((timestamptz 'epoch' + ms * interval '1 millisecond') AT TIME ZONE 'UTC',
               'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');

-- Facts about the database itself: `created_by` names the command that
-- created it.
CREATE TABLE database_meta (
    key    text COLLATE "C" PRIMARY KEY,
    value  text NOT NULL
);

-- What the poller knows about its own progress: one row, id = 1.
CREATE TABLE sync_state (
    id                  integer PRIMARY KEY CHECK (id = 1),
    high_water_mark_ms  bigint,
    last_attempt_at_ms  bigint,
    last_success_at_ms  bigint,
    last_error_at_ms    bigint,
    last_error_kind     text,
    last_error_message  text,
    last_received       bigint,
    last_new_rotations  bigint,
    last_newly_queued   bigint
);

INSERT INTO sync_state (id) VALUES (1);

-- Every distinct rotation ever reported, never pruned, so purging done
-- queue entries never makes an old rotation look new again.
CREATE TABLE rotation_log (
    bucket_id        text COLLATE "C" NOT NULL,
    last_updated_ms  bigint NOT NULL,
    observed_at_ms   bigint NOT NULL,
    PRIMARY KEY (bucket_id, last_updated_ms)
);

-- The documented "rotations since I last looked" read is a range of this.
CREATE INDEX rotation_log_observed ON rotation_log (observed_at_ms);

CREATE FUNCTION rotation_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rotation_log is append-only';
END;
$$;

CREATE TRIGGER rotation_log_append_only BEFORE UPDATE OR DELETE ON rotation_log
FOR EACH STATEMENT EXECUTE FUNCTION rotation_log_append_only();

-- Each bucket's latest rotation.
CREATE TABLE bucket (
    bucket_id        text COLLATE "C" PRIMARY KEY,
    last_updated_ms  bigint NOT NULL
);

-- The re-mapping queue: one entry per subject, done entries included. The
-- columns mean what they mean in the SQLite schema (0001_initial.sql).
CREATE TABLE queue_item (
    kind                 text COLLATE "C" NOT NULL,
    subject              text COLLATE "C" NOT NULL,
    state                text NOT NULL
        CHECK (state IN ('pending', 'leased', 'done', 'dead')),
    version_ms           bigint NOT NULL,
    generation           bigint NOT NULL,
    attempts             bigint NOT NULL,
    due_at_ms            bigint NOT NULL,
    updated_at_ms        bigint NOT NULL,
    next_version_ms      bigint,
    next_due_at_ms       bigint,
    lease_id             text COLLATE "C",
    leased_by            text,
    leased_at_ms         bigint,
    lease_expires_at_ms  bigint,
    done_at_ms           bigint,
    last_error           text,
    PRIMARY KEY (kind, subject)
);

CREATE INDEX queue_item_pending ON queue_item (due_at_ms) WHERE state = 'pending';
CREATE INDEX queue_item_done ON queue_item (done_at_ms) WHERE state = 'done';
CREATE INDEX queue_item_dead ON queue_item (updated_at_ms) WHERE state = 'dead';
-- Acks and fails find a lease by id; claims look for expired ones.
CREATE UNIQUE INDEX queue_item_lease ON queue_item (lease_id) WHERE state = 'leased';
CREATE INDEX queue_item_lease_expiry ON queue_item (lease_expires_at_ms) WHERE state = 'leased';

-- The queue's settings, as the daemon's `[queue]` configuration gives
-- them: every consumer uses these (see 0006_queue_settings.sql).
CREATE TABLE queue_settings (
    id                    integer PRIMARY KEY CHECK (id = 1),
    max_attempts          bigint NOT NULL,
    retry_backoff_ms      bigint NOT NULL,
    max_retry_backoff_ms  bigint NOT NULL
);

-- ---- the SQL contract (README, "Reading the database directly") ---------

CREATE VIEW sync_status AS
SELECT
    uid2_iso_time(high_water_mark_ms) AS high_water_mark,
    uid2_iso_time(last_attempt_at_ms) AS last_attempt_at,
    uid2_iso_time(last_success_at_ms) AS last_success_at,
    uid2_iso_time(last_error_at_ms) AS last_error_at,
    last_error_kind,
    last_error_message,
    last_received,
    last_new_rotations,
    last_newly_queued
FROM sync_state;

CREATE VIEW buckets AS
SELECT bucket_id, uid2_iso_time(last_updated_ms) AS last_updated
FROM bucket;

CREATE VIEW bucket_rotations AS
SELECT
    bucket_id,
    uid2_iso_time(last_updated_ms) AS last_updated,
    uid2_iso_time(observed_at_ms) AS observed_at
FROM rotation_log;

CREATE VIEW remap_queue AS
SELECT
    kind,
    subject,
    CASE WHEN kind = 'bucket' THEN subject END AS bucket_id,
    state,
    uid2_iso_time(version_ms) AS last_updated,
    uid2_iso_time(next_version_ms) AS newer_last_updated,
    generation,
    attempts,
    uid2_iso_time(due_at_ms) AS due_at,
    leased_by,
    uid2_iso_time(lease_expires_at_ms) AS lease_expires_at,
    uid2_iso_time(done_at_ms) AS done_at,
    last_error,
    uid2_iso_time(updated_at_ms) AS updated_at
FROM queue_item;
