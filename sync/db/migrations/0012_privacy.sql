-- Who sees which mail, enforced by the database; removing what should never have been
-- imported; senders whose mail is never imported (docs/privacy.md).
--
-- Model. Each place a message was found (xtmail.location) follows the visibility rule of its
-- folder, else of its account, else the company default: shared. A message is private when
-- it has at least one location and every one of them is private; then only its readers see
-- it (whoever imported one of those copies, and the owner a rule names) and holders of the
-- ViewAllEmail privilege. Everyone else sees nothing of it: not its row, addresses, ties,
-- search words or locations. Mail with no location (stored by Connect, sent by the ERP) is
-- shared. Row-level security on the mail tables applies this to every query of a role in
-- xtrole; the tables' owner (init-db, Connect's batch manager) is not subject to it.

-- 1. Who imported each copy. Copies already stored: whoever imported the message.
ALTER TABLE xtmail.location ADD COLUMN IF NOT EXISTS loc_imported_by text;
UPDATE xtmail.location l SET loc_imported_by = m.msg_imported_by
  FROM xtmail.msg m WHERE m.msg_eml_id = l.loc_eml_id AND l.loc_imported_by IS NULL;
UPDATE xtmail.location SET loc_imported_by = current_user WHERE loc_imported_by IS NULL;
ALTER TABLE xtmail.location ALTER COLUMN loc_imported_by SET DEFAULT current_user;
ALTER TABLE xtmail.location ALTER COLUMN loc_imported_by SET NOT NULL;
CREATE INDEX IF NOT EXISTS location_folder_idx ON xtmail.location (loc_account, loc_mailbox);

-- 2. The rules: one per account (vr_mailbox '') or folder; a folder's rule wins over its
--    account's. vr_owner: who reads the private mail besides whoever imported it (a headless
--    service imports for people; the rule names the person).
CREATE TABLE IF NOT EXISTS xtmail.visibility_rule (
    vr_account  text NOT NULL,
    vr_mailbox  text NOT NULL DEFAULT '',
    vr_private  boolean NOT NULL,
    vr_owner    text,
    vr_set_by   text NOT NULL DEFAULT session_user,
    vr_set_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vr_account, vr_mailbox)
);

-- Derived from locations and rules, kept by xtmail.refresh_private(): one row per reader of
-- each private message. A message without rows here is shared.
CREATE TABLE IF NOT EXISTS xtmail.private_reader (
    pr_eml_id  integer NOT NULL REFERENCES xtbatch.eml (eml_id) ON DELETE CASCADE,
    pr_user    text NOT NULL,
    PRIMARY KEY (pr_eml_id, pr_user)
);

-- Who removed what and when, by identity hash (never content). rm_keep_out: later imports
-- of the same message skip it until someone allows it again.
CREATE TABLE IF NOT EXISTS xtmail.removed (
    rm_id          bigserial PRIMARY KEY,
    rm_hash        bytea NOT NULL,
    rm_eml_id      integer NOT NULL,
    rm_account     text,
    rm_mailbox     text,
    rm_reason      text NOT NULL DEFAULT '',
    rm_by          text NOT NULL DEFAULT session_user,
    rm_at          timestamptz NOT NULL DEFAULT now(),
    rm_keep_out    boolean NOT NULL DEFAULT true,
    rm_allowed_by  text,
    rm_allowed_at  timestamptz
);
CREATE INDEX IF NOT EXISTS removed_kept_out_idx ON xtmail.removed (rm_hash) WHERE rm_keep_out;
CREATE INDEX IF NOT EXISTS removed_eml_idx ON xtmail.removed (rm_eml_id);

-- Senders (an address, or a domain with its subdomains) whose mail is never imported;
-- bs_any_party: also mail to or copied to them.
CREATE TABLE IF NOT EXISTS xtmail.blocked_sender (
    bs_pattern    text PRIMARY KEY CHECK (bs_pattern = lower(bs_pattern) AND bs_pattern <> ''),
    bs_any_party  boolean NOT NULL DEFAULT false,
    bs_reason     text NOT NULL DEFAULT '',
    bs_set_by     text NOT NULL DEFAULT session_user,
    bs_set_at     timestamptz NOT NULL DEFAULT now()
);

