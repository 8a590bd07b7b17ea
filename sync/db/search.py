"""Searches behind the Attach dialog: contacts, and mail by words and address substrings.

Matching rules (docs/attach_dialog.md):

* Words: every ``\\w+`` word of the search text must be a word of the message's subject,
  addresses, display names or body (``xtmail.msg.msg_search``, split by the same
  :func:`~xtmail.sync.mail.words.search_query` the writer used); the last word also matches
  as a prefix once it has at least three characters, so typing narrows as you go.
* Address substrings: a search text holding an ``@`` (and no spaces) also matches every
  From/To/Cc/Bcc address containing it, so "da@exa" finds ada@example.com; a complete
  address matches that address. A message matching either rule is a hit.
* A contact filter keeps the mail tied to that contact or carrying one of its addresses.

Why the query shape is chosen at run time: "the newest N hits" is cheap for rare terms by
fetching every hit through an index and sorting them (a GIN index has no order, and the date
lives in another table than the words), and cheap for common terms by walking the mail newest
first and testing each message; each way is slow for the other kind of term. The planner's
estimate decides where it is reliable (common words, contacts); elsewhere a first window of
the walk measures how common the hits are, and the cheaper way finishes the search.
Measured in bench/attach_search.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from xtmail.sync.mail.words import search_query
from xtmail.sync.values import ContactRow, MessageRow

__all__ = [
    "ContactRow", "MessageRow", "address_fragment", "message_query", "search_contacts",
    "search_message_ids", "search_messages",
]

log = logging.getLogger(__name__)

Params = dict[str, Any]
AsyncConn = psycopg.AsyncConnection[Any]

#: Shortest last word matched as a prefix, and shortest run of word characters in an address
#: fragment: a shorter prefix matches much of the vocabulary, and a trigram index finds
#: nothing to look up in a shorter fragment.
MIN_FRAGMENT = 3
#: Reliably estimated hits up to which all of them are fetched and sorted by date.
CANDIDATE_ESTIMATE = 5_000
#: Estimated share of matching messages from which the walk starts at once.
DENSE = 0.05
#: Messages tested to measure how common hits are when the estimate cannot tell.
PROBE_WINDOW = 500
#: Cost of fetching one hit through the index and sorting it, relative to testing one
#: message of the walk (measured by bench/attach_search.py).
_CANDIDATE_COST = 1.6
#: The same where the walk reads the words through the search index (see _Walk): testing a
#: message then costs an index entry.
_CANDIDATE_COST_CHEAP = 15.0
#: Cost of checking a query on one message's words, relative to reading one entry of the
#: search index (messages hold several hundred words, stored out of line).
_RECHECK_COST = 25.0
_MIN_WINDOW = 256
_MAX_WINDOW = 50_000
#: Windows read through the search index (see _Walk) may be this many times larger.
_CHEAP_WINDOW_FACTOR = 10

_WORD_CHARS = re.compile(r"\w{%d}" % MIN_FRAGMENT)  # noqa: UP031  # a regex, not a message
_LAST_PREFIX = re.compile(r"'(\w+)':\*$")
_COMPLETE_ADDRESS = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)*\.[^\W\d_]{2,}$")
_NEWEST_KEY = sql.SQL("coalesce(e.eml_date, '-infinity'::timestamptz)")
# The same key on xtmail.msg itself, as its index (migration 0004) holds it: the exact time
# is xtmail's (Connect's eml_date is a date). Mail only Connect stored has no words to search
# and no row there; the walk passes it by.
_MSG_NEWEST_KEY = sql.SQL("coalesce(m.msg_date, '-infinity'::timestamptz)")


# -- contacts ----------------------------------------------------------------------------------

_NAME = sql.SQL(
    "lower(coalesce(c.cntct_first_name, '') || ' ' || coalesce(c.cntct_last_name, '') || ' '"
    " || coalesce(c.cntct_name, ''))"
)


def _like_pattern(fragment: str) -> str:
    escaped = fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_contacts(conn: AsyncConn, text: str, limit: int = 50) -> list[ContactRow]:
    """Contacts whose name, number or any address contains every space-separated part of
    ``text`` (case-insensitive). Exact number or address first, then names starting with
    the text, then the rest, by name."""
    tokens = sorted({t for t in text.lower().split() if t}, key=len, reverse=True)
    if not tokens:
        return []
    params: Params = {"limit": limit, "exact": text.strip().lower(),
                      "prefix": _like_pattern(text.strip().lower())[1:]}
    # The longest part (p0) drives the trigram indexes; every part must match some field.
    filters: list[sql.Composable] = []
    for i, token in enumerate(tokens):
        params[f"p{i}"] = _like_pattern(token)
        p = sql.Placeholder(f"p{i}")
        filters.append(sql.SQL(
            "({name} LIKE {p} OR lower(c.cntct_number) LIKE {p} "
            "OR lower(coalesce(c.cntct_email, '')) LIKE {p} "
            "OR EXISTS (SELECT 1 FROM cntcteml x WHERE x.cntcteml_cntct_id = c.cntct_id "
            "AND lower(x.cntcteml_email) LIKE {p}))"
        ).format(name=_NAME, p=p))
    query = sql.SQL(
        """WITH ids AS (
               SELECT c.cntct_id FROM cntct c
                WHERE {name} LIKE %(p0)s OR lower(c.cntct_number) LIKE %(p0)s
                   OR lower(c.cntct_email) LIKE %(p0)s
               UNION
               SELECT cntcteml_cntct_id FROM cntcteml WHERE lower(cntcteml_email) LIKE %(p0)s)
           SELECT c.cntct_id, c.cntct_number,
                  coalesce(nullif(trim(coalesce(c.cntct_first_name, '') || ' '
                                       || coalesce(c.cntct_last_name, '')), ''),
                           c.cntct_name, ''),
                  coalesce(nullif(c.cntct_email, ''),
                           (SELECT e.cntcteml_email FROM cntcteml e
                             WHERE e.cntcteml_cntct_id = c.cntct_id
                             ORDER BY e.cntcteml_primary DESC, e.cntcteml_id LIMIT 1), '')
             FROM ids JOIN cntct c ON c.cntct_id = ids.cntct_id
            WHERE {filters}
            ORDER BY CASE WHEN lower(c.cntct_number) = %(exact)s
                            OR lower(coalesce(c.cntct_email, '')) = %(exact)s THEN 0
                          WHEN {name} LIKE %(prefix)s THEN 1 ELSE 2 END,
                     3, c.cntct_number
            LIMIT %(limit)s"""
    ).format(name=_NAME, filters=sql.SQL(" AND ").join(filters))
    cur = await conn.execute(query, params)
    return [ContactRow(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in await cur.fetchall()]


# -- messages ----------------------------------------------------------------------------------


def message_query(text: str) -> str | None:
    """The ``tsquery`` literal for ``text``: :func:`search_query`, without the prefix match
    on a last word shorter than :data:`MIN_FRAGMENT` (one or two letters match most of the
    vocabulary and narrow nothing)."""
    query = search_query(text)
    if query is None:
        return None
    last = _LAST_PREFIX.search(query)
    if last and len(last[1]) < MIN_FRAGMENT:
        query = query[: -len(":*")]
    return query


def address_fragment(text: str) -> str | None:
    """The part of ``text`` matched as an address substring, or ``None``.

    Only a text holding an ``@``, no spaces and a run of :data:`MIN_FRAGMENT` word
    characters qualifies. Without an ``@`` the words rule already finds every address whose
    words start with what was typed, and a substring search for every word typed would cost a
    trigram scan of all address rows each time.
    """
    fragment = text.strip().lower()
    if "@" not in fragment or any(ch.isspace() for ch in fragment):
        return None
    return fragment if _WORD_CHARS.search(fragment) else None


@dataclass(frozen=True, slots=True)
class _Source:
    """One way to find messages: rows of ``table`` meeting ``cond``, whose ``id_col`` is an
    eml_id. ``estimate`` is the planner's guess of how many; ``reliable`` is False where the
    statistics cannot tell rare from middling (words outside the most common ones)."""

    table: sql.Composable
    id_col: sql.Composable
    cond: sql.Composable
    estimate: float
    reliable: bool = True
    #: The same condition written to find every row through an index, where ``cond`` is
    #: the form that tests one message's rows (None: ``cond`` serves both).
    find: sql.Composable | None = None
    #: ``table`` is ``xtmail.msg``, which holds the date too.
    on_msg: bool = False
    #: Entries of the search index the condition reads (the words' estimates together).
    postings: float = 0.0

    def ids(self) -> sql.Composable:
        """Rows (id, date, dated): a source on ``xtmail.msg`` reads each hit's date on the
        row it found; the others leave it to be looked up (``dated`` false)."""
        date = (sql.SQL("msg_date, true") if self.on_msg
                else sql.SQL("NULL::timestamptz, false"))
        return sql.SQL("SELECT {c} AS id, {date} FROM {t} WHERE {cond}").format(
            c=self.id_col, date=date, t=self.table, cond=self.find or self.cond)

    def test(self) -> sql.Composable:
        """Whether message ``e`` is found. OFFSET 0 keeps this one probe per message: without
        it the planner may first build the source's whole result in a hash table."""
        return sql.SQL("EXISTS (SELECT 1 FROM {t} WHERE {c} = e.eml_id AND {cond} OFFSET 0)"
                       ).format(c=self.id_col, t=self.table, cond=self.cond)


