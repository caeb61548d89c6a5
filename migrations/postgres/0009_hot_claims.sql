-- Fewer row writes per attempt (issue 14): the claim's update of a task row becomes HOT.
--
-- A claim sets status 0 -> 1, node, attempts, started_ms. Before, `status` was in the
-- predicate of every partial index on `tasks` and `node`/`task_type` were indexed by
-- `tasks_running`/`tasks_running_type`, so every claim wrote a new heap tuple plus an entry
-- in the primary key, `tasks_running` and `tasks_running_type`. Now no index covers a column
-- the claim changes, so its update is heap-only (HOT): one tuple on the same page, no index
-- entry at all.
--
-- * The claim index covers the unfinished tasks (QUEUED and PROCESSING: `finished_ms IS NULL`);
--   the claim filters `status = 0` on the row. Its cursors keep it from walking the running
--   ones again.
-- * Running tasks per lane (for `max_in_flight`) are counted in `run_lanes`, per node, task
--   type and side (side 0: claims add; side 1: finishes and requeues subtract), like
--   `org_nodes`; a reaped node's rows go with it.
-- * A node's own running tasks are looked up by seq (the attempts it may have lost), never
--   by node; a reaper walks the dead node's organizations' unfinished tasks.
CREATE TABLE IF NOT EXISTS run_lanes (
    node      UUID NOT NULL,
    task_type SMALLINT NOT NULL,
    side      SMALLINT NOT NULL,
    n         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node, task_type, side)
);

-- Upgrade in place: what runs now, counted once (the schema lock is held; nodes of the
-- previous version must be stopped before the upgrade).
INSERT INTO run_lanes(node, task_type, side, n)
SELECT node, task_type, 0, count(*)::int FROM tasks
 WHERE status = 1 AND node IS NOT NULL
 GROUP BY node, task_type
ON CONFLICT (node, task_type, side) DO UPDATE SET n = EXCLUDED.n;

DROP INDEX IF EXISTS tasks_running;
DROP INDEX IF EXISTS tasks_running_type;
DROP INDEX IF EXISTS tasks_ready;
CREATE INDEX IF NOT EXISTS tasks_open ON tasks (org, priority DESC, seq) WHERE finished_ms IS NULL;

-- Room for the claim's version of every row on its own page: a HOT update needs free space on
-- the row's page, and a claim takes the rows of a page together (FIFO), before pruning can free
-- anything. At 45% a page keeps room for one more version of each row it was filled with (the
-- claimed version is the same row plus `started_ms` and `node`). New pages only: no rewrite.
ALTER TABLE tasks SET (fillfactor = 45);
