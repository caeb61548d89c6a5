-- Webhook delivery state moves into the task row. A finish writes it in the same row update as
-- the terminal status (no second table, no second index, no extra pages in the write-ahead log
-- of every finish), and a delivery is purged with its task.
-- wh_state: NULL no delivery (no webhook.url, or not finished yet); 0 pending; 1 delivered;
-- 2 given up. wh_attempts: finished attempts (NULL = 0). wh_next_at: when the next attempt is
-- due (NULL = the task's finish time). wh_delivered_ms: when a 2xx came back.
-- The writer keeps the pending ones in an in-memory due index, rebuilt from this at start-up.

ALTER TABLE tasks ADD COLUMN wh_state INTEGER;
ALTER TABLE tasks ADD COLUMN wh_attempts INTEGER;
ALTER TABLE tasks ADD COLUMN wh_next_at INTEGER;
ALTER TABLE tasks ADD COLUMN wh_delivered_ms INTEGER;

UPDATE tasks SET wh_state = d.state, wh_attempts = d.attempts, wh_next_at = d.next_at,
                 wh_delivered_ms = d.delivered_ms
FROM webhook_deliveries d WHERE d.seq = tasks.seq;

DROP TABLE webhook_deliveries;
