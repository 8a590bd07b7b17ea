"""How fast the Email tab shows a busy document: setDocument to the first painted rows.

    python bench/emailtab_paint.py [--messages N] [--others M] [--runs R]

Makes a fresh database holding N messages (10,000) tied to one sales order and M more
(20,000) tied to other orders, written with SQL (the importer's speed is measured by
import_throughput.py; here only the tab matters). Then, offscreen, an EmailTab on a qasync
loop gets the order with ``setDocument`` and the time until its list's viewport has
painted rows is taken: once cold (the first query of the connection, printed on its own)
and R more times, each from a cleared tab. The time ends after the paint: it is taken by a
zero timer started from the viewport's first Paint event with rows.

The same-run baseline, measured in turn with each run, is the same for an order holding a
single message: the tab's fixed cost (Qt, the event loop, a round trip), which does not
grow with the mail. ``query_ms`` is the bare first-page query (``MailStore.messages_for``)
for the big order, to tell the database's share from Qt's. The last lines are
``baseline_ms``, ``query_ms``, ``first_paint_ms`` (medians of the R runs),
``ratio_to_baseline`` and ``peak_rss_mb``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable

import common  # noqa: F401  # puts the repo on sys.path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import psycopg
import qasync
from PyQt6.QtCore import (
    QEvent,
    QMessageLogContext,
    QObject,
    QTimer,
    QtMsgType,
    qInstallMessageHandler,
)
from PyQt6.QtWidgets import QApplication

from bench.common import fresh_database, peak_rss_mb
from bench.messages import KNOWN_CONTACTS, WORDS
from xtmail.sync.db.mailstore import MailStore
from xtmail.widgets.email_tab import EmailTab

ORDER_NUMBER = "50000"
#: The baseline's order, holding one message (the others' mail goes to the first 400 orders).
SINGLE_ORDER_NUMBER = "50499"


def fill(conn: psycopg.Connection, messages: int, others: int) -> tuple[int, int]:
    """Write the mail; return the ids of the sales order holding ``messages`` of it and of
    the order holding one message."""
    total = messages + others
    words = list(WORDS)
    conn.execute(
        """INSERT INTO xtbatch.eml (eml_hash, eml_date, eml_subj, eml_body, eml_msg, eml_status)
           SELECT decode(md5('bench' || i), 'hex'),
                  date '2026-01-01' + i / 1440,
                  concat_ws(' ', initcap(w[1 + i %% 37]), w[1 + i %% 41], w[1 + i %% 43],
                            w[1 + i %% 47], '[xtref:S-' || %(number)s || ']'),
                  'Message ' || i || E'\\n' || repeat(coalesce(w[1 + i %% 31], '') || ' ', 200),
                  convert_to('Subject: message ' || i || E'\\r\\n\\r\\nbody\\r\\n', 'UTF8'),
                  'C'
             FROM generate_series(1, %(total)s) AS i, (SELECT %(words)s::text[] AS w) AS v""",
        {"total": total, "words": words, "number": ORDER_NUMBER},
    )
    # The exact times live in xtmail.msg (Connect's eml_date is a day).
    conn.execute(
        """INSERT INTO xtmail.msg (msg_eml_id, msg_date, msg_size)
           SELECT eml_id, timestamptz '2026-01-01 00:00+00' + eml_id * interval '1 minute',
                  length(eml_msg)
             FROM xtbatch.eml""")
    conn.execute(
        """INSERT INTO xtbatch.emladdr (emladdr_eml_id, emladdr_type, emladdr_addr,
                                         emladdr_name)
           SELECT eml_id, 'FROM', 'contact' || (eml_id %% %(known)s) || '@customer'
                  || (eml_id %% 97) || '.example.com', 'Person ' || (eml_id %% %(known)s)
             FROM xtbatch.eml
           UNION ALL
           SELECT eml_id, 'TO', 'sales@ourcompany.example', 'Sales' FROM xtbatch.eml
           UNION ALL
           SELECT eml_id, 'CC', 'contact' || ((eml_id * 7) %% %(known)s) || '@customer'
                  || (eml_id %% 89) || '.example.com', ''
             FROM xtbatch.eml WHERE eml_id %% 4 = 0""",
        {"known": KNOWN_CONTACTS},
    )
    row = conn.execute(
        "SELECT cohead_id FROM cohead WHERE cohead_number = %s", (ORDER_NUMBER,)
    ).fetchone()
    assert row is not None
    order = int(row[0])
    # The order's messages are spread evenly over all the mail (each message whose share
    # of ``messages / total`` passes a whole number); the rest over other orders.
    conn.execute(
        """INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id)
           SELECT eml_id, 'S',
                  CASE WHEN eml_id::bigint * %(messages)s / %(total)s
                            > (eml_id - 1)::bigint * %(messages)s / %(total)s
                       THEN %(order)s
                       ELSE (SELECT min(cohead_id) FROM cohead) + 1 + eml_id %% 400 END
             FROM xtbatch.eml""",
        {"total": total, "messages": messages, "order": order},
    )
    conn.execute(
        """INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id)
           SELECT 1, 'S', cohead_id FROM cohead WHERE cohead_number = %s""",
        (SINGLE_ORDER_NUMBER,))
    conn.execute("VACUUM ANALYZE")
    count = conn.execute(
        "SELECT count(*) FROM xtbatch.emlassc WHERE emlassc_type = 'S' "
        "AND emlassc_assc_id = %s", (order,)
    ).fetchone()
    print(f"database: {total} messages, {count[0] if count else 0} tied to sales order "
          f"{ORDER_NUMBER}")
    single = conn.execute(
        "SELECT cohead_id FROM cohead WHERE cohead_number = %s", (SINGLE_ORDER_NUMBER,)
    ).fetchone()
    assert single is not None
    return order, int(single[0])


class FirstRowsPainted(QObject):
    """Notes when the view's viewport has painted while the model has rows."""

    def __init__(self, tab: EmailTab) -> None:
        super().__init__(tab)
        self._tab = tab
        self.started = 0.0
        self.finished: float | None = None
        viewport = tab.view().viewport()
        assert viewport is not None
        viewport.installEventFilter(self)

    def arm(self) -> None:
        self.finished = None
        self.started = time.perf_counter()

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        if (
            event is not None
            and event.type() == QEvent.Type.Paint
            and self.finished is None
            and self.started
            and self._tab.model().rowCount() > 0
        ):
            # Stamp after this paint has been done: the zero timer runs once the event
            # that is being delivered now has been handled.
            QTimer.singleShot(0, self._stamp)
        return False

    def _stamp(self) -> None:
        if self.finished is None:
            self.finished = time.perf_counter()


