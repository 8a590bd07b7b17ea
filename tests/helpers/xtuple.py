"""xTuple and xTuple Connect, as the tests need them on a throwaway database.

Written by the project from the published facts (table shapes, trigger behaviours), not
copied from xTuple: Connect's mail tables exactly as Connect defines them, the group role
``xtrole`` and login roles in it as xTuple's ``createuser()`` makes them, and the behaviours of
xTuple's triggers that touch xtmail's work.
"""

from __future__ import annotations

import psycopg
import psycopg.sql

#: xTuple Connect's mail tables in their published shape, with Connect's grants.
CONNECT_TABLES = """
CREATE SCHEMA IF NOT EXISTS xtbatch;
CREATE TABLE xtbatch.eml (
    eml_id      serial PRIMARY KEY,
    eml_hash    bytea NOT NULL UNIQUE,
    eml_date    date NOT NULL,
    eml_subj    text NOT NULL,
    eml_body    text NOT NULL,
    eml_msg     bytea NOT NULL,
    eml_status  char(1) NOT NULL CHECK (eml_status IN ('I', 'O', 'C'))
);
CREATE TABLE xtbatch.emladdr (
    emladdr_id      serial,
    emladdr_eml_id  integer NOT NULL REFERENCES xtbatch.eml (eml_id),
    emladdr_type    text NOT NULL CHECK (emladdr_type IN ('FROM', 'TO', 'CC', 'BCC')),
    emladdr_addr    text NOT NULL,
    emladdr_name    text NOT NULL
);
CREATE TABLE xtbatch.emlassc (
    emlassc_id       serial PRIMARY KEY,
    emlassc_eml_id   integer NOT NULL REFERENCES xtbatch.eml (eml_id) ON DELETE CASCADE,
    emlassc_type     text NOT NULL CHECK (emlassc_type IN ('CRMA', 'T', 'C', 'EMP', 'INCDT',
                                          'OPP', 'P', 'Q', 'S', 'TD', 'TO', 'V', 'RA', 'J')),
    emlassc_assc_id  integer
);
GRANT ALL ON TABLE xtbatch.eml, xtbatch.emladdr, xtbatch.emlassc TO xtrole;
GRANT ALL ON SEQUENCE xtbatch.eml_eml_id_seq, xtbatch.emladdr_emladdr_id_seq,
                      xtbatch.emlassc_emlassc_id_seq TO xtrole;
"""

#: The tables of the two document types only xTuple's commercial editions have, with the
#: columns xtmail reads (init-db never creates them).
COMMERCIAL_TABLES = """
CREATE TABLE public.tohead (
    tohead_id serial PRIMARY KEY, tohead_number text NOT NULL UNIQUE,
    tohead_srccntct_id integer, tohead_destcntct_id integer
);
CREATE TABLE public.rahead (
    rahead_id serial PRIMARY KEY, rahead_number text NOT NULL UNIQUE, rahead_cust_id integer
);
"""

#: A message Connect stored: its MD5 hash as bytes, a day for a date, status open.
CONNECT_MAIL = """
INSERT INTO xtbatch.eml (eml_hash, eml_date, eml_subj, eml_body, eml_msg, eml_status)
VALUES (decode('d41d8cd98f00b204e9800998ecf8427e', 'hex'), '2015-03-01', 'Old Connect mail',
        'body', 'raw'::bytea, 'O');
INSERT INTO xtbatch.emladdr (emladdr_eml_id, emladdr_type, emladdr_addr, emladdr_name)
VALUES (1, 'FROM', 'ada@example.com', 'Ada Lovelace'), (1, 'TO', 'sales@ourco.example', '');
INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id)
VALUES (1, 'S', 1), (1, 'T', NULL);
"""


def ensure_xtrole(conn: psycopg.Connection) -> None:
    """The group role every xTuple user belongs to (roles are per server, not per database)."""
    conn.execute(
        """DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'xtrole') THEN
                   CREATE ROLE xtrole NOLOGIN;
               END IF;
           END $$"""
    )


