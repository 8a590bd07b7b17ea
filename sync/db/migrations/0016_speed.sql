-- Speed for large mail stores (issue #20). Indexes and statistics only: no data in the
-- xTuple or Connect tables changes, and every statement is harmless when re-run.

-- The Email tab of a document holding much of all mail walks the mail newest first
-- (sync/db/newest.py); mail without an exact time of xtmail's sorts by Connect's day, read
-- from this index down to the day the walk reached.
CREATE INDEX IF NOT EXISTS xtmail_eml_date_idx ON xtbatch.eml (eml_date, eml_id);