async def until(predicate: Callable[[], object], limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the tab did not paint its rows")
        await asyncio.sleep(0)


def quiet_offscreen(kind: QtMsgType, context: QMessageLogContext, message: str | None) -> None:
    # The offscreen platform says so each time a window's size limits change; noise here.
    if message and not message.startswith("This plugin does not support"):
        print(f"Qt: {message}")


class Timings:
    def __init__(self) -> None:
        self.paint: list[float] = []
        self.baseline: list[float] = []
        self.query: list[float] = []


def measure(dsn: str, order: int, single: int, runs: int) -> Timings:
    qInstallMessageHandler(quiet_offscreen)
    app = QApplication.instance() or QApplication([])
    assert isinstance(app, QApplication)
    app.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    store = loop.run_until_complete(MailStore.connect(dsn))
    tab = EmailTab()
    tab.setStore(store)
    tab.resize(1000, 700)
    tab.show()
    probe = FirstRowsPainted(tab)
    loop.run_until_complete(asyncio.sleep(0.2))  # window shown and painted empty

    def paint(doc_id: int, rows: int) -> float:
        tab.clearDocument()
        loop.run_until_complete(asyncio.sleep(0.05))
        probe.arm()
        tab.setDocument("S", doc_id)
        loop.run_until_complete(until(lambda: probe.finished is not None))
        assert probe.finished is not None
        elapsed = (probe.finished - probe.started) * 1000
        if tab.errorText():
            raise SystemExit(f"the tab reported an error: {tab.errorText()}")
        loop.run_until_complete(until(lambda: not tab.isBusy()))
        assert tab.model().rowCount() == rows, tab.model().rowCount()
        return elapsed

    async def query() -> float:
        start = time.perf_counter()
        await store.messages_for("S", order, limit=101)
        return (time.perf_counter() - start) * 1000

    timings = Timings()
    for run in range(runs + 1):
        # In turn, so that the machine's load weighs on both alike.
        timings.paint.append(paint(order, 100))
        if run:
            timings.baseline.append(paint(single, 1))
            timings.query.append(loop.run_until_complete(query()))
    tab.close()
    loop.run_until_complete(store.close())
    loop.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--others", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with fresh_database() as dsn:
        start = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            order, single = fill(conn, args.messages, args.others)
        print(f"filled in {time.perf_counter() - start:.1f} s")
        timings = measure(dsn, order, single, args.runs)
    cold, warm = timings.paint[0], timings.paint[1:]
    print(f"cold run (first query of the connection): {cold:.1f} ms")
    print(f"runs: {', '.join(f'{t:.0f}' for t in warm)} ms")
    print(f"baseline runs: {', '.join(f'{t:.0f}' for t in timings.baseline)} ms")
    print(f"query runs: {', '.join(f'{t:.0f}' for t in timings.query)} ms")
    base = statistics.median(timings.baseline)
    paint = statistics.median(warm)
    print(f"baseline_ms: {base:.1f}")
    print(f"query_ms: {statistics.median(timings.query):.1f}")
    print(f"first_paint_ms: {paint:.1f}")
    print(f"ratio_to_baseline: {paint / base:.2f}")
    print(f"peak_rss_mb: {peak_rss_mb():.0f}")


if __name__ == "__main__":
    main()
