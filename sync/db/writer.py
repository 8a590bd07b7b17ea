"""The import side of the store: every SQL statement that writes imported mail.

One batch is one transaction. New messages, their details and addresses go into their
tables by binary COPY (ids drawn from ``eml_id``'s sequence); ties and locations are
set-based statements over arrays, so a batch of a few hundred messages costs a few dozen
round trips, not a few per message.

Concurrency (several importers, desktop and headless, on one database):

* messages are stored once because ``eml_hash`` is unique: an importer whose COPY meets a
  hash that another one stored after it looked waits for that transaction, gets a unique
  violation, and runs its batch again, finding the message stored;
* a contact is created once per address because creation holds a transaction-level
  advisory lock on the address (taken in sorted order, so two importers cannot deadlock
  on them) and re-checks for a match after getting it;
* a deadlock that PostgreSQL still detects (two batches inserting overlapping messages in
  different orders) rolls the batch back and runs it again.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections import defaultdict
from collections.abc import Callable, Sequence

import psycopg
from psycopg import sql

from xtmail.sync.db.errors import translate
from xtmail.sync.errors import DatabaseError
from xtmail.sync.mail import registry
from xtmail.sync.mail.prepare import prepare_many
from xtmail.sync.values import BatchResult, ImportPolicy, Incoming, PreparedMessage

log = logging.getLogger(__name__)

_RETRIES = 5

# Array parameters go as %b (binary): psycopg's text format quotes each element through a
# regular expression, far slower for a batch's hashes and addresses (docs/import.md).

# Set once per connection: new mail is TOAST-compressed with lz4, several times faster than
# the default pglz, where the server supports it.
_SESSION = "SET default_toast_compression = 'lz4'"
# Per connection: whether _SESSION ran, and catalog facts looked up once (_catalog_fact).
_facts: weakref.WeakKeyDictionary[psycopg.Connection, dict[str, bool]] = (
    weakref.WeakKeyDictionary()
)
_FACT_QUERIES = {
    "quote_number": """SELECT EXISTS (SELECT 1 FROM pg_attribute
                                         WHERE attrelid = to_regclass('public.cohead')
                                           AND attname = 'cohead_quote_number'
                                           AND NOT attisdropped)""",
    "fetch_next_number": "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'fetchnextnumber')",
    # Per role, and so per connection like the others.
    "row_security": """SELECT coalesce(bool_or(row_security_active(c.oid)), false)
                         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = 'xtbatch' AND c.relname = 'eml'""",
}

_EML_COPY = (
    "COPY xtbatch.eml (eml_id, eml_hash, eml_date, eml_subj, eml_body, eml_msg, eml_status) "
    "FROM STDIN (FORMAT BINARY)"
)
# eml_status is char(1): its binary form is the same as text's.
_EML_TYPES = ["int4", "bytea", "date", "text", "text", "bytea", "text"]
# Connect's batch manager works on messages 'I' (in process) and 'O' (open); 'C' (complete)
# is mail it is done with. Mail xtmail stores needs no processing: 'C' keeps a Connect
# installation sharing the database from picking it up (docs/xtuple.md).
EML_STATUS = "C"
# Text format: the server parses the search words (tsvector) and attachments (jsonb).
_MSG_COPY = (
    "COPY xtmail.msg (msg_eml_id, msg_date, msg_message_id, msg_in_reply_to, msg_references, "
    "msg_reply_to, msg_list_id, msg_is_bulk, msg_size, msg_attachments, msg_defects, "
    "msg_source, msg_search) FROM STDIN"
)
_ADDR_COPY = (
    "COPY xtbatch.emladdr (emladdr_eml_id, emladdr_type, emladdr_addr, emladdr_name) "
    "FROM STDIN (FORMAT BINARY)"
)

_TIES_COPY = (
    "COPY xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id) "
    "FROM STDIN (FORMAT BINARY)"
)


OnState = Callable[[psycopg.Connection], None] | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Job:
    """What every message of a batch is stored with."""

    policy: ImportPolicy
    source: str
    extra_ties: tuple[tuple[str, int], ...]


def write_batch(
    conn: psycopg.Connection,
    items: Sequence[Incoming],
    prepared: Sequence[PreparedMessage],
    *,
    policy: ImportPolicy,
    source: str,
    extra_ties: Sequence[tuple[str, int]] = (),
    on_state: Callable[[psycopg.Connection], None] | None = None,
) -> BatchResult:
    """Store ``items`` (with their ``prepared`` parse) and tie them; one transaction."""
    if len(items) != len(prepared):
        raise ValueError("items and prepared differ in length")
    # psycopg prepares a statement after its fifth run, and PostgreSQL then may switch to a
    # generic plan. The batch statements join unnest(array) parameters of varying length
    # (contact matching among them); the generic plan guesses a small row count and is
    # orders of magnitude slower than a custom one. The one place that turns prepared
    # statements off, for the batch only: the caller's connection is left as it was.
    job = _Job(policy, source, tuple(extra_ties))
    threshold = conn.prepare_threshold
    conn.prepare_threshold = None
    try:
        if conn not in _planned_at:  # this session's plans will be made at this size
            _planned_at[conn] = _mail_table_size(conn)
        try:
            result = _write_retrying(conn, items, prepared, job, on_state)
        except psycopg.errors.DataError as exc:
            result = _write_one_by_one(conn, items, prepared, job, on_state, exc)
        _replan_as_mail_grows(conn)
        return result
    finally:
        conn.prepare_threshold = threshold


# Per connection: the size of xtbatch.eml when the session's cached plans were made.
_planned_at: weakref.WeakKeyDictionary[psycopg.Connection, int] = weakref.WeakKeyDictionary()


def _mail_table_size(conn: psycopg.Connection) -> int:
    # Through pg_class, not 'xtbatch.eml'::regclass: resolving the name needs USAGE on the
    # schema, and an ordinary user lacking it would fail here, before any statement that
    # can say which grant is missing.
    row = conn.execute(
        """SELECT pg_relation_size(c.oid) FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'xtbatch' AND c.relname = 'eml'"""
    ).fetchone()
    return int(row[0]) if row else 0


def _replan_as_mail_grows(conn: psycopg.Connection) -> None:
    """Drop the session's cached plans each time xtbatch.eml has doubled in size since
    they were made.

    The foreign-key checks of every row this store writes (addresses, ties, details,
    locations all reference the message) run through plans PostgreSQL caches for the
    session. Made while the table holds a few messages - the first batch into a new
    database, when it is small - they scan the table instead of probing its primary key,
    and keep doing so as it grows: a sync whose first batch held 25 messages ran 20,000
    at a tenth of the usual speed, 18 s of it in those checks. Autovacuum's ANALYZE would
    replace the plans eventually, but only a minute or more later. Dropped plans are made
    again, with the table's present size, when next used: a few times while a new
    database fills, hardly ever on one that holds mail already.
    """
    size = _mail_table_size(conn)
    planned = _planned_at.get(conn, 0)
    if size > planned and size >= 2 * planned:
        conn.execute("DISCARD PLANS")
        _planned_at[conn] = size
    elif size < planned // 2:  # emptied (TRUNCATE, VACUUM FULL): grow from here again
        _planned_at[conn] = size


def _write_retrying(
    conn: psycopg.Connection,
    items: Sequence[Incoming],
    prepared: Sequence[PreparedMessage],
    job: _Job,
    on_state: OnState,
) -> BatchResult:
    for attempt in range(1, _RETRIES + 1):
        try:
            with conn.transaction():
                return _write(conn, items, prepared, job, on_state)
        except (
            psycopg.errors.DeadlockDetected,
            psycopg.errors.SerializationFailure,
            psycopg.errors.UniqueViolation,
        ) as exc:
            # A concurrent importer stored some of the same messages first (unique
            # hash), or the two batches locked rows in another order: run it again;
            # the next try finds those messages stored.
            if attempt == _RETRIES:
                raise
            log.info("batch of %d met a concurrent importer (%s); retrying (%d)",
                     len(items), type(exc).__name__, attempt)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise translate(exc, "to store mail") from exc
    raise AssertionError("unreachable")


def _write_one_by_one(
    conn: psycopg.Connection,
    items: Sequence[Incoming],
    prepared: Sequence[PreparedMessage],
    job: _Job,
    on_state: OnState,
    error: psycopg.errors.DataError,
) -> BatchResult:
    """The database refused a value parsed from a message of the batch (a parser bug let
    through something it cannot hold). Store the messages one by one, so that the others
    go in as usual; one still refused is kept by its raw bytes without its parsed fields,
    and its defects say why. A folder never sticks on one message."""

    log.warning("the database refused a batch of %d (%s); storing its messages one by one",
                len(items), error.diag.message_primary)
    total = BatchResult()
    last = len(items) - 1
    for index, (item, parsed) in enumerate(zip(items, prepared, strict=True)):
        state = on_state if index == last else None  # with the last: all others committed
        try:
            if len(items) == 1:
                raise error
            part = _write_retrying(conn, [item], [parsed], job, state)
        except psycopg.errors.DataError as exc:
            warning = (f"A message could not be stored with its parsed fields (the database "
                       f"refused them: {exc.diag.message_primary}); it is kept by its raw "
                       f"bytes, with no addresses, text or ties.")
            part = _write_retrying(conn, [item], [_bare(parsed, exc)], job, state)
            # Said only once the bare message is stored: a refusal of that propagates.
            log.warning("%s Identity %s.", warning, parsed.hash)
            part.warnings.append(warning)
        total.eml_ids += part.eml_ids
        total.new += part.new
        total.ties.update(part.ties)
        total.contacts_created += part.contacts_created
        total.warnings += [w for w in part.warnings if w not in total.warnings]
    return total


def _bare(parsed: PreparedMessage, error: psycopg.errors.DataError) -> PreparedMessage:
    """``parsed`` with nothing the database could refuse: identity, date, size, raw bytes."""
    why = (error.diag.message_primary or type(error).__name__).replace("\x00", "")
    return dataclasses.replace(
        parsed, subject="", body="", message_id=None, in_reply_to=None, references=(),
        reply_to=None, list_id=None, attachments_json="[]", addresses=(), refs=(), search="",
        defects=(f"stored without its parsed fields: the database refused them ({why})",),
    )


def _write(
    conn: psycopg.Connection,
    items: Sequence[Incoming],
    prepared: Sequence[PreparedMessage],
    job: _Job,
    on_state: OnState,
) -> BatchResult:

    result = BatchResult()
    if not items:
        if on_state:
            on_state(conn)
        return result
    _configure(conn)

    # Which messages are new, and for duplicates inside the batch, which one stands for all.
    # eml_hash is Connect's bytea: xtmail's identity hashes are stored as their ASCII bytes
    # (their "x1:" prefix keeps them apart from Connect's MD5 digests).
    # Through xtmail.stored_hashes(), which runs as its owner: row security hides another
    # user's private mail, and a COPY of a message stored privately would hit the unique
    # hash on every retry. The same call names the hashes of removed messages kept out, and
    # the blocked senders come along (docs/privacy.md).
    present: dict[str, int] = {}
    kept_out: set[str] = set()
    blocked: list[tuple[str, bool]] = []
    for kind, key, eml_id, any_party in conn.execute(_KNOWN, (
            [h.encode() for h in sorted({p.hash for p in prepared})],)):
        if kind == "b":
            blocked.append((bytes(key).decode(), bool(any_party)))
        elif eml_id is None:
            kept_out.add(bytes(key).decode("ascii", "replace"))
        else:
            present[bytes(key).decode("ascii", "replace")] = eml_id
    first_of_hash: dict[str, int] = {}
    for idx, p in enumerate(prepared):
        first_of_hash.setdefault(p.hash, idx)
    skipped = {h for h, i in first_of_hash.items()
               if h not in present and (h in kept_out or _is_blocked(prepared[i], blocked))}
    if skipped:
        result.warnings.append(NOT_IMPORTED)
    # Hash order: two writers storing overlapping batches take the unique-index entries in
    # the same order, so one waits for the other instead of deadlocking.
    new_idx = sorted((i for h, i in first_of_hash.items() if h not in present
                      and h not in skipped), key=lambda i: prepared[i].hash)

    contact_of = _contacts_for(conn, [prepared[i] for i in new_idx], job.policy, result)

    new_ids = _allocate_eml_ids(conn, len(new_idx))
    eml_of_hash = dict.fromkeys(skipped, SKIPPED)
    eml_of_hash.update(present)
    eml_of_hash.update((prepared[i].hash, e) for i, e in zip(new_idx, new_ids, strict=True))
    new_set = set(new_idx)
    for idx, p in enumerate(prepared):
        result.eml_ids.append(eml_of_hash[p.hash])
        result.new.append(idx in new_set)

    if new_idx:
        _copy_messages(conn, items, prepared, new_idx, new_ids, job.source,
                       _row_security(conn))
        new = [(eml_id, prepared[idx]) for eml_id, idx in zip(new_ids, new_idx, strict=True)]
        ties: list[tuple[int, str, int]] = []
        for eml_id, p in new:
            for cntct_id in sorted({contact_of[a[1].lower()] for a in p.addresses
                                    if a[1].lower() in contact_of}):
                ties.append((eml_id, registry.CONTACT.code, cntct_id))
        ties += _resolve_references(conn, [(eml_id, p.refs) for eml_id, p in new])
        ties += [(eml_id, code, doc_id) for eml_id in new_ids
                 for code, doc_id in job.extra_ties]
        new_ties = sorted(set(ties + _inherited_ties(conn, new, ties)))
        _copy_ties(conn, new_ties, _row_security(conn))
        for eml_id, code, assc_id in new_ties:
            result.ties.setdefault(eml_id, []).append((code, assc_id))
        gained = _pass_ties_to_stored_replies(
            conn, {eml_id: p.message_id for eml_id, p in new if p.message_id}
        )
        if gained:
            for eml_id in gained:
                result.ties.pop(eml_id, None)
            for eml_id, code, assc_id in conn.execute(
                """SELECT emlassc_eml_id, emlassc_type, emlassc_assc_id FROM xtbatch.emlassc
                    WHERE emlassc_eml_id = ANY(%s) ORDER BY 1, 2, 3""",
                (gained,),
            ):
                result.ties.setdefault(eml_id, []).append((code, assc_id))

    _insert_locations(conn, items, result.eml_ids, new_set)
    if on_state:
        on_state(conn)
    return result


#: The id a message of the batch gets in :attr:`BatchResult.eml_ids` when it was not
#: imported (removed earlier and kept out, or from a blocked sender); its ``new`` is False.
SKIPPED = 0
#: The warning of a batch that skipped messages (one text, so a folder reports it once).
NOT_IMPORTED = ("Some messages were not imported: they were removed earlier and are kept "
                "out, or come from a blocked sender (xtmail visibility list).")

_KNOWN = """
SELECT 'h', hash, eml_id, NULL::boolean FROM xtmail.stored_hashes(%b::bytea[])
UNION ALL
SELECT 'b', convert_to(bs_pattern, 'UTF8'), NULL, bs_any_party FROM xtmail.blocked_sender
"""


def _is_blocked(p: PreparedMessage, blocked: Sequence[tuple[str, bool]]) -> bool:
    """Whether a blocked-sender rule (an address, or a domain with its subdomains; the
    sender only unless the rule says any party) rules the message out."""
    if not blocked:
        return False
    for kind, addr, _ in p.addresses:
        addr = addr.lower()
        domain = addr.rpartition("@")[2]
        for pattern, any_party in blocked:
            if kind != "FROM" and not any_party:
                continue
            if addr == pattern or ("@" not in pattern and (
                    domain == pattern or domain.endswith("." + pattern))):
                return True
    return False


def _row_security(conn: psycopg.Connection) -> bool:
    """Whether row security applies to this connection's role on the mail tables: COPY
    FROM is refused there, so the writer stages its rows in temporary tables and inserts
    them from there. The tables' owner and roles with BYPASSRLS copy straight in."""
    return _catalog_fact(conn, "row_security")


