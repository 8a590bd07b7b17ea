-- The mail tables of xTuple Connect (schema xtbatch), in Connect's exact published shape:
-- types, NOT NULLs, CHECKs, keys and grants. Where an installation already has them they
-- are used exactly as they are: nothing here touches an existing table, so Connect's own
-- installer, xTuple's functions and reports see the same mail either way. Everything xtmail
-- needs beyond these columns lives in schema xtmail (0003).

CREATE SCHEMA IF NOT EXISTS xtbatch;

DO $$
DECLARE
    has_xtrole boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'xtrole');
BEGIN
    IF to_regclass('xtbatch.eml') IS NULL THEN
        CREATE TABLE xtbatch.eml (
            eml_id      serial PRIMARY KEY,
            eml_hash    bytea NOT NULL UNIQUE,
            eml_date    date NOT NULL,
            eml_subj    text NOT NULL,
            eml_body    text NOT NULL,
            eml_msg     bytea NOT NULL,
            eml_status  char(1) NOT NULL CHECK (eml_status IN ('I', 'O', 'C'))
        );
        IF has_xtrole THEN
            GRANT ALL ON TABLE xtbatch.eml TO xtrole;
            GRANT ALL ON SEQUENCE xtbatch.eml_eml_id_seq TO xtrole;
        END IF;
    END IF;

    IF to_regclass('xtbatch.emladdr') IS NULL THEN
        -- Connect gives emladdr no primary key.
        CREATE TABLE xtbatch.emladdr (
            emladdr_id      serial,
            emladdr_eml_id  integer NOT NULL REFERENCES xtbatch.eml (eml_id),
            emladdr_type    text NOT NULL
                            CHECK (emladdr_type IN ('FROM', 'TO', 'CC', 'BCC')),
            emladdr_addr    text NOT NULL,
            emladdr_name    text NOT NULL
        );
        IF has_xtrole THEN
            GRANT ALL ON TABLE xtbatch.emladdr TO xtrole;
            GRANT ALL ON SEQUENCE xtbatch.emladdr_emladdr_id_seq TO xtrole;
        END IF;
    END IF;

    IF to_regclass('xtbatch.emlassc') IS NULL THEN
        CREATE TABLE xtbatch.emlassc (
            emlassc_id       serial PRIMARY KEY,
            emlassc_eml_id   integer NOT NULL REFERENCES xtbatch.eml (eml_id) ON DELETE CASCADE,
            emlassc_type     text NOT NULL
                             CHECK (emlassc_type IN ('CRMA', 'T', 'C', 'EMP', 'INCDT', 'OPP',
                                                     'P', 'Q', 'S', 'TD', 'TO', 'V', 'RA',
                                                     'J')),
            emlassc_assc_id  integer
        );
        IF has_xtrole THEN
            GRANT ALL ON TABLE xtbatch.emlassc TO xtrole;
            GRANT ALL ON SEQUENCE xtbatch.emlassc_emlassc_id_seq TO xtrole;
        END IF;
    END IF;
END
$$;
