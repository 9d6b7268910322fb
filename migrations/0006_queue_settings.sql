-- Schema version 6.
--
-- The queue's settings live with the queue: the daemon records its
-- `[queue]` configuration here each time it starts, and every consumer
-- judges attempts and retry waits by these values, whatever its own
-- configuration says (consumers on other machines may have none). No row:
-- no daemon has recorded any yet, and a consumer uses its own.
CREATE TABLE queue_settings (
    id                    INTEGER PRIMARY KEY CHECK (id = 1),
    max_attempts          INTEGER NOT NULL,
    retry_backoff_ms      INTEGER NOT NULL,
    max_retry_backoff_ms  INTEGER NOT NULL
) STRICT;
