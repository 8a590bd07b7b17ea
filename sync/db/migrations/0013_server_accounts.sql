-- Accounts `xtmail serve` synchronizes (docs/serve.md): shared mailboxes the administrator
-- sets up for the whole company. A user's own accounts stay in that user's settings and are
-- synced by the desktop.
--
-- The secret is never stored here. sa_secret_source says where the service finds it on the
-- host it runs on: 'command' runs sa_secret_ref through the shell and reads the first line
-- it prints (a password, or with sa_auth = 'xoauth2' an access token: isync's PassCmd),
-- 'env' reads the environment variable named sa_secret_ref, 'file' reads the first line
-- of the file sa_secret_ref. Even so, the table names commands and files that lead to
-- secrets: ordinary users (xtrole) cannot read it.

CREATE TABLE IF NOT EXISTS xtmail.server_account (
    sa_id             serial PRIMARY KEY,
    sa_host           text NOT NULL,
    sa_port           integer NOT NULL DEFAULT 0 CHECK (sa_port BETWEEN 0 AND 65535),
    sa_security       text NOT NULL DEFAULT 'imaps'
                      CHECK (sa_security IN ('imaps', 'starttls', 'none')),
    sa_user           text NOT NULL,
    sa_auth           text NOT NULL DEFAULT 'password'
                      CHECK (sa_auth IN ('password', 'xoauth2')),
    sa_secret_source  text NOT NULL CHECK (sa_secret_source IN ('command', 'env', 'file')),
    sa_secret_ref     text NOT NULL,
    sa_folders        text[] NOT NULL DEFAULT '{INBOX}',
    sa_since          date,
    sa_enabled        boolean NOT NULL DEFAULT true,
    sa_ca_file        text NOT NULL DEFAULT '',
    sa_pin_sha256     text NOT NULL DEFAULT '',
    sa_own_addresses  text[] NOT NULL DEFAULT '{}',
    sa_exclude_domains text[] NOT NULL DEFAULT '{}',
    sa_create_contacts boolean NOT NULL DEFAULT true,
    sa_note           text NOT NULL DEFAULT '',
    sa_created        timestamptz NOT NULL DEFAULT now(),
    sa_created_by     text NOT NULL DEFAULT current_user,
    UNIQUE (sa_user, sa_host)
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'xtrole') THEN
        -- 0008's default privileges granted the new table to xtrole: take them back.
        REVOKE ALL ON xtmail.server_account FROM xtrole;
        REVOKE ALL ON SEQUENCE xtmail.server_account_sa_id_seq FROM xtrole;
    END IF;
END
$$;
REVOKE ALL ON xtmail.server_account FROM PUBLIC;
