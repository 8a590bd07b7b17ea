-- Mail follows xTuple's merges and conversions (docs/xtuple.md, "Merges and conversions").
--
-- 1. No xtmail constraint may make xTuple's own statements fail. cntctmerge() and
--    merge2crmaccts() re-point ties with plain UPDATEs (when Connect's batch manager is on);
--    where a message is tied to both records a unique index over (message, type, record)
--    makes them fail. The unique index goes; a plain one over the same columns serves the
--    lookups by message and the writer's NOT EXISTS checks, which keep new ties single.
DROP INDEX IF EXISTS xtbatch.xtmail_emlassc_unique_idx;
CREATE INDEX IF NOT EXISTS xtmail_emlassc_tie_idx
    ON xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id);
DROP INDEX IF EXISTS xtbatch.xtmail_emlassc_eml_idx;

-- 2. Contacts. xTuple's cntctmerge() moves every row that refers to the merged contact to the
--    surviving one, its e-mail address rows (cntcteml) included, and then deletes or
--    deactivates the merged contact. It re-points mail ties only when Connect's batch manager
--    is enabled. xtmail ties a message to the contacts whose addresses it carries, so it
--    follows the addresses: when an address row passes to another contact, the mail tied to
--    the old owner that carries the address is tied to the new owner too.
CREATE OR REPLACE FUNCTION xtmail.follow_moved_address() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id)
    SELECT DISTINCT a.emlassc_eml_id, 'T', NEW.cntcteml_cntct_id
      FROM xtbatch.emlassc a
      JOIN xtbatch.emladdr d ON d.emladdr_eml_id = a.emlassc_eml_id
     WHERE a.emlassc_type = 'T' AND a.emlassc_assc_id = OLD.cntcteml_cntct_id
       AND lower(d.emladdr_addr) = lower(NEW.cntcteml_email)
       AND NOT EXISTS (SELECT 1 FROM xtbatch.emlassc x
                        WHERE x.emlassc_eml_id = a.emlassc_eml_id AND x.emlassc_type = 'T'
                          AND x.emlassc_assc_id = NEW.cntcteml_cntct_id);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS xtmail_follow_moved_address ON public.cntcteml;
CREATE TRIGGER xtmail_follow_moved_address
    AFTER UPDATE OF cntcteml_cntct_id ON public.cntcteml
    FOR EACH ROW WHEN (OLD.cntcteml_cntct_id IS DISTINCT FROM NEW.cntcteml_cntct_id)
    EXECUTE FUNCTION xtmail.follow_moved_address();

--    A deleted contact's ties would point at nothing. Its mail is tied to the contacts that
--    now hold one of the message's addresses (after a merge: the survivor), and its own ties
--    go. The messages keep their addresses.
CREATE OR REPLACE FUNCTION xtmail.forget_contact() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id)
    SELECT DISTINCT a.emlassc_eml_id, 'T', e.cntcteml_cntct_id
      FROM xtbatch.emlassc a
      JOIN xtbatch.emladdr d ON d.emladdr_eml_id = a.emlassc_eml_id
      JOIN public.cntcteml e ON lower(e.cntcteml_email) = lower(d.emladdr_addr)
     WHERE a.emlassc_type = 'T' AND a.emlassc_assc_id = OLD.cntct_id
       AND e.cntcteml_cntct_id <> OLD.cntct_id
       AND NOT EXISTS (SELECT 1 FROM xtbatch.emlassc x
                        WHERE x.emlassc_eml_id = a.emlassc_eml_id AND x.emlassc_type = 'T'
                          AND x.emlassc_assc_id = e.cntcteml_cntct_id);
    DELETE FROM xtbatch.emlassc WHERE emlassc_type = 'T' AND emlassc_assc_id = OLD.cntct_id;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS xtmail_forget_contact ON public.cntct;
CREATE TRIGGER xtmail_forget_contact
    AFTER DELETE ON public.cntct
    FOR EACH ROW EXECUTE FUNCTION xtmail.forget_contact();