#: A condition on a message: it matches when any source of the group finds it.
_Group = tuple[_Source, ...]


def _estimate(group: _Group) -> float:
    return sum(s.estimate for s in group)


def _reliable(group: _Group) -> bool:
    return all(s.reliable for s in group)


class _Planner:
    """Collects the query parameters and asks the planner how much each source finds."""

    def __init__(self, conn: AsyncConn) -> None:
        self.conn = conn
        self.params: Params = {}

    async def estimate(self, table: str, cond: str) -> float:
        query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {t} WHERE {cond}").format(
            t=sql.SQL(table), cond=sql.SQL(cond))
        row = await (await self.conn.execute(query, self.params)).fetchone()
        plan: Any = row[0] if row else [{"Plan": {"Plan Rows": 0}}]
        if isinstance(plan, str):
            plan = json.loads(plan)
        return float(plan[0]["Plan"]["Plan Rows"])

    async def source(self, table: str, id_col: str, cond: str, *, reliable: bool = True,
                     find: str | None = None) -> _Source:
        return _Source(sql.SQL(table), sql.SQL(id_col), sql.SQL(cond),
                       await self.estimate(table, find or cond), reliable,
                       sql.SQL(find) if find else None, on_msg=table == "xtmail.msg")

    async def text_group(self, text: str, total: float) -> _Group | None:
        params = self.params
        sources: list[_Source] = []
        query = message_query(text)
        if query is not None:
            params["q"] = query
            exact, _, prefix = query.rpartition(" & ")
            if prefix.endswith(":*") and exact:
                # The index reads the postings of every word a prefix starts before anything
                # narrows them; when the exact words narrow far more, they alone drive the
                # index and the prefix is checked on the rows they find (reading each row's
                # words, which costs far more than an index entry: _RECHECK_COST).
                params["q_exact"], params["q_prefix"] = exact, prefix
                e_exact = await self.estimate("xtmail.msg", "msg_search @@ %(q_exact)s::tsquery")
                e_prefix = await self.estimate("xtmail.msg",
                                               "msg_search @@ %(q_prefix)s::tsquery")
                by_exact = e_exact * _RECHECK_COST <= e_prefix
                cond = ("msg_search @@ %(q_exact)s::tsquery "
                        "AND ts_match_vq(msg_search, %(q)s::tsquery)"
                        if by_exact else "msg_search @@ %(q)s::tsquery")
                sources.append(_Source(sql.SQL("xtmail.msg"), sql.SQL("msg_eml_id"),
                                       sql.SQL(cond), e_exact * e_prefix / max(total, 1.0),
                                       reliable=False, on_msg=True,
                                       postings=e_exact if by_exact else e_exact + e_prefix))
            else:
                source = await self.source("xtmail.msg", "msg_eml_id",
                                           "msg_search @@ %(q)s::tsquery", reliable=False)
                sources.append(dataclasses.replace(source, postings=source.estimate))
        fragment = address_fragment(text)
        if fragment is not None:
            if _COMPLETE_ADDRESS.match(fragment):
                # A whole address: an exact lookup. Substrings would only add longer addresses
                # ending the same way, and the trigram scan for one is slow: ".example.com"
                # holds trigrams found in most addresses.
                params["addr"] = fragment
                sources.append(await self.source("xtbatch.emladdr", "emladdr_eml_id",
                                                 "lower(emladdr_addr) = lower(%(addr)s)"))
            else:
                # The distinct addresses holding the fragment (trigram index, migration
                # 0006), then their rows; a single message's rows are tested directly.
                params["pat"] = _like_pattern(fragment)
                sources.append(await self.source(
                    "xtbatch.emladdr", "emladdr_eml_id",
                    "lower(emladdr_addr) LIKE lower(%(pat)s)",
                    find="lower(emladdr_addr) = ANY(ARRAY(SELECT x.addr FROM xtmail.address x"
                         " WHERE x.addr LIKE lower(%(pat)s)))",
                ))
        return tuple(sources) or None

    async def contact_group(self, contact_id: int) -> _Group:
        cur = await self.conn.execute(
            """SELECT lower(cntct_email) FROM cntct
                WHERE cntct_id = %(cid)s AND coalesce(cntct_email, '') <> ''
               UNION
               SELECT lower(cntcteml_email) FROM cntcteml WHERE cntcteml_cntct_id = %(cid)s""",
            {"cid": contact_id},
        )
        self.params["cid"] = contact_id
        self.params["caddrs"] = [str(r[0]) for r in await cur.fetchall()]
        sources = [await self.source("xtbatch.emlassc", "emlassc_eml_id",
                                     "emlassc_type = 'T' AND emlassc_assc_id = %(cid)s")]
        if self.params["caddrs"]:
            sources.append(await self.source("xtbatch.emladdr", "emladdr_eml_id",
                                             "lower(emladdr_addr) = ANY(%(caddrs)b::text[])"))
        return tuple(sources)


