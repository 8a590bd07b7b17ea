-- An xTuple-compatible subset of the ERP's base tables: only the columns xtmail reads.
-- Every statement creates only what is absent, so on a real xTuple database this changes
-- nothing. xTuple's own functions and triggers are not recreated here.

CREATE TABLE IF NOT EXISTS public.crmacct (
    crmacct_id          serial PRIMARY KEY,
    crmacct_number      text NOT NULL UNIQUE,
    crmacct_name        text,
    crmacct_cntct_id_1  integer,
    crmacct_cntct_id_2  integer
);

CREATE TABLE IF NOT EXISTS public.cntct (
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

CREATE TABLE IF NOT EXISTS public.cntcteml (
    cntcteml_id        serial PRIMARY KEY,
    cntcteml_cntct_id  integer NOT NULL,
    cntcteml_primary   boolean NOT NULL DEFAULT false,
    cntcteml_email     text NOT NULL
);

CREATE TABLE IF NOT EXISTS public.custinfo (
    cust_id            serial PRIMARY KEY,
    cust_number        text NOT NULL UNIQUE,
    cust_name          text,
    cust_cntct_id      integer,
    cust_corrcntct_id  integer
);

CREATE TABLE IF NOT EXISTS public.vendinfo (
    vend_id         serial PRIMARY KEY,
    vend_number     text NOT NULL UNIQUE,
    vend_name       text,
    vend_cntct1_id  integer,
    vend_cntct2_id  integer
);

CREATE TABLE IF NOT EXISTS public.emp (
    emp_id        serial PRIMARY KEY,
    emp_code      text NOT NULL UNIQUE,
    emp_number    text,
    emp_cntct_id  integer
);

CREATE TABLE IF NOT EXISTS public.ophead (
    ophead_id        serial PRIMARY KEY,
    ophead_number    text NOT NULL UNIQUE,
    ophead_name      text,
    ophead_crmacct_id integer,
    ophead_cntct_id  integer
);

CREATE TABLE IF NOT EXISTS public.prj (
    prj_id        serial PRIMARY KEY,
    prj_number    text NOT NULL UNIQUE,
    prj_name      text,
    prj_cntct_id  integer
);

CREATE TABLE IF NOT EXISTS public.quhead (
    quhead_id               serial PRIMARY KEY,
    quhead_number           text NOT NULL UNIQUE,
    quhead_cust_id          integer,
    quhead_billto_cntct_id  integer,
    quhead_shipto_cntct_id  integer
);

CREATE TABLE IF NOT EXISTS public.cohead (
    cohead_id               serial PRIMARY KEY,
    cohead_number           text NOT NULL UNIQUE,
    cohead_cust_id          integer,
    cohead_billto_cntct_id  integer,
    cohead_shipto_cntct_id  integer
);

CREATE TABLE IF NOT EXISTS public.tohead (
    tohead_id            serial PRIMARY KEY,
    tohead_number        text NOT NULL UNIQUE,
    tohead_srccntct_id   integer,
    tohead_destcntct_id  integer
);

CREATE TABLE IF NOT EXISTS public.pohead (
    pohead_id               serial PRIMARY KEY,
    pohead_number           text NOT NULL UNIQUE,
    pohead_vend_id          integer,
    pohead_vend_cntct_id    integer,
    pohead_shipto_cntct_id  integer
);

CREATE TABLE IF NOT EXISTS public.rahead (
    rahead_id       serial PRIMARY KEY,
    rahead_number   text NOT NULL UNIQUE,
    rahead_cust_id  integer
);

CREATE TABLE IF NOT EXISTS public.todoitem (
    todoitem_id        serial PRIMARY KEY,
    todoitem_name      text,
    todoitem_cntct_id  integer
);

CREATE TABLE IF NOT EXISTS public.incdt (
    incdt_id        serial PRIMARY KEY,
    incdt_number    integer NOT NULL UNIQUE,
    incdt_summary   text,
    incdt_crmacct_id integer,
    incdt_cntct_id  integer
);
