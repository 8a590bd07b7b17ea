-- The Attach dialog's address-substring search through the distinct addresses instead of
-- every address row.
--
-- A trigram index costs many entries per indexed address. On xtbatch.emladdr it would take
-- one set for every From/To/Cc/Bcc of every message, although the same few addresses recur
-- in most mail (docs/sync.md, "Measured"). It sits on xtmail.address, one row per distinct
-- lower-case address; a search finds the matching addresses there, and their messages
-- through xtmail_emladdr_addr_lower_idx (0004).

SELECT set_config('search_path', current_setting('search_path') || ', '
                  || quote_ident(n.nspname), true)
  FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace
 WHERE x.extname = 'pg_trgm';

CREATE TABLE IF NOT EXISTS xtmail.address (
    addr text NOT NULL
);
-- Not unique on purpose: two imports storing the same new address at once would otherwise
-- wait for each other's whole batch. They may, rarely, both record it; a search reads the
-- addresses as a set, so a repeat changes nothing but a few bytes.
CREATE INDEX IF NOT EXISTS xtmail_address_addr_idx ON xtmail.address (addr);
CREATE INDEX IF NOT EXISTS xtmail_address_addr_trgm_idx
    ON xtmail.address USING gin (addr gin_trgm_ops);

-- Kept complete for every writer of xtbatch.emladdr (ours, and xTuple Connect's where it
-- still runs): once per statement, from the rows it inserted or changed.
CREATE OR REPLACE FUNCTION xtmail.remember_addresses() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO xtmail.address (addr)
    SELECT DISTINCT lower(n.emladdr_addr)
      FROM new_rows n
     WHERE NOT EXISTS (SELECT 1 FROM xtmail.address a WHERE a.addr = lower(n.emladdr_addr));
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS xtmail_remember_inserted_addresses ON xtbatch.emladdr;
CREATE TRIGGER xtmail_remember_inserted_addresses
    AFTER INSERT ON xtbatch.emladdr REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION xtmail.remember_addresses();
DROP TRIGGER IF EXISTS xtmail_remember_updated_addresses ON xtbatch.emladdr;
CREATE TRIGGER xtmail_remember_updated_addresses
    AFTER UPDATE ON xtbatch.emladdr REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION xtmail.remember_addresses();

-- The addresses stored so far (a no-op when re-run).
INSERT INTO xtmail.address (addr)
SELECT DISTINCT lower(e.emladdr_addr)
  FROM xtbatch.emladdr e
 WHERE NOT EXISTS (SELECT 1 FROM xtmail.address a WHERE a.addr = lower(e.emladdr_addr));
