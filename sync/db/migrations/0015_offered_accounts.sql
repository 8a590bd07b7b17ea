-- Users' own accounts, offered to the company's mail server (docs/serve.md, "Accounts users
-- offer"). A user who ticks "Let the company mail server sync this account" in User
-- Preferences offers that account to `xtmail serve`: a row here, written through
-- xtmail.offer_account() as that user. No secret is ever stored: the service logs in with a
-- credential the administrator gave it (an IMAP master user, or a secret file per account).
--
-- Users cannot read or write the table itself: they offer, list and withdraw their own
-- accounts through the SECURITY DEFINER functions below, which act on the rows of the
-- session's login role only. The service reads the table (granted by the administrator).

CREATE TABLE IF NOT EXISTS xtmail.offered_account (
    oa_id              serial PRIMARY KEY,
    oa_owner           text NOT NULL,  -- the login role that offered it
    oa_host            text NOT NULL,
    oa_port            integer NOT NULL DEFAULT 0 CHECK (oa_port BETWEEN 0 AND 65535),
    oa_security        text NOT NULL DEFAULT 'imaps'
                       CHECK (oa_security IN ('imaps', 'starttls', 'none')),
    oa_user            text NOT NULL,
    oa_auth            text NOT NULL DEFAULT 'password'
                       CHECK (oa_auth IN ('password', 'xoauth2')),
    oa_folders         text[] NOT NULL DEFAULT '{INBOX}',
    oa_since           date,
    oa_pin_sha256      text NOT NULL DEFAULT '',
    oa_own_addresses   text[] NOT NULL DEFAULT '{}',
    oa_exclude_domains text[] NOT NULL DEFAULT '{}',
    oa_create_contacts boolean NOT NULL DEFAULT true,
    oa_offered         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (oa_user, oa_host)
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'xtrole') THEN
        -- 0008's default privileges granted the new table to xtrole: take them back.
        REVOKE ALL ON xtmail.offered_account FROM xtrole;
        REVOKE ALL ON SEQUENCE xtmail.offered_account_oa_id_seq FROM xtrole;
    END IF;
END
$$;
REVOKE ALL ON xtmail.offered_account FROM PUBLIC;

-- Offer an account (or change the offer of one's own): returns its id. An account another
-- user has offered stays theirs: the call fails and says so.
CREATE OR REPLACE FUNCTION xtmail.offer_account(
    p_host text, p_port integer, p_security text, p_user text, p_auth text,
    p_folders text[], p_since date, p_pin_sha256 text, p_own_addresses text[],
    p_exclude_domains text[], p_create_contacts boolean)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found_id integer;
BEGIN
    IF coalesce(btrim(p_host), '') = '' OR coalesce(btrim(p_user), '') = '' THEN
        RAISE EXCEPTION 'An offered account needs its IMAP host and user name.'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO xtmail.offered_account AS oa
           (oa_owner, oa_host, oa_port, oa_security, oa_user, oa_auth, oa_folders, oa_since,
            oa_pin_sha256, oa_own_addresses, oa_exclude_domains, oa_create_contacts)
    VALUES (session_user, p_host, coalesce(p_port, 0), coalesce(p_security, 'imaps'), p_user,
            coalesce(p_auth, 'password'), coalesce(p_folders, '{INBOX}'), p_since,
            coalesce(p_pin_sha256, ''), coalesce(p_own_addresses, '{}'),
            coalesce(p_exclude_domains, '{}'), coalesce(p_create_contacts, true))
    ON CONFLICT (oa_user, oa_host) DO UPDATE
       SET oa_port = excluded.oa_port, oa_security = excluded.oa_security,
           oa_auth = excluded.oa_auth, oa_folders = excluded.oa_folders,
           oa_since = excluded.oa_since, oa_pin_sha256 = excluded.oa_pin_sha256,
           oa_own_addresses = excluded.oa_own_addresses,
           oa_exclude_domains = excluded.oa_exclude_domains,
           oa_create_contacts = excluded.oa_create_contacts
     WHERE oa.oa_owner = session_user
    RETURNING oa_id INTO found_id;
    IF found_id IS NULL THEN
        RAISE EXCEPTION 'The account %@% is already offered to the mail server by another user.',
                        p_user, p_host
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask your administrator who offered it.';
    END IF;
    RETURN found_id;
END
$$;

-- Withdraw one's own offer: the service gives the account up at its next look.
CREATE OR REPLACE FUNCTION xtmail.withdraw_account(p_host text, p_user text)
RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (
        DELETE FROM xtmail.offered_account
         WHERE oa_host = p_host AND oa_user = p_user AND oa_owner = session_user
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone)
$$;

-- The accounts the session's user has offered.
CREATE OR REPLACE FUNCTION xtmail.my_offered_accounts()
RETURNS TABLE (host text, port integer, security text, imap_user text, auth text,
               folders text[], since date, offered timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT oa_host, oa_port, oa_security, oa_user, oa_auth, oa_folders, oa_since, oa_offered
      FROM xtmail.offered_account WHERE oa_owner = session_user ORDER BY oa_id
$$;

REVOKE ALL ON FUNCTION xtmail.offer_account(text, integer, text, text, text, text[], date,
                                            text, text[], text[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION xtmail.withdraw_account(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION xtmail.my_offered_accounts() FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'xtrole') THEN
        GRANT EXECUTE ON FUNCTION xtmail.offer_account(text, integer, text, text, text,
                                                       text[], date, text, text[], text[],
                                                       boolean) TO xtrole;
        GRANT EXECUTE ON FUNCTION xtmail.withdraw_account(text, text) TO xtrole;
        GRANT EXECUTE ON FUNCTION xtmail.my_offered_accounts() TO xtrole;
    END IF;
END
$$;
