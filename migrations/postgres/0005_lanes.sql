-- Engine lanes (issue 10).
-- Each lane's start rate: its GCRA theoretical arrival time in epoch ms (see src/store/lanes.rs).
-- One row per engine name, created on first use; one UPDATE per take.
CREATE TABLE IF NOT EXISTS lane_rate (
    name   TEXT PRIMARY KEY,
    tat_ms BIGINT NOT NULL DEFAULT 0
);
-- A claim with a lane under `max_in_flight` counts the lane's PROCESSING tasks (a few
-- thousand at most) under the lane's advisory lock: by task type, among running tasks only.
CREATE INDEX IF NOT EXISTS tasks_running_type ON tasks (task_type) WHERE status = 1;
