"""The Email tab and the Attach dialog through database faults, on a PostgreSQL of their own.

The server here is private to this module (not the session's): the tests stop it, start it
again on the same port and freeze it (SIGSTOP of the postmaster and every backend), as an
administrator's restart or a hung host would, and click what a user clicks meanwhile.

Each test is one coroutine run on the qasync loop from start to end, as a program runs on
its loop. ``run_until_complete`` processes Qt's events once more after it has let go of
the loop; a query waiting on a frozen server woken there finds no running loop and fails
(psycopg asks for it), which a program, whose loop never stops, never sees.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import psycopg
import pytest
import qasync
from PyQt6.QtCore import QEvent, Qt, QTimer
from PyQt6.QtWidgets import (
    QApplication,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QToolButton,
    QWidget,
)
from pytestqt.qtbot import QtBot

from tests.helpers.maildata import MailData
from tests.helpers.postgres import TestDatabases, frozen
from tests.helpers.qt import wait_until
from xtmail.app.localpg import LocalPostgres
from xtmail.dialogs import AttachEmailDialog
from xtmail.sync.db.mailstore import MAX_CONNECTIONS, MailStore
from xtmail.sync.db.pool import AsyncPool
from xtmail.sync.errors import DatabaseUnavailable, Reaction
from xtmail.widgets.email_tab import STOPPED_TEXT, EmailTab

pytestmark = pytest.mark.qt_log_ignore("^This plugin does not support")

#: The store's bound on every call here; short, so a frozen server costs the test little.
#: Programs use the default (MailStore.connect's answer_timeout).
ANSWER = 3.0
#: The first automatic retry comes this many seconds after a failure (RETRY_DELAYS[0]).
FIRST_RETRY = 5


# -- a server of the module's own, and what runs on it ------------------------------------------


@pytest.fixture(scope="module")
def own_databases(own_server: LocalPostgres) -> TestDatabases:
    return TestDatabases(own_server)


@pytest.fixture
def server(own_server: LocalPostgres) -> LocalPostgres:
    """The module's server, running (a test before may have left it stopped)."""
    own_server.start()
    return own_server


@pytest.fixture
def dsn(server: LocalPostgres, own_databases: TestDatabases) -> str:
    return own_databases.create()


@pytest.fixture
def data(dsn: str) -> Iterator[MailData]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield MailData(connection)


def add_message(dsn: str, subject: str) -> None:
    """Import one message tied to sales order 50123, on a connection of its own (made after
    a restart), made durable: the test server runs with synchronous_commit off, and an
    immediate stop would otherwise drop the latest commits."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        MailData(connection).message(subject=f"{subject} [xtref:S-50123]")
        connection.execute("CHECKPOINT")


def order_with_mail(data: MailData, count: int) -> int:
    so = data.sales_order("50123")
    for n in range(count):
        data.message(subject=f"Order question {n} [xtref:S-50123]",
                     date=f"Mon, 0{n + 1} Mar 2026 10:00:00 +0000")
    return so


@pytest.fixture
def store(dsn: str, qloop: qasync.QEventLoop) -> Iterator[MailStore]:
    store = qloop.run_until_complete(MailStore.connect(dsn, answer_timeout=ANSWER))
    try:
        yield store
    finally:
        qloop.run_until_complete(store.close())


@pytest.fixture
def widgets(qloop: qasync.QEventLoop) -> Iterator[list[QWidget]]:
    """Tabs and dialogs a test opens; closed while the loop still exists."""
    made: list[QWidget] = []
    yield made
    for widget in made:
        widget.close()
    qloop.run_until_complete(asyncio.sleep(0))
    for widget in made:
        widget.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)


def scenario(qloop: qasync.QEventLoop, steps: Coroutine[Any, Any, None]) -> None:
    """Run a test's steps on the loop, start to end (see the module's docstring)."""
    qloop.run_until_complete(steps)


async def user(action: Callable[[], None]) -> None:
    """Do what a user does (a click, a key) as a plain callback of the running loop: events
    QTest processes for it may run task steps, which must not nest in a task's own step."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - handed to the test, which raises it
            done.set_exception(exc)
        else:
            done.set_result(None)

    loop.call_soon(run)
    await done


