"""MessageListModel on a real database: pages, sorting, contact mail, late answers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import qasync
from PyQt6.QtCore import QPersistentModelIndex, Qt
from PyQt6.QtGui import QFont
from pytestqt.modeltest import ModelTester

from tests.helpers.mail import make_message
from tests.helpers.maildata import MailData
from xtmail.sync.db.mailstore import MailStore
from xtmail.sync.values import MessageRow
from xtmail.widgets.message_model import (
    COLUMNS,
    VIA_CONTACT_TOOLTIP,
    EmlIdRole,
    MessageListModel,
    ViaContactRole,
)

DATE, FROM, TO, CC, SUBJECT = range(5)


def minute(i: int) -> str:
    return f"Sun, 01 Mar 2026 {i // 60:02d}:{i % 60:02d}:00 +0000"


@pytest.fixture
def db_dsn(xtuple_dsn: str) -> str:
    """Both kinds of xTuple database, as the owner and as an ordinary user."""
    return xtuple_dsn


@pytest.fixture
def order_with_mail(mail_data: MailData) -> tuple[int, list[int]]:
    """A sales order with 7 messages a minute apart; their ids oldest first."""
    so = mail_data.sales_order("50123")
    senders = ["bob", "Alice", "carol", "alice", "Dave", "erin", "Bob"]
    raws = [
        make_message(sender=f"{name} <{name.lower()}{i}@example.com>",
                     subject=f"Subject {chr(ord('g') - i)}", date=minute(i))
        for i, name in enumerate(senders)
    ]
    return so, mail_data.import_raw(raws, ties=[("S", so)])


def test_empty_and_loaded_models_pass_the_model_tester(
    qtmodeltester: ModelTester, qloop: qasync.QEventLoop, mail_store: MailStore,
    order_with_mail: tuple[int, list[int]],
) -> None:
    model = MessageListModel(mail_store)
    qtmodeltester.check(model)
    so, _ = order_with_mail
    assert qloop.run_until_complete(model.load("S", so))
    assert model.rowCount() == 7
    qtmodeltester.check(model)
    model.sort(FROM, Qt.SortOrder.AscendingOrder)
    qtmodeltester.check(model)


def test_newest_first_with_columns_and_roles(
    qloop: qasync.QEventLoop, mail_store: MailStore, order_with_mail: tuple[int, list[int]],
) -> None:
    so, ids = order_with_mail
    model = MessageListModel(mail_store)
    qloop.run_until_complete(model.load("S", so))
    assert [model.emlId(r) for r in range(7)] == ids[::-1]
    assert [model.headerData(c, Qt.Orientation.Horizontal) for c in range(5)] == list(COLUMNS)
    assert model.headerData(0, Qt.Orientation.Vertical) is None
    top = model.index(0, SUBJECT)
    assert top.data() == "Subject a"
    assert top.data(EmlIdRole) == ids[-1]
    assert top.data(ViaContactRole) is False
    assert top.data(Qt.ItemDataRole.ToolTipRole) == "Subject a"
    assert model.index(0, FROM).data() == "Bob"
    assert model.index(0, TO).data() == "Sales"
    assert model.index(0, CC).data() == ""
    assert len(model.index(0, DATE).data()) == len("2026-03-01 00:06")
    assert model.flags(top) & Qt.ItemFlag.ItemIsSelectable
    assert not model.flags(top) & Qt.ItemFlag.ItemIsEditable
    assert model.document() == ("S", so)


def test_pages_and_load_more(
    qloop: qasync.QEventLoop, mail_store: MailStore, order_with_mail: tuple[int, list[int]],
) -> None:
    so, ids = order_with_mail
    model = MessageListModel(mail_store, page_size=3)
    qloop.run_until_complete(model.load("S", so))
    assert [model.emlId(r) for r in range(model.rowCount())] == ids[:3:-1]
    assert model.hasMore()
    assert qloop.run_until_complete(model.loadMore()) == 3
    assert model.hasMore()
    assert qloop.run_until_complete(model.loadMore()) == 1
    assert not model.hasMore()
    assert qloop.run_until_complete(model.loadMore()) == 0
    assert [model.emlId(r) for r in range(7)] == ids[::-1]
    # A reload keeps as many rows as were shown.
    assert qloop.run_until_complete(model.reload())
    assert model.rowCount() == 7


def test_sorting_sorts_the_loaded_rows_and_keeps_persistent_indexes(
    qloop: qasync.QEventLoop, mail_store: MailStore, order_with_mail: tuple[int, list[int]],
) -> None:
    so, ids = order_with_mail
    model = MessageListModel(mail_store, page_size=5)
    qloop.run_until_complete(model.load("S", so))
    newest = QPersistentModelIndex(model.index(0, SUBJECT))
    model.sort(FROM, Qt.SortOrder.AscendingOrder)
    # Case is ignored; equal senders keep the newest first (higher id).
    assert [model.index(r, FROM).data() for r in range(5)] == [
        "alice", "Bob", "carol", "Dave", "erin",
    ]
    assert newest.row() == 1 and newest.data() == "Subject a"
    model.sort(SUBJECT, Qt.SortOrder.DescendingOrder)
    assert [model.index(r, SUBJECT).data() for r in range(5)] == [
        "Subject e", "Subject d", "Subject c", "Subject b", "Subject a",
    ]
    # Older rows are merged into the chosen order.
    qloop.run_until_complete(model.loadMore())
    assert [model.index(r, SUBJECT).data() for r in range(7)] == [
        "Subject g", "Subject f", "Subject e", "Subject d", "Subject c", "Subject b",
        "Subject a",
    ]
    model.sort(DATE, Qt.SortOrder.AscendingOrder)
    assert [model.emlId(r) for r in range(7)] == ids


def test_a_late_answer_for_an_earlier_document_is_dropped(
    qloop: qasync.QEventLoop, mail_store: MailStore, mail_data: MailData,
    order_with_mail: tuple[int, list[int]],
) -> None:
    so, _ = order_with_mail
    other = mail_data.sales_order("50124")
    mine = mail_data.message(ties=[("S", other)], subject="Other")
    model = MessageListModel(mail_store)

    async def both() -> list[bool]:
        first = asyncio.ensure_future(model.load("S", so))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(model.load("S", other))
        return list(await asyncio.gather(first, second))

    assert qloop.run_until_complete(both()) == [False, True]
    assert model.document() == ("S", other)
    assert [model.emlId(r) for r in range(model.rowCount())] == [mine]
    model.clear()
    assert model.rowCount() == 0 and model.document() is None


def test_contact_mail_is_italic_with_a_tooltip(
    qloop: qasync.QEventLoop, mail_store: MailStore, mail_data: MailData,
) -> None:
    jane = mail_data.contact("jane@customer.example")
    cust = mail_data.customer("TTOYS", contact=jane)
    via = mail_data.message(sender="Jane <jane@customer.example>", subject="Hi")
    both = mail_data.message(ties=[("C", cust)], sender="Jane <jane@customer.example>",
                             subject="Tied twice")
    model = MessageListModel(mail_store)
    qloop.run_until_complete(model.load("C", cust))
    rows = {model.emlId(r): r for r in range(model.rowCount())}
    assert set(rows) == {via, both}
    index = model.index(rows[via], FROM)
    assert index.data(ViaContactRole) is True
    assert index.data(Qt.ItemDataRole.ToolTipRole) == f"Jane\n{VIA_CONTACT_TOOLTIP}"
    font = index.data(Qt.ItemDataRole.FontRole)
    assert isinstance(font, QFont) and font.italic()
    # Tied to the customer itself as well: not marked.
    assert model.index(rows[both], FROM).data(ViaContactRole) is False
    assert model.messageRow(rows[via]).via_contact


def test_without_a_store_loading_is_a_programming_error(qloop: qasync.QEventLoop) -> None:
    model = MessageListModel()
    with pytest.raises(RuntimeError, match="no store"):
        qloop.run_until_complete(model.load("S", 1))


def test_rows_handed_in_need_no_store_and_pass_the_model_tester(
    qtmodeltester: ModelTester, qloop: qasync.QEventLoop,
) -> None:
    """The Attach dialog's use: a search's answer shown as it is, tied to no document."""
    utc = UTC
    rows = [
        MessageRow(1, datetime(2026, 3, 1, 10, 0, tzinfo=utc), "Ada", "Sales", "", "Older"),
        MessageRow(2, None, "Bob", "Sales", "", "No date"),
        MessageRow(3, datetime(2026, 3, 2, 10, 0, 30, tzinfo=utc), "Carol", "Sales", "Dan",
                   "Newer"),
    ]
    model = MessageListModel()
    model.setRows(rows)
    qtmodeltester.check(model)
    # Newest first, a message without a date last, as the search orders them.
    assert [model.emlId(r) for r in range(3)] == [3, 1, 2]
    assert model.index(0, SUBJECT).data(EmlIdRole) == 3
    assert model.index(0, DATE).data(Qt.ItemDataRole.ToolTipRole) == (
        "2026-03-02 10:00:30 +0000"
    )
    assert model.index(2, DATE).data() == ""
    assert model.document() is None and not model.hasMore()
    assert qloop.run_until_complete(model.reload()) is False
    assert qloop.run_until_complete(model.loadMore()) == 0
    model.clear()
    assert model.rowCount() == 0


def test_unavailable_rows_are_greyed_not_selectable_and_say_why(
    qtmodeltester: ModelTester,
) -> None:
    """The Attach dialog's mail already tied to the document."""
    rows = [MessageRow(1, datetime(2026, 3, 1, tzinfo=UTC), "Ada", "Sales", "", "Tied"),
            MessageRow(2, datetime(2026, 3, 2, tzinfo=UTC), "Bob", "Sales", "", "Free")]
    model = MessageListModel()
    model.setRows(rows)
    model.setUnavailable({1: "Already attached to this document"})
    qtmodeltester.check(model)
    tied, free = model.index(model.rowOf(1), SUBJECT), model.index(model.rowOf(2), SUBJECT)
    assert not tied.flags() & Qt.ItemFlag.ItemIsSelectable
    assert not tied.flags() & Qt.ItemFlag.ItemIsEnabled
    assert free.flags() & Qt.ItemFlag.ItemIsSelectable
    assert tied.data(Qt.ItemDataRole.ToolTipRole) == "Tied\nAlready attached to this document"
    assert free.data(Qt.ItemDataRole.ToolTipRole) == "Free"