-- 3. xTuple's privileges, registered the xTuple way (rows in priv, granted on the user and
--    group screens), where the database has xTuple's privilege table.
--    Through xTuple's own createPriv(module, name, description) where it exists (it fills
--    whatever else the edition's priv table holds), else a plain row.
DO $$
DECLARE
    v record;
BEGIN
    IF to_regclass('public.priv') IS NULL THEN
        RETURN;
    END IF;
    FOR v IN SELECT * FROM (VALUES
            ('ViewAllEmail', 'Can see all imported e-mail, private folders included'),
            ('DeleteAllEmail',
             'Can remove any imported e-mail from the database and allow it again'),
            ('MaintainEmailVisibility',
             'Can set which accounts and folders are private, and the blocked senders'))
            AS t(name, descrip)
    LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM public.priv p WHERE p.priv_name = v.name);
        IF to_regprocedure('public.createpriv(text, text, text)') IS NOT NULL THEN
            EXECUTE 'SELECT public.createPriv($1, $2, $3)' USING 'CRM', v.name, v.descrip;
        ELSE
            INSERT INTO public.priv (priv_module, priv_name, priv_descrip)
            VALUES ('CRM', v.name, v.descrip);
        END IF;
    END LOOP;
END
$$;

-- Whether role p_user holds privilege p_priv: granted to the user (usrpriv) or to one of the
-- user's groups (grppriv, usrgrp), as xTuple's checkPrivilege() reads them. Without xTuple's
-- privilege tables: superusers and members of the role that owns schema xtmail (init-db's).
-- Runs as its owner, so that functions running as their owner can ask about their caller.
CREATE OR REPLACE FUNCTION xtmail.user_has_privilege(p_user text, p_priv text)
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p_user AND rolsuper) THEN
        RETURN true;
    END IF;
    IF to_regclass('public.usrpriv') IS NULL OR to_regclass('public.priv') IS NULL THEN
        RETURN EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = p_user
                          AND pg_has_role(r.oid, (SELECT nspowner FROM pg_namespace
                                                    WHERE nspname = 'xtmail'), 'MEMBER'));
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM public.priv p
                              JOIN public.usrpriv u ON u.usrpriv_priv_id = p.priv_id
                             WHERE p.priv_name = $1 AND u.usrpriv_username = $2)'
       INTO found USING p_priv, p_user;
    IF NOT found AND to_regclass('public.grppriv') IS NOT NULL
       AND to_regclass('public.usrgrp') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM public.priv p
                                  JOIN public.grppriv g ON g.grppriv_priv_id = p.priv_id
                                  JOIN public.usrgrp ug ON ug.usrgrp_grp_id = g.grppriv_grp_id
                                 WHERE p.priv_name = $1 AND ug.usrgrp_username = $2)'
           INTO found USING p_priv, p_user;
    END IF;
    RETURN found;
END
$$;

