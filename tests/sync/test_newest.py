"""The Email tab's first pages found by walking the mail newest first (sync/db/newest.py)
list exactly what the plain query lists, mail without an exact time included."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import psycopg
import psycopg.sql
import pytest

from xtmail.sync.db import newest
from xtmail.sync.db.mailstore import MailStore


@pytest.fixture
def db_dsn(xtuple_dsn: str) -> str:
    """As the owner and as an ordinary user (row security), on both kinds of database."""
    return xtuple_dsn


@pytest.fixture
def orders(conn: psycopg.Connection, db_dsn: str) -> Iterator[tuple[int, int]]:
    """Two sales orders: the first holds most of the mail, in every kind of dating."""
    rng = random.Random(5)
    conn.execute("INSERT INTO cohead (cohead_number) VALUES ('70001'), ('70002')")
    busy, other = (int(r[0]) for r in conn.execute(
        "SELECT cohead_id FROM cohead WHERE cohead_number IN ('70001', '70002') "
        "ORDER BY cohead_number"))
    # Exact times out of the order of the ids (mail imported late from old folders), some
    # equal; mail Connect stored alone (no xtmail.msg row: its day only); mail with an
    # xtmail.msg row but no time; each day holding several.
    hours = [rng.randrange(0, 24 * 12) for _ in range(60)]
    kinds = ["exact"] * 60 + ["connect"] * 10 + ["no time"] * 4
    rng.shuffle(kinds)
    for i, kind in enumerate(kinds):
        hour = hours[i % 60] if kind == "exact" else rng.randrange(0, 24 * 12)
        row = conn.execute(
            "INSERT INTO xtbatch.eml (eml_hash, eml_date, eml_subj, eml_body, eml_msg, "
            "eml_status) VALUES (%s, (timestamptz '2026-03-01 00:00+00' "
            "+ %s * interval '1 hour')::date, %s, '', '', 'C') RETURNING eml_id",
            (f"newest:{i}".encode(), hour, f"message {i}")).fetchone()
        assert row
        eml_id = int(row[0])
        if kind != "connect":
            conn.execute(
                "INSERT INTO xtmail.msg (msg_eml_id, msg_date, msg_size) VALUES (%s, "
                "CASE WHEN %s THEN timestamptz '2026-03-01 00:00+00' "
                "+ %s * interval '1 hour' END, 1)", (eml_id, kind == "exact", hour))
        conn.execute(
            "INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id) "
            "VALUES (%s, 'S', %s)", (eml_id, other if rng.random() < 0.2 else busy))
    # As the owner, as autovacuum would: an ordinary user's ANALYZE passes the mail tables by.
    with psycopg.connect(psycopg.conninfo.make_conninfo(db_dsn, user="postgres"),
                         autocommit=True) as owner:
        owner.execute("ANALYZE")
    yield busy, other


def listed(dsn: str, order: int, pages: list[tuple[int, int]]) -> list[list[int]]:
    async def main() -> list[list[int]]:
        store = await MailStore.connect(dsn)
        try:
            return [[r.eml_id for r in await store.messages_for("S", order, limit=limit,
                                                                 offset=offset)]
                    for limit, offset in pages]
        finally:
            await store.close()

    return asyncio.run(main())


PAGES = [(1, 0), (5, 0), (101, 0), (10, 3), (20, 40), (101, 60)]


@pytest.mark.parametrize("windows", ["usual", "tiny", "jit off"])
def test_the_walk_lists_what_the_plain_query_lists(
    conn: psycopg.Connection, db_dsn: str, orders: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch, windows: str,
) -> None:
    answers = {}
    for order in orders:
        with monkeypatch.context() as plain:
            async def no_walk(*_: object) -> None:
                return None

            plain.setattr(newest, "page_ids", no_walk)
            expected = listed(db_dsn, order, PAGES)
        with monkeypatch.context() as walk:
            walk.setattr(newest, "_PLAIN_COST", 10.0**9)  # always walk, never give up
            if windows == "tiny":
                walk.setattr(newest, "_MIN_WINDOW", 1)
                walk.setattr(newest, "_MAX_WINDOW", 2)
            if windows == "jit off":  # every window in a transaction of its own
                walk.setattr(newest, "_NO_JIT_WINDOW", 0)
            assert listed(db_dsn, order, PAGES) == expected
        answers[order] = expected
    # Something was compared: the busy order's first page holds all its mail, newest first.
    first = answers[orders[0]][2]
    assert len(first) > 40
    assert answers[orders[0]][1] == first[:5]


def test_the_walk_is_taken_and_gives_up_where_it_should(
    conn: psycopg.Connection, db_dsn: str, orders: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Taken for the busy order's first page; for the other, whose mail is a fifth of all,
    a page of 101 costs more walking than reading its ties."""
    taken: list[bool] = []
    original = newest.page_ids

    async def spy(*args: object) -> list[int] | None:
        found = await original(*args)  # type: ignore[arg-type]
        taken.append(found is not None)
        return found

    monkeypatch.setattr(newest, "page_ids", spy)
    busy, other = orders
    listed(db_dsn, busy, [(5, 0)])
    listed(db_dsn, other, [(101, 0)])
    assert taken == [True, False]


def test_a_document_with_less_mail_than_a_page_costs_one_estimate(
    conn: psycopg.Connection, db_dsn: str, orders: tuple[int, int],
) -> None:
    """The other order's dozen messages are fewer than half a page of 101: the walk could
    never be cheaper, and the size of all mail is not even asked for."""
    _, other = orders
    statements: list[str] = []

    async def main() -> list[int] | None:
        async with await psycopg.AsyncConnection.connect(db_dsn) as aconn:
            original = aconn.execute

            async def counted(query: object, *args: object, **kwargs: object) -> object:
                statements.append(str(query))
                return await original(query, *args, **kwargs)  # type: ignore[arg-type]

            aconn.execute = counted  # type: ignore[method-assign]
            ids = psycopg.sql.SQL(
                "SELECT emlassc_eml_id AS eml_id FROM xtbatch.emlassc "
                "WHERE emlassc_type = 'S' AND emlassc_assc_id = %(doc_id)s")
            return await newest.page_ids(aconn, ids, {"doc_id": other}, 101)

    assert asyncio.run(main()) is None
    assert len(statements) == 1 and "EXPLAIN" in statements[0], statements