def _all_tests(groups: Sequence[_Group]) -> sql.Composable:
    if not groups:
        return sql.SQL("true")
    return sql.SQL(" AND ").join(
        sql.SQL("({})").format(sql.SQL(" OR ").join(s.test() for s in g)) for g in groups
    )


async def _by_candidates(
    conn: AsyncConn, driver: _Group, others: Sequence[_Group], params: Params, limit: int,
    cap: int,
) -> list[int] | None:
    """The newest ``limit`` matches among everything ``driver`` finds, or ``None`` when it
    finds more than ``cap`` (then walking is cheaper)."""
    ctes = [
        sql.SQL("s{i} AS MATERIALIZED ({ids} LIMIT %(cap)s + 1)").format(i=sql.Literal(i),
                                                                          ids=s.ids())
        for i, s in enumerate(driver)
    ]
    overflow = sql.SQL(" OR ").join(
        sql.SQL("(SELECT count(*) FROM s{i}) > %(cap)s").format(i=sql.Literal(i))
        for i in range(len(driver))
    )
    union = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT * FROM s{i}").format(i=sql.Literal(i)) for i in range(len(driver))
    )
    # OFFSET 0 keeps the date lookup one index probe per candidate: told the CTE may hold cap
    # rows, the planner would otherwise hash-join it against a scan of all of xtbatch.eml.
    # Hits of the words carry their date already (read on the row the index found).
    query = sql.SQL(
        """WITH {ctes}, c AS MATERIALIZED (
               SELECT id, max(date) AS date, bool_or(dated) AS dated
                 FROM ({union}) AS u(id, date, dated) GROUP BY id)
           SELECT 0, NULL::integer WHERE {overflow}
           UNION ALL
           (SELECT 1, e.eml_id FROM c
              CROSS JOIN LATERAL (SELECT c.id AS eml_id,
                                         CASE WHEN c.dated THEN c.date
                                              ELSE (SELECT x.msg_date FROM xtmail.msg x
                                                     WHERE x.msg_eml_id = c.id) END AS eml_date
                                  OFFSET 0) AS e
             WHERE NOT ({overflow}) AND {tests}
             ORDER BY {key} DESC, e.eml_id DESC
             LIMIT %(limit)s)"""
    ).format(ctes=sql.SQL(", ").join(ctes), union=union, overflow=overflow,
             tests=_all_tests(others), key=_NEWEST_KEY)
    cur = await conn.execute(query, {**params, "cap": cap, "limit": limit})
    rows = await cur.fetchall()
    if any(kind == 0 for kind, _ in rows):
        log.debug("candidates: more than %d", cap)
        return None
    log.debug("candidates: %d hits", len(rows))
    return [int(eml_id) for _, eml_id in rows]


