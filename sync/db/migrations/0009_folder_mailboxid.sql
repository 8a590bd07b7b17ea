-- A folder's identity on the server (RFC 8474 MAILBOXID), where the server offers one. A
-- folder renamed or swapped with another keeps its MAILBOXID and may keep its UIDVALIDITY
-- (Cyrus does both), so the name and UIDVALIDITY alone cannot tell that the folder under a
-- synchronized name is another one: a changed MAILBOXID can. NULL where the server has none.
-- The table-level grants of 0008 cover the new column for xtrole.
ALTER TABLE xtmail.folder_state ADD COLUMN IF NOT EXISTS fs_mailboxid text;