# Staging tables for a role under row security: one set per session, emptied at commit.
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS xtmail_stage_eml ON COMMIT DELETE ROWS AS
    SELECT eml_id, eml_hash, eml_date, eml_subj, eml_body, eml_msg, eml_status
      FROM xtbatch.eml WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS xtmail_stage_msg ON COMMIT DELETE ROWS AS
    SELECT msg_eml_id, msg_date, msg_message_id, msg_in_reply_to, msg_references,
           msg_reply_to, msg_list_id, msg_is_bulk, msg_size, msg_attachments, msg_defects,
           msg_source, msg_search FROM xtmail.msg WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS xtmail_stage_emladdr ON COMMIT DELETE ROWS AS
    SELECT emladdr_eml_id, emladdr_type, emladdr_addr, emladdr_name
      FROM xtbatch.emladdr WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS xtmail_stage_emlassc ON COMMIT DELETE ROWS AS
    SELECT emlassc_eml_id, emlassc_type, emlassc_assc_id FROM xtbatch.emlassc WITH NO DATA
"""

_UNSTAGE = {
    "eml": "INSERT INTO xtbatch.eml (eml_id, eml_hash, eml_date, eml_subj, eml_body, eml_msg, "
           "eml_status) SELECT * FROM pg_temp.xtmail_stage_eml",
    "msg": "INSERT INTO xtmail.msg (msg_eml_id, msg_date, msg_message_id, msg_in_reply_to, "
           "msg_references, msg_reply_to, msg_list_id, msg_is_bulk, msg_size, "
           "msg_attachments, msg_defects, msg_source, msg_search) "
           "SELECT * FROM pg_temp.xtmail_stage_msg",
    "emladdr": "INSERT INTO xtbatch.emladdr (emladdr_eml_id, emladdr_type, emladdr_addr, "
               "emladdr_name) SELECT * FROM pg_temp.xtmail_stage_emladdr",
    "emlassc": "INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id) "
               "SELECT * FROM pg_temp.xtmail_stage_emlassc",
}


def _staged(copy_sql: str, table: str, staged: bool) -> str:
    """``copy_sql`` aimed at the staging table of ``table`` when ``staged``."""
    if not staged:
        return copy_sql
    schema = "xtmail" if table == "msg" else "xtbatch"
    return copy_sql.replace(f"{schema}.{table} ", f"pg_temp.xtmail_stage_{table} ", 1)


def _configure(conn: psycopg.Connection) -> None:
    facts = _facts.setdefault(conn, {})
    if facts.get("configured"):
        return
    try:
        with conn.transaction():
            conn.execute(_SESSION)
    except psycopg.errors.InvalidParameterValue:
        log.info("lz4 TOAST compression unavailable on this server; using the default")
    facts["configured"] = True


def _allocate_eml_ids(conn: psycopg.Connection, count: int) -> list[int]:
    """``count`` new message ids from ``eml_id``'s sequence (the rows are then COPYed)."""
    if not count:
        return []
    rows = conn.execute(
        "SELECT nextval(pg_get_serial_sequence('xtbatch.eml', 'eml_id')) "
        "FROM generate_series(1, %s)",
        (count,),
    ).fetchall()
    if rows[0][0] is None:
        raise DatabaseError(
            "xtbatch.eml.eml_id has no sequence to number new messages with.",
            hint="Give the column a serial or identity default (xTuple Connect's shape).",
        )
    return [int(r[0]) for r in rows]


