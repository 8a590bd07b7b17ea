"""xTuple behaviour the tests need on the throwaway database."""

from __future__ import annotations

import psycopg


def refuse_new_contacts(conn: psycopg.Connection) -> None:
    """What xTuple's contact trigger does to a user without the privilege to maintain
    contacts: every INSERT into cntct raises."""
    conn.execute(
        """CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'You do not have privileges to maintain Contacts.'; END $$"""
    )
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON cntct FOR EACH ROW EXECUTE "
                 "FUNCTION refuse()")
