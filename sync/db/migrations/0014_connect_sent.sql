-- What xTuple Connect's batch manager sent, recorded as sent mail (docs/outbox.md).
--
-- Where Connect is installed, its own xtbatch.submitEmailToBatch queues the ERP's mail in
-- xtbatch.batch and its batch manager (a program of its own) sends it and sets
-- batch_completed, with a blank batch_exitstatus on success. `xtmail serve` records each
-- such row once, as mail the ERP sent (reconstructed from the row: the batch manager's own
-- Message-ID is not known). This ledger keeps it exactly once: the row of a batch is
-- inserted in the same transaction as the record, and its primary key refuses a second.
-- Failed rows get no ledger row, so a row completed successfully later is recorded then.

CREATE TABLE IF NOT EXISTS xtmail.connect_sent (
    cs_batch_id     integer PRIMARY KEY,  -- xtbatch.batch.batch_id (no foreign key: Connect
                                          -- purges old batch rows; the record stays)
    cs_eml_id       integer,              -- the record; NULL while recording, or when a
                                          -- removal or a blocked sender keeps it out
    cs_completed    timestamptz,          -- batch_completed as it was read
    cs_recorded     timestamptz NOT NULL DEFAULT now(),
    cs_recorded_by  text NOT NULL DEFAULT current_user
);

-- Ordinary users may see which batch rows were recorded (ids only), not write the ledger: a
-- row they inserted would keep a sent mail from being recorded. The service role is granted
-- it by the administrator (docs/serve.md). 0008's default privileges granted more.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'xtrole') THEN
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON xtmail.connect_sent FROM xtrole;
    END IF;
END
$$;

-- Whether Connect is in charge of the ERP's mail: its batch table exists and the
-- submitEmailToBatch xTuple calls is Connect's, not the one of 0011 that queues in
-- xtmail.outbox (a Connect installed after xtmail replaces ours, same signature).
CREATE OR REPLACE FUNCTION xtmail.connect_in_charge()
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT to_regclass('xtbatch.batch') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname = 'xtbatch' AND p.proname = 'submitemailtobatch'
                      AND p.prosrc NOT LIKE '%xtmail.queue_mail%')
$$;
