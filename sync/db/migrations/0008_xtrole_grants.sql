-- What an ordinary ERP user needs, granted the xTuple way: to the group role xtrole, of which
-- every user xTuple's createuser() makes is a member. Read mail, import it (messages, their
-- details, addresses, locations, unresolved references, the address list), attach and
-- detach (ties and their log), keep per-folder sync state, number new contacts where
-- xTuple's numbering is absent. Only the database owner changes the schema: the version
-- table is readable, not writable. Skipped where the database has no xtrole (a plain
-- PostgreSQL database, the demo): there the owner's own role is the user.
--
-- Connect's tables are not granted here: where xtmail created them, 0002 granted them as
-- Connect does; where Connect did, Connect's grants stand. Schema USAGE on xtbatch is needed
-- either way and adds nothing to Connect's objects.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'xtrole') THEN
        RETURN;
    END IF;
    GRANT USAGE ON SCHEMA xtbatch, xtmail TO xtrole;
    IF to_regnamespace('xtmail_ext') IS NOT NULL THEN
        GRANT USAGE ON SCHEMA xtmail_ext TO xtrole;
    END IF;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA xtmail TO xtrole;
    REVOKE INSERT, UPDATE, DELETE ON xtmail.schema_version FROM xtrole;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA xtmail TO xtrole;
    -- Later migrations run by the same owner grant their new tables and sequences alike.
    ALTER DEFAULT PRIVILEGES IN SCHEMA xtmail
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO xtrole;
    ALTER DEFAULT PRIVILEGES IN SCHEMA xtmail GRANT USAGE, SELECT ON SEQUENCES TO xtrole;
END
$$;
