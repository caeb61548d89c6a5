-- Sync calls (issue 11): `POST /v1/monitor/*` holds one of its organization's concurrency
-- slots for its whole duration. The slots and reservations of a node's calls in flight are
-- its side-2 rows of `org_nodes` (no schema change: every reader already sums the sides, so
-- claims count them as running); `processingTasks` and the totals read sides 0 and 1 only.
--
-- A lane's `max_in_flight` counts running tasks plus sync attempts in flight: the attempts of
-- each node per task type, kept here, deleted with the node's counter rows when it leaves or
-- is reaped (its places come back with its lease).
CREATE TABLE IF NOT EXISTS sync_lanes (
    node      UUID NOT NULL,
    task_type SMALLINT NOT NULL,
    n         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node, task_type)
);
