-- Webhook URLs that recur are stored once. A task's URL is either in `tasks.webhook_url` (the
-- first time the writer sees it lately) or, once it recurs, in `webhook_urls` and referenced by
-- `tasks.webhook_id`: most organizations send every task to the same endpoint, and the URL was
-- a large part of a small task's row, so of every page the writer commits (docs/PERFORMANCE.md).
-- Rows no task references any more are deleted by the purge, at most once an hour.

CREATE TABLE IF NOT EXISTS webhook_urls (
    id  INTEGER PRIMARY KEY,
    url TEXT NOT NULL UNIQUE
);

ALTER TABLE tasks ADD COLUMN webhook_id INTEGER;
