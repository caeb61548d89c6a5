-- cloro cluster schema, version 1 (PostgreSQL 13+).
-- Times are epoch milliseconds (BIGINT), as in the embedded store. Nodes compare leases with
-- the database's clock, never their own.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- An organization and its live queue counters: q1..q10 are QUEUED tasks per priority (waiting
-- retries included). Every transaction that moves a task into or out of QUEUED updates them, so
-- the status endpoint and the queue limit never count rows. What running tasks use is counted
-- per node in `org_nodes`.
CREATE TABLE IF NOT EXISTS orgs (
    id              BIGSERIAL PRIMARY KEY,
    public_id       TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    plan            TEXT NOT NULL,
    concurrency     INTEGER NOT NULL,
    credits         BIGINT NOT NULL,
    per_cycle       BIGINT,
    cycle_resets_ms BIGINT,
    queue_limit     BIGINT NOT NULL,
    created_ms      BIGINT NOT NULL,
    q1  BIGINT NOT NULL DEFAULT 0, q2 BIGINT NOT NULL DEFAULT 0, q3 BIGINT NOT NULL DEFAULT 0,
    q4  BIGINT NOT NULL DEFAULT 0, q5 BIGINT NOT NULL DEFAULT 0, q6 BIGINT NOT NULL DEFAULT 0,
    q7  BIGINT NOT NULL DEFAULT 0, q8 BIGINT NOT NULL DEFAULT 0, q9 BIGINT NOT NULL DEFAULT 0,
    q10 BIGINT NOT NULL DEFAULT 0,
    -- Turn at which a claim last served it: claims serve the smallest first (fairness).
    served_at       BIGINT NOT NULL DEFAULT 0
);

-- Per organization and node: PROCESSING tasks, the credits they reserved, and the credits
-- charged since the last fold into orgs.credits. A node's finishes touch only its own rows, so
-- they never wait for claims or finishes of other nodes; a claim sums the rows of the
-- organization it holds locked. The balance is orgs.credits - sum(charged).
CREATE TABLE IF NOT EXISTS org_nodes (
    org        BIGINT NOT NULL,
    node       UUID NOT NULL,
    processing INTEGER NOT NULL DEFAULT 0,
    reserved   BIGINT NOT NULL DEFAULT 0,
    charged    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (org, node)
);

CREATE SEQUENCE IF NOT EXISTS serve_turn;

CREATE TABLE IF NOT EXISTS api_keys (
    key_id     TEXT PRIMARY KEY,
    org        BIGINT NOT NULL REFERENCES orgs(id),
    hash       BYTEA NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);

-- Every serving node, with the lease its heartbeat keeps alive.
CREATE TABLE IF NOT EXISTS nodes (
    id             UUID PRIMARY KEY,
    started_ms     BIGINT NOT NULL,
    alive_until_ms BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS tasks (
    seq               BIGINT PRIMARY KEY,
    id                UUID NOT NULL,
    org               BIGINT NOT NULL,
    task_type         SMALLINT NOT NULL,
    priority          SMALLINT NOT NULL,
    status            SMALLINT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    credits_to_charge BIGINT NOT NULL,
    credits_charged   BIGINT,
    idem_key          TEXT,
    webhook_url       TEXT,
    payload           TEXT NOT NULL,
    response          TEXT,
    created_ms        BIGINT NOT NULL,
    started_ms        BIGINT,
    finished_ms       BIGINT,
    run_after_ms      BIGINT,
    -- The node running it (PROCESSING only).
    node              UUID
) WITH (
    fillfactor = 80,
    -- A queue churns: vacuum and analyze it early and without throttling, so claims do not
    -- walk dead index entries and the planner knows the table's size.
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);

CREATE SEQUENCE IF NOT EXISTS tasks_seq;

-- One task per idempotency key per organization while the record exists.
CREATE UNIQUE INDEX IF NOT EXISTS tasks_idem ON tasks (org, idem_key) WHERE idem_key IS NOT NULL;
-- The claim index: queued tasks of an organization, best first.
CREATE INDEX IF NOT EXISTS tasks_ready ON tasks (org, priority DESC, seq) WHERE status = 0;
-- Running tasks by node, for lease expiry.
CREATE INDEX IF NOT EXISTS tasks_running ON tasks (node) WHERE status = 1;
-- Purge of finished tasks.
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_ms) WHERE finished_ms IS NOT NULL;
