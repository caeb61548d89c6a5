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
