-- Engine health (issue 10): each configured engine's last known health, written by the servers
-- when it changes (and once at start-up), read by `cloro engines list`. One row per engine name;
-- the latest writer wins. `health` is `ok`, `rate-limited` or `failing`; `message` is the
-- upstream's (already redacted) error; `node` is the writing cluster node's id, if any.
CREATE TABLE IF NOT EXISTS engine_health (
    name       TEXT PRIMARY KEY,
    health     TEXT NOT NULL,
    message    TEXT,
    since_ms   BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    node       TEXT
);