-- The current user may see all mail: xTuple's checkPrivilege('ViewAllEmail') where it
-- exists (it reads the current user's grants), else the rule above.
CREATE OR REPLACE FUNCTION xtmail.sees_all_mail() RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    yes boolean;
BEGIN
    IF to_regprocedure('public.checkprivilege(text)') IS NOT NULL THEN
        EXECUTE 'SELECT public.checkPrivilege($1)' INTO yes USING 'ViewAllEmail';
        RETURN coalesce(yes, false);
    END IF;
    RETURN xtmail.user_has_privilege(current_user::text, 'ViewAllEmail');
END
$$;

-- The private messages p_user is not among the readers of (apart from ViewAllEmail). Runs as
-- its owner: the reader list is not readable by users. The policies below ask it once per
-- query and test each row against the result as a hash (an uncorrelated IN): a probe per
-- row through a function call (which cannot be inlined) made a search walking all mail for
-- a rare word many times slower (docs/privacy.md). ROWS keeps the planner choosing the hash.
-- Asked about a role the session may not act as (neither its login role nor one it is a
-- member of), it hides every private message: it fails closed, and tells nobody what
-- another user reads.
CREATE OR REPLACE FUNCTION xtmail.hidden_mail(p_user text) RETURNS SETOF integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp ROWS 1000 AS $$
    WITH me AS MATERIALIZED (
        SELECT p_user = session_user::text
               OR EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = p_user
                             AND pg_has_role(session_user, r.oid, 'MEMBER')) AS may_ask)
    SELECT pr_eml_id FROM xtmail.private_reader
     GROUP BY pr_eml_id
    HAVING NOT bool_or(pr_user = p_user) OR NOT (SELECT may_ask FROM me)
$$;

