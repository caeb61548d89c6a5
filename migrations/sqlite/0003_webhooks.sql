-- Webhooks: the per-organization signing secret and the delivery outbox.
-- A delivery row is written in the same transaction as its task's terminal status; the writer
-- keeps the pending ones (state 0) in an in-memory due index, rebuilt from this table at start-up.
-- `seq` is the task's seq (one delivery per task). `attempts` counts finished attempts.
-- state: 0 pending, 1 delivered, 2 given up. `created_ms` is the task's finish time (purge).

ALTER TABLE orgs ADD COLUMN webhook_secret TEXT;

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    seq          INTEGER PRIMARY KEY,
    org          INTEGER NOT NULL,
    url          TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,
    delivered_ms INTEGER,
    state        INTEGER NOT NULL DEFAULT 0,
    created_ms   INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS webhook_deliveries_created ON webhook_deliveries (created_ms);