-- 3. CRM accounts. merge2crmaccts() merges the accounts a user selected (a crmacctsel row:
--    source, target), moves what refers to the source to the target (mail ties only when
--    Connect's batch manager is enabled), then deletes the source (purge) or deactivates it
--    and records an undo marker, and finally deletes the selection row. That deletion is
--    where xtmail follows: the source's CRM account ties pass to the target when the merge
--    happened (the source is gone, or the undo marker names the target). A selection
--    cancelled without merging changes nothing.
CREATE OR REPLACE FUNCTION xtmail.follow_crmacct_merge() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    source integer := OLD.crmacctsel_src_crmacct_id;
    target integer := OLD.crmacctsel_dest_crmacct_id;
    merged boolean;
BEGIN
    IF source IS NULL OR target IS NULL OR source = target THEN
        RETURN NULL;
    END IF;
    merged := NOT EXISTS (SELECT 1 FROM public.crmacct WHERE crmacct_id = source);
    IF NOT merged AND to_regclass('public.mrgundo') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM public.mrgundo
                                 WHERE mrgundo_table = ''crmacct'' AND mrgundo_pkey_id = $1
                                   AND mrgundo_col IS NULL AND mrgundo_base_id = $2)'
           INTO merged USING source, target;
    END IF;
    IF NOT merged THEN
        RETURN NULL;
    END IF;
    INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id)
    SELECT DISTINCT a.emlassc_eml_id, 'CRMA', target
      FROM xtbatch.emlassc a
     WHERE a.emlassc_type = 'CRMA' AND a.emlassc_assc_id = source
       AND NOT EXISTS (SELECT 1 FROM xtbatch.emlassc x
                        WHERE x.emlassc_eml_id = a.emlassc_eml_id
                          AND x.emlassc_type = 'CRMA' AND x.emlassc_assc_id = target);
    DELETE FROM xtbatch.emlassc WHERE emlassc_type = 'CRMA' AND emlassc_assc_id = source;
    RETURN NULL;
END
$$;

DO $$
BEGIN
    -- xTuple's merge selection table; an xTuple without it (or the demo subset) merges no
    -- CRM accounts this way.
    IF to_regclass('public.crmacctsel') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS xtmail_follow_crmacct_merge ON public.crmacctsel;
        CREATE TRIGGER xtmail_follow_crmacct_merge
            AFTER DELETE ON public.crmacctsel
            FOR EACH ROW EXECUTE FUNCTION xtmail.follow_crmacct_merge();
    END IF;
END
$$;

-- 4. Quotes. convertquote() makes the sales order with cohead_quote_number set to the quote's
--    number; it moves the quote's mail ties to the order only when Connect's batch manager is
--    enabled (and may delete the quote afterwards). Otherwise the order gets copies of the
--    quote's ties here, the quote keeping its own. The column is read through the row's JSON
--    form: an xTuple without it (or the demo subset) converts nothing and needs no trigger
--    of another shape.
CREATE OR REPLACE FUNCTION xtmail.follow_converted_quote() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    quote_number text := to_jsonb(NEW) ->> 'cohead_quote_number';
    xtuple_moves boolean := false;
BEGIN
    IF quote_number IS NULL OR to_regclass('public.quhead') IS NULL THEN
        RETURN NULL;
    END IF;
    IF to_regprocedure('public.fetchmetricbool(text)') IS NOT NULL THEN
        EXECUTE 'SELECT coalesce(fetchMetricBool(''EnableBatchManager''), false)'
           INTO xtuple_moves;
    END IF;
    IF xtuple_moves THEN
        RETURN NULL;  -- convertquote() moves them itself, right after this insert
    END IF;
    INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id)
    SELECT DISTINCT a.emlassc_eml_id, 'S', NEW.cohead_id
      FROM public.quhead q
      JOIN xtbatch.emlassc a ON a.emlassc_type = 'Q' AND a.emlassc_assc_id = q.quhead_id
     WHERE q.quhead_number = quote_number
       AND NOT EXISTS (SELECT 1 FROM xtbatch.emlassc x
                        WHERE x.emlassc_eml_id = a.emlassc_eml_id AND x.emlassc_type = 'S'
                          AND x.emlassc_assc_id = NEW.cohead_id);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS xtmail_follow_converted_quote ON public.cohead;
CREATE TRIGGER xtmail_follow_converted_quote
    AFTER INSERT ON public.cohead
    FOR EACH ROW EXECUTE FUNCTION xtmail.follow_converted_quote();

-- A later mail carrying the quote's reference finds the order through its quote number.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute
                WHERE attrelid = 'public.cohead'::regclass
                  AND attname = 'cohead_quote_number' AND NOT attisdropped) THEN
        CREATE INDEX IF NOT EXISTS xtmail_cohead_quote_number_idx
            ON public.cohead (upper(cohead_quote_number));
    END IF;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'xtrole') THEN
        GRANT EXECUTE ON FUNCTION xtmail.follow_moved_address(), xtmail.forget_contact(),
                                  xtmail.follow_crmacct_merge(),
                                  xtmail.follow_converted_quote() TO xtrole;
    END IF;
END
$$;