def _copy_messages(
    conn: psycopg.Connection,
    items: Sequence[Incoming],
    prepared: Sequence[PreparedMessage],
    new_idx: Sequence[int],
    new_ids: Sequence[int],
    source: str,
    staged: bool = False,
) -> None:
    """The new messages, their details and addresses, straight into their tables (through
    staging tables where row security applies: ``staged``).

    COPY, not INSERT ... ON CONFLICT: a message stored meanwhile by a concurrent importer
    raises UniqueViolation, and ``write_batch`` runs the batch again.
    """
    if staged:
        conn.execute(_STAGE)
    with conn.cursor() as cur:
        with cur.copy(_staged(_EML_COPY, "eml", staged)) as copy:
            copy.set_types(_EML_TYPES)
            for idx, eml_id in zip(new_idx, new_ids, strict=True):
                p = prepared[idx]
                # eml_date is the day of the Date header as its sender wrote it.
                copy.write_row((eml_id, p.hash.encode(), p.date.date(), p.subject, p.body,
                                items[idx].raw, EML_STATUS))
        with cur.copy(_staged(_MSG_COPY, "msg", staged)) as copy:
            for idx, eml_id in zip(new_idx, new_ids, strict=True):
                p = prepared[idx]
                copy.write_row((
                    eml_id, p.date, p.message_id, p.in_reply_to, _text_array(p.references),
                    p.reply_to, p.list_id, p.is_bulk, p.size, p.attachments_json,
                    _text_array(p.defects),
                    source, p.search,
                ))
        with cur.copy(_staged(_ADDR_COPY, "emladdr", staged)) as copy:
            copy.set_types(["int4", "text", "text", "text"])
            for idx, eml_id in zip(new_idx, new_ids, strict=True):
                for kind, addr, name in prepared[idx].addresses:
                    # Connect's emladdr_name is NOT NULL: no display name is ''.
                    copy.write_row((eml_id, kind, addr, name or ""))
        if staged:
            for table in ("eml", "msg", "emladdr"):
                cur.execute(_UNSTAGE[table])


