-- Upstream usage per task (issue 10): the sum over its attempts of what the upstream reported
-- (input/output tokens, searches), as a JSON object `{"inputTokens"?, "outputTokens"?,
-- "searches"?}`; NULL while no attempt reported any (the simulator never does). TEXT like
-- `response`; each finish adds its attempt's usage in SQL (see src/store/postgres/finisher.rs).

ALTER TABLE tasks ADD COLUMN IF NOT EXISTS usage TEXT;