def create_connect_tables(conn: psycopg.Connection) -> None:
    """Connect's mail tables as a Connect installation leaves them (no xtmail yet)."""
    ensure_xtrole(conn)
    conn.execute(CONNECT_TABLES)  # type: ignore[arg-type]


def refuse_new_contacts(conn: psycopg.Connection) -> None:
    """What xTuple's contact trigger does to a user without the privilege to maintain
    contacts: every INSERT into cntct raises."""
    conn.execute(
        """CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'You do not have privileges to maintain Contacts.'; END $$"""
    )
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON cntct FOR EACH ROW EXECUTE "
                 "FUNCTION refuse()")


def create_user(conn: psycopg.Connection, name: str) -> None:
    """A login role in xtrole, as xTuple's ``createuser()`` makes one (once per server)."""
    ensure_xtrole(conn)
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    if not exists:
        conn.execute(
            psycopg.sql.SQL("CREATE ROLE {} LOGIN IN ROLE xtrole").format(
                psycopg.sql.Identifier(name)))


def add_contact_triggers(conn: psycopg.Connection) -> None:
    """xTuple's contact triggers as far as they touch xtmail: BEFORE INSERT or UPDATE sets
    cntct_name from first and last name; AFTER INSERT or UPDATE creates or updates the primary
    cntcteml row from cntct_email; deleting a contact deletes its cntcteml rows."""
    conn.execute(
        """CREATE FUNCTION xt_cntct_before() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               NEW.cntct_name := nullif(trim(coalesce(NEW.cntct_first_name, '') || ' '
                                             || coalesce(NEW.cntct_last_name, '')), '');
               RETURN NEW;
           END $$;
           CREATE TRIGGER xt_cntct_before BEFORE INSERT OR UPDATE ON cntct
               FOR EACH ROW EXECUTE FUNCTION xt_cntct_before();
           CREATE FUNCTION xt_cntct_after() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               IF TG_OP = 'DELETE' THEN
                   DELETE FROM cntcteml WHERE cntcteml_cntct_id = OLD.cntct_id;
                   RETURN OLD;
               END IF;
               IF coalesce(NEW.cntct_email, '') <> '' THEN
                   UPDATE cntcteml SET cntcteml_email = NEW.cntct_email
                    WHERE cntcteml_cntct_id = NEW.cntct_id AND cntcteml_primary;
                   IF NOT FOUND THEN
                       INSERT INTO cntcteml (cntcteml_cntct_id, cntcteml_primary, cntcteml_email)
                       VALUES (NEW.cntct_id, true, NEW.cntct_email);
                   END IF;
               END IF;
               RETURN NEW;
           END $$;
           CREATE TRIGGER xt_cntct_after AFTER INSERT OR UPDATE OR DELETE ON cntct
               FOR EACH ROW EXECUTE FUNCTION xt_cntct_after();"""
    )


#: xTuple's merge and conversion functions as far as they touch mail, written from their
#: published behaviour (docs/xtuple.md), with the metric and package tables they consult.
#: Created before init-db, as in a real xTuple database: xtmail's migration looks for the
#: merge selection table.
MERGE_TABLES = """
CREATE TABLE public.metric (metric_name text PRIMARY KEY, metric_value text);
CREATE TABLE public.pkghead (pkghead_name text PRIMARY KEY);
CREATE TABLE public.crmacctsel (
    crmacctsel_src_crmacct_id  integer NOT NULL,
    crmacctsel_dest_crmacct_id integer NOT NULL
);
CREATE TABLE public.mrgundo (
    mrgundo_table    text, mrgundo_pkey_id integer, mrgundo_col text,
    mrgundo_value    text, mrgundo_base_id integer
);
GRANT ALL ON public.metric, public.pkghead, public.crmacctsel, public.mrgundo TO xtrole;
"""