def _copy_ties(conn: psycopg.Connection, ties: Sequence[tuple[int, str, int]],
               staged: bool = False) -> None:
    """The ties of messages this batch stores, each once: COPY, not INSERT ... SELECT
    DISTINCT ... ON CONFLICT (no speculative insertion, no sort; with the read-back it
    replaces, about 5 % of the sync's time). A new message has no ties yet, and no other
    session can tie it before this transaction commits: the rows are not visible to it."""
    if not ties:
        return
    with conn.cursor() as cur:
        with cur.copy(_staged(_TIES_COPY, "emlassc", staged)) as copy:
            copy.set_types(["int4", "text", "int4"])
            for tie in ties:
                copy.write_row(tie)
        if staged:
            cur.execute(_UNSTAGE["emlassc"])


def _text_array(values: Sequence[str]) -> str:
    """A ``text[]`` literal of ``values`` (every element quoted), for a text-format COPY:
    psycopg's list dumper looks up a dumper and runs a regular expression per element,
    about a fifth of the writer thread's time in a profile (a few Message-IDs a message)."""
    if not values:
        return "{}"
    return '{"' + '","'.join(
        v.replace("\\", "\\\\").replace('"', '\\"') if "\\" in v or '"' in v else v
        for v in values
    ) + '"}'


