-- Indexes for the Attach dialog's searches (xtmail.sync.search). Indexes only: no data in
-- the xTuple or Connect tables changes, and every statement is harmless when re-run.

SELECT set_config('search_path', current_setting('search_path') || ', '
                  || quote_ident(n.nspname), true)
  FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace
 WHERE x.extname = 'pg_trgm';

-- Newest-first walks: the order the Email tab and the dialog list mail in
-- (msg_date DESC NULLS LAST, id DESC) as one key without NULLs, so a search can page
-- through it with a row comparison and read it index-only. On xtmail.msg, which holds the
-- exact time: Connect's eml_date is a date.
CREATE INDEX IF NOT EXISTS xtmail_msg_newest_idx
    ON xtmail.msg ((coalesce(msg_date, '-infinity'::timestamptz)), msg_eml_id)
    INCLUDE (msg_date);

-- Sorting a candidate set by date without visiting the msg heap.
CREATE INDEX IF NOT EXISTS xtmail_msg_id_date_idx
    ON xtmail.msg (msg_eml_id) INCLUDE (msg_date);

-- "This contact's mail": exact, case-insensitive address lookups (the trigram index from
-- 0003 serves substrings, and is far slower for equality).
CREATE INDEX IF NOT EXISTS xtmail_emladdr_addr_lower_idx
    ON xtbatch.emladdr (lower(emladdr_addr));

-- Contact chooser: substrings of name, number and any address.
CREATE INDEX IF NOT EXISTS xtmail_cntct_name_trgm_idx
    ON public.cntct USING gin (
        lower(coalesce(cntct_first_name, '') || ' ' || coalesce(cntct_last_name, '') || ' '
              || coalesce(cntct_name, '')) gin_trgm_ops);
CREATE INDEX IF NOT EXISTS xtmail_cntct_number_trgm_idx
    ON public.cntct USING gin (lower(cntct_number) gin_trgm_ops);
CREATE INDEX IF NOT EXISTS xtmail_cntct_email_trgm_idx
    ON public.cntct USING gin (lower(cntct_email) gin_trgm_ops);
CREATE INDEX IF NOT EXISTS xtmail_cntcteml_email_trgm_idx
    ON public.cntcteml USING gin (lower(cntcteml_email) gin_trgm_ops);
