-- The ERP's outgoing mail where xTuple Connect is absent (docs/outbox.md).
--
-- xTuple queues mail it sends itself (alarms, EDI profiles, purchase-order approvals, the
-- client's "deliver by e-mail") with xtbatch.submitEmailToBatch(from, to, cc, subject,
-- body, filename, submitted_at, email_html [, reply_to, bcc]), which Connect provides and
-- its batch manager sends. Without Connect that call fails. Here it queues the mail in
-- xtmail.outbox, and `xtmail send-queued` (or `xtmail serve`) sends it over SMTP and records
-- each sent message like imported mail. Where Connect's function exists it is left alone:
-- Connect sends. A later Connect install replaces these functions with its own (same
-- signatures) and takes over.

CREATE TABLE IF NOT EXISTS xtmail.outbox (
    ob_id            serial PRIMARY KEY,
    ob_from          text NOT NULL,
    ob_to            text NOT NULL,
    ob_cc            text NOT NULL DEFAULT '',
    ob_bcc           text NOT NULL DEFAULT '',
    ob_reply_to      text NOT NULL DEFAULT '',
    ob_subject       text NOT NULL DEFAULT '',
    ob_body          text NOT NULL DEFAULT '',
    ob_html          boolean NOT NULL DEFAULT false,
    ob_filename      text,
    ob_submitted     timestamptz NOT NULL DEFAULT now(),
    ob_submitted_by  text NOT NULL DEFAULT current_user,
    -- queued: waiting (again, after a temporary failure, from ob_next_attempt);
    -- sending: claimed by a sender until ob_claimed_until; sent: delivered to the SMTP
    -- server and recorded (ob_eml_id); dead: refused for good, or out of attempts;
    -- uncertain: a sender died while sending: it may or may not have gone out, so it is not
    -- sent again without a person's decision (nothing is sent twice).
    ob_state         text NOT NULL DEFAULT 'queued'
                     CHECK (ob_state IN ('queued', 'sending', 'sent', 'dead', 'uncertain')),
    ob_attempts      integer NOT NULL DEFAULT 0,
    ob_next_attempt  timestamptz NOT NULL DEFAULT now(),
    ob_claimed_by    text,
    ob_claimed_until timestamptz,
    ob_message_id    text,
    ob_last_error    text,
    ob_sent          timestamptz,
    ob_eml_id        integer
);
CREATE INDEX IF NOT EXISTS outbox_waiting_idx ON xtmail.outbox (ob_next_attempt)
    WHERE ob_state IN ('queued', 'sending');

-- The queue holds other people's mail: ordinary users do not read it. They queue through
-- the function, which runs with its owner's rights.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'xtrole') THEN
        REVOKE ALL ON xtmail.outbox FROM xtrole;
        REVOKE ALL ON SEQUENCE xtmail.outbox_ob_id_seq FROM xtrole;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION xtmail.queue_mail(
    p_from text, p_to text, p_cc text, p_subject text, p_body text, p_filename text,
    p_submitted timestamptz, p_html boolean, p_reply_to text, p_bcc text)
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO xtmail.outbox (ob_from, ob_to, ob_cc, ob_subject, ob_body, ob_filename,
                               ob_submitted, ob_html, ob_reply_to, ob_bcc, ob_submitted_by)
    VALUES (coalesce(p_from, ''), coalesce(p_to, ''), coalesce(p_cc, ''),
            coalesce(p_subject, ''), coalesce(p_body, ''), nullif(p_filename, ''),
            coalesce(p_submitted, now()), coalesce(p_html, false), coalesce(p_reply_to, ''),
            coalesce(p_bcc, ''), session_user)
    RETURNING ob_id
$$;
REVOKE ALL ON FUNCTION xtmail.queue_mail(text, text, text, text, text, text, timestamptz,
                                         boolean, text, text) FROM PUBLIC;

DO $$
BEGIN
    IF to_regprocedure('xtbatch.submitemailtobatch(text, text, text, text, text, text, '
                       'timestamp with time zone, boolean)') IS NULL THEN
        CREATE FUNCTION xtbatch.submitemailtobatch(
            text, text, text, text, text, text, timestamptz, boolean)
        RETURNS integer LANGUAGE sql AS
        'SELECT xtmail.queue_mail($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)';
        COMMENT ON FUNCTION xtbatch.submitemailtobatch(text, text, text, text, text, text,
                                                       timestamptz, boolean)
            IS 'xtmail: queues the mail in xtmail.outbox (xTuple Connect is not installed)';
    END IF;
    IF to_regprocedure('xtbatch.submitemailtobatch(text, text, text, text, text, text, '
                       'timestamp with time zone, boolean, text, text)') IS NULL THEN
        CREATE FUNCTION xtbatch.submitemailtobatch(
            text, text, text, text, text, text, timestamptz, boolean, text, text)
        RETURNS integer LANGUAGE sql AS
        'SELECT xtmail.queue_mail($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)';
        COMMENT ON FUNCTION xtbatch.submitemailtobatch(text, text, text, text, text, text,
                                                       timestamptz, boolean, text, text)
            IS 'xtmail: queues the mail in xtmail.outbox (xTuple Connect is not installed)';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'xtrole') THEN
        GRANT EXECUTE ON FUNCTION xtmail.queue_mail(text, text, text, text, text, text,
                                                    timestamptz, boolean, text, text)
            TO xtrole;
    END IF;
END
$$;