async def click(qtbot: QtBot, widget: QWidget) -> None:
    assert widget.isVisible() and widget.isEnabled(), widget.objectName()
    await user(lambda: qtbot.mouseClick(widget, Qt.MouseButton.LeftButton))


async def key(qtbot: QtBot, widget: QWidget, which: Qt.Key) -> None:
    await user(lambda: qtbot.keyClick(widget, which))


# -- the Email tab ---------------------------------------------------------------------------------


def open_tab(widgets: list[QWidget], store: MailStore, so: int) -> EmailTab:
    tab = EmailTab()
    tab.resize(900, 600)
    tab.show()
    tab.setStore(store)
    tab.setDocument("S", so)
    widgets.append(tab)
    return tab


def tool_button(tab: EmailTab, name: str) -> QToolButton:
    button = tab.toolBar().widgetForAction(tab.action(name))
    assert isinstance(button, QToolButton)
    return button


def child(widget: QWidget, kind: type[QWidget], name: str) -> Any:
    found = widget.findChild(kind, name)
    assert found is not None, name
    return found


def status(tab: EmailTab) -> str:
    label: QLabel = child(tab, QLabel, "statusLabel")
    return label.text()


def settled(tab: EmailTab, rows: int) -> bool:
    return not tab.isBusy() and tab.model().rowCount() == rows


def test_a_restarted_database_is_read_again_on_refresh_and_by_itself(
    qtbot: QtBot, server: LocalPostgres, dsn: str, data: MailData, store: MailStore,
    widgets: list[QWidget], qloop: qasync.QEventLoop,
) -> None:
    so = order_with_mail(data, 2)

    async def steps() -> None:
        tab = open_tab(widgets, store, so)
        await wait_until(lambda: settled(tab, 2), message="the tab did not list the mail")
        retry_now: QToolButton = child(tab, QToolButton, "retryNowButton")
        assert not retry_now.isVisible()

        server.stop(mode="fast")
        await click(qtbot, tool_button(tab, "refresh"))
        await wait_until(lambda: tab.errorText() != "" and not tab.isBusy(),
                         message="no banner")
        lines = tab.errorText().splitlines()
        assert lines[0].startswith("Cannot reach the database to list the document's mail: ")
        assert "Check that the database server is running" in tab.errorText()
        assert lines[-1] == f"Retrying in {FIRST_RETRY} s."
        assert retry_now.isVisible() and tab.isRetryScheduled()
        assert tab.model().rowCount() == 2  # what was shown stays

        # Still down: clicking a message cannot show its text; the banner says why and
        # keeps counting down.
        view = tab.view()
        first = tab.model().index(0, 0)
        await user(lambda: qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton,
                                            pos=view.visualRect(first).center()))
        await wait_until(lambda: not tab.isBusy() and tab.isRetryScheduled()
                         and "to read the message" in tab.errorText(),
                         message=f"no banner for the preview: {tab.errorText()}")
        assert tab.preview().toPlainText() == ""
        # Retry now fails again, and the next retry waits longer.
        await click(qtbot, retry_now)
        await wait_until(lambda: not tab.isBusy() and tab.isRetryScheduled()
                         and "to list the document's mail" in tab.errorText(),
                         message="no new countdown")
        assert tab.errorText().splitlines()[-1] == "Retrying in 20 s."

        # Back on the same port: Refresh reads at once, with no error first (the dead
        # connections are not handed out again); new mail shows.
        server.start()
        add_message(dsn, "After the restart")
        await click(qtbot, tool_button(tab, "refresh"))
        await wait_until(lambda: settled(tab, 3) and tab.preview().toPlainText() != "",
                         message=f"no recovery on Refresh: {tab.errorText()}")
        assert tab.errorText() == ""
        # The message that was current comes back, its text with it.
        assert tab.model().messageRow(tab.view().currentIndex().row()).subject in (
            tab.preview().toPlainText())
        assert not retry_now.isVisible() and not tab.isRetryScheduled()

        # Restarted while nobody asked anything: the connection idle in the pool died with
        # it, and the next Refresh is not handed that one (no error, not even once).
        errors: list[str] = []
        tab.errorOccurred.connect(errors.append)
        server.stop(mode="fast")
        server.start()
        await click(qtbot, tool_button(tab, "refresh"))
        await wait_until(lambda: settled(tab, 3) and status(tab) == "3 messages",
                         message="no list after a restart in between")
        assert errors == []

        # Down again, then back while the banner counts down: the tab recovers by itself.
        server.stop(mode="immediate")
        await click(qtbot, tool_button(tab, "refresh"))
        await wait_until(tab.isRetryScheduled, message="no countdown after the second stop")
        assert tab.errorText().splitlines()[-1] == f"Retrying in {FIRST_RETRY} s.", (
            "a success starts the delays again from the first")
        # A tab opened during the outage says so too, and counts down as well.
        late = open_tab(widgets, store, so)
        await wait_until(late.isRetryScheduled, message="the new tab did not count down")
        server.start()
        add_message(dsn, "After the second restart")
        started = time.monotonic()
        await wait_until(lambda: settled(tab, 4) and settled(late, 4)
                         and tab.errorText() == late.errorText() == "",
                         FIRST_RETRY + 5, message="no recovery by itself")
        assert time.monotonic() - started <= FIRST_RETRY + 1
        assert not tab.isRetryScheduled() and not late.isRetryScheduled()

        # And a tab opened afterwards works at once.
        fresh = open_tab(widgets, store, so)
        await wait_until(lambda: settled(fresh, 4), message="a new tab after the restart")
        assert fresh.errorText() == ""

    scenario(qloop, steps())