def _insert_locations(
    conn: psycopg.Connection,
    items: Sequence[Incoming],
    eml_ids: Sequence[int],
    stored: set[int],
) -> None:
    """Where each copy was found. A copy other than the one whose bytes were just stored
    keeps its own bytes when they differ from the stored message's."""
    rows = [(i, item.location) for i, item in enumerate(items)
            if item.location is not None and eml_ids[i] != SKIPPED]
    if not rows:
        return
    conn.execute(
        """INSERT INTO xtmail.location (loc_eml_id, loc_account, loc_mailbox, loc_uidvalidity,
                                        loc_uid, loc_raw)
           SELECT t.e, t.a, t.m, t.v, t.u,
                  CASE WHEN t.r IS NULL
                         OR t.r = (SELECT eml_msg FROM xtbatch.eml WHERE eml_id = t.e)
                       THEN NULL ELSE t.r END
             FROM unnest(%b::int[], %b::text[], %b::text[], %b::int8[], %b::int8[], %b::bytea[])
                  AS t(e, a, m, v, u, r)
           ON CONFLICT (loc_account, loc_mailbox, loc_uidvalidity, loc_uid) DO NOTHING""",
        (
            [eml_ids[i] for i, _ in rows],
            [loc.account for _, loc in rows],
            [loc.mailbox for _, loc in rows],
            [loc.uidvalidity for _, loc in rows],
            [loc.uid for _, loc in rows],
            [None if i in stored else items[i].raw for i, _ in rows],
        ),
    )


# -- rule 1: contacts -----------------------------------------------------------------------

# One index probe per address (LATERAL): a join with unnest() hashes every contact on each
# batch (several times slower with tens of thousands of contacts), and
# "lower(email) = ANY(array)" lets the planner pick the trigram index, which takes seconds
# for a few hundred addresses.
_MATCH = """
SELECT a.addr, m.id
  FROM unnest(%(addrs)b::text[]) AS a(addr)
 CROSS JOIN LATERAL (
       SELECT u.id FROM (
              SELECT ce.cntcteml_cntct_id AS id FROM cntcteml ce
               WHERE lower(ce.cntcteml_email) = a.addr
              UNION
              SELECT c.cntct_id FROM cntct c WHERE lower(c.cntct_email) = a.addr) AS u
         JOIN cntct k ON k.cntct_id = u.id
        ORDER BY NOT k.cntct_active, u.id) AS m
"""


def match_contacts(conn: psycopg.Connection, addresses: Sequence[str]) -> dict[str, list[int]]:
    """Lower-cased address -> ids of every contact carrying it (any of its addresses),
    active contacts first, each group by id: a contact xTuple deactivated (the merged one of
    a merge that kept it) is chosen only where no active one carries the address."""
    found: dict[str, list[int]] = defaultdict(list)
    if addresses:
        for addr, cntct_id in conn.execute(_MATCH, {"addrs": list(addresses)}):
            found[addr].append(cntct_id)
    return found


def _contacts_for(
    conn: psycopg.Connection,
    messages: Sequence[PreparedMessage],
    policy: ImportPolicy,
    result: BatchResult,
) -> dict[str, int]:
    """Address -> contact for every address of ``messages``, creating contacts as allowed.

    An address carried by several contacts ties the message to the first of them only
    (:func:`match_contacts`: active before inactive, then the lowest id); the store records
    one contact tie per address so that duplicate contacts do not multiply ties.
    """
    names: dict[str, str] = {}
    creatable: set[str] = set()
    allowed: dict[str, bool] = {}  # may_create once per address, not once per occurrence
    for p in messages:
        bulk = policy.exclude_bulk and p.is_bulk
        recipients = sum(1 for a in p.addresses if a[0] != "FROM")
        for kind, addr, name in p.addresses:
            key = addr.lower()
            if name and not names.get(key):
                names[key] = name
            else:
                names.setdefault(key, name)
            if not bulk and policy.creates_from(kind, recipients):
                ok = allowed.get(key)
                if ok is None:
                    ok = allowed[key] = policy.may_create(key)
                if ok:
                    creatable.add(key)
    matched = match_contacts(conn, sorted(names))
    contact_of = {addr: ids[0] for addr, ids in matched.items()}
    to_create = sorted(creatable - contact_of.keys())
    if not to_create:
        return contact_of
    try:
        with conn.transaction():
            # Sorted order: two importers taking overlapping sets cannot deadlock here.
            conn.execute(
                """SELECT pg_advisory_xact_lock(k) FROM (
                       SELECT hashtextextended('xtmail-contact:' || a, 0) AS k
                         FROM unnest(%b::text[]) AS a ORDER BY a) AS locks""",
                (to_create,),
            )
            # Another importer may have created some while we waited for the locks.
            again = match_contacts(conn, to_create)
            contact_of.update({addr: ids[0] for addr, ids in again.items()})
            still = [a for a in to_create if a not in again]
            if still:
                created = create_contacts(conn, [(a, names.get(a, "")) for a in still])
                contact_of.update(created)
                result.contacts_created += len(created)
    except (psycopg.errors.RaiseException, psycopg.errors.InsufficientPrivilege) as exc:
        # xTuple's triggers refuse users without the contact privilege. The mail is still
        # imported and tied to the contacts that exist; the user is told why none were made.
        message = (
            "New contacts were not created: the database refused "
            f"({exc.diag.message_primary}). Ask an administrator for the privilege to "
            "maintain contacts, or turn contact creation off."
        )
        log.warning(message)
        result.warnings.append(message)
    return contact_of


