-- Requests per second per API key per endpoint of an organization; NULL: the server's default
-- (`serve --rate-limit`, 1,000).
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS rate_limit BIGINT;
