-- The mail tables of xTuple Connect (schema xtbatch). Reused as they are where an xTuple
-- installation already has them; created with the same shape where not.

CREATE SCHEMA IF NOT EXISTS xtbatch;

CREATE TABLE IF NOT EXISTS xtbatch.eml (
    eml_id      serial PRIMARY KEY,
    eml_hash    text NOT NULL UNIQUE,
    eml_date    timestamptz,
    eml_subj    text,
    eml_body    text,
    eml_msg     bytea,
    eml_status  char(1) DEFAULT 'I'
);

CREATE TABLE IF NOT EXISTS xtbatch.emladdr (
    emladdr_id      serial PRIMARY KEY,
    emladdr_eml_id  integer NOT NULL REFERENCES xtbatch.eml (eml_id) ON DELETE CASCADE,
    emladdr_type    text NOT NULL CHECK (emladdr_type IN ('FROM', 'TO', 'CC', 'BCC')),
    emladdr_addr    text NOT NULL,
    emladdr_name    text
);

CREATE TABLE IF NOT EXISTS xtbatch.emlassc (
    emlassc_id       serial PRIMARY KEY,
    emlassc_eml_id   integer NOT NULL REFERENCES xtbatch.eml (eml_id) ON DELETE CASCADE,
    emlassc_type     text NOT NULL,
    emlassc_assc_id  integer NOT NULL
);