def split_name(display: str, addr: str) -> tuple[str, str]:
    """First and last name from a display name ("Last, First" or "First Last").

    Without a display name, only a local part that reads as a person's name gives one:
    two or more parts of letters only ("john.smith", "jane_doe"). Anything else ("cc10",
    "info", "j.smith2") gives no name: the contact is known by its address, and a person
    names it in xTuple, rather than the CRM filling with contacts called "Cc10".
    """
    name = " ".join(display.replace('"', " ").split())
    if not name or "@" in name:
        local = addr.split("@", 1)[0]
        parts = [p for p in local.replace("_", ".").replace("-", ".").split(".") if p]
        if len(parts) >= 2 and all(p.isalpha() for p in parts):
            return parts[0].capitalize(), " ".join(p.capitalize() for p in parts[1:])
        return "", ""
    if "," in name:
        last, _, first = name.partition(",")
        return first.strip(), last.strip()
    first, _, last = name.rpartition(" ")
    return (first, last) if first else ("", last)


def _catalog_fact(conn: psycopg.Connection, name: str) -> bool:
    """A fact about the database's schema, asked once per connection: a batch runs many
    statements that depend on it, and schema changes come with a new connection."""
    facts = _facts.setdefault(conn, {})
    if name not in facts:
        row = conn.execute(_FACT_QUERIES[name]).fetchone()
        facts[name] = bool(row and row[0])
    return facts[name]


def _has_fetch_next_number(conn: psycopg.Connection) -> bool:
    return _catalog_fact(conn, "fetch_next_number")