MERGE_FUNCTIONS = """
ALTER TABLE public.crmacct ADD COLUMN IF NOT EXISTS crmacct_active boolean NOT NULL DEFAULT true;

CREATE FUNCTION public.fetchMetricBool(name text) RETURNS boolean LANGUAGE sql STABLE AS
$$ SELECT coalesce((SELECT metric_value = 't' FROM public.metric WHERE metric_name = name),
                   false) $$;
CREATE FUNCTION public.packageIsEnabled(name text) RETURNS boolean LANGUAGE sql STABLE AS
$$ SELECT EXISTS (SELECT 1 FROM public.pkghead WHERE pkghead_name = name) $$;

-- Every column that refers to the source contact is pointed at the target (xTuple finds
-- them through foreign keys; the subset has none, so by name); mail ties only with Connect's
-- batch manager on; then the source is deleted (purge) or deactivated.
CREATE FUNCTION public.cntctmerge(source integer, target integer, purge boolean)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    col record;
BEGIN
    FOR col IN SELECT c.table_name, c.column_name FROM information_schema.columns c
                WHERE c.table_schema = 'public' AND c.column_name LIKE '%cntct_id%'
                  AND c.table_name <> 'cntct' AND c.data_type = 'integer'
    LOOP
        EXECUTE format('UPDATE public.%I SET %I = $1 WHERE %I = $2',
                       col.table_name, col.column_name, col.column_name)
        USING target, source;
    END LOOP;
    IF fetchMetricBool('EnableBatchManager') AND packageIsEnabled('xtbatch') THEN
        UPDATE xtbatch.emlassc SET emlassc_assc_id = target
         WHERE emlassc_type = 'T' AND emlassc_assc_id = source;
    END IF;
    IF purge THEN
        DELETE FROM public.cntct WHERE cntct_id = source;
    END IF;
    UPDATE public.cntct SET cntct_active = false WHERE cntct_id = source;
    RETURN true;
END $$;

-- Needs the user's selection row; moves references to the source account (mail ties only
-- with the batch manager and the package), deletes the source (purge) or deactivates it
-- with an undo marker, and deletes the selection row last.
CREATE FUNCTION public.merge2crmaccts(source integer, target integer, purge boolean)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.crmacctsel WHERE crmacctsel_src_crmacct_id = source
                      AND crmacctsel_dest_crmacct_id = target) THEN
        RAISE EXCEPTION 'Source % and target % have not been selected for merging',
                        source, target;
    END IF;
    UPDATE public.cntct SET cntct_crmacct_id = target WHERE cntct_crmacct_id = source;
    IF fetchMetricBool('EnableBatchManager') AND packageIsEnabled('xtbatch') THEN
        UPDATE xtbatch.emlassc SET emlassc_assc_id = target
         WHERE emlassc_type = 'CRMA' AND emlassc_assc_id = source;
    END IF;
    IF purge THEN
        DELETE FROM public.crmacct WHERE crmacct_id = source;
    ELSE
        UPDATE public.crmacct SET crmacct_active = false WHERE crmacct_id = source;
        INSERT INTO public.mrgundo (mrgundo_table, mrgundo_pkey_id, mrgundo_base_id)
        VALUES ('crmacct', source, target);
    END IF;
    DELETE FROM public.crmacctsel WHERE crmacctsel_src_crmacct_id = source;
    RETURN 1;
END $$;

-- A sales order from the quote, carrying the quote's number in cohead_quote_number; mail
-- ties move from the quote to the order only with the batch manager on; the quote is then
-- deleted unless converted quotes are kept.
CREATE FUNCTION public.convertquote(quote integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    so integer;
BEGIN
    INSERT INTO public.cohead (cohead_number, cohead_cust_id, cohead_billto_cntct_id,
                               cohead_quote_number)
    SELECT quhead_number, quhead_cust_id, quhead_billto_cntct_id, quhead_number
      FROM public.quhead WHERE quhead_id = quote
    RETURNING cohead_id INTO so;
    IF fetchMetricBool('EnableBatchManager') THEN
        UPDATE xtbatch.emlassc SET emlassc_type = 'S', emlassc_assc_id = so
         WHERE emlassc_type = 'Q' AND emlassc_assc_id = quote;
    END IF;
    IF NOT fetchMetricBool('ShowQuotesAfterSO') THEN
        DELETE FROM public.quhead WHERE quhead_id = quote;
    END IF;
    RETURN so;
END $$;
"""