_Cursor = tuple[datetime | None, int]


class _Walk:
    """Tests messages newest first, a window at a time, remembering where it stopped.

    A window is the next ``window`` messages by date, bounded by the date (and id) of its
    oldest one. Where a condition holds the words alone (a group of one source on
    ``xtmail.msg``), it is part of the window's own query, so that PostgreSQL can combine
    the search index with the date range (a BitmapAnd) instead of reading each message's
    words: with several hundred words a message, reading them costs far more than the index
    entries. The other conditions are tested on the rows found, one probe each.
    """

    def __init__(self, conn: AsyncConn, groups: Sequence[_Group], params: Params) -> None:
        self.conn = conn
        prefilter = next((g for g in groups if len(g) == 1 and g[0].on_msg), None)
        self.prefilter = sql.SQL("true") if prefilter is None else prefilter[0].cond
        self.postings = 0.0 if prefilter is None else prefilter[0].postings
        self.tests = _all_tests([g for g in groups if g is not prefilter])
        self.all_tests = _all_tests(groups)
        #: Testing a message costs an index entry here, not a probe.
        self.cheap = prefilter is not None
        self.params = params
        self.hits: list[int] = []
        self.scanned = 0
        self.after: _Cursor | None = None
        self.exhausted = False

    @property
    def density(self) -> float:
        return max(len(self.hits), 0.5) / max(self.scanned, 1)

    async def step(self, window: int, *, by_index: bool = True) -> None:
        """Test the next ``window`` messages; ``by_index`` False: read their words even
        where the index could be used (the measuring window: the estimate of how many
        index entries the query reads may be far off)."""
        # The key alone as well as the (key, id) pair: PostgreSQL combines an index range
        # with the search index only for a plain comparison, not a row comparison.
        cursor = sql.SQL("true") if self.after is None else sql.SQL(
            "{key} <= coalesce(%(after_date)s::timestamptz, '-infinity'::timestamptz) AND "
            "({key}, m.msg_eml_id) < (coalesce(%(after_date)s::timestamptz, "
            "'-infinity'::timestamptz), %(after_id)s)"
        ).format(key=_MSG_NEWEST_KEY)
        run = {**self.params, "window": window}
        if self.after is not None:
            run["after_date"], run["after_id"] = self.after
        # The window's oldest message (none: the window holds all the rest), asked first so
        # that the planner knows the range when it chooses how to find the hits in it.
        bound = await (await self.conn.execute(sql.SQL(
            """SELECT m.msg_date, m.msg_eml_id FROM xtmail.msg m WHERE {cursor}
                ORDER BY {key} DESC, m.msg_eml_id DESC OFFSET %(window)s - 1 LIMIT 1"""
        ).format(cursor=cursor, key=_MSG_NEWEST_KEY), run)).fetchone()
        run["lo_date"], run["lo_id"] = bound if bound else (None, -2**31)
        # Through the index where the window's messages' words would cost more to read than
        # the index's entries for the query (common words and short prefixes have many).
        by_index = by_index and self.cheap and window * _RECHECK_COST > self.postings
        # Inside: the window's date range as plain comparisons (an index range PostgreSQL
        # can combine with the search index) and the prefilter; outside (OFFSET 0 keeps
        # them there), the exact bounds on (date, id) and the other tests.
        upper = sql.SQL("true") if self.after is None else sql.SQL(
            "{key} <= coalesce(%(after_date)s::timestamptz, '-infinity'::timestamptz)"
        ).format(key=_MSG_NEWEST_KEY)
        exact = sql.SQL("true") if self.after is None else sql.SQL(
            "(e.k, e.eml_id) < (coalesce(%(after_date)s::timestamptz, "
            "'-infinity'::timestamptz), %(after_id)s)")
        query = sql.SQL(
            """SELECT e.eml_id, e.eml_date
                 FROM (SELECT m.msg_eml_id AS eml_id, m.msg_date AS eml_date, {key} AS k
                         FROM xtmail.msg m
                        WHERE {upper}
                          AND {key} >= coalesce(%(lo_date)s::timestamptz,
                                                '-infinity'::timestamptz)
                          AND {prefilter}
                       OFFSET 0) AS e
                WHERE {exact}
                  AND (e.k, e.eml_id) >= (coalesce(%(lo_date)s::timestamptz,
                                                   '-infinity'::timestamptz), %(lo_id)s)
                  AND {tests}"""
        ).format(upper=upper, exact=exact, key=_MSG_NEWEST_KEY,
                 prefilter=self.prefilter if by_index else sql.SQL("true"),
                 tests=self.tests if by_index else self.all_tests)
        if by_index:
            # Reading a message's words costs far more than the planner assumes (several
            # hundred words, stored out of line): kept from testing them row by row, it
            # combines the two indexes.
            await self.conn.execute("SET LOCAL enable_indexscan = off")
        try:
            cur = await self.conn.execute(query, run)
        finally:
            if by_index:
                await self.conn.execute("SET LOCAL enable_indexscan = on")
        found = [(date, int(eml_id)) for eml_id, date in await cur.fetchall()]
        found.sort(key=_newest_first)
        self.hits.extend(eml_id for _, eml_id in found)
        # Without a bound the window held the rest, fewer than asked: all is tested.
        self.scanned += window
        self.exhausted = bound is None
        if bound is not None:
            self.after = (bound[0], int(bound[1]))
        log.debug("walk: window %d, hits %d%s", window, len(found),
                  "" if bound else ", all tested")

    async def measure(self, window: int, total: float) -> None:
        """Test the newest ``window`` messages by their words, and learn from the share of
        hits how many index entries the query reads at least (a short prefix can match a
        large share of the mail where the estimate said few)."""
        await self.step(window, by_index=False)
        self.postings = max(self.postings, self.density * total)

    async def run(self, limit: int, density: float, total: float) -> list[int]:
        if self.cheap and not self.scanned:
            await self.measure(min(PROBE_WINDOW, _window(limit, density)), total)
            density = self.density
        while len(self.hits) < limit and not self.exhausted:
            await self.step(_window(limit - len(self.hits), density, cheap=self.cheap))
            density = self.density
        return self.hits[:limit]