def create_contacts(conn: psycopg.Connection, entries: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Create one contact per (address, display name); return address -> new cntct_id.

    The number comes from xTuple's ``fetchNextNumber('ContactNumber')`` where the database
    has it and from xtmail's own sequence otherwise. Triggers are never bypassed.
    """
    number = (
        "fetchNextNumber('ContactNumber')"
        if _has_fetch_next_number(conn)
        else "'X' || nextval('xtmail.contact_number_seq')"
    )
    addrs = [a for a, _ in entries]
    firsts, lasts = zip(*(split_name(n, a) for a, n in entries), strict=True)
    rows = conn.execute(
        sql.SQL(
            """WITH input AS (
                   SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) WITH ORDINALITY
                                AS i(addr, first, last, ord))
               INSERT INTO cntct (cntct_number, cntct_first_name, cntct_last_name, cntct_name,
                                  cntct_email, cntct_owner_username, cntct_created)
               SELECT {number}, first, last, trim(first || ' ' || last), addr, current_user,
                      now()
                 FROM input ORDER BY ord
               RETURNING cntct_id, lower(cntct_email)"""
        ).format(number=sql.SQL(number)),
        (addrs, list(firsts), list(lasts)),
    ).fetchall()
    created = {addr: cntct_id for cntct_id, addr in rows}
    # xTuple's own AFTER INSERT trigger on cntct has already made the primary address row
    # from cntct_email; a database without it (the demo subset) gets it here. One row per
    # contact either way.
    conn.execute(
        """INSERT INTO cntcteml (cntcteml_cntct_id, cntcteml_primary, cntcteml_email)
           SELECT id, true, addr FROM unnest(%b::int[], %b::text[]) AS t(id, addr)
            WHERE NOT EXISTS (SELECT 1 FROM cntcteml x
                               WHERE x.cntcteml_cntct_id = t.id AND x.cntcteml_primary)""",
        (list(created.values()), list(created.keys())),
    )
    return created


# -- rules 2, 3, 4 and 6: document ties --------------------------------------------------------

def insert_ties(conn: psycopg.Connection, ties: Sequence[tuple[int, str, int]]) -> int:
    """Add (eml_id, type, id) ties that are not there yet; return how many were added."""
    if not ties:
        return 0
    eml_ids, types, ids = (list(col) for col in zip(*ties, strict=True))
    cur = conn.execute(
        sql.SQL(
            """INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id)
               SELECT DISTINCT t.e, t.t, t.a
                 FROM unnest(%b::int[], %b::text[], %b::int[]) AS t(e, t, a)
                WHERE {new}"""
        ).format(new=_tie_is_new("t.e", "t.t", "t.a")),
        (eml_ids, types, ids),
    )
    return cur.rowcount


def _tie_is_new(eml: str, kind: str, assc: str) -> sql.Composable:
    """The condition that keeps a tie (eml, kind, assc) out when it is already stored.

    There is no unique index to lean on: xTuple's own merges re-point ties with plain
    UPDATEs, which such an index would make fail (0010). The lookup goes through the
    message's ties (the ``+ 0`` keeps the planner off the (type, id) index: a contact with
    thousands of messages makes that lookup scan them all).
    """
    return sql.SQL(
        """NOT EXISTS (SELECT 1 FROM xtbatch.emlassc x
                        WHERE x.emlassc_eml_id = {eml} AND x.emlassc_type = {kind}
                          AND x.emlassc_assc_id + 0 = {assc})"""
    ).format(eml=sql.SQL(eml), kind=sql.SQL(kind), assc=sql.SQL(assc))


def resolve_documents(
    conn: psycopg.Connection, code: str, numbers: Sequence[str]
) -> dict[str, int]:
    """Visible document number -> id for one document type (unknown numbers left out)."""
    doc = registry.by_code(code)
    number = sql.Identifier(doc.number_column or doc.key)
    # The numbers as the column holds them -> as the mail wrote them.
    as_written: dict[int | str, list[str]] = defaultdict(list)
    if doc.number_is_integer:
        # Compared as integers, so that the column's index serves ("007" is 7); numbers
        # beyond bigint name no document.
        for n in numbers:
            if n.isascii() and n.isdigit() and int(n) < 2**63:
                as_written[int(n)].append(n)
        query = sql.SQL("SELECT {number}, {key} FROM {table} WHERE {number} = ANY(%b::int8[])")
    else:
        for n in numbers:
            as_written[n].append(n)
        query = sql.SQL(
            "SELECT {number}::text, {key} FROM {table} WHERE {number}::text = ANY(%s)")
    if not as_written:
        return {}
    found: dict[str, int] = {}
    try:
        with conn.transaction():
            rows = conn.execute(
                query.format(number=number, key=sql.Identifier(doc.key),
                             table=sql.Identifier(doc.table)),
                (list(as_written),),
            )
            for num, doc_id in rows:
                for written in as_written.get(num, ()):
                    found[written] = doc_id
            if not doc.number_is_integer:
                # Numbers are matched case-insensitively as a fallback ("s-50123", "ttoys").
                rest = [n for n in numbers if n not in found]
                if rest:
                    query_ci = sql.SQL(
                        "SELECT upper({number}), {key} FROM {table} "
                        "WHERE upper({number}) = ANY(%s)"
                    ).format(number=number, key=sql.Identifier(doc.key),
                             table=sql.Identifier(doc.table))
                    upper = {n.upper(): n for n in rest}
                    for num, doc_id in conn.execute(query_ci, (list(upper),)):
                        found[upper[num]] = doc_id
    except psycopg.errors.UndefinedTable:
        # A database without this document's table (an xTuple edition lacking a module).
        return {}
    return found


def _resolve_references(
    conn: psycopg.Connection, refs_of: Sequence[tuple[int, tuple[tuple[str, str], ...]]]
) -> list[tuple[int, str, int]]:
    by_code: dict[str, set[str]] = defaultdict(set)
    for _, refs in refs_of:
        for code, number in refs:
            by_code[code].add(number)
    resolved = {code: resolve_documents(conn, code, sorted(nums)) for code, nums in by_code.items()}
    # A quote converted to a sales order: its reference reaches the order too, also when the
    # quote was deleted on conversion (xTuple does unless told to keep converted quotes).
    orders = _orders_of_quotes(conn, sorted(by_code.get(registry.by_code("Q").code, ())))
    ties: list[tuple[int, str, int]] = []
    unresolved: list[tuple[int, str, str]] = []
    for eml_id, refs in refs_of:
        for code, number in refs:
            doc_id = resolved[code].get(number)
            converted = orders.get(number, ()) if code == "Q" else ()
            ties += [(eml_id, "S", order) for order in converted]
            if doc_id is not None:
                ties.append((eml_id, code, doc_id))
            elif not converted:
                unresolved.append((eml_id, code, number))
    if unresolved:
        e, c, n = (list(col) for col in zip(*unresolved, strict=True))
        conn.execute(
            """INSERT INTO xtmail.unresolved_ref (uref_eml_id, uref_code, uref_number)
               SELECT * FROM unnest(%b::int[], %b::text[], %b::text[])
               ON CONFLICT DO NOTHING""",
            (e, c, n),
        )
    return ties


def _orders_of_quotes(conn: psycopg.Connection, numbers: Sequence[str]) -> dict[str, list[int]]:
    """Quote number (as written) -> the sales orders converted from it."""
    if not numbers or not _catalog_fact(conn, "quote_number"):
        return {}
    upper = {n.upper(): n for n in numbers}
    orders: dict[str, list[int]] = defaultdict(list)
    for number, cohead_id in conn.execute(
        "SELECT upper(cohead_quote_number), cohead_id FROM cohead "
        "WHERE upper(cohead_quote_number) = ANY(%s) ORDER BY 2",
        (list(upper),),
    ):
        orders[upper[number]].append(cohead_id)
    return orders


# The document ties (not contact ties) of the stored messages carrying these Message-IDs.
# The ties are read by their message ids as an array, so that the tie index is probed
# for each: as a join, the planner hashed every tie of every message once per batch (2.6
# million rows read for 20,000 messages) while the table's statistics were those of a
# much smaller one, which during a first sync they always are.
_PARENT_TIES = """
WITH p AS MATERIALIZED (
    SELECT msg_message_id AS mid, msg_eml_id AS id FROM xtmail.msg
     WHERE msg_message_id = ANY(%b::text[]))
SELECT p.mid, p.id, a.emlassc_type, a.emlassc_assc_id
  FROM xtbatch.emlassc a JOIN p ON p.id = a.emlassc_eml_id
 WHERE a.emlassc_eml_id = ANY(ARRAY(SELECT id FROM p)) AND a.emlassc_type <> 'T'