def test_a_frozen_database_times_out_and_cancel_stops_waiting(
    qtbot: QtBot, server: LocalPostgres, data: MailData, store: MailStore,
    widgets: list[QWidget], qloop: qasync.QEventLoop,
) -> None:
    so = order_with_mail(data, 2)
    # The GUI keeps running while the database does not answer: a timer keeps ticking.
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(50)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))

    async def steps() -> None:
        tab = open_tab(widgets, store, so)
        await wait_until(lambda: settled(tab, 2), message="the tab did not list the mail")
        cancel: QPushButton = child(tab, QPushButton, "cancelLoadButton")
        retry_now: QToolButton = child(tab, QToolButton, "retryNowButton")
        assert not cancel.isVisible()

        with frozen(server):
            timer.start()
            started = time.monotonic()
            await click(qtbot, tool_button(tab, "refresh"))
            await wait_until(lambda: status(tab) == "Loading…" and cancel.isVisible(),
                             message="no Loading… with Cancel")
            await wait_until(lambda: tab.errorText() != "", ANSWER + 3,
                             message="no timeout message")
            waited = time.monotonic() - started
            timer.stop()
            assert ANSWER - 0.2 <= waited <= ANSWER + 1.5, waited
            text = tab.errorText()
            assert text.startswith(
                "The database is not answering: nothing came back to list the document's "
                f"mail within {ANSWER:g} s."), text
            assert text.splitlines()[-1] == f"Retrying in {FIRST_RETRY} s."
            assert not cancel.isVisible()
            assert tab.model().rowCount() == 2
            gaps = [b - a for a, b in itertools.pairwise(ticks)]
            assert len(ticks) >= 20 and max(gaps) < 0.5, "the GUI stopped while it waited"

            # Cancel stops waiting at once, and the automatic retries with it.
            await click(qtbot, retry_now)
            await wait_until(cancel.isVisible, message="no Cancel while retrying")
            await asyncio.sleep(0.3)
            clicked = time.monotonic()
            await click(qtbot, cancel)
            assert not tab.isBusy()
            assert time.monotonic() - clicked < 0.5
            assert status(tab) == STOPPED_TEXT
            assert not cancel.isVisible() and not tab.isRetryScheduled()
            assert tab.errorText() == ""
            assert tab.model().rowCount() == 2

            # Esc does the same, with the focus in the list (which also asks for the current
            # message's text: Esc stops waiting for that too).
            await click(qtbot, tool_button(tab, "refresh"))
            await wait_until(cancel.isVisible, message="no Cancel after Refresh")
            tab.activateWindow()
            tab.view().setFocus()
            await wait_until(tab.view().hasFocus, message="the list did not get the focus")
            await key(qtbot, tab.view(), Qt.Key.Key_Escape)
            assert not tab.isBusy()
            assert status(tab) == STOPPED_TEXT

        # Resumed: Refresh works again (the connections that hung were closed, not reused).
        await click(qtbot, tool_button(tab, "refresh"))
        await wait_until(lambda: settled(tab, 2) and status(tab) == "2 messages",
                         ANSWER + 12, message=f"no recovery after the freeze: {tab.errorText()}")
        assert tab.errorText() == ""

    scenario(qloop, steps())