def _newest_first(item: tuple[datetime | None, int]) -> tuple[int, float, int]:
    date, eml_id = item
    # Descending (date, id) with missing dates last, as the index orders them.
    return (0, -date.timestamp(), -eml_id) if date is not None else (1, 0.0, -eml_id)


def _window(needed: int, density: float, *, cheap: bool = False) -> int:
    # Through the index a window costs little more for being larger, and each one reads
    # the query's index entries again: a wider margin saves a window more often.
    top = _MAX_WINDOW * (_CHEAP_WINDOW_FACTOR if cheap else 1)
    margin = 2.0 if cheap else 1.2
    return max(_MIN_WINDOW, min(top, math.ceil(needed / max(density, 1e-9) * margin)))


async def _rows(conn: AsyncConn, eml_ids: list[int]) -> list[MessageRow]:
    if not eml_ids:
        return []
    cur = await conn.execute(
        """SELECT e.eml_id, coalesce(m.msg_date, e.eml_date::timestamptz),
                  coalesce(e.eml_subj, ''), a.emladdr_type,
                  CASE WHEN coalesce(a.emladdr_name, '') = '' THEN a.emladdr_addr
                       ELSE a.emladdr_name || ' <' || a.emladdr_addr || '>' END,
                  coalesce(nullif(a.emladdr_name, ''), a.emladdr_addr)
             FROM xtbatch.eml e
             LEFT JOIN xtmail.msg m ON m.msg_eml_id = e.eml_id
             LEFT JOIN xtbatch.emladdr a
               ON a.emladdr_eml_id = e.eml_id AND a.emladdr_type IN ('FROM', 'TO', 'CC')
            WHERE e.eml_id = ANY(%b::integer[])
            ORDER BY e.eml_id, a.emladdr_id""",
        (eml_ids,),
    )
    heads: dict[int, tuple[datetime | None, str]] = {}
    addresses: dict[tuple[int, str], list[str]] = {}
    names: dict[tuple[int, str], list[str]] = {}
    for eml_id, date, subject, kind, full, name in await cur.fetchall():
        heads[eml_id] = (date, subject)
        if kind is not None:
            addresses.setdefault((eml_id, kind), []).append(full)
            names.setdefault((eml_id, kind), []).append(name)

    def joined(eml_id: int, kind: str, source: dict[tuple[int, str], list[str]]) -> str:
        return ", ".join(source.get((eml_id, kind), ()))

    # A message deleted between the queries is simply left out. The list's columns show
    # the names (the subject gets the room); its tooltips have the addresses.
    return [
        MessageRow(eml_id=i, date=heads[i][0], subject=heads[i][1],
                   sender=joined(i, "FROM", addresses), to=joined(i, "TO", addresses),
                   cc=joined(i, "CC", addresses),
                   names=(joined(i, "FROM", names), joined(i, "TO", names),
                          joined(i, "CC", names)))
        for i in eml_ids if i in heads
    ]


