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
