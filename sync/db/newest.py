"""Which messages are the newest of a document's mail: the first page of the Email tab.

A document's list is sorted by a message's time (``MESSAGE_TIME`` of mailstore: xtmail's
``msg_date``, else the day Connect stored), newest first. For a document with few messages
the plain query is best: fetch every tie, sort, keep a page. For a document holding a large
share of all mail (a busy customer, a long-running order) that reads every tie and its
message, and the page costs far more than the rows shown; walking all mail newest first and
testing each message for a tie then finds the page after a few windows. :func:`page_ids`
takes that walk when the planner expects it to be cheaper; the list query is then
restricted to the ids it found, and sorts and pages them as before, so both ways list the
same rows.

The walk has two streams, as the time comes from two tables: messages with an exact time
(``xtmail.msg``, index ``xtmail_msg_newest_idx``), and messages without one (stored only by
Connect, or with no time), which sort by Connect's day (``xtbatch.eml.eml_date``, index of
migration 0016). The second is read only down to the time of the last message the first
found, so both together hold the newest ``count`` exactly.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

AsyncConn = psycopg.AsyncConnection[Any]

#: Cost of reading one tie of the document and its date in the plain query, relative to
#: testing one message of the walk (measured with bench/emailtab_paint.py).
_PLAIN_COST = 2.0
_MIN_WINDOW = 256
_MAX_WINDOW = 50_000
#: Windows up to which the walk's estimated cost stays below PostgreSQL's default
#: jit_above_cost.
_NO_JIT_WINDOW = 4_096


async def _estimate(conn: AsyncConn, ids: sql.Composable, params: dict[str, Any]) -> float:
    query = sql.SQL("EXPLAIN (FORMAT JSON) {ids}").format(ids=ids)
    row = await (await conn.execute(query, params)).fetchone()
    plan: Any = row[0] if row else [{"Plan": {"Plan Rows": 0}}]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return float(plan[0]["Plan"]["Plan Rows"])


async def _fetch(
    conn: AsyncConn, query: sql.Composed, params: dict[str, Any], window: int,
) -> list[Any]:
    if window <= _NO_JIT_WINDOW:
        return list(await (await conn.execute(query, params)).fetchall())
    # As in the Attach search: a large window's cost estimate passes jit_above_cost, and
    # compiling costs more than the query. A small one stays below it, without the two
    # round trips of a transaction.
    async with conn.transaction():
        await conn.execute("SET LOCAL jit = off")
        return list(await (await conn.execute(query, params)).fetchall())


async def page_ids(
    conn: AsyncConn, ids: sql.Composable, params: dict[str, Any], count: int,
) -> list[int] | None:
    """Ids holding the newest ``count`` messages of ``ids`` (a query whose first column is
    ``eml_id``), or ``None`` where the plain query is cheaper or the walk gave up."""
    expected = await _estimate(conn, ids, params)
    # The walk tests about count / density = count * total / expected messages, and all
    # mail is at least the document's: with expected * _PLAIN_COST <= count it can never
    # be cheaper. Most documents end here, without asking for the size of all mail.
    if expected < 1 or expected * _PLAIN_COST <= count:
        return None
    row = await (await conn.execute(
        "SELECT greatest(reltuples, 1) FROM pg_class WHERE oid = 'xtmail.msg'::regclass"
    )).fetchone()
    total = max(float(row[0]) if row else 1.0, expected)
    if count / (expected / total) >= expected * _PLAIN_COST:
        return None
    density = expected / total
    def test(alias: str) -> sql.Composable:
        return sql.SQL(
            "EXISTS (SELECT 1 FROM ({ids}) AS t WHERE t.eml_id = {a}.eml_id OFFSET 0)"
        ).format(ids=ids, a=sql.Identifier(alias))

    found: list[tuple[datetime, int]] = []
    extra: list[int] = []
    after: tuple[datetime, int] | None = None
    scanned = 0
    # Never test more messages than the plain query would cost: where the document's mail
    # is old (the newest mail is others'), the walk gives up and the plain query answers.
    budget = expected * _PLAIN_COST
    while len(found) < count:
        if scanned >= budget:
            return None
        window = max(_MIN_WINDOW, min(_MAX_WINDOW, math.ceil(budget - scanned), math.ceil(
            (count - len(found)) / max(density, 1e-9) * 1.2)))
        cursor = sql.SQL("true") if after is None else sql.SQL(
            "(coalesce(m.msg_date, '-infinity'::timestamptz), m.msg_eml_id)"
            " < (%(after_date)s, %(after_id)s)")
        # Kind 1: the window's hits; 2: where the window ended; 3: its size; 4: messages
        # without an exact time (stored by Connect alone, or undated), which sort by
        # Connect's day: those from the day of the page's last hit on, once this window
        # holds it (``need``: the hits still missing), the newest ``count`` of them at most.
        # OFFSET 0 keeps the test for an exact time one probe per message: as a join, the
        # planner, not knowing the day, would read all of xtmail.msg.
        query = sql.SQL(
            """WITH w AS MATERIALIZED (
                   SELECT m.msg_eml_id AS eml_id, m.msg_date
                     FROM xtmail.msg m
                    WHERE coalesce(m.msg_date, '-infinity'::timestamptz)
                          > '-infinity'::timestamptz AND {cursor}
                    ORDER BY coalesce(m.msg_date, '-infinity'::timestamptz) DESC,
                             m.msg_eml_id DESC
                    LIMIT %(window)s),
               h AS MATERIALIZED (SELECT w.eml_id, w.msg_date FROM w WHERE {test_w})
               SELECT 1, h.eml_id, h.msg_date FROM h
               UNION ALL
               (SELECT 2, w.eml_id, w.msg_date FROM w ORDER BY w.msg_date, w.eml_id LIMIT 1)
               UNION ALL
               SELECT 3, count(*)::integer, NULL FROM w
               UNION ALL
               (SELECT 4, u.eml_id, NULL FROM xtbatch.eml u
                 WHERE u.eml_date >= (SELECT h.msg_date::date FROM h
                                       ORDER BY h.msg_date DESC, h.eml_id DESC
                                       OFFSET %(need)s - 1 LIMIT 1)
                   AND NOT EXISTS (SELECT 1 FROM xtmail.msg x
                                    WHERE x.msg_eml_id = u.eml_id AND x.msg_date IS NOT NULL
                                   OFFSET 0)
                   AND {test_u}
                 ORDER BY u.eml_date DESC, u.eml_id DESC LIMIT %(count)s)"""
        ).format(cursor=cursor, test_w=test("w"), test_u=test("u"))
        run = {**params, "window": window, "need": count - len(found), "count": count}
        if after is not None:
            run["after_date"], run["after_id"] = after
        seen = 0
        for kind, value, date in await _fetch(conn, query, run, window):
            if kind == 1:
                found.append((date, int(value)))
            elif kind == 2:
                after = (date, int(value))
            elif kind == 3:
                seen = int(value)
            else:
                extra.append(int(value))
        scanned += seen
        density = max(len(found), 0.5) / scanned if scanned else density
        if seen < window and len(found) < count:
            return None  # every dated message tested: the plain query has the rest
    found.sort(reverse=True)
    return [eml_id for _, eml_id in found[:count]] + extra