def set_metric(conn: psycopg.Connection, name: str, on: bool) -> None:
    conn.execute(
        "INSERT INTO public.metric VALUES (%s, %s) ON CONFLICT (metric_name) "
        "DO UPDATE SET metric_value = excluded.metric_value", (name, "t" if on else "f"))


#: xTuple's privilege model as far as xtmail uses it, written from its published behaviour:
#: privileges are rows in ``priv``; granted to users (``usrpriv``, by user name) and to groups
#: (``grppriv``), users join groups (``usrgrp``); ``checkPrivilege(name)`` is true when the
#: current user holds the privilege directly or through a group. xTuple grants xtrole the
#: tables and the function (the client reads them as the user).
PRIVILEGE_TABLES = """
CREATE TABLE public.priv (
    priv_id serial PRIMARY KEY, priv_module text NOT NULL, priv_name text NOT NULL UNIQUE,
    priv_descrip text, priv_seq integer
);
CREATE TABLE public.usrpriv (
    usrpriv_id serial PRIMARY KEY, usrpriv_priv_id integer NOT NULL,
    usrpriv_username text NOT NULL
);
CREATE TABLE public.grp (grp_id serial PRIMARY KEY, grp_name text NOT NULL UNIQUE,
                         grp_descrip text);
CREATE TABLE public.grppriv (
    grppriv_id serial PRIMARY KEY, grppriv_grp_id integer NOT NULL,
    grppriv_priv_id integer NOT NULL
);
CREATE TABLE public.usrgrp (
    usrgrp_id serial PRIMARY KEY, usrgrp_grp_id integer NOT NULL, usrgrp_username text NOT NULL
);
INSERT INTO public.priv (priv_module, priv_name, priv_descrip)
VALUES ('CRM', 'MaintainAllContacts', 'Can add, edit and delete all contacts');
GRANT ALL ON public.priv, public.usrpriv, public.grp, public.grppriv, public.usrgrp TO xtrole;

CREATE FUNCTION public.getEffectiveXtUser() RETURNS text LANGUAGE sql STABLE AS
$$ SELECT current_user::text $$;
CREATE FUNCTION public.checkPrivilege(text) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM 1 FROM public.priv p JOIN public.usrpriv u ON u.usrpriv_priv_id = p.priv_id
     WHERE p.priv_name = $1 AND u.usrpriv_username = getEffectiveXtUser();
    IF FOUND THEN
        RETURN true;
    END IF;
    PERFORM 1 FROM public.priv p JOIN public.grppriv g ON g.grppriv_priv_id = p.priv_id
      JOIN public.usrgrp ug ON ug.usrgrp_grp_id = g.grppriv_grp_id
     WHERE p.priv_name = $1 AND ug.usrgrp_username = getEffectiveXtUser();
    RETURN FOUND;
END $$;
"""


def create_privilege_tables(conn: psycopg.Connection) -> None:
    """xTuple's privilege tables and checkPrivilege(), as in an xTuple database."""
    ensure_xtrole(conn)
    conn.execute(PRIVILEGE_TABLES)  # type: ignore[arg-type]


def grant_privilege(conn: psycopg.Connection, user: str, privilege: str) -> None:
    """What the user screen's privilege tab does: a usrpriv row for the user."""
    conn.execute(
        "INSERT INTO public.usrpriv (usrpriv_priv_id, usrpriv_username) "
        "SELECT priv_id, %s FROM public.priv WHERE priv_name = %s", (user, privilege))