-- 4. Keeping the reader list: for the given messages, from their locations and the rules.
CREATE OR REPLACE FUNCTION xtmail.refresh_private(p_ids integer[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM xtmail.private_reader WHERE pr_eml_id = ANY(p_ids);
    IF NOT EXISTS (SELECT 1 FROM xtmail.visibility_rule WHERE vr_private) THEN
        RETURN;  -- everything is shared: the usual case, one probe
    END IF;
    INSERT INTO xtmail.private_reader (pr_eml_id, pr_user)
    WITH loc AS (
        SELECT l.loc_eml_id AS e, l.loc_imported_by AS importer,
               coalesce(f.vr_private, a.vr_private, false) AS private,
               CASE WHEN f.vr_account IS NOT NULL THEN f.vr_owner ELSE a.vr_owner END AS owner
          FROM xtmail.location l
          LEFT JOIN xtmail.visibility_rule f
                 ON f.vr_account = l.loc_account AND f.vr_mailbox = l.loc_mailbox
                AND f.vr_mailbox <> ''
          LEFT JOIN xtmail.visibility_rule a
                 ON a.vr_account = l.loc_account AND a.vr_mailbox = ''
         WHERE l.loc_eml_id = ANY(p_ids)
    ), private AS (
        SELECT e FROM loc GROUP BY e HAVING bool_and(private)
    )
    SELECT DISTINCT loc.e, r.who
      FROM loc JOIN private USING (e)
     CROSS JOIN LATERAL (VALUES (loc.importer), (loc.owner)) AS r(who)
     WHERE r.who IS NOT NULL
    ON CONFLICT DO NOTHING;
END
$$;

CREATE OR REPLACE FUNCTION xtmail.locations_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids integer[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT array_agg(DISTINCT loc_eml_id) INTO ids FROM old_rows;
    ELSE
        SELECT array_agg(DISTINCT loc_eml_id) INTO ids FROM new_rows;
    END IF;
    IF ids IS NOT NULL THEN
        PERFORM xtmail.refresh_private(ids);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS xtmail_private_inserted ON xtmail.location;
CREATE TRIGGER xtmail_private_inserted
    AFTER INSERT ON xtmail.location REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION xtmail.locations_changed();
DROP TRIGGER IF EXISTS xtmail_private_updated ON xtmail.location;
CREATE TRIGGER xtmail_private_updated
    AFTER UPDATE ON xtmail.location REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION xtmail.locations_changed();
DROP TRIGGER IF EXISTS xtmail_private_deleted ON xtmail.location;
CREATE TRIGGER xtmail_private_deleted
    AFTER DELETE ON xtmail.location REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION xtmail.locations_changed();

-- Setting a rule (p_mailbox '' = the whole account; p_private NULL = remove the rule):
-- holders of MaintainEmailVisibility for any account; anyone for an account whose copies
-- they imported themselves (every one of them). Returns how many messages it re-evaluated.
CREATE OR REPLACE FUNCTION xtmail.set_visibility(
    p_account text, p_mailbox text, p_private boolean, p_owner text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    caller text := session_user;
    ids integer[];
BEGIN
    p_mailbox := coalesce(p_mailbox, '');
    IF NOT xtmail.user_has_privilege(caller, 'MaintainEmailVisibility')
       AND (p_owner IS NOT NULL AND p_owner <> caller
            OR EXISTS (SELECT 1 FROM xtmail.location
                        WHERE loc_account = p_account AND loc_imported_by <> caller)) THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('permission denied to set the visibility of account %s: it holds '
                             'mail others imported', p_account),
            HINT = 'Ask an administrator with the MaintainEmailVisibility privilege.';
    END IF;
    IF p_private IS NULL THEN
        DELETE FROM xtmail.visibility_rule
         WHERE vr_account = p_account AND vr_mailbox = p_mailbox;
    ELSE
        INSERT INTO xtmail.visibility_rule (vr_account, vr_mailbox, vr_private, vr_owner,
                                            vr_set_by)
        VALUES (p_account, p_mailbox, p_private, p_owner, caller)
        ON CONFLICT (vr_account, vr_mailbox) DO UPDATE
           SET vr_private = excluded.vr_private, vr_owner = excluded.vr_owner,
               vr_set_by = excluded.vr_set_by, vr_set_at = now();
    END IF;
    SELECT array_agg(DISTINCT loc_eml_id) INTO ids FROM xtmail.location
     WHERE loc_account = p_account AND (p_mailbox = '' OR loc_mailbox = p_mailbox);
    IF ids IS NOT NULL THEN
        PERFORM xtmail.refresh_private(ids);
    END IF;
    RETURN coalesce(cardinality(ids), 0);
END
$$;

-- 5. Duplicate detection for the writer, which cannot see another user's private copy: the
--    ids of stored messages with these identity hashes, and (eml_id NULL) the hashes of
--    removed messages kept out. Reveals an id only to someone holding the message's bytes.
CREATE OR REPLACE FUNCTION xtmail.stored_hashes(p_hashes bytea[])
RETURNS TABLE (hash bytea, eml_id integer)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT e.eml_hash, e.eml_id FROM xtbatch.eml e WHERE e.eml_hash = ANY(p_hashes)
    UNION ALL
    SELECT DISTINCT r.rm_hash, NULL::integer FROM xtmail.removed r
     WHERE r.rm_keep_out AND r.rm_hash = ANY(p_hashes)
$$;

-- The owner the rule of a folder names (its own rule, else its account's), or NULL.
CREATE OR REPLACE FUNCTION xtmail.rule_owner(p_account text, p_mailbox text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (coalesce(
        (SELECT ARRAY[vr_owner] FROM xtmail.visibility_rule
          WHERE vr_account = p_account AND vr_mailbox = p_mailbox AND p_mailbox <> ''),
        (SELECT ARRAY[vr_owner] FROM xtmail.visibility_rule
          WHERE vr_account = p_account AND vr_mailbox = '')))[1]
$$;

-- 6. Removal. A message goes entirely: raw bytes, text, addresses, ties, details and search
--    words, locations, reader list, unresolved references; the distinct-address list loses
--    addresses no other message carries. xtmail.removed keeps who removed it and when, by
--    identity hash. Allowed to holders of DeleteAllEmail for any message; to anyone for a
--    message that is theirs alone (every copy imported by them or in a folder whose rule
--    names them its owner; without copies: imported by them). Others' messages in the set are left and counted. Returns (removed, refused).
CREATE OR REPLACE FUNCTION xtmail.remove_mail(
    p_ids integer[], p_reason text DEFAULT '', p_keep_out boolean DEFAULT true,
    p_account text DEFAULT NULL, p_mailbox text DEFAULT NULL)
RETURNS TABLE (removed integer, refused integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    caller text := session_user;
    admin boolean := xtmail.user_has_privilege(session_user, 'DeleteAllEmail');
    wanted integer[];
    mine integer[];
    addrs text[];
BEGIN
    SELECT array_agg(DISTINCT e.eml_id) INTO wanted
      FROM xtbatch.eml e WHERE e.eml_id = ANY(p_ids);
    IF wanted IS NULL THEN
        removed := 0; refused := 0;
        RETURN NEXT;
        RETURN;
    END IF;
    IF admin THEN
        mine := wanted;
    ELSE
        SELECT array_agg(w) INTO mine FROM unnest(wanted) AS w
         WHERE CASE WHEN EXISTS (SELECT 1 FROM xtmail.location l WHERE l.loc_eml_id = w)
                    THEN NOT EXISTS (SELECT 1 FROM xtmail.location l
                                      WHERE l.loc_eml_id = w AND l.loc_imported_by <> caller
                                        AND coalesce(xtmail.rule_owner(l.loc_account,
                                                                       l.loc_mailbox), '')
                                            <> caller)
                    ELSE EXISTS (SELECT 1 FROM xtmail.msg m
                                  WHERE m.msg_eml_id = w AND m.msg_imported_by = caller)
               END;
    END IF;
    mine := coalesce(mine, '{}');
    refused := cardinality(wanted) - cardinality(mine);
    IF cardinality(mine) = 0 THEN
        removed := 0;
        RETURN NEXT;
        RETURN;
    END IF;
    -- In id order: two removals of overlapping sets lock the rows in the same order.
    PERFORM 1 FROM xtbatch.eml WHERE eml_id = ANY(mine) ORDER BY eml_id FOR UPDATE;
    INSERT INTO xtmail.removed (rm_hash, rm_eml_id, rm_account, rm_mailbox, rm_reason, rm_by,
                                rm_keep_out)
    SELECT e.eml_hash, e.eml_id, p_account, p_mailbox, coalesce(p_reason, ''), caller,
           coalesce(p_keep_out, true)
      FROM xtbatch.eml e WHERE e.eml_id = ANY(mine);
    SELECT array_agg(DISTINCT lower(emladdr_addr)) INTO addrs
      FROM xtbatch.emladdr WHERE emladdr_eml_id = ANY(mine);
    DELETE FROM xtbatch.emladdr WHERE emladdr_eml_id = ANY(mine);
    DELETE FROM xtbatch.emlassc WHERE emlassc_eml_id = ANY(mine);
    DELETE FROM xtmail.location WHERE loc_eml_id = ANY(mine);
    DELETE FROM xtbatch.eml WHERE eml_id = ANY(mine);  -- cascades: msg, references, readers
    IF addrs IS NOT NULL THEN
        DELETE FROM xtmail.address a
         WHERE a.addr = ANY(addrs)
           AND NOT EXISTS (SELECT 1 FROM xtbatch.emladdr d WHERE lower(d.emladdr_addr) = a.addr);
    END IF;
    removed := cardinality(mine);
    RETURN NEXT;
END
$$;

-- A folder's (p_mailbox given) or an account's mail in one step. The folder's sync state
-- goes too, so that "allow again" followed by a sync brings back what is allowed.
CREATE OR REPLACE FUNCTION xtmail.remove_folder_mail(
    p_account text, p_mailbox text, p_reason text DEFAULT '', p_keep_out boolean DEFAULT true)
RETURNS TABLE (removed integer, refused integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids integer[];
BEGIN
    SELECT array_agg(DISTINCT loc_eml_id) INTO ids FROM xtmail.location
     WHERE loc_account = p_account AND (p_mailbox IS NULL OR loc_mailbox = p_mailbox);
    RETURN QUERY SELECT * FROM xtmail.remove_mail(coalesce(ids, '{}'), p_reason, p_keep_out,
                                                 p_account, p_mailbox);
END
$$;

-- Allow removed mail to be imported again: by removal record (p_eml_ids, the ids the
-- messages had) or by the folder / account they were removed with. The remover, or holders
-- of DeleteAllEmail. Returns how many records were cleared. A cleared folder's sync state
-- goes, so that the next sync reads the folder again (storing nothing twice).
CREATE OR REPLACE FUNCTION xtmail.allow_again(
    p_eml_ids integer[], p_account text DEFAULT NULL, p_mailbox text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    caller text := session_user;
    admin boolean := xtmail.user_has_privilege(session_user, 'DeleteAllEmail');
    cleared integer;
BEGIN
    UPDATE xtmail.removed
       SET rm_keep_out = false, rm_allowed_by = caller, rm_allowed_at = now()
     WHERE rm_keep_out AND (admin OR rm_by = caller)
       AND (rm_eml_id = ANY(coalesce(p_eml_ids, '{}'))
            OR (p_account IS NOT NULL AND rm_account = p_account
                AND (p_mailbox IS NULL OR rm_mailbox = p_mailbox)));
    GET DIAGNOSTICS cleared = ROW_COUNT;
    IF cleared > 0 AND p_account IS NOT NULL THEN
        DELETE FROM xtmail.folder_state
         WHERE fs_account = p_account AND (p_mailbox IS NULL OR fs_mailbox = p_mailbox);
    END IF;
    RETURN cleared;
END
$$;

-- Blocked senders: holders of MaintainEmailVisibility set and clear them.
CREATE OR REPLACE FUNCTION xtmail.block_sender(
    p_pattern text, p_any_party boolean DEFAULT false, p_reason text DEFAULT '',
    p_blocked boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT xtmail.user_has_privilege(session_user, 'MaintainEmailVisibility') THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = 'permission denied to change the blocked senders',
            HINT = 'Ask an administrator with the MaintainEmailVisibility privilege.';
    END IF;
    p_pattern := lower(trim(both from ltrim(p_pattern, '@')));
    IF p_blocked THEN
        INSERT INTO xtmail.blocked_sender (bs_pattern, bs_any_party, bs_reason, bs_set_by)
        VALUES (p_pattern, coalesce(p_any_party, false), coalesce(p_reason, ''), session_user)
        ON CONFLICT (bs_pattern) DO UPDATE
           SET bs_any_party = excluded.bs_any_party, bs_reason = excluded.bs_reason,
               bs_set_by = excluded.bs_set_by, bs_set_at = now();
    ELSE
        DELETE FROM xtmail.blocked_sender WHERE bs_pattern = p_pattern;
    END IF;
END
$$;

-- Stored messages the blocked senders rule out (an address, or a domain and its
-- subdomains; From only unless the rule says any party).
CREATE OR REPLACE FUNCTION xtmail.blocked_mail() RETURNS SETOF integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT DISTINCT d.emladdr_eml_id
      FROM xtmail.blocked_sender b
      JOIN xtbatch.emladdr d
        ON (b.bs_any_party OR d.emladdr_type = 'FROM')
       AND (lower(d.emladdr_addr) = b.bs_pattern
            OR (position('@' IN b.bs_pattern) = 0
                AND (split_part(lower(d.emladdr_addr), '@', 2) = b.bs_pattern
                     OR split_part(lower(d.emladdr_addr), '@', 2) LIKE '%.' || b.bs_pattern)))
$$;

-- The blocked senders applied to what is stored: their mail removed (as remove_mail: holders
-- of DeleteAllEmail remove all of it, others their own), kept out of later imports.
CREATE OR REPLACE FUNCTION xtmail.remove_blocked_mail(p_reason text DEFAULT 'blocked sender')
RETURNS TABLE (removed integer, refused integer)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM xtmail.remove_mail(ARRAY(SELECT xtmail.blocked_mail()), p_reason, true)
$$;

-- 7. Row-level security on the mail tables. One permissive policy per table for every role;
--    the reading rule is the same on each: ViewAllEmail (asked once per query, as an
--    initplan), or the message is not among those hidden from the user (hidden_mail(),
--    also once per query). Writing new rows is not
--    restricted (importing stays open to every user); changing or deleting rows needs the
--    message to be visible. Enabling row security needs the tables' owner: init-db is run by
--    the database owner (docs/xtuple.md), who owns Connect's tables too.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
            ('xtbatch', 'eml', 'eml_id'),
            ('xtbatch', 'emladdr', 'emladdr_eml_id'),
            ('xtbatch', 'emlassc', 'emlassc_eml_id'),
            ('xtmail', 'msg', 'msg_eml_id'),
            ('xtmail', 'location', 'loc_eml_id'),
            ('xtmail', 'unresolved_ref', 'uref_eml_id')) AS v(sch, tab, col)
    LOOP
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', t.sch, t.tab);
        EXECUTE format('DROP POLICY IF EXISTS xtmail_visibility ON %I.%I', t.sch, t.tab);
        EXECUTE format(
            'CREATE POLICY xtmail_visibility ON %I.%I USING (%s'
            '(SELECT xtmail.sees_all_mail()) '
            'OR NOT (%I IN (SELECT xtmail.hidden_mail(current_user::text)))) '
            'WITH CHECK (true)', t.sch, t.tab,
            -- One's own copies: also while storing one of a message someone holds privately
            -- (INSERT ... ON CONFLICT checks the new row against the reading rule).
            CASE WHEN t.tab = 'location' THEN 'loc_imported_by = current_user::text OR '
                 ELSE '' END,
            t.col);
    END LOOP;
END
$$;

-- xTuple's merges run as the user who merges: where row security hides a private message's
-- ties from that user, xtmail's own followers (0010) still move them, running as their owner.
ALTER FUNCTION xtmail.follow_moved_address() SECURITY DEFINER;
ALTER FUNCTION xtmail.follow_moved_address() SET search_path = public, pg_temp;
ALTER FUNCTION xtmail.forget_contact() SECURITY DEFINER;
ALTER FUNCTION xtmail.forget_contact() SET search_path = public, pg_temp;
ALTER FUNCTION xtmail.follow_crmacct_merge() SECURITY DEFINER;
ALTER FUNCTION xtmail.follow_crmacct_merge() SET search_path = public, pg_temp;
ALTER FUNCTION xtmail.follow_converted_quote() SECURITY DEFINER;
ALTER FUNCTION xtmail.follow_converted_quote() SET search_path = public, pg_temp;

-- 8. Grants. The default privileges of 0008 gave xtrole the new tables: the reader list and
--    the removal record are read and changed only through the functions above; rules and
--    blocked senders are readable (people can see what is private and what is kept out),
--    changed through the functions.
DO $$
BEGIN
    REVOKE ALL ON FUNCTION xtmail.refresh_private(integer[]) FROM PUBLIC;
    REVOKE ALL ON FUNCTION xtmail.blocked_mail() FROM PUBLIC;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'xtrole') THEN
        RETURN;
    END IF;
    REVOKE ALL ON xtmail.private_reader, xtmail.removed FROM xtrole;
    REVOKE ALL ON SEQUENCE xtmail.removed_rm_id_seq FROM xtrole;
    REVOKE INSERT, UPDATE, DELETE ON xtmail.visibility_rule, xtmail.blocked_sender FROM xtrole;
    GRANT SELECT ON xtmail.visibility_rule, xtmail.blocked_sender TO xtrole;
    GRANT EXECUTE ON FUNCTION
        xtmail.user_has_privilege(text, text), xtmail.sees_all_mail(),
        xtmail.hidden_mail(text), xtmail.stored_hashes(bytea[]),
        xtmail.set_visibility(text, text, boolean, text),
        xtmail.remove_mail(integer[], text, boolean, text, text),
        xtmail.remove_folder_mail(text, text, text, boolean),
        xtmail.allow_again(integer[], text, text),
        xtmail.block_sender(text, boolean, text, boolean),
        xtmail.remove_blocked_mail(text) TO xtrole;
END
$$;