# -- the Attach Email dialog -----------------------------------------------------------------------


class Dialog:
    def __init__(self, widgets: list[QWidget], store: MailStore, so: int) -> None:
        self.dialog = AttachEmailDialog(store, "S", so)
        widgets.append(self.dialog)
        self.found: list[int] = []
        self.dialog.searchFinished.connect(self.found.append)
        self.search: QLineEdit = child(self.dialog, QLineEdit, "searchEdit")
        self.stop: QPushButton = child(self.dialog, QPushButton, "stopSearchButton")
        self.retry_now: QPushButton = child(self.dialog, QPushButton, "retryNowButton")

    async def open(self) -> None:
        self.dialog.open()
        await wait_until(lambda: self.found == [2] and not self.dialog.isSearching(),
                         message="no first search")


def test_the_attach_dialog_searches_again_by_itself_after_a_restart(
    qtbot: QtBot, server: LocalPostgres, dsn: str, data: MailData, store: MailStore,
    widgets: list[QWidget], qloop: qasync.QEventLoop,
) -> None:
    so = order_with_mail(data, 2)

    async def steps() -> None:
        d = Dialog(widgets, store, so)
        await d.open()
        server.stop(mode="fast")
        await user(lambda: qtbot.keyClicks(d.search, "question"))
        await key(qtbot, d.search, Qt.Key.Key_Return)
        await wait_until(d.dialog.isRetryScheduled, message=d.dialog.statusText())
        text = d.dialog.statusText()
        assert text.startswith(
            "Searching failed. Cannot reach the database to search the mail: ")
        assert text.splitlines()[-1] == f"Retrying in {FIRST_RETRY} s."
        assert d.retry_now.isVisible() and not d.stop.isVisible()
        assert d.dialog.resultModel().rowCount() == 2  # what was found stays

        server.start()
        add_message(dsn, "Another question")
        await wait_until(lambda: d.found[-1] == 3 and not d.dialog.isSearching(),
                         FIRST_RETRY + 5, message="no recovery by itself")
        assert d.dialog.statusText() == "3 messages"
        assert not d.retry_now.isVisible() and not d.dialog.isRetryScheduled()

    scenario(qloop, steps())


