-- cloro embedded schema, version 1.
-- Times are epoch milliseconds. The tasks table is a rowid table keyed by `seq` (creation
-- order); the public UUID embeds `seq`, so lookups need no second index. `status` is not
-- indexed: the scheduler keeps the ready set in memory and only writes state changes.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS orgs (
    id              INTEGER PRIMARY KEY,
    public_id       TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    plan            TEXT NOT NULL,
    concurrency     INTEGER NOT NULL,
    credits         INTEGER NOT NULL,
    per_cycle       INTEGER,
    cycle_resets_ms INTEGER,
    queue_limit     INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    key_id     TEXT PRIMARY KEY,
    org        INTEGER NOT NULL,
    hash       BLOB NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);

CREATE TABLE IF NOT EXISTS tasks (
    seq               INTEGER PRIMARY KEY,
    id                BLOB NOT NULL,
    org               INTEGER NOT NULL,
    task_type         INTEGER NOT NULL,
    priority          INTEGER NOT NULL,
    status            INTEGER NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    credits_to_charge INTEGER NOT NULL,
    credits_charged   INTEGER,
    idem_key          TEXT,
    webhook_url       TEXT,
    payload           TEXT NOT NULL,
    -- Where the response of a finished task is in the result log (segment, offset, length).
    res_seg           INTEGER,
    res_off           INTEGER,
    res_len           INTEGER,
    created_ms        INTEGER NOT NULL,
    started_ms        INTEGER,
    finished_ms       INTEGER,
    run_after_ms      INTEGER
);

-- One task per idempotency key per organization while the record exists.
CREATE UNIQUE INDEX IF NOT EXISTS tasks_idem ON tasks (org, idem_key) WHERE idem_key IS NOT NULL;
-- Purge of finished tasks walks this (appended in time order, so cheap to maintain).
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_ms) WHERE finished_ms IS NOT NULL;
