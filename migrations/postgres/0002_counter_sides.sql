-- A node's claims and its finishes update different counter rows (side 0: claims add
-- PROCESSING tasks and reservations; side 1: finishes take them away and add charges), so a
-- claim never waits for the same node's finish transaction and vice versa. Every reader sums
-- the rows, so the figures are unchanged.
ALTER TABLE org_nodes ADD COLUMN IF NOT EXISTS side SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE org_nodes DROP CONSTRAINT IF EXISTS org_nodes_pkey;
ALTER TABLE org_nodes ADD PRIMARY KEY (org, node, side);

-- Task responses (a few KiB of JSON each) are compressed with lz4, several times cheaper in
-- CPU than the default pglz, where the server has it (PostgreSQL 14 and newer, built with lz4).
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 140000 THEN
        ALTER TABLE tasks ALTER COLUMN response SET COMPRESSION lz4;
        ALTER TABLE tasks ALTER COLUMN payload SET COMPRESSION lz4;
    END IF;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END
$$;

-- Claim cursors, one per priority: every QUEUED task of priority p has seq >= c<p>. A claim
-- starts its index walk there instead of at the start of the organization's range, so the
-- index entries of tasks it claimed before (which vacuum cannot remove while a long
-- transaction elsewhere holds its snapshot) are not walked again and again. Claims advance
-- them under the organization's row lock; a retry or a reaped task lowers them again.
-- New submissions never need to: their seqs are drawn under the same lock, so they are
-- above every task the organization has.
ALTER TABLE orgs
    ADD COLUMN IF NOT EXISTS c1 BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS c2 BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS c3 BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS c4 BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS c5 BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS c6 BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS c7 BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS c8 BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS c9 BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS c10 BIGINT NOT NULL DEFAULT 0;
