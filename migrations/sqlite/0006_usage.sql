-- Upstream usage per task (issue 10): the sum over its attempts of what the upstream reported
-- (input/output tokens, searches), as a JSON object `{"inputTokens"?, "outputTokens"?,
-- "searches"?}`; NULL while no attempt reported any (the simulator never does). Kept in the
-- row, not in the result log: it changes with each attempt (retries and requeues included),
-- while the log holds only the final response, written once.

ALTER TABLE tasks ADD COLUMN usage TEXT;