"""


def _inherited_ties(
    conn: psycopg.Connection,
    new: Sequence[tuple[int, PreparedMessage]],
    ties: Sequence[tuple[int, str, int]],
) -> list[tuple[int, str, int]]:
    """Rule 3: a reply gets the document ties of the messages it answers.

    Contact ties are not inherited: those come from the reply's own addresses. The parents
    are stored messages (one lookup by Message-ID for the whole batch) and messages of this
    batch, whose ties are ``ties``; repeated so that a chain arriving together (reply to a
    reply) passes ties all the way down. Returns the ties to add.
    """
    answers = {eml_id: (*p.references, *((p.in_reply_to,) if p.in_reply_to else ()))
               for eml_id, p in new if p.in_reply_to or p.references}
    if not answers:
        return []
    new_ids = {eml_id for eml_id, _ in new}
    stored: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
    wanted = sorted({mid for mids in answers.values() for mid in mids})
    for mid, parent, code, assc in conn.execute(_PARENT_TIES, (wanted,)):
        if parent not in new_ids:  # this batch's messages: their ties are ``ties``
            stored[mid].append((parent, code, assc))
    in_batch: dict[str, list[int]] = defaultdict(list)
    for eml_id, p in new:
        if p.message_id:
            in_batch[p.message_id].append(eml_id)
    held: dict[int, set[tuple[str, int]]] = defaultdict(set)  # document ties per new message
    for eml_id, code, assc in ties:
        if code != registry.CONTACT.code:
            held[eml_id].add((code, assc))
    added: list[tuple[int, str, int]] = []
    for _ in range(8):  # a chain of replies within one batch; deeper ones are absurd
        before = len(added)
        for eml_id, mids in answers.items():
            mine = held[eml_id]
            for mid in mids:
                gained = {(code, assc) for parent, code, assc in stored.get(mid, ())
                          if parent != eml_id}
                for parent in in_batch.get(mid, ()):
                    if parent != eml_id:
                        gained |= held[parent]
                for code, assc in gained - mine:
                    mine.add((code, assc))
                    added.append((eml_id, code, assc))
        if len(added) == before:
            break
    return added


_TIES_DOWN = """
WITH parent AS MATERIALIZED (
    SELECT p.msg_eml_id AS id, p.msg_message_id AS mid, pa.emlassc_type AS kind,
           pa.emlassc_assc_id AS assc
      FROM xtmail.msg p
      JOIN xtbatch.emlassc pa ON pa.emlassc_eml_id = p.msg_eml_id AND pa.emlassc_type <> 'T'
     WHERE p.msg_eml_id = ANY(%(ids)b::int[]) AND pa.emlassc_eml_id = ANY(%(ids)b::int[])
       AND p.msg_message_id IS NOT NULL
), child AS MATERIALIZED (
    -- One lookup in the answers index for all the parents' message-ids at once.
    SELECT c.msg_eml_id AS id, c.msg_references || c.msg_in_reply_to AS answers
      FROM xtmail.msg c
     WHERE (c.msg_references || c.msg_in_reply_to) && (SELECT array_agg(mid) FROM parent)
)
INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id)
SELECT DISTINCT ch.id, pr.kind, pr.assc
  FROM child ch JOIN parent pr ON pr.mid = ANY(ch.answers) AND pr.id <> ch.id
 WHERE {new}
RETURNING emlassc_eml_id
"""


def _pass_ties_to_stored_replies(conn: psycopg.Connection, parents: dict[int, str]) -> list[int]:
    """Rule 3 the other way round: stored replies to ``parents`` get the parents' ties.

    ``parents`` maps the batch's new messages to their Message-IDs. A reply can be stored
    before the message it answers (folders synced in another order, an archive imported
    late). Repeated down the chain of replies to replies. Returns the ids of the messages
    that gained ties: stored ones, so their Email tabs can refresh, and now and then one of
    the batch (a reply to a stored reply that just gained them).
    """
    if not parents:
        return []
    # Usually nothing stored answers a new message: one index probe says so. No LIMIT, and
    # the array behind a sub-select the planner cannot look into: seeing a few hundred
    # values, or hoping LIMIT 1 ends a scan early, it chose a sequential scan of the whole
    # table per batch (growing with the table) over an index lookup.
    answered = conn.execute(
        """SELECT c.msg_eml_id FROM xtmail.msg c
            WHERE (c.msg_references || c.msg_in_reply_to) && (SELECT %b::text[])
              AND c.msg_eml_id <> ALL(%b::int[])""",
        (list(parents.values()), list(parents)),
    ).fetchone()
    if answered is None:
        return []
    query = sql.SQL(_TIES_DOWN).format(new=_tie_is_new("ch.id", "pr.kind", "pr.assc"))
    gained: list[int] = []
    frontier = list(parents)
    for _ in range(8):
        children = sorted({row[0] for row in conn.execute(query, {"ids": frontier})})
        if not children:
            break
        gained += children
        frontier = children
    return sorted(set(gained))


def check_document(conn: psycopg.Connection, code: str, doc_id: int) -> None:
    """Raise DatabaseError unless document ``code``/``doc_id`` exists."""
    doc = registry.by_code(code)
    row = conn.execute(
        sql.SQL("SELECT 1 FROM {table} WHERE {key} = %s").format(
            table=sql.Identifier(doc.table), key=sql.Identifier(doc.key)
        ),
        (doc_id,),
    ).fetchone()
    if row is None:
        raise DatabaseError(f"There is no {doc.label} with id {doc_id}.")


class Importer:
    """Writes prepared messages, one transaction per batch, and applies the association rules.

    ``conn`` is a psycopg connection in autocommit mode; the importer opens its own
    transactions. ``on_state`` lets the caller write its progress marker (a folder's last
    UID) inside the same transaction as the messages it covers.
    """

    def __init__(self, conn: psycopg.Connection, policy: ImportPolicy | None = None) -> None:
        self.conn = conn
        self.policy = policy or ImportPolicy()

    def import_batch(
        self,
        items: Sequence[Incoming],
        prepared: Sequence[PreparedMessage] | None = None,
        *,
        source: str = "imap",
        extra_ties: Sequence[tuple[str, int]] = (),
        on_state: Callable[[psycopg.Connection], None] | None = None,
    ) -> BatchResult:
        if prepared is None:
            prepared = prepare_many(items)
        return write_batch(
            self.conn,
            items,
            prepared,
            policy=self.policy,
            source=source,
            extra_ties=extra_ties,
            on_state=on_state,
        )
