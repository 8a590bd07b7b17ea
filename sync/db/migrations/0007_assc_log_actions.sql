-- xtmail.assc_log records what people do with Attach and Detach. Ties the association rules
-- make are recorded by the messages themselves (references, replies, addresses), so the
-- 'auto' action and its rule column were never written: drop them, so the table says what
-- it holds.
ALTER TABLE xtmail.assc_log DROP COLUMN IF EXISTS al_rule;
ALTER TABLE xtmail.assc_log DROP CONSTRAINT IF EXISTS assc_log_al_action_check;
ALTER TABLE xtmail.assc_log
    ADD CONSTRAINT assc_log_al_action_check CHECK (al_action IN ('attach', 'detach'));