def grant_group_privilege(conn: psycopg.Connection, user: str, group: str,
                          privilege: str) -> None:
    """What the group screen does: the group (made if new) holds the privilege, and the
    user is a member of the group."""
    conn.execute("INSERT INTO public.grp (grp_name) VALUES (%s) ON CONFLICT DO NOTHING",
                 (group,))
    conn.execute(
        "INSERT INTO public.grppriv (grppriv_grp_id, grppriv_priv_id) "
        "SELECT g.grp_id, p.priv_id FROM public.grp g, public.priv p "
        "WHERE g.grp_name = %s AND p.priv_name = %s", (group, privilege))
    conn.execute(
        "INSERT INTO public.usrgrp (usrgrp_grp_id, usrgrp_username) "
        "SELECT grp_id, %s FROM public.grp WHERE grp_name = %s", (user, group))


#: xTuple Connect's batch queue in its published shape (the date columns as real installs
#: have them, with time zone), with Connect's grants, and Connect's own submitEmailToBatch in
#: both of xTuple's argument lists: it queues an 'Email' row for the batch manager to send.
CONNECT_BATCH = """
CREATE SCHEMA IF NOT EXISTS xtbatch;
CREATE TABLE xtbatch.batch (
    batch_id                  serial PRIMARY KEY,
    batch_action              text NOT NULL,
    batch_parameter           text,
    batch_user                text NOT NULL DEFAULT current_user,
    batch_email               text,
    batch_submitted           timestamp with time zone NOT NULL DEFAULT now(),
    batch_scheduled           timestamp with time zone NOT NULL DEFAULT now(),
    batch_started             timestamp with time zone,
    batch_completed           timestamp with time zone,
    batch_responsebody        text,
    batch_subject             text,
    batch_filename            text,
    batch_exitstatus          text,
    batch_fromemail           text,
    batch_reschedinterval     integer,
    batch_cc                  text,
    batch_emailhtml           boolean NOT NULL DEFAULT false,
    batch_replyto             text,
    batch_bcc                 text,
    batch_recurring_batch_id  integer REFERENCES xtbatch.batch (batch_id)
);
GRANT ALL ON TABLE xtbatch.batch TO xtrole;
GRANT ALL ON SEQUENCE xtbatch.batch_batch_id_seq TO xtrole;

CREATE FUNCTION xtbatch.submitemailtobatch(
    pfrom text, pto text, pcc text, psubject text, pbody text, pfilename text,
    psubmitted timestamptz, phtml boolean, preplyto text, pbcc text)
RETURNS integer LANGUAGE sql AS $$
    INSERT INTO xtbatch.batch (batch_action, batch_user, batch_email, batch_submitted,
                               batch_scheduled, batch_responsebody, batch_subject,
                               batch_filename, batch_fromemail, batch_cc, batch_emailhtml,
                               batch_replyto, batch_bcc)
    VALUES ('Email', current_user, pto, coalesce(psubmitted, now()),
            coalesce(psubmitted, now()), pbody, psubject, pfilename, pfrom, pcc,
            coalesce(phtml, false), preplyto, pbcc)
    RETURNING batch_id
$$;
CREATE FUNCTION xtbatch.submitemailtobatch(
    pfrom text, pto text, pcc text, psubject text, pbody text, pfilename text,
    psubmitted timestamptz, phtml boolean)
RETURNS integer LANGUAGE sql AS $$
    SELECT xtbatch.submitemailtobatch($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)
$$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA xtbatch TO xtrole;
"""


def create_connect_batch(conn: psycopg.Connection) -> None:
    """Connect's batch queue and its submitEmailToBatch, as a Connect installation leaves
    them (its mail tables too); made before init-db, as in a real xTuple database."""
    create_connect_tables(conn)
    conn.execute(CONNECT_BATCH)  # type: ignore[arg-type]


def complete_batch(conn: psycopg.Connection, batch_id: int, exitstatus: str = "") -> None:
    """What Connect's batch manager does when it has processed a row: started and completed
    set, the exit status blank on success or describing the failure."""
    conn.execute(
        """UPDATE xtbatch.batch SET batch_started = coalesce(batch_started, now()),
                  batch_completed = now(), batch_exitstatus = %s
            WHERE batch_id = %s""", (exitstatus, batch_id))
