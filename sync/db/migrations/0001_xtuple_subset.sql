-- An xTuple-compatible subset of the ERP's base tables: only the columns xtmail reads, for
-- an empty database (demo, tests). Each table is created only when absent, so on a real
-- xTuple database this changes nothing; a table created here is granted to xtrole as xTuple
-- grants its own. xTuple's own functions and triggers are not recreated here. Tables only a
-- commercial edition has (tohead, rahead) are never created: that edition's installer would
-- fail on them; their document types are unavailable where they are absent.

DO $$
DECLARE
    created text[] := '{}';
    t text;
BEGIN
    IF to_regclass('public.crmacct') IS NULL THEN
        CREATE TABLE public.crmacct (
            crmacct_id          serial PRIMARY KEY,
            crmacct_number      text NOT NULL UNIQUE,
            crmacct_name        text,
            crmacct_cntct_id_1  integer,
            crmacct_cntct_id_2  integer
        );
        created := created || 'crmacct'::text;
    END IF;
    IF to_regclass('public.cntct') IS NULL THEN
        CREATE TABLE public.cntct (
            cntct_id              serial PRIMARY KEY,
            cntct_number          text NOT NULL UNIQUE,
            cntct_crmacct_id      integer,
            cntct_first_name      text,
            cntct_last_name       text,
            cntct_name            text,
            cntct_email           text,
            cntct_active          boolean NOT NULL DEFAULT true,
            cntct_owner_username  text,
            cntct_created         timestamptz DEFAULT now()
        );
        created := created || 'cntct'::text;
    END IF;
    IF to_regclass('public.cntcteml') IS NULL THEN
        CREATE TABLE public.cntcteml (
            cntcteml_id        serial PRIMARY KEY,
            cntcteml_cntct_id  integer NOT NULL,
            cntcteml_primary   boolean NOT NULL DEFAULT false,
            cntcteml_email     text NOT NULL
        );
        created := created || 'cntcteml'::text;
    END IF;
    IF to_regclass('public.custinfo') IS NULL THEN
        CREATE TABLE public.custinfo (
            cust_id            serial PRIMARY KEY,
            cust_number        text NOT NULL UNIQUE,
            cust_name          text,
            cust_cntct_id      integer,
            cust_corrcntct_id  integer
        );
        created := created || 'custinfo'::text;
    END IF;
    IF to_regclass('public.vendinfo') IS NULL THEN
        CREATE TABLE public.vendinfo (
            vend_id         serial PRIMARY KEY,
            vend_number     text NOT NULL UNIQUE,
            vend_name       text,
            vend_cntct1_id  integer,
            vend_cntct2_id  integer
        );
        created := created || 'vendinfo'::text;
    END IF;
    IF to_regclass('public.emp') IS NULL THEN
        CREATE TABLE public.emp (
            emp_id        serial PRIMARY KEY,
            emp_code      text NOT NULL UNIQUE,
            emp_number    text,
            emp_cntct_id  integer
        );
        created := created || 'emp'::text;
    END IF;
    IF to_regclass('public.ophead') IS NULL THEN
        CREATE TABLE public.ophead (
            ophead_id        serial PRIMARY KEY,
            ophead_number    text NOT NULL UNIQUE,
            ophead_name      text,
            ophead_crmacct_id integer,
            ophead_cntct_id  integer
        );
        created := created || 'ophead'::text;
    END IF;
    IF to_regclass('public.prj') IS NULL THEN
        CREATE TABLE public.prj (
            prj_id        serial PRIMARY KEY,
            prj_number    text NOT NULL UNIQUE,
            prj_name      text,
            prj_cntct_id  integer
        );
        created := created || 'prj'::text;
    END IF;
    IF to_regclass('public.quhead') IS NULL THEN
        CREATE TABLE public.quhead (
            quhead_id               serial PRIMARY KEY,
            quhead_number           text NOT NULL UNIQUE,
            quhead_cust_id          integer,
            quhead_billto_cntct_id  integer,
            quhead_shipto_cntct_id  integer
        );
        created := created || 'quhead'::text;
    END IF;
    IF to_regclass('public.cohead') IS NULL THEN
        CREATE TABLE public.cohead (
            cohead_id               serial PRIMARY KEY,
            cohead_number           text NOT NULL UNIQUE,
            cohead_cust_id          integer,
            cohead_billto_cntct_id  integer,
            cohead_shipto_cntct_id  integer,
            cohead_quote_number     text
        );
        created := created || 'cohead'::text;
    END IF;
    IF to_regclass('public.pohead') IS NULL THEN
        CREATE TABLE public.pohead (
            pohead_id               serial PRIMARY KEY,
            pohead_number           text NOT NULL UNIQUE,
            pohead_vend_id          integer,
            pohead_vend_cntct_id    integer,
            pohead_shipto_cntct_id  integer
        );
        created := created || 'pohead'::text;
    END IF;
    IF to_regclass('public.todoitem') IS NULL THEN
        CREATE TABLE public.todoitem (
            todoitem_id        serial PRIMARY KEY,
            todoitem_name      text,
            todoitem_cntct_id  integer
        );
        created := created || 'todoitem'::text;
    END IF;
    IF to_regclass('public.incdt') IS NULL THEN
        CREATE TABLE public.incdt (
            incdt_id        serial PRIMARY KEY,
            incdt_number    integer NOT NULL UNIQUE,
            incdt_summary   text,
            incdt_crmacct_id integer,
            incdt_cntct_id  integer
        );
        created := created || 'incdt'::text;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'xtrole') THEN
        FOREACH t IN ARRAY created LOOP
            EXECUTE format('GRANT ALL ON TABLE public.%I TO xtrole', t);
            -- The key, the first column, is the serial.
            EXECUTE format('GRANT ALL ON SEQUENCE %s TO xtrole', pg_get_serial_sequence(
                'public.' || quote_ident(t),
                (SELECT attname FROM pg_attribute
                  WHERE attrelid = ('public.' || quote_ident(t))::regclass AND attnum = 1)));
        END LOOP;
    END IF;
END
$$;
