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


async def _estimate(conn: AsyncConn, ids: sql.Composable, params: dict[str, Any]) -> float:
    query = sql.SQL("EXPLAIN (FORMAT JSON) {ids}").format(ids=ids)
    row = await (await conn.execute(query, params)).fetchone()
    plan: Any = row[0] if row else [{"Plan": {"Plan Rows": 0}}]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return float(plan[0]["Plan"]["Plan Rows"])


async def page_ids(
    conn: AsyncConn, ids: sql.Composable, params: dict[str, Any], count: int,
) -> list[int] | None:
    """Ids holding the newest ``count`` messages of ``ids`` (a query whose first column is
    ``eml_id``), or ``None`` where the plain query is cheaper or the walk gave up."""
    row = await (await conn.execute(
        "SELECT greatest(reltuples, 1) FROM pg_class WHERE oid = 'xtmail.msg'::regclass"
    )).fetchone()
    total = float(row[0]) if row else 1.0
    expected = await _estimate(conn, ids, params)
    if expected < 1 or count / (expected / total) >= expected * _PLAIN_COST:
        return None
    density = expected / total
    test = sql.SQL(
        "EXISTS (SELECT 1 FROM ({ids}) AS t WHERE t.eml_id = w.eml_id OFFSET 0)"
    ).format(ids=ids)
    found: list[tuple[datetime, int]] = []
    after: tuple[datetime, int] | None = None
    scanned = 0
    # Never test more messages than the plain query would cost: where the document's mail
    # is old (the newest mail is others'), the walk gives up and the plain query answers.
    budget = expected * _PLAIN_COST
    async with conn.transaction():
        # As in the Attach search: the probes' cost estimates pass jit_above_cost, and
        # compiling costs more than the query.
        await conn.execute("SET LOCAL jit = off")
        while len(found) < count:
            if scanned >= budget:
                return None
            window = max(_MIN_WINDOW, min(_MAX_WINDOW, math.ceil(budget - scanned), math.ceil(
                (count - len(found)) / max(density, 1e-9) * 1.2)))
            cursor = sql.SQL("true") if after is None else sql.SQL(
                "(coalesce(m.msg_date, '-infinity'::timestamptz), m.msg_eml_id)"
                " < (%(after_date)s, %(after_id)s)")
            query = sql.SQL(
                """WITH w AS MATERIALIZED (
                       SELECT m.msg_eml_id AS eml_id, m.msg_date
                         FROM xtmail.msg m
                        WHERE coalesce(m.msg_date, '-infinity'::timestamptz)
                              > '-infinity'::timestamptz AND {cursor}
                        ORDER BY coalesce(m.msg_date, '-infinity'::timestamptz) DESC,
                                 m.msg_eml_id DESC
                        LIMIT %(window)s)
                   SELECT 1, w.eml_id, w.msg_date FROM w WHERE {test}
                   UNION ALL
                   (SELECT 2, w.eml_id, w.msg_date FROM w
                     ORDER BY w.msg_date, w.eml_id LIMIT 1)
                   UNION ALL
                   SELECT 3, count(*)::integer, NULL FROM w"""
            ).format(cursor=cursor, test=test)
            run = {**params, "window": window}
            if after is not None:
                run["after_date"], run["after_id"] = after
            seen = 0
            for kind, value, date in await (await conn.execute(query, run)).fetchall():
                if kind == 1:
                    found.append((date, int(value)))
                elif kind == 2:
                    after = (date, int(value))
                else:
                    seen = int(value)
            scanned += seen
            density = max(len(found), 0.5) / scanned if scanned else density
            if seen < window and len(found) < count:
                return None  # every dated message tested: the plain query has the rest
        found.sort(reverse=True)
        last = found[count - 1][0]
        # Messages without an exact time sort by Connect's day; those from the last one's
        # day on may belong among the newest.
        undated = await conn.execute(
            sql.SQL(
                """SELECT w.eml_id FROM xtbatch.eml w
                    WHERE w.eml_date >= %(last)s::date
                      AND NOT EXISTS (SELECT 1 FROM xtmail.msg x
                                       WHERE x.msg_eml_id = w.eml_id
                                         AND x.msg_date IS NOT NULL)
                      AND {test}"""
            ).format(test=test),
            {**params, "last": last},
        )
        extra = [int(r[0]) for r in await undated.fetchall()]
    return [eml_id for _, eml_id in found[:count]] + extra
