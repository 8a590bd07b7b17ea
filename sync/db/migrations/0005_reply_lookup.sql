-- Rule 3 in both directions: when a message arrives after replies to it that are already
-- stored (its folder synced later, an old archive imported after the inbox), its document
-- ties pass down to those replies. Finding "the stored messages that answer this one" needs
-- the message-ids each message answers, as one indexed array. Index only: no data changes.
-- fastupdate off: every batch looks replies up right after inserting, and a lookup would
-- otherwise scan the whole pending list of recent entries (about 50 us per message-id).
-- The arrays are short, so direct insertion costs little.
CREATE INDEX IF NOT EXISTS xtmail_msg_answers_idx
    ON xtmail.msg USING gin ((msg_references || msg_in_reply_to)) WITH (fastupdate = off);
