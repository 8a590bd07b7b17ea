-- What Connect did not have lives in schema xtmail, keyed by xtbatch.eml.eml_id.

CREATE SCHEMA IF NOT EXISTS xtmail;

-- pg_trgm in a schema of its own, not in xTuple's public. Where the database has it already
-- (in any schema) that installation serves; the index definitions below find its operator
-- classes through the search path, set for this transaction only.
CREATE SCHEMA IF NOT EXISTS xtmail_ext;
CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA xtmail_ext;
SELECT set_config('search_path', current_setting('search_path') || ', '
                  || quote_ident(n.nspname), true)
  FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace
 WHERE x.extname = 'pg_trgm';

-- One row per message xtmail stored: its exact time, threading headers, search text, who
-- imported it.
CREATE TABLE IF NOT EXISTS xtmail.msg (
    msg_eml_id       integer PRIMARY KEY REFERENCES xtbatch.eml (eml_id) ON DELETE CASCADE,
    -- The Date header as written (Connect's eml_date holds only its day); NULL when the
    -- message has none.
    msg_date         timestamptz,
    msg_message_id   text,
    msg_in_reply_to  text,
    msg_references   text[] NOT NULL DEFAULT '{}',
    msg_reply_to     text,
    msg_list_id      text,
    msg_is_bulk      boolean NOT NULL DEFAULT false,
    msg_size         integer NOT NULL,
    msg_attachments  jsonb NOT NULL DEFAULT '[]',
    msg_defects      text[] NOT NULL DEFAULT '{}',
    msg_source       text NOT NULL DEFAULT 'imap',
    msg_imported_by  text NOT NULL DEFAULT current_user,
    msg_imported_at  timestamptz NOT NULL DEFAULT now(),
    msg_search       tsvector
);
CREATE INDEX IF NOT EXISTS msg_message_id_idx ON xtmail.msg (msg_message_id);
CREATE INDEX IF NOT EXISTS msg_search_idx ON xtmail.msg USING gin (msg_search);

-- Every place a message was seen. The same message in two folders or two users' mailboxes
-- has two rows here and one in xtbatch.eml. Where a copy's bytes differ from the stored
-- message (other Received lines, CRLF instead of LF), loc_raw keeps that copy exactly as
-- received; it is NULL when the bytes are the same.
CREATE TABLE IF NOT EXISTS xtmail.location (
    loc_id           bigserial PRIMARY KEY,
    loc_eml_id       integer NOT NULL REFERENCES xtbatch.eml (eml_id) ON DELETE CASCADE,
    loc_account      text NOT NULL,
    loc_mailbox      text NOT NULL,
    loc_uidvalidity  bigint NOT NULL,
    loc_uid          bigint NOT NULL,
    loc_raw          bytea,
    loc_seen_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (loc_account, loc_mailbox, loc_uidvalidity, loc_uid)
);
CREATE INDEX IF NOT EXISTS location_eml_idx ON xtmail.location (loc_eml_id);

-- Per-folder sync progress, committed in the same transaction as the messages it covers.
CREATE TABLE IF NOT EXISTS xtmail.folder_state (
    fs_account        text NOT NULL,
    fs_mailbox        text NOT NULL,
    fs_uidvalidity    bigint NOT NULL,
    fs_last_uid       bigint NOT NULL DEFAULT 0,
    fs_highestmodseq  numeric,
    fs_updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (fs_account, fs_mailbox)
);

-- References found in mail that name no existing document: kept on record, not tied.
CREATE TABLE IF NOT EXISTS xtmail.unresolved_ref (
    uref_eml_id  integer NOT NULL REFERENCES xtbatch.eml (eml_id) ON DELETE CASCADE,
    uref_code    text NOT NULL,
    uref_number  text NOT NULL,
    PRIMARY KEY (uref_eml_id, uref_code, uref_number)
);

-- Who tied or untied what, and when, and by which rule.
CREATE TABLE IF NOT EXISTS xtmail.assc_log (
    al_id        bigserial PRIMARY KEY,
    al_eml_id    integer NOT NULL,
    al_type      text NOT NULL,
    al_assc_id   integer NOT NULL,
    al_action    text NOT NULL CHECK (al_action IN ('attach', 'detach', 'auto')),
    al_rule      text,
    al_username  text NOT NULL DEFAULT current_user,
    al_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS assc_log_eml_idx ON xtmail.assc_log (al_eml_id);

-- Our own contact numbering, used only where xTuple's fetchNextNumber() is absent.
CREATE SEQUENCE IF NOT EXISTS xtmail.contact_number_seq START 900000;

-- Lookups the association rules make on every import. Indexes add no data to the xTuple
-- tables they sit on.
CREATE INDEX IF NOT EXISTS xtmail_cntcteml_lower_idx
    ON public.cntcteml (lower(cntcteml_email));
CREATE INDEX IF NOT EXISTS xtmail_cntct_email_lower_idx
    ON public.cntct (lower(cntct_email));
CREATE INDEX IF NOT EXISTS xtmail_emlassc_doc_idx
    ON xtbatch.emlassc (emlassc_type, emlassc_assc_id);
CREATE INDEX IF NOT EXISTS xtmail_emladdr_eml_idx
    ON xtbatch.emladdr (emladdr_eml_id);

-- A tie is recorded once. An older Connect installation may hold duplicate ties; there the
-- index is left out (their data is not ours to change) and the code's NOT EXISTS checks
-- keep new ties single.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM xtbatch.emlassc
        GROUP BY emlassc_eml_id, emlassc_type, emlassc_assc_id HAVING count(*) > 1
    ) THEN
        CREATE UNIQUE INDEX IF NOT EXISTS xtmail_emlassc_unique_idx
            ON xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id);
    ELSE
        -- Without the unique index, lookups by message need their own.
        CREATE INDEX IF NOT EXISTS xtmail_emlassc_eml_idx ON xtbatch.emlassc (emlassc_eml_id);
    END IF;
END
$$;
