-- Webhooks: the per-organization signing secret and the delivery outbox.
-- A delivery row is written in the same transaction as its task's terminal status (the finish
-- transaction). Nodes claim due rows with FOR UPDATE SKIP LOCKED; a claim counts the attempt,
-- records the owner node and moves `next_at` one lease ahead, so a node that dies mid-delivery
-- leaves a row that becomes due again after the lease, and no two nodes send it at once.
-- state: 0 pending, 1 delivered, 2 given up. `created_ms` is the task's finish time (purge).

ALTER TABLE orgs ADD COLUMN IF NOT EXISTS webhook_secret TEXT;

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    seq          BIGINT PRIMARY KEY,
    org          BIGINT NOT NULL,
    id           UUID NOT NULL,
    url          TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      BIGINT NOT NULL,
    delivered_ms BIGINT,
    state        SMALLINT NOT NULL DEFAULT 0,
    owner        UUID,
    created_ms   BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 0;
CREATE INDEX IF NOT EXISTS webhook_deliveries_created ON webhook_deliveries (created_ms);