def test_the_attach_dialog_times_out_on_a_frozen_database_and_stop_stops_waiting(
    qtbot: QtBot, server: LocalPostgres, data: MailData, store: MailStore,
    widgets: list[QWidget], qloop: qasync.QEventLoop,
) -> None:
    so = order_with_mail(data, 2)

    async def steps() -> None:
        d = Dialog(widgets, store, so)
        await d.open()
        with frozen(server):
            started = time.monotonic()
            await key(qtbot, d.search, Qt.Key.Key_Return)
            assert d.stop.isVisible()
            await wait_until(d.dialog.isRetryScheduled, ANSWER + 3,
                             message=d.dialog.statusText())
            assert time.monotonic() - started <= ANSWER + 1.5
            assert d.dialog.statusText().startswith(
                "Searching failed. The database is not answering: nothing came back to "
                f"search the mail within {ANSWER:g} s.")
            assert not d.stop.isVisible()

            # Stop, and Esc while searching, stop waiting at once; the dialog stays open.
            await click(qtbot, d.retry_now)
            assert d.dialog.isSearching()
            await click(qtbot, d.stop)
            assert not d.dialog.isSearching() and not d.dialog.isRetryScheduled()
            assert d.dialog.statusText().startswith("Stopped waiting for the database.")
            await key(qtbot, d.search, Qt.Key.Key_Return)
            assert d.dialog.isSearching()
            await key(qtbot, d.search, Qt.Key.Key_Escape)
            assert not d.dialog.isSearching()
            assert d.dialog.isVisible()
            # Also with the focus in the list.
            await key(qtbot, d.search, Qt.Key.Key_Return)
            view: QTableView = child(d.dialog, QTableView, "resultsView")
            await key(qtbot, view, Qt.Key.Key_Escape)
            assert not d.dialog.isSearching()
            assert d.dialog.isVisible()
            assert d.dialog.resultModel().rowCount() == 2

        await key(qtbot, d.search, Qt.Key.Key_Return)
        await wait_until(lambda: len(d.found) == 2 and not d.dialog.isSearching(),
                         ANSWER + 12, message="no recovery after the freeze")
        assert d.found == [2, 2]
        assert d.dialog.statusText() == "2 messages"

    scenario(qloop, steps())


# -- the store underneath --------------------------------------------------------------------------


def test_every_store_call_is_bounded_on_a_frozen_server_and_nothing_leaks(
    server: LocalPostgres, dsn: str, data: MailData, store: MailStore,
    qloop: qasync.QEventLoop,
) -> None:
    so = order_with_mail(data, 2)

    async def timed(call: Coroutine[Any, Any, object]) -> tuple[float, DatabaseUnavailable]:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as info:
            await call
        return time.monotonic() - started, info.value

    async def steps() -> None:
        assert len(await store.messages_for("S", so)) == 2
        with frozen(server):
            # More calls than the pool has connections: each one gives up in time, and
            # those given up on do not keep their connection for ever.
            for _ in range(MAX_CONNECTIONS + 1):
                waited, error = await timed(store.messages_for("S", so))
                assert waited <= ANSWER + 1.0, waited
                assert error.reaction is Reaction.RETRY_LATER
                assert str(error).startswith("The database is not answering")
            # A store made now, too, says so in time instead of hanging.
            waited, error = await timed(MailStore.connect(dsn, answer_timeout=ANSWER))
            assert waited <= ANSWER + 1.0
            assert str(error) == ("The database is not answering: nothing came back to open "
                                  f"the mail store within {ANSWER:g} s.")
            # A caller that stops waiting gets control back at once.
            call = asyncio.ensure_future(store.search_messages("question"))
            await asyncio.sleep(0.5)
            call.cancel()
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert time.monotonic() - started < 0.2
        # Resumed: the store answers again at once (the queries that hung are cancelled and
        # their connections closed in the background, giving their places back).
        started = time.monotonic()
        assert len(await store.messages_for("S", so)) == 2
        assert time.monotonic() - started < 2.0
        assert len(await store.search_messages("question")) == 2

    scenario(qloop, steps())


def test_a_query_the_server_stops_for_taking_too_long_says_so(
    dsn: str, data: MailData, qloop: qasync.QEventLoop,
) -> None:
    so = order_with_mail(data, 1)
    # The server's own bound shorter than the store's, so that it speaks first.
    store = MailStore(AsyncPool(dsn, answer_timeout=10.0, statement_timeout=1.0))

    async def steps() -> None:
        with psycopg.connect(dsn, autocommit=True) as locker, locker.transaction():
            locker.execute("LOCK TABLE xtbatch.emlassc IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable) as info:
                await store.messages_for("S", so)
            assert 0.9 <= time.monotonic() - started < 5.0
        assert str(info.value) == ("The database is not answering: it stopped the query to "
                                   "list the document's mail after 1 s.")
        assert info.value.reaction is Reaction.RETRY_LATER
        assert len(await store.messages_for("S", so)) == 1  # and it answers once it can

    try:
        scenario(qloop, steps())
    finally:
        qloop.run_until_complete(store.close())