async def search_message_ids(
    conn: AsyncConn, text: str, *, contact_id: int | None = None, limit: int = 200,
) -> list[int]:
    """The ids of :func:`search_messages`, newest first.

    Runs in a transaction of its own with JIT compilation off: the walk's cost estimates (a
    probe per message) pass jit_above_cost, and compiling then costs more than the whole
    query. ``SET LOCAL`` ends with the transaction, so the connection's other queries keep
    the server's setting.
    """
    async with conn.transaction():
        await conn.execute("SET LOCAL jit = off")
        return await _search(conn, text, contact_id, limit)


async def _search(conn: AsyncConn, text: str, contact_id: int | None, limit: int) -> list[int]:
    if not text.strip() and contact_id is None:
        return await _Walk(conn, (), {}).run(limit, 1.0, 1.0)
    planner = _Planner(conn)
    groups: list[_Group] = []
    row = await (await conn.execute(
        "SELECT greatest(reltuples, 1) FROM pg_class WHERE oid = 'xtmail.msg'::regclass"
    )).fetchone()
    total = float(row[0]) if row else 1.0
    if text.strip():
        text_group = await planner.text_group(text, total)
        if text_group is None:
            return []  # nothing searchable in it: punctuation, or one or two letters
        groups.append(text_group)
    if contact_id is not None:
        groups.append(await planner.contact_group(contact_id))
    groups.sort(key=_estimate)
    driver, others = groups[0], groups[1:]
    params = planner.params
    log.debug("estimates %s of %d", [_estimate(g) for g in groups], total)

    if _estimate(driver) <= CANDIDATE_ESTIMATE and (_reliable(driver) or not text.strip()):
        found = await _by_candidates(conn, driver, others, params, limit,
                                     4 * CANDIDATE_ESTIMATE)
        if found is not None:
            return found
    walk = _Walk(conn, groups, params)
    density = math.prod(min(1.0, max(_estimate(g), 1.0) / total) for g in groups)
    if density < DENSE and not walk.cheap and _estimate(driver) <= CANDIDATE_ESTIMATE:
        # Few hits expected (words or an address), but the estimate is unsure: fetching
        # them, up to a cap, costs less than measuring on the newest mail, which here
        # reads each message's words; past the cap, hits are at least that many.
        found = await _by_candidates(conn, driver, others, params, limit, CANDIDATE_ESTIMATE)
        if found is not None:
            return found
        return await walk.run(limit, max(density, CANDIDATE_ESTIMATE / total), total)
    if density < DENSE:
        # The estimate cannot tell a word found 300 times from one found 30,000 times:
        # measure on the newest mail, then take the cheaper way for what the count suggests.
        await walk.measure(PROBE_WINDOW, total)
        if len(walk.hits) >= limit or walk.exhausted:
            return walk.hits[:limit]
        density = walk.density
        matches = density * total
        cost = _CANDIDATE_COST_CHEAP if walk.cheap else _CANDIDATE_COST
        if matches * cost < (limit - len(walk.hits)) / density:
            # Up to the crossover count, fetching every hit still beats walking; past it, the
            # overflow tells the walk that hits are at least that common.
            cap = max(3 * math.ceil(matches), math.ceil(math.sqrt(limit * total / cost)))
            found = await _by_candidates(conn, driver, others, params, limit, cap)
            if found is not None:
                return found
            density = max(density, cap / total)
    return await walk.run(limit, density, total)


async def search_messages(
    conn: AsyncConn, text: str, *, contact_id: int | None = None, limit: int = 200,
) -> list[MessageRow]:
    """The newest ``limit`` messages matching ``text`` (words of subject, body, addresses and
    names; or an address substring), restricted to ``contact_id``'s mail when given.

    Empty ``text`` matches everything: with a contact, that contact's mail; without, the
    newest mail. A text with nothing searchable in it (only punctuation) matches nothing.
    Every value travels as a query parameter.
    """
    return await _rows(conn, await search_message_ids(conn, text, contact_id=contact_id,
                                                      limit=limit))
